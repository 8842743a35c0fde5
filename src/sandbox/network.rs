//! The one seam between a sandbox and its network: attach a sandbox's namespace to the pod
//! network, detach it, and say whether the node can do that now. Today this runs the CNI
//! chain of the conf dir; another way to wire a pod can sit here without the manager
//! knowing which one ran. Kubernetes terms become CNI terms here and nowhere else.

use std::path::Path;
use std::sync::{Arc, RwLock};

use serde_json::{json, Map, Value};

use crate::cni::{Cni, CniError, ConfDir, DirLoad, NetworkConfigList, RuntimeConf};
use crate::sandbox::model::{NetworkAttachment, Sandbox};

/// The interface name every pod gets.
pub const POD_IFNAME: &str = "eth0";

/// Whether pods can be networked now, and the network they would get.
#[derive(Debug, Clone)]
pub struct NetworkReadiness {
    pub network: Option<Arc<NetworkConfigList>>,
    /// Why pods cannot be networked; `None` when they can.
    pub problem: Option<String>,
}

pub struct PodNetwork {
    cni: Cni,
    conf_dir: Arc<ConfDir>,
    /// The pod CIDR from UpdateRuntimeConfig, passed to plugins as `ipRanges`.
    pod_cidr: RwLock<Option<String>>,
}

impl PodNetwork {
    pub fn new(cni: Cni, conf_dir: ConfDir) -> Self {
        PodNetwork {
            cni,
            conf_dir: Arc::new(conf_dir),
            pod_cidr: RwLock::new(None),
        }
    }

    pub fn cni(&self) -> &Cni {
        &self.cni
    }

    pub fn conf_dir(&self) -> &Path {
        self.conf_dir.dir()
    }

    pub fn set_pod_cidr(&self, cidr: Option<String>) {
        *self.pod_cidr.write().unwrap_or_else(|p| p.into_inner()) = cidr;
    }

    pub fn pod_cidr(&self) -> Option<String> {
        self.pod_cidr
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The conf dir's current network (re-read only when it changed), off the async workers.
    async fn current_load(&self) -> DirLoad {
        let conf_dir = self.conf_dir.clone();
        tokio::task::spawn_blocking(move || conf_dir.current())
            .await
            .unwrap_or_else(|e| DirLoad {
                error: Some(format!("reading the CNI conf dir failed: {e}")),
                ..DirLoad::default()
            })
    }

    /// The current network config and whether its plugins are installed.
    pub async fn readiness(&self) -> NetworkReadiness {
        let load = self.current_load().await;
        match load.network {
            None => NetworkReadiness {
                network: None,
                problem: load.error,
            },
            Some(list) => {
                let problem = self.cni.check_plugins(&list).err().map(|e| e.to_string());
                NetworkReadiness {
                    network: Some(list),
                    problem,
                }
            }
        }
    }

    /// CNI ADD for the sandbox over `network`; the attachment to record comes back.
    pub async fn attach(
        &self,
        sandbox: &Sandbox,
        network: &NetworkConfigList,
        netns: &Path,
    ) -> Result<NetworkAttachment, CniError> {
        let rt = self.runtime_conf(sandbox, Some(netns));
        let result = self.cni.add(network, &rt).await?;
        let json = result
            .to_version_json(&network.cni_version)
            .unwrap_or(Value::Null);
        Ok(NetworkAttachment {
            network_name: network.name.clone(),
            ifname: POD_IFNAME.to_string(),
            ips: result.pod_ips().iter().map(|ip| ip.to_string()).collect(),
            result: json,
        })
    }

    /// CNI DEL with what was cached at ADD (or the current config when nothing was cached
    /// and it is the same network). `netns` is `None` when the namespace is already gone.
    pub async fn detach(
        &self,
        sandbox: &Sandbox,
        network_name: &str,
        netns: Option<&Path>,
    ) -> Result<(), CniError> {
        let rt = self.runtime_conf(sandbox, netns);
        let current = self.current_load().await;
        self.cni
            .del(network_name, &rt, current.network.as_deref())
            .await
    }

    fn runtime_conf(&self, sandbox: &Sandbox, netns: Option<&Path>) -> RuntimeConf {
        let meta = &sandbox.spec.metadata;
        RuntimeConf {
            container_id: sandbox.id.clone(),
            netns: netns.map(Path::to_path_buf),
            ifname: POD_IFNAME.to_string(),
            // containerd's CNI_ARGS, in its order.
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), meta.namespace.clone()),
                ("K8S_POD_NAME".into(), meta.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), sandbox.id.clone()),
                ("K8S_POD_UID".into(), meta.uid.clone()),
            ],
            capability_args: self.capability_args(sandbox),
        }
    }

    /// The runtimeConfig capabilities a sandbox offers; each plugin gets only those it declares.
    fn capability_args(&self, sandbox: &Sandbox) -> Map<String, Value> {
        let spec = &sandbox.spec;
        let mut caps = Map::new();
        let ports: Vec<Value> = spec
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
        if !spec.dns.servers.is_empty() || !spec.dns.searches.is_empty() {
            caps.insert(
                "dns".into(),
                json!({
                    "servers": spec.dns.servers,
                    "searches": spec.dns.searches,
                    "options": spec.dns.options,
                }),
            );
        }
        if let Some(cidr) = self.pod_cidr() {
            caps.insert("ipRanges".into(), json!([[{ "subnet": cidr }]]));
        }
        if !spec.cgroup_parent.is_empty() {
            caps.insert(
                "cgroupPath".into(),
                Value::String(spec.cgroup_parent.clone()),
            );
        }
        caps.insert(
            "io.kubernetes.cri.pod-annotations".into(),
            json!(spec.annotations),
        );
        caps
    }
}
