//! What the CNI chain is told of a pod: containerd's `CNI_ARGS` and the `runtimeConfig`
//! capabilities. Kubernetes terms become CNI terms here; it never runs a plugin.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::bandwidth::bandwidth;
use super::{Pod, PodNetwork, POD_IFNAME};
use crate::cni::RuntimeConf;

impl PodNetwork {
    pub(super) fn runtime_conf(&self, pod: &Pod<'_>, netns: Option<&Path>) -> RuntimeConf {
        RuntimeConf {
            container_id: pod.id.to_string(),
            netns: netns.map(Path::to_path_buf),
            ifname: POD_IFNAME.to_string(),
            // containerd's CNI_ARGS, in its order.
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), pod.namespace.to_string()),
                ("K8S_POD_NAME".into(), pod.name.to_string()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), pod.id.to_string()),
                ("K8S_POD_UID".into(), pod.uid.to_string()),
            ],
            capability_args: self.capability_args(pod),
        }
    }

    /// The runtimeConfig capabilities a sandbox offers; each plugin gets only those it declares.
    fn capability_args(&self, pod: &Pod<'_>) -> Map<String, Value> {
        let mut caps = Map::new();
        let ports: Vec<Value> = pod
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| {
                json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": p.protocol.as_str(),
                    "hostIP": p.host_ip,
                })
            })
            .collect();
        if !ports.is_empty() {
            caps.insert("portMappings".into(), Value::Array(ports));
        }
        if !pod.dns.servers.is_empty() || !pod.dns.searches.is_empty() {
            caps.insert(
                "dns".into(),
                json!({
                    "servers": pod.dns.servers,
                    "searches": pod.dns.searches,
                    "options": pod.dns.options,
                }),
            );
        }
        if let Some(cidr) = self.pod_cidr() {
            caps.insert("ipRanges".into(), json!([[{ "subnet": cidr }]]));
        }
        if !pod.cgroup_parent.is_empty() {
            caps.insert(
                "cgroupPath".into(),
                Value::String(pod.cgroup_parent.to_string()),
            );
        }
        // Validated when the request was converted; an invalid value cannot get here.
        if let Ok(Some(bandwidth)) = bandwidth(pod.annotations) {
            caps.insert("bandwidth".into(), bandwidth);
        }
        caps.insert(
            "io.kubernetes.cri.pod-annotations".into(),
            json!(pod.annotations),
        );
        caps
    }
}
