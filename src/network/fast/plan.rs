//! Which network lists the fast path implements: validation of a list that yields the plan
//! the fast path executes, or why the list is left to the plugins. Pure: it reads the list
//! (and a pod's port mappings) and never touches the node.

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::hostlocal::{self, Range, RangeSet};
use super::rules::{self, PodRules, PortMap, PortmapConf};
use crate::cni::{NetworkConfigList, PluginConf};
use crate::netlink::ip::{network, parse_cidr};

/// Why a network list is left to the plugins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct Unsupported {
    pub why: String,
}

/// The refusal of a list, saying why.
fn unsupported(why: impl Into<String>) -> Unsupported {
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

impl FastPlan {
    /// What a pod with `addrs` (one family's, with their prefixes) needs in that family's
    /// nat table: ipMasq for each address, portmap's `maps` to the first.
    pub(super) fn pod_rules(
        &self,
        container_id: &str,
        v6: bool,
        addrs: Vec<(IpAddr, u8)>,
        maps: &[PortMap],
    ) -> PodRules {
        PodRules {
            network: self.network.clone(),
            container_id: container_id.to_string(),
            v6,
            ports: match (self.portmap.as_ref(), addrs.first()) {
                (Some((conf, _)), Some((a, p))) => Some((conf.clone(), maps.to_vec(), *a, *p)),
                _ => None,
            },
            masq: if self.ip_masq { addrs } else { Vec::new() },
        }
    }
}

/// The versions whose results the fast path emits (the differential tests cover them).
const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

fn keys_only(obj: &Map<String, Value>, allowed: &[&str], plugin: &str) -> Result<(), Unsupported> {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(unsupported(format!(
                "{plugin}: field {key:?} is not implemented"
            )));
        }
    }
    Ok(())
}

fn bool_field(obj: &Map<String, Value>, key: &str, plugin: &str) -> Result<bool, Unsupported> {
    match obj.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(unsupported(format!(
            "{plugin}: {key} is {v}, not a boolean"
        ))),
    }
}

fn caps_only(obj: &Map<String, Value>, allowed: &[&str], plugin: &str) -> Result<(), Unsupported> {
    if let Some(caps) = obj.get("capabilities") {
        let Value::Object(caps) = caps else {
            return Err(unsupported(format!(
                "{plugin}: capabilities is not an object"
            )));
        };
        for (k, v) in caps {
            if v.as_bool() == Some(true) && !allowed.contains(&k.as_str()) {
                return Err(unsupported(format!(
                    "{plugin}: capability {k:?} is not implemented"
                )));
            }
        }
    }
    Ok(())
}

/// The plan for `list` when the fast path implements it completely, or why not. Checks run
/// in the list's order (version, plugins, bridge, host-local, portmap); the first refusal wins.
pub fn plan(list: &NetworkConfigList) -> Result<FastPlan, Unsupported> {
    check_version(&list.cni_version)?;
    let (loopback, rest) = split_loopback(list)?;
    let bridge = bridge_conf(&rest[0].raw)?;
    let ipam = host_local_ipam(&rest[0].raw)?;
    let data_dir = data_dir(ipam)?;
    let range_sets = range_sets(ipam)?;
    if bridge.is_gateway && range_sets.iter().filter(|s| !s[0].v6).count() > 1 {
        return Err(unsupported(
            "bridge: isGateway with two IPv4 range sets (the plugin fails on the second address)",
        ));
    }
    let routes = routes(ipam)?;
    if bridge.is_default_gateway && routes.iter().any(|(_, p, _)| *p == 0) {
        return Err(unsupported(
            "bridge: isDefaultGateway with a default route in ipam.routes",
        ));
    }
    let portmap = rest.get(1).map(portmap_conf).transpose()?;
    Ok(FastPlan {
        network: list.name.clone(),
        cni_version: list.cni_version.clone(),
        loopback,
        bridge: bridge.name,
        is_gateway: bridge.is_gateway,
        is_default_gateway: bridge.is_default_gateway,
        ip_masq: bridge.ip_masq,
        mtu: bridge.mtu,
        hairpin: bridge.hairpin,
        promisc: bridge.promisc,
        data_dir,
        range_sets,
        routes,
        portmap,
    })
}

