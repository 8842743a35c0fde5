//! The sandbox lifecycle: Run, Stop, Remove, Status and List, over the parts of
//! [`crate::sandbox::seams`]. It owns the index of sandboxes and the order of effects; it
//! never writes a file, enters a namespace or runs a plugin itself (the parts do), and never
//! sees tonic. Recovery is in `recovery`, the name table in `names`, events in `events`.
//!
//! Locks: the name table and the index are held only for map operations; each sandbox has
//! its own async lock, held across its plugin execs, so sandboxes never wait for each other.
//! Readers (Status, List) read a published snapshot and never wait for a plugin.
//!
//! Order of effects, so that a crash at any point can be finished or undone from the record:
//! Run: record "creating" (naming the netns path and network) → netns → CNI ADD → "ready".
//! Stop: record "stopping" → CNI DEL → netns removed → "not_ready".
//! The namespace is removed only after DEL succeeded; a failed DEL stays on the record.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::value::RawValue;
use tokio::sync::broadcast;

use crate::clock::{now_nanos, Steps};
use crate::error::{Error, Result};
use crate::netns::{self, NetnsDir};
use crate::network::Health;
use crate::network::{NetworkReadiness, PodNetwork, POD_IFNAME};
use crate::sandbox::checker::CheckerStatus;
use crate::sandbox::events::EVENT_BUFFER;
use crate::sandbox::events::{EventKind, SandboxEvent};
use crate::sandbox::model::{is_id_prefix, NetworkAttachment, Sandbox, SandboxSpec, SandboxState};
use crate::sandbox::names::{Claim, Names};
use crate::sandbox::seams::{Hooks, Namespaces, Network, Parts, Real, Records};
use crate::sandbox::store::Store;

/// One indexed sandbox: its snapshot for readers, its lock for changes, what the background
/// checks found.
pub(super) struct Entry {
    /// Serialises Run/Stop/Remove of this sandbox (and the start of a background CHECK).
    pub(super) op: tokio::sync::Mutex<()>,
    /// The last committed state, for readers.
    snapshot: RwLock<Arc<Sandbox>>,
    /// Set when Remove has taken the sandbox out of the index.
    pub(super) removed: AtomicBool,
    /// What the background checks last found.
    pub(super) health: Mutex<Health>,
    /// The background CHECK running now, which Stop and Remove cancel.
    pub(super) checking: Mutex<Option<RunningCheck>>,
    /// `config.json` as compact JSON for verbose status: kept from Run, or read at the first
    /// verbose status after a restart (it never changes after Run).
    runtime_spec: std::sync::OnceLock<Arc<RawValue>>,
}

/// A background CHECK in flight: `abort` ends it, `done` closes once its plugins are killed.
pub(super) struct RunningCheck {
    pub(super) abort: futures::future::AbortHandle,
    pub(super) done: tokio::sync::oneshot::Receiver<()>,
}

impl Entry {
    pub(super) fn new(sandbox: Sandbox) -> Arc<Entry> {
        Arc::new(Entry {
            op: tokio::sync::Mutex::new(()),
            snapshot: RwLock::new(Arc::new(sandbox)),
            removed: AtomicBool::new(false),
            health: Mutex::new(Health::default()),
            checking: Mutex::new(None),
            runtime_spec: std::sync::OnceLock::new(),
        })
    }

    pub(super) fn current(&self) -> Arc<Sandbox> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn publish(&self, sandbox: &Sandbox) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(sandbox.clone());
    }

    pub(super) fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// With `op` held: ends a background CHECK, then the sandbox to change, or `None` when
    /// Remove took it out of the index meanwhile.
    async fn still_indexed(&self) -> Option<Sandbox> {
        self.cancel_check().await;
        if self.removed.load(Ordering::Acquire) {
            return None;
        }
        Some((*self.current()).clone())
    }

    /// Kills a background CHECK of this sandbox and discards its result; returns once its
    /// plugin processes are killed. Called with `op` held, so none can start meanwhile.
    async fn cancel_check(&self) {
        let running = self
            .checking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(running) = running {
            running.abort.abort();
            let _ = running.done.await;
        }
    }
}

/// Which sandboxes a List returns; every set field must match.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub id: Option<String>,
    pub state: Option<SandboxState>,
    pub labels: BTreeMap<String, String>,
}

