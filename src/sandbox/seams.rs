//! The seams of the sandbox domain: what the manager needs from the record store
//! ([`Records`]), the namespace dir ([`Namespaces`]), the pod network ([`Network`]) and the
//! NRI plugins ([`Hooks`]), as small traits. The real types implement them here by plain
//! delegation ([`Real`]); unit tests put a double in their place (youki's `Syscall` trait
//! is the model). This module owns no state and never decides anything: the lifecycle's
//! order and rollback stay in `manager`, `recovery` and `names`.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::netns::inside::SysctlError;
use crate::netns::{self, NetnsDir};
use crate::network::pod::Pod;
use crate::network::{NetworkAttachment, NetworkReadiness, PodNetwork};
use crate::nri::Nri;
use crate::sandbox::files;
use crate::sandbox::hooks::nri_pod;
use crate::sandbox::model::Sandbox;
use crate::sandbox::store::Store;

/// The parts a [`crate::sandbox::manager::Manager`] is built of.
pub trait Parts: Send + Sync + 'static {
    type Records: Records;
    type Namespaces: Namespaces;
    type Network: Network;
    type Hooks: Hooks;
}

/// The real parts: the record store, the netns dir, the pod network and NRI (when on).
pub struct Real;

impl Parts for Real {
    type Records = Store;
    type Namespaces = NetnsDir;
    type Network = PodNetwork;
    type Hooks = Option<Arc<Nri>>;
}

/// Sandbox records and the files beside them.
pub trait Records: Send + Sync + 'static {
    /// Writes the record (atomically; see [`Store::save`]).
    fn save_record(&self, sandbox: &Sandbox) -> impl Future<Output = Result<()>> + Send;
    /// Deletes the record and the sandbox's files; missing ones are success.
    fn delete_record(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Every record, and the errors of the unreadable ones.
    fn load_records(&self) -> impl Future<Output = Result<(Vec<Sandbox>, Vec<Error>)>> + Send;
    /// Writes the sandbox's files; returns its runtime spec as compact JSON.
    fn write_files(&self, sandbox: &Sandbox) -> impl Future<Output = Result<String>> + Send;
    /// Where the sandbox's files are.
    fn files_dir(&self, id: &str) -> PathBuf;
}

/// Pinned network namespaces.
pub trait Namespaces: Send + Sync + 'static {
    /// The pin path of a sandbox id.
    fn path_for(&self, id: &str) -> PathBuf;
    /// Creates a namespace pinned at `path`.
    fn create_netns(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send;
    /// Removes the pin at `path`; missing is success.
    fn remove_netns(&self, path: &Path) -> io::Result<()>;
    /// Whether `path` is a live pinned namespace.
    fn is_pinned(&self, path: &Path) -> bool;
    /// Sets sysctls inside the namespace at `path`.
    fn set_sysctls(
        &self,
        path: &Path,
        sysctls: Vec<(String, String)>,
    ) -> impl Future<Output = std::result::Result<(), SysctlError>> + Send;
    /// The `crisp-*` pins in the namespace dir (none when it cannot be read).
    fn pins(&self) -> Vec<PathBuf>;
}

/// The pod network, as the lifecycle uses it.
pub trait Network: Send + Sync + 'static {
    /// What a Run keeps of the network it chose, so it attaches over exactly that one.
    type Chosen: Send + Sync;
    /// The network a new pod joins now; NetworkNotReady when pods cannot be networked.
    fn choose(&self) -> impl Future<Output = Result<Self::Chosen>> + Send;
    /// The name of a chosen network.
    fn chosen_name(chosen: &Self::Chosen) -> &str;
    /// CNI ADD of `pod` in the namespace at `netns`.
    fn attach(
        &self,
        pod: &Pod<'_>,
        chosen: &Self::Chosen,
        netns: &Path,
    ) -> impl Future<Output = Result<NetworkAttachment>> + Send;
    /// CNI DEL; `netns` is `None` when the namespace is gone.
    fn detach(
        &self,
        pod: &Pod<'_>,
        network_name: &str,
        netns: Option<&Path>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Kills plugins a previous crisp left running for `ids`; how many.
    fn kill_stray_plugins(&self, ids: HashSet<String>) -> impl Future<Output = usize> + Send;
    /// The netns paths the CNI cache still names.
    fn cached_netns_paths(&self) -> impl Future<Output = Vec<PathBuf>> + Send;
}

/// The NRI plugins' part in the lifecycle.
pub trait Hooks: Send + Sync + 'static {
    /// RunPodSandbox: a plugin's error fails the Run.
    fn run_pod(&self, sandbox: &Sandbox) -> impl Future<Output = Result<()>> + Send;
    /// StopPodSandbox, before the network is torn down.
    fn stop_pod(&self, id: &str) -> impl Future<Output = ()> + Send;
    /// RemovePodSandbox, before the record goes.
    fn remove_pod(&self, id: &str) -> impl Future<Output = ()> + Send;
}

