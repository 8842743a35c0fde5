//! An opt-in, in-process fast path for the default pod network: `bridge` + `host-local`
//! (+ `portmap`, + a leading `loopback`), done over netlink, host-local's own files and one
//! `iptables-restore` per family instead of exec'ing the plugins — leaving exactly the state
//! containernetworking/plugins v1.1.1 leave, the same CNI result and the same cache entry, so
//! an exec'd DEL can tear down a fast ADD and the other way round.
//!
//! [`supports`] accepts only network lists it implements completely; anything else runs by
//! exec (the caller logs why). This module knows nothing of Kubernetes, like `cni/`.
//!
//! Deviations from the plugins, all invisible in the end state:
//! - DEL does not delete the veth: it goes with the pod's namespace, which the caller
//!   unpins right after (the plugin's synchronous link delete costs ~30 ms);
//! - host-local's "duplicate allocation" scan of its whole dir on ADD is not repeated
//!   (crisp never ADDs the same container id twice); the bridge's wait for the port to
//!   come up is not repeated (the end state is the same).
//!
//! portmap's removal of stale UDP conntrack entries for the host ports is done, over
//! ctnetlink ([`conntrack`]), after the rules as in the plugin.

pub mod hostlocal;
pub mod rules;

use crate::netlink::ip::{network, parse_cidr};
use crate::netlink::{conntrack, netfilter as nfnetlink, nftables, route as netlink};

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use crate::cni::result::parse_result;
use crate::cni::{Cache, CacheEntry, CniError, CniResult, NetworkConfigList, RuntimeConf};
use hostlocal::{Range, RangeSet, Store};
use rules::{PodRules, PortMap, PortmapConf};

/// Why a network list is left to the plugins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct Unsupported {
    pub why: String,
}

fn no(why: impl Into<String>) -> Unsupported {
    Unsupported { why: why.into() }
}

/// A network list the fast path implements, parsed once.
#[derive(Debug, Clone)]
pub struct FastPlan {
    pub network: String,
    pub cni_version: String,
    pub loopback: bool,
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub ip_masq: bool,
    pub mtu: u32,
    pub hairpin: bool,
    pub promisc: bool,
    pub data_dir: PathBuf,
    pub range_sets: Vec<RangeSet>,
    /// IPAM routes: destination, prefix, gateway, and the JSON as the result prints it.
    pub routes: Vec<(IpAddr, u8, Option<IpAddr>)>,
    /// portmap, when the list has it, and whether it declares the portMappings capability.
    pub portmap: Option<(PortmapConf, bool)>,
}

/// The versions whose results the fast path emits (the differential tests cover them).
const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

fn keys_only(obj: &Map<String, Value>, allowed: &[&str], plugin: &str) -> Result<(), Unsupported> {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(no(format!("{plugin}: field {key:?} is not implemented")));
        }
    }
    Ok(())
}

fn bool_field(obj: &Map<String, Value>, key: &str, plugin: &str) -> Result<bool, Unsupported> {
    match obj.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(no(format!("{plugin}: {key} is {v}, not a boolean"))),
    }
}

fn caps_only(obj: &Map<String, Value>, allowed: &[&str], plugin: &str) -> Result<(), Unsupported> {
    if let Some(caps) = obj.get("capabilities") {
        let Value::Object(caps) = caps else {
            return Err(no(format!("{plugin}: capabilities is not an object")));
        };
        for (k, v) in caps {
            if v.as_bool() == Some(true) && !allowed.contains(&k.as_str()) {
                return Err(no(format!("{plugin}: capability {k:?} is not implemented")));
            }
        }
    }
    Ok(())
}