/// The sandbox manager crisp runs: built of the real store, netns dir, network and NRI.
pub type SandboxManager = Manager<Real>;

/// The lifecycle over its [`Parts`]; unit tests build it of a double.
pub struct Manager<P: Parts> {
    pub(super) store: P::Records,
    pub(super) netns: P::Namespaces,
    pub(super) network: P::Network,
    pub(super) index: RwLock<BTreeMap<String, Arc<Entry>>>,
    pub(super) names: Names,
    /// Never blocks the lifecycle: a send to lagging or no receivers just goes on.
    pub(super) events: broadcast::Sender<SandboxEvent>,
    /// Sandboxes being created and not yet indexed: their attachments are live for GC.
    pub(super) creating: Mutex<HashSet<String>>,
    /// Gives the heap back to the kernel after many removals.
    heap: crate::heap::Trimmer,
    /// The background network checker's rounds so far.
    pub(super) checker: Mutex<CheckerStatus>,
    /// NRI plugins to tell of each Run, Stop and Remove, when NRI is on.
    pub(super) nri: P::Hooks,
}

impl SandboxManager {
    pub fn new(store: Store, netns: NetnsDir, network: PodNetwork) -> Self {
        Manager::with_parts(store, netns, network, None)
    }

    /// Starts the network's background work (conf dir watching, CNI STATUS); after recovery,
    /// so that its first round sees the repaired state.
    pub fn start_network_tasks(&self) {
        self.network.watch_conf_dir();
        self.network.start_status_refresher();
    }

    /// The pod CIDR from UpdateRuntimeConfig, handed to the plugins as `ipRanges`.
    pub fn set_pod_cidr(&self, cidr: Option<String>) {
        self.network.set_pod_cidr(cidr);
    }

    pub async fn network_readiness(&self) -> NetworkReadiness {
        self.network.readiness().await
    }

    pub fn netns_dir(&self) -> &Path {
        self.netns.dir()
    }

    pub fn state_dir(&self) -> &Path {
        self.store.dir()
    }
}

impl<P: Parts> Manager<P> {
    /// A manager of these parts, with nothing indexed yet.
    pub fn with_parts(
        store: P::Records,
        netns: P::Namespaces,
        network: P::Network,
        nri: P::Hooks,
    ) -> Self {
        Manager {
            store,
            netns,
            network,
            index: RwLock::new(BTreeMap::new()),
            names: Names::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
            creating: Mutex::new(HashSet::new()),
            heap: crate::heap::Trimmer::default(),
            checker: Mutex::new(CheckerStatus::default()),
            nri,
        }
    }

    /// Where a sandbox's files (hostname, hosts, resolv.conf, config.json) are.
    pub fn files_dir(&self, id: &str) -> PathBuf {
        self.store.files_dir(id)
    }

    /// RunPodSandbox. A retry of a creation still in flight (same name and spec, as a client
    /// sends after its own timeout) waits for it and gets its id instead of an error.
    pub async fn run(&self, spec: SandboxSpec) -> Result<String> {
        let (key, id, done) = match self.names.claim(&spec).await? {
            Claim::Fresh { key, id, done } => (key, id, done),
            Claim::Existing(id) => return Ok(id),
        };
        let outcome = self.create(&id, spec).await;
        // A sandbox that failed but could not be fully rolled back stays listed and keeps
        // its name until it is removed.
        let kept = matches!(outcome, Ok(()) | Err((_, true)));
        self.names.settle(key, &id, kept);
        drop(done);
        outcome.map(|()| id).map_err(|(e, _)| e)
    }

    /// Creates the sandbox. On error, says whether a sandbox was left indexed (because its
    /// rollback failed and must be retried by Stop/Remove).
    async fn create(&self, id: &str, spec: SandboxSpec) -> std::result::Result<(), (Error, bool)> {
        let _creating = Creating::new(&self.creating, id);
        self.create_inner(id, spec).await
    }

