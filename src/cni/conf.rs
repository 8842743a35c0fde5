//! Loading CNI network configuration: the conf dir's `*.conf`, `*.conflist` and `*.json`
//! files in lexical order, the first valid one being the network (libcni `ConfFiles` +
//! `LoadConfList`). A single-plugin conf becomes a one-plugin list, as libcni's
//! `ConfListFromConf` does. Invalid files are skipped and reported with their parse error.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Map, Value};

use super::version::CniVersion;

/// One plugin of a network list: its type and its configuration object as written.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    pub plugin_type: String,
    /// Capabilities the plugin declares with `"capabilities": {"name": true}`.
    pub capabilities: BTreeSet<String>,
    pub raw: Map<String, Value>,
}

/// A network configuration list, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<PluginConf>,
    /// The list as JSON (for `.conf` files, the list libcni would build), kept in the cache
    /// so teardown uses exactly what setup used.
    pub json: Value,
    /// The file it came from (empty for lists read back from the cache).
    pub source: PathBuf,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("{reason}")]
pub struct ConfError {
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> ConfError {
    ConfError {
        reason: reason.into(),
    }
}

/// A CNI network name may become part of a file name (cache, IPAM dirs): the spec's rule.
pub fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl NetworkConfigList {
    /// Parses a `.conflist` document.
    pub fn from_list_bytes(bytes: &[u8], source: &Path) -> Result<Self, ConfError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        Self::from_list_value(value, source)
    }

    /// Parses a single-plugin `.conf` document and wraps it in a list.
    pub fn from_conf_bytes(bytes: &[u8], source: &Path) -> Result<Self, ConfError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let Value::Object(conf) = value else {
            return Err(bad("the document is not a JSON object"));
        };
        if conf.contains_key("plugins") {
            return Err(bad(
                "a \"plugins\" list in a single-plugin file: name it .conflist",
            ));
        }
        let mut list = Map::new();
        for key in ["cniVersion", "name"] {
            if let Some(v) = conf.get(key) {
                list.insert(key.into(), v.clone());
            }
        }
        list.insert("plugins".into(), Value::Array(vec![Value::Object(conf)]));
        Self::from_list_value(Value::Object(list), source)
    }

    /// Parses a list from its JSON value (also used for the cached copy).
    pub fn from_list_value(value: Value, source: &Path) -> Result<Self, ConfError> {
        let Value::Object(obj) = &value else {
            return Err(bad("the document is not a JSON object"));
        };
        let name = match obj.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) | None => return Err(bad("\"name\" is missing or empty")),
            Some(_) => return Err(bad("\"name\" is not a string")),
        };
        if !valid_network_name(&name) {
            return Err(bad(format!(
                "network name {name:?} has characters other than letters, digits, '_', '.', '-'"
            )));
        }
        let cni_version = match obj.get("cniVersion") {
            Some(Value::String(s)) => s.clone(),
            None => "0.1.0".to_string(),
            Some(_) => return Err(bad("\"cniVersion\" is not a string")),
        };
        CniVersion::parse(&cni_version).map_err(|e| bad(format!("cniVersion: {e}")))?;
        let flag = |key: &str| -> Result<bool, ConfError> {
            match obj.get(key) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                // libcni also accepts the strings "true"/"false" for these.
                Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
                Some(_) => Err(bad(format!("\"{key}\" is not a boolean"))),
            }
        };
        let disable_check = flag("disableCheck")?;
        let disable_gc = flag("disableGC")?;
        let plugins = match obj.get("plugins") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    plugin_conf(p).map_err(|e| bad(format!("plugins[{i}]: {}", e.reason)))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) => return Err(bad("\"plugins\" is empty")),
            Some(_) => return Err(bad("\"plugins\" is not a list")),
            None => return Err(bad("\"plugins\" is missing")),
        };
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check,
            disable_gc,
            plugins,
            json: value,
            source: source.to_owned(),
        })
    }
}

fn plugin_conf(value: &Value) -> Result<PluginConf, ConfError> {
    let Value::Object(raw) = value else {
        return Err(bad("not a JSON object"));
    };
    let plugin_type = match raw.get("type") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(bad("\"type\" is missing or not a string")),
    };
    // The type names a file in the bin dirs: it must not be able to name any other path.
    if plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
        return Err(bad(format!(
            "plugin type {plugin_type:?} is not a plain file name"
        )));
    }
    let capabilities = match raw.get("capabilities") {
        Some(Value::Object(caps)) => caps
            .iter()
            .filter(|(_, v)| v.as_bool() == Some(true))
            .map(|(k, _)| k.clone())
            .collect(),
        _ => BTreeSet::new(),
    };
    Ok(PluginConf {
        plugin_type,
        capabilities,
        raw: raw.clone(),
    })
}

/// What the conf dir held at the last look.
#[derive(Debug, Clone, Default)]
pub struct DirLoad {
    pub network: Option<Arc<NetworkConfigList>>,
    /// Files that were skipped, with why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Why there is no network, when there is none (names the dir).
    pub error: Option<String>,
}

