//! The one seam between a sandbox and its network: attach a sandbox's namespace to the pod
//! network, detach it, and say whether the node can do that now. This runs the CNI chain
//! of the conf dir, or — with `--cni-fast-path auto` and a network list it implements
//! completely — crisp's in-process fast path ([`crate::network::fast`]), which leaves the same
//! state, result and cache entry; the manager never knows which one ran. Kubernetes terms
//! become CNI terms here and nowhere else.
//!
//! Readiness never waits on a plugin: CNI STATUS runs in a background task
//! ([`PodNetwork::start_status_refresher`]) every [`STATUS_INTERVAL`] and whenever the conf
//! dir changed, each exec bounded by the plugin timeout; [`PodNetwork::readiness`] serves the
//! last answer for the network currently in effect.
//!
//! GC ([`PodNetwork::collect_garbage`]) holds a gate that every ADD holds shared, so the
//! set of valid attachments it sends cannot miss an attachment being made meanwhile.
//!
//! Here: [`PodNetwork`] and the exec-or-fast routing; `runtime_conf` (what plugins are told),
//! `bandwidth`, `tasks` (STATUS, GC, CHECK and their outcomes), `pod` (the types crossing the
//! seam), `fast` (the in-process path). It never imports `sandbox` and keeps no sandbox state.

pub mod bandwidth;
pub mod fast;
pub mod pod;
pub mod runtime_conf;
pub mod tasks;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use crate::cni::{Cni, CniError, ConfDir, DirLoad, NetworkConfigList};
use crate::config::FastPathMode;
use crate::network::fast::{self as fastpath, FastPath, FastPlan, Unsupported};
pub use crate::network::pod::{NetworkAttachment, Pod};
pub use bandwidth::{bandwidth, parse_quantity, EGRESS_BANDWIDTH, INGRESS_BANDWIDTH};
pub use tasks::{
    GcReport, Health, LiveAttachment, LiveCheck, NetworkCheck, StatusAnswer, STATUS_INTERVAL,
};

/// `NetworkAttachment::datapath` values.
pub const PATH_EXEC: &str = "exec";
pub const PATH_FAST: &str = "fast";

/// The interface name every pod gets.
pub const POD_IFNAME: &str = "eth0";

/// Whether pods can be networked now, and the network they would get.
#[derive(Debug, Clone)]
pub struct NetworkReadiness {
    pub network: Option<Arc<NetworkConfigList>>,
    /// Why pods cannot be networked; `None` when they can.
    pub problem: Option<String>,
    /// The last CNI STATUS answer for this network, when one was asked (≥ 1.1.0).
    pub status: Option<StatusAnswer>,
    /// Which path new pods take: "fast", "exec" (fast path off), or `exec: <why not fast>`.
    pub path: String,
    /// Whether conf dir changes are seen at once (inotify) rather than at the next read.
    pub conf_dir_watched: bool,
    /// The pod CIDR from UpdateRuntimeConfig.
    pub pod_cidr: Option<String>,
}

impl NetworkReadiness {
    /// The node's NetworkReady: the config is usable and STATUS (if asked) said yes.
    /// (STATUS is informational per the spec: it does not refuse RunPodSandbox.)
    pub fn ready_problem(&self) -> Option<String> {
        self.problem
            .clone()
            .or_else(|| self.status.as_ref().and_then(|s| s.problem.clone()))
    }
}

/// The fast path's verdict on one loaded network list, kept so it is decided (and logged)
/// once per config.
type Verdict = (Value, Result<Arc<FastPlan>, Unsupported>);

pub struct PodNetwork {
    cni: Cni,
    conf_dir: Arc<ConfDir>,
    /// The pod CIDR from UpdateRuntimeConfig, passed to plugins as `ipRanges`.
    pod_cidr: RwLock<Option<String>>,
    status: Arc<RwLock<Option<StatusAnswer>>>,
    status_kick: Arc<tokio::sync::Notify>,
    /// ADD holds it shared, GC exclusively.
    gc_gate: tokio::sync::RwLock<()>,
    /// `Some` when `--cni-fast-path auto`.
    fast: Option<FastPath>,
    verdict: Mutex<Option<Verdict>>,
}

