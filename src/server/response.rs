//! Domain → proto: renders sandboxes, their status, stats and metrics, lifecycle events and
//! crisp's Status and RuntimeConfig answers as CRI messages. It renders what it is given or
//! what the manager holds in memory (the one system read: whether a namespace is still
//! pinned); it never fails a call, never runs a plugin and never writes anything.

use std::collections::{BTreeMap, HashMap};

use k8s_cri::v1 as cri;

use super::Shared;
use crate::config::CgroupDriver;
use crate::netns::inside::InterfaceStats;
use crate::network::NetworkReadiness;
use crate::sandbox::stats::NetworkStats;
use crate::sandbox::SandboxEvent;
use crate::sandbox::{Sandbox, SandboxState};

fn unsorted(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn state(state: SandboxState) -> i32 {
    match state {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady as i32,
        _ => cri::PodSandboxState::SandboxNotready as i32,
    }
}

fn metadata(sandbox: &Sandbox) -> cri::PodSandboxMetadata {
    let m = &sandbox.spec.metadata;
    cri::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    }
}

/// The config as it was sent, read back from the record.
fn original_config(sandbox: &Sandbox) -> Option<cri::PodSandboxConfig> {
    serde_json::from_value(sandbox.spec.raw_config.clone()).ok()
}

pub fn pod_sandbox(sandbox: &Sandbox) -> cri::PodSandbox {
    cri::PodSandbox {
        id: sandbox.id.clone(),
        metadata: Some(metadata(sandbox)),
        state: state(sandbox.state),
        created_at: sandbox.created_at,
        labels: unsorted(&sandbox.spec.labels),
        annotations: unsorted(&sandbox.spec.annotations),
        runtime_handler: sandbox.spec.runtime_handler.clone(),
    }
}

pub fn pod_sandbox_status(sandbox: &Sandbox) -> cri::PodSandboxStatus {
    // Only a READY sandbox has an address: after Stop the IP is released (containerd too).
    let ips: &[String] = match &sandbox.network {
        Some(n) if sandbox.is_ready() => &n.ips,
        _ => &[],
    };
    let namespace_options = original_config(sandbox)
        .and_then(|c| c.linux)
        .and_then(|l| l.security_context)
        .and_then(|s| s.namespace_options)
        .unwrap_or_default();
    cri::PodSandboxStatus {
        id: sandbox.id.clone(),
        metadata: Some(metadata(sandbox)),
        state: state(sandbox.state),
        created_at: sandbox.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: ips.first().cloned().unwrap_or_default(),
            additional_ips: ips
                .iter()
                .skip(1)
                .map(|ip| cri::PodIp { ip: ip.clone() })
                .collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(namespace_options),
            }),
        }),
        labels: unsorted(&sandbox.spec.labels),
        annotations: unsorted(&sandbox.spec.annotations),
        runtime_handler: sandbox.spec.runtime_handler.clone(),
    }
}

/// Verbose status: one key, `info`, holding a JSON object (containerd's layout, so tools
/// that read `info.config`, `info.cniResult` or `info.runtimeSpec` find them), plus crisp's
/// own: where the sandbox's files are, how each plugin of the last ADD/DEL fared, and what the
/// background checks last found. Everything is borrowed and the spec is embedded as the text it
/// is (no parse and re-encode): this is what every `crictl inspectp` and poller pays for.
pub fn verbose_info(
    sandbox: &Sandbox,
    files_dir: &std::path::Path,
    runtime_spec: Option<&serde_json::value::RawValue>,
    last_ops: Option<crate::telemetry::LastOps>,
    health: &crate::network::Health,
    nri_hooks: &[crate::nri::HookTime],
) -> HashMap<String, String> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Info<'a> {
        sandbox_id: &'a str,
        state: SandboxState,
        runtime_handler: &'a str,
        host_network: bool,
        netns_path: String,
        net_namespace_closed: bool,
        network: Option<&'a str>,
        cni_result: Option<&'a serde_json::Value>,
        network_path: Option<&'a str>,
        last_error: Option<&'a str>,
        config: &'a serde_json::Value,
        runtime_spec: Option<&'a serde_json::value::RawValue>,
        files_dir: String,
        cni_plugin_timings: crate::telemetry::LastOps,
        network_check: Option<&'a crate::network::NetworkCheck>,
        live_check: Option<&'a crate::network::LiveCheck>,
        nri_hooks: &'a [crate::nri::HookTime],
    }
    let info = Info {
        sandbox_id: &sandbox.id,
        state: sandbox.state,
        runtime_handler: &sandbox.spec.runtime_handler,
        host_network: sandbox.spec.host_network,
        netns_path: sandbox
            .netns_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        net_namespace_closed: sandbox
            .netns_path
            .as_deref()
            .is_none_or(|p| !crate::netns::is_pinned(p)),
        network: sandbox.network.as_ref().map(|n| n.network_name.as_str()),
        cni_result: sandbox.network.as_ref().map(|n| &n.result),
        network_path: sandbox.network.as_ref().map(|n| n.datapath.as_str()),
        last_error: sandbox.last_error.as_deref(),
        config: &sandbox.spec.raw_config,
        runtime_spec,
        files_dir: files_dir.display().to_string(),
        cni_plugin_timings: last_ops.unwrap_or_default(),
        network_check: health.network_check.as_ref(),
        live_check: health.live_check.as_ref(),
        nri_hooks,
    };
    let text = serde_json::to_string(&info).unwrap_or_default();
    HashMap::from([("info".to_string(), text)])
}