fn check_version(cni_version: &str) -> Result<(), Unsupported> {
    if VERSIONS.contains(&cni_version) {
        return Ok(());
    }
    Err(unsupported(format!(
        "cniVersion {cni_version} (the fast path emits {})",
        VERSIONS.join(", ")
    )))
}

/// Whether the list starts with a (plain) loopback, and the plugins after it, which must be
/// `bridge` and optionally `portmap`.
fn split_loopback(list: &NetworkConfigList) -> Result<(bool, &[PluginConf]), Unsupported> {
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
        return Err(unsupported(format!(
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
    Ok((loopback, rest))
}

/// The bridge plugin's settings the plan carries.
struct BridgeConf {
    name: String,
    mtu: u32,
    is_gateway: bool,
    is_default_gateway: bool,
    hairpin: bool,
    promisc: bool,
    ip_masq: bool,
}

const BRIDGE_KEYS: &[&str] = &[
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
];

/// Capabilities crisp hands out that the bridge or host-local would act on.
const BRIDGE_CAPS: &[&str] = &[
    "portMappings",
    "dns",
    "cgroupPath",
    "io.kubernetes.cri.pod-annotations",
];

fn bridge_conf(b: &Map<String, Value>) -> Result<BridgeConf, Unsupported> {
    keys_only(b, BRIDGE_KEYS, "bridge")?;
    caps_only(b, BRIDGE_CAPS, "bridge")?;
    for key in ["forceAddress", "macspoofchk", "enabledad"] {
        if bool_field(b, key, "bridge")? {
            return Err(unsupported(format!(
                "bridge: {key}=true is not implemented"
            )));
        }
    }
    match b.get("vlan") {
        None => {}
        Some(v) if v.as_i64() == Some(0) => {}
        Some(v) => return Err(unsupported(format!("bridge: vlan {v} is not implemented"))),
    }
    let name = match b.get("bridge") {
        None => "cni0".to_string(),
        Some(Value::String(s)) if !s.is_empty() && s.len() < 16 && !s.contains('/') => s.clone(),
        Some(v) => {
            return Err(unsupported(format!(
                "bridge: bridge name {v} is not usable"
            )))
        }
    };
    let mtu = match b.get("mtu") {
        None => 0,
        Some(v) => v
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .ok_or_else(|| unsupported(format!("bridge: mtu {v} is not a number")))?,
    };
    let is_default_gateway = bool_field(b, "isDefaultGateway", "bridge")?;
    let is_gateway = bool_field(b, "isGateway", "bridge")? || is_default_gateway;
    let hairpin = bool_field(b, "hairpinMode", "bridge")?;
    let promisc = bool_field(b, "promiscMode", "bridge")?;
    if hairpin && promisc {
        return Err(unsupported(
            "bridge: hairpinMode and promiscMode together (the plugin refuses it)",
        ));
    }
    let ip_masq = bool_field(b, "ipMasq", "bridge")?;
    Ok(BridgeConf {
        name,
        mtu,
        is_gateway,
        is_default_gateway,
        hairpin,
        promisc,
        ip_masq,
    })
}

/// The bridge's `ipam`, which must be host-local with only the keys implemented.
fn host_local_ipam(b: &Map<String, Value>) -> Result<&Map<String, Value>, Unsupported> {
    let Some(Value::Object(ipam)) = b.get("ipam") else {
        return Err(unsupported(
            "bridge: no ipam (layer-2 only) is not implemented",
        ));
    };
    if ipam.get("type").and_then(Value::as_str) != Some("host-local") {
        return Err(unsupported(format!(
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
    Ok(ipam)
}

fn data_dir(ipam: &Map<String, Value>) -> Result<PathBuf, Unsupported> {
    match ipam.get("dataDir") {
        None => Ok(PathBuf::from(hostlocal::DEFAULT_DATA_DIR)),
        Some(Value::String(s)) if s.is_empty() => Ok(PathBuf::from(hostlocal::DEFAULT_DATA_DIR)),
        Some(Value::String(s)) if s.starts_with('/') => Ok(PathBuf::from(s)),
        Some(v) => Err(unsupported(format!(
            "host-local: dataDir {v} is not an absolute path"
        ))),
    }
}

/// One host-local range object.
fn range_of(r: &Value) -> Result<Range, Unsupported> {
    let Value::Object(r) = r else {
        return Err(unsupported("host-local: a range is not an object"));
    };
    keys_only(
        r,
        &["subnet", "rangeStart", "rangeEnd", "gateway"],
        "host-local range",
    )?;
    let get = |k: &str| r.get(k).and_then(Value::as_str);
    let subnet = get("subnet").ok_or_else(|| unsupported("host-local: a range has no subnet"))?;
    Range::parse(subnet, get("rangeStart"), get("rangeEnd"), get("gateway"))
        .map_err(|e| unsupported(format!("host-local: {e}")))
}

/// host-local's range sets: the old top-level `subnet` first, then `ranges`; none, or two
/// that overlap, are refused as the plugin refuses them.
fn range_sets(ipam: &Map<String, Value>) -> Result<Vec<RangeSet>, Unsupported> {
    let mut range_sets: Vec<RangeSet> = Vec::new();
    if ipam.contains_key("subnet") {
        let mut old = Map::new();
        for k in ["subnet", "rangeStart", "rangeEnd", "gateway"] {
            if let Some(v) = ipam.get(k) {
                old.insert(k.to_string(), v.clone());
            }
        }
        range_sets.push(vec![range_of(&Value::Object(old))?]);
    }
    if let Some(ranges) = ipam.get("ranges") {
        let Value::Array(sets) = ranges else {
            return Err(unsupported("host-local: ranges is not a list"));
        };
        for set in sets {
            range_sets.push(range_set(set)?);
        }
    }
    if range_sets.is_empty() {
        return Err(unsupported("host-local: no IP ranges specified"));
    }
    refuse_overlaps(&range_sets)?;
    Ok(range_sets)
}

/// One entry of `ranges`: a non-empty list of ranges of one family.
fn range_set(set: &Value) -> Result<RangeSet, Unsupported> {
    let Value::Array(set) = set else {
        return Err(unsupported("host-local: a range set is not a list"));
    };
    if set.is_empty() {
        return Err(unsupported("host-local: empty range set"));
    }
    let parsed = set.iter().map(range_of).collect::<Result<Vec<_>, _>>()?;
    if parsed.iter().any(|r| r.v6 != parsed[0].v6) {
        return Err(unsupported(
            "host-local: mixed address families in a range set",
        ));
    }
    Ok(parsed)
}

fn refuse_overlaps(range_sets: &[RangeSet]) -> Result<(), Unsupported> {
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
                return Err(unsupported(
                    "host-local: overlapping ranges (the plugin refuses them)",
                ));
            }
        }
    }
    Ok(())
}

/// host-local's `routes`: destination, prefix, optional gateway.
fn routes(ipam: &Map<String, Value>) -> Result<Vec<(IpAddr, u8, Option<IpAddr>)>, Unsupported> {
    let Some(rs) = ipam.get("routes") else {
        return Ok(Vec::new());
    };
    let Value::Array(rs) = rs else {
        return Err(unsupported("host-local: routes is not a list"));
    };
    rs.iter().map(route).collect()
}

fn route(r: &Value) -> Result<(IpAddr, u8, Option<IpAddr>), Unsupported> {
    let Value::Object(r) = r else {
        return Err(unsupported("host-local: a route is not an object"));
    };
    keys_only(r, &["dst", "gw"], "host-local route")?;
    let dst = r
        .get("dst")
        .and_then(Value::as_str)
        .ok_or_else(|| unsupported("host-local: a route has no dst"))?;
    let (ip, prefix) =
        parse_cidr(dst).ok_or_else(|| unsupported(format!("route dst {dst:?} is not a CIDR")))?;
    if network(ip, prefix) != ip {
        return Err(unsupported(format!(
            "host-local: route dst {dst} has host bits set"
        )));
    }
    let gw = match r.get("gw") {
        None => None,
        Some(Value::String(g)) => Some(
            g.parse::<IpAddr>()
                .map_err(|_| unsupported(format!("host-local: route gw {g:?} is not an IP")))?,
        ),
        Some(v) => {
            return Err(unsupported(format!(
                "host-local: route gw {v} is not a string"
            )))
        }
    };
    Ok((ip, prefix, gw))
}

/// portmap's settings, and whether it declares the portMappings capability.
fn portmap_conf(p: &PluginConf) -> Result<(PortmapConf, bool), Unsupported> {
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
        Some(v) => return Err(unsupported(format!("portmap: snat {v} is not a boolean"))),
    };
    let mark_bit = match p.raw.get("markMasqBit") {
        None => rules::DEFAULT_MARK_BIT,
        Some(v) => v
            .as_u64()
            .filter(|b| *b <= 31)
            .map(|b| b as u32)
            .ok_or_else(|| unsupported(format!("portmap: markMasqBit {v} is not 0..31")))?,
    };
    Ok((
        PortmapConf { snat, mark_bit },
        p.capabilities.contains("portMappings"),
    ))
}

/// Port mappings as portmap reads them from the capability args (only when it declares
/// `portMappings`); a bad one is the plugin's error.
pub(super) fn port_maps(
    plan: &FastPlan,
    caps: &Map<String, Value>,
) -> Result<Vec<PortMap>, String> {
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
        let plan = plan(&l).expect("supported");
        assert_eq!(plan.bridge, "crisp0");
        assert!(plan.ip_masq && plan.is_gateway && plan.hairpin);
        assert!(plan.portmap.is_some());
    }

    const IPAM: &str = r#"{"type":"host-local","subnet":"10.1.0.0/24"}"#;

    /// A bridge plugin with `extra` fields (each followed by a comma) and `ipam`.
    fn bridge(extra: &str, ipam: &str) -> String {
        format!(r#"{{"type":"bridge",{extra}"ipam":{ipam}}}"#)
    }

    fn conflist(version: &str, plugins: &[&str]) -> String {
        let plugins = plugins.join(",");
        format!(r#"{{"cniVersion":"{version}","name":"n","plugins":[{plugins}]}}"#)
    }

    #[test]
    fn unsupported_fields_and_plugins_say_why() {
        let resolv = concat!(
            r#"{"type":"host-local","subnet":"10.1.0.0/24","#,
            r#""resolvConf":"/etc/resolv.conf"}"#
        );
        let portmap = r#"{"type":"portmap","externalSetMarkChain":"X"}"#;
        let cases = [
            (conflist("1.0.0", &[&bridge(r#""vlan":5,"#, IPAM)]), "vlan"),
            (
                conflist("1.0.0", &[&bridge("", r#"{"type":"dhcp"}"#)]),
                "ipam type",
            ),
            (
                conflist("1.0.0", &[&bridge("", IPAM), r#"{"type":"bandwidth"}"#]),
                "plugins",
            ),
            (conflist("0.2.0", &[&bridge("", IPAM)]), "cniVersion"),
            (conflist("1.0.0", &[&bridge("", resolv)]), "resolvConf"),
            (
                conflist("1.0.0", &[&bridge("", IPAM), portmap]),
                "externalSetMarkChain",
            ),
        ];
        for (json, want) in cases {
            let why = plan(&list(&json)).expect_err("unsupported").why;
            assert!(why.contains(want), "{want}: {why}");
        }
    }
}
