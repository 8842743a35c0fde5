//! Test harness: runs the real `crisp` binary inside a private "node" network namespace and
//! talks to it over its Unix socket, like crictl and kubelet do.
//!
//! Every resource a test creates lives in a guard ([`Node`]) whose `Drop` kills the daemon,
//! unmounts and removes any pod namespace pin left in the temp netns dir, deletes the node
//! namespace (and with it the bridge, veths and iptables rules the plugins made there) and removes
//! the temp dirs, so a failing test leaks nothing. On failure the daemon log is printed.
//!
//! Tests run on `#[tokio::test(flavor = "multi_thread")]`: the daemon drains open connections on
//! SIGTERM, and the clients' connection tasks must keep running (to answer its GOAWAY) while a
//! test thread sits in `Drop` waiting for the daemon to exit.
//!
//! Needs root, `ip`, `nsenter`, `iptables`, the CNI plugins in /usr/lib/cni and `grpcurl`.
#![allow(dead_code, unused_imports)]

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::net::Ipv4Addr;
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

pub use cri::{NamespaceMode, PodSandboxState};

pub mod http2;

/// The CNI network name used by every test conf.
pub const NETWORK: &str = "crisp-test";
/// The pod subnet. Each node has its own network namespace, so the same range can be reused.
pub const SUBNET: &str = "10.99.0.0/24";
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
        serde_json::to_string_pretty(&json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": plugins,
        }))
        .unwrap()
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
            .args(["--log-level", "debug"])
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

    /// Starts the daemon (after [`Node::stop`]) and waits until it answers Version.
    pub async fn start_daemon(&mut self) {
        let cmd = self.daemon_command();
        self.start_daemon_with(cmd).await;
    }

    /// Starts the daemon from `cmd` (which must serve this node's socket), owned by the node
    /// from now on, and waits until it answers Version.
    pub async fn start_daemon_with(&mut self, mut cmd: Command) {
        assert!(self.child.is_none(), "daemon already running");
        let child = cmd.spawn().expect("spawn crisp");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
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
            tokio::time::sleep(Duration::from_millis(50)).await;
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

    /// The node's host-side veths that are still there after their pods' namespaces had
    /// 20 s to go: a veth left to the namespace goes with it when the kernel's asynchronous
    /// namespace teardown runs, not at once.
    pub async fn veths_left_after_teardown(&self) -> Vec<String> {
        let veths = || -> Vec<String> {
            self.node_links()
                .into_iter()
                .filter(|l| l.starts_with("veth"))
                .collect()
        };
        let gone = eventually(Duration::from_secs(20), || async {
            veths().is_empty().then_some(())
        })
        .await;
        if gone.is_some() {
            Vec::new()
        } else {
            veths()
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

/// The portmap plugin entry of the default conf.
pub fn portmap() -> Value {
    json!({ "type": "portmap", "capabilities": { "portMappings": true } })
}

/// A stand-in plugin entry (`fail-add`, `garbage`, `noop`).
pub fn stand_in(name: &str) -> Value {
    json!({ "type": name })
}

/// The uid the helpers give a pod called `name`.
pub fn uid_of(name: &str) -> String {
    format!("uid-{name}")
}

/// A PodSandboxConfig like crictl's `runp` JSON, with its log directory under `log_root`.
pub fn pod_config_in(log_root: &Path, name: &str) -> cri::PodSandboxConfig {
    let namespace = "default";
    let uid = uid_of(name);
    let labels: HashMap<String, String> = [
        ("app", name),
        ("io.kubernetes.pod.name", name),
        ("io.kubernetes.pod.namespace", namespace),
        ("io.kubernetes.pod.uid", uid.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations: HashMap<String, String> = [
        ("crisp.test/purpose", "integration test"),
        ("crisp.test/quote", "a \"quoted\" value, with: punctuation"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.clone(),
            namespace: namespace.to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_root
            .join(format!("{namespace}_{name}_{uid}"))
            .display()
            .to_string(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        }),
        port_mappings: vec![cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 80,
            host_port: 0,
            host_ip: String::new(),
        }],
        labels,
        annotations,
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            sysctls: HashMap::new(),
            ..Default::default()
        }),
        windows: None,
    }
}

/// Sets the network namespace mode of a config (creating the nested messages if needed).
pub fn set_network_mode(config: &mut cri::PodSandboxConfig, mode: NamespaceMode) {
    let linux = config.linux.get_or_insert_with(Default::default);
    let sc = linux.security_context.get_or_insert_with(Default::default);
    let ns = sc.namespace_options.get_or_insert_with(Default::default);
    ns.network = mode as i32;
}

/// RunPodSandbox request for a config, default runtime handler.
pub fn run_req(config: cri::PodSandboxConfig) -> cri::RunPodSandboxRequest {
    cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    }
}

/// Runs a pod and returns its id (panics with the status on error).
pub async fn run_pod(
    client: &mut RuntimeServiceClient<Channel>,
    config: cri::PodSandboxConfig,
) -> String {
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let id = client
        .run_pod_sandbox(run_req(config))
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e:?}"))
        .into_inner()
        .pod_sandbox_id;
    assert_valid_id(&id);
    id
}

/// RunPodSandbox must fail with `code` and a message holding every piece of `says`.
pub async fn run_fails_with(
    client: &mut RuntimeServiceClient<Channel>,
    config: cri::PodSandboxConfig,
    code: tonic::Code,
    says: &[&str],
) -> tonic::Status {
    let err = client
        .run_pod_sandbox(run_req(config))
        .await
        .expect_err("RunPodSandbox must fail");
    assert_eq!(err.code(), code, "{err:?}");
    for piece in says {
        assert!(
            err.message().contains(piece),
            "message lacks {piece:?}: {}",
            err.message()
        );
    }
    err
}

