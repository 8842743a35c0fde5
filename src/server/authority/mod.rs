//! Every `:authority` is accepted, as grpc-go servers (containerd, CRI-O) accept it.
//!
//! On a Unix socket clients send what they like as the HTTP/2 `:authority`: kubelet, crictl
//! and critest up to 1.30 and grpcurl before 1.8.10 send the socket path, Python grpcio the
//! %-encoded path, grpc-java the path. h2's server refuses any value that is not a valid URI
//! authority (RST_STREAM PROTOCOL_ERROR, hyperium/h2#487) and has no option to relax that. So
//! [`AuthorityAdapter`] sits between the accepted socket and tonic: it reads the client's
//! bytes frame by frame ([`frames::Rewriter`]) and re-encodes header blocks once one carries
//! an authority h2 would refuse, which becomes `localhost`. DATA and every other frame pass
//! unchanged; what the server writes back is not touched. The adapter knows nothing of CRI.

mod frames;
mod hpack;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use frames::{Broken, Limits, Rewriter};
pub use hpack::{encode_literal_block, BlockDecoder, Field, HpackError};

/// What crisp's HTTP/2 server advertises; `serve` configures tonic with these same values so
/// the adapter and h2 cannot disagree. The table size is h2's default (hyper never sets it).
pub const LIMITS: Limits = Limits {
    header_table_size: 4096,
    max_frame_size: 16 * 1024,
    max_header_list_size: 16 * 1024,
};

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The accepted stream, with the client → server direction rewritten where needed.
pub struct AuthorityAdapter<S> {
    inner: S,
    rewriter: Rewriter,
    /// Bytes read from the client that do not yet form a complete unit.
    raw: BytesMut,
    /// Bytes ready for the server to read.
    ready: BytesMut,
    eof: bool,
}

impl<S> AuthorityAdapter<S> {
    pub fn new(inner: S) -> AuthorityAdapter<S> {
        AuthorityAdapter {
            inner,
            rewriter: Rewriter::new(LIMITS),
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityAdapter<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            this.raw.reserve(READ_CHUNK);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.raw
            ))?;
            if n == 0 {
                this.eof = true;
                continue;
            }
            if let Err(why) = this.rewriter.process(&mut this.raw, &mut this.ready) {
                tracing::warn!(reason = %why, "closing a CRI socket connection");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why.0)));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityAdapter<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for AuthorityAdapter<tokio::net::UnixStream> {
    type ConnectInfo = tonic::transport::server::UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests;
