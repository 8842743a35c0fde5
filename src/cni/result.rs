//! CNI ADD results: parsing a plugin's stdout in any supported spec version,
//! holding it in the newest (1.x) shape, and re-encoding it in any version the
//! way libcni's `pkg/types/{020,040,100}` converters do.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::version::SUPPORTED_VERSIONS;

/// Errors from parsing or converting a CNI result.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("invalid CNI result JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("CNI result must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error(
        "unsupported CNI result version \"{version}\" (supported: {})",
        SUPPORTED_VERSIONS.join(", ")
    )]
    UnsupportedVersion { version: String },
    #[error("no converter for CNI result version \"{from}\" to \"{to}\"")]
    NoConverter { from: String, to: String },
    #[error("cannot convert CNI result version {from} to {to}: no valid IP addresses")]
    NoValidIps { from: String, to: String },
    #[error("invalid {field} \"{value}\" in CNI result: {reason}")]
    InvalidField {
        field: String,
        value: String,
        reason: &'static str,
    },
}

/// A CNI result held in the newest shape (1.x).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CniResult {
    #[serde(rename = "cniVersion", skip_serializing_if = "String::is_empty")]
    #[serde(deserialize_with = "null_default")]
    pub cni_version: String,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub interfaces: Vec<Interface>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub ips: Vec<IpConfig>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub routes: Vec<Route>,
    #[serde(
        skip_serializing_if = "Dns::is_empty",
        deserialize_with = "null_default"
    )]
    pub dns: Dns,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Interface {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "none_or_empty")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "none_or_zero")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "none_or_empty")]
    pub sandbox: Option<String>,
    #[serde(rename = "socketPath", default, skip_serializing_if = "none_or_empty")]
    pub socket_path: Option<String>,
    #[serde(rename = "pciID", default, skip_serializing_if = "none_or_empty")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct IpConfig {
    /// CIDR, e.g. "10.1.0.5/16" (host bits kept, as libcni does).
    pub address: String,
    #[serde(default, skip_serializing_if = "none_or_empty")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "none_or_empty")]
    pub gw: Option<String>,
    #[serde(default, skip_serializing_if = "none_or_zero")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "none_or_zero")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "none_or_zero")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Dns {
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "none_or_empty")]
    pub domain: Option<String>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub search: Vec<String>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && none_or_empty(&self.domain)
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

// Go's `omitempty` drops "" and 0 as well as absent values; mirror that.
fn none_or_empty(v: &Option<String>) -> bool {
    v.as_deref().is_none_or(str::is_empty)
}

fn none_or_zero(v: &Option<u32>) -> bool {
    v.is_none_or(|n| n == 0)
}

// Go decodes JSON null into a zero value; serde would refuse it for a Vec.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The three result shapes libcni implements (`types020`, `types040`, `types100`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    V02,
    V04,
    V1,
}

fn shape_of(version: &str) -> Option<Shape> {
    match version {
        "0.1.0" | "0.2.0" => Some(Shape::V02),
        "0.3.0" | "0.3.1" | "0.4.0" => Some(Shape::V04),
        "1.0.0" | "1.1.0" => Some(Shape::V1),
        _ => None,
    }
}

// ---- wire types of the older shapes ----

#[derive(Deserialize)]
struct Result04 {
    #[serde(default, deserialize_with = "null_default")]
    interfaces: Vec<Interface04>,
    #[serde(default, deserialize_with = "null_default")]
    ips: Vec<IpConfig04>,
    #[serde(default, deserialize_with = "null_default")]
    routes: Vec<Route>,
    #[serde(default, deserialize_with = "null_default")]
    dns: Dns,
}

#[derive(Deserialize, Serialize)]
struct Interface04 {
    #[serde(default, deserialize_with = "null_default")]
    name: String,
    #[serde(default, skip_serializing_if = "none_or_empty")]
    mac: Option<String>,
    #[serde(default, skip_serializing_if = "none_or_empty")]
    sandbox: Option<String>,
}

#[derive(Deserialize)]
struct IpConfig04 {
    // Read only so a non-string is refused as libcni does; the family is
    // re-derived from the address on output.
    #[serde(rename = "version", default, deserialize_with = "null_default")]
    _version: String,
    #[serde(default)]
    interface: Option<usize>,
    address: String,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Serialize)]
struct IpConfig04Out<'a> {
    version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: &'a str,
    #[serde(skip_serializing_if = "none_or_empty")]
    gateway: Option<String>,
}

#[derive(Serialize)]
struct Result04Out<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<Interface04>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<IpConfig04Out<'a>>,
    #[serde(skip_serializing_if = "<[Route]>::is_empty")]
    routes: &'a [Route],
    // Go's omitempty never omits a struct, so 0.x results always carry "dns".
    dns: &'a Dns,
}

#[derive(Deserialize)]
struct Result02 {
    #[serde(default)]
    ip4: Option<IpConfig02>,
    #[serde(default)]
    ip6: Option<IpConfig02>,
    #[serde(default, deserialize_with = "null_default")]
    dns: Dns,
}

#[derive(Deserialize, Serialize)]
struct IpConfig02 {
    ip: String,
    #[serde(default, skip_serializing_if = "none_or_empty")]
    gateway: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    routes: Vec<Route>,
}

#[derive(Serialize)]
struct Result02Out<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip4: Option<IpConfig02>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip6: Option<IpConfig02>,
    dns: &'a Dns,
}

// ---- address validation ----

/// Parses "ip/prefix" like Go's `net.ParseCIDR` (host bits kept).
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

fn canonical_cidr(s: &str, field: &str) -> Result<String, ResultError> {
    match parse_cidr(s) {
        Some((ip, prefix)) => Ok(format!("{ip}/{prefix}")),
        None => Err(invalid(field, s, "not an IP address in CIDR notation")),
    }
}

