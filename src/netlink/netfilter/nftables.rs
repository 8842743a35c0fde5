//! A pod's nat rules over nf_tables netlink, for nodes whose iptables is the nf_tables variant
//! (Debian's default), where the rules iptables-nft writes are nf_tables rules:
//! - [`delete_chains`]: the teardown of ipMasq's `CNI-…` chain, portmap's `CNI-DN-…` chain and
//!   every rule jumping to them (a jump is an `immediate` expression naming the chain), in one
//!   transaction;
//! - [`add_masq_v4`]: ipMasq's IPv4 rules, encoded exactly as iptables-nft encodes the
//!   `iptables-restore` lines the fast path's `rules.rs` writes (checked against them by
//!   `tests/fastpath.rs`); portmap's rules and IPv6 stay with `iptables-restore`.
//!
//! Why not `iptables-restore`: its process start, and an iptables-nft process that deleted
//! rules pays for the kernel's cleanup of the transaction when it closes its netlink socket,
//! while crisp keeps one socket open and returns as soon as the transaction is acknowledged.
//! The kernel still does that cleanup after an RCU grace period, and a transaction that comes
//! before it is done waits for it (the figures are in docs/performance.md).
//!
//! It owns the nf_tables message shapes only: which chains and addresses, and when netlink is
//! used at all, are the fast path's to decide. Blocking: call it from a blocking thread.

use std::io;

use super::{
    attribute, attributes, put_attr, put_str, str_attribute, Message, NfSocket, NLA_F_NESTED,
    NLM_F_ACK, NLM_F_DUMP,
};
use crate::netlink::ip;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_MATCH_NAME: u16 = 1;
const NFTA_MATCH_REV: u16 = 2;
const NFTA_MATCH_INFO: u16 = 3;
const NFTA_TARGET_NAME: u16 = 1;
const NFTA_TARGET_REV: u16 = 2;
const NFTA_TARGET_INFO: u16 = 3;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
/// `struct xt_comment_info`: the comment, NUL-padded.
const XT_COMMENT_INFO_LEN: usize = 256;
/// `struct nf_nat_ipv4_multi_range_compat` (20 bytes) aligned to 8, as iptables passes it.
const XT_MASQUERADE_V4_INFO_LEN: usize = 24;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NAT: &str = "nat";

/// What a teardown deletes: the rules (chain, handle) outside the pod's chains that jump into
/// them, and those of the pod's chains that exist.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub jumps: Vec<(String, u64)>,
    pub chains: Vec<String>,
}

/// Deletes, in one transaction, every rule of the family's `nat` table that jumps to one of
/// `chains`, then those chains with their rules; returns what it deleted. Nothing there (no
/// nat table, no such chain) is success. A dump interrupted by a concurrent change, or a
/// transaction that finds something already gone, is tried again (up to 5 times).
pub fn delete_chains(socket: &NfSocket, v6: bool, chains: &[String]) -> io::Result<Found> {
    let family = if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 };
    let mut tries = 0;
    loop {
        tries += 1;
        let found = match find(socket, family, chains) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted && tries < 5 => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Found::default()),
            Err(e) => return Err(e),
            Ok(found) => found,
        };
        if found.jumps.is_empty() && found.chains.is_empty() {
            return Ok(found);
        }
        match commit(socket, family, &found) {
            // A rule or chain went meanwhile (another teardown of the same pod): look again.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && tries < 5 => continue,
            Err(e) => return Err(e),
            Ok(()) => return Ok(found),
        }
    }
}

