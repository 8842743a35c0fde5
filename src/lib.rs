//! crisp: a Kubernetes CRI runtime for pod sandboxes.
//!
//! One `RunPodSandbox` flows like this:
//!
//! ```text
//! kubelet / crictl / grpcurl ── gRPC over the Unix socket
//!   server/   proto → domain, one log line per call, Error → tonic::Status
//!   sandbox/  reserve name → record "creating" → netns → CNI ADD → record "ready"
//!             (rolled back in reverse order on any failure)
//!     ├─ netns/  create / pin / remove network namespaces on dedicated OS threads
//!     ├─ cni/    load the network list, exec each plugin, chain prevResult, cache
//!     └─ store   one JSON record per sandbox, written atomically, read back on start
//! ```
//!
//! Stop is the mirror (CNI DEL in reverse order with the cached result, then the
//! namespace goes), Remove deletes the record, Status and List read the in-memory index.

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