/// An empty gateway is absent (Go's `net.IP` decodes "" as nil).
fn canonical_ip(v: Option<String>, field: &str) -> Result<Option<String>, ResultError> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => match s.parse::<IpAddr>() {
            Ok(ip) => Ok(Some(ip.to_string())),
            Err(_) => Err(invalid(field, s, "not an IP address")),
        },
    }
}

fn invalid(field: &str, value: &str, reason: &'static str) -> ResultError {
    ResultError::InvalidField {
        field: field.to_string(),
        value: value.to_string(),
        reason,
    }
}

fn empty_to_none(v: &mut Option<String>) {
    if v.as_deref() == Some("") {
        *v = None;
    }
}

fn zero_to_none(v: &mut Option<u32>) {
    if *v == Some(0) {
        *v = None;
    }
}

fn normalize_route(route: &mut Route, field: &str) -> Result<(), ResultError> {
    route.dst = canonical_cidr(&route.dst, &format!("{field}.dst"))?;
    route.gw = canonical_ip(route.gw.take(), &format!("{field}.gw"))?;
    zero_to_none(&mut route.mtu);
    zero_to_none(&mut route.advmss);
    zero_to_none(&mut route.priority);
    Ok(())
}

fn is_v4_cidr(cidr: &str, field: &str) -> Result<bool, ResultError> {
    match parse_cidr(cidr) {
        Some((ip, _)) => Ok(ip.is_ipv4()),
        None => Err(invalid(field, cidr, "not an IP address in CIDR notation")),
    }
}

// ---- parsing ----

/// Parse a plugin's stdout. `expected_version` is the cniVersion the plugin was given; the
/// result's own "cniVersion" field wins when present (libcni: create.Create /
/// version.NewResult). Any of the 7 versions.
pub fn parse_result(expected_version: &str, stdout: &[u8]) -> Result<CniResult, ResultError> {
    let raw: Value = serde_json::from_slice(stdout)?;
    // libcni's fixupResultVersion: plugin output "null" is an empty result.
    let mut obj = match raw {
        Value::Null => Map::new(),
        Value::Object(m) => m,
        Value::Bool(_) => return Err(ResultError::NotAnObject("a boolean")),
        Value::Number(_) => return Err(ResultError::NotAnObject("a number")),
        Value::String(_) => return Err(ResultError::NotAnObject("a string")),
        Value::Array(_) => return Err(ResultError::NotAnObject("an array")),
    };
    // A non-empty string cniVersion in the result wins; otherwise (absent,
    // empty or not a string) the config's version is assumed, "" meaning 0.1.0.
    let version = match obj.remove("cniVersion") {
        Some(Value::String(v)) if !v.is_empty() => v,
        _ if expected_version.is_empty() => "0.1.0".to_string(),
        _ => expected_version.to_string(),
    };
    let Some(shape) = shape_of(&version) else {
        return Err(ResultError::UnsupportedVersion { version });
    };
    require_objects(&obj)?;
    let obj = Value::Object(obj);
    let mut result = match shape {
        Shape::V1 => serde_json::from_value::<CniResult>(obj)?,
        Shape::V04 => from_04(serde_json::from_value(obj)?),
        Shape::V02 => from_02(serde_json::from_value(obj)?)?,
    };
    result.cni_version = version;
    result.normalized()
}

/// serde would also decode a struct from a JSON array (by position); Go
/// refuses that, so every place the spec has an object must hold one.
fn require_objects(obj: &Map<String, Value>) -> Result<(), ResultError> {
    fn check(v: &Value, field: &str) -> Result<(), ResultError> {
        match v {
            Value::Object(_) => Ok(()),
            other => Err(invalid(field, &other.to_string(), "not a JSON object")),
        }
    }
    fn check_list(obj: &Map<String, Value>, key: &str, prefix: &str) -> Result<(), ResultError> {
        if let Some(Value::Array(items)) = obj.get(key) {
            for (i, item) in items.iter().enumerate() {
                check(item, &format!("{prefix}{key}[{i}]"))?;
            }
        }
        Ok(())
    }
    for key in ["interfaces", "ips", "routes"] {
        check_list(obj, key, "")?;
    }
    for key in ["dns", "ip4", "ip6"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(inner)) if key != "dns" => {
                check_list(inner, "routes", &format!("{key}."))?;
            }
            Some(v) => check(v, key)?,
        }
    }
    Ok(())
}

/// libcni `types040` keeps only name/mac/sandbox of an interface.
fn from_04(r: Result04) -> CniResult {
    CniResult {
        cni_version: String::new(),
        interfaces: r
            .interfaces
            .into_iter()
            .map(|i| Interface {
                name: i.name,
                mac: i.mac,
                sandbox: i.sandbox,
                ..Interface::default()
            })
            .collect(),
        ips: r
            .ips
            .into_iter()
            .map(|ip| IpConfig {
                address: ip.address,
                gateway: ip.gateway,
                interface: ip.interface,
            })
            .collect(),
        routes: r.routes,
        dns: r.dns,
    }
}

/// libcni `convertFrom02x`: ip4 then ip6, each without an interface, and
/// their routes appended in the same order.
fn from_02(r: Result02) -> Result<CniResult, ResultError> {
    let mut out = CniResult {
        dns: r.dns,
        ..CniResult::default()
    };
    for (label, cfg) in [("ip4", r.ip4), ("ip6", r.ip6)] {
        let Some(cfg) = cfg else { continue };
        // Validate here so errors name the 0.2.0 field, not the converted one.
        out.ips.push(IpConfig {
            address: canonical_cidr(&cfg.ip, &format!("{label}.ip"))?,
            gateway: canonical_ip(cfg.gateway, &format!("{label}.gateway"))?,
            interface: None,
        });
        for (i, mut route) in cfg.routes.into_iter().enumerate() {
            normalize_route(&mut route, &format!("{label}.routes[{i}]"))?;
            out.routes.push(route);
        }
    }
    Ok(out)
}

