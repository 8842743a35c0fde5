//! The teardown of a pod's nat rules (ipMasq's `CNI-…` chain, portmap's `CNI-DN-…` chain and
//! every rule jumping to them) as one nf_tables transaction over netlink, for nodes whose
//! iptables is the nf_tables variant (Debian's default): the rules iptables-nft wrote are
//! nf_tables rules, and a jump is an `immediate` expression naming the chain.
//!
//! Why not `iptables-restore` as on ADD: besides its process start (~3 ms), the
//! iptables-nft process pays for the deletion when it closes its netlink socket (the kernel
//! finishes the transaction's cleanup there: 10–16 ms measured on this machine's 6.18 kernel,
//! `strace -T` showing `close` of the socket), while crisp keeps one socket open and
//! returns as soon as the transaction is acknowledged. Building rules (ADD) needs
//! iptables-nft's exact encoding of matches and targets, so ADD stays with
//! `iptables-restore`; deleting only needs rule handles and chain names.
//!
//! Blocking: call it from a blocking thread.

use std::io;

use super::nfnetlink::{
    attribute, attributes, put_attr, put_str, str_attribute, Message, NfSocket, NLM_F_ACK,
    NLM_F_DUMP,
};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
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
const NFTA_IMMEDIATE_DATA: u16 = 2;
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

fn be64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// One batch: the jumps by handle, then each chain (its rules go with it).
fn commit(socket: &NfSocket, family: u8, found: &Found) -> io::Result<()> {
    let mut batch = vec![batch_marker(NFNL_MSG_BATCH_BEGIN)];
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
    use crate::fastpath::nfnetlink::NLA_F_NESTED;

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

    #[test]
    fn truncated_rules_jump_nowhere() {
        let jump = rule("POSTROUTING", 7, Some("CNI-abc"));
        assert_eq!(jump_targets(&jump[..jump.len() - 12]).count(), 0);
        assert_eq!(be64(&[0, 1, 2]), None);
    }
}
