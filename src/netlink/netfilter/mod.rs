//! The netfilter families over one blocking `NETLINK_NETFILTER` socket in the caller's (the
//! node's) namespace: the socket and the attribute codec here, nf_tables transactions in
//! [`nftables`], conntrack deletes in [`conntrack`]. One folder, because both are messages on
//! this one socket and share its codec; nothing outside it opens the socket. It never decides
//! which rules a pod needs (the fast path's `rules.rs` does) and never spawns a tool. Call it
//! from a blocking thread.
//!
//! Messages are built by hand. `netlink-packet-netfilter` 0.4.0 (MIT, pure Rust, on the
//! netlink-packet-core 0.9 crisp already builds) types batches, chain and rule messages with
//! payload/cmp/bitwise/immediate, and ctnetlink GET/DELETE by tuple, but not the `counter`,
//! xt `match` and xt `target` expressions iptables-nft writes (raw `Expressions::Other` only):
//! it fits DEL and conntrack, not [`nftables::add_masq_v4`]. `rustables` 0.9.0 is GPL-3.0,
//! runs bindgen (libclang) to build, and has neither xt expressions nor conntrack.

pub mod conntrack;
pub mod nftables;

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::sockopt::ReceiveTimeout;
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
/// Set on a dump's messages when the table changed while it was being read.
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;
pub const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

pub struct NfSocket {
    fd: OwnedFd,
    seq: Cell<u32>,
}

/// One message to send: its type (subsystem << 8 | command), flags beyond REQUEST, the
/// nfgenmsg family and resource id, and its attributes.
pub struct Message {
    pub kind: u16,
    pub flags: u16,
    pub family: u8,
    pub res_id: u16,
    pub attrs: Vec<u8>,
}

impl Message {
    /// A request to one of `subsystem`'s commands.
    pub fn request(subsystem: u16, command: u16, flags: u16, family: u8, attrs: Vec<u8>) -> Self {
        Message {
            kind: (subsystem << 8) | command,
            flags,
            family,
            res_id: 0,
            attrs,
        }
    }
}

impl NfSocket {
    pub fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // An answer the kernel never sends must not hang a Stop.
        setsockopt(&fd, ReceiveTimeout, &TimeVal::new(5, 0))?;
        Ok(NfSocket {
            fd,
            seq: Cell::new(1),
        })
    }

    /// Sends the messages in one datagram (an nftables batch is several); returns the
    /// sequence number of each.
    pub fn send(&self, messages: &[Message]) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut seqs = Vec::new();
        for m in messages {
            let seq = self.seq.get();
            self.seq.set(seq.wrapping_add(1));
            let len = NLMSG_HDRLEN + NFGENMSG_LEN + m.attrs.len();
            out.extend_from_slice(&(len as u32).to_ne_bytes());
            out.extend_from_slice(&m.kind.to_ne_bytes());
            out.extend_from_slice(&(NLM_F_REQUEST | m.flags).to_ne_bytes());
            out.extend_from_slice(&seq.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
            // nfgenmsg: family, NFNETLINK_V0, resource id (big endian).
            out.push(m.family);
            out.push(0);
            out.extend_from_slice(&m.res_id.to_be_bytes());
            out.extend_from_slice(&m.attrs);
            out.resize(align4(out.len()), 0);
            seqs.push(seq);
        }
        send(self.fd.as_raw_fd(), &out, MsgFlags::empty())?;
        Ok(seqs)
    }

    /// A dump: every answer's attributes (after the nfgenmsg) until DONE. A dump the kernel
    /// marks interrupted (the table changed meanwhile) is `ErrorKind::Interrupted`.
    pub fn dump(&self, request: Message) -> io::Result<Vec<Vec<u8>>> {
        let seq = self.send(&[request])?[0];
        let mut entries = Vec::new();
        let mut interrupted = false;
        self.read(|their_seq, kind, flags, body| {
            if their_seq != seq {
                return Ok(false);
            }
            interrupted |= flags & NLM_F_DUMP_INTR != 0;
            match kind {
                NLMSG_DONE => Ok(true),
                NLMSG_ERROR => error_code(body).map(|()| true),
                _ => {
                    if let Some(attrs) = body.get(NFGENMSG_LEN..) {
                        entries.push(attrs.to_vec());
                    }
                    Ok(false)
                }
            }
        })?;
        if interrupted {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the table changed during the dump",
            ));
        }
        Ok(entries)
    }

    /// Waits for the acknowledgement of each of `seqs` (sent with NLM_F_ACK); the first
    /// error wins. An error answering one of `terminal` (an nftables batch's begin or end,
    /// refused as a whole) ends the wait at once.
    pub fn acks(&self, seqs: &[u32], terminal: &[u32]) -> io::Result<()> {
        let mut pending: Vec<u32> = seqs.to_vec();
        let mut first_error = None;
        self.read(|their_seq, kind, _, body| {
            if kind != NLMSG_ERROR {
                return Ok(false);
            }
            if terminal.contains(&their_seq) {
                error_code(body)?;
            }
            if pending.contains(&their_seq) {
                pending.retain(|s| *s != their_seq);
                if let Err(e) = error_code(body) {
                    first_error.get_or_insert(e);
                }
            }
            Ok(pending.is_empty())
        })?;
        first_error.map_or(Ok(()), Err)
    }

    /// Reads messages, handing each (seq, type, flags, body) to `each` until it says done.
    fn read(
        &self,
        mut each: impl FnMut(u32, u16, u16, &[u8]) -> io::Result<bool>,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            let mut at = 0;
            while at + NLMSG_HDRLEN <= n {
                let header = &buf[at..at + NLMSG_HDRLEN];
                let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
                let kind = u16::from_ne_bytes([header[4], header[5]]);
                let flags = u16::from_ne_bytes([header[6], header[7]]);
                let seq = u32::from_ne_bytes([header[8], header[9], header[10], header[11]]);
                if len < NLMSG_HDRLEN || at + len > n {
                    return Err(io::Error::other("truncated netlink message"));
                }
                let body = &buf[at + NLMSG_HDRLEN..at + len];
                at += align4(len);
                if each(seq, kind, flags, body)? {
                    return Ok(());
                }
            }
        }
    }
}