impl CniResult {
    /// Validates every address and canonicalises it (and Go's "empty means
    /// absent" fields), so equal results compare equal.
    fn normalized(&self) -> Result<CniResult, ResultError> {
        let mut r = self.clone();
        for iface in &mut r.interfaces {
            empty_to_none(&mut iface.mac);
            empty_to_none(&mut iface.sandbox);
            empty_to_none(&mut iface.socket_path);
            empty_to_none(&mut iface.pci_id);
            zero_to_none(&mut iface.mtu);
        }
        for (i, ip) in r.ips.iter_mut().enumerate() {
            ip.address = canonical_cidr(&ip.address, &format!("ips[{i}].address"))?;
            ip.gateway = canonical_ip(ip.gateway.take(), &format!("ips[{i}].gateway"))?;
        }
        for (i, route) in r.routes.iter_mut().enumerate() {
            normalize_route(route, &format!("routes[{i}]"))?;
        }
        empty_to_none(&mut r.dns.domain);
        Ok(r)
    }

    /// The JSON this result has in `version` (for prevResult and for the cache), as libcni's
    /// GetAsVersion.
    pub fn to_version_json(&self, version: &str) -> Result<Value, ResultError> {
        // libcni: a result without a version is taken to be of the newest
        // shape, and converting "to" "" means to 0.1.0.
        let from = if self.cni_version.is_empty() {
            "1.1.0"
        } else {
            self.cni_version.as_str()
        };
        let to = if version.is_empty() { "0.1.0" } else { version };
        let (Some(from_shape), Some(to_shape)) = (shape_of(from), shape_of(to)) else {
            return Err(ResultError::NoConverter {
                from: from.to_string(),
                to: to.to_string(),
            });
        };
        let mut r = self.normalized()?;
        // What the source shape could not carry is dropped, as libcni's
        // up-converters never see it.
        if from_shape != Shape::V1 {
            for iface in &mut r.interfaces {
                iface.mtu = None;
                iface.socket_path = None;
                iface.pci_id = None;
            }
        }
        if from_shape == Shape::V02 {
            r.interfaces.clear();
            for ip in &mut r.ips {
                ip.interface = None;
            }
        }
        r.cni_version = to.to_string();
        let value = match to_shape {
            Shape::V1 => serde_json::to_value(&r)?,
            Shape::V04 => r.encode_04()?,
            Shape::V02 => r.encode_02(from, from_shape == Shape::V02)?,
        };
        Ok(value)
    }

    fn encode_04(&self) -> Result<Value, ResultError> {
        let mut ips = Vec::with_capacity(self.ips.len());
        for (i, ip) in self.ips.iter().enumerate() {
            let v4 = is_v4_cidr(&ip.address, &format!("ips[{i}].address"))?;
            ips.push(IpConfig04Out {
                version: if v4 { "4" } else { "6" },
                interface: ip.interface,
                address: &ip.address,
                gateway: ip.gateway.clone(),
            });
        }
        let out = Result04Out {
            cni_version: &self.cni_version,
            interfaces: self
                .interfaces
                .iter()
                .map(|i| Interface04 {
                    name: i.name.clone(),
                    mac: i.mac.clone(),
                    sandbox: i.sandbox.clone(),
                })
                .collect(),
            ips,
            routes: &self.routes,
            dns: &self.dns,
        };
        Ok(serde_json::to_value(out)?)
    }

    /// libcni `convertTo02x`: the first IPv4 and first IPv6 address, each
    /// with the routes of its family (dst/gw only). Between 0.1.0 and 0.2.0
    /// nothing is lost, and a result with no address is allowed.
    fn encode_02(&self, from: &str, from_02: bool) -> Result<Value, ResultError> {
        let mut ip4: Option<IpConfig02> = None;
        let mut ip6: Option<IpConfig02> = None;
        for (i, ip) in self.ips.iter().enumerate() {
            let slot = if is_v4_cidr(&ip.address, &format!("ips[{i}].address"))? {
                &mut ip4
            } else {
                &mut ip6
            };
            if slot.is_none() {
                *slot = Some(IpConfig02 {
                    ip: ip.address.clone(),
                    gateway: ip.gateway.clone(),
                    routes: Vec::new(),
                });
            }
            if ip4.is_some() && ip6.is_some() {
                break;
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            let slot = if is_v4_cidr(&route.dst, &format!("routes[{i}].dst"))? {
                ip4.as_mut()
            } else {
                ip6.as_mut()
            };
            let Some(slot) = slot else { continue };
            slot.routes.push(if from_02 {
                route.clone()
            } else {
                Route {
                    dst: route.dst.clone(),
                    gw: route.gw.clone(),
                    ..Route::default()
                }
            });
        }
        if ip4.is_none() && ip6.is_none() && !from_02 {
            return Err(ResultError::NoValidIps {
                from: from.to_string(),
                to: self.cni_version.clone(),
            });
        }
        let out = Result02Out {
            cni_version: &self.cni_version,
            ip4,
            ip6,
            dns: &self.dns,
        };
        Ok(serde_json::to_value(out)?)
    }

    /// IP addresses (without prefix) in result order, IPv4 first then IPv6 (stable within a
    /// family), only those on an interface whose `sandbox` is set, or with no interface index
    /// (0.2.0 style).
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for ip in &self.ips {
            let in_sandbox = match ip.interface {
                None => true,
                Some(idx) => self
                    .interfaces
                    .get(idx)
                    .is_some_and(|iface| !none_or_empty(&iface.sandbox)),
            };
            if !in_sandbox {
                continue;
            }
            match parse_cidr(&ip.address) {
                Some((addr @ IpAddr::V4(_), _)) => v4.push(addr),
                Some((addr @ IpAddr::V6(_), _)) => v6.push(addr),
                None => {}
            }
        }
        v4.extend(v6);
        v4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // ---- vectors ----

    /// SPEC.md (1.1.0) appendix: what host-local returns (no cniVersion).
    const SPEC_HOST_LOCAL: &str = r#"{
        "ips": [ { "address": "10.1.0.5/16", "gateway": "10.1.0.1" } ],
        "routes": [ { "dst": "0.0.0.0/0" } ],
        "dns": { "nameservers": [ "10.1.0.1" ] }
    }"#;