/// Runs a blocking file operation on tokio's blocking pool (records are fsynced); `what`
/// names it if that task dies.
async fn off_the_runtime<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io(what, io::Error::other(e)))?
}

impl Records for Store {
    async fn save_record(&self, sandbox: &Sandbox) -> Result<()> {
        let (store, sandbox) = (self.clone(), sandbox.clone());
        off_the_runtime("saving a sandbox record", move || store.save(&sandbox)).await
    }

    async fn delete_record(&self, id: &str) -> Result<()> {
        let (store, id) = (self.clone(), id.to_string());
        off_the_runtime("deleting a sandbox record", move || store.delete(&id)).await
    }

    async fn load_records(&self) -> Result<(Vec<Sandbox>, Vec<Error>)> {
        let store = self.clone();
        off_the_runtime("loading sandbox records", move || store.load_all()).await
    }

    async fn write_files(&self, sandbox: &Sandbox) -> Result<String> {
        let (dir, sandbox) = (Store::files_dir(self, &sandbox.id), sandbox.clone());
        off_the_runtime("writing sandbox files", move || {
            files::write_all(&dir, &sandbox)
        })
        .await
    }

    fn files_dir(&self, id: &str) -> PathBuf {
        Store::files_dir(self, id)
    }
}

impl Namespaces for NetnsDir {
    fn path_for(&self, id: &str) -> PathBuf {
        NetnsDir::path_for(self, id)
    }

    async fn create_netns(&self, path: &Path) -> io::Result<()> {
        self.create(path).await
    }

    fn remove_netns(&self, path: &Path) -> io::Result<()> {
        netns::remove(path)
    }

    fn is_pinned(&self, path: &Path) -> bool {
        netns::is_pinned(path)
    }

    async fn set_sysctls(
        &self,
        path: &Path,
        sysctls: Vec<(String, String)>,
    ) -> std::result::Result<(), SysctlError> {
        netns::inside::set_sysctls(path, sysctls).await
    }

    fn pins(&self) -> Vec<PathBuf> {
        NetnsDir::pins(self)
    }
}

impl Network for PodNetwork {
    /// A readiness answer that named a usable network (`choose` makes no other).
    type Chosen = NetworkReadiness;

    async fn choose(&self) -> Result<NetworkReadiness> {
        let readiness = self.readiness().await;
        match (&readiness.network, &readiness.problem) {
            (Some(_), None) => Ok(readiness),
            (_, problem) => Err(Error::NetworkNotReady {
                reason: problem
                    .clone()
                    .unwrap_or_else(|| "no CNI network config".into()),
            }),
        }
    }

    fn chosen_name(chosen: &NetworkReadiness) -> &str {
        chosen
            .network
            .as_ref()
            .map_or("", |list| list.name.as_str())
    }

    async fn attach(
        &self,
        pod: &Pod<'_>,
        chosen: &NetworkReadiness,
        netns: &Path,
    ) -> Result<NetworkAttachment> {
        let Some(list) = chosen.network.as_deref() else {
            return Err(Error::NetworkNotReady {
                reason: "no CNI network config".into(),
            });
        };
        PodNetwork::attach(self, pod, list, netns)
            .await
            .map_err(|source| Error::Cni {
                sandbox: pod.id.to_string(),
                step: "setting up the pod network (CNI ADD)",
                source: Box::new(source),
            })
    }

    async fn detach(&self, pod: &Pod<'_>, network_name: &str, netns: Option<&Path>) -> Result<()> {
        PodNetwork::detach(self, pod, network_name, netns)
            .await
            .map_err(|source| Error::Cni {
                sandbox: pod.id.to_string(),
                step: "tearing down the pod network (CNI DEL)",
                source: Box::new(source),
            })
    }

    async fn kill_stray_plugins(&self, ids: HashSet<String>) -> usize {
        PodNetwork::kill_stray_plugins(self, ids).await
    }

    async fn cached_netns_paths(&self) -> Vec<PathBuf> {
        PodNetwork::cached_netns_paths(self).await
    }
}

impl Hooks for Option<Arc<Nri>> {
    /// After the network is set up, before the sandbox is READY or visible.
    async fn run_pod(&self, sandbox: &Sandbox) -> Result<()> {
        let Some(nri) = self else {
            return Ok(());
        };
        nri.run_pod_sandbox(nri_pod(sandbox))
            .await
            .map_err(|rejection| Error::NriRejected {
                sandbox: sandbox.id.clone(),
                plugin: rejection.plugin,
                message: rejection.message,
            })
    }

    /// Once per pod.
    async fn stop_pod(&self, id: &str) {
        if let Some(nri) = self {
            nri.stop_pod_sandbox(id).await;
        }
    }

    /// Once per pod.
    async fn remove_pod(&self, id: &str) {
        if let Some(nri) = self {
            nri.remove_pod_sandbox(id).await;
        }
    }
}
