//! STATUS and GC: asking a network's plugins whether they are ready, telling them which
//! attachments are still valid, and tearing down cached attachments no sandbox owns. It
//! never decides which attachments are valid: the caller lists them.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::chain::{cached_list, AttachmentVars};
use super::version::CniVersion;
use super::{CacheEntry, Cni, CniError, NetworkConfigList, PluginConf, RuntimeConf};

/// An attachment still in use, as GC's `cni.dev/valid-attachments` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(rename = "ifname")]
    pub ifname: String,
}

/// What the stale-attachment sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StaleReport {
    pub deleted: Vec<Attachment>,
    /// Kept because their cached config sets `disableGC`.
    pub kept_disable_gc: Vec<Attachment>,
    pub failed: Vec<String>,
}

impl Cni {
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
                &AttachmentVars::none(),
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
                    &AttachmentVars::none(),
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
        let entries = match self.cached_entries().await {
            Ok(entries) => entries,
            Err(why) => {
                report.failed.push(why);
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
            match self.tear_down_cached(&entry).await {
                Ok(()) => report.deleted.push(attachment),
                Err(e) => report.failed.push(e.to_string()),
            }
        }
        report
    }

    /// Every entry of the CNI cache, read off the async workers; the error says what failed.
    pub async fn cached_entries(&self) -> Result<Vec<CacheEntry>, String> {
        let cache = self.cache.clone();
        match tokio::task::spawn_blocking(move || cache.list()).await {
            Ok(Ok(entries)) => Ok(entries),
            Ok(Err(e)) => Err(format!("listing {}: {e}", self.cache.dir().display())),
            Err(e) => Err(format!("listing the CNI cache: {e}")),
        }
    }

    /// DEL of one cached attachment no sandbox owns, in its namespace if that still exists.
    async fn tear_down_cached(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let netns =
            Some(PathBuf::from(&entry.netns)).filter(|p| !entry.netns.is_empty() && p.exists());
        let rt = RuntimeConf {
            container_id: entry.container_id.clone(),
            netns,
            ifname: entry.if_name.clone(),
            args: Vec::new(),
            capability_args: Map::new(),
        };
        let outcome = self.del(&entry.network_name, &rt, None).await;
        match &outcome {
            Ok(()) => tracing::warn!(
                network = %entry.network_name,
                container_id = %entry.container_id,
                ifname = %entry.if_name,
                "tore down a cached CNI attachment that no sandbox owns"
            ),
            Err(e) => tracing::error!(
                network = %entry.network_name,
                container_id = %entry.container_id,
                error = %e,
                "tearing down a stale CNI attachment failed"
            ),
        }
        outcome
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
