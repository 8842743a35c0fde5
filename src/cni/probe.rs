//! Which spec versions a plugin binary speaks, asked once per binary (path + mtime) with
//! `CNI_COMMAND=VERSION`, so a conf that names a version the plugin does not speak fails
//! with "the config wants X, the plugin speaks [..]" instead of an obscure parse error.
//! The cache is keyed by mtime, so an upgraded plugin is asked again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::version::PluginVersionInfo;

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