/// Whether the fast path implements `list` completely, and how.
pub fn supports(list: &NetworkConfigList) -> Result<FastPlan, Unsupported> {
    if !VERSIONS.contains(&list.cni_version.as_str()) {
        return Err(no(format!(
            "cniVersion {} (the fast path emits {})",
            list.cni_version,
            VERSIONS.join(", ")
        )));
    }
    let types: Vec<&str> = list
        .plugins
        .iter()
        .map(|p| p.plugin_type.as_str())
        .collect();
    let (loopback, rest) = match types.first() {
        Some(&"loopback") => (true, &list.plugins[1..]),
        _ => (false, &list.plugins[..]),
    };
    let shape_ok = matches!(
        rest.iter()
            .map(|p| p.plugin_type.as_str())
            .collect::<Vec<_>>()
            .as_slice(),
        ["bridge"] | ["bridge", "portmap"]
    );
    if !shape_ok {
        return Err(no(format!(
            "plugins {types:?} (the fast path implements [loopback,] bridge [, portmap])"
        )));
    }
    if loopback {
        keys_only(
            &list.plugins[0].raw,
            &["type", "name", "cniVersion", "capabilities"],
            "loopback",
        )?;
        caps_only(&list.plugins[0].raw, &[], "loopback")?;
    }
    let b = &rest[0].raw;
    keys_only(
        b,
        &[
            "type",
            "name",
            "cniVersion",
            "capabilities",
            "bridge",
            "isGateway",
            "isDefaultGateway",
            "forceAddress",
            "ipMasq",
            "mtu",
            "hairpinMode",
            "promiscMode",
            "vlan",
            "macspoofchk",
            "enabledad",
            "ipam",
        ],
        "bridge",
    )?;
    // Capabilities crisp hands out that the bridge or host-local would act on.
    caps_only(
        b,
        &[
            "portMappings",
            "dns",
            "cgroupPath",
            "io.kubernetes.cri.pod-annotations",
        ],
        "bridge",
    )?;
    for key in ["forceAddress", "macspoofchk", "enabledad"] {
        if bool_field(b, key, "bridge")? {
            return Err(no(format!("bridge: {key}=true is not implemented")));
        }
    }
    match b.get("vlan") {
        None => {}
        Some(v) if v.as_i64() == Some(0) => {}
        Some(v) => return Err(no(format!("bridge: vlan {v} is not implemented"))),
    }
    let bridge = match b.get("bridge") {
        None => "cni0".to_string(),
        Some(Value::String(s)) if !s.is_empty() && s.len() < 16 && !s.contains('/') => s.clone(),
        Some(v) => return Err(no(format!("bridge: bridge name {v} is not usable"))),
    };
    let mtu = match b.get("mtu") {
        None => 0,
        Some(v) => v
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .ok_or_else(|| no(format!("bridge: mtu {v} is not a number")))?,
    };
    let is_default_gateway = bool_field(b, "isDefaultGateway", "bridge")?;
    let is_gateway = bool_field(b, "isGateway", "bridge")? || is_default_gateway;
    let hairpin = bool_field(b, "hairpinMode", "bridge")?;
    let promisc = bool_field(b, "promiscMode", "bridge")?;
    if hairpin && promisc {
        return Err(no(
            "bridge: hairpinMode and promiscMode together (the plugin refuses it)",
        ));
    }
    let ip_masq = bool_field(b, "ipMasq", "bridge")?;

    let Some(Value::Object(ipam)) = b.get("ipam") else {
        return Err(no("bridge: no ipam (layer-2 only) is not implemented"));
    };
    if ipam.get("type").and_then(Value::as_str) != Some("host-local") {
        return Err(no(format!(
            "ipam type {} is not implemented",
            ipam.get("type").unwrap_or(&Value::Null)
        )));
    }
    keys_only(
        ipam,
        &[
            "type",
            "ranges",
            "subnet",
            "rangeStart",
            "rangeEnd",
            "gateway",
            "routes",
            "dataDir",
        ],
        "host-local",
    )?;
    let data_dir = match ipam.get("dataDir") {
        None => PathBuf::from(hostlocal::DEFAULT_DATA_DIR),
        Some(Value::String(s)) if s.is_empty() => PathBuf::from(hostlocal::DEFAULT_DATA_DIR),
        Some(Value::String(s)) if s.starts_with('/') => PathBuf::from(s),
        Some(v) => {
            return Err(no(format!(
                "host-local: dataDir {v} is not an absolute path"
            )))
        }
    };
    let range_of = |r: &Value| -> Result<Range, Unsupported> {
        let Value::Object(r) = r else {
            return Err(no("host-local: a range is not an object"));
        };
        keys_only(
            r,
            &["subnet", "rangeStart", "rangeEnd", "gateway"],
            "host-local range",
        )?;
        let get = |k: &str| r.get(k).and_then(Value::as_str);
        let subnet = get("subnet").ok_or_else(|| no("host-local: a range has no subnet"))?;
        Range::parse(subnet, get("rangeStart"), get("rangeEnd"), get("gateway"))
            .map_err(|e| no(format!("host-local: {e}")))
    };
    let mut range_sets: Vec<RangeSet> = Vec::new();
    if let Some(subnet) = ipam.get("subnet") {
        let mut old = Map::new();
        for k in ["subnet", "rangeStart", "rangeEnd", "gateway"] {
            if let Some(v) = ipam.get(k) {
                old.insert(k.to_string(), v.clone());
            }
        }
        let _ = subnet;
        range_sets.push(vec![range_of(&Value::Object(old))?]);
    }
    if let Some(ranges) = ipam.get("ranges") {
        let Value::Array(sets) = ranges else {
            return Err(no("host-local: ranges is not a list"));
        };
        for set in sets {
            let Value::Array(set) = set else {
                return Err(no("host-local: a range set is not a list"));
            };
            if set.is_empty() {
                return Err(no("host-local: empty range set"));
            }
            let parsed = set.iter().map(range_of).collect::<Result<Vec<_>, _>>()?;
            if parsed.iter().any(|r| r.v6 != parsed[0].v6) {
                return Err(no("host-local: mixed address families in a range set"));
            }
            range_sets.push(parsed);
        }
    }
    if range_sets.is_empty() {
        return Err(no("host-local: no IP ranges specified"));
    }
    let overlap = |a: &Range, b: &Range| {
        a.v6 == b.v6
            && (a.contains(b.ip(b.start))
                || a.contains(b.ip(b.end))
                || b.contains(a.ip(a.start))
                || b.contains(a.ip(a.end)))
    };
    let all: Vec<&Range> = range_sets.iter().flatten().collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if overlap(a, b) {
                return Err(no(
                    "host-local: overlapping ranges (the plugin refuses them)",
                ));
            }
        }
    }
    if is_gateway && range_sets.iter().filter(|s| !s[0].v6).count() > 1 {
        return Err(no(
            "bridge: isGateway with two IPv4 range sets (the plugin fails on the second address)",
        ));
    }
    let mut routes = Vec::new();
    if let Some(rs) = ipam.get("routes") {
        let Value::Array(rs) = rs else {
            return Err(no("host-local: routes is not a list"));
        };
        for r in rs {
            let Value::Object(r) = r else {
                return Err(no("host-local: a route is not an object"));
            };
            keys_only(r, &["dst", "gw"], "host-local route")?;
            let dst = r
                .get("dst")
                .and_then(Value::as_str)
                .ok_or_else(|| no("host-local: a route has no dst"))?;
            let (ip, prefix) =
                parse_cidr(dst).ok_or_else(|| no(format!("route dst {dst:?} is not a CIDR")))?;
            if network(ip, prefix) != ip {
                return Err(no(format!("host-local: route dst {dst} has host bits set")));
            }
            let gw = match r.get("gw") {
                None => None,
                Some(Value::String(g)) => Some(
                    g.parse::<IpAddr>()
                        .map_err(|_| no(format!("host-local: route gw {g:?} is not an IP")))?,
                ),
                Some(v) => return Err(no(format!("host-local: route gw {v} is not a string"))),
            };
            routes.push((ip, prefix, gw));
        }
    }
    if is_default_gateway && routes.iter().any(|(_, p, _)| *p == 0) {
        return Err(no(
            "bridge: isDefaultGateway with a default route in ipam.routes",
        ));
    }
    let portmap = match rest.get(1) {
        None => None,
        Some(p) => {
            keys_only(
                &p.raw,
                &[
                    "type",
                    "name",
                    "cniVersion",
                    "capabilities",
                    "snat",
                    "markMasqBit",
                ],
                "portmap",
            )?;
            caps_only(&p.raw, &["portMappings"], "portmap")?;
            let snat = match p.raw.get("snat") {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(v) => return Err(no(format!("portmap: snat {v} is not a boolean"))),
            };
            let mark_bit = match p.raw.get("markMasqBit") {
                None => rules::DEFAULT_MARK_BIT,
                Some(v) => v
                    .as_u64()
                    .filter(|b| *b <= 31)
                    .map(|b| b as u32)
                    .ok_or_else(|| no(format!("portmap: markMasqBit {v} is not 0..31")))?,
            };
            Some((
                PortmapConf { snat, mark_bit },
                p.capabilities.contains("portMappings"),
            ))
        }
    };
    Ok(FastPlan {
        network: list.name.clone(),
        cni_version: list.cni_version.clone(),
        loopback,
        bridge,
        is_gateway,
        is_default_gateway,
        ip_masq,
        mtu,
        hairpin,
        promisc,
        data_dir,
        range_sets,
        routes,
        portmap,
    })
}

