//! The modes of everything under crisp's root: the state is root's alone. Pod records, the CNI
//! cache and the OCI spec hold the pod's labels, annotations and network config, so the root and
//! every directory crisp makes in it are 0700 and its files 0600. The exception is what a
//! container runtime bind-mounts for the pod's containers (`hostname`, `hosts`, `resolv.conf`):
//! 0644, in a sandbox files dir of 0711, like containerd's sandbox dirs, so those three files
//! are readable by path while the dir cannot be listed.
//!
//! Everything is created with its mode (umask can only take bits away), never created looser
//! and tightened after. [`tighten`] fixes at start what an older crisp wrote with 0755/0644.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The root and every directory crisp makes in it.
pub const PRIVATE_DIR: u32 = 0o700;
/// Records, the lock, CNI cache entries, `config.json`.
pub const PRIVATE_FILE: u32 = 0o600;
/// A sandbox's files dir: traversable, so a container runtime acting for a container user can
/// open the mounted files by path, but not listable or readable.
pub const FILES_DIR: u32 = 0o711;
/// The files mounted into the pod's containers, which any container user reads.
pub const MOUNTED_FILE: u32 = 0o644;
/// The names of those files in a sandbox's files dir.
pub const MOUNTED_FILES: [&str; 3] = ["hostname", "hosts", "resolv.conf"];

/// Creates `dir` and any missing parent with `mode`; an existing one is left as it is.
pub fn create_dir_all(dir: &Path, mode: u32) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(mode).create(dir)
}

/// Creates the temp file of an atomic write with `mode` from the start. A stale one (a crash
/// mid-write, perhaps by an older, looser crisp) is removed first: opening an existing file
/// keeps its mode, and `create_new` does not follow a symlink.
pub fn create_file(path: &Path, mode: u32) -> io::Result<File> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

/// Whether `root` is crisp's: it holds the lock or the records dir, which every crisp creates
/// at its first start. Judged before this start creates either.
pub fn is_crisp_root(root: &Path) -> bool {
    fs::symlink_metadata(root.join("crisp.lock")).is_ok_and(|m| m.is_file())
        || fs::symlink_metadata(root.join("sandboxes")).is_ok_and(|m| m.is_dir())
}

/// Tightens what an older crisp left under `root` to the modes above; never fails start-up.
///
/// Called before the root is created or locked, so a directory crisp has never used (an
/// operator's existing dir given as `--root`) is judged as it was found and left alone. Only
/// crisp's own paths are touched: the root, `crisp.lock`, `sandboxes/` (records, temp files,
/// files dirs and their files) and `cni/`; nothing else in the root, and no symlink (chmod would
/// follow it; a root that is a symlink is the operator's and keeps its mode, while what crisp
/// keeps behind it is tightened). Bits are only removed, so a file already stricter stays so.
/// Each change is logged.
pub fn tighten(root: &Path) {
    if !is_crisp_root(root) {
        return;
    }
    tighten_one(root, PRIVATE_DIR, PRIVATE_FILE);
    tighten_one(&root.join("crisp.lock"), PRIVATE_DIR, PRIVATE_FILE);
    let sandboxes = root.join("sandboxes");
    if tighten_one(&sandboxes, PRIVATE_DIR, PRIVATE_FILE) == Some(Kind::Dir) {
        for entry in entries(&sandboxes) {
            // A dir beside the records is a sandbox's files dir; a file is a record or a temp.
            let path = sandboxes.join(&entry);
            if tighten_one(&path, FILES_DIR, PRIVATE_FILE) == Some(Kind::Dir) {
                for name in entries(&path) {
                    let mounted = MOUNTED_FILES.iter().any(|m| name == *m);
                    let file = if mounted { MOUNTED_FILE } else { PRIVATE_FILE };
                    tighten_one(&path.join(name), PRIVATE_DIR, file);
                }
            }
        }
    }
    tighten_tree(&root.join("cni"));
}

