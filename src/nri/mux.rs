//! NRI's connection multiplexer (containerd/nri `pkg/net/multiplex`): one Unix socket carries
//! several logical connections. Every frame is a 4-byte big-endian connection id, a 4-byte
//! big-endian payload length, then the payload. Connection 1 carries the Plugin service (the
//! plugin serves it), connection 2 the Runtime service (the runtime serves it); id 0 is
//! reserved. Opening a connection sends nothing, and frames for an id nobody opened are dropped.
//!
//! Owns the framing only: what a payload means is `ttrpc.rs`'s business.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Mutex};

/// The logical connection of the Plugin service (crisp calls, the plugin answers).
pub const PLUGIN_CONN: u32 = 1;
/// The logical connection of the Runtime service (the plugin calls, crisp answers).
pub const RUNTIME_CONN: u32 = 2;
/// NRI's largest frame payload: a ttrpc header and ttrpc's largest message.
pub const MAX_PAYLOAD: usize = super::ttrpc::HEADER_LEN + super::ttrpc::MAX_MESSAGE;
/// NRI's per-connection read queue; a peer that floods past it is cut off, as in NRI.
const READ_QUEUE: usize = 256;
const FRAME_HEADER: usize = 8;

/// The sending half, shared by both logical connections: one frame is written whole.
#[derive(Clone)]
pub struct MuxWriter {
    trunk: Arc<Mutex<Box<dyn AsyncWrite + Send + Unpin>>>,
}

impl MuxWriter {
    /// Sends `data` on `conn`, split into frames of at most `MAX_PAYLOAD` bytes.
    pub async fn send(&self, conn: u32, data: &[u8]) -> io::Result<()> {
        let mut trunk = self.trunk.lock().await;
        for chunk in data.chunks(MAX_PAYLOAD) {
            let mut frame = Vec::with_capacity(FRAME_HEADER + chunk.len());
            frame.extend_from_slice(&conn.to_be_bytes());
            frame.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            frame.extend_from_slice(chunk);
            trunk.write_all(&frame).await?;
        }
        trunk.flush().await
    }

    /// Shuts the socket's write side: the peer reads EOF.
    pub async fn close(&self) {
        let _ = self.trunk.lock().await.shutdown().await;
    }
}

/// The receiving ends of the two logical connections; each yields frame payloads in order and
/// ends (None) when the socket closes or breaks the framing.
pub struct Inbound {
    pub plugin: mpsc::Receiver<Vec<u8>>,
    pub runtime: mpsc::Receiver<Vec<u8>>,
}

/// Splits `stream` into the shared writer and the two inbound connections; a task reads the
/// socket until EOF or a framing error.
pub fn split<S>(stream: S) -> (MuxWriter, Inbound)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    let (plugin_tx, plugin) = mpsc::channel(READ_QUEUE);
    let (runtime_tx, runtime) = mpsc::channel(READ_QUEUE);
    tokio::spawn(demultiplex(read, plugin_tx, runtime_tx));
    let writer = MuxWriter {
        trunk: Arc::new(Mutex::new(Box::new(write))),
    };
    (writer, Inbound { plugin, runtime })
}

async fn demultiplex<R: AsyncRead + Unpin>(
    mut read: R,
    plugin: mpsc::Sender<Vec<u8>>,
    runtime: mpsc::Sender<Vec<u8>>,
) {
    loop {
        let (conn, payload) = match read_frame(&mut read).await {
            Ok(frame) => frame,
            Err(e) => {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    tracing::debug!(error = %e, "NRI connection: framing broken, closing");
                }
                return;
            }
        };
        let queue = match conn {
            PLUGIN_CONN => &plugin,
            RUNTIME_CONN => &runtime,
            _ => continue,
        };
        // A full queue means the peer floods faster than it is served: cut it off as NRI does.
        if queue.try_send(payload).is_err() {
            tracing::warn!(conn, "NRI connection: read queue full or closed, closing");
            return;
        }
    }
}

/// Reads one frame: (connection id, payload). A payload over `MAX_PAYLOAD` is a protocol error.
pub async fn read_frame<R: AsyncRead + Unpin>(read: &mut R) -> io::Result<(u32, Vec<u8>)> {
    let mut header = [0u8; FRAME_HEADER];
    read.read_exact(&mut header).await?;
    let conn = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes on connection {conn}, over NRI's {MAX_PAYLOAD}"),
        ));
    }
    let mut payload = vec![0u8; len];
    read.read_exact(&mut payload).await?;
    Ok((conn, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_routed_by_connection_and_unknown_ids_dropped() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let (writer, mut inbound) = split(ours);
        for (conn, payload) in [(2u32, &b"reg"[..]), (7, b"lost"), (1, b"cfg")] {
            let mut frame = conn.to_be_bytes().to_vec();
            frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            frame.extend_from_slice(payload);
            theirs.write_all(&frame).await.expect("write");
        }
        assert_eq!(inbound.runtime.recv().await.as_deref(), Some(&b"reg"[..]));
        assert_eq!(inbound.plugin.recv().await.as_deref(), Some(&b"cfg"[..]));
        writer.send(1, b"hello").await.expect("send");
        assert_eq!(
            read_frame(&mut theirs).await.expect("frame"),
            (1, b"hello".to_vec())
        );
    }

    #[tokio::test]
    async fn an_oversized_frame_closes_both_connections() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let (_writer, mut inbound) = split(ours);
        let mut frame = 1u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&((MAX_PAYLOAD + 1) as u32).to_be_bytes());
        theirs.write_all(&frame).await.expect("write");
        assert_eq!(inbound.plugin.recv().await, None);
        assert_eq!(inbound.runtime.recv().await, None);
    }
}