/// Reads the conf dir once.
pub fn load_dir(dir: &Path) -> DirLoad {
    let files = match conf_files(dir) {
        Ok(files) => files,
        Err(e) => {
            return DirLoad {
                error: Some(format!("cannot read CNI conf dir {}: {e}", dir.display())),
                ..DirLoad::default()
            }
        }
    };
    let mut load = DirLoad::default();
    for (path, _, _) in files {
        let parsed = std::fs::read(&path)
            .map_err(|e| bad(format!("cannot read: {e}")))
            .and_then(|bytes| {
                if path.extension().is_some_and(|e| e == "conflist") {
                    NetworkConfigList::from_list_bytes(&bytes, &path)
                } else {
                    NetworkConfigList::from_conf_bytes(&bytes, &path)
                }
            });
        match parsed {
            Ok(list) => {
                load.network = Some(Arc::new(list));
                return load;
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping invalid CNI config");
                load.skipped.push((path, e.reason));
            }
        }
    }
    load.error = Some(if load.skipped.is_empty() {
        format!("no CNI network config found in {}", dir.display())
    } else {
        let why: Vec<String> = load
            .skipped
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.display()))
            .collect();
        format!(
            "no valid CNI network config in {} ({})",
            dir.display(),
            why.join("; ")
        )
    });
    load
}

type Signature = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// The candidate files in lexical order, with what identifies their current content.
fn conf_files(dir: &Path) -> std::io::Result<Signature> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "conf" | "conflist" | "json"));
        if !wanted {
            continue;
        }
        // Follow symlinks (conf dirs are often links into packages); dangling ones still
        // count so that their error shows.
        let meta = std::fs::metadata(&path).ok();
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            continue;
        }
        files.push((
            path,
            meta.as_ref().and_then(|m| m.modified().ok()),
            meta.map_or(0, |m| m.len()),
        ));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// The conf dir, re-read only when its listing or a file's mtime/size changed, so each
/// `Status` and `RunPodSandbox` sees the current config without re-parsing it every time.
#[derive(Debug)]
pub struct ConfDir {
    dir: PathBuf,
    last: Mutex<Option<(Signature, DirLoad)>>,
}

impl ConfDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ConfDir {
            dir: dir.into(),
            last: Mutex::new(None),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current load (blocking filesystem reads: call from a blocking context).
    pub fn current(&self) -> DirLoad {
        let signature = conf_files(&self.dir).ok();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(sig), Some((old_sig, load))) = (&signature, last.as_ref()) {
            if sig == old_sig {
                return load.clone();
            }
        }
        let load = load_dir(&self.dir);
        if let Some(sig) = signature {
            *last = Some((sig, load.clone()));
        }
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_becomes_a_one_plugin_list() {
        let conf = br#"{"cniVersion":"0.4.0","name":"net1","type":"bridge","bridge":"br0"}"#;
        let list = NetworkConfigList::from_conf_bytes(conf, Path::new("x.conf")).expect("valid");
        assert_eq!(list.name, "net1");
        assert_eq!(list.cni_version, "0.4.0");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0].plugin_type, "bridge");
        assert_eq!(list.json["plugins"][0]["bridge"], "br0");
    }

    #[test]
    fn capabilities_are_the_ones_set_true() {
        let conf = br#"{"cniVersion":"1.0.0","name":"n","plugins":[
            {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}}]}"#;
        let list = NetworkConfigList::from_list_bytes(conf, Path::new("x.conflist")).expect("ok");
        assert_eq!(
            list.plugins[0].capabilities.iter().collect::<Vec<_>>(),
            vec!["portMappings"]
        );
    }

    #[test]
    fn invalid_lists_say_why() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "invalid JSON"),
            (br#"{"name":"n","plugins":[]}"#, "empty"),
            (br#"{"name":"","plugins":[{"type":"x"}]}"#, "name"),
            (
                br#"{"name":"../x","plugins":[{"type":"x"}]}"#,
                "network name",
            ),
            (
                br#"{"name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
                "plain file name",
            ),
            (br#"{"name":"n","plugins":[{}]}"#, "type"),
            (
                br#"{"name":"n","cniVersion":"banana","plugins":[{"type":"x"}]}"#,
                "cniVersion",
            ),
        ];
        for (bytes, want) in cases {
            let err = NetworkConfigList::from_list_bytes(bytes, Path::new("f"))
                .expect_err("must be refused");
            assert!(err.reason.contains(want), "{:?}: {}", want, err.reason);
        }
    }

    #[test]
    fn first_valid_file_wins_and_broken_ones_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("05-broken.conflist"), "{").expect("write");
        std::fs::write(
            dir.path().join("10-good.conf"),
            r#"{"cniVersion":"1.0.0","name":"good","type":"bridge"}"#,
        )
        .expect("write");
        std::fs::write(
            dir.path().join("20-later.conflist"),
            r#"{"cniVersion":"1.0.0","name":"later","plugins":[{"type":"bridge"}]}"#,
        )
        .expect("write");
        std::fs::write(dir.path().join("README.md"), "not a conf").expect("write");
        let load = load_dir(dir.path());
        assert_eq!(load.network.as_ref().map(|n| n.name.as_str()), Some("good"));
        assert_eq!(load.skipped.len(), 1);
        assert!(load.skipped[0].0.ends_with("05-broken.conflist"));
    }

    #[test]
    fn empty_dir_names_the_dir_and_changes_are_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf_dir = ConfDir::new(dir.path());
        let load = conf_dir.current();
        assert!(load.network.is_none());
        let err = load.error.expect("an error");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        std::fs::write(
            dir.path().join("10-a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"}]}"#,
        )
        .expect("write");
        assert_eq!(
            conf_dir.current().network.map(|n| n.name.clone()),
            Some("a".to_string())
        );
    }
}
