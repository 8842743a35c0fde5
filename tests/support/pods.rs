//! What the tests send: pod configs shaped like crictl's and the kubelet's, port
//! mappings, and the CNI conflists and plugin entries the nodes load.

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1 as cri;
use serde_json::{json, Value};

use super::NamespaceMode;

/// The portmap plugin entry of the default conf.
pub fn portmap() -> Value {
    json!({ "type": "portmap", "capabilities": { "portMappings": true } })
}

/// A stand-in plugin entry (`fail-add`, `garbage`, `noop`).
pub fn stand_in(name: &str) -> Value {
    json!({ "type": name })
}

/// The uid the helpers give a pod called `name`.
pub fn uid_of(name: &str) -> String {
    format!("uid-{name}")
}

/// A PodSandboxConfig like crictl's `runp` JSON, with its log directory under `log_root`.
pub fn pod_config_in(log_root: &Path, name: &str) -> cri::PodSandboxConfig {
    let namespace = "default";
    let uid = uid_of(name);
    let labels: HashMap<String, String> = [
        ("app", name),
        ("io.kubernetes.pod.name", name),
        ("io.kubernetes.pod.namespace", namespace),
        ("io.kubernetes.pod.uid", uid.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations: HashMap<String, String> = [
        ("crisp.test/purpose", "integration test"),
        ("crisp.test/quote", "a \"quoted\" value, with: punctuation"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.clone(),
            namespace: namespace.to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_root
            .join(format!("{namespace}_{name}_{uid}"))
            .display()
            .to_string(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        }),
        port_mappings: vec![cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 80,
            host_port: 0,
            host_ip: String::new(),
        }],
        labels,
        annotations,
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            sysctls: HashMap::new(),
            ..Default::default()
        }),
        windows: None,
    }
}

/// Sets the network namespace mode of a config (creating the nested messages if needed).
pub fn set_network_mode(config: &mut cri::PodSandboxConfig, mode: NamespaceMode) {
    let linux = config.linux.get_or_insert_with(Default::default);
    let sc = linux.security_context.get_or_insert_with(Default::default);
    let ns = sc.namespace_options.get_or_insert_with(Default::default);
    ns.network = mode as i32;
}

/// A port mapping; `protocol` is a `cri::Protocol` or any raw number (hostile input).
pub fn port(
    protocol: impl Into<i32>,
    container_port: i32,
    host_port: i32,
    host_ip: &str,
) -> cri::PortMapping {
    cri::PortMapping {
        protocol: protocol.into(),
        container_port,
        host_port,
        host_ip: host_ip.to_string(),
    }
}

/// A conflist document: `version`, network `name`, `plugins` in order.
pub fn conflist(version: &str, name: &str, plugins: &[Value]) -> String {
    serde_json::to_string_pretty(&json!({
        "cniVersion": version, "name": name, "plugins": plugins,
    }))
    .expect("json")
}