/// RuntimeConfig's answer: the configured cgroup driver, or no `linux` at all.
pub fn runtime_config(driver: Option<CgroupDriver>) -> cri::RuntimeConfigResponse {
    cri::RuntimeConfigResponse {
        linux: driver.map(|d| cri::LinuxRuntimeConfiguration {
            cgroup_driver: match d {
                CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
                CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
            } as i32,
        }),
    }
}

/// Status's answer: the runtime is always ready; the network is ready unless `problem` says
/// why not, in the words kubelet shows for a CNI plugin that is not ready.
pub fn runtime_status(problem: Option<&str>, info: HashMap<String, String>) -> cri::StatusResponse {
    let network_ready = cri::RuntimeCondition {
        r#type: "NetworkReady".into(),
        status: problem.is_none(),
        reason: if problem.is_some() {
            "NetworkPluginNotReady".into()
        } else {
            String::new()
        },
        message: problem
            .map(|p| format!("Network plugin returns error: {p}"))
            .unwrap_or_default(),
    };
    let runtime_ready = cri::RuntimeCondition {
        r#type: "RuntimeReady".into(),
        status: true,
        reason: String::new(),
        message: String::new(),
    };
    cri::StatusResponse {
        status: Some(cri::RuntimeStatus {
            conditions: vec![runtime_ready, network_ready],
        }),
        info,
        runtime_handlers: vec![cri::RuntimeHandler {
            name: String::new(),
            features: None,
        }],
        features: None,
    }
}

/// Verbose Status: each key one JSON document, all from memory (the effective config, the
/// network's readiness, the recovery report, the checker's last rounds, NRI's plugins).
pub fn status_info(
    shared: &Shared,
    readiness: &NetworkReadiness,
    problem: Option<&str>,
) -> HashMap<String, String> {
    let config = &shared.config;
    let mut info = HashMap::new();
    info.insert(
        "config".to_string(),
        serde_json::to_string(config).unwrap_or_default(),
    );
    info.insert(
        "network".to_string(),
        network_info(readiness, problem).to_string(),
    );
    info.insert(
        "recovery".to_string(),
        serde_json::to_string(&shared.recovery).unwrap_or_default(),
    );
    info.insert(
        "networkChecker".to_string(),
        serde_json::to_string(&shared.manager.checker()).unwrap_or_default(),
    );
    // null when NRI is off; else the connected plugins, in the order they are called.
    let nri = shared.manager.nri_plugins().map(|plugins| {
        serde_json::json!({
            "socket": config.nri_socket.display().to_string(),
            "plugins": plugins,
        })
    });
    info.insert("nri".to_string(), serde_json::json!(nri).to_string());
    // null: RuntimeConfig leaves `linux` unset and kubelet keeps its own driver.
    info.insert(
        "cgroupDriver".to_string(),
        serde_json::json!(config.cgroup_driver).to_string(),
    );
    info
}

