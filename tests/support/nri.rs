//! NRI on a test node: the daemon flags, the test plugin (`nri-test-plugin`, an example target
//! built from tests/nri-plugin/plugin.rs) as a guarded process, and readers for its event log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{eventually, Client, Node};
use k8s_cri::v1 as cri;

/// The NRI paths of a node: its socket, plugin dir and plugin config dir.
pub struct NriDirs {
    pub socket: PathBuf,
    pub plugin_dir: PathBuf,
    pub config_dir: PathBuf,
}

impl NriDirs {
    pub fn of(node: &Node) -> NriDirs {
        NriDirs {
            socket: node.dir.join("nri.sock"),
            plugin_dir: node.dir.join("nri-plugins"),
            config_dir: node.dir.join("nri-conf"),
        }
    }
}

/// Turns NRI on for the node's daemon (kept across restarts) with a request timeout of
/// `request_timeout_secs`, and creates its plugin and config dirs.
pub fn enable_nri(node: &mut Node, request_timeout_secs: u64) -> NriDirs {
    let dirs = NriDirs::of(node);
    std::fs::create_dir_all(&dirs.plugin_dir).expect("create NRI plugin dir");
    std::fs::create_dir_all(&dirs.config_dir).expect("create NRI config dir");
    let path = |p: &Path| p.display().to_string();
    node.extra_args.extend([
        "--nri".to_string(),
        "on".to_string(),
        "--nri-socket".to_string(),
        path(&dirs.socket),
        "--nri-plugin-dir".to_string(),
        path(&dirs.plugin_dir),
        "--nri-plugin-config-dir".to_string(),
        path(&dirs.config_dir),
        "--nri-request-timeout".to_string(),
        request_timeout_secs.to_string(),
    ]);
    dirs
}

/// The test plugin's binary, built next to crisp's.
pub fn plugin_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_crisp"))
        .parent()
        .expect("target dir")
        .join("examples")
        .join("nri-test-plugin");
    assert!(
        bin.exists(),
        "the NRI test plugin is not built at {}: run `cargo build --example nri-test-plugin` \
         (`make test` builds it)",
        bin.display()
    );
    bin
}

/// An external test plugin connected to crisp's NRI socket; killed when dropped.
pub struct TestPlugin {
    pub identity: String,
    pub log: PathBuf,
    child: Child,
}

impl TestPlugin {
    /// Starts `IDX-NAME` (`identity`) on `socket`, logging to `log`, with extra `--key=value`
    /// options, and waits until crisp lists it as connected (after its Synchronize).
    pub async fn connect(
        client: &mut Client,
        socket: &Path,
        identity: &str,
        log: &Path,
        options: &[&str],
    ) -> TestPlugin {
        let (idx, name) = identity.split_once('-').expect("identity is IDX-NAME");
        let child = Command::new(plugin_bin())
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--name={name}"))
            .arg(format!("--idx={idx}"))
            .arg(format!("--log={}", log.display()))
            .args(options)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn nri-test-plugin");
        let plugin = TestPlugin {
            identity: identity.to_string(),
            log: log.to_path_buf(),
            child,
        };
        let listed = eventually(Duration::from_secs(10), || {
            let mut client = client.clone();
            let plugin = &plugin;
            async move {
                let synced = !plugin.events("Synchronize").is_empty();
                let listed = connected_plugins(&mut client)
                    .await
                    .contains(&plugin.identity);
                (synced && listed).then_some(())
            }
        })
        .await;
        assert!(
            listed.is_some(),
            "{identity} did not connect to {}",
            socket.display()
        );
        plugin
    }

    /// This plugin's lines of `event` in its log.
    pub fn events(&self, event: &str) -> Vec<Value> {
        log_lines(&self.log)
            .into_iter()
            .filter(|l| l["plugin"] == self.identity.as_str() && l["event"] == event)
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TestPlugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every JSON line of a plugin log (none if it does not exist yet).
pub fn log_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l:?}: {e}")))
        .collect()
}

/// The pod events of a log as `(plugin, event, pod id)`, in the order they arrived.
pub fn pod_events(log: &Path) -> Vec<(String, String, String)> {
    log_lines(log)
        .into_iter()
        .filter(|l| {
            l["event"]
                .as_str()
                .is_some_and(|e| e.ends_with("PodSandbox"))
        })
        .map(|l| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (text(&l["plugin"]), text(&l["event"]), text(&l["pod"]["id"]))
        })
        .collect()
}

/// Waits until some plugin has logged `event` for a pod and returns that line.
pub async fn wait_for_event(log: &Path, event: &str) -> Value {
    let found = eventually(Duration::from_secs(20), || async {
        log_lines(log).into_iter().find(|l| l["event"] == event)
    })
    .await;
    found.unwrap_or_else(|| panic!("no {event} in {}", log.display()))
}

/// The `IDX-NAME` of every plugin verbose Status lists as connected.
pub async fn connected_plugins(client: &mut Client) -> Vec<String> {
    nri_status(client).await["plugins"]
        .as_array()
        .map(|plugins| {
            plugins
                .iter()
                .map(|p| {
                    format!(
                        "{}-{}",
                        p["index"].as_str().unwrap_or(""),
                        p["name"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Verbose Status's `nri` entry (null when NRI is off).
pub async fn nri_status(client: &mut Client) -> Value {
    let status = client
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let raw = status
        .info
        .get("nri")
        .expect("verbose Status has an \"nri\" key");
    serde_json::from_str(raw).expect("nri info is JSON")
}

/// Whether a process is running (a zombie is not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}
