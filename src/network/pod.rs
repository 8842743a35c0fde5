//! The types that cross the seam between a sandbox and its network: what the network is
//! told of a pod ([`Pod`]), and what an attach leaves to be recorded ([`NetworkAttachment`]).
//! They are plain data: no I/O, no CNI and no sandbox lifecycle here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the network needs to know of a pod to attach, detach or check it.
#[derive(Debug, Clone, Copy)]
pub struct Pod<'a> {
    /// The sandbox id: the CNI container id.
    pub id: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub port_mappings: &'a [PortMapping],
    pub dns: &'a DnsConfig,
    pub cgroup_parent: &'a str,
    pub annotations: &'a BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: u16,
    /// 0 means "no host port": the mapping is declared but not published.
    pub host_port: u16,
    pub host_ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// The network a sandbox was attached to, and what the plugins answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub network_name: String,
    pub ifname: String,
    /// Pod IPs without prefix, IPv4 first, in CNI result order within a family.
    pub ips: Vec<String>,
    /// The final CNI result, in the network list's version.
    pub result: serde_json::Value,
    /// Which datapath set the network up: "exec" (the plugins) or "fast" (in process).
    /// Records written before this field existed were all exec.
    #[serde(rename = "path", default = "exec_path")]
    pub datapath: String,
}

fn exec_path() -> String {
    "exec".to_string()
}

impl NetworkAttachment {
    /// The intent recorded before setup: the network is named, nothing is known yet.
    pub fn pending(network_name: &str, ifname: &str) -> Self {
        NetworkAttachment {
            network_name: network_name.to_string(),
            ifname: ifname.to_string(),
            ips: Vec::new(),
            result: serde_json::Value::Null,
            datapath: String::new(),
        }
    }
}
