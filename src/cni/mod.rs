//! The CNI layer: network configuration, plugin execution, result chaining and the
//! attachment cache, as the CNI spec and libcni define them.
//!
//! It knows nothing of Kubernetes: callers hand it a container id, a namespace path, an
//! interface name, CNI_ARGS and capability args. It is the only place that spawns plugins.
//!
//! Deviations from libcni, and why:
//! - the cache stores the network list as JSON rather than base64 bytes (readable by
//!   operators), and is written before ADD, not after, so a crash mid-ADD can be undone;
//! - a plugin timeout kills the plugin's whole process group, not only the direct child.

pub mod cache;
pub mod conf;
pub mod exec;
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
        "network {network}: plugin {plugin:?} not found in {}",
        join_paths(dirs)
    )]
    PluginNotFound {
        network: String,
        plugin: String,
        dirs: Vec<PathBuf>,
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

    #[error("network {network}: no cached config for container {container_id} and no current config to tear it down with")]
    NoConfig {
        network: String,
        container_id: String,
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
    pub fn kind(&self) -> CniErrorKind {
        match self {
            CniError::PluginNotFound { .. } => CniErrorKind::PluginMissing,
            CniError::Exec {
                source: exec::ExecError::Timeout { .. },
                ..
            } => CniErrorKind::Timeout,
            CniError::Exec { .. } | CniError::Plugin(_) | CniError::BadResult { .. } => {
                CniErrorKind::PluginFailed
            }
            CniError::InvalidName { .. } | CniError::Cache { .. } | CniError::NoConfig { .. } => {
                CniErrorKind::Internal
            }
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
        }
    }

    /// Reports every plugin execution to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = ObserverSlot(Some(observer));
        self
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
                let list = NetworkConfigList::from_list_value(entry.config.clone(), Path::new(""))
                    .map_err(|e| CniError::Cache {
                        path: self.cache.path(network_name, &rt.container_id, &rt.ifname),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.reason),
                    })?;
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

    /// Runs one plugin for one command; a non-zero exit becomes [`CniError::Plugin`] with
    /// the spec's error fields when the plugin printed them.
    async fn invoke(
        &self,
        list: &NetworkConfigList,
        plugin: &PluginConf,
        command: &'static str,
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>, CniError> {
        let binary = self.find_plugin(&list.name, &plugin.plugin_type)?;
        let stdin = plugin_stdin(list, plugin, prev, &rt.capability_args);
        let netns = netns_str(rt);
        let args = rt
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        let inv = exec::Invocation {
            command,
            container_id: &rt.container_id,
            netns: &netns,
            ifname: &rt.ifname,
            args: &args,
            path: &self.cni_path,
        };
        let started = std::time::Instant::now();
        let out = exec::run(&binary, &inv, &stdin, &self.system_path, self.timeout).await;
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
                network: &list.name,
                plugin: &plugin.plugin_type,
                command,
                container_id: &rt.container_id,
                elapsed: out
                    .as_ref()
                    .map_or_else(|_| started.elapsed(), |o| o.elapsed),
                outcome,
            });
        }
        let out = out.map_err(|source| CniError::Exec {
            network: list.name.clone(),
            plugin: plugin.plugin_type.clone(),
            command,
            source,
        })?;
        tracing::debug!(
            network = %list.name, plugin = %plugin.plugin_type, command,
            container_id = %rt.container_id, elapsed_ms = out.elapsed.as_millis() as u64,
            status = %out.status, "CNI plugin ran"
        );
        if out.success {
            return Ok(out.stdout);
        }
        let (code, msg, details) = plugin_error(&out.stdout);
        Err(CniError::Plugin(Box::new(PluginFailure {
            network: list.name.clone(),
            plugin: plugin.plugin_type.clone(),
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