    /// SPEC.md (1.1.0) appendix: what bridge returns.
    const SPEC_BRIDGE: &str = r#"{
        "ips": [ { "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2 } ],
        "routes": [ { "dst": "0.0.0.0/0" } ],
        "interfaces": [
            { "name": "cni0", "mac": "00:11:22:33:44:55" },
            { "name": "veth3243", "mac": "55:44:33:22:11:11" },
            { "name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue" }
        ],
        "dns": { "nameservers": [ "10.1.0.1" ] }
    }"#;

    /// spec-v0.4.0 SPEC.md, the tuning prevResult (its trailing commas removed).
    const SPEC_040_PREV: &str = r#"{
        "cniVersion": "0.4.0",
        "ips": [ { "version": "4", "address": "10.0.0.5/32", "interface": 2 } ],
        "interfaces": [
            { "name": "cni0", "mac": "00:11:22:33:44:55" },
            { "name": "veth3243", "mac": "55:44:33:22:11:11" },
            { "name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue" }
        ],
        "dns": { "nameservers": [ "10.1.0.1" ] }
    }"#;

    /// The routes and DNS that libcni's 0.3.x, 0.4.0 and 1.x encoding tests share.
    macro_rules! libcni_routes_and_dns {
        () => {
            r#"
        "routes": [
            { "dst": "15.5.6.0/24", "gw": "15.5.6.8" },
            { "dst": "1111:dddd::/80", "gw": "1111:dddd::aaaa" }
        ],
        "dns": { "nameservers": [ "1.2.3.4", "1::cafe" ], "domain": "acompany.com",
            "search": [ "somedomain.com", "otherdomain.net" ], "options": [ "foo", "bar" ] }
    }"#
        };
    }

    /// libcni pkg/types/100/types_test.go "correctly encodes a 1.1.0 Result".
    const LIBCNI_100: &str = concat!(
        r#"{
        "cniVersion": "1.1.0",
        "interfaces": [ { "name": "eth0", "mac": "00:11:22:33:44:55", "mtu": 1500,
            "sandbox": "/proc/3553/ns/net", "pciID": "8086:9a01",
                "socketPath": "/path/to/vhost/fd" } ],
        "ips": [
            { "interface": 0, "address": "1.2.3.30/24", "gateway": "1.2.3.1" },
            { "interface": 0, "address": "abcd:1234:ffff::cdde/64", "gateway": "abcd:1234:ffff::1" }
        ],
    "#,
        libcni_routes_and_dns!()
    );

    /// libcni 100 types_test "correctly encodes a 0.4.0 Result" (LIBCNI_100 as 0.4.0).
    const LIBCNI_100_AS_040: &str = concat!(
        r#"{
        "cniVersion": "0.4.0",
        "interfaces": [ { "name": "eth0", "mac": "00:11:22:33:44:55",
            "sandbox": "/proc/3553/ns/net" } ],
        "ips": [
            { "interface": 0, "version": "4", "address": "1.2.3.30/24", "gateway": "1.2.3.1" },
            { "interface": 0, "version": "6", "address": "abcd:1234:ffff::cdde/64",
                "gateway": "abcd:1234:ffff::1" }
        ],
    "#,
        libcni_routes_and_dns!()
    );

    /// libcni 040 types_test "correctly encodes a 0.3.x Result".
    const LIBCNI_040: &str = concat!(
        r#"{
        "cniVersion": "0.3.1",
        "interfaces": [ { "name": "eth0", "mac": "00:11:22:33:44:55",
            "sandbox": "/proc/3553/ns/net" } ],
        "ips": [
            { "version": "4", "interface": 0, "address": "1.2.3.30/24", "gateway": "1.2.3.1" },
            { "version": "6", "interface": 0, "address": "abcd:1234:ffff::cdde/64",
                "gateway": "abcd:1234:ffff::1" }
        ],
    "#,
        libcni_routes_and_dns!()
    );

    /// libcni 020 types_test testResult JSON; also what 040/100 tests expect for 0.1.0.
    const LIBCNI_020: &str = r#"{
        "cniVersion": "0.2.0",
        "ip4": { "ip": "1.2.3.30/24", "gateway": "1.2.3.1",
            "routes": [ { "dst": "15.5.6.0/24", "gw": "15.5.6.8" } ] },
        "ip6": { "ip": "abcd:1234:ffff::cdde/64", "gateway": "abcd:1234:ffff::1",
            "routes": [ { "dst": "1111:dddd::/80", "gw": "1111:dddd::aaaa" } ] },
        "dns": { "nameservers": [ "1.2.3.4", "1::cafe" ], "domain": "acompany.com",
            "search": [ "somedomain.com", "otherdomain.net" ], "options": [ "foo", "bar" ] }
    }"#;

    fn jv(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn with_version(mut v: Value, version: &str) -> Value {
        v["cniVersion"] = json!(version);
        v
    }

    fn parse(expected: &str, s: &str) -> CniResult {
        parse_result(expected, s.as_bytes()).unwrap()
    }

    /// The libcni test result as libcni encodes it in `to`, having been
    /// created in a version of shape `origin` (which bounds what survives).
    fn libcni_expected(origin: Shape, to: &str) -> Value {
        let dns = json!({ "nameservers": [ "1.2.3.4", "1::cafe" ], "domain": "acompany.com",
            "search": [ "somedomain.com", "otherdomain.net" ], "options": [ "foo", "bar" ] });
        let routes = json!([
            { "dst": "15.5.6.0/24", "gw": "15.5.6.8" },
            { "dst": "1111:dddd::/80", "gw": "1111:dddd::aaaa" }
        ]);
        let to_shape = shape_of(to).unwrap();
        if to_shape == Shape::V02 {
            return with_version(jv(LIBCNI_020), to);
        }
        let mut ips = json!([
            { "version": "4", "interface": 0, "address": "1.2.3.30/24", "gateway": "1.2.3.1" },
            { "version": "6", "interface": 0, "address": "abcd:1234:ffff::cdde/64",
                "gateway": "abcd:1234:ffff::1" }
        ]);
        let mut iface =
            json!({ "name": "eth0", "mac": "00:11:22:33:44:55", "sandbox": "/proc/3553/ns/net" });
        if origin == Shape::V1 && to_shape == Shape::V1 {
            iface["mtu"] = json!(1500);
            iface["pciID"] = json!("8086:9a01");
            iface["socketPath"] = json!("/path/to/vhost/fd");
        }
        for ip in ips.as_array_mut().unwrap() {
            let ip = ip.as_object_mut().unwrap();
            if to_shape == Shape::V1 {
                ip.remove("version");
            }
            if origin == Shape::V02 {
                ip.remove("interface");
            }
        }
        let mut out = json!({ "cniVersion": to, "ips": ips, "routes": routes, "dns": dns });
        if origin != Shape::V02 {
            out["interfaces"] = json!([iface]);
        }
        out
    }

    // ---- parsing the vectors ----

    #[test]
    fn libcni_vectors_pin_the_expected_generator() {
        assert_eq!(libcni_expected(Shape::V1, "1.1.0"), jv(LIBCNI_100));
        assert_eq!(libcni_expected(Shape::V1, "0.4.0"), jv(LIBCNI_100_AS_040));
        assert_eq!(libcni_expected(Shape::V04, "0.3.1"), jv(LIBCNI_040));
        assert_eq!(libcni_expected(Shape::V02, "0.2.0"), jv(LIBCNI_020));
    }

    #[test]
    fn parses_libcni_1_1_0_result_into_fields() {
        let r = parse("1.1.0", LIBCNI_100);
        assert_eq!(r.cni_version, "1.1.0");
        assert_eq!(
            r.interfaces,
            vec![Interface {
                name: "eth0".into(),
                mac: Some("00:11:22:33:44:55".into()),
                mtu: Some(1500),
                sandbox: Some("/proc/3553/ns/net".into()),
                socket_path: Some("/path/to/vhost/fd".into()),
                pci_id: Some("8086:9a01".into()),
            }]
        );
        assert_eq!(
            r.ips[1],
            IpConfig {
                address: "abcd:1234:ffff::cdde/64".into(),
                gateway: Some("abcd:1234:ffff::1".into()),
                interface: Some(0),
            }
        );
        assert_eq!(r.routes[0].gw.as_deref(), Some("15.5.6.8"));
        assert_eq!(r.dns.domain.as_deref(), Some("acompany.com"));
        // The derived serde shape is the 1.x wire shape.
        assert_eq!(serde_json::to_value(&r).unwrap(), jv(LIBCNI_100));
        let back: CniResult = serde_json::from_str(LIBCNI_100).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn every_version_converts_to_every_version() {
        for from in SUPPORTED_VERSIONS {
            let origin = shape_of(from).unwrap();
            let input = libcni_expected(origin, from).to_string();
            let r = parse(from, &input);
            assert_eq!(r.cni_version, *from);
            for to in SUPPORTED_VERSIONS {
                let got = r.to_version_json(to).unwrap();
                assert_eq!(got, libcni_expected(origin, to), "{from} -> {to}");
                // And the converted JSON parses back to what conversion would give.
                let again = parse(to, &got.to_string());
                assert_eq!(
                    again.to_version_json(to).unwrap(),
                    got,
                    "{from} -> {to} reparsed"
                );
            }
        }
    }

    #[test]
    fn same_version_round_trip_is_identity() {
        for v in SUPPORTED_VERSIONS {
            let r = parse(v, &libcni_expected(shape_of(v).unwrap(), v).to_string());
            let json = r.to_version_json(v).unwrap();
            assert_eq!(parse(v, &json.to_string()), r, "{v}");
        }
    }

    #[test]
    fn one_one_to_one_zero_and_back_is_identical() {
        let r = parse("1.1.0", LIBCNI_100);
        let v100 = r.to_version_json("1.0.0").unwrap();
        assert_eq!(v100, with_version(jv(LIBCNI_100), "1.0.0"));
        let back = parse("1.0.0", &v100.to_string());
        assert_eq!(back.to_version_json("1.1.0").unwrap(), jv(LIBCNI_100));
    }

    #[test]
    fn zero_two_through_zero_four_and_back_round_trips() {
        // libcni 040 tests: with and without route gateways.
        let no_gw = LIBCNI_020
            .replace(r#", "gw": "15.5.6.8""#, "")
            .replace(r#", "gw": "1111:dddd::aaaa""#, "");
        for src in [LIBCNI_020.to_string(), no_gw] {
            let r = parse("0.2.0", &src);
            let v040 = r.to_version_json("0.4.0").unwrap();
            let back = parse("0.4.0", &v040.to_string())
                .to_version_json("0.2.0")
                .unwrap();
            assert_eq!(back, jv(&src));
        }
    }

    #[test]
    fn spec_bridge_result_in_old_versions() {
        let r = parse("1.1.0", SPEC_BRIDGE);
        assert_eq!(r.cni_version, "1.1.0");
        assert_eq!(
            r.to_version_json("1.1.0").unwrap(),
            with_version(jv(SPEC_BRIDGE), "1.1.0")
        );
        assert_eq!(
            r.to_version_json("0.4.0").unwrap(),
            json!({
                "cniVersion": "0.4.0",
                "interfaces": [
                    { "name": "cni0", "mac": "00:11:22:33:44:55" },
                    { "name": "veth3243", "mac": "55:44:33:22:11:11" },
                    { "name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue" }
                ],
                "ips": [ { "version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1",
                    "interface": 2 } ],
                "routes": [ { "dst": "0.0.0.0/0" } ],
                "dns": { "nameservers": [ "10.1.0.1" ] }
            })
        );
        assert_eq!(
            r.to_version_json("0.2.0").unwrap(),
            json!({
                "cniVersion": "0.2.0",
                "ip4": { "ip": "10.1.0.5/16", "gateway": "10.1.0.1",
                    "routes": [ { "dst": "0.0.0.0/0" } ] },
                "dns": { "nameservers": [ "10.1.0.1" ] }
            })
        );
    }

    #[test]
    fn spec_host_local_result_has_no_interfaces() {
        let r = parse("1.0.0", SPEC_HOST_LOCAL);
        assert_eq!(r.cni_version, "1.0.0");
        assert!(r.interfaces.is_empty());
        assert_eq!(r.ips[0].interface, None);
        assert_eq!(
            r.to_version_json("0.3.0").unwrap(),
            json!({
                "cniVersion": "0.3.0",
                "ips": [ { "version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1" } ],
                "routes": [ { "dst": "0.0.0.0/0" } ],
                "dns": { "nameservers": [ "10.1.0.1" ] }
            })
        );
        assert_eq!(r.pod_ips(), vec!["10.1.0.5".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn spec_0_4_0_prev_result_up_and_down() {
        let r = parse("0.4.0", SPEC_040_PREV);
        let expected_1x = json!({
            "cniVersion": "1.0.0",
            "ips": [ { "address": "10.0.0.5/32", "interface": 2 } ],
            "interfaces": [
                { "name": "cni0", "mac": "00:11:22:33:44:55" },
                { "name": "veth3243", "mac": "55:44:33:22:11:11" },
                { "name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue" }
            ],
            "dns": { "nameservers": [ "10.1.0.1" ] }
        });
        assert_eq!(r.to_version_json("1.0.0").unwrap(), expected_1x);
        assert_eq!(r.to_version_json("0.4.0").unwrap(), jv(SPEC_040_PREV));
        assert_eq!(
            r.to_version_json("0.1.0").unwrap(),
            json!({ "cniVersion": "0.1.0", "ip4": { "ip": "10.0.0.5/32" },
                "dns": { "nameservers": [ "10.1.0.1" ] } })
        );
        assert_eq!(r.pod_ips(), vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn down_to_0_2_0_keeps_first_of_each_family_and_route_dst_gw_only() {
        let r = parse(
            "1.1.0",
            r#"{"cniVersion": "1.1.0",
                "interfaces": [{"name": "eth0", "sandbox": "/ns"}],
                "ips": [
                    {"address": "fd00::2/64", "interface": 0},
                    {"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0},
                    {"address": "10.0.1.2/24", "interface": 0},
                    {"address": "fd00::3/64", "interface": 0}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1400, "advmss": 1360,
                        "priority": 5, "table": 100, "scope": 0},
                    {"dst": "::/0"}
                ]}"#,
        );
        assert_eq!(
            r.to_version_json("0.2.0").unwrap(),
            json!({
                "cniVersion": "0.2.0",
                "ip4": { "ip": "10.0.0.2/24", "gateway": "10.0.0.1",
                    "routes": [ { "dst": "0.0.0.0/0", "gw": "10.0.0.1" } ] },
                "ip6": { "ip": "fd00::2/64", "routes": [ { "dst": "::/0" } ] },
                "dns": {}
            })
        );
        // 0.4.0 keeps every route field (libcni copies types.Route whole).
        let v040 = r.to_version_json("0.4.0").unwrap();
        assert_eq!(
            v040["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1400, "advmss": 1360,
                "priority": 5, "table": 100, "scope": 0})
        );
        assert_eq!(v040["dns"], json!({}));
        assert_eq!(
            v040["ips"][0],
            json!({"version": "6", "address": "fd00::2/64", "interface": 0})
        );
        assert!(r.to_version_json("1.0.0").unwrap().get("dns").is_none());
    }

    #[test]
    fn zero_two_routes_keep_extra_fields_between_0_1_and_0_2() {
        let src = r#"{"cniVersion": "0.1.0", "ip4": {"ip": "10.0.0.2/24",
            "routes": [{"dst": "10.9.0.0/16", "gw": "10.0.0.9", "mtu": 1400}]}}"#;
        let r = parse("", src);
        assert_eq!(
            r.to_version_json("0.2.0").unwrap(),
            json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24",
                "routes": [{"dst": "10.9.0.0/16", "gw": "10.0.0.9", "mtu": 1400}]}, "dns": {}})
        );
    }

    #[test]
    fn no_ips_cannot_go_down_to_0_2_0_but_0_x_without_ips_stays() {
        let r = parse("1.0.0", r#"{"dns": {"nameservers": ["1.1.1.1"]}}"#);
        for to in ["0.1.0", "0.2.0"] {
            let err = r.to_version_json(to).unwrap_err();
            assert!(matches!(err, ResultError::NoValidIps { .. }));
            assert!(
                err.to_string().contains("no valid IP addresses") && err.to_string().contains(to),
                "{err}"
            );
        }
        let r = parse("0.2.0", "{}");
        assert_eq!(
            r.to_version_json("0.1.0").unwrap(),
            json!({"cniVersion": "0.1.0", "dns": {}})
        );
        assert_eq!(
            r.to_version_json("1.1.0").unwrap(),
            json!({"cniVersion": "1.1.0"})
        );
        assert_eq!(
            r.to_version_json("0.4.0").unwrap(),
            json!({"cniVersion": "0.4.0", "dns": {}})
        );
    }

    // ---- version selection ----

    #[test]
    fn result_version_wins_over_expected() {
        let r = parse("0.4.0", &with_version(jv(LIBCNI_100), "1.0.0").to_string());
        assert_eq!(r.cni_version, "1.0.0");
        assert_eq!(r.interfaces[0].mtu, Some(1500));
        // Absent, empty, or not a string: the expected version is used.
        assert_eq!(parse("0.3.1", SPEC_BRIDGE).cni_version, "0.3.1");
        assert_eq!(parse("1.0.0", r#"{"cniVersion": ""}"#).cni_version, "1.0.0");
        assert_eq!(parse("1.0.0", r#"{"cniVersion": 1}"#).cni_version, "1.0.0");
        // And with nothing at all, 0.1.0 (the 0.2.0 shape).
        let r = parse(
            "",
            LIBCNI_020.replace(r#""cniVersion": "0.2.0","#, "").as_str(),
        );
        assert_eq!(r.cni_version, "0.1.0");
        assert_eq!(r.ips.len(), 2);
    }

    #[test]
    fn old_shape_ignores_newer_fields() {
        // A 0.4.0 result carrying 1.x interface fields: libcni's types040 drops them.
        let r = parse("0.4.0", &with_version(jv(LIBCNI_100), "0.4.0").to_string());
        assert_eq!(r.interfaces[0].mtu, None);
        assert_eq!(r.interfaces[0].pci_id, None);
        // A 0.2.0-shaped body read as 1.x has no ips.
        let r = parse("1.0.0", &with_version(jv(LIBCNI_020), "1.0.0").to_string());
        assert!(r.ips.is_empty());
    }

    #[test]
    fn null_output_is_an_empty_result() {
        let r = parse("1.1.0", "null");
        assert_eq!(
            r,
            CniResult {
                cni_version: "1.1.0".into(),
                ..CniResult::default()
            }
        );
        let r = parse(
            "1.1.0",
            r#"{"interfaces": null, "ips": null, "routes": null, "dns": null}"#,
        );
        assert!(r.ips.is_empty() && r.dns.is_empty());
    }

    #[test]
    fn go_empty_values_mean_absent() {
        let r = parse(
            "1.1.0",
            r#"{"interfaces": [{"name": "eth0", "mac": "", "mtu": 0, "sandbox": ""}],
                "ips": [{"address": "10.0.0.2/24", "gateway": "", "interface": 0}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "", "mtu": 0, "table": 0}],
                "dns": {"domain": ""}}"#,
        );
        assert_eq!(
            r.interfaces[0],
            Interface {
                name: "eth0".into(),
                ..Interface::default()
            }
        );
        assert_eq!(r.ips[0].gateway, None);
        assert_eq!(r.routes[0].mtu, None);
        assert_eq!(r.routes[0].table, Some(0));
        assert!(r.dns.is_empty());
        assert_eq!(
            r.to_version_json("1.1.0").unwrap(),
            json!({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0"}],
                "ips": [{"address": "10.0.0.2/24", "interface": 0}],
                "routes": [{"dst": "0.0.0.0/0", "table": 0}]})
        );
    }

    #[test]
    fn addresses_are_canonicalised_host_bits_kept() {
        let r = parse(
            "1.0.0",
            r#"{"ips": [{"address": "2001:DB8:0:0::1/64", "gateway": "2001:db8::0:fe"}],
            "routes": [{"dst": "15.5.6.8/24"}]}"#,
        );
        assert_eq!(r.ips[0].address, "2001:db8::1/64");
        assert_eq!(r.ips[0].gateway.as_deref(), Some("2001:db8::fe"));
        assert_eq!(r.routes[0].dst, "15.5.6.8/24");
    }

    // ---- pod_ips ----

    #[test]
    fn pod_ips_sandbox_only_v4_first_stable() {
        let r = parse(
            "1.1.0",
            r#"{"interfaces": [
                    {"name": "cni0"},
                    {"name": "eth0", "sandbox": "/var/run/netns/a"},
                    {"name": "net1", "sandbox": "/var/run/netns/a"}
                ],
                "ips": [
                    {"address": "fd00::5/64", "interface": 1},
                    {"address": "10.1.0.1/16", "interface": 0},
                    {"address": "10.1.0.5/16", "interface": 1},
                    {"address": "fd00::6/64"},
                    {"address": "10.2.0.5/16"},
                    {"address": "10.3.0.5/16", "interface": 7},
                    {"address": "192.168.0.5/24", "interface": 2}
                ]}"#,
        );
        let want: Vec<IpAddr> = ["10.1.0.5", "10.2.0.5", "192.168.0.5", "fd00::5", "fd00::6"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(r.pod_ips(), want);
        assert!(parse("1.1.0", "{}").pod_ips().is_empty());
        // 0.2.0 results have no interfaces: every address is the pod's.
        let r = parse("0.2.0", LIBCNI_020);
        assert_eq!(
            r.pod_ips(),
            [
                "1.2.3.30".parse::<IpAddr>().unwrap(),
                "abcd:1234:ffff::cdde".parse().unwrap()
            ]
        );
    }

    // ---- refusals ----

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        #[rustfmt::skip]
        let cases: &[(&str, &[u8])] = &[
            ("1.1.0", b""),
            ("1.1.0", b"   "),
            ("1.1.0", b"garbage"),
            ("1.1.0", b"{"),
            ("1.1.0", b"{} trailing"),
            ("1.1.0", b"[]"),
            ("1.1.0", b"\"str\""),
            ("1.1.0", b"42"),
            ("1.1.0", b"true"),
            ("1.1.0", br#"{"ips": "x"}"#),
            ("1.1.0", br#"{"ips": [5]}"#),
            ("1.1.0", br#"{"ips": [{"address": 5}]}"#),
            ("1.1.0", br#"{"ips": [{}]}"#),
            ("1.1.0", br#"{"ips": [{"address": "10.0.0.1/24", "interface": -1}]}"#),
            ("1.1.0", br#"{"ips": [{"address": "10.0.0.1/24", "interface": "0"}]}"#),
            ("1.1.0", br#"{"interfaces": [{"name": 3}]}"#),
            ("1.1.0", br#"{"interfaces": [{"name": "x", "mtu": -1}]}"#),
            ("1.1.0", br#"{"interfaces": [{"name": "x", "mtu": 1500.5}]}"#),
            ("1.1.0", br#"{"interfaces": {"name": "x"}}"#),
            ("1.1.0", br#"{"routes": [{"gw": "1.1.1.1"}]}"#),
            ("1.1.0", br#"{"routes": [{"dst": "0.0.0.0/0", "table": 4294967296}]}"#),
            ("1.1.0", br#"{"dns": {"nameservers": "1.1.1.1"}}"#),
            ("1.1.0", br#"{"dns": []}"#),
            ("1.1.0", br#"{"ips": [["10.0.0.1/24"]]}"#),
            ("1.1.0", br#"{"routes": [null]}"#),
            ("1.1.0", br#"{"interfaces": [["eth0"]]}"#),
            ("1.1.0", &[0xff, 0xfe]),
            ("0.4.0", br#"{"ips": [{"version": 4, "address": "10.0.0.1/24"}]}"#),
            ("0.2.0", br#"{"ip4": {"gateway": "10.0.0.1"}}"#),
            ("0.2.0", br#"{"ip4": []}"#),
            ("0.2.0", br#"{"ip4": {"ip": "10.0.0.1/8", "routes": [["0.0.0.0/0"]]}}"#),
        ];
        for (version, body) in cases {
            let accepted = parse_result(version, body).is_ok();
            assert!(
                !accepted,
                "{version} accepted: {}",
                String::from_utf8_lossy(body)
            );
        }
        let err = parse_result("1.1.0", br#"{"dns": []}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dns") && err.contains("not a JSON object"),
            "{err}"
        );
    }

    #[test]
    fn bad_addresses_name_the_field_and_value() {
        #[rustfmt::skip]
        let cases = [
            ("1.1.0", r#"{"ips": [{"address": "10.0.0.1"}]}"#, "ips[0].address", "10.0.0.1"),
            ("1.1.0", r#"{"ips": [{"address": "10.0.0.1/33"}]}"#, "ips[0].address", "10.0.0.1/33"),
            ("1.1.0", r#"{"ips": [{"address": "::1/129"}]}"#, "ips[0].address", "::1/129"),
            ("1.1.0", r#"{"ips": [{"address": "10.0.0.1/+8"}]}"#, "ips[0].address", "10.0.0.1/+8"),
            ("1.1.0", r#"{"ips": [{"address": "10.0.0.1/8", "gateway": "nope"}]}"#,
                "ips[0].gateway", "nope"),
            ("0.4.0", r#"{"routes": [{"dst": "0.0.0.0/0", "gw": "1.2.3"}]}"#,
                "routes[0].gw", "1.2.3"),
            ("0.3.1", r#"{"routes": [{"dst": "x/0"}]}"#, "routes[0].dst", "x/0"),
            ("0.2.0", r#"{"ip6": {"ip": "fe80::1%eth0/64"}}"#, "ip6.ip", "fe80::1%eth0/64"),
            ("0.2.0", r#"{"ip4": {"ip": "10.0.0.1/8", "routes": [{"dst": "bad"}]}}"#,
                "ip4.routes[0].dst", "bad"),
        ];
        for (version, body, field, value) in cases {
            let err = parse_result(version, body.as_bytes()).unwrap_err();
            assert!(
                matches!(err, ResultError::InvalidField { .. }),
                "{body}: {err}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(field) && msg.contains(&format!("\"{value}\"")),
                "{msg}"
            );
        }
    }

    #[test]
    fn unknown_versions_are_refused_naming_the_version() {
        for (expected, body, bad) in [
            ("1.1.0", r#"{"cniVersion": "2.0.0"}"#, "2.0.0"),
            ("1.1.0", r#"{"cniVersion": "1.0"}"#, "1.0"),
            ("9.9", "{}", "9.9"),
            ("0.5.0", "null", "0.5.0"),
        ] {
            let err = parse_result(expected, body.as_bytes()).unwrap_err();
            assert!(matches!(err, ResultError::UnsupportedVersion { .. }));
            assert!(err.to_string().contains(&format!("\"{bad}\"")), "{err}");
        }
        let r = parse("1.1.0", LIBCNI_100);
        for bad in ["0.5.0", "2.0.0", "1.0", "latest"] {
            let err = r.to_version_json(bad).unwrap_err();
            assert!(matches!(err, ResultError::NoConverter { .. }));
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("\"{bad}\"")) && msg.contains("1.1.0"),
                "{msg}"
            );
        }
        let mut odd = r.clone();
        odd.cni_version = "7.0.0".into();
        assert!(odd
            .to_version_json("1.1.0")
            .unwrap_err()
            .to_string()
            .contains("\"7.0.0\""));
    }

    #[test]
    fn constructed_results_are_validated_on_output() {
        // No version means the newest shape; "" as target means 0.1.0.
        let r = CniResult {
            ips: vec![IpConfig {
                address: "10.0.0.2/24".into(),
                ..IpConfig::default()
            }],
            ..CniResult::default()
        };
        assert_eq!(
            r.to_version_json("").unwrap(),
            json!({"cniVersion": "0.1.0", "ip4": {"ip": "10.0.0.2/24"}, "dns": {}})
        );
        let bad = CniResult {
            cni_version: "1.1.0".into(),
            ips: vec![IpConfig {
                address: "nope".into(),
                ..IpConfig::default()
            }],
            ..CniResult::default()
        };
        for to in SUPPORTED_VERSIONS {
            let err = bad.to_version_json(to).unwrap_err();
            assert!(err.to_string().contains("ips[0].address"), "{err}");
        }
        assert!(bad.pod_ips().is_empty());
    }
}
