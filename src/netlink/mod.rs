//! Every netlink socket crisp opens: links, addresses and routes over rtnetlink (`route`,
//! kept open for the node's bridge and veths), the one-call sockets of a namespace thread
//! (`one_shot`: lo up, counters, addresses), the netfilter families over raw nfnetlink
//! (`netfilter`, with nf_tables and conntrack messages), and the CIDR arithmetic they share
//! (`ip`). A leaf: each call acts in the caller's network namespace and takes plain addresses
//! and names; it never imports `network`, `netns` or the fast path's types, and never
//! changes namespace (the caller runs it on a thread `netns` moved).

pub mod ip;
pub mod netfilter;
pub mod one_shot;
pub mod route;