/// Port mappings as portmap reads them from the capability args (only when it declares
/// `portMappings`); a bad one is the plugin's error.
fn port_maps(plan: &FastPlan, caps: &Map<String, Value>) -> Result<Vec<PortMap>, String> {
    let Some((_, true)) = plan.portmap else {
        return Ok(Vec::new());
    };
    let Some(Value::Array(items)) = caps.get("portMappings") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in items {
        let num = |k: &str| item.get(k).and_then(Value::as_i64).unwrap_or(0);
        let (hp, cp) = (num("hostPort"), num("containerPort"));
        if cp <= 0 || cp > 65535 {
            return Err(format!("Invalid container port number: {cp}"));
        }
        if hp <= 0 || hp > 65535 {
            return Err(format!("Invalid host port number: {hp}"));
        }
        out.push(PortMap {
            host_port: hp as u16,
            container_port: cp as u16,
            protocol: item
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            host_ip: item
                .get("hostIP")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        });
    }
    Ok(out)
}

/// The fast path: one node netlink connection, reused.
pub struct FastPath {
    links: netlink::NodeLinks,
    /// PATH for iptables-restore/-save.
    path_env: String,
    /// Per family (IPv4, IPv6): whether iptables is the nf_tables variant, asked once.
    nf_tables: [tokio::sync::OnceCell<bool>; 2],
    /// The nf_tables netlink socket DEL uses, opened on first use and kept (see
    /// [`nftables`] for why); dropped after an error so the next DEL starts clean.
    nat_socket: Arc<Mutex<Option<nfnetlink::NfSocket>>>,
}

