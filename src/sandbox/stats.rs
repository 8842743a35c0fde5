//! A sandbox's network usage: the counters of every interface in its namespace, read from
//! inside it over netlink (no `ip`, no `/proc` parsing). It only reads: it never changes
//! the namespace or the sandbox.

use crate::error::{Error, Result};
use crate::netns::{self, inside::InterfaceStats};
use crate::sandbox::model::Sandbox;

/// Interface counters of a pod's namespace at one moment.
#[derive(Debug, Clone)]
pub struct NetworkStats {
    /// Nanoseconds since the epoch.
    pub timestamp: i64,
    /// The pod's interface (`eth0`), when it exists.
    pub default_interface: Option<InterfaceStats>,
    /// Every interface but `lo`.
    pub interfaces: Vec<InterfaceStats>,
}

/// The sandbox's network counters; `None` when it has no namespace of its own (host
/// network, or stopped).
pub async fn network_stats(sandbox: &Sandbox) -> Result<Option<NetworkStats>> {
    let Some(path) = sandbox.netns_path.clone().filter(|p| netns::is_pinned(p)) else {
        return Ok(None);
    };
    let all = netns::inside::interface_stats(&path)
        .await
        .map_err(|source| Error::Netns {
            sandbox: sandbox.id.clone(),
            op: "reading interface counters of",
            path,
            source,
        })?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(1);
    let ifname = sandbox
        .network
        .as_ref()
        .map(|n| n.ifname.as_str())
        .unwrap_or(crate::network::POD_IFNAME);
    let interfaces: Vec<InterfaceStats> = all.into_iter().filter(|i| i.name != "lo").collect();
    Ok(Some(NetworkStats {
        timestamp,
        default_interface: interfaces.iter().find(|i| i.name == ifname).cloned(),
        interfaces,
    }))
}
