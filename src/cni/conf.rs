//! Loading CNI network configuration: the conf dir's `*.conf`, `*.conflist` and `*.json`
//! files in lexical order, the first valid one being the network (libcni `ConfFiles` +
//! `LoadConfList`). A single-plugin conf becomes a one-plugin list, as libcni's
//! `ConfListFromConf` does. Invalid files are skipped and reported with their parse error.
//!
//! A `.conflist` without `"loadOnlyInlinedPlugins": true` also gets the plugin configs of
//! `<dir>/<network name>/*.conf` appended, in lexical order (libcni 1.2 `NetworkConfFromFile`);
//! the list is then stored whole, so the cache holds every plugin that ran. A list may name
//! several versions in `cniVersions`: the highest one crisp speaks (≤ 1.1.0) wins, as in libcni.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};

use super::version::{self, CniVersion};

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
    /// When false (the default), plugins of `<dir>/<name>/*.conf` are appended at load.
    pub load_only_inlined_plugins: bool,
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

fn conf_error(reason: impl Into<String>) -> ConfError {
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
            serde_json::from_slice(bytes).map_err(|e| conf_error(format!("invalid JSON: {e}")))?;
        Self::from_list_value(value, source)
    }

    /// Parses a single-plugin `.conf` document and wraps it in a list.
    pub fn from_conf_bytes(bytes: &[u8], source: &Path) -> Result<Self, ConfError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| conf_error(format!("invalid JSON: {e}")))?;
        let Value::Object(conf) = value else {
            return Err(conf_error("the document is not a JSON object"));
        };
        if conf.contains_key("plugins") {
            return Err(conf_error(
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
            return Err(conf_error("the document is not a JSON object"));
        };
        let name = match obj.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) | None => {
                return Err(conf_error("\"name\" is missing or empty"))
            }
            Some(_) => return Err(conf_error("\"name\" is not a string")),
        };
        if !valid_network_name(&name) {
            return Err(conf_error(format!(
                "network name {name:?} has characters other than letters, digits, '_', '.', '-'"
            )));
        }
        let cni_version = match obj.get("cniVersion") {
            Some(Value::String(s)) => s.clone(),
            None => "0.1.0".to_string(),
            Some(_) => return Err(conf_error("\"cniVersion\" is not a string")),
        };
        CniVersion::parse(&cni_version).map_err(|e| conf_error(format!("cniVersion: {e}")))?;
        let cni_version = match obj.get("cniVersions") {
            None => cni_version,
            Some(Value::Array(items)) => highest_spoken(items, &cni_version, obj)?,
            Some(_) => return Err(conf_error("\"cniVersions\" is not a list")),
        };
        let disable_check = flag(obj, "disableCheck")?;
        let disable_gc = flag(obj, "disableGC")?;
        let load_only_inlined_plugins = flag(obj, "loadOnlyInlinedPlugins")?;
        let plugins = inlined_plugins(obj, load_only_inlined_plugins)?;
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check,
            disable_gc,
            load_only_inlined_plugins,
            plugins,
            json: value,
            source: source.to_owned(),
        })
    }
}

impl NetworkConfigList {
    /// Loads a `.conflist` file: the inlined plugins, then (unless
    /// `loadOnlyInlinedPlugins`) those of `<dir>/<name>/*.conf`. A list with no plugin at
    /// all is refused, as libcni refuses it.
    pub fn from_list_file(bytes: &[u8], path: &Path) -> Result<Self, ConfError> {
        let mut list = Self::from_list_bytes(bytes, path)?;
        if !list.load_only_inlined_plugins {
            let sub = path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(&list.name);
            let files = plugin_files(&sub).map_err(|e| {
                conf_error(format!("reading plugin configs in {}: {e}", sub.display()))
            })?;
            for file in files {
                let value: Value = std::fs::read(&file)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                    .map_err(|e| conf_error(format!("plugin config {}: {e}", file.display())))?;
                let plugin = plugin_conf(&value).map_err(|e| {
                    conf_error(format!("plugin config {}: {}", file.display(), e.reason))
                })?;
                list.plugins.push(plugin);
            }
            if let Value::Object(obj) = &mut list.json {
                obj.insert(
                    "plugins".into(),
                    Value::Array(
                        list.plugins
                            .iter()
                            .map(|p| Value::Object(p.raw.clone()))
                            .collect(),
                    ),
                );
            }
        }
        if list.plugins.is_empty() {
            return Err(conf_error(format!(
                "no plugin configs: \"plugins\" is missing and {} holds no *.conf",
                path.parent()
                    .unwrap_or_else(|| Path::new("."))
                    .join(&list.name)
                    .display()
            )));
        }
        Ok(list)
    }
}

/// A boolean setting of the list; absent is false.
fn flag(obj: &Map<String, Value>, key: &str) -> Result<bool, ConfError> {
    match obj.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        // libcni also accepts the strings "true"/"false" for these.
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(conf_error(format!("\"{key}\" is not a boolean"))),
    }
}

/// The list's own `"plugins"`; none is allowed only when `<dir>/<name>/` may supply them.
fn inlined_plugins(
    obj: &Map<String, Value>,
    load_only_inlined_plugins: bool,
) -> Result<Vec<PluginConf>, ConfError> {
    match obj.get("plugins") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, p)| {
                plugin_conf(p).map_err(|e| conf_error(format!("plugins[{i}]: {}", e.reason)))
            })
            .collect(),
        Some(Value::Array(_)) => Err(conf_error("\"plugins\" is empty")),
        Some(_) => Err(conf_error("\"plugins\" is not a list")),
        // Allowed when the plugins come from `<dir>/<name>/` (checked by the file loader).
        None if !load_only_inlined_plugins => Ok(Vec::new()),
        None => Err(conf_error(
            "\"loadOnlyInlinedPlugins\" is true and there is no \"plugins\" list",
        )),
    }
}

