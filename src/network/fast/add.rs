//! The fast path's ADD: bridge, veth, host-local, the pod's side, ipMasq and portmap's
//! rules, the result and the cache entry, in the plugins' order. It never execs a plugin.

use std::net::IpAddr;
use std::path::Path;

use serde_json::{json, Value};

use super::hostlocal::{Allocation, Store};
use super::plan::{port_maps, FastPlan};
use super::rules::{self, PortMap};
use super::{in_process_error, FastPath};
use crate::cni::result::parse_result;
use crate::cni::{Cache, CacheEntry, CniError, CniResult, NetworkConfigList, RuntimeConf};
use crate::netlink::netfilter::{conntrack, nftables};
use crate::netlink::route::{self, Bridge, LinkInfoOut};

/// A route as IPAM gives it: destination, prefix, gateway.
type Route = (IpAddr, u8, Option<IpAddr>);

/// What the nat rules and portmap's last steps act on: the plan, the pod's container id,
/// the addresses host-local gave it and the ports it publishes.
#[derive(Clone, Copy)]
struct Allocated<'a> {
    plan: &'a FastPlan,
    container_id: &'a str,
    allocs: &'a [Allocation],
    maps: &'a [PortMap],
}

impl FastPath {
    /// ADD: the cache entry first (as the exec path writes it), then bridge + host-local +
    /// portmap's effects, then the result into the cache.
    pub async fn add(
        &self,
        plan: &FastPlan,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
        cache: &Cache,
    ) -> Result<CniResult, CniError> {
        let net = &plan.network;
        let netns = rt
            .netns
            .clone()
            .ok_or_else(|| in_process_error(net, "bridge", "ADD", "no network namespace"))?;
        let mut entry = CacheEntry::new(list, rt);
        let mut steps = crate::clock::Steps::start();
        cache.store(&entry)?;
        steps.mark("cache");
        let maps = add_port_maps(plan, rt)?;
        let (bridge, host) = self.add_links(plan, &netns, &rt.ifname).await?;
        steps.mark("links");
        let allocs = allocate(plan, rt).await?;
        steps.mark("host-local");
        let routes = result_routes(plan, &allocs);
        // The pod side (eth0's addresses and routes, then the gateway on the bridge) and
        // ipMasq's and portmap's rules (they need only the addresses) run at the same time:
        // the rules' iptables-restore, a process start, is the longest step.
        let pod_side = self.configure_pod_side(plan, rt, &netns, &bridge, &allocs, &routes);
        let allocated = Allocated {
            plan,
            container_id: &rt.container_id,
            allocs: &allocs,
            maps: &maps,
        };
        let rules = self.add_rules(allocated);
        let (container_mac, ()) = tokio::try_join!(pod_side, rules)?;
        steps.mark("pod, gateway, iptables");
        self.finish_portmap(allocated).await?;
        let bridge_mac = self
            .links
            .mac(bridge.index)
            .await
            .map_err(bridge_error(net))?;
        let interfaces = json!([
            {"name": plan.bridge, "mac": bridge_mac},
            {"name": host.name, "mac": host.mac},
            {"name": rt.ifname, "mac": container_mac, "sandbox": entry.netns},
        ]);
        let (json, parsed) = versioned_result(net, list, interfaces, &allocs, &routes)?;
        steps.mark("portmap, result");
        entry.result = Some(json);
        cache.store(&entry)?;
        steps.mark("cache");
        tracing::debug!(
            network = %net, container_id = %rt.container_id,
            steps_us = ?steps.marks(), "CNI fast path ADD done"
        );
        Ok(parsed)
    }

    /// bridge: the bridge, then the veth with its peer `ifname` in the pod's namespace.
    async fn add_links(
        &self,
        plan: &FastPlan,
        netns: &Path,
        ifname: &str,
    ) -> Result<(Bridge, LinkInfoOut), CniError> {
        let to_cni = bridge_error(&plan.network);
        let bridge = self
            .links
            .ensure_bridge(&plan.bridge, plan.mtu, plan.promisc)
            .await
            .map_err(&to_cni)?;
        let host = self
            .links
            .add_veth(netns, ifname, plan.mtu, &bridge, plan.hairpin)
            .await
            .map_err(&to_cni)?;
        Ok((bridge, host))
    }

    /// The pod's interface (addresses, up, routes), then the gateways on the bridge;
    /// returns the pod interface's MAC.
    async fn configure_pod_side(
        &self,
        plan: &FastPlan,
        rt: &RuntimeConf,
        netns: &Path,
        bridge: &Bridge,
        allocs: &[Allocation],
        routes: &[Route],
    ) -> Result<String, CniError> {
        let net = &plan.network;
        let conf = route::PodConfig {
            ifname: rt.ifname.clone(),
            addrs: allocs.iter().map(|a| (a.ip, a.prefix)).collect(),
            routes: with_gateways(routes, allocs),
        };
        let container_mac = crate::netns::run_in(netns, move || route::configure_pod_here(conf))
            .await
            .map_err(|e| in_process_error(net, "bridge", "ADD", e))?;
        if plan.is_gateway {
            self.add_gateways(net, bridge, allocs).await?;
        }
        Ok(container_mac)
    }