    /// Run's steps: choose the network, write the intent (while the namespace is created),
    /// then set the sandbox up; a failure after the intent is rolled back.
    async fn create_inner(
        &self,
        id: &str,
        spec: SandboxSpec,
    ) -> std::result::Result<(), (Error, bool)> {
        let mut steps = Steps::start();
        let network = self.network_for(&spec).await.map_err(|e| (e, false))?;
        steps.mark("conf");
        let mut sandbox = Sandbox {
            id: id.to_string(),
            netns_path: network.as_ref().map(|_| self.netns.path_for(id)),
            network: network.as_ref().map(|chosen| {
                NetworkAttachment::pending(<P::Network as Network>::chosen_name(chosen), POD_IFNAME)
            }),
            spec,
            state: SandboxState::Creating,
            created_at: now_nanos(),
            last_error: None,
        };
        let created = self.record_intent(&sandbox).await.map_err(|e| (e, false))?;
        steps.mark("record, netns");
        match self
            .set_up(&mut sandbox, network.as_ref(), created, &mut steps)
            .await
        {
            Ok(spec_text) => {
                tracing::debug!(sandbox_id = %id, steps_us = ?steps.marks(), "sandbox created");
                self.publish_created(sandbox, spec_text);
                Ok(())
            }
            Err(err) => Err(self.roll_back(sandbox, err).await),
        }
    }

    /// The network a new sandbox joins: none for a host-network pod, else the current one;
    /// NetworkNotReady when pods cannot be networked now.
    async fn network_for(&self, spec: &SandboxSpec) -> Result<Option<Chosen<P>>> {
        if spec.host_network {
            return Ok(None);
        }
        self.network.choose().await.map(Some)
    }

    /// Writes the "creating" record while the namespace (if any) is created, and returns how
    /// that creation went. When the record cannot be written, a namespace made meanwhile is
    /// removed again and the write's error returned: nothing needs rolling back.
    async fn record_intent(&self, sandbox: &Sandbox) -> Result<Option<std::io::Result<()>>> {
        // Intent first: the record names the netns and network before the ADD. Its durable
        // write (fsync of file and dir) overlaps the namespace's creation: a crash in
        // between leaves at worst a pin no record names, which recovery removes, and a power
        // cut takes the namespace with it. What outlives a power cut (host-local's files)
        // only starts with the ADD, after both.
        let netns_path = &sandbox.netns_path;
        let (saved, created) = tokio::join!(self.save(sandbox), async {
            match netns_path {
                Some(path) => Some(self.netns.create_netns(path).await),
                None => None,
            }
        });
        if let Err(e) = saved {
            if let (Some(path), Some(Ok(()))) = (netns_path, &created) {
                if let Err(remove) = self.netns.remove_netns(path) {
                    tracing::error!(
                        sandbox_id = %sandbox.id,
                        netns = %path.display(),
                        error = %remove,
                        "removing the namespace of a creation whose record could not be written \
                         failed; recovery removes it at the next start"
                    );
                }
            }
            return Err(e);
        }
        Ok(created)
    }

    /// After the intent: wire the network, write the files, tell NRI, record "ready".
    /// Returns the runtime spec as compact JSON; an error leaves the rollback to the caller.
    async fn set_up(
        &self,
        sandbox: &mut Sandbox,
        network: Option<&Chosen<P>>,
        created: Option<std::io::Result<()>>,
        steps: &mut Steps,
    ) -> Result<String> {
        if let (Some(list), Some(path), Some(created)) =
            (network, sandbox.netns_path.clone(), created)
        {
            self.wire_network(sandbox, list, path, created, steps)
                .await?;
        }
        let spec_text = self.store.write_files(sandbox).await?;
        steps.mark("files");
        self.nri.run_pod(sandbox).await?;
        steps.mark("nri");
        sandbox.state = SandboxState::Ready;
        if let Err(err) = self.save(sandbox).await {
            // The plugins accepted the pod: tell them it is gone again.
            self.nri.remove_pod(&sandbox.id).await;
            return Err(err);
        }
        steps.mark("record");
        Ok(spec_text)
    }

