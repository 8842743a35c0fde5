//! The bridge plugin's link work (containernetworking/plugins v1.1.1
//! `plugins/main/bridge/bridge.go`, `pkg/ip/link_linux.go`, `pkg/ipam/ipam_linux.go`) over
//! rtnetlink, never by exec'ing `ip`.
//!
//! [`NodeLinks`] holds ONE rtnetlink connection in crisp's (the node's) namespace, opened on
//! first use and reused by every ADD. The pod side ([`configure_pod_here`]) is for a thread
//! the caller moved into the pod's namespace (`netns::run_in`): it opens a netlink socket of
//! its own there, since a netlink socket acts in the namespace it was opened in. It takes
//! plain names and addresses; what a pod gets is the caller's to decide.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};
use tokio::sync::OnceCell;

use super::ip::same_net;

/// A netlink failure with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct LinkError {
    pub what: String,
    pub reason: String,
}

/// A closure that turns an rtnetlink failure into a [`LinkError`] saying `what` was done.
fn link_error(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.into();
    move |e| LinkError {
        what,
        reason: e.to_string(),
    }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// The bridge as the plugin reports it.
#[derive(Debug, Clone)]
pub struct Bridge {
    pub index: u32,
    pub name: String,
    /// The MAC when the bridge was looked up, before this pod's port joined. The plugin
    /// pins the bridge's MAC to this (stale) value when it adds the gateway address, so a
    /// new bridge keeps its creation-time MAC instead of its first port's.
    pub mac_at_lookup: Vec<u8>,
}

/// A link's identity in the result.
#[derive(Debug, Clone)]
pub struct LinkInfoOut {
    pub index: u32,
    pub name: String,
    pub mac: String,
}

/// The node-side netlink connection, opened once.
#[derive(Default)]
pub struct NodeLinks {
    handle: OnceCell<Handle>,
    /// The kernel runs one dump at a time per netlink socket (a second one is EBUSY), and
    /// concurrent ADDs share this socket: dumps take turns.
    dump: tokio::sync::Mutex<()>,
}

impl NodeLinks {
    pub fn new() -> Self {
        NodeLinks::default()
    }

    async fn handle(&self) -> Result<Handle, LinkError> {
        self.handle
            .get_or_try_init(|| async {
                let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| LinkError {
                    what: "opening a netlink socket".into(),
                    reason: e.to_string(),
                })?;
                tokio::spawn(conn);
                Ok(handle)
            })
            .await
            .cloned()
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, LinkError> {
        let handle = self.handle().await?;
        let mut links = handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(link_error(format!("looking up link {name}"))(e)),
        }
    }

    async fn link_by_index(&self, index: u32) -> Result<LinkMessage, LinkError> {
        let handle = self.handle().await?;
        let mut links = handle.link().get().match_index(index).execute();
        links
            .try_next()
            .await
            .map_err(link_error(format!("looking up link {index}")))?
            .ok_or_else(|| LinkError {
                what: format!("looking up link {index}"),
                reason: "not found".into(),
            })
    }

    /// `ensureBridge`: create (EEXIST is fine) with the MTU, promisc on if asked, check it
    /// is a bridge, accept_ra=0, up.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        mtu: u32,
        promisc: bool,
    ) -> Result<Bridge, LinkError> {
        let handle = self.handle().await?;
        let link = self.create_bridge(&handle, name, mtu).await?;
        let index = link.header.index;
        if promisc {
            handle
                .link()
                .set(LinkUnspec::new_with_index(index).promiscuous(true).build())
                .execute()
                .await
                .map_err(link_error(format!(
                    "could not set promiscuous mode on {name:?}"
                )))?;
        }
        if kind_of(&link) != Some(InfoKind::Bridge) {
            return Err(LinkError {
                what: format!("failed to create bridge {name:?}"),
                reason: format!("{name:?} already exists but is not a bridge"),
            });
        }
        let _ = sysctl(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
        if !link.header.flags.contains(LinkFlags::Up) {
            handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(link_error(format!("setting bridge {name} up")))?;
        }
        Ok(Bridge {
            index,
            name: name.to_string(),
            mac_at_lookup: mac_bytes(&link),
        })
    }

    /// The bridge `name` created with the MTU when it is set (one that exists is fine), as
    /// it is now.
    async fn create_bridge(
        &self,
        handle: &Handle,
        name: &str,
        mtu: u32,
    ) -> Result<LinkMessage, LinkError> {
        let mut builder = LinkMessageBuilder::<LinkBridge>::new(name);
        if mtu > 0 {
            builder = builder.mtu(mtu);
        }
        match handle.link().add(builder.build()).execute().await {
            Ok(()) => {}
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(LinkError {
                    what: format!("failed to create bridge {name:?}"),
                    reason: format!("could not add {name:?}: {e}"),
                })
            }
        }
        self.link_by_name(name).await?.ok_or_else(|| LinkError {
            what: format!("failed to create bridge {name:?}"),
            reason: format!("could not lookup {name:?}: Link not found"),
        })
    }

    /// `SetupVeth` from the node's side: the host end `vethXXXXXXXX` here, its peer `ifname`
    /// created directly in the pod namespace; both with the plugin's MTU and txqueuelen 0.
    /// Then the host end goes up (accept_ra=0), into the bridge, with hairpin if asked.
    pub async fn add_veth(
        &self,
        pod_netns: &Path,
        ifname: &str,
        mtu: u32,
        bridge: &Bridge,
        hairpin: bool,
    ) -> Result<LinkInfoOut, LinkError> {
        let handle = self.handle().await?;
        let ns = std::fs::File::open(pod_netns).map_err(|e| LinkError {
            what: format!("failed to open netns {:?}", pod_netns.display().to_string()),
            reason: e.to_string(),
        })?;
        let host_name = self.create_veth_pair(&handle, &ns, ifname, mtu).await?;
        let link = self
            .link_by_name(&host_name)
            .await?
            .ok_or_else(|| LinkError {
                what: format!("failed to lookup {host_name:?}"),
                reason: "Link not found".into(),
            })?;
        let index = link.header.index;
        attach_host_end(&handle, index, &host_name, bridge, hairpin).await?;
        Ok(LinkInfoOut {
            index,
            name: host_name,
            mac: mac_of(&link),
        })
    }

    /// Creates the pair under a random host name, trying another while the name is taken
    /// (up to 10 times, as the plugin); returns the host end's name.
    async fn create_veth_pair(
        &self,
        handle: &Handle,
        pod_netns: &std::fs::File,
        ifname: &str,
        mtu: u32,
    ) -> Result<String, LinkError> {
        for _ in 0..10 {
            let host_name = random_veth_name().map_err(|e| LinkError {
                what: "failed to generate random veth name".into(),
                reason: e.to_string(),
            })?;
            let msg = veth_message(&host_name, ifname, mtu, pod_netns);
            match handle.link().add(msg).execute().await {
                Ok(()) => return Ok(host_name),
                // The random host name is taken: try another, as the plugin does.
                Err(e)
                    if errno_of(&e) == Some(libc::EEXIST)
                        && self.link_by_name(&host_name).await?.is_some() =>
                {
                    continue
                }
                Err(e) if errno_of(&e) == Some(libc::EEXIST) => {
                    return Err(LinkError {
                        what: "failed to make veth pair".into(),
                        reason: format!("container veth name provided ({ifname}) already exists"),
                    })
                }
                Err(e) => return Err(link_error("failed to make veth pair")(e)),
            }
        }
        Err(LinkError {
            what: "failed to make veth pair".into(),
            reason: "failed to find a unique veth name".into(),
        })
    }

    /// `ensureAddr` on the bridge: nothing when it has the address already; refused when an
    /// IPv4 (or overlapping IPv6) address differs; otherwise add it and pin the bridge's MAC
    /// to the value it had at lookup (as the plugin does with its stale link object).
    pub async fn ensure_bridge_addr(
        &self,
        bridge: &Bridge,
        gw: IpAddr,
        prefix: u8,
    ) -> Result<(), LinkError> {
        let handle = self.handle().await?;
        if self.bridge_has_addr(&handle, bridge, gw, prefix).await? {
            return Ok(());
        }
        match handle
            .address()
            .add(bridge.index, gw, prefix)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(link_error(format!(
                    "could not add IP address to {:?}",
                    bridge.name
                ))(e))
            }
        }
        if !bridge.mac_at_lookup.is_empty() {
            let mac = bridge.mac_at_lookup.clone();
            handle
                .link()
                .set(
                    LinkUnspec::new_with_index(bridge.index)
                        .address(mac)
                        .build(),
                )
                .execute()
                .await
                .map_err(link_error("could not set bridge's mac"))?;
        }
        Ok(())
    }

    /// Whether the bridge holds `gw/prefix` already (one dump of its addresses); an error
    /// when it holds another IPv4 address, or an IPv6 one that overlaps.
    async fn bridge_has_addr(
        &self,
        handle: &Handle,
        bridge: &Bridge,
        gw: IpAddr,
        prefix: u8,
    ) -> Result<bool, LinkError> {
        let v6 = gw.is_ipv6();
        let _dumping = self.dump.lock().await;
        let mut addrs = handle
            .address()
            .get()
            .set_link_index_filter(bridge.index)
            .execute();
        while let Some(a) = addrs
            .try_next()
            .await
            .map_err(link_error("could not get list of IP addresses"))?
        {
            let Some(ip) = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            }) else {
                continue;
            };
            if ip.is_ipv6() != v6 {
                continue;
            }
            let have_prefix = a.header.prefix_len;
            if ip == gw && have_prefix == prefix {
                return Ok(true);
            }
            let overlaps = same_net(ip, have_prefix, gw) || same_net(gw, prefix, ip);
            if !v6 || overlaps {
                return Err(LinkError {
                    what: "failed to set bridge addr".into(),
                    reason: format!(
                        "{:?} already has an IP address different from {gw}/{prefix}",
                        bridge.name
                    ),
                });
            }
        }
        Ok(false)
    }

    /// The bridge's MAC now (re-read at the end of ADD, as the plugin does).
    pub async fn mac(&self, index: u32) -> Result<String, LinkError> {
        Ok(mac_of(&self.link_by_index(index).await?))
    }

    /// portmap's `getRoutableHostIF`: the name of the link the node routes `ip` through.
    pub async fn routable_if(&self, ip: IpAddr) -> Option<String> {
        let handle = self.handle().await.ok()?;
        let msg = match ip {
            IpAddr::V4(a) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .destination_prefix(a, 32)
                .build(),
            IpAddr::V6(a) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .destination_prefix(a, 128)
                .build(),
        };
        let mut routes = handle.route().get(msg).execute();
        let route = routes.try_next().await.ok()??;
        let oif = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        })?;
        let link = self.link_by_index(oif).await.ok()?;
        link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
    }
}

