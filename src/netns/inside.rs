//! Work done from inside a pod's namespace, on the dedicated thread [`run_in`] gives: reading
//! interface counters over a netlink socket opened there (a netlink socket belongs to the
//! namespace it was opened in) and writing `net.*` sysctls through `/proc/sys/net`, which
//! resolves against the namespace of the thread that opens the file.

use std::io;
use std::path::{Path, PathBuf};

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;

use super::{run_in, with_netlink};

/// Counters of one interface, as the kernel keeps them (`IFLA_STATS64`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// Every interface's counters in the namespace pinned at `netns`, `lo` included.
pub async fn interface_stats(netns: &Path) -> io::Result<Vec<InterfaceStats>> {
    run_in(netns, || {
        with_netlink(|handle| async move {
            let links: Vec<_> = handle
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(|e| io::Error::other(format!("listing links over netlink: {e}")))?;
            Ok(links
                .into_iter()
                .map(|link| {
                    let mut stats = InterfaceStats::default();
                    for attr in link.attributes {
                        match attr {
                            LinkAttribute::IfName(name) => stats.name = name,
                            LinkAttribute::Stats64(s) => {
                                stats.rx_bytes = s.rx_bytes;
                                stats.rx_errors = s.rx_errors;
                                stats.tx_bytes = s.tx_bytes;
                                stats.tx_errors = s.tx_errors;
                            }
                            _ => {}
                        }
                    }
                    stats
                })
                .collect())
        })
    })
    .await
}

/// Every address any interface holds in the namespace pinned at `netns` (one address dump).
pub async fn addresses(netns: &Path) -> io::Result<Vec<IpAddr>> {
    run_in(netns, || {
        with_netlink(|handle| async move {
            let addresses: Vec<_> = handle
                .address()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(|e| io::Error::other(format!("listing addresses over netlink: {e}")))?;
            Ok(addresses
                .iter()
                .flat_map(|a| &a.attributes)
                .filter_map(|attr| match attr {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
                .collect())
        })
    })
    .await
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
