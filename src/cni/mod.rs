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
mod chain;
pub mod conf;
pub mod confdir;
mod error;
pub mod exec;
mod gc;
mod observer;
pub mod probe;
pub mod result;
pub mod version;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

pub use cache::{Cache, CacheEntry};
pub use chain::{plugin_stdin, CheckOutcome};
pub use conf::{DirLoad, NetworkConfigList, PluginConf};
pub use confdir::ConfDir;
use error::join_paths;
pub use error::{CniError, CniErrorKind, PluginFailure};
pub use gc::{Attachment, StaleReport};
use observer::ObserverSlot;
pub use observer::{Observer, PluginRun, RunOutcome};
pub use result::CniResult;

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

impl RuntimeConf {
    /// The namespace path as plugins get it in CNI_NETNS; empty when it is gone.
    pub fn netns_str(&self) -> String {
        self.netns
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
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
}