fn err(network: &str, plugin: &str, command: &'static str, reason: impl ToString) -> CniError {
    CniError::InProcess {
        network: network.to_string(),
        plugin: plugin.to_string(),
        command,
        reason: reason.to_string(),
    }
}

impl FastPath {
    pub fn new(path_env: String) -> Self {
        FastPath {
            links: netlink::NodeLinks::new(),
            path_env,
            nf_tables: Default::default(),
            nat_socket: Arc::new(Mutex::new(None)),
        }
    }

    /// ADD: the cache entry first (as the exec path writes it), then bridge + host-local +
    /// portmap's effects, then the result into the cache.
    pub async fn add(
        &self,
        plan: &FastPlan,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
        cache: &Cache,
    ) -> Result<CniResult, CniError> {
        let netns = rt
            .netns
            .clone()
            .ok_or_else(|| err(&plan.network, "bridge", "ADD", "no network namespace"))?;
        let netns_str = netns.display().to_string();
        let mut entry = CacheEntry {
            kind: crate::cni::cache::CACHE_KIND.to_string(),
            container_id: rt.container_id.clone(),
            network_name: list.name.clone(),
            if_name: rt.ifname.clone(),
            netns: netns_str.clone(),
            config: list.json.clone(),
            cni_args: rt.args.clone(),
            capability_args: rt.capability_args.clone(),
            result: None,
        };
        let mut steps = crate::clock::Steps::start();
        save(cache, &entry)?;
        steps.mark("cache");
        let maps = port_maps(plan, &rt.capability_args).map_err(|e| {
            err(
                &plan.network,
                "portmap",
                "ADD",
                format!("failed to parse config: {e}"),
            )
        })?;
        let net = &plan.network;
        let bridge_err = |e: netlink::LinkError| err(net, "bridge", "ADD", e);

        // bridge: the bridge, then the veth with its peer in the pod.
        let br = self
            .links
            .ensure_bridge(&plan.bridge, plan.mtu, plan.promisc)
            .await
            .map_err(bridge_err)?;
        let host = self
            .links
            .add_veth(&netns, &rt.ifname, plan.mtu, &br, plan.hairpin)
            .await
            .map_err(bridge_err)?;
        steps.mark("links");

        // host-local.
        let store = Store::new(&plan.data_dir, net);
        let (id, ifname, sets) = (
            rt.container_id.clone(),
            rt.ifname.clone(),
            plan.range_sets.clone(),
        );
        let store2 = store.clone();
        let allocs = tokio::task::spawn_blocking(move || store2.allocate(&id, &ifname, &sets))
            .await
            .map_err(|e| err(net, "host-local", "ADD", e))?
            .map_err(|e| err(net, "host-local", "ADD", e))?;
        steps.mark("host-local");

        // The pod's side: addresses, up, routes (+ the default route isDefaultGateway adds).
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
        let pod_routes = routes
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
            .collect();
        // The pod side (eth0's addresses and routes, then the gateway on the bridge) and
        // ipMasq's and portmap's rules (they need only the addresses) run at the same time:
        // the rules' iptables-restore, a process start, is the longest step.
        let pod_side = async {
            let container_mac = netlink::configure_pod(
                &netns,
                netlink::PodConfig {
                    ifname: rt.ifname.clone(),
                    addrs: allocs.iter().map(|a| (a.ip, a.prefix)).collect(),
                    routes: pod_routes,
                },
            )
            .await
            .map_err(|e| err(net, "bridge", "ADD", e))?;
            // The gateway addresses on the bridge and forwarding, IPv4 first.
            if plan.is_gateway {
                for v6 in [false, true] {
                    let gws: Vec<_> = allocs.iter().filter(|a| a.ip.is_ipv6() == v6).collect();
                    for a in &gws {
                        self.links
                            .ensure_bridge_addr(&br, a.gateway, a.prefix)
                            .await
                            .map_err(bridge_err)?;
                    }
                    if !gws.is_empty() {
                        let key = if v6 {
                            "net/ipv6/conf/all/forwarding"
                        } else {
                            "net/ipv4/ip_forward"
                        };
                        netlink::sysctl(key, "1").map_err(|e| {
                            err(
                                net,
                                "bridge",
                                "ADD",
                                format!("failed to enable forwarding: {e}"),
                            )
                        })?;
                    }
                }
            }
            Ok::<_, CniError>(container_mac)
        };
        // ipMasq and portmap: one restore per family.
        let rules = async {
            for v6 in [false, true] {
                let fam: Vec<_> = allocs.iter().filter(|a| a.ip.is_ipv6() == v6).collect();
                let Some(first) = fam.first() else { continue };
                let rules = PodRules {
                    network: net.clone(),
                    container_id: rt.container_id.clone(),
                    v6,
                    masq: if plan.ip_masq {
                        fam.iter().map(|a| (a.ip, a.prefix)).collect()
                    } else {
                        Vec::new()
                    },
                    ports: plan
                        .portmap
                        .as_ref()
                        .map(|(conf, _)| (conf.clone(), maps.clone(), first.ip, first.prefix)),
                };
                if rules.is_empty() {
                    continue;
                }
                // ipMasq alone (no published port) on iptables-nft: one netlink transaction
                // on the kept socket instead of an iptables-restore process.
                if !v6 && !rules.needs_current() && self.uses_nf_tables(false).await {
                    let started = std::time::Instant::now();
                    match self.add_masq_v4(net, &rt.container_id, &rules.masq).await {
                        Ok(()) => {
                            tracing::debug!(network = %net, container_id = %rt.container_id, elapsed_us = started.elapsed().as_micros() as u64, "ipMasq rules written over netlink");
                            continue;
                        }
                        Err(e) => tracing::debug!(
                            network = %net, container_id = %rt.container_id, error = %e,
                            "ipMasq rules over netlink not taken; using iptables-restore"
                        ),
                    }
                }
                let current = if rules.needs_current() {
                    Some(
                        rules::save_nat(v6, &self.path_env)
                            .await
                            .map_err(|e| err(net, "portmap", "ADD", e))?,
                    )
                } else {
                    None
                };
                rules::restore(v6, &rules.add_batch(current.as_deref()), &self.path_env)
                    .await
                    .map_err(|e| err(net, "bridge", "ADD", e))?;
            }
            Ok::<_, CniError>(())
        };
        let (container_mac, ()) = tokio::try_join!(pod_side, rules)?;
        steps.mark("pod, gateway, iptables");

        // portmap's last steps, once the bridge routes to the pod.
        if let Some((conf, _)) = &plan.portmap {
            for v6 in [false, true] {
                let Some(first) = allocs.iter().find(|a| a.ip.is_ipv6() == v6) else {
                    continue;
                };
                // With SNAT, 127/8 may cross into the pod's link (route_localnet).
                if !v6 && !maps.is_empty() && conf.snat {
                    if let Some(ifname) = self.links.routable_if(first.ip).await {
                        netlink::sysctl(&format!("net/ipv4/conf/{ifname}/route_localnet"), "1")
                            .map_err(|e| {
                                err(
                                    net,
                                    "portmap",
                                    "ADD",
                                    format!("unable to enable route_localnet: {e}"),
                                )
                            })?;
                    }
                }
                delete_stale_udp_flows(net, &rt.container_id, &maps, v6).await;
            }
        }

        let bridge_mac = self.links.mac(br.index).await.map_err(bridge_err)?;
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": plan.bridge, "mac": bridge_mac},
                {"name": host.name, "mac": host.mac},
                {"name": rt.ifname, "mac": container_mac, "sandbox": netns_str},
            ],
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
        let parsed = parse_result("1.0.0", result.to_string().as_bytes())
            .map_err(|e| err(net, "bridge", "ADD", e))?;
        let json = parsed
            .to_version_json(&list.cni_version)
            .map_err(|e| err(net, "bridge", "ADD", e))?;
        let parsed = parse_result(&list.cni_version, json.to_string().as_bytes())
            .map_err(|e| err(net, "bridge", "ADD", e))?;
        steps.mark("portmap, result");
        entry.result = Some(json);
        save(cache, &entry)?;
        steps.mark("cache");
        tracing::debug!(
            network = %net, container_id = %rt.container_id,
            steps_us = ?steps.marks(), "CNI fast path ADD done"
        );
        Ok(parsed)
    }

    /// DEL for an attachment made by either path: host-local releases the address, the
    /// pod's nat rules go; the veth is left to go with the namespace. Nothing cached is
    /// fine (interrupted ADD): the rules are then found by their chain names.
    pub async fn del(
        &self,
        plan: &FastPlan,
        rt: &RuntimeConf,
        cached: Option<&CacheEntry>,
        cache: &Cache,
    ) -> Result<(), CniError> {
        let net = &plan.network;
        let store = Store::new(&plan.data_dir, net);
        let (id, ifname) = (rt.container_id.clone(), rt.ifname.clone());
        tokio::task::spawn_blocking(move || store.release(&id, &ifname))
            .await
            .map_err(|e| err(net, "host-local", "DEL", e))?
            .map_err(|e| err(net, "host-local", "DEL", e))?;

        let result = cached
            .and_then(|c| c.result.as_ref())
            .and_then(|r| parse_result(&plan.cni_version, r.to_string().as_bytes()).ok());
        let maps = cached
            .map(|c| port_maps(plan, &c.capability_args))
            .transpose()
            .map_err(|e| err(net, "portmap", "DEL", e))?
            .unwrap_or_default();
        for v6 in [false, true] {
            let exact = result.as_ref().map(|r| {
                let fam: Vec<(IpAddr, u8)> = r
                    .ips
                    .iter()
                    .filter_map(|ip| parse_cidr(&ip.address))
                    .filter(|(a, _)| a.is_ipv6() == v6)
                    .collect();
                PodRules {
                    network: net.clone(),
                    container_id: rt.container_id.clone(),
                    v6,
                    masq: if plan.ip_masq {
                        fam.clone()
                    } else {
                        Vec::new()
                    },
                    ports: match (plan.portmap.as_ref(), fam.first()) {
                        (Some((conf, _)), Some((a, p))) => {
                            Some((conf.clone(), maps.clone(), *a, *p))
                        }
                        _ => None,
                    },
                }
            });
            let nothing_there = match &exact {
                Some(rules) => rules.is_empty(),
                // Nothing known: only look when this family could hold rules.
                None => !plan.ip_masq && plan.portmap.is_none(),
            };
            if nothing_there {
                continue;
            }
            if self.uses_nf_tables(v6).await {
                match self.delete_nat_chains(v6, &rt.container_id, net).await {
                    Ok(()) => continue,
                    Err(e) => tracing::warn!(
                        network = %net, container_id = %rt.container_id, v6, error = %e,
                        "deleting the pod's nat rules over netlink failed; using iptables-restore"
                    ),
                }
            }
            // The exact batch; if something in it was already gone, it fails as a whole and
            // the live table decides below.
            if let Some(rules) = exact {
                if rules::restore(v6, &rules.del_batch(), &self.path_env)
                    .await
                    .is_ok()
                {
                    continue;
                }
            }
            // Something was already gone (or nothing is known): delete what is there.
            let nat = match rules::save_nat(v6, &self.path_env).await {
                Ok(nat) => nat,
                // No ip6tables nat table support: nothing of ours can be there.
                Err(_) if v6 => continue,
                Err(e) => return Err(err(net, "bridge", "DEL", e)),
            };
            let batch = rules::reconcile_del_batch(&nat, &rules::pod_chains(net, &rt.container_id));
            rules::restore(v6, &batch, &self.path_env)
                .await
                .map_err(|e| err(net, "bridge", "DEL", e))?;
        }
        cache
            .remove(net, &rt.container_id, &rt.ifname)
            .map_err(|source| CniError::Cache {
                path: cache.path(net, &rt.container_id, &rt.ifname),
                source,
            })
    }
}

