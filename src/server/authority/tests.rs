//! The rewriter, fed frames a client encoder wrote (httlib-hpack, Huffman and indexing as
//! grpc-go uses them), read back by a decoder that mirrors the server's table.

use bytes::{BufMut, BytesMut};

use super::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const INDEXED: u8 = 0x1 | 0x2 | 0x4 | 0x10;

/// A client connection: its encoder, and the bytes it has written.
struct Client {
    encoder: httlib_hpack::Encoder<'static>,
    wire: BytesMut,
}

impl Client {
    fn new() -> Client {
        let mut wire = BytesMut::from(PREFACE);
        frame(&mut wire, 0x4, 0, 0, &[]); // SETTINGS
        Client {
            encoder: httlib_hpack::Encoder::with_dynamic_size(4096),
            wire,
        }
    }

    fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            let field = (n.as_bytes().to_vec(), v.as_bytes().to_vec(), INDEXED);
            self.encoder.encode(field, &mut out).expect("encodes");
        }
        out
    }

    /// A request's HEADERS (END_HEADERS) then a DATA frame with END_STREAM.
    fn request(&mut self, stream: u32, authority: &str, path: &str) {
        let block = self.block(&grpc_fields(authority, path));
        frame(&mut self.wire, 0x1, 0x4, stream, &block);
        frame(&mut self.wire, 0x0, 0x1, stream, &[0, 0, 0, 0, 0]);
    }
}

fn grpc_fields<'a>(authority: &'a str, path: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("user-agent", "grpc-go/1.58.3"),
        ("te", "trailers"),
    ]
}

fn frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
    out.put_slice(payload);
}

fn rewrite(wire: &[u8]) -> Result<BytesMut, Broken> {
    let mut rewriter = Rewriter::new(LIMITS);
    let mut input = BytesMut::from(wire);
    let mut out = BytesMut::new();
    rewriter.process(&mut input, &mut out)?;
    assert!(input.is_empty(), "all of it consumed");
    Ok(out)
}

/// A frame as the server reads it.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn frames(mut wire: &[u8]) -> Vec<Frame> {
    assert!(wire.starts_with(PREFACE));
    wire = &wire[PREFACE.len()..];
    let mut out = Vec::new();
    while !wire.is_empty() {
        let len = (usize::from(wire[0]) << 16) | (usize::from(wire[1]) << 8) | usize::from(wire[2]);
        out.push(Frame {
            kind: wire[3],
            flags: wire[4],
            stream: u32::from_be_bytes([wire[5], wire[6], wire[7], wire[8]]),
            payload: wire[9..9 + len].to_vec(),
        });
        wire = &wire[9 + len..];
    }
    out
}