/// The network part of verbose Status: readiness, the loaded list, STATUS's last answer.
fn network_info(readiness: &NetworkReadiness, problem: Option<&str>) -> serde_json::Value {
    let network = readiness.network.as_ref().map(|n| {
        serde_json::json!({
            "name": n.name,
            "cniVersion": n.cni_version,
            "file": n.source.display().to_string(),
            "plugins": n.plugins.iter().map(|p| &p.plugin_type).collect::<Vec<_>>(),
        })
    });
    serde_json::json!({
        "ready": problem.is_none(),
        "problem": problem,
        "loaded": network,
        "status": readiness.status,
        "confDirWatched": readiness.conf_dir_watched,
        "path": readiness.path,
        "podCIDR": readiness.pod_cidr,
    })
}

fn usage(i: &InterfaceStats) -> cri::NetworkInterfaceUsage {
    let v = |value| Some(cri::UInt64Value { value });
    cri::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: v(i.rx_bytes),
        rx_errors: v(i.rx_errors),
        tx_bytes: v(i.tx_bytes),
        tx_errors: v(i.tx_errors),
    }
}

/// PodSandboxStats as `crictl statsp` and kubelet read them: the sandbox's attributes and
/// its network usage (crisp runs no processes, so no cpu, memory or process usage).
pub fn pod_sandbox_stats(sandbox: &Sandbox, network: Option<NetworkStats>) -> cri::PodSandboxStats {
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: sandbox.id.clone(),
            metadata: Some(metadata(sandbox)),
            labels: unsorted(&sandbox.spec.labels),
            annotations: unsorted(&sandbox.spec.annotations),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            network: network.map(|n| cri::NetworkUsage {
                timestamp: n.timestamp,
                default_interface: n.default_interface.as_ref().map(usage),
                interfaces: n.interfaces.iter().map(usage).collect(),
            }),
            ..Default::default()
        }),
        windows: None,
    }
}

/// The cadvisor-named network counters crisp reports through ListPodSandboxMetrics, with
/// what each reads from an interface.
type Counter = fn(&InterfaceStats) -> u64;
const NETWORK_METRICS: [(&str, &str, Counter); 4] = [
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        |i| i.rx_bytes,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        |i| i.rx_errors,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        |i| i.tx_bytes,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        |i| i.tx_errors,
    ),
];
const METRIC_LABELS: [&str; 3] = ["namespace", "pod", "interface"];

/// ListMetricDescriptors: the network counters, labelled by pod and interface.
pub fn metric_descriptors() -> Vec<cri::MetricDescriptor> {
    NETWORK_METRICS
        .iter()
        .map(|(name, help, _)| cri::MetricDescriptor {
            name: name.to_string(),
            help: help.to_string(),
            label_keys: METRIC_LABELS.iter().map(|l| l.to_string()).collect(),
        })
        .collect()
}

/// One sandbox's metrics for ListPodSandboxMetrics: each counter for each interface.
pub fn pod_sandbox_metrics(sandbox: &Sandbox, network: &NetworkStats) -> cri::PodSandboxMetrics {
    let m = &sandbox.spec.metadata;
    let metrics = network
        .interfaces
        .iter()
        .flat_map(|iface| {
            NETWORK_METRICS
                .iter()
                .map(move |(name, _, read)| cri::Metric {
                    name: name.to_string(),
                    timestamp: network.timestamp,
                    metric_type: cri::MetricType::Counter as i32,
                    label_values: vec![m.namespace.clone(), m.name.clone(), iface.name.clone()],
                    value: Some(cri::UInt64Value { value: read(iface) }),
                })
        })
        .collect();
    cri::PodSandboxMetrics {
        pod_sandbox_id: sandbox.id.clone(),
        metrics,
        container_metrics: Vec::new(),
    }
}

/// A lifecycle event as kubelet's evented PLEG reads it: the sandbox id as container id,
/// and the sandbox's status with its metadata.
pub fn container_event(event: &SandboxEvent) -> cri::ContainerEventResponse {
    use crate::sandbox::EventKind;
    let kind = match event.kind {
        EventKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
        EventKind::Started => cri::ContainerEventType::ContainerStartedEvent,
        EventKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent,
        EventKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent,
    };
    cri::ContainerEventResponse {
        container_id: event.sandbox.id.clone(),
        container_event_type: kind as i32,
        created_at: event.at,
        pod_sandbox_status: Some(pod_sandbox_status(&event.sandbox)),
        containers_statuses: Vec::new(),
    }
}
