//! Proto → domain: checks RunPodSandbox's request and turns it into a [`SandboxSpec`],
//! refusing anything crisp cannot honour, and reads ListPodSandbox's filter. Field names in
//! errors are the proto's, and a client's values are quoted short ([`excerpt`]). It never
//! touches the system (no files, namespaces or sandbox state): whether the kernel knows a
//! sysctl is learnt when the sandbox sets it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use k8s_cri::v1 as cri;

use crate::error::{Error, Result};
use crate::sandbox::model::{DnsConfig, PodMetadata, PortMapping, Protocol};
use crate::sandbox::{ListFilter, SandboxSpec, SandboxState};

/// Longest name, namespace, uid or hostname accepted (a DNS subdomain's limit).
const MAX_NAME_LEN: usize = 253;
/// Labels plus annotations, as Kubernetes bounds annotations.
const MAX_LABELS_BYTES: usize = 256 * 1024;

/// Turns RunPodSandbox's request into a spec, refusing anything crisp cannot honour. The
/// checks run in this order, so a request with several faults is told of the first.
pub fn check_run_request(req: cri::RunPodSandboxRequest) -> Result<SandboxSpec> {
    runtime_handler(&req.runtime_handler)?;
    let config = req
        .config
        .ok_or_else(|| Error::invalid("config", "missing"))?;
    let metadata = pod_metadata(config.metadata.as_ref())?;
    hostname_field(&config.hostname)?;
    labels_size(&config)?;
    let host_network = host_network(config.linux.as_ref())?;
    let sysctls = sysctls(config.linux.as_ref().map(|l| &l.sysctls), host_network)?;
    let port_mappings = port_mappings(&config.port_mappings)?;
    let dns = dns_config(config.dns_config.as_ref())?;
    let annotations = sorted(&config.annotations);
    // Refused here, not at CNI ADD, so the client learns which annotation is wrong.
    crate::network::bandwidth(&annotations)
        .map_err(|why| Error::invalid("config.annotations", why))?;
    let raw_config = serde_json::to_value(&config)
        .map_err(|e| Error::invalid("config", format!("cannot be recorded: {e}")))?;
    Ok(SandboxSpec {
        metadata,
        hostname: config.hostname.clone(),
        host_network,
        port_mappings,
        dns,
        labels: sorted(&config.labels),
        annotations,
        cgroup_parent: config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default(),
        sysctls,
        runtime_handler: req.runtime_handler,
        raw_config,
    })
}

/// crisp has one runtime handler, the default "".
fn runtime_handler(handler: &str) -> Result<()> {
    if handler.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(
        "runtime_handler",
        format!(
            "unknown runtime handler {:?}: crisp has only the default handler \"\"",
            excerpt(handler)
        ),
    ))
}

/// The pod's name, namespace and uid, each checked by [`name_field`].
fn pod_metadata(meta: Option<&cri::PodSandboxMetadata>) -> Result<PodMetadata> {
    let meta = meta.ok_or_else(|| Error::invalid("config.metadata", "missing"))?;
    name_field("config.metadata.name", &meta.name)?;
    name_field("config.metadata.namespace", &meta.namespace)?;
    name_field("config.metadata.uid", &meta.uid)?;
    Ok(PodMetadata {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        attempt: meta.attempt,
    })
}

/// Labels and annotations together stay under [`MAX_LABELS_BYTES`].
fn labels_size(config: &cri::PodSandboxConfig) -> Result<()> {
    let labels_bytes: usize = config
        .labels
        .iter()
        .chain(config.annotations.iter())
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if labels_bytes > MAX_LABELS_BYTES {
        return Err(Error::invalid(
            "config.labels",
            format!(
                "labels and annotations take {labels_bytes} bytes, more than {MAX_LABELS_BYTES}"
            ),
        ));
    }
    Ok(())
}

