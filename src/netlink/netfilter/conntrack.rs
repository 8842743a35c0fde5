//! portmap's stale-UDP cleanup (plugins v1.1.1 `plugins/meta/portmap/main.go`, cmdAdd, and
//! `pkg/utils/conntrack.go`): after a pod's UDP host ports are forwarded, conntrack entries
//! whose original destination port is one of them are deleted, so that a flow the kernel
//! already tracks (to an old pod, or to nothing) does not keep black-holing the new pod's
//! traffic. Like the plugin, crisp dumps the node namespace's table over ctnetlink, picks the
//! UDP entries by original destination port in user space, and deletes each; failures are
//! the caller's to log (the plugin treats them as informative only).
//!
//! It deletes only what it is asked to (UDP to one port, in the caller's namespace) and never
//! decides when; blocking ([`super::NfSocket`]): call it from a blocking thread.

use std::io;

use super::{attribute, Message, NfSocket, NLM_F_ACK, NLM_F_DUMP};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
pub const IPPROTO_UDP: u8 = 17;

/// Deletes the conntrack entries of `family` (`libc::AF_INET` or `AF_INET6`) whose original
/// tuple is UDP to `port`; returns how many were deleted.
pub fn delete_udp_to_port(family: u8, port: u16) -> io::Result<usize> {
    let socket = NfSocket::open()?;
    let stale: Vec<Vec<u8>> = socket
        .dump(Message::request(
            NFNL_SUBSYS_CTNETLINK,
            IPCTNL_MSG_CT_GET,
            NLM_F_DUMP,
            family,
            Vec::new(),
        ))?
        .into_iter()
        .filter(|attrs| orig_proto_and_dst_port(attrs) == Some((IPPROTO_UDP, port)))
        .collect();
    let mut deleted = 0;
    for attrs in stale {
        // Sent back as the dump gave it (as the plugin does): the kernel finds the entry by
        // its original tuple and zone, and checks its id.
        let seqs = socket.send(&[Message::request(
            NFNL_SUBSYS_CTNETLINK,
            IPCTNL_MSG_CT_DELETE,
            NLM_F_ACK,
            family,
            attrs,
        )])?;
        match socket.acks(&seqs, &[]) {
            Ok(()) => deleted += 1,
            // Gone by itself (timed out) between the dump and the delete.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
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
    use crate::netlink::netfilter::{put_attr, NLA_F_NESTED as NESTED};

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_attr(&mut out, kind, payload);
        out
    }

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