impl FastPath {
    async fn uses_nf_tables(&self, v6: bool) -> bool {
        *self.nf_tables[usize::from(v6)]
            .get_or_init(|| rules::is_nf_tables(v6, &self.path_env))
            .await
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

    /// Runs `work` on a blocking thread with the kept nf_tables socket (opened on first use,
    /// dropped after an error so the next use starts clean).
    async fn with_nat_socket<T: Send + 'static>(
        &self,
        work: impl FnOnce(&nfnetlink::NfSocket) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let socket = self.nat_socket.clone();
        tokio::task::spawn_blocking(move || {
            let mut socket = socket.lock().unwrap_or_else(|p| p.into_inner());
            if socket.is_none() {
                *socket = Some(nfnetlink::NfSocket::open()?);
            }
            let outcome = match socket.as_ref() {
                Some(open) => work(open),
                None => Err(std::io::Error::other("no nf_tables socket")),
            };
            if outcome.is_err() {
                *socket = None;
            }
            outcome
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// The pod's ipMasq and portmap chains and every jump to them, in one nf_tables
    /// transaction over the kept socket.
    async fn delete_nat_chains(
        &self,
        v6: bool,
        container_id: &str,
        network: &str,
    ) -> std::io::Result<()> {
        let chains = rules::pod_chains(network, container_id);
        let removed = self
            .with_nat_socket(move |socket| nftables::delete_chains(socket, v6, &chains))
            .await?;
        tracing::debug!(
            network,
            container_id,
            v6,
            ?removed,
            "pod nat rules deleted over netlink"
        );
        Ok(())
    }
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

fn save(cache: &Cache, entry: &CacheEntry) -> Result<(), CniError> {
    cache.save(entry).map_err(|source| CniError::Cache {
        path: cache.path(&entry.network_name, &entry.container_id, &entry.if_name),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn list(json: &str) -> NetworkConfigList {
        NetworkConfigList::from_list_bytes(json.as_bytes(), Path::new("t.conflist"))
            .expect("valid list")
    }

    #[test]
    fn the_default_network_is_supported() {
        let l = list(include_str!("../../../cni-conf/10-crisp.conflist"));
        let plan = supports(&l).expect("supported");
        assert_eq!(plan.bridge, "crisp0");
        assert!(plan.ip_masq && plan.is_gateway && plan.hairpin);
        assert!(plan.portmap.is_some());
    }

    #[test]
    fn unsupported_fields_and_plugins_say_why() {
        let cases = [
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","vlan":5,"ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}]}"#,
                "vlan",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"dhcp"}}]}"#,
                "ipam type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}},{"type":"bandwidth"}]}"#,
                "plugins",
            ),
            (
                r#"{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}]}"#,
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"host-local","subnet":"10.1.0.0/24","resolvConf":"/etc/resolv.conf"}}]}"#,
                "resolvConf",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}},{"type":"portmap","externalSetMarkChain":"X"}]}"#,
                "externalSetMarkChain",
            ),
        ];
        for (json, want) in cases {
            let why = supports(&list(json)).expect_err("unsupported").why;
            assert!(why.contains(want), "{want}: {why}");
        }
    }
}
