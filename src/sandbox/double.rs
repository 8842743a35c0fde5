//! A test double for every seam at once: it logs each call in one ordered log, fails the
//! steps a test names, can hold an ADD until the test lets it go, and keeps records, pins
//! and attachments in memory. It never touches the disk, a namespace or a plugin.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::netns::inside::SysctlError;
use crate::network::pod::Pod;
use crate::network::NetworkAttachment;
use crate::sandbox::manager::Manager;
use crate::sandbox::model::{Sandbox, SandboxState};
use crate::sandbox::seams::{Hooks, Namespaces, Network, Parts, Records};

/// The network every pod of the double joins.
pub const NETWORK: &str = "pods";
const NETNS_DIR: &str = "/double/netns";

/// One call through a seam, in the order the manager made them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Save(SandboxState),
    Delete,
    Load,
    Files,
    CreateNetns,
    RemoveNetns,
    Attach,
    /// CNI DEL; `netns`: whether it was given the namespace.
    Detach {
        netns: bool,
    },
    Sysctls,
    NriRun,
    NriStop,
    NriRemove,
    KillStrays,
    CachedNetns,
}

/// Parts made of the double.
pub struct Test;

impl Parts for Test {
    type Records = Double;
    type Namespaces = Double;
    type Network = Double;
    type Hooks = Double;
}

/// Shared by every part: clones see the same log and state.
#[derive(Clone, Default)]
pub struct Double(Arc<State>);

#[derive(Default)]
struct State {
    log: Mutex<Vec<Call>>,
    /// Calls that fail (detach: `Detach { netns: false }` stands for both).
    failing: Mutex<Vec<Call>>,
    records: Mutex<BTreeMap<String, Sandbox>>,
    unreadable: Mutex<usize>,
    pinned: Mutex<HashSet<PathBuf>>,
    attached: Mutex<HashSet<String>>,
    cached_netns: Mutex<Vec<PathBuf>>,
    hold_attach: AtomicBool,
    attach_gate: Gate,
}

/// Where held ADDs wait: no permits until released.
struct Gate(tokio::sync::Semaphore);

