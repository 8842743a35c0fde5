//! Running one plugin process: a clean environment, the config on stdin, stdout captured,
//! the tail of stderr kept, and a timeout that kills the plugin's whole process group (a
//! plugin's own children, such as iptables, die with it). The only place that spawns plugins.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// How much of a plugin's stderr is kept for error messages.
const STDERR_TAIL: usize = 2048;
/// Stdout larger than this is not a CNI answer; reading stops there.
const STDOUT_LIMIT: usize = 4 << 20;

/// The whole CNI_* environment of one plugin exec, borrowed from the caller.
#[derive(Debug, Clone)]
pub struct PluginEnv<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    /// Empty when the namespace is gone (allowed for DEL).
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
    pub path: &'a str,
}

/// What a plugin process did.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    /// "exit status 1", "killed by signal 9", …
    pub status: String,
    pub stdout: Vec<u8>,
    pub stderr_tail: String,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "timed out after {}s; its process group was killed{}",
        timeout.as_secs_f32(),
        stderr_suffix(stderr_tail)
    )]
    Timeout {
        timeout: Duration,
        stderr_tail: String,
    },
    #[error("talking to the plugin process: {0}")]
    Io(#[source] std::io::Error),
}

pub fn stderr_suffix(tail: &str) -> String {
    let tail = tail.trim();
    if tail.is_empty() {
        String::new()
    } else {
        format!("; stderr: {tail}")
    }
}

/// Runs `binary` once. `system_path` is the PATH plugins get (they exec iptables and such).
pub async fn run(
    binary: &Path,
    inv: &PluginEnv<'_>,
    stdin: &[u8],
    system_path: &str,
    timeout: Duration,
) -> Result<Output, ExecError> {
    let started = Instant::now();
    let mut child = spawn(binary, inv, system_path)?;
    let pgid = child.id();
    // If this future is dropped (a CHECK that Stop cancels), the whole group dies with it.
    let mut group = GroupGuard(pgid);
    let (Some(mut child_stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ExecError::Io(std::io::Error::other("plugin pipes missing")));
    };

    // stderr is collected by its own task so that a timeout still has the tail to show.
    let stderr_task = tokio::spawn(read_tail(stderr, STDERR_TAIL));
    let talk = async {
        // A plugin may exit without reading stdin (e.g. VERSION): a broken pipe is fine.
        let write = async {
            let _ = child_stdin.write_all(stdin).await;
            drop(child_stdin);
        };
        let (_, out, status) =
            tokio::join!(write, read_limited(stdout, STDOUT_LIMIT), child.wait());
        Ok::<_, std::io::Error>((out?, status?))
    };
    let outcome = tokio::time::timeout(timeout, talk).await;
    if !matches!(outcome, Ok(Ok(_))) {
        kill_group(pgid);
        // Reap the direct child so no zombie stays; the group is already killed.
        let _ = child.wait().await;
    }
    group.disarm();
    // The pipe closes once every holder of it is gone; bound the wait for stragglers.
    let stderr_tail = match tokio::time::timeout(Duration::from_secs(1), stderr_task).await {
        Ok(Ok(Ok(tail))) => tail,
        _ => String::new(),
    };
    match outcome {
        Ok(Ok((stdout, status))) => Ok(Output {
            success: status.success(),
            status: describe_status(status),
            stdout,
            stderr_tail,
            elapsed: started.elapsed(),
        }),
        Ok(Err(e)) => Err(ExecError::Io(e)),
        Err(_) => Err(ExecError::Timeout {
            timeout,
            stderr_tail,
        }),
    }
}

/// Starts the plugin in its own process group with only the CNI variables and PATH.
fn spawn(binary: &Path, inv: &PluginEnv<'_>, system_path: &str) -> Result<Child, ExecError> {
    Command::new(binary)
        .env_clear()
        .env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", inv.path)
        .env("PATH", system_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ExecError::Spawn {
            binary: binary.to_owned(),
            source,
        })
}

/// A plugin process left running by a previous crisp that was killed: plugins run in their
/// own process groups and outlive it. Recovery must end them before it tears the same
/// attachments down, or a late ADD re-creates what the DEL just released.
#[derive(Debug, Clone)]
pub struct Stray {
    pub pid: i32,
    pub container_id: String,
    pub command: String,
    pub exe: String,
}

