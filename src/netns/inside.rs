//! Work done from inside a pod's namespace, on the dedicated thread [`run_in`] gives: reading
//! interface counters and addresses (`netlink::one_shot` opens its socket there) and writing
//! `net.*` sysctls through `/proc/sys/net`, which resolves against the namespace of the
//! thread that opens the file.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::netlink::one_shot;
pub use crate::netlink::one_shot::InterfaceStats;

use super::run_in;

/// Every interface's counters in the namespace pinned at `netns`, `lo` included.
pub async fn interface_stats(netns: &Path) -> io::Result<Vec<InterfaceStats>> {
    run_in(netns, one_shot::interface_stats).await
}

/// Every address any interface holds in the namespace pinned at `netns` (one address dump).
pub async fn addresses(netns: &Path) -> io::Result<Vec<IpAddr>> {
    run_in(netns, one_shot::addresses).await
}

/// Why one sysctl could not be set.
#[derive(Debug, thiserror::Error)]
#[error("sysctl {key} ({}): {source}", path.display())]
pub struct SysctlError {
    pub key: String,
    pub path: PathBuf,
    /// `NotFound` when the namespace has no such sysctl (it is not per-namespace, or a typo).
    #[source]
    pub source: io::Error,
}

/// The `/proc/sys` path of a sysctl key. Keys use `.` or, when a component itself holds dots
/// (an interface like `eth0.100`), `/` as separator, as Kubernetes and runc accept.
pub fn sysctl_path(key: &str) -> PathBuf {
    let rel = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    Path::new("/proc/sys").join(rel)
}

/// Writes `(key, value)` pairs (already validated as `net.*` keys) inside the namespace, in
/// order; stops at the first failure.
pub async fn set_sysctls(netns: &Path, sysctls: Vec<(String, String)>) -> Result<(), SysctlError> {
    let outcome = run_in(netns, move || {
        for (key, value) in sysctls {
            let path = sysctl_path(&key);
            if let Err(source) = std::fs::write(&path, value.as_bytes()) {
                return Ok(Err(SysctlError { key, path, source }));
            }
        }
        Ok(Ok(()))
    })
    .await;
    match outcome {
        Ok(result) => result,
        Err(source) => Err(SysctlError {
            key: "(all)".into(),
            path: netns.to_owned(),
            source,
        }),
    }
}