    /// The gateway addresses on the bridge and forwarding, IPv4 first.
    async fn add_gateways(
        &self,
        net: &str,
        bridge: &Bridge,
        allocs: &[Allocation],
    ) -> Result<(), CniError> {
        for v6 in [false, true] {
            let gws: Vec<_> = allocs.iter().filter(|a| a.ip.is_ipv6() == v6).collect();
            for a in &gws {
                self.links
                    .ensure_bridge_addr(bridge, a.gateway, a.prefix)
                    .await
                    .map_err(bridge_error(net))?;
            }
            if !gws.is_empty() {
                let key = if v6 {
                    "net/ipv6/conf/all/forwarding"
                } else {
                    "net/ipv4/ip_forward"
                };
                route::sysctl(key, "1").map_err(|e| {
                    in_process_error(
                        net,
                        "bridge",
                        "ADD",
                        format!("failed to enable forwarding: {e}"),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// ipMasq and portmap: one restore per family (or, for ipMasq alone on iptables-nft, one
    /// netlink transaction).
    async fn add_rules(&self, allocated: Allocated<'_>) -> Result<(), CniError> {
        let Allocated {
            plan,
            container_id,
            allocs,
            maps,
        } = allocated;
        let net = &plan.network;
        for v6 in [false, true] {
            let fam: Vec<(IpAddr, u8)> = allocs
                .iter()
                .filter(|a| a.ip.is_ipv6() == v6)
                .map(|a| (a.ip, a.prefix))
                .collect();
            if fam.is_empty() {
                continue;
            }
            let rules = plan.pod_rules(container_id, v6, fam, maps);
            if rules.is_empty() {
                continue;
            }
            // ipMasq alone (no published port) on iptables-nft: one netlink transaction
            // on the kept socket instead of an iptables-restore process.
            if !v6
                && !rules.needs_current()
                && self.uses_nf_tables(false).await
                && self.masq_over_netlink(net, container_id, &rules.masq).await
            {
                continue;
            }
            let current = if rules.needs_current() {
                Some(
                    rules::save_nat(v6, &self.path_env)
                        .await
                        .map_err(|e| in_process_error(net, "portmap", "ADD", e))?,
                )
            } else {
                None
            };
            rules::restore(v6, &rules.add_batch(current.as_deref()), &self.path_env)
                .await
                .map_err(|e| in_process_error(net, "bridge", "ADD", e))?;
        }
        Ok(())
    }

    /// Whether ipMasq's IPv4 rules were written over netlink; when not, the caller falls
    /// back to iptables-restore.
    async fn masq_over_netlink(
        &self,
        net: &str,
        container_id: &str,
        masq: &[(IpAddr, u8)],
    ) -> bool {
        let started = std::time::Instant::now();
        match self.add_masq_v4(net, container_id, masq).await {
            Ok(()) => {
                tracing::debug!(
                    network = %net, container_id = %container_id,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "ipMasq rules written over netlink"
                );
                true
            }
            Err(e) => {
                tracing::debug!(
                    network = %net, container_id = %container_id, error = %e,
                    "ipMasq rules over netlink not taken; using iptables-restore"
                );
                false
            }
        }
    }

    /// portmap's last steps (when the list has portmap), once the bridge routes to the pod:
    /// route_localnet for SNAT, then the stale UDP flows per family.
    async fn finish_portmap(&self, pod: Allocated<'_>) -> Result<(), CniError> {
        let (net, Some((conf, _))) = (&pod.plan.network, &pod.plan.portmap) else {
            return Ok(());
        };
        for v6 in [false, true] {
            let Some(first) = pod.allocs.iter().find(|a| a.ip.is_ipv6() == v6) else {
                continue;
            };
            // With SNAT, 127/8 may cross into the pod's link (route_localnet).
            if !v6 && !pod.maps.is_empty() && conf.snat {
                if let Some(ifname) = self.links.routable_if(first.ip).await {
                    route::sysctl(&format!("net/ipv4/conf/{ifname}/route_localnet"), "1").map_err(
                        |e| {
                            in_process_error(
                                net,
                                "portmap",
                                "ADD",
                                format!("unable to enable route_localnet: {e}"),
                            )
                        },
                    )?;
                }
            }
            delete_stale_udp_flows(net, pod.container_id, pod.maps, v6).await;
        }
        Ok(())
    }

    /// ipMasq's IPv4 rules in one nf_tables transaction over the kept socket (see
    /// [`nftables::add_masq_v4`]).
    async fn add_masq_v4(
        &self,
        network: &str,
        container_id: &str,
        masq: &[(IpAddr, u8)],
    ) -> std::io::Result<()> {
        let chain = rules::chain_name(network, container_id, "");
        let comment = rules::masq_comment(network, container_id);
        let addrs: Vec<(std::net::Ipv4Addr, u8)> = masq
            .iter()
            .filter_map(|(ip, prefix)| match ip {
                IpAddr::V4(v4) => Some((*v4, *prefix)),
                IpAddr::V6(_) => None,
            })
            .collect();
        self.with_nat_socket(move |socket| nftables::add_masq_v4(socket, &chain, &comment, &addrs))
            .await
    }
}

/// portmap's mappings from the capability args; a bad one fails ADD as it fails the plugin.
fn add_port_maps(plan: &FastPlan, rt: &RuntimeConf) -> Result<Vec<PortMap>, CniError> {
    port_maps(plan, &rt.capability_args).map_err(|e| {
        let reason = format!("failed to parse config: {e}");
        in_process_error(&plan.network, "portmap", "ADD", reason)
    })
}

/// A netlink failure as the bridge plugin's ADD error.
fn bridge_error(net: &str) -> impl Fn(route::LinkError) -> CniError + '_ {
    move |e| in_process_error(net, "bridge", "ADD", e)
}

/// host-local: the pod's addresses from the plan's range sets, off the async workers.
async fn allocate(plan: &FastPlan, rt: &RuntimeConf) -> Result<Vec<Allocation>, CniError> {
    let net = &plan.network;
    let store = Store::new(&plan.data_dir, net);
    let (id, ifname, sets) = (
        rt.container_id.clone(),
        rt.ifname.clone(),
        plan.range_sets.clone(),
    );
    tokio::task::spawn_blocking(move || store.allocate(&id, &ifname, &sets))
        .await
        .map_err(|e| in_process_error(net, "host-local", "ADD", e))?
        .map_err(|e| in_process_error(net, "host-local", "ADD", e))
}

/// The routes the result reports: ipam's, and the default route isDefaultGateway adds for
/// each family the pod has an address of.
fn result_routes(plan: &FastPlan, allocs: &[Allocation]) -> Vec<Route> {
    let mut routes = plan.routes.clone();
    if plan.is_default_gateway {
        for v6 in [false, true] {
            if let Some(a) = allocs.iter().find(|a| a.ip.is_ipv6() == v6) {
                let zero = if v6 {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                };
                routes.push((zero, 0, Some(a.gateway)));
            }
        }
    }
    routes
}

/// The routes as the pod gets them: one without a gateway goes via its family's first one.
fn with_gateways(routes: &[Route], allocs: &[Allocation]) -> Vec<Route> {
    routes
        .iter()
        .map(|(dst, p, gw)| {
            let gw = gw.or_else(|| {
                allocs
                    .iter()
                    .find(|a| a.ip.is_ipv6() == dst.is_ipv6())
                    .map(|a| a.gateway)
            });
            (*dst, *p, gw)
        })
        .collect()
}

/// The bridge plugin's result, written in 1.0.0 and converted to the list's version: that
/// JSON (for the cache) and its parse (for the caller).
fn versioned_result(
    net: &str,
    list: &NetworkConfigList,
    interfaces: Value,
    allocs: &[Allocation],
    routes: &[Route],
) -> Result<(Value, CniResult), CniError> {
    let result = json!({
        "cniVersion": "1.0.0",
        "interfaces": interfaces,
        "ips": allocs.iter().map(|a| json!({
            "interface": 2,
            "address": format!("{}/{}", a.ip, a.prefix),
            "gateway": a.gateway.to_string(),
        })).collect::<Vec<_>>(),
        "routes": routes.iter().map(|(dst, p, gw)| {
            let mut r = json!({"dst": format!("{dst}/{p}")});
            if let Some(gw) = gw {
                r["gw"] = json!(gw.to_string());
            }
            r
        }).collect::<Vec<_>>(),
        "dns": {},
    });
    let to_cni = |e| in_process_error(net, "bridge", "ADD", e);
    let parsed = parse_result("1.0.0", result.to_string().as_bytes()).map_err(to_cni)?;
    let json = parsed.to_version_json(&list.cni_version).map_err(to_cni)?;
    let parsed = parse_result(&list.cni_version, json.to_string().as_bytes()).map_err(to_cni)?;
    Ok((json, parsed))
}

/// portmap's last ADD step for a family: conntrack entries of UDP flows to the pod's host
/// ports are deleted, so traffic the kernel already tracks (to a pod that was there before, or
/// to nothing) takes the new rules. Failures are logged and do not fail the ADD, as in the
/// plugin.
async fn delete_stale_udp_flows(network: &str, container_id: &str, maps: &[PortMap], v6: bool) {
    let mut ports: Vec<u16> = maps
        .iter()
        .filter(|m| m.protocol.eq_ignore_ascii_case("udp"))
        .map(|m| m.host_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        return;
    }
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    let deleting = ports.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        deleting
            .iter()
            .map(|&port| conntrack::delete_udp_to_port(family, port).map(|n| (port, n)))
            .collect::<std::io::Result<Vec<(u16, usize)>>>()
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    match outcome {
        Ok(deleted) => tracing::debug!(
            network,
            container_id,
            v6,
            ?deleted,
            "portmap: stale UDP conntrack entries to the host ports deleted"
        ),
        Err(e) => tracing::warn!(
            network, container_id, v6, ?ports, error = %e,
            "portmap: failed to delete stale UDP conntrack entries"
        ),
    }
}