/// SIGKILLs every process whose environment names one of `container_ids` as
/// `CNI_CONTAINERID` (the plugins crisp started and their children, e.g. an IPAM plugin or
/// iptables, which inherit it), and waits (bounded) until none is left. Returns what it killed.
pub fn kill_strays(container_ids: &std::collections::HashSet<String>) -> Vec<Stray> {
    let mut killed: Vec<Stray> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = find_strays(container_ids);
        if found.is_empty() || Instant::now() > deadline {
            return killed;
        }
        for stray in found {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(stray.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            if !killed.iter().any(|k| k.pid == stray.pid) {
                killed.push(stray);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn find_strays(container_ids: &std::collections::HashSet<String>) -> Vec<Stray> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id() as i32;
    procs
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            if pid == own {
                return None;
            }
            // A zombie or a kernel thread has an empty environment and is skipped.
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let var = |name: &[u8]| {
                environ
                    .split(|b| *b == 0)
                    .find_map(|kv| kv.strip_prefix(name))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let container_id = var(b"CNI_CONTAINERID=")?;
            if !container_ids.contains(&container_id) {
                return None;
            }
            Some(Stray {
                pid,
                container_id,
                command: var(b"CNI_COMMAND=").unwrap_or_default(),
                exe: std::fs::read_link(entry.path().join("exe"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Kills a plugin's process group when dropped before [`GroupGuard::disarm`]: tokio's
/// `kill_on_drop` ends the plugin itself, not the children it started.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0.take());
    }
}

fn kill_group(pgid: Option<u32>) {
    if let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown exit".to_string(),
    }
}

async fn read_limited(mut r: impl AsyncRead + Unpin, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() < limit {
            out.extend_from_slice(&buf[..n.min(limit - out.len())]);
        }
    }
}

async fn read_tail(mut r: impl AsyncRead + Unpin, keep: usize) -> std::io::Result<String> {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
    Ok(String::from_utf8_lossy(&tail).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        crate::test_scripts::write_executable(&path, &format!("#!/bin/sh\n{body}\n"));
        path
    }

    fn inv() -> PluginEnv<'static> {
        PluginEnv {
            command: "ADD",
            container_id: "c1",
            netns: "/x",
            ifname: "eth0",
            args: "A=1",
            path: "/bin",
        }
    }

    #[tokio::test]
    async fn plugin_sees_only_the_cni_environment_and_its_stdin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = script(dir.path(), "envdump", "env | sort; cat");
        let out = run(
            &bin,
            &inv(),
            b"{\"x\":1}",
            "/usr/bin:/bin",
            Duration::from_secs(10),
        )
        .await
        .expect("runs");
        assert!(out.success);
        let text = String::from_utf8(out.stdout).expect("utf8");
        let mut vars: Vec<&str> = text
            .lines()
            .filter(|l| l.contains('='))
            .filter_map(|l| l.split('=').next())
            .filter(|k| *k != "PWD" && *k != "SHLVL" && *k != "_")
            .collect();
        vars.sort();
        assert_eq!(
            vars,
            [
                "CNI_ARGS",
                "CNI_COMMAND",
                "CNI_CONTAINERID",
                "CNI_IFNAME",
                "CNI_NETNS",
                "CNI_PATH",
                "PATH"
            ]
        );
        assert!(text.ends_with("{\"x\":1}"));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("child-alive");
        let bin = script(
            dir.path(),
            "hang",
            &format!("(sleep 3; touch {}) & sleep 30", marker.display()),
        );
        let err = run(
            &bin,
            &inv(),
            b"",
            "/usr/bin:/bin",
            Duration::from_millis(300),
        )
        .await
        .expect_err("must time out");
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!marker.exists(), "the plugin's child survived the timeout");
    }

    #[tokio::test]
    async fn a_dropped_run_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let child_pid = dir.path().join("child.pid");
        let bin = script(
            dir.path(),
            "hang",
            &format!("sleep 60 & echo $! > {}; wait", child_pid.display()),
        );
        let inv = inv();
        let running = run(&bin, &inv, b"", "/usr/bin:/bin", Duration::from_secs(60));
        tokio::select! {
            _ = running => panic!("the plugin cannot finish"),
            _ = async {
                while std::fs::read_to_string(&child_pid).map_or(true, |s| s.trim().is_empty()) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } => {}
        }
        // The run future is gone: its plugin's child must die too (the group is killed).
        let pid = std::fs::read_to_string(&child_pid).expect("pid");
        let proc_dir = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while proc_dir.exists() && !is_zombie(&proc_dir) {
            assert!(
                Instant::now() < deadline,
                "the plugin's child outlived the dropped run"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn is_zombie(proc_dir: &std::path::Path) -> bool {
        std::fs::read_to_string(proc_dir.join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    }

    #[tokio::test]
    async fn failure_keeps_status_and_stderr_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = script(dir.path(), "fail", "echo boom >&2; exit 3");
        let out = run(&bin, &inv(), b"", "/bin", Duration::from_secs(10))
            .await
            .expect("runs");
        assert!(!out.success);
        assert_eq!(out.status, "exit status 3");
        assert_eq!(out.stderr_tail.trim(), "boom");
    }
}
