//! The test node: temp dirs, a private network namespace, the daemon inside it, and the
//! `Drop` that undoes all of it. Never speaks CRI beyond Version (see client.rs).

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::{json, Value};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{conflist, eventually, links_in, pod_config_in, portmap, run, NETWORK, SUBNET};

/// How long the daemon may take to start answering before the test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for one RPC, so a hung daemon fails the test instead of hanging it.
const RPC_TIMEOUT: Duration = Duration::from_secs(60);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// What the conf dir holds when the daemon starts.
pub enum Conf {
    /// bridge (+ host-local) then portmap.
    Default,
    /// No conf at all (NetworkReady must be false).
    Empty,
    /// bridge (+ host-local) followed by these plugin entries instead of portmap.
    After(Vec<Value>),
}

/// One test node: temp dirs, a private network namespace and the daemon running inside it.
pub struct Node {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub netns_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub ipam_dir: PathBuf,
    pub log_path: PathBuf,
    /// Name of the node network namespace (`/run/netns/<name>`).
    pub netns_name: String,
    /// Bridge the default conf creates inside the node namespace.
    pub bridge: String,
    /// Extra daemon flags (e.g. `--cni-plugin-timeout`), kept across restarts.
    pub extra_args: Vec<String>,
    /// The daemon's `--log-level`: `debug` for tests, `info` (as in production) for benches.
    pub log_level: &'static str,
    child: Option<Child>,
    netns_created: bool,
    // Declared last so it is removed after everything above has been cleaned up.
    _tmp: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts a node with the default conf (bridge + host-local + portmap).
    pub async fn start() -> Node {
        Self::start_with(Conf::Default).await
    }

    /// Starts a node whose conf dir holds `conf` at start-up.
    pub async fn start_with(conf: Conf) -> Node {
        Self::start_with_args(conf, &[]).await
    }

    /// Starts a node whose daemon gets `args` on top of the usual flags.
    pub async fn start_with_args(conf: Conf, args: &[&str]) -> Node {
        let mut node = Self::prepared_with_args(conf, args);
        node.start_daemon().await;
        node
    }

    /// Starts a node whose daemon also gets `args` and the environment `env`.
    pub async fn start_with_env(conf: Conf, args: &[&str], env: &[(&str, &str)]) -> Node {
        let mut node = Self::prepared(conf);
        let mut cmd = node.daemon_command();
        cmd.args(args).envs(env.iter().copied());
        node.start_daemon_with(cmd).await;
        node
    }

    /// A node whose conf dir holds `conf`, with its namespace but no daemon yet: start one with
    /// [`Node::start_daemon_with`] (e.g. [`Node::daemon_command`] plus flags or environment).
    pub fn prepared(conf: Conf) -> Node {
        Self::prepared_with_args(conf, &[])
    }

    fn prepared_with_args(conf: Conf, args: &[&str]) -> Node {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tmp = tempfile::Builder::new()
            .prefix("crisp-t-")
            .tempdir()
            .expect("create temp dir");
        let dir = tmp.path().to_path_buf();
        let mut node = Node {
            socket: dir.join("crisp.sock"),
            root: dir.join("root"),
            netns_dir: dir.join("netns"),
            conf_dir: dir.join("conf"),
            bin_dir: dir.join("bin"),
            ipam_dir: dir.join("ipam"),
            log_path: dir.join("crisp.log"),
            netns_name: format!("crisp-t-{pid}-{n}"),
            bridge: format!("cr{}x{n}", pid % 1000),
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            log_level: "debug",
            dir,
            child: None,
            netns_created: false,
            _tmp: Some(tmp),
        };
        for d in [
            &node.root,
            &node.netns_dir,
            &node.conf_dir,
            &node.bin_dir,
            &node.ipam_dir,
        ] {
            fs::create_dir_all(d).expect("create dir");
        }
        node.install_fixtures();
        match conf {
            Conf::Default => {
                let c = node.conflist(vec![portmap()]);
                node.write_conf("10-crisp-test.conflist", &c);
            }
            Conf::Empty => {}
            Conf::After(plugins) => {
                let c = node.conflist(plugins);
                node.write_conf("10-crisp-test.conflist", &c);
            }
        }
        run(Command::new("ip").args(["netns", "add", &node.netns_name]));
        node.netns_created = true;
        run(Command::new("ip").args(["-n", &node.netns_name, "link", "set", "lo", "up"]));
        node
    }