    /// The namespace just created at `path` (`created` says how that went) joins `list`
    /// (CNI ADD, the attachment recorded on `sandbox`), then gets the pod's sysctls.
    async fn wire_network(
        &self,
        sandbox: &mut Sandbox,
        chosen: &Chosen<P>,
        path: PathBuf,
        created: std::io::Result<()>,
        steps: &mut Steps,
    ) -> Result<()> {
        if let Err(source) = created {
            return Err(Error::Netns {
                sandbox: sandbox.id.clone(),
                op: "creating",
                path,
                source,
            });
        }
        let attachment = self
            .network
            .attach(&sandbox.as_pod(), chosen, &path)
            .await?;
        sandbox.network = Some(attachment);
        steps.mark("cni add");
        // After ADD, as runc applies them once the namespace is wired (eth0 exists).
        if !sandbox.spec.sysctls.is_empty() {
            let sysctls = sandbox.spec.sysctls.clone().into_iter().collect();
            self.netns
                .set_sysctls(&path, sysctls)
                .await
                .map_err(|e| sysctl_error(&sandbox.id, e))?;
        }
        Ok(())
    }

    /// `hostname`, `hosts`, `resolv.conf` and `config.json`, off the async workers.
    /// A READY sandbox becomes visible: its events, then its place in the index (with the
    /// runtime spec for verbose status).
    fn publish_created(&self, sandbox: Sandbox, spec_text: String) {
        self.emit(EventKind::Created, &sandbox);
        self.emit(EventKind::Started, &sandbox);
        let id = sandbox.id.clone();
        let entry = Entry::new(sandbox);
        if let Ok(spec) = RawValue::from_string(spec_text) {
            let _ = entry.runtime_spec.set(Arc::from(spec));
        }
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, entry);
    }

    /// Undoes a failed creation in reverse order. If the teardown itself fails, the sandbox
    /// is kept (NOT_READY, with the error) so that Stop/Remove retry it: an IP or namespace
    /// that could not be released is never forgotten.
    async fn roll_back(&self, mut sandbox: Sandbox, cause: Error) -> (Error, bool) {
        match self.tear_down(&mut sandbox).await {
            Ok(()) => {
                if let Err(e) = self.store.delete_record(&sandbox.id).await {
                    tracing::error!(
                        sandbox_id = %sandbox.id,
                        error = %e,
                        "rollback: deleting the record failed"
                    );
                }
                (cause, false)
            }
            Err(teardown) => {
                tracing::error!(
                    sandbox_id = %sandbox.id,
                    error = %teardown,
                    "rollback failed; sandbox kept NOT_READY for Stop/Remove to retry"
                );
                self.index
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(sandbox.id.clone(), Entry::new(sandbox));
                (cause, true)
            }
        }
    }

    /// Releases what the sandbox holds: "stopping" → CNI DEL → namespace removed →
    /// "not_ready". On failure the record stays NOT_READY with the error and what is still
    /// held, so the next Stop/Remove (or a restart) retries.
    pub(super) async fn tear_down(&self, sandbox: &mut Sandbox) -> Result<()> {
        let mut steps = Steps::start();
        sandbox.state = SandboxState::Stopping;
        self.save(sandbox).await?;
        steps.mark("record");
        let result = self.release(sandbox, &mut steps).await;
        sandbox.state = SandboxState::NotReady;
        sandbox.last_error = result.as_ref().err().map(|e| e.to_string());
        self.save(sandbox).await?;
        steps.mark("record");
        tracing::debug!(sandbox_id = %sandbox.id, steps_us = ?steps.marks(), "sandbox torn down");
        result
    }

    async fn release(&self, sandbox: &mut Sandbox, steps: &mut Steps) -> Result<()> {
        if let Some(attachment) = sandbox.network.clone() {
            // DEL still runs when the namespace is gone, so IPAM frees the address.
            let netns = sandbox
                .netns_path
                .clone()
                .filter(|p| self.netns.is_pinned(p));
            self.network
                .detach(
                    &sandbox.as_pod(),
                    &attachment.network_name,
                    netns.as_deref(),
                )
                .await?;
            sandbox.network = None;
            steps.mark("cni del");
        }
        if let Some(path) = sandbox.netns_path.clone() {
            self.netns
                .remove_netns(&path)
                .map_err(|source| Error::Netns {
                    sandbox: sandbox.id.clone(),
                    op: "removing",
                    path,
                    source,
                })?;
            sandbox.netns_path = None;
            steps.mark("netns");
        }
        Ok(())
    }

    /// StopPodSandbox: idempotent; an id that names no sandbox is success.
    pub async fn stop(&self, id_or_prefix: &str) -> Result<()> {
        let Some(entry) = self.find_for("StopPodSandbox", id_or_prefix)? else {
            return Ok(());
        };
        let _op = entry.op.lock().await;
        let Some(mut sandbox) = entry.still_indexed().await else {
            return Ok(());
        };
        if sandbox.state == SandboxState::NotReady && !sandbox.holds_resources() {
            return Ok(());
        }
        self.stop_entry(&entry, &mut sandbox).await
    }

    /// The teardown of Stop (and of Remove when needed), with the lock of `entry` held: NRI
    /// is told first, the outcome is published, and a READY sandbox emits its stop.
    async fn stop_entry(&self, entry: &Entry, sandbox: &mut Sandbox) -> Result<()> {
        let was_ready = sandbox.is_ready();
        self.nri.stop_pod(&sandbox.id).await;
        let result = self.tear_down(sandbox).await;
        entry.publish(sandbox);
        if was_ready {
            self.emit(EventKind::Stopped, sandbox);
        }
        result
    }

    /// RemovePodSandbox: stops first if needed, then forgets the sandbox. Idempotent. A
    /// sandbox whose teardown fails is not removed: the error is returned and it is kept.
    pub async fn remove(&self, id_or_prefix: &str) -> Result<()> {
        let Some(entry) = self.find_for("RemovePodSandbox", id_or_prefix)? else {
            return Ok(());
        };
        let _op = entry.op.lock().await;
        let Some(mut sandbox) = entry.still_indexed().await else {
            return Ok(());
        };
        if sandbox.holds_resources() || sandbox.state != SandboxState::NotReady {
            self.stop_entry(&entry, &mut sandbox).await?;
        }
        self.nri.remove_pod(&sandbox.id).await;
        self.delete_record(&sandbox.id).await?;
        entry.removed.store(true, Ordering::Release);
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&sandbox.id);
        self.names.release(&sandbox.spec, &sandbox.id);
        self.emit(EventKind::Deleted, &sandbox);
        self.heap.sandbox_removed();
        Ok(())
    }

    /// PodSandboxStatus: the last committed state; NotFound when the id names no sandbox.
    pub fn status(&self, id_or_prefix: &str) -> Result<Arc<Sandbox>> {
        self.find(id_or_prefix)?
            .map(|e| e.current())
            .ok_or_else(|| Error::SandboxNotFound {
                id: shown_id(id_or_prefix),
            })
    }

    /// The sandbox's OCI runtime spec as JSON text, from memory: what Run wrote to its
    /// `config.json` (which never changes). After a restart the file is read at the first
    /// verbose status, or the spec rebuilt when the file is gone.
    pub async fn runtime_spec(&self, sandbox: &Sandbox) -> Option<Arc<RawValue>> {
        let entry = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sandbox.id)
            .cloned();
        if let Some(spec) = entry.as_ref().and_then(|e| e.runtime_spec.get()) {
            return Some(spec.clone());
        }
        let dir = self.store.files_dir(&sandbox.id);
        let read = tokio::fs::read_to_string(dir.join("config.json"))
            .await
            .ok()
            .and_then(|text| RawValue::from_string(text).ok());
        match (read, entry) {
            (Some(spec), Some(e)) => Some(e.runtime_spec.get_or_init(|| Arc::from(spec)).clone()),
            (Some(spec), None) => Some(Arc::from(spec)),
            (None, _) => serde_json::value::to_raw_value(&crate::sandbox::oci::runtime_spec_json(
                sandbox, &dir,
            ))
            .ok()
            .map(Arc::from),
        }
    }

    /// What the background checks last found for a sandbox (by full id); default when none.
    pub fn health(&self, id: &str) -> Health {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index
            .get(id)
            .map(|e| e.health().clone())
            .unwrap_or_default()
    }

    /// ListPodSandbox. An id filter is a prefix like every other id; an unknown or ambiguous
    /// one matches nothing (containerd does the same), so List never fails on it.
    pub fn list(&self, filter: &ListFilter) -> Vec<Arc<Sandbox>> {
        let id = match &filter.id {
            Some(prefix) if !prefix.is_empty() => match self.find(prefix) {
                Ok(Some(entry)) => Some(entry.current().id.clone()),
                _ => return Vec::new(),
            },
            _ => None,
        };
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Arc<Sandbox>> = index
            .values()
            .map(|e| e.current())
            .filter(|s| id.as_ref().is_none_or(|id| s.id == *id))
            .filter(|s| filter.state.is_none_or(|st| public_state(s.state) == st))
            .filter(|s| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| s.spec.labels.get(k) == Some(v))
            })
            .collect();
        out.sort_by_key(|s| s.created_at);
        out
    }

    /// [`Self::find`] for Stop and Remove, which succeed (and log it) on an id that names
    /// no sandbox.
    fn find_for(&self, method: &'static str, id_or_prefix: &str) -> Result<Option<Arc<Entry>>> {
        let entry = self.find(id_or_prefix)?;
        if entry.is_none() {
            names_no_sandbox(method, id_or_prefix);
        }
        Ok(entry)
    }

    /// Resolves a full id or a unique prefix. An id that names no sandbox (unknown, or not
    /// shaped like an id at all: such a string is never looked up) → `Ok(None)`; empty or
    /// ambiguous → an InvalidArgument-class error.
    fn find(&self, id_or_prefix: &str) -> Result<Option<Arc<Entry>>> {
        if id_or_prefix.is_empty() {
            return Err(Error::invalid("pod_sandbox_id", "empty"));
        }
        if !is_id_prefix(id_or_prefix) {
            return Ok(None);
        }
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let mut matches = index
            .range(id_or_prefix.to_string()..)
            .take_while(|(id, _)| id.starts_with(id_or_prefix));
        let Some((_, first)) = matches.next() else {
            return Ok(None);
        };
        let rest: Vec<String> = matches.map(|(id, _)| id.clone()).collect();
        if rest.is_empty() {
            return Ok(Some(first.clone()));
        }
        let mut all = vec![first.current().id.clone()];
        all.extend(rest);
        Err(Error::AmbiguousId {
            prefix: id_or_prefix.to_string(),
            matches: all,
        })
    }

    pub(super) async fn save(&self, sandbox: &Sandbox) -> Result<()> {
        self.store.save_record(sandbox).await
    }

    pub(super) async fn delete_record(&self, id: &str) -> Result<()> {
        self.store.delete_record(id).await
    }
}