impl PodNetwork {
    pub fn new(cni: Cni, conf_dir: ConfDir) -> Self {
        Self::with_fast_path(cni, conf_dir, FastPathMode::Off, String::new())
    }

    /// `path_env` is the PATH the fast path finds iptables-restore/-save in.
    pub fn with_fast_path(
        cni: Cni,
        conf_dir: ConfDir,
        mode: FastPathMode,
        path_env: String,
    ) -> Self {
        PodNetwork {
            cni,
            conf_dir: Arc::new(conf_dir),
            pod_cidr: RwLock::new(None),
            status: Arc::new(RwLock::new(None)),
            status_kick: Arc::new(tokio::sync::Notify::new()),
            gc_gate: tokio::sync::RwLock::new(()),
            fast: (mode == FastPathMode::Auto).then(|| FastPath::new(path_env)),
            verdict: Mutex::new(None),
        }
    }

    /// The fast path's plan for the list, or why it is not used (logged once per config).
    fn plan_for(&self, list: &NetworkConfigList) -> Result<Arc<FastPlan>, Unsupported> {
        if self.fast.is_none() {
            return Err(Unsupported {
                why: "the fast path is off (--cni-fast-path off)".into(),
            });
        }
        let mut verdict = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((json, v)) = verdict.as_ref() {
            if *json == list.json {
                return v.clone();
            }
        }
        let v = fastpath::plan(list).map(Arc::new);
        match &v {
            Ok(_) => {
                tracing::info!(
                    network = %list.name, file = %list.source.display(),
                    "CNI fast path: this network runs in process"
                )
            }
            Err(e) => {
                tracing::info!(
                    network = %list.name, file = %list.source.display(), reason = %e.why,
                    "CNI fast path: falling back to the plugins"
                )
            }
        }
        *verdict = Some((list.json.clone(), v.clone()));
        v
    }

    /// Which path pods on `list` take, as Status shows it.
    fn path_label(&self, list: &NetworkConfigList) -> String {
        match (&self.fast, self.plan_for(list)) {
            (None, _) => PATH_EXEC.to_string(),
            (Some(_), Ok(_)) => PATH_FAST.to_string(),
            (Some(_), Err(e)) => format!("{PATH_EXEC}: {}", e.why),
        }
    }

    /// Starts watching the conf dir (see [`ConfDir::watch`]); false when it cannot be
    /// watched and every use re-checks it instead.
    pub fn watch_conf_dir(&self) -> bool {
        self.conf_dir.watch()
    }

