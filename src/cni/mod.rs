//! The CNI layer: network configuration, plugin execution, result chaining and the
//! attachment cache, as the CNI spec and libcni define them.
//!
//! It knows nothing of Kubernetes: callers hand it a container id, a namespace path, an
//! interface name, CNI_ARGS and capability args. It is the only place that spawns plugins.
//!
//! Commands: ADD (in order, chaining prevResult), DEL (reverse, with the config and
//! result cached at ADD), CHECK (in order, cached result as prevResult; ≥ 0.4.0 unless
//! `disableCheck`), STATUS (≥ 1.1.0), GC (≥ 1.1.0 unless `disableGC`, with
//! `cni.dev/valid-attachments`), VERSION (asked once per plugin binary before it is first
//! used for ADD/CHECK/STATUS/GC, see [`probe`]).
//!
//! Deviations from libcni, and why:
//! - the cache stores the network list as JSON rather than base64 bytes (readable by
//!   operators), and is written before ADD, not after, so a crash mid-ADD can be undone;
//! - a plugin timeout kills the plugin's whole process group, not only the direct child;
//! - the environment holds only the CNI variables and PATH (libcni passes the runtime's
//!   whole environment), so nothing of the runtime leaks into plugins;
//! - DEL is not preceded by VERSION: teardown must never be blocked by a probe;
//! - [`Cni::delete_stale`] tears down stale cache entries of *every* network with the config
//!   each was made with, not only those of the current network as `GCNetworkList` does,
//!   so a conf change cannot strand an attachment;
//! - `cni.dev/valid-attachments` (and libcni's misspelt `cni.dev/attachments`) are always
//!   sent on GC, also when empty.

pub mod cache;
pub mod conf;
pub mod exec;
pub mod probe;
pub mod result;
pub mod version;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

pub use cache::{Cache, CacheEntry};
pub use conf::{ConfDir, DirLoad, NetworkConfigList, PluginConf};
pub use result::CniResult;
use version::CniVersion;

/// Who is being attached, in CNI's terms.
#[derive(Debug, Clone)]
pub struct RuntimeConf {
    pub container_id: String,
    /// The namespace; `None` when it is already gone (allowed for DEL).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `dns`, …), given only to plugins that declare them.
    pub capability_args: Map<String, Value>,
}

/// Broad classes of CNI failure, for callers that choose a response by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniErrorKind {
    /// The config names a plugin that is not installed: the node's setup is wrong.
    PluginMissing,
    /// A plugin ran past its timeout.
    Timeout,
    /// A plugin ran and failed, or answered something that is not CNI.
    PluginFailed,
    /// crisp's own side failed (cache, bad input).
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("invalid {what} {value:?} for CNI: only letters, digits, '_', '.', '-' are allowed")]
    InvalidName { what: &'static str, value: String },

    #[error(
        "network {network}: plugin {plugin:?} not found in {}{}",
        join_paths(dirs),
        unusable.iter().map(|p| format!(" ({} exists but is not an executable file)", p.display())).collect::<String>()
    )]
    PluginNotFound {
        network: String,
        plugin: String,
        dirs: Vec<PathBuf>,
        /// Files of that name that exist but cannot be run (mode, or not a regular file).
        unusable: Vec<PathBuf>,
    },

    #[error("network {network}: plugin {plugin} {command}: {source}")]
    Exec {
        network: String,
        plugin: String,
        command: &'static str,
        #[source]
        source: exec::ExecError,
    },

    #[error("{0}")]
    Plugin(Box<PluginFailure>),

    #[error("network {network}: plugin {plugin} {command} answered something that is not a CNI result: {reason}")]
    BadResult {
        network: String,
        plugin: String,
        command: &'static str,
        reason: String,
    },

    #[error("CNI cache {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A plugin's work done in process (crisp's fast path) failed.
    #[error("network {network}: plugin {plugin} {command} (in process): {reason}")]
    InProcess {
        network: String,
        plugin: String,
        command: &'static str,
        reason: String,
    },

    #[error("network {network}: no cached config for container {container_id} and no current config to tear it down with")]
    NoConfig {
        network: String,
        container_id: String,
    },

    #[error(
        "network {network}: no cached ADD result for container {container_id} to CHECK against"
    )]
    NoCachedResult {
        network: String,
        container_id: String,
    },

    #[error("network {network}: the config wants CNI version {wanted} but plugin {plugin} ({}) speaks only [{}]", binary.display(), supported.join(", "))]
    Incompatible {
        network: String,
        plugin: String,
        binary: PathBuf,
        wanted: String,
        supported: Vec<String>,
    },

    #[error("network {network}: plugin {plugin} VERSION answered something that is not a version answer: {reason}")]
    BadVersion {
        network: String,
        plugin: String,
        reason: String,
    },
}