/// The next event of a GetContainerEvents stream (panics after 30 s without one).
pub async fn next_event(
    events: &mut tonic::Streaming<cri::ContainerEventResponse>,
) -> cri::ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(30), futures::StreamExt::next(events))
        .await
        .expect("an event within 30 s")
        .expect("stream open")
        .expect("event")
}

/// The network namespace mode a sandbox status reports (kubelet recreates a pod sandbox
/// whose mode is not POD).
pub fn network_mode(st: &cri::PodSandboxStatus) -> Option<i32> {
    st.linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .map(|o| o.network)
}

/// PodSandboxStatus (panics on error); returns the status and the info map.
pub async fn status(
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
    verbose: bool,
) -> (cri::PodSandboxStatus, HashMap<String, String>) {
    let r = client
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose,
        })
        .await
        .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {e:?}"))
        .into_inner();
    (r.status.expect("status set"), r.info)
}

/// The verbose `info["info"]` object of a sandbox.
pub async fn verbose_info(client: &mut RuntimeServiceClient<Channel>, id: &str) -> Value {
    let (_, info) = status(client, id, true).await;
    let raw = info
        .get("info")
        .unwrap_or_else(|| panic!("verbose status has no \"info\" key: {info:?}"));
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("info is not JSON ({e}): {raw}"))
}

/// The netns path crisp reports for a sandbox.
pub async fn netns_path(client: &mut RuntimeServiceClient<Channel>, id: &str) -> PathBuf {
    let info = verbose_info(client, id).await;
    PathBuf::from(
        info["netnsPath"]
            .as_str()
            .unwrap_or_else(|| panic!("info has no string netnsPath: {info}")),
    )
}

pub async fn stop_pod(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    client
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e:?}"));
}

pub async fn remove_pod(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e:?}"));
}

/// ListPodSandbox with an optional filter; returns the items.
pub async fn list(
    client: &mut RuntimeServiceClient<Channel>,
    filter: Option<cri::PodSandboxFilter>,
) -> Vec<cri::PodSandbox> {
    client
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter })
        .await
        .unwrap_or_else(|e| panic!("ListPodSandbox: {e:?}"))
        .into_inner()
        .items
}

/// The ids of a list answer.
pub fn ids(items: &[cri::PodSandbox]) -> Vec<String> {
    items.iter().map(|p| p.id.clone()).collect()
}

/// Asserts a sandbox id is 64 lowercase-or-uppercase hex chars.
pub fn assert_valid_id(id: &str) {
    assert_eq!(id.len(), 64, "sandbox id {id:?} is not 64 chars");
    assert!(
        id.chars().all(|c| c.is_ascii_hexdigit()),
        "sandbox id {id:?} is not hex"
    );
}

/// The IPv4 addresses of `dev` inside the namespace pinned at `netns`.
pub fn ipv4_of(netns: &Path, dev: &str) -> Vec<Ipv4Addr> {
    let out = run(Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-j", "-4", "addr", "show", "dev", dev]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j: {e}: {out}"));
    let mut ips = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let Some(ip) = a["local"].as_str() {
                ips.push(ip.parse().expect("ipv4"));
            }
        }
    }
    ips
}

/// Interface names of the namespace selected by `ns_args` (e.g. `["-n", name]`).
pub fn links_in(ns_args: &[&str]) -> Vec<String> {
    let mut args = ns_args.to_vec();
    args.extend_from_slice(&["-j", "link", "show"]);
    let out = run(Command::new("ip").args(args));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j: {e}: {out}"));
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

/// Interface names inside the namespace pinned at `netns`.
pub fn links_in_netns(netns: &Path) -> Vec<String> {
    let out = run(Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-j", "link", "show"]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j: {e}: {out}"));
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

/// Runs `f` on a fresh OS thread that has entered the network namespace pinned at `path`
/// (never on a tokio worker: the setns dies with the thread).
pub fn in_netns<T, F>(path: &Path, f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns =
                File::open(path).unwrap_or_else(|e| panic!("open netns {}: {e}", path.display()));
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Runs a command, panics unless it exits 0, returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// kubelet's start-up RuntimeConfig (gate KubeletCgroupDriverFromCRI, on from 1.31): three
/// tries, none may fail; with no --cgroup-driver `linux` is unset, so kubelet keeps its own.
pub async fn kubelet_runtime_config(client: &mut RuntimeServiceClient<Channel>) {
    for _ in 0..3 {
        let answer = client
            .runtime_config(cri::RuntimeConfigRequest {})
            .await
            .expect("RuntimeConfig: any error but Unimplemented and kubelet exits")
            .into_inner();
        assert_eq!(
            answer.linux, None,
            "no driver unless --cgroup-driver is set"
        );
    }
}

/// GETs a URL from inside the node namespace with curl (loopback only).
pub fn curl_in_node(node: &Node, url: &str) -> String {
    run(Command::new("ip").args([
        "netns",
        "exec",
        &node.netns_name,
        "curl",
        "-sS",
        "--fail",
        "--max-time",
        "20",
        url,
    ]))
}

/// The value of the first Prometheus sample whose line starts with `prefix`.
pub fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `f` every 100 ms until it returns Some, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads a whole stream (used for sockets in pod namespaces).
pub fn read_all(r: &mut impl Read) -> Vec<u8> {
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).expect("read");
    buf
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