/// The request for a veth pair: `host_name` here, its peer `ifname` in `pod_netns`, both
/// with txqueuelen 0 and the MTU when one is set.
fn veth_message(host_name: &str, ifname: &str, mtu: u32, pod_netns: &std::fs::File) -> LinkMessage {
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(ifname.to_string())
        .txqueuelen(0)
        .setns_by_fd(pod_netns.as_raw_fd());
    let mut host = LinkMessageBuilder::<LinkVeth>::new(host_name, ifname).txqueuelen(0);
    if mtu > 0 {
        peer = peer.mtu(mtu);
        host = host.mtu(mtu);
    }
    host.set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .build()
}

/// The host end of a new pair up (accept_ra=0), into the bridge, with hairpin if asked.
async fn attach_host_end(
    handle: &Handle,
    index: u32,
    host_name: &str,
    bridge: &Bridge,
    hairpin: bool,
) -> Result<(), LinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(link_error(format!("failed to set {host_name:?} up")))?;
    let _ = sysctl(&format!("net/ipv6/conf/{host_name}/accept_ra"), "0");
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(bridge.index)
                .build(),
        )
        .execute()
        .await
        .map_err(link_error(format!(
            "failed to connect {host_name:?} to bridge {}",
            bridge.name
        )))?;
    if hairpin {
        handle
            .link()
            .set_port(LinkBridgePort::new(index).hairpin(true).build())
            .execute()
            .await
            .map_err(link_error(format!(
                "failed to setup hairpin mode for {host_name}"
            )))?;
    }
    Ok(())
}