/// Whether the pod shares the node's network namespace (NODE) or gets its own (POD, the
/// default); crisp supports no other mode.
fn host_network(linux: Option<&cri::LinuxPodSandboxConfig>) -> Result<bool> {
    let namespace_options = linux
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let host_network =
        namespace_options.is_some_and(|n| n.network == cri::NamespaceMode::Node as i32);
    if let Some(mode) = namespace_options.map(|n| n.network) {
        if mode != cri::NamespaceMode::Pod as i32 && mode != cri::NamespaceMode::Node as i32 {
            return Err(Error::invalid(
                "config.linux.security_context.namespace_options.network",
                format!("mode {mode} is not supported: only POD (0) and NODE (2)"),
            ));
        }
    }
    Ok(host_network)
}

/// Name, namespace and uid travel to CNI plugins inside `CNI_ARGS` (`K=V;K=V`) and make up
/// the reservation key, so they are printable ASCII without `/`, `\\`, `;` or `=` (a `;` would
/// smuggle extra CNI args in), and never "." or "..". Kubernetes' own names are far narrower.
fn name_field(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    name_length(field, value)?;
    if let Some(c) = value
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | '\\' | ';' | '='))
    {
        return Err(Error::invalid(
            field,
            format!(
                "{:?} contains the character {c:?} (allowed: printable ASCII except / \\ ; =)",
                excerpt(value)
            ),
        ));
    }
    if value == "." || value == ".." {
        return Err(Error::invalid(field, format!("{value:?} is not a name")));
    }
    Ok(())
}

/// Names and the hostname are at most [`MAX_NAME_LEN`] bytes.
fn name_length(field: &'static str, value: &str) -> Result<()> {
    if value.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!("{} bytes long, more than {MAX_NAME_LEN}", value.len()),
        ));
    }
    Ok(())
}

/// The hostname ends up in the pod's /etc/hostname: no blanks, control characters or `/`.
fn hostname_field(value: &str) -> Result<()> {
    let field = "config.hostname";
    name_length(field, value)?;
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || *c == '/')
    {
        return Err(Error::invalid(
            field,
            format!("{:?} contains the character {c:?}", excerpt(value)),
        ));
    }
    Ok(())
}

/// Longest sysctl key and value accepted.
const MAX_SYSCTL_KEY: usize = 256;
const MAX_SYSCTL_VALUE: usize = 4096;
const SYSCTLS_FIELD: &str = "config.linux.sysctls";

/// Only sysctls of the pod's network namespace (`net.*`), with keys that name a file below
/// `/proc/sys/net` and nothing else, and single-line values. Whether the namespace really has
/// the key is checked when it is set (after CNI ADD), where the kernel answers.
fn sysctls(
    sysctls: Option<&HashMap<String, String>>,
    host_network: bool,
) -> Result<BTreeMap<String, String>> {
    let Some(sysctls) = sysctls else {
        return Ok(BTreeMap::new());
    };
    for (key, value) in sysctls {
        sysctl_key(key)?;
        if host_network {
            return Err(Error::invalid(
                SYSCTLS_FIELD,
                format!(
                    "sysctl {:?} is refused for a host-network pod: it would change the \
                     node's own network namespace",
                    excerpt(key)
                ),
            ));
        }
        sysctl_value(key, value)?;
    }
    Ok(sorted(sysctls))
}

