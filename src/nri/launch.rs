//! Pre-registered plugins: the executables named `IDX-NAME` in the plugin dir, which crisp
//! starts itself with one end of a socketpair as fd 3 (NRI's `NRI_PLUGIN_SOCKET=3`).
//!
//! crisp records the pids it started in a file under its root, so that a crisp killed with
//! SIGKILL finds, on its next start, the plugins it left and kills those still running. (A
//! plugin also reads EOF on fd 3 when crisp dies; the record is for one that does not exit.)

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::plugin::Identity;

/// A plugin executable found in the plugin dir.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub identity: Identity,
    pub path: PathBuf,
}

/// The plugins in `dir`, in index order. A file whose name is not `IDX-NAME` or that is not
/// executable is skipped with a log line (NRI's discovery fails whole instead). A missing dir
/// means no plugins.
pub fn discover(dir: &Path) -> Vec<Found> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the NRI plugin dir");
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let parsed = file_name
            .split_once('-')
            .ok_or_else(|| "not named IDX-NAME".to_string())
            .and_then(|(index, name)| Identity::parse(name, index));
        let identity = match parsed {
            Ok(identity) => identity,
            Err(why) => {
                tracing::warn!(
                    file = %path.display(),
                    %why,
                    "skipping a file in the NRI plugin dir",
                );
                continue;
            }
        };
        let executable = std::fs::metadata(&path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !executable {
            tracing::warn!(
                file = %path.display(),
                "skipping a file in the NRI plugin dir: not an executable file",
            );
            continue;
        }
        found.push(Found { identity, path });
    }
    found.sort_by(|a, b| a.identity.cmp(&b.identity));
    found
}

/// A plugin's config, as NRI looks for it: `IDX-NAME.conf`, else `NAME.conf`, else none.
pub fn config_for(dir: &Path, identity: &Identity) -> String {
    let candidates = [
        format!("{identity}.conf"),
        format!("{}.conf", identity.name),
    ];
    for candidate in candidates {
        match std::fs::read_to_string(dir.join(&candidate)) {
            Ok(text) => return text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(
                    file = %dir.join(&candidate).display(),
                    error = %e,
                    "cannot read an NRI plugin config; the plugin gets none",
                );
                return String::new();
            }
        }
    }
    String::new()
}

/// Starts the plugin with fd 3 as its end of a new socketpair and exactly NRI's three
/// variables as its environment; returns the child and crisp's end.
pub fn start(found: &Found) -> io::Result<(tokio::process::Child, tokio::net::UnixStream)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let theirs = OwnedFd::from(theirs);
    let fd = theirs.as_raw_fd();
    let mut command = tokio::process::Command::new(&found.path);
    command
        .env_clear()
        .env("NRI_PLUGIN_NAME", &found.identity.name)
        .env("NRI_PLUGIN_IDX", &found.identity.index)
        .env("NRI_PLUGIN_SOCKET", "3")
        .stdin(std::process::Stdio::null())
        // Its own process group: a Ctrl-C meant for crisp is not the plugin's.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) are made.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                // dup2 onto itself would keep close-on-exec: clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(theirs);
    ours.set_nonblocking(true)?;
    Ok((child, tokio::net::UnixStream::from_std(ours)?))
}

/// A plugin process crisp started, as recorded for the next start.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Started {
    pub pid: u32,
    pub path: PathBuf,
    /// The process's start time (clock ticks since boot, /proc/PID/stat field 22): with the
    /// pid, it names this process and no later one that reuses the pid.
    pub start_time: u64,
}

impl Started {
    /// The record of a child crisp just spawned (`None` if it already exited).
    pub fn of(pid: u32, path: &Path) -> Option<Started> {
        Some(Started {
            pid,
            path: path.to_path_buf(),
            start_time: start_time(pid)?,
        })
    }
}

/// A process's start time from /proc/PID/stat (after the `(comm)` field, which may hold spaces).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state); field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Writes the record of the plugins crisp started (replacing the previous one atomically).
pub fn record(file: &Path, started: &[Started]) -> io::Result<()> {
    let text = serde_json::to_vec(started).map_err(io::Error::other)?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}

/// Kills the plugins a previous crisp recorded starting that are still the processes it
/// started (same pid and start time: a pid reused by another process is left alone); removes
/// the record. Returns how many were killed.
pub fn kill_recorded(file: &Path) -> usize {
    let Ok(text) = std::fs::read(file) else {
        return 0;
    };
    let started: Vec<Started> = serde_json::from_slice(&text).unwrap_or_default();
    let mut killed = 0;
    for plugin in started {
        let same = start_time(plugin.pid) == Some(plugin.start_time);
        let Ok(pid) = i32::try_from(plugin.pid) else {
            continue;
        };
        if same {
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                tracing::warn!(
                    pid = plugin.pid,
                    plugin = %plugin.path.display(),
                    "killed an NRI plugin a previous crisp started",
                );
                killed += 1;
            }
        }
    }
    let _ = std::fs::remove_file(file);
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str, mode: u32) {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn discovery_takes_idx_name_executables_in_index_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(dir.path(), "10-late", 0o755);
        touch(dir.path(), "05-early", 0o755);
        touch(dir.path(), "5-short-index", 0o755);
        touch(dir.path(), "noindex", 0o755);
        touch(dir.path(), "07-not-executable", 0o644);
        touch(dir.path(), "08-bad name", 0o755);
        let names: Vec<String> = discover(dir.path())
            .iter()
            .map(|f| f.identity.to_string())
            .collect();
        assert_eq!(names, ["05-early", "10-late"]);
        assert!(discover(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn config_is_idx_name_conf_else_name_conf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = Identity::parse("p", "05").expect("valid");
        assert_eq!(config_for(dir.path(), &id), "");
        std::fs::write(dir.path().join("p.conf"), "by name").expect("write");
        assert_eq!(config_for(dir.path(), &id), "by name");
        std::fs::write(dir.path().join("05-p.conf"), "by index").expect("write");
        assert_eq!(config_for(dir.path(), &id), "by index");
    }

    #[test]
    fn a_recorded_pid_that_another_process_reuses_is_not_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("nri-plugins.json");
        let mut me = Started::of(std::process::id(), Path::new("/a/plugin")).expect("stat");
        me.start_time += 1;
        record(&file, &[me]).expect("record");
        assert_eq!(kill_recorded(&file), 0);
        assert!(!file.exists());
    }
}
