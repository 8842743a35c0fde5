//! What NRI plugins are told of a sandbox: the pod as NRI's `PodSandbox`, with the network
//! namespace (OCI type `network`) and the pod's IPs once CNI ADD has set them up.

use crate::nri::{LinuxNamespace, LinuxPodSandbox, PodSandbox};

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
