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

pub mod fast;
pub mod health;
pub mod pod;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use crate::cni::{
    Attachment, CheckOutcome, Cni, CniError, ConfDir, DirLoad, NetworkConfigList, RuntimeConf,
    StaleReport,
};
use crate::config::FastPathMode;
use crate::network::fast::{self as fastpath, FastPath, FastPlan, Unsupported};
use crate::network::health::NetworkCheck;
pub use crate::network::pod::{NetworkAttachment, Pod};

/// `NetworkAttachment::datapath` values.
pub const PATH_EXEC: &str = "exec";
pub const PATH_FAST: &str = "fast";

/// How often STATUS is asked in the background (kubelet polls Status every 5 s).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// The annotations Kubernetes uses for pod bandwidth limits.
pub const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
pub const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";

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
    /// Which path new pods take: "fast", "exec" (fast path off), or "exec: <why not fast>".
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

/// One background STATUS round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusAnswer {
    /// The list it was asked of (to tell whether it still applies).
    #[serde(skip)]
    pub network_json: Value,
    pub network: String,
    /// Whether the plugins were asked (lists older than 1.1.0 have no STATUS).
    pub asked: bool,
    /// The failure, naming plugin, code and message; `None` when every plugin said ready.
    pub problem: Option<String>,
    /// Seconds since the epoch when the answer came.
    pub at_unix: u64,
}

/// What one GC pass did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    pub valid: usize,
    pub stale: StaleReport,
    /// Whether the plugins were sent GC (≥ 1.1.0 and not disableGC).
    pub plugins_asked: bool,
    pub plugin_errors: Vec<String>,
}

/// An attachment a sandbox holds or is acquiring, which GC must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAttachment {
    /// `None` while the sandbox is being created: then it is live on any network.
    pub network_name: Option<String>,
    pub container_id: String,
    pub ifname: String,
}