/// An NLMSG_ERROR body: 0 is an acknowledgement, anything else an errno.
fn error_code(body: &[u8]) -> io::Result<()> {
    let code = body.get(..4).map_or(-libc::EPROTO, |b| {
        i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    });
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-code))
    }
}

pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one attribute (padded to 4 bytes).
pub fn put_attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align4(out.len()), 0);
}

/// Appends a NUL-terminated string attribute.
pub fn put_str(out: &mut Vec<u8>, kind: u16, value: &str) {
    let mut bytes = value.as_bytes().to_vec();
    bytes.push(0);
    put_attr(out, kind, &bytes);
}

/// The (type, payload) attributes in `bytes`; stops at the first malformed one.
pub fn attributes(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = bytes.get(at..at + 4)?;
        let len = u16::from_ne_bytes([header[0], header[1]]) as usize;
        let kind = u16::from_ne_bytes([header[2], header[3]]) & NLA_TYPE_MASK;
        let payload = bytes.get(at + 4..at + len.max(4))?;
        at += align4(len.max(4));
        Some((kind, payload))
    })
}

pub fn attribute(bytes: &[u8], kind: u16) -> Option<&[u8]> {
    attributes(bytes).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

/// A string attribute's value without its NUL.
pub fn str_attribute(bytes: &[u8], kind: u16) -> Option<&str> {
    let raw = attribute(bytes, kind)?;
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    std::str::from_utf8(&raw[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_and_stop_at_garbage() {
        let mut out = Vec::new();
        put_str(&mut out, 1, "nat");
        put_attr(&mut out, 3 | NLA_F_NESTED, &[1, 2, 3, 4, 5]);
        assert_eq!(str_attribute(&out, 1), Some("nat"));
        assert_eq!(attribute(&out, 3), Some(&[1, 2, 3, 4, 5][..]));
        assert_eq!(attribute(&out, 2), None);
        assert_eq!(attributes(&[200, 0, 1, 0, 9]).count(), 0);
        assert_eq!(attributes(&out[..out.len() - 6]).count(), 1);
    }

    #[test]
    fn error_bodies_are_acks_or_errnos() {
        assert!(error_code(&0i32.to_ne_bytes()).is_ok());
        let e = error_code(&(-libc::ENOENT).to_ne_bytes()).expect_err("an errno");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(error_code(&[]).is_err());
    }
}