/// Every request's header fields as the server's decoder (following the table across
/// blocks, as h2's does) reads them from `wire`. Blocks here carry no padding or priority.
fn server_reads(wire: &[u8]) -> Vec<(u32, Vec<(String, String)>)> {
    let mut decoder = BlockDecoder::new(4096);
    let mut requests = Vec::new();
    let mut block = Vec::new();
    for f in frames(wire) {
        if f.kind == 0x1 || f.kind == 0x9 {
            block.extend_from_slice(&f.payload);
            if f.flags & 0x4 != 0 {
                let fields = decoder.decode(&block).expect("server decodes");
                block.clear();
                let fields = fields
                    .into_iter()
                    .map(|f| (lossy(&f.name), lossy(&f.value)))
                    .collect();
                requests.push((f.stream, fields));
            }
        }
    }
    requests
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn expected(authority: &str, path: &str) -> Vec<(String, String)> {
    grpc_fields(authority, path)
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn valid_authorities_pass_byte_for_byte() {
    let mut client = Client::new();
    for i in 0..20 {
        client.request(1 + 2 * i, "localhost", &format!("/svc/M{i}"));
    }
    assert_eq!(rewrite(&client.wire).expect("rewrites"), client.wire);
}

#[test]
fn a_path_authority_rewrites_every_block_after_emptying_the_table() {
    let mut client = Client::new();
    for i in 0..300 {
        // Distinct paths make the client's table evict entries many times over.
        client.request(
            1 + 2 * i,
            "/run/crisp/crisp.sock",
            &format!("/svc/Method{i}"),
        );
    }
    let out = rewrite(&client.wire).expect("rewrites");
    let headers: Vec<Frame> = frames(&out).into_iter().filter(|f| f.kind == 0x1).collect();
    assert_eq!(
        headers[0].payload[0], 0x20,
        "the first block empties the table"
    );
    assert!(headers[1..].iter().all(|f| f.payload[0] != 0x20));
    let reads = server_reads(&out);
    assert_eq!(reads.len(), 300);
    for (i, (stream, fields)) in reads.into_iter().enumerate() {
        assert_eq!(stream, 1 + 2 * i as u32);
        assert_eq!(fields, expected("localhost", &format!("/svc/Method{i}")));
    }
}

/// Valid blocks pass unchanged until one is not; from then on every block is re-encoded, and
/// the server still reads each request as sent (it has seen the earlier blocks' indexing).
#[test]
fn a_late_bad_authority_switches_the_rest_of_the_connection() {
    let mut client = Client::new();
    let authorities = [
        "localhost",
        "localhost",
        "%2Frun%2Fcrisp.sock",
        "localhost",
        "",
    ];
    for (i, authority) in authorities.iter().enumerate() {
        client.request(1 + 2 * i as u32, authority, "/svc/Same");
    }
    let out = rewrite(&client.wire).expect("rewrites");
    let wire_frames = frames(&client.wire);
    let out_frames = frames(&out);
    // SETTINGS and the first two requests' frames are identical.
    for k in 0..5 {
        assert_eq!(wire_frames[k].payload, out_frames[k].payload, "frame {k}");
    }
    assert_eq!(out_frames[5].payload[0], 0x20);
    let reads = server_reads(&out);
    for (i, authority) in authorities.iter().enumerate() {
        let want = if *authority == "localhost" {
            authority
        } else {
            &"localhost"
        };
        assert_eq!(reads[i].1, expected(want, "/svc/Same"), "request {i}");
    }
}

/// A block split over CONTINUATION frames, one with PADDED and PRIORITY: the server gets the
/// same fields, the priority kept, the padding gone, END_STREAM kept.
#[test]
fn continuation_padding_and_priority_are_handled() {
    let mut client = Client::new();
    let block = client.block(&grpc_fields("/run/crisp.sock", "/svc/Split"));
    let (a, b) = block.split_at(block.len() / 2);
    frame(&mut client.wire, 0x1, 0x0, 1, a);
    frame(&mut client.wire, 0x9, 0x4, 1, b);
    let block = client.block(&grpc_fields("/run/crisp.sock", "/svc/Padded"));
    let mut payload = vec![3u8];
    payload.extend_from_slice(&[0, 0, 0, 1, 200]);
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0, 0, 0]);
    frame(&mut client.wire, 0x1, 0x8 | 0x20 | 0x4 | 0x1, 3, &payload);
    let out = rewrite(&client.wire).expect("rewrites");
    let f = frames(&out);
    let padded = f.iter().find(|f| f.stream == 3).expect("stream 3");
    assert_eq!(
        padded.flags,
        0x20 | 0x4 | 0x1,
        "PRIORITY, END_HEADERS, END_STREAM kept"
    );
    assert_eq!(&padded.payload[..5], &[0, 0, 0, 1, 200]);
    let mut decoder = BlockDecoder::new(4096);
    let first = f.iter().find(|f| f.stream == 1).expect("stream 1");
    assert_eq!(
        first.flags & 0x4,
        0x4,
        "one frame holds the whole rewritten block"
    );
    let fields = decoder.decode(&first.payload).expect("decodes");
    assert_eq!(fields[2].value, b"/svc/Split");
    let fields = decoder.decode(&padded.payload[5..]).expect("decodes");
    assert_eq!(fields[2].value, b"/svc/Padded");
    assert_eq!(fields[3].value, b"localhost");
}