/// A plugin that ran and exited non-zero: everything an operator needs to see why.
#[derive(Debug)]
pub struct PluginFailure {
    pub network: String,
    pub plugin: String,
    pub command: &'static str,
    /// "exit status 1", "killed by signal 9", …
    pub status: String,
    pub elapsed_ms: u128,
    /// The spec's error fields, when the plugin printed them.
    pub code: Option<u64>,
    pub msg: String,
    pub details: String,
    pub stderr_tail: String,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "network {}: plugin {} {} failed ({}, after {} ms)",
            self.network, self.plugin, self.command, self.status, self.elapsed_ms
        )?;
        if let Some(code) = self.code {
            write!(f, " with CNI error code {code}")?;
        }
        write!(f, ": {}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        write!(f, "{}", exec::stderr_suffix(&self.stderr_tail))
    }
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

impl CniError {
    /// The plugin the failure names, when it is about one plugin.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            CniError::PluginNotFound { plugin, .. }
            | CniError::Exec { plugin, .. }
            | CniError::BadResult { plugin, .. }
            | CniError::InProcess { plugin, .. }
            | CniError::Incompatible { plugin, .. }
            | CniError::BadVersion { plugin, .. } => Some(plugin),
            CniError::Plugin(failure) => Some(&failure.plugin),
            CniError::InvalidName { .. }
            | CniError::Cache { .. }
            | CniError::NoConfig { .. }
            | CniError::NoCachedResult { .. } => None,
        }
    }

    /// The spec's error code, when a plugin printed one.
    pub fn cni_code(&self) -> Option<u64> {
        match self {
            CniError::Plugin(failure) => failure.code,
            _ => None,
        }
    }

    /// The plugin's own message (the spec's `msg` and `details`) when it printed one, else
    /// the whole error.
    pub fn message(&self) -> String {
        match self {
            CniError::Plugin(failure) if !failure.msg.is_empty() => {
                if failure.details.is_empty() {
                    failure.msg.clone()
                } else {
                    format!("{} ({})", failure.msg, failure.details)
                }
            }
            other => other.to_string(),
        }
    }

    pub fn kind(&self) -> CniErrorKind {
        match self {
            // The node's CNI setup is wrong: a plugin is missing or speaks other versions.
            CniError::PluginNotFound { .. } | CniError::Incompatible { .. } => {
                CniErrorKind::PluginMissing
            }
            CniError::Exec {
                source: exec::ExecError::Timeout { .. },
                ..
            } => CniErrorKind::Timeout,
            CniError::Exec { .. }
            | CniError::Plugin(_)
            | CniError::BadResult { .. }
            | CniError::BadVersion { .. }
            | CniError::InProcess { .. } => CniErrorKind::PluginFailed,
            CniError::InvalidName { .. }
            | CniError::Cache { .. }
            | CniError::NoConfig { .. }
            | CniError::NoCachedResult { .. } => CniErrorKind::Internal,
        }
    }
}

/// How one plugin execution ended, for an [`Observer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Ok,
    /// Exited non-zero; `cni_code` is the spec's error code when the plugin printed one.
    Failed {
        cni_code: Option<u64>,
    },
    TimedOut,
    /// Could not be started or talked to.
    ExecError,
}

/// One plugin execution, as an [`Observer`] sees it.
#[derive(Debug, Clone)]
pub struct PluginRun<'a> {
    pub network: &'a str,
    pub plugin: &'a str,
    pub command: &'static str,
    pub container_id: &'a str,
    pub elapsed: Duration,
    pub outcome: RunOutcome,
}

/// Watches plugin executions (metrics, status): cni keeps no statistics itself.
pub trait Observer: Send + Sync {
    /// A chain operation (ADD, DEL) starts for a container.
    fn op_started(&self, _network: &str, _command: &'static str, _container_id: &str) {}
    fn plugin_ran(&self, run: &PluginRun<'_>);
}

#[derive(Clone, Default)]
struct ObserverSlot(Option<Arc<dyn Observer>>);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(observer)"
        } else {
            "None"
        })
    }
}