/// `cni/` and below (`results/` and its entries): dirs 0700, files 0600.
fn tighten_tree(dir: &Path) {
    if tighten_one(dir, PRIVATE_DIR, PRIVATE_FILE) == Some(Kind::Dir) {
        for name in entries(dir) {
            tighten_tree(&dir.join(name));
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// Removes from `path`'s mode every bit outside `dir_limit` or `file_limit`, whichever it is.
/// Returns what `path` is, or `None` for a missing path, a symlink or anything else crisp does
/// not write.
fn tighten_one(path: &Path, dir_limit: u32, file_limit: u32) -> Option<Kind> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot read the mode of a state file"
            );
            return None;
        }
    };
    let (kind, limit) = if meta.is_dir() {
        (Kind::Dir, dir_limit)
    } else if meta.is_file() {
        (Kind::File, file_limit)
    } else {
        return None;
    };
    // set_permissions follows a symlink, hence the lstat above; only root can write these
    // dirs, so nothing can swap one in between.
    let old = meta.permissions().mode() & 0o7777;
    let new = old & limit;
    if new != old {
        match fs::set_permissions(path, fs::Permissions::from_mode(new)) {
            Ok(()) => tracing::info!(
                path = %path.display(),
                old = format_args!("{old:04o}"),
                new = format_args!("{new:04o}"),
                "tightened the mode of a state file an older crisp wrote"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                old = format_args!("{old:04o}"),
                new = format_args!("{new:04o}"),
                error = %e,
                "cannot tighten the mode of a state file"
            ),
        }
    }
    Some(kind)
}

/// The names in `dir`; an unreadable dir is logged and yields none.
fn entries(dir: &Path) -> Vec<std::ffi::OsString> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "cannot list a state dir");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn file(path: &Path, mode: u32) -> PathBuf {
        fs::write(path, b"x").expect("write");
        chmod(path, mode);
        path.to_owned()
    }

    fn dir(path: &Path, mode: u32) -> PathBuf {
        fs::create_dir_all(path).expect("mkdir");
        chmod(path, mode);
        path.to_owned()
    }

    /// A root with neither `crisp.lock` nor `sandboxes/` is an operator's directory: neither it
    /// nor anything in it is chmod'ed, even entries named like crisp's.
    #[test]
    fn a_root_that_is_not_crisps_is_left_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = dir(&tmp.path().join("shared"), 0o755);
        let other = file(&root.join("someone-elses"), 0o644);
        let cni = dir(&root.join("cni"), 0o755);
        let entry = file(&cni.join("entry"), 0o666);
        assert!(!is_crisp_root(&root));
        tighten(&root);
        assert_eq!(mode(&root), 0o755);
        assert_eq!(mode(&other), 0o644);
        assert_eq!(mode(&cni), 0o755);
        assert_eq!(mode(&entry), 0o666);
        // A missing root is no error either.
        tighten(&tmp.path().join("missing"));
    }

    /// What an older crisp wrote is tightened to today's modes; the mounted files stay (or
    /// become) 0644, stricter files stay strict, other files and symlink targets are untouched.
    #[test]
    fn an_older_crisps_root_is_tightened() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = dir(&tmp.path().join("root"), 0o755);
        let lock = file(&root.join("crisp.lock"), 0o644);
        let sandboxes = dir(&root.join("sandboxes"), 0o755);
        let record = file(&sandboxes.join("abc.json"), 0o644);
        let temp = file(&sandboxes.join(".abc.tmp"), 0o664);
        let files = dir(&sandboxes.join("abc"), 0o755);
        let config = file(&files.join("config.json"), 0o644);
        let hostname = file(&files.join("hostname"), 0o644);
        let hosts = file(&files.join("hosts"), 0o666);
        let resolv = file(&files.join("resolv.conf"), 0o600);
        let results = dir(&root.join("cni/results"), 0o755);
        chmod(&root.join("cni"), 0o755);
        let entry = file(&results.join("net-abc-eth0"), 0o644);
        let beside = file(&root.join("operator-notes"), 0o644);
        let outside = file(&tmp.path().join("outside"), 0o644);
        std::os::unix::fs::symlink(&outside, sandboxes.join("link.json")).expect("symlink");

        tighten(&root);
        for (path, want) in [
            (&root, 0o700),
            (&lock, 0o600),
            (&sandboxes, 0o700),
            (&record, 0o600),
            (&temp, 0o600),
            (&files, 0o711),
            (&config, 0o600),
            (&hostname, 0o644),
            (&hosts, 0o644),
            (&resolv, 0o600),
            (&root.join("cni"), 0o700),
            (&results, 0o700),
            (&entry, 0o600),
            (&beside, 0o644),
            (&outside, 0o644),
        ] {
            assert_eq!(mode(path), want, "{}", path.display());
        }
    }

    #[test]
    fn created_files_have_their_mode_even_over_a_stale_looser_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = file(&tmp.path().join(".x.tmp"), 0o666);
        drop(create_file(&path, PRIVATE_FILE).expect("create"));
        assert_eq!(mode(&path), 0o600);
        let nested = tmp.path().join("a/b");
        create_dir_all(&nested, PRIVATE_DIR).expect("mkdir");
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
    }
}