impl LiveAttachment {
    fn split(self) -> (String, Attachment) {
        (
            self.network_name.unwrap_or_default(),
            Attachment {
                container_id: self.container_id,
                ifname: self.ifname,
            },
        )
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
        let v = fastpath::supports(list).map(Arc::new);
        match &v {
            Ok(_) => {
                tracing::info!(network = %list.name, file = %list.source.display(), "CNI fast path: this network runs in process")
            }
            Err(e) => {
                tracing::info!(network = %list.name, file = %list.source.display(), reason = %e.why, "CNI fast path: falling back to the plugins")
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

    /// Starts the background STATUS task (needs a tokio runtime).
    pub fn start_status_refresher(&self) {
        let cni = self.cni.clone();
        let conf_dir = self.conf_dir.clone();
        let store = self.status.clone();
        let kick = self.status_kick.clone();
        let mut reloads = self.conf_dir.reloads();
        tokio::spawn(async move {
            loop {
                let reader = conf_dir.clone();
                let load = tokio::task::spawn_blocking(move || reader.current())
                    .await
                    .unwrap_or_default();
                let answer = match load.network {
                    Some(list) => {
                        let outcome = cni.status(&list).await;
                        if let Err(e) = &outcome {
                            tracing::warn!(network = %list.name, error = %e, "CNI STATUS: network not ready");
                        }
                        Some(StatusAnswer {
                            network_json: list.json.clone(),
                            network: list.name.clone(),
                            asked: !matches!(outcome, Ok(false)),
                            problem: outcome.err().map(|e| e.to_string()),
                            at_unix: SystemTime::now()
                                .duration_since(SystemTime::UNIX_EPOCH)
                                .map_or(0, |d| d.as_secs()),
                        })
                    }
                    None => None,
                };
                *store.write().unwrap_or_else(|p| p.into_inner()) = answer;
                tokio::select! {
                    _ = tokio::time::sleep(STATUS_INTERVAL) => {}
                    _ = reloads.changed() => {}
                    _ = kick.notified() => {}
                }
            }
        });
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

    /// CNI CHECK of a sandbox's attachment with what was cached at ADD.
    pub async fn check(&self, pod: &Pod<'_>, network_name: &str, netns: &Path) -> NetworkCheck {
        let rt = self.runtime_conf(pod, Some(netns));
        let outcome: Result<CheckOutcome, CniError> = self.cni.check(network_name, &rt).await;
        NetworkCheck::from_outcome(&outcome, crate::clock::now_nanos())
    }

    /// One GC pass: tears down cached attachments no sandbox owns, then sends GC with the
    /// valid attachments to the plugins of the current network. `valid` is called once no
    /// ADD is in flight and none can start until the pass ends; it yields (network name,
    /// attachment) for every sandbox that holds or is acquiring a network (an empty name:
    /// any network), or `None` when
    /// that cannot be known (then nothing is collected).
    pub async fn collect_garbage<F, Fut>(&self, valid: F) -> GcReport
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<Vec<LiveAttachment>>>,
    {
        let _gate = self.gc_gate.write().await;
        let Some(valid) = valid().await else {
            tracing::warn!("CNI GC skipped: the set of live sandboxes is not known");
            return GcReport::default();
        };
        let valid: Vec<(String, Attachment)> =
            valid.into_iter().map(LiveAttachment::split).collect();
        let all: Vec<Attachment> = valid.iter().map(|(_, a)| a.clone()).collect();
        let mut report = GcReport {
            valid: all.len(),
            stale: self.cni.delete_stale(&all).await,
            ..GcReport::default()
        };
        if let Some(list) = self.current_load().await.network {
            let mut on_network: Vec<Attachment> = valid
                .into_iter()
                // An empty name is a sandbox still being created: valid on any network.
                .filter(|(name, _)| *name == list.name || name.is_empty())
                .map(|(_, a)| a)
                .collect();
            on_network.sort();
            match self.cni.gc(&list, &on_network).await {
                Ok(asked) => report.plugins_asked = asked,
                Err(errors) => {
                    report.plugins_asked = true;
                    report.plugin_errors = errors.iter().map(|e| e.to_string()).collect();
                }
            }
        }
        tracing::info!(
            valid = report.valid,
            stale_deleted = report.stale.deleted.len(),
            stale_failed = report.stale.failed.len(),
            plugins_asked = report.plugins_asked,
            plugin_errors = report.plugin_errors.len(),
            "CNI GC pass finished"
        );
        for e in &report.plugin_errors {
            tracing::warn!(error = %e, "CNI GC");
        }
        report
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
        let cache = self.cni.cache().clone();
        match tokio::task::spawn_blocking(move || cache.list()).await {
            Ok(Ok(entries)) => entries,
            _ => Vec::new(),
        }
    }

    fn runtime_conf(&self, pod: &Pod<'_>, netns: Option<&Path>) -> RuntimeConf {
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

/// The `bandwidth` capability from the pod's annotations, as containerd builds it: rates
/// in bits/s from Kubernetes quantities ("10M", "1Gi"), bursts of `u32::MAX` bits. Values
/// outside 1 kbit..1 Pbit are refused, as kubelet's `ExtractPodBandwidthResources` does.
/// The error names the annotation.
pub fn bandwidth(annotations: &BTreeMap<String, String>) -> Result<Option<Value>, String> {
    let rate = |key: &str| -> Result<Option<u64>, String> {
        let Some(text) = annotations.get(key) else {
            return Ok(None);
        };
        let bits =
            parse_quantity(text).map_err(|why| format!("annotation {key}={text:?}: {why}"))?;
        if bits < 1_000 {
            return Err(format!(
                "annotation {key}={text:?}: unreasonably small (< 1kbit)"
            ));
        }
        if bits > 1_000_000_000_000_000 {
            return Err(format!(
                "annotation {key}={text:?}: unreasonably large (> 1Pbit)"
            ));
        }
        Ok(Some(bits as u64))
    };
    let ingress = rate(INGRESS_BANDWIDTH)?;
    let egress = rate(EGRESS_BANDWIDTH)?;
    if ingress.is_none() && egress.is_none() {
        return Ok(None);
    }
    let mut bw = Map::new();
    if let Some(r) = ingress {
        bw.insert("ingressRate".into(), json!(r));
        bw.insert("ingressBurst".into(), json!(u32::MAX));
    }
    if let Some(r) = egress {
        bw.insert("egressRate".into(), json!(r));
        bw.insert("egressBurst".into(), json!(u32::MAX));
    }
    Ok(Some(Value::Object(bw)))
}

/// A Kubernetes resource quantity (`<number><suffix>`: decimal SI `k M G T P E`, binary
/// `Ki Mi Gi Ti Pi Ei`, `m` `u` `n`, or an exponent `e3`), rounded up to an integer like
/// `Quantity.Value()`. Exact integer arithmetic, no floats.
pub fn parse_quantity(text: &str) -> Result<u128, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number = number.strip_prefix('+').unwrap_or(number);
    if number.starts_with('-') {
        return Err("must not be negative".into());
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("not a quantity (e.g. 10M, 1Gi, 500k)".into());
    }
    // value = digits × 10^(pow10 − len(frac)) × 2^pow2
    let all = format!("{int}{frac}");
    let significant = all.trim_start_matches('0');
    let digits: u128 = if significant.is_empty() {
        0
    } else {
        significant
            .parse()
            .map_err(|_| "too many digits".to_string())?
    };
    let (pow10, pow2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        e if e.starts_with(['e', 'E']) => (
            e[1..].parse().map_err(|_| format!("bad exponent {e:?}"))?,
            0,
        ),
        other => return Err(format!("unknown suffix {other:?}")),
    };
    let exp10 = pow10 - i32::try_from(frac.len()).map_err(|_| "too long".to_string())?;
    if !(-60..=30).contains(&exp10) {
        return Err("out of range".into());
    }
    let too_big = || "out of range".to_string();
    let scaled = digits.checked_mul(1u128 << pow2).ok_or_else(too_big)?;
    if exp10 >= 0 {
        scaled
            .checked_mul(10u128.pow(exp10.unsigned_abs()))
            .ok_or_else(too_big)
    } else {
        let div = 10u128
            .checked_pow(exp10.unsigned_abs())
            .ok_or_else(too_big)?;
        Ok(scaled.div_ceil(div))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_become_bits_like_kubernetes() {
        for (text, want) in [
            ("10M", 10_000_000u128),
            ("1Gi", 1 << 30),
            ("500k", 500_000),
            ("1.5M", 1_500_000),
            ("1.1k", 1_100),
            ("100", 100),
            ("2e3", 2_000),
            ("1500m", 2),
            ("0.5", 1),
            ("1Ki", 1024),
        ] {
            assert_eq!(parse_quantity(text), Ok(want), "{text}");
        }
        for bad in ["", "M", "10X", "-1M", "1.2.3k", "abc", "10 M"] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn bandwidth_capability_and_refusals_name_the_annotation() {
        let mut ann = BTreeMap::new();
        assert_eq!(bandwidth(&ann), Ok(None));
        ann.insert(INGRESS_BANDWIDTH.to_string(), "10M".to_string());
        assert_eq!(
            bandwidth(&ann),
            Ok(Some(
                json!({"ingressRate": 10_000_000u64, "ingressBurst": u32::MAX})
            ))
        );
        ann.insert(EGRESS_BANDWIDTH.to_string(), "1Gi".to_string());
        assert_eq!(
            bandwidth(&ann).unwrap().unwrap()["egressRate"],
            json!(1u64 << 30)
        );
        ann.insert(EGRESS_BANDWIDTH.to_string(), "lots".to_string());
        let err = bandwidth(&ann).unwrap_err();
        assert!(err.contains(EGRESS_BANDWIDTH), "{err}");
        ann.insert(EGRESS_BANDWIDTH.to_string(), "10".to_string());
        assert!(bandwidth(&ann).unwrap_err().contains("small"));
        ann.insert(EGRESS_BANDWIDTH.to_string(), "2P".to_string());
        assert!(bandwidth(&ann).unwrap_err().contains("large"));
    }
}
