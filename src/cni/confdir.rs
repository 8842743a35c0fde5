//! The watched conf dir: [`ConfDir::current`] hands out the network now in effect,
//! re-reading the dir (see [`super::conf`]) only when it changed.
//!
//! The dir is watched with inotify ([`ConfDir::watch`]): while the watch is healthy,
//! [`ConfDir::current`] costs no system call unless something changed; without a watch
//! (the dir did not exist, or was removed) it falls back to comparing the listing's
//! names, mtimes and sizes on every call, which is always correct, only dearer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::conf::{conf_files, load_dir, plugin_files, DirLoad, Signature};

/// The signature of everything a load reads: the candidate files, plus the per-network
/// plugin dirs (`<dir>/<name>/*.conf`) of every candidate name.
fn signature(dir: &Path) -> std::io::Result<Signature> {
    let mut sig = conf_files(dir)?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            for file in plugin_files(&path).unwrap_or_default() {
                let meta = std::fs::metadata(&file).ok();
                sig.push((
                    file,
                    meta.as_ref().and_then(|m| m.modified().ok()),
                    meta.map_or(0, |m| m.len()),
                ));
            }
        }
    }
    Ok(sig)
}

/// How long the conf dir must be quiet after a change before the watcher re-reads it and
/// says what changed (writers often create, write and rename in quick succession).
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);

/// The conf dir, re-read only when it changed, so each `Status` and `RunPodSandbox` sees
/// the current config without re-parsing it every time.
#[derive(Debug)]
pub struct ConfDir {
    dir: PathBuf,
    last: Mutex<Option<(Signature, DirLoad)>>,
    /// Bumped by the watcher on every event under the dir.
    events: AtomicU64,
    /// `events` as it was when `last` was loaded.
    loaded_at: AtomicU64,
    /// True while an inotify watch covers the dir (events then force re-reads too).
    watching: AtomicBool,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    /// Bumped after each debounced reload, for whoever wants to react to a change.
    reloads: tokio::sync::watch::Sender<u64>,
}

impl ConfDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ConfDir {
            dir: dir.into(),
            last: Mutex::new(None),
            events: AtomicU64::new(0),
            loaded_at: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            watcher: Mutex::new(None),
            reloads: tokio::sync::watch::channel(0).0,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether an inotify watch currently covers the dir.
    pub fn is_watched(&self) -> bool {
        self.watching.load(Ordering::Acquire)
    }

    /// Changes after each debounced reload (a counter).
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// The current load (blocking filesystem reads: call from a blocking context). The
    /// dir's signature (names, sizes, mtimes: a readdir and a stat per file, microseconds)
    /// is compared on every call, so a change made just before a RunPodSandbox counts even
    /// when the watcher has not read its event yet; a watcher event since the last load
    /// forces a re-read too (an in-place rewrite of the same size within one mtime tick).
    pub fn current(&self) -> DirLoad {
        let generation = self.events.load(Ordering::Acquire);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let signature = signature(&self.dir).ok();
        let no_event_since = generation == self.loaded_at.load(Ordering::Acquire);
        if let (Some(sig), Some((old_sig, load))) = (&signature, last.as_ref()) {
            if sig == old_sig && (no_event_since || !self.is_watched()) {
                self.loaded_at.store(generation, Ordering::Release);
                return load.clone();
            }
        }
        let load = load_dir(&self.dir);
        if let Some(sig) = signature {
            *last = Some((sig, load.clone()));
            self.loaded_at.store(generation, Ordering::Release);
        }
        load
    }