/// A key is `net` then components of letters, digits, `_` and `-`, separated by `.`, or by
/// `/` when a component holds a `.` (an interface name such as `eth0.100`).
fn sysctl_key(key: &str) -> Result<()> {
    let shown = excerpt(key);
    if key.len() > MAX_SYSCTL_KEY {
        return Err(Error::invalid(
            SYSCTLS_FIELD,
            format!("sysctl key {shown:?} is longer than {MAX_SYSCTL_KEY} bytes"),
        ));
    }
    let (separator, inner_dots) = if key.contains('/') {
        ('/', true)
    } else {
        ('.', false)
    };
    let mut parts = key.split(separator);
    if parts.next() != Some("net") {
        return Err(Error::invalid(
            SYSCTLS_FIELD,
            format!(
                "sysctl {shown:?} is not a network namespace sysctl (net.*): crisp owns only \
                 the pod's network namespace, so it cannot honour it"
            ),
        ));
    }
    let parts: Vec<&str> = parts.collect();
    let bad_part = |p: &&str| {
        p.is_empty()
            || *p == "."
            || *p == ".."
            || !p.chars().all(|c| {
                c.is_ascii_alphanumeric() || c == '_' || c == '-' || (inner_dots && c == '.')
            })
    };
    if parts.is_empty() || parts.iter().any(bad_part) {
        return Err(Error::invalid(
            SYSCTLS_FIELD,
            format!(
                "sysctl {shown:?} is not a valid key: components are letters, digits, '_' \
                 and '-', separated by '.' (or '/' when a component holds a '.')"
            ),
        ));
    }
    Ok(())
}

/// A value is one line: not empty, not too long, no control character but tab.
fn sysctl_value(key: &str, value: &str) -> Result<()> {
    if value.is_empty()
        || value.len() > MAX_SYSCTL_VALUE
        || value.chars().any(|c| c.is_control() && c != '\t')
    {
        return Err(Error::invalid(
            SYSCTLS_FIELD,
            format!(
                "sysctl {:?}: value {:?} is empty, longer than {MAX_SYSCTL_VALUE} bytes \
                 or holds a control character",
                excerpt(key),
                excerpt(value)
            ),
        ));
    }
    Ok(())
}

fn port_mappings(ports: &[cri::PortMapping]) -> Result<Vec<PortMapping>> {
    let field = "config.port_mappings";
    let mut published = HashSet::new();
    ports
        .iter()
        .map(|p| {
            let protocol = match cri::Protocol::try_from(p.protocol) {
                Ok(cri::Protocol::Tcp) => Protocol::Tcp,
                Ok(cri::Protocol::Udp) => Protocol::Udp,
                Ok(cri::Protocol::Sctp) => Protocol::Sctp,
                Err(_) => {
                    return Err(Error::invalid(
                        field,
                        format!("unknown protocol {}", p.protocol),
                    ))
                }
            };
            let container_port = u16::try_from(p.container_port)
                .ok()
                .filter(|&port| port != 0)
                .ok_or_else(|| {
                    Error::invalid(
                        field,
                        format!("container_port {} is not in 1-65535", p.container_port),
                    )
                })?;
            let host_port = u16::try_from(p.host_port).map_err(|_| {
                Error::invalid(
                    field,
                    format!("host_port {} is not in 0-65535", p.host_port),
                )
            })?;
            if !p.host_ip.is_empty() && p.host_ip.parse::<IpAddr>().is_err() {
                return Err(Error::invalid(
                    field,
                    format!("host_ip {:?} is not an IP address", excerpt(&p.host_ip)),
                ));
            }
            if host_port != 0 && !published.insert((protocol, host_port, p.host_ip.clone())) {
                return Err(Error::invalid(
                    field,
                    format!(
                        "host port {}/{} is mapped twice",
                        host_port,
                        protocol.as_str()
                    ),
                ));
            }
            Ok(PortMapping {
                protocol,
                container_port,
                host_port,
                host_ip: p.host_ip.clone(),
            })
        })
        .collect()
}

