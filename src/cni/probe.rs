//! Which spec versions a plugin binary speaks, asked once per binary (path + mtime) with
//! `CNI_COMMAND=VERSION`, so a conf that names a version the plugin does not speak fails
//! with "the config wants X, the plugin speaks [..]" instead of an obscure parse error.
//! The cache is keyed by mtime, so an upgraded plugin is asked again.
//! [`Cni::ensure_speaks`] (before ADD, CHECK, STATUS and GC) and [`Cni::ask_version`] live
//! here; DEL never asks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::chain::AttachmentVars;
use super::version::{self, PluginVersionInfo};
use super::{Cni, CniError, NetworkConfigList};

/// Per binary path: the mtime it had when asked, and its answer.
type Answers = HashMap<PathBuf, (Option<SystemTime>, PluginVersionInfo)>;

#[derive(Debug, Clone, Default)]
pub struct VersionCache {
    known: Arc<Mutex<Answers>>,
}

impl VersionCache {
    /// The cached answer for this binary, if it has not changed since.
    pub fn get(&self, binary: &Path) -> Option<PluginVersionInfo> {
        let mtime = mtime(binary);
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        match known.get(binary) {
            Some((at, info)) if *at == mtime => Some(info.clone()),
            _ => None,
        }
    }

    pub fn put(&self, binary: &Path, info: PluginVersionInfo) {
        let mtime = mtime(binary);
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(binary.to_owned(), (mtime, info));
    }
}

fn mtime(binary: &Path) -> Option<SystemTime> {
    std::fs::metadata(binary).and_then(|m| m.modified()).ok()
}

impl Cni {
    /// Asks each plugin of the list (once per binary) which versions it speaks, and refuses
    /// the list when one does not speak its version.
    pub(super) async fn ensure_speaks(&self, list: &NetworkConfigList) -> Result<(), CniError> {
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
        let inv = AttachmentVars {
            netns: "dummy".into(),
            ifname: "dummy".into(),
            ..AttachmentVars::none()
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
}