/// What a Run keeps of the network it chose.
type Chosen<P> = <<P as Parts>::Network as Network>::Chosen;

/// Marks a sandbox as being created for as long as it lives (also if the call is dropped).
struct Creating<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl<'a> Creating<'a> {
    fn new(set: &'a Mutex<HashSet<String>>, id: &str) -> Self {
        set.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
        Creating {
            set,
            id: id.to_string(),
        }
    }
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// What clients see: only READY and NOT_READY exist in CRI.
pub fn public_state(state: SandboxState) -> SandboxState {
    match state {
        SandboxState::Ready => SandboxState::Ready,
        _ => SandboxState::NotReady,
    }
}

/// A sysctl the namespace refused: a key it does not have is the request's fault.
fn sysctl_error(id: &str, e: netns::inside::SysctlError) -> Error {
    match e.source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => Error::invalid(
            "config.linux.sysctls",
            format!(
                "sysctl {:?} cannot be set in the pod's network namespace ({}: {}); only \
                 per-network-namespace net.* sysctls are accepted",
                e.key,
                e.path.display(),
                e.source
            ),
        ),
        _ => Error::io(
            format!(
                "sandbox {id}: setting sysctl {} in its network namespace",
                e.key
            ),
            e.source,
        ),
    }
}

/// An id as errors and logs show it: a client may send 10 kB, the log line gets 80 chars.
pub fn shown_id(id: &str) -> String {
    const MAX: usize = 80;
    if id.chars().count() <= MAX {
        id.to_string()
    } else {
        format!("{}…", id.chars().take(MAX).collect::<String>())
    }
}

/// Stop and Remove of an id that names no sandbox succeed (CRI: "must not fail"), and say so.
fn names_no_sandbox(method: &'static str, id: &str) {
    tracing::info!(
        method,
        sandbox_id = %shown_id(id),
        "the id named no sandbox: nothing to do"
    );
}
