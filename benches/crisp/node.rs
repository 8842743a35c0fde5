//! A bench node: temp dirs, a private "node" network namespace, and the real crisp binary
//! running inside it (entered with setns(CLONE_NEWNET) only, as tests/support does, so the pod
//! namespace pins it makes stay visible here). Everything is undone in `Drop`, also when the
//! bench fails half-way: the daemon is stopped, pins are unmounted, the node namespace (and
//! with it every bridge, veth and iptables rule the plugins made) is deleted, the dirs go.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const RPC_TIMEOUT: Duration = Duration::from_secs(120);

pub type Client = RuntimeServiceClient<Channel>;

pub struct Node {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub netns_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub ipam_dir: PathBuf,
    pub log_path: PathBuf,
    pub netns_name: String,
    /// Extra daemon flags (e.g. `--cni-fast-path auto`).
    pub extra_args: Vec<String>,
    child: Option<Child>,
    netns_created: bool,
    _tmp: tempfile::TempDir,
}

impl Node {
    /// Makes the dirs and the node namespace; `tag` keeps names unique within the run.
    pub fn new(tag: &str) -> Result<Node, String> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("crisp-bench-{tag}-"))
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let dir = tmp.path().to_path_buf();
        let mut node = Node {
            socket: dir.join("crisp.sock"),
            root: dir.join("root"),
            netns_dir: dir.join("netns"),
            conf_dir: dir.join("conf"),
            bin_dir: dir.join("bin"),
            ipam_dir: dir.join("ipam"),
            log_path: dir.join("crisp.log"),
            netns_name: format!("crisp-bench-{}-{tag}", std::process::id()),
            dir,
            extra_args: Vec::new(),
            child: None,
            netns_created: false,
            _tmp: tmp,
        };
        for d in [
            &node.root,
            &node.netns_dir,
            &node.conf_dir,
            &node.bin_dir,
            &node.ipam_dir,
        ] {
            fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        run_cmd(Command::new("ip").args(["netns", "add", &node.netns_name]))?;
        node.netns_created = true;
        run_cmd(Command::new("ip").args(["-n", &node.netns_name, "link", "set", "lo", "up"]))?;
        Ok(node)
    }

    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns_name)
    }

    /// Copies a stand-in plugin from tests/fixtures into this node's bin dir.
    pub fn install_fixture(&self, name: &str) -> Result<(), String> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let dst = self.bin_dir.join(name);
        fs::copy(&src, &dst).map_err(|e| format!("copying {}: {e}", src.display()))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", dst.display()))
    }

    pub fn write_conf(&self, file: &str, content: &str) -> Result<(), String> {
        let path = self.conf_dir.join(file);
        fs::write(&path, content).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Starts crisp (info logging, as in production) and waits until it answers Version;
    /// returns the time from spawn to that first answer.
    pub async fn start(&mut self) -> Result<Duration, String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log: {e}"))?;
        let netns = File::open(self.netns_path()).map_err(|e| format!("node netns: {e}"))?;
        let netns_fd = netns.as_raw_fd();
        let bin_dirs = format!("{}:/opt/cni/bin:/usr/lib/cni", self.bin_dir.display());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crisp"));
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--root")
            .arg(&self.root)
            .arg("--netns-dir")
            .arg(&self.netns_dir)
            .arg("--cni-conf-dir")
            .arg(&self.conf_dir)
            .arg("--cni-bin-dir")
            .arg(bin_dirs)
            .args(["--log-level", "info"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        // SAFETY: only setns(2), async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd.spawn().map_err(|e| format!("spawning crisp: {e}"))?;
        drop(netns);
        self.child = Some(child);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "crisp exited during start-up with {status}; log:\n{}",
                        self.log()
                    ));
                }
            }
            if let Ok(mut c) = self.client().await {
                let v = c
                    .version(cri::VersionRequest {
                        version: String::new(),
                    })
                    .await;
                if v.is_ok() {
                    return Ok(started.elapsed());
                }
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!("crisp did not answer within {START_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// SIGTERM and wait for a clean exit (sandboxes stay for the next start).
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        terminate(&mut child);
        match wait_timeout(&mut child, Duration::from_secs(30)) {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(format!("crisp exited with {s} after SIGTERM")),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err("crisp did not exit within 30 s of SIGTERM".into())
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's resident set (VmRSS) in KiB.
    pub fn rss_kib(&self) -> Result<u64, String> {
        let pid = self.pid().ok_or("crisp is not running")?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
    }

    /// (RssAnon, RssFile) in KiB: heap and stacks vs the mapped binary and libraries.
    pub fn rss_parts(&self) -> Option<(u64, u64)> {
        let pid = self.pid()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Some((field("RssAnon:")?, field("RssFile:")?))
    }

    /// The daemon's thread count.
    pub fn threads(&self) -> Option<u64> {
        let pid = self.pid()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A new connection to the daemon (one per simulated client).
    pub async fn client(&self) -> Result<Client, String> {
        let path = self.socket.clone();
        let channel =
            Endpoint::try_from("http://[::]")
                .map_err(|e| e.to_string())?
                .timeout(RPC_TIMEOUT)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|e| format!("connecting to crisp: {e}"))?;
        Ok(RuntimeServiceClient::new(channel))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
            if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        unpin_all(&self.netns_dir);
        if self.netns_created {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.netns_name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Unmounts and removes every namespace pin in `dir` (a bench that failed mid-way).
pub fn unpin_all(dir: &Path) {
    for _ in 0..3 {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            let _ = fs::remove_file(e.path());
        }
    }
}

pub fn run_cmd(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn terminate(child: &mut Child) {
    // Only while unreaped, so the pid is still our child's.
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().ok().flatten() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