fn find(socket: &NfSocket, family: u8, chains: &[String]) -> io::Result<Found> {
    let mut attrs = Vec::new();
    put_str(&mut attrs, NFTA_RULE_TABLE, NAT);
    let rules = socket.dump(Message::request(
        NFNL_SUBSYS_NFTABLES,
        NFT_MSG_GETRULE,
        NLM_F_DUMP,
        family,
        attrs,
    ))?;
    let mut jumps = Vec::new();
    for rule in &rules {
        let (Some(chain), Some(handle)) = (
            str_attribute(rule, NFTA_RULE_CHAIN),
            attribute(rule, NFTA_RULE_HANDLE).and_then(be64),
        ) else {
            continue;
        };
        if chains.iter().any(|c| c == chain) {
            continue;
        }
        if jump_targets(rule).any(|t| chains.iter().any(|c| c == t)) {
            jumps.push((chain.to_string(), handle));
        }
    }
    let mut attrs = Vec::new();
    put_str(&mut attrs, NFTA_CHAIN_TABLE, NAT);
    let existing = socket
        .dump(Message::request(
            NFNL_SUBSYS_NFTABLES,
            NFT_MSG_GETCHAIN,
            NLM_F_DUMP,
            family,
            attrs,
        ))?
        .iter()
        .filter(|c| str_attribute(c, NFTA_CHAIN_TABLE) == Some(NAT))
        .filter_map(|c| str_attribute(c, NFTA_CHAIN_NAME))
        .filter(|name| chains.iter().any(|c| c == name))
        .map(str::to_string)
        .collect();
    Ok(Found {
        jumps,
        chains: existing,
    })
}

/// The chains a rule's `immediate` expressions jump or go to.
fn jump_targets(rule: &[u8]) -> impl Iterator<Item = &str> {
    attribute(rule, NFTA_RULE_EXPRESSIONS)
        .into_iter()
        .flat_map(attributes)
        .filter(|(kind, _)| *kind == NFTA_LIST_ELEM)
        .filter(|(_, expr)| str_attribute(expr, NFTA_EXPR_NAME) == Some("immediate"))
        .filter_map(|(_, expr)| {
            let data = attribute(expr, NFTA_EXPR_DATA)?;
            let verdict = attribute(attribute(data, NFTA_IMMEDIATE_DATA)?, NFTA_DATA_VERDICT)?;
            str_attribute(verdict, NFTA_VERDICT_CHAIN)
        })
}

/// ipMasq's rules for a pod's IPv4 addresses (the bridge plugin's `SetupIPMasq`), written
/// in one transaction exactly as iptables-nft writes the `iptables-restore` lines
/// the fast path's `PodRules` makes: the pod's chain with, per address, an ACCEPT for its
/// subnet and one MASQUERADE for everything but multicast, then POSTROUTING's jump per
/// address. Each rule is what `nft --debug=netlink` shows for iptables-nft's: payload and
/// cmp (a bitwise mask only for a prefix that is not whole bytes), the `comment` match, a
/// counter, then the verdict or the MASQUERADE target. Needs the `nat` table and its
/// POSTROUTING chain (the first pod's `iptables-restore` makes them): without them the
/// transaction fails with nothing applied.
pub fn add_masq_v4(
    socket: &NfSocket,
    chain: &str,
    comment: &str,
    addrs: &[(std::net::Ipv4Addr, u8)],
) -> io::Result<()> {
    if comment.len() >= XT_COMMENT_INFO_LEN {
        return Err(io::Error::other("comment longer than iptables allows"));
    }
    let family = NFPROTO_IPV4;
    let mut attrs = Vec::new();
    put_str(&mut attrs, NFTA_CHAIN_TABLE, NAT);
    put_str(&mut attrs, NFTA_CHAIN_NAME, chain);
    let mut batch = vec![Message::request(
        NFNL_SUBSYS_NFTABLES,
        NFT_MSG_NEWCHAIN,
        NLM_F_ACK | NLM_F_CREATE,
        family,
        attrs,
    )];
    let (in_chain, jumps) = masq_rules_v4(chain, comment, addrs);
    for (target, exprs) in in_chain
        .iter()
        .map(|e| (chain, e))
        .chain(jumps.iter().map(|e| ("POSTROUTING", e)))
    {
        let mut attrs = Vec::new();
        put_str(&mut attrs, NFTA_RULE_TABLE, NAT);
        put_str(&mut attrs, NFTA_RULE_CHAIN, target);
        put_attr(&mut attrs, NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, exprs);
        batch.push(Message::request(
            NFNL_SUBSYS_NFTABLES,
            NFT_MSG_NEWRULE,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
            family,
            attrs,
        ));
    }
    transaction(socket, batch)
}