fn dns_config(dns: Option<&cri::DnsConfig>) -> Result<DnsConfig> {
    let Some(dns) = dns else {
        return Ok(DnsConfig::default());
    };
    for server in &dns.servers {
        if server.parse::<IpAddr>().is_err() {
            return Err(Error::invalid(
                "config.dns_config.servers",
                format!("{:?} is not an IP address", excerpt(server)),
            ));
        }
    }
    for (field, values) in [
        ("config.dns_config.searches", &dns.searches),
        ("config.dns_config.options", &dns.options),
    ] {
        // These end up as words in resolv.conf: no blanks, no control characters.
        if let Some(bad) = values.iter().find(|v| {
            v.is_empty()
                || v.len() > MAX_NAME_LEN
                || v.chars().any(|c| c.is_control() || c.is_whitespace())
        }) {
            return Err(Error::invalid(
                field,
                format!(
                    "{:?} is empty, too long, or contains a blank or control character",
                    excerpt(bad)
                ),
            ));
        }
    }
    for option in &dns.options {
        dns_option(option)?;
    }
    Ok(DnsConfig {
        servers: dns.servers.clone(),
        searches: dns.searches.clone(),
        options: dns.options.clone(),
    })
}

/// A resolv.conf option is `name` or `name:value`; the numeric ones (`ndots`, `timeout`,
/// `attempts`) need a number that the resolver will not silently read as 0.
fn dns_option(option: &str) -> Result<()> {
    let field = "config.dns_config.options";
    let (name, value) = match option.split_once(':') {
        Some((name, value)) => (name, Some(value)),
        None => (option, None),
    };
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    if !word(name) || value.is_some_and(|v| !word(v)) {
        return Err(Error::invalid(
            field,
            format!(
                "{:?} is not a resolv.conf option (name or name:value)",
                excerpt(option)
            ),
        ));
    }
    if matches!(name, "ndots" | "timeout" | "attempts")
        && value.and_then(|v| v.parse::<u16>().ok()).is_none()
    {
        return Err(Error::invalid(
            field,
            format!(
                "{:?}: {name} needs a number, as in {name}:5",
                excerpt(option)
            ),
        ));
    }
    Ok(())
}

