//! The floor: the same network list run directly, with no runtime around it. A plain
//! std::process::Command driver, independent of crisp's code: it creates a pod namespace
//! (unshare + bind mount, the cheapest way), execs each plugin with the CNI environment and
//! the stdin libcni would build (the plugin's conf + name + cniVersion + prevResult), ADD in
//! order and DEL in reverse with the final result as prevResult, then removes the namespace.
//!
//! Each worker is a dedicated OS thread that joined the node namespace once; plugins it
//! spawns inherit that namespace (so bridges and iptables rules land there, never on the
//! host) and std can use posix_spawn, as tokio's Command in crisp does.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use serde_json::{Map, Value};

/// What every floor worker shares: the list and where things go.
pub struct Floor {
    node_netns: PathBuf,
    pub netns_dir: PathBuf,
    name: String,
    cni_version: String,
    /// (binary, the plugin's conf object as written)
    plugins: Vec<(PathBuf, Map<String, Value>)>,
    cni_path: String,
}

/// A worker thread's handle on its node namespace.
pub struct Worker<'a> {
    floor: &'a Floor,
    node: File,
}

impl Floor {
    pub fn new(list: &Value, node_netns: &Path, netns_dir: &Path) -> Result<Floor, String> {
        let bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"];
        let plugins = list["plugins"]
            .as_array()
            .ok_or("the list has no plugins")?
            .iter()
            .map(|p| {
                let conf = p.as_object().cloned().ok_or("a plugin is not an object")?;
                let kind = conf["type"].as_str().ok_or("a plugin has no type")?;
                let bin = bin_dirs
                    .iter()
                    .map(|d| Path::new(d).join(kind))
                    .find(|p| p.is_file())
                    .ok_or_else(|| format!("plugin {kind} not found in {bin_dirs:?}"))?;
                Ok((bin, conf))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Floor {
            node_netns: node_netns.to_owned(),
            netns_dir: netns_dir.to_owned(),
            name: list["name"].as_str().unwrap_or_default().to_string(),
            cni_version: list["cniVersion"].as_str().unwrap_or("0.1.0").to_string(),
            plugins,
            cni_path: bin_dirs.join(":"),
        })
    }

    /// Joins the node namespace on the calling thread (a thread made for floor work only).
    pub fn worker(&self) -> Result<Worker<'_>, String> {
        let node = File::open(&self.node_netns)
            .map_err(|e| format!("{}: {e}", self.node_netns.display()))?;
        setns(node.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns node: {e}"))?;
        Ok(Worker { floor: self, node })
    }
}

impl Worker<'_> {
    /// Namespace + every plugin's ADD; returns the final result.
    pub fn add(&self, id: &str, pod: &str) -> Result<Value, String> {
        let pin = self.floor.netns_dir.join(id);
        self.create_netns(&pin)?;
        let mut prev: Option<Value> = None;
        for (bin, conf) in &self.floor.plugins {
            let out = self.exec(bin, conf, "ADD", id, pod, Some(&pin), prev.as_ref())?;
            prev = Some(
                serde_json::from_slice(&out)
                    .map_err(|e| format!("{} ADD: bad result: {e}", bin.display()))?,
            );
        }
        prev.ok_or_else(|| "empty list".to_string())
    }

    /// Every plugin's DEL in reverse order, then the namespace goes.
    pub fn del(&self, id: &str, pod: &str, result: &Value) -> Result<(), String> {
        let pin = self.floor.netns_dir.join(id);
        for (bin, conf) in self.floor.plugins.iter().rev() {
            self.exec(bin, conf, "DEL", id, pod, Some(&pin), Some(result))?;
        }
        let _ = umount2(&pin, MntFlags::MNT_DETACH);
        std::fs::remove_file(&pin).map_err(|e| format!("removing {}: {e}", pin.display()))
    }

    /// unshare on this thread, pin it, and come back to the node namespace.
    fn create_netns(&self, pin: &Path) -> Result<(), String> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(pin)
            .map_err(|e| format!("{}: {e}", pin.display()))?;
        let made = unshare(CloneFlags::CLONE_NEWNET).and_then(|()| {
            mount(
                Some("/proc/thread-self/ns/net"),
                pin,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        });
        setns(self.node.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns back to node: {e}"))?;
        made.map_err(|e| format!("netns {}: {e}", pin.display()))
    }

    #[allow(clippy::too_many_arguments)]
    fn exec(
        &self,
        bin: &Path,
        conf: &Map<String, Value>,
        command: &str,
        id: &str,
        pod: &str,
        netns: Option<&Path>,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>, String> {
        let mut stdin = conf.clone();
        stdin.insert("name".into(), Value::String(self.floor.name.clone()));
        stdin.insert(
            "cniVersion".into(),
            Value::String(self.floor.cni_version.clone()),
        );
        if let Some(prev) = prev {
            stdin.insert("prevResult".into(), prev.clone());
        }
        let stdin = serde_json::to_vec(&stdin).map_err(|e| e.to_string())?;
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};\
             K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID=uid-{pod}"
        );
        let mut child = Command::new(bin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env(
                "CNI_NETNS",
                netns.map(|p| p.display().to_string()).unwrap_or_default(),
            )
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", args)
            .env("CNI_PATH", &self.floor.cni_path)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        if let Some(mut w) = child.stdin.take() {
            let _ = w.write_all(&stdin);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} {command} failed ({}): {}{}",
                bin.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(out.stdout)
    }
}