/// The expressions of ipMasq's rules: those in the pod's chain (per address, the ACCEPT of
/// its subnet and the MASQUERADE of all but multicast) and POSTROUTING's jumps (per
/// address), each rule once (AppendUnique, as the plugin: a second address adds only what is
/// new).
fn masq_rules_v4(
    chain: &str,
    comment: &str,
    addrs: &[(std::net::Ipv4Addr, u8)],
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let multicast = ([224, 0, 0, 0], 4);
    let mut in_chain: Vec<Vec<u8>> = Vec::new();
    let mut jumps: Vec<Vec<u8>> = Vec::new();
    for (addr, prefix) in addrs {
        let subnet = ip::network_v4(*addr, *prefix).octets();
        let accept = rule_exprs(
            v4_match(16, subnet, *prefix, NFT_CMP_EQ),
            comment,
            verdict(NF_ACCEPT, None),
        );
        let masquerade = rule_exprs(
            v4_match(16, multicast.0, multicast.1, NFT_CMP_NEQ),
            comment,
            masquerade_v4(),
        );
        let jump = rule_exprs(
            v4_match(12, addr.octets(), 32, NFT_CMP_EQ),
            comment,
            verdict(NFT_JUMP, Some(chain)),
        );
        push_unique(&mut in_chain, accept);
        push_unique(&mut in_chain, masquerade);
        push_unique(&mut jumps, jump);
    }
    (in_chain, jumps)
}

/// One rule's expressions as iptables-nft writes them: the address match, the comment
/// match, a counter, then `last` (a verdict or the MASQUERADE target).
fn rule_exprs(address_match: Vec<Vec<u8>>, comment: &str, last: Vec<u8>) -> Vec<u8> {
    [address_match, vec![comment_match(comment), counter(), last]]
        .concat()
        .concat()
}

fn push_unique(rules: &mut Vec<Vec<u8>>, rule: Vec<u8>) {
    if !rules.contains(&rule) {
        rules.push(rule);
    }
}

/// iptables-nft's `add_addr` for an IPv4 address at `offset` in the network header: load
/// as many bytes as the prefix fills whole, or all four and a bitwise mask when it does not.
fn v4_match(offset: u32, addr: [u8; 4], prefix: u8, op: u32) -> Vec<Vec<u8>> {
    let mask = ip::netmask_v4(prefix).octets();
    let whole = mask.iter().take_while(|b| **b == 0xff).count();
    let bitwise = mask[whole..].iter().any(|b| *b != 0);
    let len = if bitwise { 4 } else { whole };
    let mut exprs = Vec::new();
    let mut payload = Vec::new();
    put_attr(&mut payload, NFTA_PAYLOAD_DREG, &NFT_REG_1.to_be_bytes());
    put_attr(
        &mut payload,
        NFTA_PAYLOAD_BASE,
        &NFT_PAYLOAD_NETWORK_HEADER.to_be_bytes(),
    );
    put_attr(&mut payload, NFTA_PAYLOAD_OFFSET, &offset.to_be_bytes());
    put_attr(&mut payload, NFTA_PAYLOAD_LEN, &(len as u32).to_be_bytes());
    exprs.push(expression("payload", &payload));
    if bitwise {
        let mut data = Vec::new();
        put_attr(&mut data, NFTA_BITWISE_SREG, &NFT_REG_1.to_be_bytes());
        put_attr(&mut data, NFTA_BITWISE_DREG, &NFT_REG_1.to_be_bytes());
        put_attr(&mut data, NFTA_BITWISE_LEN, &(len as u32).to_be_bytes());
        put_attr(&mut data, NFTA_BITWISE_MASK | NLA_F_NESTED, &value(&mask));
        put_attr(&mut data, NFTA_BITWISE_XOR | NLA_F_NESTED, &value(&[0; 4]));
        exprs.push(expression("bitwise", &data));
    }
    let mut cmp = Vec::new();
    put_attr(&mut cmp, NFTA_CMP_SREG, &NFT_REG_1.to_be_bytes());
    put_attr(&mut cmp, NFTA_CMP_OP, &op.to_be_bytes());
    put_attr(&mut cmp, NFTA_CMP_DATA | NLA_F_NESTED, &value(&addr[..len]));
    exprs.push(expression("cmp", &cmp));
    exprs
}

fn value(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_attr(&mut out, NFTA_DATA_VALUE, bytes);
    out
}