impl Default for Gate {
    fn default() -> Self {
        Gate(tokio::sync::Semaphore::new(0))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn injected(call: Call) -> Error {
    Error::io(
        format!("injected failure of {call:?}"),
        io::Error::other("injected"),
    )
}

impl Double {
    /// A manager built of this double.
    pub fn manager(&self) -> Manager<Test> {
        Manager::with_parts(self.clone(), self.clone(), self.clone(), self.clone())
    }

    pub fn fail(&self, call: Call) {
        lock(&self.0.failing).push(call);
    }

    pub fn heal(&self) {
        lock(&self.0.failing).clear();
    }

    pub fn log(&self) -> Vec<Call> {
        lock(&self.0.log).clone()
    }

    pub fn records(&self) -> Vec<Sandbox> {
        lock(&self.0.records).values().cloned().collect()
    }

    pub fn pins(&self) -> HashSet<PathBuf> {
        lock(&self.0.pinned).clone()
    }

    pub fn attachments(&self) -> HashSet<String> {
        lock(&self.0.attached).clone()
    }

    /// A record as a previous crisp left it.
    pub fn put_record(&self, sandbox: Sandbox) {
        lock(&self.0.records).insert(sandbox.id.clone(), sandbox);
    }

    pub fn put_unreadable_record(&self) {
        *lock(&self.0.unreadable) += 1;
    }

    pub fn put_pin(&self, path: &Path) {
        lock(&self.0.pinned).insert(path.to_owned());
    }

    pub fn put_cached_netns(&self, path: &Path) {
        lock(&self.0.cached_netns).push(path.to_owned());
    }

    /// ADDs from now on wait for [`Double::release_attach`].
    pub fn hold_attach(&self) {
        self.0.hold_attach.store(true, Ordering::SeqCst);
    }

    pub fn release_attach(&self) {
        self.0.hold_attach.store(false, Ordering::SeqCst);
        self.0
            .attach_gate
            .0
            .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    /// Returns once `call` is in the log.
    pub async fn called(&self, call: Call) {
        while !self.log().contains(&call) {
            tokio::task::yield_now().await;
        }
    }

    /// Logs `call`; an error when the test made it fail.
    fn enter(&self, call: Call) -> std::result::Result<(), Error> {
        lock(&self.0.log).push(call);
        if lock(&self.0.failing).contains(&call) {
            return Err(injected(call));
        }
        Ok(())
    }
}

impl Records for Double {
    async fn save_record(&self, sandbox: &Sandbox) -> Result<()> {
        self.enter(Call::Save(sandbox.state))?;
        lock(&self.0.records).insert(sandbox.id.clone(), sandbox.clone());
        Ok(())
    }

    async fn delete_record(&self, id: &str) -> Result<()> {
        self.enter(Call::Delete)?;
        lock(&self.0.records).remove(id);
        Ok(())
    }

    async fn load_records(&self) -> Result<(Vec<Sandbox>, Vec<Error>)> {
        self.enter(Call::Load)?;
        let bad = (0..*lock(&self.0.unreadable))
            .map(|_| Error::Record {
                path: PathBuf::from("/double/sandboxes/bad.json"),
                reason: "decoding: garbage".into(),
            })
            .collect();
        Ok((self.records(), bad))
    }

    async fn write_files(&self, _sandbox: &Sandbox) -> Result<String> {
        self.enter(Call::Files)?;
        Ok("{}".into())
    }

    fn files_dir(&self, id: &str) -> PathBuf {
        Path::new("/double/sandboxes").join(id)
    }
}

impl Namespaces for Double {
    fn path_for(&self, id: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(format!("crisp-{id}"))
    }

    async fn create_netns(&self, path: &Path) -> io::Result<()> {
        self.enter(Call::CreateNetns).map_err(io::Error::other)?;
        lock(&self.0.pinned).insert(path.to_owned());
        Ok(())
    }

    fn remove_netns(&self, path: &Path) -> io::Result<()> {
        self.enter(Call::RemoveNetns).map_err(io::Error::other)?;
        lock(&self.0.pinned).remove(path);
        Ok(())
    }

    fn is_pinned(&self, path: &Path) -> bool {
        lock(&self.0.pinned).contains(path)
    }

    async fn set_sysctls(
        &self,
        path: &Path,
        _sysctls: Vec<(String, String)>,
    ) -> std::result::Result<(), SysctlError> {
        self.enter(Call::Sysctls).map_err(|e| SysctlError {
            key: "net.ipv4.ip_forward".into(),
            path: path.to_owned(),
            source: io::Error::other(e),
        })
    }

    fn pins(&self) -> Vec<PathBuf> {
        let mut pins: Vec<PathBuf> = self.pins().into_iter().collect();
        pins.sort();
        pins
    }
}

impl Network for Double {
    type Chosen = String;

    async fn choose(&self) -> Result<String> {
        Ok(NETWORK.to_string())
    }

    fn chosen_name(chosen: &String) -> &str {
        chosen
    }

    async fn attach(
        &self,
        pod: &Pod<'_>,
        chosen: &String,
        _netns: &Path,
    ) -> Result<NetworkAttachment> {
        self.enter(Call::Attach)?;
        if self.0.hold_attach.load(Ordering::SeqCst) {
            let _ = self.0.attach_gate.0.acquire().await;
        }
        lock(&self.0.attached).insert(pod.id.to_string());
        let mut attachment = NetworkAttachment::pending(chosen, "eth0");
        attachment.ips = vec!["10.88.0.2".into()];
        Ok(attachment)
    }

    async fn detach(&self, pod: &Pod<'_>, _network: &str, netns: Option<&Path>) -> Result<()> {
        let call = Call::Detach {
            netns: netns.is_some(),
        };
        lock(&self.0.log).push(call);
        if lock(&self.0.failing).contains(&Call::Detach { netns: false }) {
            return Err(injected(call));
        }
        lock(&self.0.attached).remove(pod.id);
        Ok(())
    }

    async fn kill_stray_plugins(&self, _ids: HashSet<String>) -> usize {
        lock(&self.0.log).push(Call::KillStrays);
        0
    }

    async fn cached_netns_paths(&self) -> Vec<PathBuf> {
        lock(&self.0.log).push(Call::CachedNetns);
        lock(&self.0.cached_netns).clone()
    }
}

impl Hooks for Double {
    async fn run_pod(&self, sandbox: &Sandbox) -> Result<()> {
        self.enter(Call::NriRun).map_err(|_| Error::NriRejected {
            sandbox: sandbox.id.clone(),
            plugin: "double".into(),
            message: "injected".into(),
        })
    }

    async fn stop_pod(&self, _id: &str) {
        lock(&self.0.log).push(Call::NriStop);
    }

    async fn remove_pod(&self, _id: &str) {
        lock(&self.0.log).push(Call::NriRemove);
    }
}
