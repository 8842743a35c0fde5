//! What NRI plugins are told of a sandbox: the pod as NRI's `PodSandbox`, with the network
//! namespace (OCI type `network`) and the pod's IPs once CNI ADD has set them up, and the
//! manager's NRI accessors. When plugins are called in the lifecycle is the manager's
//! business (through [`crate::sandbox::seams::Hooks`]); this module never changes a sandbox.

use std::sync::Arc;

use crate::nri::{HookTime, LinuxNamespace, LinuxPodSandbox, Nri, PluginInfo, PodSandbox};
use crate::sandbox::manager::SandboxManager;

use super::model::Sandbox;

pub fn nri_pod(sandbox: &Sandbox) -> PodSandbox {
    let spec = &sandbox.spec;
    let namespaces = sandbox
        .netns_path
        .iter()
        .map(|path| LinuxNamespace {
            r#type: "network".into(),
            path: path.display().to_string(),
        })
        .collect();
    PodSandbox {
        id: sandbox.id.clone(),
        name: spec.metadata.name.clone(),
        uid: spec.metadata.uid.clone(),
        namespace: spec.metadata.namespace.clone(),
        labels: spec.labels.clone(),
        annotations: spec.annotations.clone(),
        runtime_handler: spec.runtime_handler.clone(),
        linux: Some(LinuxPodSandbox {
            cgroup_parent: spec.cgroup_parent.clone(),
            namespaces,
            ..Default::default()
        }),
        pid: 0,
        ips: sandbox
            .network
            .as_ref()
            .map(|n| n.ips.clone())
            .unwrap_or_default(),
    }
}

impl SandboxManager {
    /// Tells NRI's plugins of every Run, Stop and Remove from now on.
    pub fn set_nri(&mut self, nri: Arc<Nri>) {
        self.nri = Some(nri);
    }

    /// The sandboxes NRI plugins are synchronized with at start-up, with whether each is
    /// stopped already (it gets no Stop event again).
    pub fn nri_pods(&self) -> Vec<(crate::nri::PodSandbox, bool)> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index
            .values()
            .map(|entry| {
                let sandbox = entry.current();
                (nri_pod(&sandbox), !sandbox.is_ready())
            })
            .collect()
    }

    /// The connected NRI plugins; `None` when NRI is off.
    pub fn nri_plugins(&self) -> Option<Vec<PluginInfo>> {
        self.nri.as_ref().map(|nri| nri.plugins())
    }

    /// How long each NRI plugin took with this sandbox's events.
    pub fn nri_hooks(&self, id: &str) -> Vec<HookTime> {
        self.nri
            .as_ref()
            .map(|nri| nri.hook_times(id))
            .unwrap_or_default()
    }
}