    /// Path of the node namespace pin.
    pub fn node_netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns_name)
    }

    /// The `--cni-bin-dir` value: the real plugins first, then the stand-ins.
    pub fn cni_bin_dirs(&self) -> String {
        format!("/usr/lib/cni:{}", self.bin_dir.display())
    }

    fn install_fixtures(&self) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for path in list_files(&src) {
            let dst = self.bin_dir.join(path.file_name().expect("fixture name"));
            fs::copy(&path, &dst).expect("copy fixture plugin");
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).expect("chmod plugin");
        }
    }

    /// A conflist: bridge (isGateway, no masquerade, hairpin) with host-local IPAM in the test's
    /// temp dir, followed by `tail`.
    pub fn conflist(&self, tail: Vec<Value>) -> String {
        let mut plugins = vec![json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": SUBNET }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": self.ipam_dir,
            }
        })];
        plugins.extend(tail);
        conflist("1.0.0", NETWORK, &plugins)
    }

    /// Writes a file into the conf dir (atomically, so the daemon never reads half of it).
    pub fn write_conf(&self, file: &str, content: &str) {
        let tmp = self.dir.join(format!(".{file}.tmp"));
        fs::write(&tmp, content).expect("write conf");
        fs::rename(&tmp, self.conf_dir.join(file)).expect("rename conf");
    }

    /// The daemon's command line for this node, entering the node namespace (setns only) just
    /// before exec, with stdout/stderr appended to the node's log.
    pub fn daemon_command(&self) -> Command {
        self.daemon_command_with_root(&self.root)
    }

    /// [`Node::daemon_command`] with another `--root`.
    pub fn daemon_command_with_root(&self, root: &Path) -> Command {
        let mut cmd = self.bare_daemon_command();
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--root")
            .arg(root)
            .arg("--netns-dir")
            .arg(&self.netns_dir)
            .arg("--cni-conf-dir")
            .arg(&self.conf_dir)
            .arg("--cni-bin-dir")
            .arg(self.cni_bin_dirs())
            .args(["--log-level", self.log_level])
            .args(&self.extra_args);
        cmd
    }

    /// The daemon binary with no flags and no CRISP_* environment, entering the node
    /// namespace (setns only) just before exec, stdout/stderr appended to the node's log.
    pub fn bare_daemon_command(&self) -> Command {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        let log2 = log.try_clone().unwrap();
        let netns = File::open(self.node_netns_path()).expect("open node netns");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crisp"));
        // Only what the test passes configures the daemon: no CRISP_* from the caller.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CRISP_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        // Enter the node namespace with setns only: the daemon must stay in our mount
        // namespace so the pod namespace pins it makes are visible (and removable) here.
        // The closure owns the namespace file, so its fd is open in the forked child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Starts the daemon (after [`Node::stop`]) and waits until it answers Version; returns
    /// the time from spawn to that first answer.
    pub async fn start_daemon(&mut self) -> Duration {
        let cmd = self.daemon_command();
        self.start_daemon_with(cmd).await
    }

    /// Starts the daemon from `cmd` (which must serve this node's socket), owned by the node
    /// from now on, and waits until it answers Version; returns the time from spawn to then.
    pub async fn start_daemon_with(&mut self, mut cmd: Command) -> Duration {
        assert!(self.child.is_none(), "daemon already running");
        let started = Instant::now();
        let child = cmd.spawn().expect("spawn crisp");
        self.child = Some(child);
        self.wait_ready(started).await;
        started.elapsed()
    }

    async fn wait_ready(&mut self, started: Instant) {
        let deadline = started + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("crisp exited during start-up with {status}");
            }
            if self.socket.exists() {
                if let Ok(mut c) = self.try_client().await {
                    let v = c
                        .version(cri::VersionRequest {
                            version: String::new(),
                        })
                        .await;
                    if v.is_ok() {
                        return;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "crisp did not answer Version on {} within {START_TIMEOUT:?}",
                    self.socket.display()
                );
            }
            // Fine-grained: the bench reports spawn-to-answer times.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Opens a channel over the daemon's Unix socket.
    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        let path = self.socket.clone();
        Endpoint::try_from("http://[::]")?
            .timeout(RPC_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                }
            }))
            .await
    }

    async fn try_client(&self) -> Result<RuntimeServiceClient<Channel>, tonic::transport::Error> {
        Ok(RuntimeServiceClient::new(self.channel().await?))
    }

    /// A RuntimeService client over the socket.
    pub async fn client(&self) -> RuntimeServiceClient<Channel> {
        self.try_client().await.expect("connect to crisp")
    }

    /// An ImageService client over the socket.
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await.expect("connect to crisp"))
    }

    /// SIGTERM the daemon and assert that it exits 0.
    pub async fn stop(&mut self) {
        self.stop_with(libc::SIGTERM).await;
    }

    /// Sends `sig` to the daemon and asserts that it exits 0.
    ///
    /// Waits asynchronously: the test's own (idle) client connections live on this runtime
    /// and must be able to answer the server's GOAWAY while the daemon drains.
    pub async fn stop_with(&mut self, sig: libc::c_int) {
        let mut child = self.child.take().expect("daemon not running");
        signal(&mut child, sig);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for crisp") {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        match status {
            Some(s) => assert!(s.success(), "crisp exited with {s} after signal {sig}"),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("crisp did not exit within 20 s of signal {sig}");
            }
        }
    }

    /// SIGKILLs the daemon (a crash) and reaps it; [`Node::start_daemon`] starts it again.
    pub fn kill_hard(&mut self) {
        let mut child = self.child.take().expect("daemon not running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the daemon (SIGTERM, exit 0) and starts it again on the same dirs.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_daemon().await;
    }

    /// Whether the daemon process is still running.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// The daemon log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A PodSandboxConfig shaped like crictl's `runp` JSON / the kubelet's request.
    pub fn pod_config(&self, name: &str) -> cri::PodSandboxConfig {
        pod_config_in(&self.dir.join("logs"), name)
    }

    /// Everything crisp or the plugins could leave behind for a sandbox.
    pub fn leftovers(&self) -> Leftovers {
        Leftovers {
            netns_files: list_files(&self.netns_dir),
            ip_files: list_files(&self.ipam_dir.join(NETWORK))
                .into_iter()
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
                })
                .collect(),
            records: list_files(&self.root.join("sandboxes"))
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect(),
            cache_files: walk_files(&self.root.join("cni")),
        }
    }

    /// Interface names in the node namespace.
    pub fn node_links(&self) -> Vec<String> {
        links_in(&["-n", &self.netns_name])
    }

    /// The host-side veths in the node namespace now.
    pub fn veths(&self) -> Vec<String> {
        self.node_links()
            .into_iter()
            .filter(|l| l.starts_with("veth"))
            .collect()
    }

    /// The node's host-side veths that are still there after their pods' namespaces had
    /// 20 s to go: a veth left to the namespace goes with it when the kernel's asynchronous
    /// namespace teardown runs, not at once.
    pub async fn veths_left_after_teardown(&self) -> Vec<String> {
        let gone = eventually(Duration::from_secs(20), || async {
            self.veths().is_empty().then_some(())
        })
        .await;
        if gone.is_some() {
            Vec::new()
        } else {
            self.veths()
        }
    }

    /// Runs `ip` with `args` inside the node namespace and returns stdout.
    pub fn ip_in_node(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.netns_name];
        full.extend_from_slice(args);
        run(Command::new("ip").args(full))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&mut child, libc::SIGTERM);
            if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "----- crisp log ({}) -----\n{}\n----- end of crisp log -----",
                self.log_path.display(),
                self.log()
            );
        }
        // Pod namespace pins: unmount (lazily) and remove, in case a test failed mid-way.
        for _ in 0..3 {
            for f in list_files(&self.netns_dir) {
                let _ = nix::mount::umount2(&f, nix::mount::MntFlags::MNT_DETACH);
                let _ = fs::remove_file(&f);
            }
        }
        if self.netns_created {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.netns_name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // The temp dir (root, conf, ipam data, log, socket) goes with `_tmp`.
    }
}