fn comment_match(comment: &str) -> Vec<u8> {
    let mut info = comment.as_bytes().to_vec();
    info.resize(XT_COMMENT_INFO_LEN, 0);
    let mut data = Vec::new();
    put_str(&mut data, NFTA_MATCH_NAME, "comment");
    put_attr(&mut data, NFTA_MATCH_REV, &0u32.to_be_bytes());
    put_attr(&mut data, NFTA_MATCH_INFO, &info);
    expression("match", &data)
}

fn counter() -> Vec<u8> {
    let mut data = Vec::new();
    put_attr(&mut data, NFTA_COUNTER_BYTES, &0u64.to_be_bytes());
    put_attr(&mut data, NFTA_COUNTER_PACKETS, &0u64.to_be_bytes());
    expression("counter", &data)
}

/// MASQUERADE revision 0 for IPv4: one range, everything else zero (libipt_MASQUERADE's
/// defaults).
fn masquerade_v4() -> Vec<u8> {
    let mut info = vec![0u8; XT_MASQUERADE_V4_INFO_LEN];
    info[..4].copy_from_slice(&1u32.to_ne_bytes());
    let mut data = Vec::new();
    put_str(&mut data, NFTA_TARGET_NAME, "MASQUERADE");
    put_attr(&mut data, NFTA_TARGET_REV, &0u32.to_be_bytes());
    put_attr(&mut data, NFTA_TARGET_INFO, &info);
    expression("target", &data)
}

fn verdict(code: i32, chain: Option<&str>) -> Vec<u8> {
    let mut verdict = Vec::new();
    put_attr(&mut verdict, NFTA_VERDICT_CODE, &code.to_be_bytes());
    if let Some(chain) = chain {
        put_str(&mut verdict, NFTA_VERDICT_CHAIN, chain);
    }
    let mut data = Vec::new();
    put_attr(&mut data, NFTA_DATA_VERDICT | NLA_F_NESTED, &verdict);
    let mut immediate = Vec::new();
    put_attr(
        &mut immediate,
        NFTA_IMMEDIATE_DREG,
        &NFT_REG_VERDICT.to_be_bytes(),
    );
    put_attr(&mut immediate, NFTA_IMMEDIATE_DATA | NLA_F_NESTED, &data);
    expression("immediate", &immediate)
}

/// One element of a rule's expression list.
fn expression(name: &str, data: &[u8]) -> Vec<u8> {
    let mut expr = Vec::new();
    put_str(&mut expr, NFTA_EXPR_NAME, name);
    put_attr(&mut expr, NFTA_EXPR_DATA | NLA_F_NESTED, data);
    let mut elem = Vec::new();
    put_attr(&mut elem, NFTA_LIST_ELEM | NLA_F_NESTED, &expr);
    elem
}

fn be64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// One batch: the jumps by handle, then each chain (its rules go with it).
fn commit(socket: &NfSocket, family: u8, found: &Found) -> io::Result<()> {
    let mut batch = Vec::new();
    for (chain, handle) in &found.jumps {
        let mut attrs = Vec::new();
        put_str(&mut attrs, NFTA_RULE_TABLE, NAT);
        put_str(&mut attrs, NFTA_RULE_CHAIN, chain);
        put_attr(&mut attrs, NFTA_RULE_HANDLE, &handle.to_be_bytes());
        batch.push(Message::request(
            NFNL_SUBSYS_NFTABLES,
            NFT_MSG_DELRULE,
            NLM_F_ACK,
            family,
            attrs,
        ));
    }
    for chain in &found.chains {
        let mut attrs = Vec::new();
        put_str(&mut attrs, NFTA_CHAIN_TABLE, NAT);
        put_str(&mut attrs, NFTA_CHAIN_NAME, chain);
        batch.push(Message::request(
            NFNL_SUBSYS_NFTABLES,
            NFT_MSG_DELCHAIN,
            NLM_F_ACK,
            family,
            attrs,
        ));
    }
    transaction(socket, batch)
}

/// Sends `messages` as one nf_tables transaction (between a batch's begin and end) and waits
/// for each one's acknowledgement: all of it applies, or none.
fn transaction(socket: &NfSocket, messages: Vec<Message>) -> io::Result<()> {
    let mut batch = Vec::with_capacity(messages.len() + 2);
    batch.push(batch_marker(NFNL_MSG_BATCH_BEGIN));
    batch.extend(messages);
    batch.push(batch_marker(NFNL_MSG_BATCH_END));
    let seqs = socket.send(&batch)?;
    let (first, last) = (seqs[0], seqs[seqs.len() - 1]);
    socket.acks(&seqs[1..seqs.len() - 1], &[first, last])
}