/// A rewritten block larger than one frame is split at the frame size limit.
#[test]
fn large_rewritten_blocks_are_split_at_the_frame_limit() {
    let mut client = Client::new();
    let big = "x".repeat(6000);
    let mut fields = grpc_fields("/p", "/svc/Big");
    fields.extend([
        ("x-a", big.as_str()),
        ("x-b", big.as_str()),
        ("x-c", big.as_str()),
    ]);
    let block = client.block(&fields);
    let (a, b) = block.split_at(block.len() / 2);
    frame(&mut client.wire, 0x1, 0x0, 1, a);
    frame(&mut client.wire, 0x9, 0x4, 1, b);
    let out = rewrite(&client.wire).expect("rewrites");
    let f: Vec<Frame> = frames(&out).into_iter().filter(|f| f.stream == 1).collect();
    assert!(f.len() >= 2, "{} frames", f.len());
    assert!(f.iter().all(|f| f.payload.len() <= LIMITS.max_frame_size));
    assert_eq!(f.last().map(|f| f.flags & 0x4), Some(0x4));
    let reads = server_reads(&out);
    assert_eq!(reads[0].1[7].1, big);
}

/// Fed one byte at a time, the rewriter writes exactly what it writes fed all at once.
#[test]
fn byte_by_byte_input_gives_the_same_output() {
    let mut client = Client::new();
    for i in 0..5 {
        client.request(1 + 2 * i, "/run/crisp.sock", "/svc/M");
    }
    let whole = rewrite(&client.wire).expect("rewrites");
    let mut rewriter = Rewriter::new(LIMITS);
    let (mut input, mut out) = (BytesMut::new(), BytesMut::new());
    for b in client.wire.iter() {
        input.put_u8(*b);
        rewriter.process(&mut input, &mut out).expect("rewrites");
    }
    assert_eq!(out, whole);
}

/// Each broken connection is closed with a reason, never a panic.
#[test]
fn broken_connections_are_refused_with_a_reason() {
    let settings_then = |kind: u8, flags: u8, payload: &[u8]| {
        let mut wire = BytesMut::from(PREFACE);
        frame(&mut wire, kind, flags, 1, payload);
        wire
    };
    let mut interleaved = settings_then(0x1, 0x0, &[0x82]);
    frame(&mut interleaved, 0x0, 0x1, 1, &[]);
    let mut floods = settings_then(0x1, 0x0, &[0x82]);
    for _ in 0..10 {
        frame(&mut floods, 0x9, 0x0, 1, &[]);
    }
    let mut other_stream = settings_then(0x1, 0x0, &[0x82]);
    frame(&mut other_stream, 0x9, 0x4, 3, &[]);
    let cases: Vec<(&str, BytesMut, &str)> = vec![
        (
            "HTTP/1",
            BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]),
            "preface",
        ),
        (
            "frame too large",
            settings_then(0x1, 0x4, &vec![0; 16385]),
            "frame size",
        ),
        ("interleaved", interleaved, "inside a header block"),
        ("continuation flood", floods, "CONTINUATION frames"),
        (
            "continuation alone",
            settings_then(0x9, 0x4, &[0x82]),
            "without a header block",
        ),
        ("continuation elsewhere", other_stream, "another stream"),
        (
            "push promise",
            settings_then(0x5, 0x4, &[0, 0, 0, 2, 0x82]),
            "PUSH_PROMISE",
        ),
        (
            "padding too long",
            settings_then(0x1, 0x8 | 0x4, &[9, 0x82]),
            "padding",
        ),
        ("bad hpack", settings_then(0x1, 0x4, &[0xff, 0x40]), "HPACK"),
    ];
    for (what, wire, reason) in cases {
        match rewrite(&wire) {
            Err(Broken(why)) => assert!(why.contains(reason), "{what}: {why}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
}

#[test]
fn oversized_blocks_are_refused_before_they_are_buffered_whole() {
    let mut wire = BytesMut::from(PREFACE);
    frame(&mut wire, 0x1, 0x0, 1, &vec![0; 16384]);
    frame(&mut wire, 0x9, 0x0, 1, &[0; 1]);
    let Err(Broken(why)) = rewrite(&wire) else {
        panic!("accepted");
    };
    assert!(why.contains("header list limit"), "{why}");
}
