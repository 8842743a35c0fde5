//! crisp: a Kubernetes CRI runtime for pod sandboxes.
//!
//! One `RunPodSandbox` flows like this:
//!
//! ```text
//! kubelet / crictl / grpcurl / grpcio ── gRPC over the Unix socket
//!   server/    proto → domain, one log line per call, Error → tonic::Status
//!   sandbox/   reserve name → record "creating" → netns → network attach → record "ready"
//!              (rolled back in reverse order on any failure; store, recovery, events)
//!     ├─ netns/    create / pin / remove namespaces on dedicated OS threads, sysctls
//!     ├─ network/  the one seam: attach, detach, check, readiness, gc (STATUS/GC tasks)
//!     │    ├─ cni/   the exec'd CNI chain: conf, exec, chain prevResult, cache
//!     │    └─ fast/  the opt-in in-process bridge + host-local + portmap
//!     └─ nri/      node plugins told of pod events (when enabled)
//!   netlink/   every rtnetlink / nf_tables / conntrack socket (a leaf)
//! ```
//!
//! Stop is the mirror (detach with the cached result, then unpin), Remove deletes the
//! record, Status and List read the in-memory index. `clock`, `error`, `config`, `netlink`,
//! `netns` and `cni` are leaves or near-leaves: no module imports one above it.

pub mod clock;
pub mod cni;
pub mod config;
pub mod error;
pub mod heap;
pub mod modes;
pub mod netlink;
pub mod netns;
pub mod network;
pub mod nri;
pub mod sandbox;
pub mod server;
pub mod socket;
pub mod systemd;
pub mod telemetry;
#[cfg(test)]
mod test_scripts;

pub use error::{Error, Result};