fn kind_of(link: &LinkMessage) -> Option<InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    })
}

/// A link's MAC as bytes (empty when it has none).
fn mac_bytes(link: &LinkMessage) -> Vec<u8> {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn mac_of(link: &LinkMessage) -> String {
    mac_bytes(link)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `ip.RandomVethName`: "veth" + 8 hex digits from 4 random bytes.
fn random_veth_name() -> io::Result<String> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(format!(
        "veth{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3]
    ))
}

/// Writes a sysctl under /proc/sys (of the calling thread's namespace) unless it already
/// holds `value`; returns the old value.
pub fn sysctl(name: &str, value: &str) -> io::Result<String> {
    let path = Path::new("/proc/sys").join(name);
    let old = std::fs::read_to_string(&path)?;
    if old.trim() != value {
        std::fs::write(&path, value)?;
    }
    Ok(old.trim().to_string())
}

/// What the pod's interface gets: addresses (with prefix) and routes (dst, prefix, gw).
#[derive(Debug, Clone)]
pub struct PodConfig {
    pub ifname: String,
    pub addrs: Vec<(IpAddr, u8)>,
    pub routes: Vec<(IpAddr, u8, Option<IpAddr>)>,
}

/// The pod's side of `cmdAdd`, run inside the pod's namespace: accept_dad=0, arp_notify=1,
/// IPv6 enabled on lo and the interface when it gets an IPv6 address, the addresses, the
/// link up, the routes (`ipam.ConfigureIface`). Returns the interface's MAC. Runs on the
/// calling thread, in its namespace: the caller has moved it into the pod's.
pub fn configure_pod_here(conf: PodConfig) -> io::Result<String> {
    let ifname = &conf.ifname;
    let _ = sysctl(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
    let _ = sysctl(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
    super::one_shot::on_this_thread(|handle| async move { configure_link(&handle, &conf).await })
}

/// A netlink failure inside the pod's namespace as an `io::Error` saying what was done.
fn pod_error(what: String) -> impl FnOnce(rtnetlink::Error) -> io::Error {
    move |e| io::Error::other(format!("{what}: {e}"))
}

/// The pod's interface: IPv6 enabled when needed, the addresses, up, the routes.
async fn configure_link(handle: &Handle, conf: &PodConfig) -> io::Result<String> {
    let ifname = &conf.ifname;
    let link = handle
        .link()
        .get()
        .match_name(ifname.clone())
        .execute()
        .try_next()
        .await
        .map_err(pod_error(format!("failed to lookup {ifname:?}")))?
        .ok_or_else(|| io::Error::other(format!("failed to lookup {ifname:?}")))?;
    let index = link.header.index;
    if conf.addrs.iter().any(|(ip, _)| ip.is_ipv6()) {
        enable_ipv6(ifname)?;
    }
    for (ip, prefix) in &conf.addrs {
        handle
            .address()
            .add(index, *ip, *prefix)
            .execute()
            .await
            .map_err(pod_error(format!(
                "failed to add IP addr {ip}/{prefix} to {ifname:?}"
            )))?;
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(pod_error(format!("failed to set {ifname:?} UP")))?;
    for route in &conf.routes {
        add_route(handle, index, ifname, *route).await?;
    }
    Ok(mac_of(&link))
}

/// IPv6 on `lo` and `ifname`, where the namespace has it disabled.
fn enable_ipv6(ifname: &str) -> io::Result<()> {
    for iface in ["lo", ifname] {
        let name = format!("net/ipv6/conf/{iface}/disable_ipv6");
        if let Ok(v) = std::fs::read_to_string(Path::new("/proc/sys").join(&name)) {
            if v.trim() != "0" {
                sysctl(&name, "0").map_err(|e| {
                    io::Error::other(format!(
                        "failed to enable IPv6 for interface {iface:?} ({name}={}): {e}",
                        v.trim()
                    ))
                })?;
            }
        }
    }
    Ok(())
}

/// One route out of the pod's interface (`index`), protocol boot, via `gw` when given.
async fn add_route(
    handle: &Handle,
    index: u32,
    ifname: &str,
    (dst, prefix, gw): (IpAddr, u8, Option<IpAddr>),
) -> io::Result<()> {
    let mut msg = match dst {
        IpAddr::V4(d) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(d, prefix)
            .output_interface(index)
            .protocol(RouteProtocol::Boot)
            .build(),
        IpAddr::V6(d) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .destination_prefix(d, prefix)
            .output_interface(index)
            .protocol(RouteProtocol::Boot)
            .build(),
    };
    if let Some(gw) = gw {
        msg.attributes.push(RouteAttribute::Gateway(match gw {
            IpAddr::V4(a) => RouteAddress::Inet(a),
            IpAddr::V6(a) => RouteAddress::Inet6(a),
        }));
    }
    if msg.header.address_family == AddressFamily::Unspec {
        return Ok(());
    }
    handle
        .route()
        .add(msg)
        .execute()
        .await
        .map_err(pod_error(format!(
            "failed to add route '{dst}/{prefix} via {} dev {ifname}'",
            gw.map(|g| g.to_string()).unwrap_or_else(|| "<nil>".into())
        )))
}
