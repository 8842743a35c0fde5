//! The chain engine: ADD (in order, chaining prevResult), DEL (reverse, cached config and
//! result), CHECK (in order, cached result), and the one-plugin exec step they share with
//! STATUS, GC and VERSION. It never decides which network a pod gets.

use std::path::Path;

use serde_json::{Map, Value};

use super::cache::CacheEntry;
use super::conf::{self, NetworkConfigList, PluginConf};
use super::observer::{PluginRun, RunOutcome};
use super::result::{self, CniResult};
use super::version::CniVersion;
use super::{exec, Cni, CniError, PluginFailure, RuntimeConf};

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

impl Cni {
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
        let mut entry = CacheEntry::new(list, rt);
        self.cache.store(&entry)?;
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
        self.cache.store(&entry)?;
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

    /// Runs one plugin of a list for one attachment command (ADD, CHECK, DEL).
    pub(super) async fn invoke(
        &self,
        list: &NetworkConfigList,
        plugin: &PluginConf,
        command: &'static str,
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>, CniError> {
        let stdin = plugin_stdin(list, plugin, prev, &rt.capability_args);
        let inv = AttachmentVars {
            container_id: rt.container_id.clone(),
            netns: rt.netns_str(),
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
    pub(super) async fn run_plugin(
        &self,
        network: &str,
        plugin: &str,
        command: &'static str,
        vars: &AttachmentVars,
        stdin: &[u8],
    ) -> Result<Vec<u8>, CniError> {
        let binary = self.find_plugin(network, plugin)?;
        let env = exec::PluginEnv {
            command,
            container_id: &vars.container_id,
            netns: &vars.netns,
            ifname: &vars.ifname,
            args: &vars.args,
            path: &self.cni_path,
        };
        let started = std::time::Instant::now();
        let out = exec::run(&binary, &env, stdin, &self.system_path, self.timeout).await;
        if let Some(o) = &self.observer.0 {
            o.plugin_ran(&PluginRun {
                network,
                plugin,
                command,
                container_id: &vars.container_id,
                elapsed: out
                    .as_ref()
                    .map_or_else(|_| started.elapsed(), |o| o.elapsed),
                outcome: run_outcome(&out),
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
            container_id = %vars.container_id, elapsed_ms = out.elapsed.as_millis() as u64,
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

/// How a plugin execution ended, as an observer is told.
fn run_outcome(out: &Result<exec::Output, exec::ExecError>) -> RunOutcome {
    match out {
        Ok(out) if out.success => RunOutcome::Ok,
        Ok(out) => RunOutcome::Failed {
            cni_code: plugin_error(&out.stdout).0,
        },
        Err(exec::ExecError::Timeout { .. }) => RunOutcome::TimedOut,
        Err(_) => RunOutcome::ExecError,
    }
}

/// The attachment's CNI variables (CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS) as the
/// chain owns them; [`Cni::run_plugin`] lends them to an [`exec::PluginEnv`] with
/// CNI_COMMAND and CNI_PATH added.
#[derive(Debug, Clone, Default)]
pub(super) struct AttachmentVars {
    pub(super) container_id: String,
    pub(super) netns: String,
    pub(super) ifname: String,
    pub(super) args: String,
}

impl AttachmentVars {
    /// For commands without an attachment (STATUS, GC): every variable empty.
    pub(super) fn none() -> Self {
        AttachmentVars::default()
    }
}

/// The network list a cache entry was made with.
pub(super) fn cached_list(entry: &CacheEntry, path: &Path) -> Result<NetworkConfigList, CniError> {
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
