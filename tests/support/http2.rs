//! A raw HTTP/2 gRPC client for tests: it writes frames itself and HPACK-encodes header blocks
//! with httlib-hpack (Huffman and incremental indexing, as grpc-go's encoder does), so a test
//! can send exactly the header blocks real clients send, including ones tonic never would.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Huffman name and value, incremental indexing, the best representation the table allows.
const GRPC_GO_STYLE: u8 = 0x1 | 0x2 | 0x4 | 0x10;

/// How a request's header block is framed.
#[derive(Clone, Copy, Debug)]
pub enum Framing {
    Plain,
    /// Split in three: HEADERS then two CONTINUATION frames.
    Continuation,
    /// One HEADERS frame with PADDED and PRIORITY.
    PaddedWithPriority,
}

/// A gRPC answer: its status, message and the first message of its body.
#[derive(Debug)]
pub struct Reply {
    pub grpc_status: String,
    pub grpc_message: String,
    pub body: Vec<u8>,
}

pub struct RawClient {
    sock: UnixStream,
    encoder: httlib_hpack::Encoder<'static>,
    decoder: loona_hpack::Decoder<'static>,
    next_stream: u32,
    inbuf: Vec<u8>,
}

impl RawClient {
    pub fn connect(path: &Path) -> RawClient {
        let mut sock = UnixStream::connect(path).expect("connect to the socket");
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("read timeout");
        sock.write_all(PREFACE).expect("preface");
        let mut client = RawClient {
            sock,
            encoder: httlib_hpack::Encoder::with_dynamic_size(4096),
            decoder: loona_hpack::Decoder::new(),
            next_stream: 1,
            inbuf: Vec::new(),
        };
        client.send_frame(0x4, 0, 0, &[]);
        client
    }

    /// The header fields grpc-go 1.58 (crictl 1.29) sends for a unary call, in its order.
    pub fn grpc_go_fields(authority: Option<&str>, path: &str) -> Vec<(String, String)> {
        let mut fields = vec![(":method", "POST"), (":scheme", "http"), (":path", path)];
        if let Some(authority) = authority {
            fields.push((":authority", authority));
        }
        fields.extend([
            ("content-type", "application/grpc"),
            ("user-agent", "grpc-go/1.58.3"),
            ("te", "trailers"),
            ("grpc-timeout", "1999873u"),
        ]);
        fields
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// Sends one unary call and reads until its trailers.
    pub fn call(&mut self, fields: &[(String, String)], message: &[u8], framing: Framing) -> Reply {
        let stream = self.next_stream;
        self.next_stream += 2;
        let mut block = Vec::new();
        for (n, v) in fields {
            let field = (n.as_bytes().to_vec(), v.as_bytes().to_vec(), GRPC_GO_STYLE);
            self.encoder
                .encode(field, &mut block)
                .expect("hpack encodes");
        }
        self.send_block(stream, &block, framing);
        let mut data = vec![0u8];
        data.extend_from_slice(&(message.len() as u32).to_be_bytes());
        data.extend_from_slice(message);
        self.send_frame(0x0, 0x1, stream, &data);
        self.read_reply(stream)
    }

    fn send_block(&mut self, stream: u32, block: &[u8], framing: Framing) {
        match framing {
            Framing::Plain => self.send_frame(0x1, 0x4, stream, block),
            Framing::Continuation => {
                let third = block.len() / 3;
                self.send_frame(0x1, 0x0, stream, &block[..third]);
                self.send_frame(0x9, 0x0, stream, &block[third..2 * third]);
                self.send_frame(0x9, 0x4, stream, &block[2 * third..]);
            }
            Framing::PaddedWithPriority => {
                let mut payload = vec![7u8, 0, 0, 0, 0, 15];
                payload.extend_from_slice(block);
                payload.extend_from_slice(&[0; 7]);
                self.send_frame(0x1, 0x8 | 0x20 | 0x4, stream, &payload);
            }
        }
    }

    fn send_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.sock.write_all(&frame).expect("write a frame");
    }

    fn read_frame(&mut self) -> (u8, u8, u32, Vec<u8>) {
        loop {
            if self.inbuf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.inbuf[0], self.inbuf[1], self.inbuf[2]]);
                let len = len as usize;
                if self.inbuf.len() >= 9 + len {
                    let head: Vec<u8> = self.inbuf.drain(..9).collect();
                    let payload: Vec<u8> = self.inbuf.drain(..len).collect();
                    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                    return (head[3], head[4], stream & 0x7fff_ffff, payload);
                }
            }
            let mut chunk = [0u8; 16384];
            let n = self.sock.read(&mut chunk).expect("read from crisp");
            assert!(n > 0, "crisp closed the connection");
            self.inbuf.extend_from_slice(&chunk[..n]);
        }
    }

    fn read_reply(&mut self, stream: u32) -> Reply {
        let mut reply = Reply {
            grpc_status: String::new(),
            grpc_message: String::new(),
            body: Vec::new(),
        };
        let mut block = Vec::new();
        loop {
            let (kind, flags, id, payload) = self.read_frame();
            match kind {
                0x0 if id == stream => {
                    if !payload.is_empty() {
                        let len = (payload.len() as u32).to_be_bytes();
                        self.send_frame(0x8, 0, 0, &len);
                    }
                    reply.body.extend_from_slice(&payload);
                }
                0x1 | 0x9 => {
                    block.extend_from_slice(header_fragment(kind, flags, &payload));
                    if flags & 0x4 != 0 {
                        let fields = self.decoder.decode(&block).expect("response decodes");
                        block.clear();
                        for (n, v) in fields {
                            let v = String::from_utf8_lossy(&v).into_owned();
                            match &n[..] {
                                b"grpc-status" => reply.grpc_status = v,
                                b"grpc-message" => reply.grpc_message = v,
                                _ => {}
                            }
                        }
                    }
                    if id == stream && flags & 0x1 != 0 {
                        if reply.body.len() >= 5 {
                            reply.body.drain(..5);
                        }
                        return reply;
                    }
                }
                0x3 => panic!("RST_STREAM on stream {id}: {payload:?}"),
                0x4 if flags & 0x1 == 0 => self.send_frame(0x4, 0x1, 0, &[]),
                0x6 if flags & 0x1 == 0 => self.send_frame(0x6, 0x1, 0, &payload),
                0x7 => panic!("GOAWAY: {}", String::from_utf8_lossy(&payload)),
                _ => {}
            }
        }
    }
}

/// A HEADERS frame's fragment without padding or priority.
fn header_fragment(kind: u8, flags: u8, payload: &[u8]) -> &[u8] {
    if kind != 0x1 {
        return payload;
    }
    let mut p = payload;
    let mut pad = 0;
    if flags & 0x8 != 0 {
        pad = usize::from(p[0]);
        p = &p[1..];
    }
    if flags & 0x20 != 0 {
        p = &p[5..];
    }
    &p[..p.len() - pad]
}
