//! Persistent network namespaces: create and pin one as a file, remove it, run a closure
//! inside one.
//!
//! This is the only module that calls `unshare`, `setns` or `mount`. Each of those runs on a
//! dedicated, short-lived OS thread, never on a tokio worker or a pooled blocking thread: a
//! thread that changed namespace must not go back to running other work (containerd
//! `pkg/netns`; the opposite is a known bug in other runtimes). The netlink work done on
//! those threads (lo up, counters, addresses) is `netlink::one_shot`'s: this module opens no
//! netlink socket itself.

pub mod inside;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Filesystem magic of nsfs, what a pinned namespace file shows once bind-mounted.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The directory where crisp pins its pod namespaces.
#[derive(Debug, Clone)]
pub struct NetnsDir {
    dir: PathBuf,
}

/// File names crisp gives its namespaces, so start-up audits can tell its pins from others'.
pub const NETNS_PREFIX: &str = "crisp-";

impl NetnsDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        NetnsDir { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pin path for a sandbox id (already validated as hex by the caller).
    pub fn path_for(&self, sandbox_id: &str) -> PathBuf {
        self.dir.join(format!("{NETNS_PREFIX}{sandbox_id}"))
    }

    /// The `crisp-*` pins in the dir, whatever their state (none when it cannot be read).
    pub fn pins(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(NETNS_PREFIX))
            })
            .map(|entry| entry.path())
            .collect()
    }

    /// Creates a new network namespace pinned at `path`, with `lo` up.
    pub async fn create(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = path.to_owned();
        on_dedicated_thread(move || create_pinned(&path)).await
    }
}

/// Removes a pinned namespace: detach the bind mount, then the file. Missing is success,
/// so removal can be retried after a crash at any point.
pub fn remove(path: &Path) -> io::Result<()> {
    // Gone already: nothing to do, even where unlink would report EROFS instead of ENOENT.
    if let Err(e) = std::fs::symlink_metadata(path) {
        if e.kind() == io::ErrorKind::NotFound {
            return Ok(());
        }
    }
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether `path` is a live pinned namespace (a mounted nsfs file), not just a leftover file.
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|fs| fs.filesystem_type().0 == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Runs `f` on a fresh OS thread that has joined the namespace at `path`; the thread ends
/// with `f`, so the namespace switch never leaks into other work.
pub async fn run_in<T, F>(path: &Path, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let ns = File::open(path)?;
    on_dedicated_thread(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET)?;
        f()
    })
    .await
}

/// Runs `f` on a new OS thread and awaits its answer without blocking the runtime.
async fn on_dedicated_thread<T, F>(f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("crisp-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    rx.await
        .map_err(|_| io::Error::other("namespace thread ended without an answer"))?
}

/// On the calling (dedicated) thread: make the pin file, unshare, bind-mount, bring `lo` up.
/// On failure the pin is removed again so nothing is left behind.
fn create_pinned(path: &Path) -> io::Result<()> {
    // O_EXCL: never adopt or clobber a file someone else made.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)?;
    let pinned = unshare(CloneFlags::CLONE_NEWNET)
        .and_then(|()| {
            mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        })
        .map_err(io::Error::from)
        .and_then(|()| crate::netlink::one_shot::loopback_up());
    if let Err(e) = pinned {
        let _ = remove(path);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[tokio::test]
    async fn create_pins_a_namespace_with_lo_up_and_remove_cleans_it() {
        assert!(is_root(), "these tests need root (run make test)");
        let dir = tempfile::tempdir().expect("tempdir");
        let netns = NetnsDir::new(dir.path());
        let path = netns.path_for("abc");
        netns.create(&path).await.expect("create");
        assert!(is_pinned(&path));
        // A second create of the same pin must fail, not adopt it.
        assert!(netns.create(&path).await.is_err());
        let up = run_in(&path, || {
            let out = std::process::Command::new("ip")
                .args(["-o", "link", "show", "lo"])
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .await
        .expect("ip link inside");
        assert!(up.contains("LOOPBACK,UP"), "lo not up: {up}");
        remove(&path).expect("remove");
        assert!(!path.exists());
        remove(&path).expect("remove twice is fine");
    }
}
