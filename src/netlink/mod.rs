//! Every netlink socket crisp opens that is not the namespace plumbing of `netns/`: links,
//! addresses and routes over rtnetlink (`route`), and the netfilter families over raw
//! nfnetlink (`netfilter`, with `nftables` and `conntrack` messages on it), and the CIDR
//! arithmetic they share (`ip`). A leaf: each call acts in the caller's network namespace and
//! takes plain addresses and names; it never imports `network` or the fast path's types.

pub mod ip;
pub mod netfilter;
pub mod route;
