//! ttrpc, containerd's small RPC protocol, over one of the multiplexer's logical connections.
//!
//! A message is a 10-byte header (payload length u32, stream id u32, type u8, flags u8, big
//! endian) and a protobuf payload: a `Request` (type 1) or a `Response` (type 2). The caller
//! numbers its streams 1, 3, 5, ... and the answer carries the same id.
//!
//! Written here over prost 0.14 rather than taken from the `ttrpc` crate: its prost support
//! (0.10) wants prost 0.13, a second protobuf stack beside crisp's, and its client wants to own
//! the socket, where NRI needs two ttrpc endpoints (client and server) on one multiplexed socket.
//!
//! Interop: Go's side reads a frame into a 4096-byte buffer and fails on a larger frame unless
//! it reads the payload straight into a buffer of the payload's size. Go writes the header and
//! the payload as two frames, so crisp does the same, and a frame is never over `MAX_PAYLOAD`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};

use super::mux::MuxWriter;
use super::proto::ttrpc::{Request, Response, Status};

pub const HEADER_LEN: usize = 10;
/// ttrpc's largest message (its `messageLengthMax`).
pub const MAX_MESSAGE: usize = 4 << 20;
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;
/// gRPC's code for a method the server does not implement.
pub const UNIMPLEMENTED: i32 = 12;
/// gRPC's code for a call the server refuses (used for a bad registration).
pub const INVALID_ARGUMENT: i32 = 3;

/// Why a call got no answer from the plugin's code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The peer answered with an error status (its own message).
    #[error("{message} (code {code})")]
    Status { code: i32, message: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the connection is closed")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl CallError {
    /// Timeouts, a closed connection and protocol errors disconnect the plugin (as in NRI's
    /// `isFatalError`); an error status is the plugin's answer.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, CallError::Status { .. })
    }
}

struct Header {
    length: usize,
    stream: u32,
    kind: u8,
}

/// Reassembles ttrpc messages from one logical connection's frame payloads.
pub struct MessageReader {
    frames: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl MessageReader {
    pub fn new(frames: mpsc::Receiver<Vec<u8>>) -> Self {
        MessageReader {
            frames,
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self, n: usize) -> io::Result<()> {
        while self.buf.len() < n {
            match self.frames.recv().await {
                Some(frame) => self.buf.extend_from_slice(&frame),
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
        Ok(())
    }

    /// The next message (header, payload); EOF when the connection ends.
    async fn next(&mut self) -> io::Result<(Header, Vec<u8>)> {
        self.fill(HEADER_LEN).await?;
        let b = &self.buf;
        let header = Header {
            length: u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize,
            stream: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            kind: b[8],
        };
        if header.length > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "ttrpc message of {} bytes, over {MAX_MESSAGE}",
                    header.length
                ),
            ));
        }
        self.fill(HEADER_LEN + header.length).await?;
        let payload = self.buf[HEADER_LEN..HEADER_LEN + header.length].to_vec();
        self.buf.drain(..HEADER_LEN + header.length);
        Ok((header, payload))
    }
}

/// Writes one message as Go does: the header in one frame, the payload in the next.
async fn send_message(
    writer: &MuxWriter,
    conn: u32,
    stream: u32,
    kind: u8,
    payload: &[u8],
) -> io::Result<()> {
    if payload.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "ttrpc message of {} bytes, over {MAX_MESSAGE}",
                payload.len()
            ),
        ));
    }
    writer
        .send(conn, &encode_header(payload.len(), stream, kind))
        .await?;
    if !payload.is_empty() {
        writer.send(conn, payload).await?;
    }
    Ok(())
}

pub fn encode_header(length: usize, stream: u32, kind: u8) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&(length as u32).to_be_bytes());
    header[4..8].copy_from_slice(&stream.to_be_bytes());
    header[8] = kind;
    header
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Response>>>>;

/// The calling side of one logical connection.
pub struct Client {
    writer: MuxWriter,
    conn: u32,
    next_stream: AtomicU32,
    pending: Pending,
    closed: watch::Receiver<bool>,
}

impl Client {
    /// A client on `conn`, reading the answers from `inbound` in a task.
    pub fn new(writer: MuxWriter, conn: u32, inbound: mpsc::Receiver<Vec<u8>>) -> Self {
        let pending: Pending = Arc::default();
        let (closed_tx, closed) = watch::channel(false);
        tokio::spawn(read_responses(
            MessageReader::new(inbound),
            pending.clone(),
            closed_tx,
        ));
        Client {
            writer,
            conn,
            next_stream: AtomicU32::new(1),
            pending,
            closed,
        }
    }