/// Counts of what is left on the node.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub netns_files: Vec<PathBuf>,
    pub ip_files: Vec<PathBuf>,
    pub records: Vec<PathBuf>,
    pub cache_files: Vec<PathBuf>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.netns_files.is_empty()
            && self.ip_files.is_empty()
            && self.records.is_empty()
            && self.cache_files.is_empty()
    }
}

/// Nothing left for any pod: no pin, IP file, record or cache entry, and (once the kernel has
/// destroyed the pod namespaces) no host-side veth.
pub async fn assert_nothing_leaked(node: &Node, what: &str) {
    let left = node.leftovers();
    assert!(left.is_empty(), "{what}: left behind {left:?}");
    let veths = node.veths_left_after_teardown().await;
    assert!(veths.is_empty(), "{what}: host-side veths left: {veths:?}");
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for p in list_files(&d) {
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn signal(child: &mut Child, sig: libc::c_int) {
    // Only while the child is unreaped, so the pid cannot belong to anyone else.
    if let Ok(None) = child.try_wait() {
        // SAFETY: plain kill(2) on our own, still unreaped child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, sig);
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
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a second daemon to completion (it must exit by itself) and returns its exit status
/// and output.
pub async fn run_second(mut cmd: std::process::Command) -> (std::process::ExitStatus, String) {
    let mut second = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn second crisp");
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second crisp kept running");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let out = second.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (exit, text)
}