/// Runs network lists for attachments.
#[derive(Debug, Clone)]
pub struct Cni {
    bin_dirs: Vec<PathBuf>,
    timeout: Duration,
    cache: Cache,
    /// PATH handed to plugins (they exec iptables and friends).
    system_path: String,
    cni_path: String,
    observer: ObserverSlot,
    versions: probe::VersionCache,
}

/// An attachment still in use, as GC's `cni.dev/valid-attachments` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(rename = "ifname")]
    pub ifname: String,
}

/// What CHECK did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Every plugin answered CHECK successfully.
    Passed,
    /// The cached config sets `disableCheck`.
    Disabled,
    /// The cached config's version predates CHECK (0.4.0).
    Unsupported { version: String },
}

/// What the stale-attachment sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StaleReport {
    pub deleted: Vec<Attachment>,
    /// Kept because their cached config sets `disableGC`.
    pub kept_disable_gc: Vec<Attachment>,
    pub failed: Vec<String>,
}

/// PATH for plugins when crisp itself has none.
pub const DEFAULT_SYSTEM_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Cni {
    pub fn new(
        bin_dirs: Vec<PathBuf>,
        timeout: Duration,
        cache_dir: PathBuf,
        system_path: String,
    ) -> Self {
        let cni_path = join_paths(&bin_dirs);
        Cni {
            bin_dirs,
            timeout,
            cache: Cache::new(cache_dir),
            system_path,
            cni_path,
            observer: ObserverSlot::default(),
            versions: probe::VersionCache::default(),
        }
    }

    /// Reports every plugin execution to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = ObserverSlot(Some(observer));
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn bin_dirs(&self) -> &[PathBuf] {
        &self.bin_dirs
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The first executable file named `plugin` in the bin dirs.
    pub fn find_plugin(&self, network: &str, plugin: &str) -> Result<PathBuf, CniError> {
        use std::os::unix::fs::PermissionsExt;
        self.bin_dirs
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|path| {
                std::fs::metadata(path)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .ok_or_else(|| CniError::PluginNotFound {
                network: network.to_string(),
                plugin: plugin.to_string(),
                dirs: self.bin_dirs.clone(),
                unusable: self
                    .bin_dirs
                    .iter()
                    .map(|dir| dir.join(plugin))
                    .filter(|path| std::fs::symlink_metadata(path).is_ok())
                    .collect(),
            })
    }

    /// Checks that every plugin of the list is installed.
    pub fn check_plugins(&self, list: &NetworkConfigList) -> Result<(), CniError> {
        for plugin in &list.plugins {
            self.find_plugin(&list.name, &plugin.plugin_type)?;
        }
        Ok(())
    }

    /// ADD: runs the list in order, chaining each result into the next plugin's prevResult.
    /// The cache entry (config, args) is written before the first plugin runs, so a
    /// failed or interrupted ADD can always be torn down with [`Cni::del`].
    pub async fn add(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<CniResult, CniError> {
        validate_runtime_conf(rt)?;
        self.check_plugins(list)?;
        self.ensure_speaks(list).await?;
        let mut entry = CacheEntry {
            kind: cache::CACHE_KIND.to_string(),
            container_id: rt.container_id.clone(),
            network_name: list.name.clone(),
            if_name: rt.ifname.clone(),
            netns: netns_str(rt),
            config: list.json.clone(),
            cni_args: rt.args.clone(),
            capability_args: rt.capability_args.clone(),
            result: None,
        };
        self.save_cache(&entry)?;
        if let Some(o) = &self.observer.0 {
            o.op_started(&list.name, "ADD", &rt.container_id);
        }
        let mut prev: Option<Value> = None;
        let mut last: Option<CniResult> = None;
        for plugin in &list.plugins {
            let stdout = self.invoke(list, plugin, "ADD", rt, prev.as_ref()).await?;
            let parsed = result::parse_result(&list.cni_version, &stdout)
                .and_then(|r| r.to_version_json(&list.cni_version).map(|json| (r, json)))
                .map_err(|e| CniError::BadResult {
                    network: list.name.clone(),
                    plugin: plugin.plugin_type.clone(),
                    command: "ADD",
                    reason: e.to_string(),
                })?;
            prev = Some(parsed.1);
            last = Some(parsed.0);
        }
        let result = last.unwrap_or_default();
        entry.result = prev;
        self.save_cache(&entry)?;
        Ok(result)
    }

    /// DEL: runs the cached list (or `fallback` when nothing is cached) in reverse order,
    /// with the cached result as prevResult, then forgets the cache entry. Running DEL for
    /// an attachment that never finished ADD, or twice, is fine: plugins must tolerate it.
    pub async fn del(
        &self,
        network_name: &str,
        rt: &RuntimeConf,
        fallback: Option<&NetworkConfigList>,
    ) -> Result<(), CniError> {
        validate_runtime_conf(rt)?;
        let cached = self
            .cache
            .load(network_name, &rt.container_id, &rt.ifname)
            .map_err(|source| CniError::Cache {
                path: self.cache.path(network_name, &rt.container_id, &rt.ifname),
                source,
            })?;
        let (list, rt, prev) = match cached {
            Some(entry) => {
                let list = cached_list(
                    &entry,
                    &self.cache.path(network_name, &rt.container_id, &rt.ifname),
                )?;
                let cached_rt = RuntimeConf {
                    args: entry.cni_args,
                    capability_args: entry.capability_args,
                    ..rt.clone()
                };
                (list, cached_rt, entry.result)
            }
            None => match fallback {
                Some(list) if list.name == network_name => (list.clone(), rt.clone(), None),
                _ => {
                    return Err(CniError::NoConfig {
                        network: network_name.to_string(),
                        container_id: rt.container_id.clone(),
                    })
                }
            },
        };
        // libcni hands DEL a prevResult only from 0.4.0 on.
        let prev = match CniVersion::parse(&list.cni_version) {
            Ok(v) if v.supports_check() => prev
                .and_then(|p| {
                    result::parse_result(&list.cni_version, p.to_string().as_bytes()).ok()
                })
                .and_then(|r| r.to_version_json(&list.cni_version).ok()),
            _ => None,
        };
        if let Some(o) = &self.observer.0 {
            o.op_started(&list.name, "DEL", &rt.container_id);
        }
        for plugin in list.plugins.iter().rev() {
            self.invoke(&list, plugin, "DEL", &rt, prev.as_ref())
                .await?;
        }
        self.cache
            .remove(&list.name, &rt.container_id, &rt.ifname)
            .map_err(|source| CniError::Cache {
                path: self.cache.path(&list.name, &rt.container_id, &rt.ifname),
                source,
            })
    }

    fn save_cache(&self, entry: &CacheEntry) -> Result<(), CniError> {
        self.cache.save(entry).map_err(|source| CniError::Cache {
            path: self
                .cache
                .path(&entry.network_name, &entry.container_id, &entry.if_name),
            source,
        })
    }

    /// CHECK: runs the cached list in order with the cached ADD result as prevResult and
    /// the cached CNI_ARGS and capability args (libcni `CheckNetworkList`).
    pub async fn check(
        &self,
        network_name: &str,
        rt: &RuntimeConf,
    ) -> Result<CheckOutcome, CniError> {
        validate_runtime_conf(rt)?;
        let path = self.cache.path(network_name, &rt.container_id, &rt.ifname);
        let entry = self
            .cache
            .load(network_name, &rt.container_id, &rt.ifname)
            .map_err(|source| CniError::Cache {
                path: path.clone(),
                source,
            })?;
        let Some(entry) = entry.filter(|e| e.result.is_some()) else {
            return Err(CniError::NoCachedResult {
                network: network_name.to_string(),
                container_id: rt.container_id.clone(),
            });
        };
        let list = cached_list(&entry, &path)?;
        if !CniVersion::parse(&list.cni_version).is_ok_and(|v| v.supports_check()) {
            return Ok(CheckOutcome::Unsupported {
                version: list.cni_version.clone(),
            });
        }
        if list.disable_check {
            return Ok(CheckOutcome::Disabled);
        }
        let prev = entry
            .result
            .as_ref()
            .and_then(|p| result::parse_result(&list.cni_version, p.to_string().as_bytes()).ok())
            .and_then(|r| r.to_version_json(&list.cni_version).ok());
        let rt = RuntimeConf {
            args: entry.cni_args,
            capability_args: entry.capability_args,
            ..rt.clone()
        };
        self.check_plugins(&list)?;
        self.ensure_speaks(&list).await?;
        for plugin in &list.plugins {
            self.invoke(&list, plugin, "CHECK", &rt, prev.as_ref())
                .await?;
        }
        Ok(CheckOutcome::Passed)
    }

    /// STATUS (libcni `GetStatusNetworkList`): asks each plugin in order and stops at the
    /// first error. Lists older than 1.1.0 have no STATUS (`Ok(false)`), but every list's
    /// plugins are asked VERSION first (once per binary), so a version mismatch shows in
    /// readiness before any RunPodSandbox trips over it.
    pub async fn status(&self, list: &NetworkConfigList) -> Result<bool, CniError> {
        self.check_plugins(list)?;
        self.ensure_speaks(list).await?;
        if !CniVersion::parse(&list.cni_version).is_ok_and(|v| v.supports_status_gc()) {
            return Ok(false);
        }
        for plugin in &list.plugins {
            let stdin = injected(list, plugin, None);
            self.run_plugin(
                &list.name,
                &plugin.plugin_type,
                "STATUS",
                &Invocation::bare(),
                &stdin,
            )
            .await?;
        }
        Ok(true)
    }

    /// GC for the plugins (libcni `GCNetworkList`, second half): every plugin of the list
    /// gets `cni.dev/valid-attachments`. Skipped (`Ok(false)`) below 1.1.0 or with
    /// `disableGC`. Every plugin is asked even when one fails; all failures come back.
    pub async fn gc(
        &self,
        list: &NetworkConfigList,
        valid: &[Attachment],
    ) -> Result<bool, Vec<CniError>> {
        if list.disable_gc
            || !CniVersion::parse(&list.cni_version).is_ok_and(|v| v.supports_status_gc())
        {
            return Ok(false);
        }
        self.check_plugins(list).map_err(|e| vec![e])?;
        self.ensure_speaks(list).await.map_err(|e| vec![e])?;
        let valid = serde_json::to_value(valid).unwrap_or(Value::Array(Vec::new()));
        let mut errors = Vec::new();
        for plugin in &list.plugins {
            let mut conf = plugin.raw.clone();
            conf.insert("name".into(), Value::String(list.name.clone()));
            conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
            conf.insert("cni.dev/valid-attachments".into(), valid.clone());
            // libcni also sends the name the spec first used (containernetworking/cni#1101).
            conf.insert("cni.dev/attachments".into(), valid.clone());
            let stdin = serde_json::to_vec(&conf).unwrap_or_default();
            if let Err(e) = self
                .run_plugin(
                    &list.name,
                    &plugin.plugin_type,
                    "GC",
                    &Invocation::bare(),
                    &stdin,
                )
                .await
            {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(true)
        } else {
            Err(errors)
        }
    }

    /// Tears down every cached attachment that is not in `valid` (libcni `GCNetworkList`,
    /// first half), with the config it was made with, unless that config sets `disableGC`.
    pub async fn delete_stale(&self, valid: &[Attachment]) -> StaleReport {
        let mut report = StaleReport::default();
        let cache = self.cache.clone();
        let entries = match tokio::task::spawn_blocking(move || cache.list()).await {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                report
                    .failed
                    .push(format!("listing {}: {e}", self.cache.dir().display()));
                return report;
            }
            Err(e) => {
                report.failed.push(format!("listing the CNI cache: {e}"));
                return report;
            }
        };
        for entry in entries {
            let attachment = Attachment {
                container_id: entry.container_id.clone(),
                ifname: entry.if_name.clone(),
            };
            if valid.contains(&attachment) {
                continue;
            }
            let path = self
                .cache
                .path(&entry.network_name, &entry.container_id, &entry.if_name);
            if cached_list(&entry, &path).is_ok_and(|l| l.disable_gc) {
                report.kept_disable_gc.push(attachment);
                continue;
            }
            let netns =
                Some(PathBuf::from(&entry.netns)).filter(|p| !entry.netns.is_empty() && p.exists());
            let rt = RuntimeConf {
                container_id: entry.container_id.clone(),
                netns,
                ifname: entry.if_name.clone(),
                args: Vec::new(),
                capability_args: Map::new(),
            };
            match self.del(&entry.network_name, &rt, None).await {
                Ok(()) => {
                    tracing::warn!(network = %entry.network_name, container_id = %entry.container_id, ifname = %entry.if_name, "tore down a cached CNI attachment that no sandbox owns");
                    report.deleted.push(attachment);
                }
                Err(e) => {
                    tracing::error!(network = %entry.network_name, container_id = %entry.container_id, error = %e, "tearing down a stale CNI attachment failed");
                    report.failed.push(e.to_string());
                }
            }
        }
        report
    }

    /// Asks each plugin of the list (once per binary) which versions it speaks, and refuses
    /// the list when one does not speak its version.
    async fn ensure_speaks(&self, list: &NetworkConfigList) -> Result<(), CniError> {
        for plugin in &list.plugins {
            let binary = self.find_plugin(&list.name, &plugin.plugin_type)?;
            let info = match self.versions.get(&binary) {
                Some(info) => info,
                None => {
                    let info = self.ask_version(&list.name, &plugin.plugin_type).await?;
                    self.versions.put(&binary, info.clone());
                    info
                }
            };
            if !info.supports(&list.cni_version) {
                return Err(CniError::Incompatible {
                    network: list.name.clone(),
                    plugin: plugin.plugin_type.clone(),
                    binary,
                    wanted: list.cni_version.clone(),
                    supported: info.effective_versions(),
                });
            }
        }
        Ok(())
    }

    /// VERSION, as libcni's `GetVersionInfo` sends it; a plugin too old to know the command
    /// ("unknown CNI_COMMAND: VERSION") speaks 0.1.0.
    pub async fn ask_version(
        &self,
        network: &str,
        plugin: &str,
    ) -> Result<version::PluginVersionInfo, CniError> {
        let newest = version::SUPPORTED_VERSIONS[version::SUPPORTED_VERSIONS.len() - 1];
        let stdin =
            serde_json::to_vec(&serde_json::json!({ "cniVersion": newest })).unwrap_or_default();
        // Older skel versions insist on these being set.
        let inv = Invocation {
            netns: "dummy".into(),
            ifname: "dummy".into(),
            ..Invocation::bare()
        };
        match self
            .run_plugin(network, plugin, "VERSION", &inv, &stdin)
            .await
        {
            Ok(stdout) => {
                version::PluginVersionInfo::parse(&stdout).map_err(|e| CniError::BadVersion {
                    network: network.to_string(),
                    plugin: plugin.to_string(),
                    reason: e.to_string(),
                })
            }
            Err(CniError::Plugin(f)) if f.msg == "unknown CNI_COMMAND: VERSION" => {
                Ok(version::PluginVersionInfo::legacy())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs one plugin of a list for one attachment command (ADD, CHECK, DEL).
    async fn invoke(
        &self,
        list: &NetworkConfigList,
        plugin: &PluginConf,
        command: &'static str,
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>, CniError> {
        let stdin = plugin_stdin(list, plugin, prev, &rt.capability_args);
        let inv = Invocation {
            container_id: rt.container_id.clone(),
            netns: netns_str(rt),
            ifname: rt.ifname.clone(),
            args: rt
                .args
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";"),
        };
        self.run_plugin(&list.name, &plugin.plugin_type, command, &inv, &stdin)
            .await
    }

    /// Runs one plugin for one command; a non-zero exit becomes [`CniError::Plugin`] with
    /// the spec's error fields when the plugin printed them.
    async fn run_plugin(
        &self,
        network: &str,
        plugin: &str,
        command: &'static str,
        inv: &Invocation,
        stdin: &[u8],
    ) -> Result<Vec<u8>, CniError> {
        let binary = self.find_plugin(network, plugin)?;
        let env = exec::Invocation {
            command,
            container_id: &inv.container_id,
            netns: &inv.netns,
            ifname: &inv.ifname,
            args: &inv.args,
            path: &self.cni_path,
        };
        let started = std::time::Instant::now();
        let out = exec::run(&binary, &env, stdin, &self.system_path, self.timeout).await;
        if let Some(o) = &self.observer.0 {
            let outcome = match &out {
                Ok(out) if out.success => RunOutcome::Ok,
                Ok(out) => RunOutcome::Failed {
                    cni_code: plugin_error(&out.stdout).0,
                },
                Err(exec::ExecError::Timeout { .. }) => RunOutcome::TimedOut,
                Err(_) => RunOutcome::ExecError,
            };
            o.plugin_ran(&PluginRun {
                network,
                plugin,
                command,
                container_id: &inv.container_id,
                elapsed: out
                    .as_ref()
                    .map_or_else(|_| started.elapsed(), |o| o.elapsed),
                outcome,
            });
        }
        let out = out.map_err(|source| CniError::Exec {
            network: network.to_string(),
            plugin: plugin.to_string(),
            command,
            source,
        })?;
        tracing::debug!(
            network, plugin, command,
            container_id = %inv.container_id, elapsed_ms = out.elapsed.as_millis() as u64,
            status = %out.status, "CNI plugin ran"
        );
        if out.success {
            return Ok(out.stdout);
        }
        let (code, msg, details) = plugin_error(&out.stdout);
        Err(CniError::Plugin(Box::new(PluginFailure {
            network: network.to_string(),
            plugin: plugin.to_string(),
            command,
            status: out.status,
            elapsed_ms: out.elapsed.as_millis(),
            code,
            msg,
            details,
            stderr_tail: out.stderr_tail,
        })))
    }
}

/// The per-attachment CNI variables of one exec (CNI_COMMAND and CNI_PATH are added by
/// [`Cni::run_plugin`]). Commands without an attachment (STATUS, GC) leave them empty.
#[derive(Debug, Clone, Default)]
struct Invocation {
    container_id: String,
    netns: String,
    ifname: String,
    args: String,
}

impl Invocation {
    fn bare() -> Self {
        Invocation::default()
    }
}

/// A plugin's config with the list's name and version (libcni `InjectConf`), optionally a
/// prevResult; no runtimeConfig.
fn injected(list: &NetworkConfigList, plugin: &PluginConf, prev: Option<&Value>) -> Vec<u8> {
    let mut conf = plugin.raw.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    serde_json::to_vec(&conf).unwrap_or_default()
}

/// The network list a cache entry was made with.
fn cached_list(entry: &CacheEntry, path: &Path) -> Result<NetworkConfigList, CniError> {
    NetworkConfigList::from_list_value(entry.config.clone(), Path::new(""))
        .and_then(|l| {
            if l.plugins.is_empty() {
                Err(conf::ConfError {
                    reason: "the cached list has no plugins".into(),
                })
            } else {
                Ok(l)
            }
        })
        .map_err(|e| CniError::Cache {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.reason),
        })
}

fn netns_str(rt: &RuntimeConf) -> String {
    rt.netns
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn validate_runtime_conf(rt: &RuntimeConf) -> Result<(), CniError> {
    for (what, value) in [
        ("container id", &rt.container_id),
        ("interface name", &rt.ifname),
    ] {
        if !conf::valid_network_name(value) {
            return Err(CniError::InvalidName {
                what,
                value: value.clone(),
            });
        }
    }
    Ok(())
}

/// The plugin's stdin: its own config plus the list's name and version, prevResult, and a
/// runtimeConfig holding only the capabilities it declares (libcni `buildOneConfig`).
pub fn plugin_stdin(
    list: &NetworkConfigList,
    plugin: &PluginConf,
    prev: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Vec<u8> {
    let mut conf = plugin.raw.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let runtime_config: Map<String, Value> = plugin
        .capabilities
        .iter()
        .filter_map(|cap| capability_args.get(cap).map(|v| (cap.clone(), v.clone())))
        .collect();
    if !runtime_config.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    // Serialising a Map of Values cannot fail.
    serde_json::to_vec(&conf).unwrap_or_default()
}

/// The spec's error object (`code`, `msg`, `details`) from a failed plugin's stdout; when
/// the plugin printed something else, that text is the message.
fn plugin_error(stdout: &[u8]) -> (Option<u64>, String, String) {
    #[derive(serde::Deserialize)]
    struct ErrorJson {
        code: Option<u64>,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    match serde_json::from_slice::<ErrorJson>(stdout) {
        Ok(e) => (e.code, e.msg, e.details),
        Err(_) => {
            let text = String::from_utf8_lossy(stdout);
            let text = text.trim();
            let msg = if text.is_empty() {
                "no error message on stdout".to_string()
            } else {
                text.chars().take(512).collect()
            };
            (None, msg, String::new())
        }
    }
}