    /// Calls `service`/`method` and waits at most `timeout` for the answer's payload.
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        request: &impl Message,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        if self.is_closed() {
            return Err(CallError::Closed);
        }
        let stream = self.next_stream.fetch_add(2, Ordering::Relaxed);
        let envelope = Request {
            service: service.to_string(),
            method: method.to_string(),
            payload: request.encode_to_vec(),
            timeout_nano: i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX),
            metadata: Vec::new(),
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(stream, tx);
        let sent = send_message(
            &self.writer,
            self.conn,
            stream,
            TYPE_REQUEST,
            &envelope.encode_to_vec(),
        )
        .await;
        if let Err(e) = sent {
            lock(&self.pending).remove(&stream);
            return Err(match e.kind() {
                io::ErrorKind::InvalidInput => CallError::Protocol(e.to_string()),
                _ => CallError::Closed,
            });
        }
        let answer = tokio::time::timeout(timeout, rx).await;
        lock(&self.pending).remove(&stream);
        match answer {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(Err(_)) => Err(CallError::Closed),
            Ok(Ok(Response {
                status: Some(Status { code, message }),
                ..
            })) if code != 0 => Err(CallError::Status { code, message }),
            Ok(Ok(response)) => Ok(response.payload),
        }
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once the connection has closed.
    pub async fn closed(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|c| *c).await;
    }

    /// Closes the socket (both logical connections): the peer reads EOF.
    pub async fn close(&self) {
        self.writer.close().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn read_responses(mut reader: MessageReader, pending: Pending, closed: watch::Sender<bool>) {
    loop {
        let message = reader.next().await;
        let Ok((header, payload)) = message else {
            break;
        };
        if header.kind != TYPE_RESPONSE {
            tracing::debug!(
                kind = header.kind,
                "NRI: unexpected ttrpc message type, closing"
            );
            break;
        }
        let Ok(response) = Response::decode(payload.as_slice()) else {
            tracing::debug!("NRI: undecodable ttrpc response, closing");
            break;
        };
        // An answer nobody waits for (its call timed out) is dropped.
        if let Some(tx) = lock(&pending).remove(&header.stream) {
            let _ = tx.send(response);
        }
    }
    // Dropping the senders fails every call still waiting.
    lock(&pending).clear();
    let _ = closed.send(true);
}

/// An error answer: a gRPC code and a message.
pub type RpcStatus = (i32, String);

/// Serves requests from `inbound` one at a time until the connection ends or breaks.
pub async fn serve<F, Fut>(
    writer: MuxWriter,
    conn: u32,
    inbound: mpsc::Receiver<Vec<u8>>,
    handler: F,
) where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Result<Vec<u8>, RpcStatus>>,
{
    let mut reader = MessageReader::new(inbound);
    while let Ok((header, payload)) = reader.next().await {
        if header.kind != TYPE_REQUEST {
            return;
        }
        let Ok(request) = Request::decode(payload.as_slice()) else {
            return;
        };
        let response = match handler(request).await {
            Ok(payload) => Response {
                status: None,
                payload,
            },
            Err((code, message)) => Response {
                status: Some(Status { code, message }),
                payload: Vec::new(),
            },
        };
        let bytes = response.encode_to_vec();
        if send_message(&writer, conn, header.stream, TYPE_RESPONSE, &bytes)
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::mux;
    use super::*;

    fn echo_pair() -> (Client, tokio::task::JoinHandle<()>) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (writer, inbound) = mux::split(ours);
        let client = Client::new(writer, mux::PLUGIN_CONN, inbound.plugin);
        let (peer_writer, peer_inbound) = mux::split(theirs);
        let server = tokio::spawn(serve(
            peer_writer,
            mux::PLUGIN_CONN,
            peer_inbound.plugin,
            |req: Request| async move {
                match req.method.as_str() {
                    "Echo" => Ok(req.payload),
                    "Hang" => std::future::pending().await,
                    other => Err((UNIMPLEMENTED, format!("{other} not implemented"))),
                }
            },
        ));
        (client, server)
    }

    #[tokio::test]
    async fn calls_get_their_answer_an_error_status_or_a_timeout() {
        let (client, _server) = echo_pair();
        let request = Status {
            code: 7,
            message: "x".repeat(10_000),
        };
        let second = Duration::from_secs(5);
        let echoed = client.call("S", "Echo", &request, second).await;
        assert_eq!(echoed, Ok(request.encode_to_vec()));
        let missing = client.call("S", "Nope", &request, second).await;
        assert!(matches!(
            missing,
            Err(CallError::Status {
                code: UNIMPLEMENTED,
                ..
            })
        ));
        let short = Duration::from_millis(50);
        let hung = client.call("S", "Hang", &request, short).await;
        assert_eq!(hung, Err(CallError::Timeout(short)));
    }

    #[tokio::test]
    async fn a_closed_peer_fails_calls_with_closed() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (writer, inbound) = mux::split(ours);
        let client = Client::new(writer, mux::PLUGIN_CONN, inbound.plugin);
        drop(theirs);
        client.closed().await;
        let request = Status::default();
        let call = client.call("S", "Echo", &request, Duration::from_secs(5));
        assert_eq!(call.await, Err(CallError::Closed));
    }

    #[test]
    fn a_header_is_length_stream_type_flags_big_endian() {
        let header = encode_header(0x0102, 0x0305, TYPE_RESPONSE);
        assert_eq!(header, [0, 0, 1, 2, 0, 0, 3, 5, TYPE_RESPONSE, 0]);
    }
}
