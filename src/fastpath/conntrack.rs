//! portmap's stale-UDP cleanup (plugins v1.1.1 `plugins/meta/portmap/main.go`, cmdAdd, and
//! `pkg/utils/conntrack.go`): after a pod's UDP host ports are forwarded, conntrack entries
//! whose original destination port is one of them are deleted, so that a flow the kernel
//! already tracks (to an old pod, or to nothing) does not keep black-holing the new pod's
//! traffic. Like the plugin, crisp dumps the node namespace's table over ctnetlink, picks the
//! UDP entries by original destination port in user space, and deletes each; failures are
//! the caller's to log (the plugin treats them as informative only).
//!
//! A blocking netlink socket (`NETLINK_NETFILTER`) in crisp's namespace: call it from a
//! blocking thread.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
pub const IPPROTO_UDP: u8 = 17;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// Deletes the conntrack entries of `family` (`libc::AF_INET` or `AF_INET6`) whose original
/// tuple is UDP to `port`; returns how many were deleted.
pub fn delete_udp_to_port(family: u8, port: u16) -> io::Result<usize> {
    let socket = Ctnetlink::open()?;
    let stale: Vec<Vec<u8>> = socket
        .dump(family)?
        .into_iter()
        .filter(|attrs| orig_proto_and_dst_port(attrs) == Some((IPPROTO_UDP, port)))
        .collect();
    let mut deleted = 0;
    for attrs in stale {
        match socket.delete(family, &attrs) {
            Ok(()) => deleted += 1,
            // Gone by itself (timed out) between the dump and the delete.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

struct Ctnetlink {
    fd: OwnedFd,
    seq: std::cell::Cell<u32>,
}

impl Ctnetlink {
    fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Ctnetlink {
            fd,
            seq: std::cell::Cell::new(1),
        })
    }

    fn request(&self, kind: u16, flags: u16, family: u8, payload: &[u8]) -> io::Result<u32> {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let len = NLMSG_HDRLEN + NFGENMSG_LEN + payload.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, NFNETLINK_V0, res_id 0.
        msg.extend_from_slice(&[family, 0, 0, 0]);
        msg.extend_from_slice(payload);
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())?;
        Ok(seq)
    }

    /// Reads the answers to `seq` until DONE (a dump) or the ACK/error (a request); each
    /// data message's attributes (after the nfgenmsg) go to `each`.
    fn answers(&self, seq: u32, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            let mut at = 0;
            while at + NLMSG_HDRLEN <= n {
                let field = |o: usize, w: usize| &buf[at + o..at + o + w];
                let len = u32::from_ne_bytes(field(0, 4).try_into().unwrap_or([0; 4])) as usize;
                let kind = u16::from_ne_bytes(field(4, 2).try_into().unwrap_or([0; 2]));
                let their_seq = u32::from_ne_bytes(field(8, 4).try_into().unwrap_or([0; 4]));
                if len < NLMSG_HDRLEN || at + len > n {
                    return Err(io::Error::other("truncated ctnetlink message"));
                }
                let body = &buf[at + NLMSG_HDRLEN..at + len];
                at += align4(len);
                if their_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map_or(-libc::EPROTO, i32::from_ne_bytes);
                        return if code == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    _ => {
                        if let Some(attrs) = body.get(NFGENMSG_LEN..) {
                            each(attrs);
                        }
                    }
                }
            }
        }
    }

    /// Every entry of the family's table, as its attribute bytes.
    fn dump(&self, family: u8) -> io::Result<Vec<Vec<u8>>> {
        let seq = self.request(IPCTNL_MSG_CT_GET, NLM_F_DUMP, family, &[])?;
        let mut entries = Vec::new();
        self.answers(seq, |attrs| entries.push(attrs.to_vec()))?;
        Ok(entries)
    }

    /// Deletes one entry by sending back what the dump said of it (as the plugin does: the
    /// kernel finds it by its original tuple and zone, and checks its id).
    fn delete(&self, family: u8, attrs: &[u8]) -> io::Result<()> {
        let seq = self.request(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, family, attrs)?;
        self.answers(seq, |_| {})
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The (type, payload) netlink attributes in `bytes`; stops at the first malformed one.
fn attributes(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
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

fn attribute(bytes: &[u8], kind: u16) -> Option<&[u8]> {
    attributes(bytes).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

/// The protocol number and destination port of an entry's original tuple.
fn orig_proto_and_dst_port(attrs: &[u8]) -> Option<(u8, u16)> {
    let proto = attribute(attribute(attrs, CTA_TUPLE_ORIG)?, CTA_TUPLE_PROTO)?;
    let number = *attribute(proto, CTA_PROTO_NUM)?.first()?;
    let port = attribute(proto, CTA_PROTO_DST_PORT)?;
    Some((number, u16::from_be_bytes([*port.first()?, *port.get(1)?])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = 4 + payload.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(align4(len), 0);
        out
    }

    const NESTED: u16 = 0x8000;

    fn entry(proto: u8, dst_port: u16) -> Vec<u8> {
        let ip = attr(1 | NESTED, &attr(1, &[10, 0, 0, 1]));
        let mut l4 = attr(CTA_PROTO_NUM, &[proto]);
        l4.extend(attr(2, &4000u16.to_be_bytes()));
        l4.extend(attr(CTA_PROTO_DST_PORT, &dst_port.to_be_bytes()));
        let mut tuple = ip;
        tuple.extend(attr(CTA_TUPLE_PROTO | NESTED, &l4));
        let mut attrs = attr(CTA_TUPLE_ORIG | NESTED, &tuple);
        // A reply tuple with other ports must not be what is matched.
        attrs.extend(attr(2 | NESTED, &attr(CTA_TUPLE_PROTO | NESTED, &[])));
        attrs
    }

    #[test]
    fn reads_the_original_tuple_protocol_and_destination_port() {
        assert_eq!(
            orig_proto_and_dst_port(&entry(IPPROTO_UDP, 5353)),
            Some((IPPROTO_UDP, 5353))
        );
        assert_eq!(orig_proto_and_dst_port(&entry(6, 80)), Some((6, 80)));
    }

    #[test]
    fn malformed_attributes_match_nothing() {
        assert_eq!(orig_proto_and_dst_port(&[]), None);
        assert_eq!(orig_proto_and_dst_port(&[200, 0, 1, 0, 9]), None);
        let mut cut = entry(IPPROTO_UDP, 53);
        cut.truncate(cut.len() / 2);
        assert_eq!(orig_proto_and_dst_port(&cut), None);
    }
}