/// libcni's `cniVersions`: the highest listed (or `cniVersion`) version not newer than
/// what crisp implements.
fn highest_spoken(
    items: &[Value],
    cni_version: &str,
    obj: &Map<String, Value>,
) -> Result<String, ConfError> {
    let newest =
        CniVersion::parse(version::SUPPORTED_VERSIONS[version::SUPPORTED_VERSIONS.len() - 1])
            .map_err(|e| conf_error(e.to_string()))?;
    let mut best: Option<(CniVersion, String)> = None;
    let explicit = obj.contains_key("cniVersion").then_some(cni_version);
    for (i, item) in items.iter().enumerate() {
        let Value::String(s) = item else {
            return Err(conf_error(format!("cniVersions[{i}] is not a string")));
        };
        consider(&mut best, s, newest)?;
    }
    if let Some(v) = explicit {
        consider(&mut best, v, newest)?;
    }
    Ok(best.map_or_else(|| cni_version.to_string(), |(_, s)| s))
}

fn consider(
    best: &mut Option<(CniVersion, String)>,
    s: &str,
    newest: CniVersion,
) -> Result<(), ConfError> {
    let v = CniVersion::parse(s).map_err(|e| conf_error(format!("cniVersions: {e}")))?;
    if v <= newest && best.as_ref().is_none_or(|(b, _)| v > *b) {
        *best = Some((v, s.to_string()));
    }
    Ok(())
}

/// `*.conf` files of a per-network plugin dir, sorted; a missing dir holds none.
pub(super) fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "conf") && !path.is_dir() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn plugin_conf(value: &Value) -> Result<PluginConf, ConfError> {
    let Value::Object(raw) = value else {
        return Err(conf_error("not a JSON object"));
    };
    let plugin_type = match raw.get("type") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(conf_error("\"type\" is missing or not a string")),
    };
    // The type names a file in the bin dirs: it must not be able to name any other path.
    if plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
        return Err(conf_error(format!(
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
            .map_err(|e| conf_error(format!("cannot read: {e}")))
            .and_then(|bytes| {
                if path.extension().is_some_and(|e| e == "conflist") {
                    NetworkConfigList::from_list_file(&bytes, &path)
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

pub(super) type Signature = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// The candidate files in lexical order, with what identifies their current content.
pub(super) fn conf_files(dir: &Path) -> std::io::Result<Signature> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "conf" | "conflist" | "json"));
        // Follow symlinks (conf dirs are often links into packages); dangling ones still
        // count so that their error shows.
        let meta = std::fs::metadata(&path).ok();
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            continue;
        }
        if !wanted {
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
    fn plugins_of_the_network_dir_are_appended_unless_only_inlined() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("net")).expect("mkdir");
        std::fs::write(dir.path().join("net/20-b.conf"), r#"{"type":"tuning"}"#).expect("w");
        std::fs::write(dir.path().join("net/10-a.conf"), r#"{"type":"portmap"}"#).expect("w");
        std::fs::write(dir.path().join("net/ignored.json"), r#"{"type":"x"}"#).expect("w");
        let file = dir.path().join("10-net.conflist");
        std::fs::write(
            &file,
            r#"{"cniVersion":"1.1.0","name":"net","plugins":[{"type":"bridge"}]}"#,
        )
        .expect("w");
        let types = |l: &NetworkConfigList| -> Vec<String> {
            l.plugins.iter().map(|p| p.plugin_type.clone()).collect()
        };
        let list = load_dir(dir.path()).network.expect("loads");
        assert_eq!(types(&list), ["bridge", "portmap", "tuning"]);
        // The stored list holds every plugin, so the cache can replay it.
        assert_eq!(list.json["plugins"][2]["type"], "tuning");

        std::fs::write(
            &file,
            r#"{"cniVersion":"1.1.0","name":"net","loadOnlyInlinedPlugins":true,
                "plugins":[{"type":"bridge"}]}"#,
        )
        .expect("w");
        assert_eq!(
            types(&load_dir(dir.path()).network.expect("loads")),
            ["bridge"]
        );

        // No inlined plugins at all: the dir's plugins are the list.
        std::fs::write(&file, r#"{"cniVersion":"1.1.0","name":"net"}"#).expect("w");
        assert_eq!(
            types(&load_dir(dir.path()).network.expect("loads")),
            ["portmap", "tuning"]
        );
        std::fs::write(
            &file,
            r#"{"cniVersion":"1.1.0","name":"net","loadOnlyInlinedPlugins":"true"}"#,
        )
        .expect("w");
        let load = load_dir(dir.path());
        assert!(load.network.is_none());
        assert!(
            load.skipped[0].1.contains("loadOnlyInlinedPlugins"),
            "{:?}",
            load.skipped
        );
    }

    #[test]
    fn cni_versions_pick_the_highest_spoken() {
        let list = NetworkConfigList::from_list_bytes(
            br#"{"cniVersion":"0.4.0","cniVersions":["1.0.0","9.0.0","0.3.1"],"name":"n",
                "plugins":[{"type":"x"}]}"#,
            Path::new("f"),
        )
        .expect("ok");
        assert_eq!(list.cni_version, "1.0.0");
        assert!(NetworkConfigList::from_list_bytes(
            br#"{"cniVersions":[1],"name":"n","plugins":[{"type":"x"}]}"#,
            Path::new("f")
        )
        .is_err());
    }
}