    pub fn conf_dir_watched(&self) -> bool {
        self.conf_dir.is_watched()
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

    /// The current network config, whether its plugins are installed, and the last STATUS
    /// answer for it. Never runs a plugin.
    pub async fn readiness(&self) -> NetworkReadiness {
        let load = self.current_load().await;
        match load.network {
            None => NetworkReadiness {
                network: None,
                problem: load.error,
                status: None,
                path: PATH_EXEC.to_string(),
                conf_dir_watched: self.conf_dir_watched(),
                pod_cidr: self.pod_cidr(),
            },
            Some(list) => {
                let problem = self.cni.check_plugins(&list).err().map(|e| e.to_string());
                let status = self
                    .status
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .filter(|s| s.network_json == list.json);
                if status.is_none() {
                    // The answer is for another config (or none yet): ask now, in the background.
                    self.status_kick.notify_one();
                }
                let path = self.path_label(&list);
                NetworkReadiness {
                    network: Some(list),
                    problem,
                    status,
                    path,
                    conf_dir_watched: self.conf_dir_watched(),
                    pod_cidr: self.pod_cidr(),
                }
            }
        }
    }

    /// CNI ADD for the sandbox over `network`; the attachment to record comes back.
    pub async fn attach(
        &self,
        pod: &Pod<'_>,
        network: &NetworkConfigList,
        netns: &Path,
    ) -> Result<NetworkAttachment, CniError> {
        let rt = self.runtime_conf(pod, Some(netns));
        let (result, path) = {
            let _gate = self.gc_gate.read().await;
            match (&self.fast, self.plan_for(network)) {
                (Some(fast), Ok(plan)) => (
                    fast.add(&plan, network, &rt, self.cni.cache()).await?,
                    PATH_FAST,
                ),
                _ => (self.cni.add(network, &rt).await?, PATH_EXEC),
            }
        };
        let json = result
            .to_version_json(&network.cni_version)
            .unwrap_or(Value::Null);
        Ok(NetworkAttachment {
            network_name: network.name.clone(),
            ifname: POD_IFNAME.to_string(),
            ips: result.pod_ips().iter().map(|ip| ip.to_string()).collect(),
            result: json,
            datapath: path.to_string(),
        })
    }

    /// CNI DEL with what was cached at ADD (or the current config when nothing was cached
    /// and it is the same network). `netns` is `None` when the namespace is already gone.
    pub async fn detach(
        &self,
        pod: &Pod<'_>,
        network_name: &str,
        netns: Option<&Path>,
    ) -> Result<(), CniError> {
        let rt = self.runtime_conf(pod, netns);
        let current = self.current_load().await;
        if let Some(fast) = &self.fast {
            // Tear down with the config cached at ADD (whichever path made it), or the
            // current one when nothing was cached and it is the same network.
            let cache = self.cni.cache();
            let cached = cache
                .load(network_name, &rt.container_id, &rt.ifname)
                .map_err(|source| CniError::Cache {
                    path: cache.path(network_name, &rt.container_id, &rt.ifname),
                    source,
                })?;
            let list = match &cached {
                Some(entry) => {
                    NetworkConfigList::from_list_value(entry.config.clone(), Path::new("")).ok()
                }
                None => current
                    .network
                    .as_deref()
                    .filter(|l| l.name == network_name)
                    .cloned(),
            };
            if let Some(plan) = list.as_ref().and_then(|l| self.plan_for(l).ok()) {
                return fast.del(&plan, &rt, cached.as_ref(), cache).await;
            }
        }
        self.cni
            .del(network_name, &rt, current.network.as_deref())
            .await
    }

    /// Netns paths the CNI cache entries name (none when the cache cannot be read): GC tears
    /// those attachments down with their namespace, so their pins are not orphans yet.
    pub async fn cached_netns_paths(&self) -> Vec<std::path::PathBuf> {
        self.cached_entries()
            .await
            .into_iter()
            .filter(|e| !e.netns.is_empty())
            .map(|e| std::path::PathBuf::from(e.netns))
            .collect()
    }

    /// Kills plugins a killed predecessor left running for any of `ids` or any attachment in
    /// the CNI cache, before recovery tears those attachments down (a late ADD would otherwise
    /// re-create what the DEL released). Returns how many were killed.
    pub async fn kill_stray_plugins(&self, mut ids: HashSet<String>) -> usize {
        ids.extend(
            self.cached_entries()
                .await
                .into_iter()
                .map(|e| e.container_id),
        );
        if ids.is_empty() {
            return 0;
        }
        let killed = tokio::task::spawn_blocking(move || crate::cni::exec::kill_strays(&ids))
            .await
            .unwrap_or_default();
        for stray in &killed {
            tracing::warn!(
                pid = stray.pid, container_id = %stray.container_id, command = %stray.command,
                exe = %stray.exe,
                "killed a CNI plugin process left running by the previous crisp"
            );
        }
        killed.len()
    }

    /// Every CNI cache entry, read off the async workers; none when the cache is unreadable.
    async fn cached_entries(&self) -> Vec<crate::cni::cache::CacheEntry> {
        self.cni.cached_entries().await.unwrap_or_default()
    }
}
