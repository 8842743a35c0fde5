//! Netlink calls for a dedicated namespace thread: each opens a socket for the one call, on
//! the calling thread, so it acts in that thread's network namespace (a netlink socket
//! belongs to the namespace it was opened in), on a small runtime of its own. `netns/` runs
//! them on the thread it moved into a pod's namespace; this module never changes namespace.

use std::io;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;

/// Runs `f` with a netlink handle opened on the calling thread, so in that thread's
/// namespace (a netlink socket belongs to the namespace it was opened in), on a small
/// runtime of its own: the caller is a dedicated namespace thread, not a tokio worker.
pub fn on_this_thread<T, F, Fut>(f: F) -> io::Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: std::future::Future<Output = io::Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        let conn = tokio::spawn(conn);
        let out = f(handle).await;
        conn.abort();
        out
    })
}

/// Brings `lo` (always index 1 in a new namespace) up over netlink, from inside the new
/// namespace.
pub fn loopback_up() -> io::Result<()> {
    on_this_thread(|handle| async move {
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(1).up().build())
            .execute()
            .await
            .map_err(|e| io::Error::other(format!("bringing lo up: {e}")))
    })
}

/// Counters of one interface, as the kernel keeps them (`IFLA_STATS64`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// Every interface's counters in this thread's namespace, `lo` included.
pub fn interface_stats() -> io::Result<Vec<InterfaceStats>> {
    on_this_thread(|handle| async move {
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
}

/// Every address any interface holds in this thread's namespace (one address dump).
pub fn addresses() -> io::Result<Vec<IpAddr>> {
    on_this_thread(|handle| async move {
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
}