fn sorted(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A client's value as error messages quote it: the first 64 characters, then `…`.
fn excerpt(s: &str) -> String {
    const SHOWN: usize = 64;
    if s.chars().count() > SHOWN {
        format!("{}…", s.chars().take(SHOWN).collect::<String>())
    } else {
        s.to_string()
    }
}

pub fn list_filter(filter: Option<cri::PodSandboxFilter>) -> ListFilter {
    let Some(f) = filter else {
        return ListFilter::default();
    };
    ListFilter {
        id: (!f.id.is_empty()).then_some(f.id),
        // The wrapper's presence is what filters; an unset enum reads as READY.
        state: f.state.map(|s| {
            if s.state == cri::PodSandboxState::SandboxReady as i32 {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            }
        }),
        labels: sorted(&f.label_selector),
    }
}

/// ListPodSandboxStats's filter. Only READY sandboxes have a namespace to read, as
/// containerd lists them.
pub fn stats_filter(filter: Option<cri::PodSandboxStatsFilter>) -> ListFilter {
    let filter = filter.unwrap_or_default();
    ListFilter {
        id: (!filter.id.is_empty()).then_some(filter.id),
        state: Some(SandboxState::Ready),
        labels: filter.label_selector.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> cri::RunPodSandboxRequest {
        cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: "web".into(),
                    uid: "u-1".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                hostname: "web".into(),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        }
    }

    fn field_of(err: Error) -> &'static str {
        match err {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("not InvalidArgument: {other}"),
        }
    }

    #[test]
    fn a_plain_request_converts() {
        let spec = check_run_request(request()).expect("valid");
        assert_eq!(spec.metadata.reservation_key(), "web_default_u-1_0");
        assert!(!spec.host_network);
        assert_eq!(spec.raw_config["metadata"]["name"], "web");
    }

    #[test]
    fn each_missing_metadata_field_is_named() {
        type Clear = fn(&mut cri::PodSandboxMetadata);
        let clears: [(&str, Clear); 3] = [
            ("config.metadata.name", |m| m.name.clear()),
            ("config.metadata.namespace", |m| m.namespace.clear()),
            ("config.metadata.uid", |m| m.uid.clear()),
        ];
        for (field, clear) in clears {
            let mut req = request();
            clear(
                req.config
                    .as_mut()
                    .and_then(|c| c.metadata.as_mut())
                    .expect("meta"),
            );
            assert_eq!(
                field_of(check_run_request(req).expect_err("refused")),
                field
            );
        }
    }

    #[test]
    fn bad_ports_are_refused() {
        let cases = [(0, 80, 0), (80, 70000, 0), (80, -1, 0), (80, 8080, 7)];
        for (container_port, host_port, protocol) in cases {
            let mut req = request();
            req.config.as_mut().expect("config").port_mappings = vec![cri::PortMapping {
                protocol,
                container_port,
                host_port,
                host_ip: String::new(),
            }];
            assert_eq!(
                field_of(check_run_request(req).expect_err("refused")),
                "config.port_mappings"
            );
        }
    }

    #[test]
    fn duplicate_host_ports_are_refused() {
        let mut req = request();
        let mapping = cri::PortMapping {
            protocol: 0,
            container_port: 80,
            host_port: 8080,
            host_ip: String::new(),
        };
        req.config.as_mut().expect("config").port_mappings = vec![mapping.clone(), mapping];
        assert_eq!(
            field_of(check_run_request(req).expect_err("refused")),
            "config.port_mappings"
        );
    }

    fn with_sysctl(key: &str, value: &str) -> cri::RunPodSandboxRequest {
        let mut req = request();
        let config = req.config.as_mut().expect("config");
        let linux = config.linux.get_or_insert_with(Default::default);
        linux.sysctls.insert(key.into(), value.into());
        req
    }

    #[test]
    fn net_sysctls_are_accepted_in_both_spellings() {
        for key in [
            "net.ipv4.ip_unprivileged_port_start",
            "net/ipv4/conf/eth0.100/forwarding",
        ] {
            let spec = check_run_request(with_sysctl(key, "0")).expect("accepted");
            assert_eq!(spec.sysctls.get(key).map(String::as_str), Some("0"));
        }
    }

    #[test]
    fn other_or_unsafe_sysctls_are_refused_naming_the_key() {
        for (key, value) in [
            ("kernel.shm_rmid_forced", "1"),
            ("vm.swappiness", "1"),
            ("net", "1"),
            ("net..ipv4", "1"),
            ("net/../../kernel/core_pattern", "|/x"),
            ("net.ipv4.ip_forward/../x", "1"),
            ("net.ipv4.ip_forward", "1\n2"),
            ("net.ipv4.ip_forward", ""),
        ] {
            let err = check_run_request(with_sysctl(key, value)).expect_err(key);
            let msg = err.to_string();
            assert_eq!(err.grpc_code(), tonic::Code::InvalidArgument, "{msg}");
            assert!(msg.contains("config.linux.sysctls"), "{msg}");
            assert!(msg.contains(&format!("{key:?}")), "{key}: {msg}");
        }
    }

    /// Asks for the node's network namespace (NamespaceMode NODE).
    fn on_node_network(req: &mut cri::RunPodSandboxRequest) {
        let config = req.config.as_mut().expect("config");
        let linux = config.linux.get_or_insert_with(Default::default);
        linux.security_context = Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    #[test]
    fn host_network_pods_get_no_net_sysctls() {
        let mut req = with_sysctl("net.ipv4.ip_forward", "1");
        on_node_network(&mut req);
        let err = check_run_request(req).expect_err("refused");
        assert!(err.to_string().contains("host-network"), "{err}");
    }

    #[test]
    fn host_network_is_detected() {
        let mut req = request();
        on_node_network(&mut req);
        assert!(check_run_request(req).expect("valid").host_network);
    }

    #[test]
    fn unknown_runtime_handler_is_refused() {
        let mut req = request();
        req.runtime_handler = "kata".into();
        assert_eq!(
            field_of(check_run_request(req).expect_err("refused")),
            "runtime_handler"
        );
    }
}
