//! The attachment cache, like libcni's `/var/lib/cni/results`: per (network, container id,
//! ifname), the exact network list used, CNI_ARGS, the capability args and, once ADD has
//! succeeded, the result. It is written *before* ADD runs, so teardown always knows the
//! config that setup used, even after a crash or a change of the conf dir. Unlike libcni,
//! the config is stored as JSON, not base64, so an operator can read it (as root: the
//! directories are 0700 and the entries 0600, see `crate::modes`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CniError, NetworkConfigList, RuntimeConf};
use crate::modes;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub kind: String,
    pub container_id: String,
    pub network_name: String,
    pub if_name: String,
    pub netns: String,
    pub config: Value,
    pub cni_args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
    /// The ADD result in the list's version; `None` while ADD has not finished.
    pub result: Option<Value>,
}

const CACHE_KIND: &str = "cniCacheV1";

impl CacheEntry {
    /// The entry written before ADD runs: the list as loaded, the attachment's ids, its
    /// CNI_ARGS and capability args, and no result yet (set `result` once ADD succeeded).
    pub fn new(list: &NetworkConfigList, rt: &RuntimeConf) -> Self {
        CacheEntry {
            kind: CACHE_KIND.to_string(),
            container_id: rt.container_id.clone(),
            network_name: list.name.clone(),
            if_name: rt.ifname.clone(),
            netns: rt.netns_str(),
            config: list.json.clone(),
            cni_args: rt.args.clone(),
            capability_args: rt.capability_args.clone(),
            result: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry's file; every part was validated as a plain name before it gets here.
    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{network}-{container_id}-{ifname}"))
    }

    /// Writes the entry atomically (both the exec chain and the fast path save through
    /// this); a failure names the entry's file.
    pub fn store(&self, entry: &CacheEntry) -> Result<(), CniError> {
        self.save(entry).map_err(|source| CniError::Cache {
            path: self.path(&entry.network_name, &entry.container_id, &entry.if_name),
            source,
        })
    }

    /// The raw write behind [`Cache::store`].
    fn save(&self, entry: &CacheEntry) -> std::io::Result<()> {
        modes::create_dir_all(&self.dir, modes::PRIVATE_DIR)?;
        let path = self.path(&entry.network_name, &entry.container_id, &entry.if_name);
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        // Atomic (a crash never leaves half an entry) but not synced, like libcni's cache:
        // the caller makes its own intent durable before ADD, and after a power cut the pod
        // namespaces are gone, so teardown needs only the network's name and config.
        let write = || -> std::io::Result<()> {
            let mut file = modes::create_file(&tmp, modes::PRIVATE_FILE)?;
            file.write_all(&bytes)?;
            fs::rename(&tmp, &path)
        };
        write().inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    /// The entry, or `None` when there is none.
    pub fn load(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> std::io::Result<Option<CacheEntry>> {
        let path = self.path(network, container_id, ifname);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> std::io::Result<()> {
        match fs::remove_file(self.path(network, container_id, ifname)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every entry on disk (for start-up audits).
    pub fn list(&self) -> std::io::Result<Vec<CacheEntry>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            if let Ok(parsed) = fs::read(&path).map(|b| serde_json::from_slice::<CacheEntry>(&b)) {
                match parsed {
                    Ok(e) => out.push(e),
                    Err(e) => {
                        tracing::warn!(
                            file = %path.display(),
                            error = %e,
                            "unreadable CNI cache entry"
                        )
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path().join("results"));
        let entry = CacheEntry {
            kind: CACHE_KIND.into(),
            container_id: "abc".into(),
            network_name: "net".into(),
            if_name: "eth0".into(),
            netns: "/run/netns/x".into(),
            config: serde_json::json!({"name":"net","plugins":[{"type":"bridge"}]}),
            cni_args: vec![("IgnoreUnknown".into(), "1".into())],
            capability_args: Map::new(),
            result: None,
        };
        cache.save(&entry).expect("save");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(cache.dir()), 0o700);
        assert_eq!(mode(&cache.path("net", "abc", "eth0")), 0o600);
        assert_eq!(
            cache.load("net", "abc", "eth0").expect("load"),
            Some(entry.clone())
        );
        assert_eq!(cache.list().expect("list").len(), 1);
        cache.remove("net", "abc", "eth0").expect("remove");
        assert_eq!(cache.load("net", "abc", "eth0").expect("load"), None);
        cache.remove("net", "abc", "eth0").expect("remove twice");
    }

    #[test]
    fn a_new_entry_is_stored_before_add_with_no_result() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path().join("results"));
        let list = NetworkConfigList::from_list_bytes(
            br#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"}]}"#,
            Path::new("t.conflist"),
        )
        .expect("valid list");
        let rt = RuntimeConf {
            container_id: "abc".into(),
            netns: Some("/run/netns/x".into()),
            ifname: "eth0".into(),
            args: vec![("K".into(), "V".into())],
            capability_args: Map::new(),
        };
        let entry = CacheEntry::new(&list, &rt);
        assert_eq!(entry.kind, CACHE_KIND);
        assert_eq!(entry.netns, "/run/netns/x");
        assert_eq!(entry.config, list.json);
        assert_eq!(entry.result, None);
        cache.store(&entry).expect("store");
        assert_eq!(cache.load("net", "abc", "eth0").expect("load"), Some(entry));
    }
}