    /// Watches the dir (recursively, for `<dir>/<name>/*.conf`) with inotify. Each event
    /// invalidates the cached load at once; after [`WATCH_DEBOUNCE`] of quiet a task re-reads
    /// the dir, logs the network now in effect and bumps [`ConfDir::reloads`]. When the dir
    /// cannot be watched (missing, or removed later) loads fall back to signature checks.
    /// Needs a tokio runtime.
    pub fn watch(self: &Arc<Self>) -> bool {
        use notify::Watcher;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let me = Arc::downgrade(self);
        let root = self.dir.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            let Some(conf_dir) = me.upgrade() else { return };
            if conf_dir.note_event(&root, event) {
                let _ = tx.send(());
            }
        };
        let watching = notify::recommended_watcher(handler).and_then(|mut watcher| {
            watcher
                .watch(&self.dir, notify::RecursiveMode::Recursive)
                .map(|()| watcher)
        });
        let watcher = match watching {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e,
                    "cannot watch the CNI conf dir; checking it on every use instead");
                return false;
            }
        };
        // Anything that happened before the watch started is caught by one fresh load.
        self.events.fetch_add(1, Ordering::AcqRel);
        self.watching.store(true, Ordering::Release);
        *self.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(watcher);
        tokio::spawn(reload_after_quiet(Arc::downgrade(self), rx));
        true
    }

    /// Counts one watcher event; false when it changes nothing and is to be ignored. An
    /// error, or the dir itself going away, ends the watch: loads fall back to polling.
    fn note_event(&self, root: &Path, event: notify::Result<notify::Event>) -> bool {
        match event {
            // Opening or reading a file (crisp's own loads among them) changes nothing;
            // reacting to it would make every load trigger the next.
            Ok(event) if is_read_only(&event.kind) => return false,
            Ok(event) => {
                if matches!(event.kind, notify::EventKind::Remove(_))
                    && event.paths.iter().any(|p| p == root)
                {
                    self.watching.store(false, Ordering::Release);
                    tracing::warn!(dir = %root.display(),
                        "CNI conf dir removed; watching stopped, checking it on every use instead");
                }
            }
            Err(e) => {
                self.watching.store(false, Ordering::Release);
                tracing::warn!(dir = %root.display(), error = %e,
                    "CNI conf dir watch failed; checking it on every use instead");
            }
        }
        self.events.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// Whether a watcher event only opened, read or closed a file without writing it.
fn is_read_only(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(
        kind,
        notify::EventKind::Access(
            AccessKind::Open(_)
                | AccessKind::Read
                | AccessKind::Close(AccessMode::Read | AccessMode::Execute | AccessMode::Any)
        )
    )
}

/// After each burst of events and [`WATCH_DEBOUNCE`] of quiet: re-reads the dir, logs the
/// network in effect when it changed and bumps [`ConfDir::reloads`]. Ends with the dir.
async fn reload_after_quiet(
    me: std::sync::Weak<ConfDir>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let mut previous: Option<Value> = None;
    while rx.recv().await.is_some() {
        while let Ok(Some(())) = tokio::time::timeout(WATCH_DEBOUNCE, rx.recv()).await {}
        let Some(conf_dir) = me.upgrade() else { return };
        let reader = conf_dir.clone();
        let Ok(load) = tokio::task::spawn_blocking(move || reader.current()).await else {
            continue;
        };
        let now = load.network.as_ref().map(|n| n.json.clone());
        if now != previous {
            log_in_effect(&load);
            previous = now;
        }
        conf_dir.reloads.send_modify(|n| *n += 1);
    }
}

fn log_in_effect(load: &DirLoad) {
    match &load.network {
        Some(n) => tracing::info!(network = %n.name, file = %n.source.display(),
            cni_version = %n.cni_version, "CNI network config in effect"),
        None => tracing::warn!(
            problem = load.error.as_deref().unwrap_or(""),
            "no CNI network config in effect"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn the_watch_sees_adds_changes_and_removals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf_dir = Arc::new(ConfDir::new(dir.path()));
        assert!(conf_dir.watch());
        let mut reloads = conf_dir.reloads();
        assert!(conf_dir.current().network.is_none());
        let file = dir.path().join("10-a.conflist");
        let name = |c: &ConfDir| c.current().network.map(|n| n.name.clone());
        std::fs::write(&file, r#"{"name":"a","plugins":[{"type":"x"}]}"#).expect("w");
        reloads.changed().await.expect("reload");
        assert_eq!(name(&conf_dir).as_deref(), Some("a"));
        std::fs::write(&file, r#"{"name":"b","plugins":[{"type":"x"}]}"#).expect("w");
        reloads.changed().await.expect("reload");
        assert_eq!(name(&conf_dir).as_deref(), Some("b"));
        std::fs::remove_file(&file).expect("rm");
        reloads.changed().await.expect("reload");
        assert_eq!(name(&conf_dir), None);
        assert!(conf_dir.is_watched());
    }
}