fn batch_marker(kind: u16) -> Message {
    Message {
        kind,
        flags: 0,
        family: libc::AF_UNSPEC as u8,
        res_id: NFNL_SUBSYS_NFTABLES,
        attrs: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(kind: u16, inner: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_attr(&mut out, kind | NLA_F_NESTED, inner);
        out
    }

    /// A rule as the kernel dumps it: chain, handle and expressions, one a jump.
    fn rule(chain: &str, handle: u64, jump_to: Option<&str>) -> Vec<u8> {
        let mut attrs = Vec::new();
        put_str(&mut attrs, NFTA_RULE_TABLE, NAT);
        put_str(&mut attrs, NFTA_RULE_CHAIN, chain);
        put_attr(&mut attrs, NFTA_RULE_HANDLE, &handle.to_be_bytes());
        let mut payload_expr = Vec::new();
        put_str(&mut payload_expr, NFTA_EXPR_NAME, "payload");
        let mut exprs = nested(NFTA_LIST_ELEM, &payload_expr);
        if let Some(target) = jump_to {
            let mut verdict = Vec::new();
            put_attr(&mut verdict, 1, &(-3i32).to_be_bytes());
            put_str(&mut verdict, NFTA_VERDICT_CHAIN, target);
            let data = nested(NFTA_IMMEDIATE_DATA, &nested(NFTA_DATA_VERDICT, &verdict));
            let mut immediate = Vec::new();
            put_str(&mut immediate, NFTA_EXPR_NAME, "immediate");
            immediate.extend(nested(NFTA_EXPR_DATA, &data));
            exprs.extend(nested(NFTA_LIST_ELEM, &immediate));
        }
        attrs.extend(nested(NFTA_RULE_EXPRESSIONS, &exprs));
        attrs
    }

    #[test]
    fn finds_the_chain_a_rule_jumps_to() {
        let jump = rule("POSTROUTING", 7, Some("CNI-abc"));
        assert_eq!(jump_targets(&jump).collect::<Vec<_>>(), ["CNI-abc"]);
        assert_eq!(str_attribute(&jump, NFTA_RULE_CHAIN), Some("POSTROUTING"));
        assert_eq!(attribute(&jump, NFTA_RULE_HANDLE).and_then(be64), Some(7));
        assert_eq!(jump_targets(&rule("POSTROUTING", 8, None)).count(), 0);
    }

    /// The payload length and whether a bitwise mask is needed, as iptables-nft's `add_addr`.
    #[test]
    fn addresses_load_the_bytes_their_prefix_fills() {
        let shape = |prefix| {
            let exprs = v4_match(16, [10, 99, 0, 0], prefix, NFT_CMP_EQ);
            let names: Vec<String> = exprs
                .iter()
                .filter_map(|e| {
                    let expr = attribute(e, NFTA_LIST_ELEM)?;
                    str_attribute(expr, NFTA_EXPR_NAME).map(str::to_string)
                })
                .collect();
            let payload = attribute(&exprs[0], NFTA_LIST_ELEM)
                .and_then(|e| attribute(e, NFTA_EXPR_DATA))
                .and_then(|d| attribute(d, NFTA_PAYLOAD_LEN))
                .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]));
            (payload, names.join(","))
        };
        assert_eq!(shape(24), (Some(3), "payload,cmp".into()));
        assert_eq!(shape(16), (Some(2), "payload,cmp".into()));
        assert_eq!(shape(32), (Some(4), "payload,cmp".into()));
        assert_eq!(shape(20), (Some(4), "payload,bitwise,cmp".into()));
        assert_eq!(shape(4), (Some(4), "payload,bitwise,cmp".into()));
    }

    #[test]
    fn truncated_rules_jump_nowhere() {
        let jump = rule("POSTROUTING", 7, Some("CNI-abc"));
        assert_eq!(jump_targets(&jump[..jump.len() - 12]).count(), 0);
        assert_eq!(be64(&[0, 1, 2]), None);
    }
}
