//! The sandbox as an OCI runtime would join it: the runtime spec (`config.json`) a container
//! runtime reads to put the pod's containers into the sandbox's namespaces, built with the
//! oci-spec crate. crisp runs no process itself; the spec says where everything is. It
//! builds the spec only: `files` writes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder, Spec,
};
use serde_json::Value;

use crate::sandbox::model::Sandbox;

/// Annotations containerd puts on a sandbox spec, so tools that read them work unchanged.
pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const ANNOTATION_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const ANNOTATION_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
pub const ANNOTATION_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
pub const ANNOTATION_SANDBOX_LOG_DIR: &str = "io.kubernetes.cri.sandbox-log-directory";

/// CRI's NamespaceMode values.
const MODE_POD: i64 = 0;
const MODE_NODE: i64 = 2;

/// The runtime spec of `sandbox`, whose files (`hostname`, `hosts`, `resolv.conf`) live in
/// `files_dir`.
pub fn runtime_spec(sandbox: &Sandbox, files_dir: &Path) -> Result<Spec, String> {
    let spec_in = &sandbox.spec;
    let namespaces = namespaces(sandbox)?;
    let mut spec = Spec::default();
    if !spec_in.host_network {
        spec.set_hostname(Some(hostname(sandbox)));
    }
    let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    mounts.extend(file_mounts(files_dir)?);
    spec.set_mounts(Some(mounts));
    if let Some(process) = spec.process_mut() {
        process.set_args(Some(vec!["/pause".to_string()]));
    }
    spec.set_annotations(Some(annotations(sandbox)));
    if let Some(linux) = spec.linux_mut() {
        linux.set_namespaces(Some(namespaces));
        linux.set_sysctl(Some(
            spec_in
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
        let cgroups_path = cgroups_path(&spec_in.cgroup_parent, &sandbox.id);
        linux.set_cgroups_path(cgroups_path);
    }
    Ok(spec)
}

/// The namespaces a sandbox's containers join, by the request's namespace options.
fn namespaces(sandbox: &Sandbox) -> Result<Vec<LinuxNamespace>, String> {
    let spec_in = &sandbox.spec;
    let options = &spec_in.raw_config["linux"]["security_context"]["namespace_options"];
    let mode = |key: &str| options[key].as_i64().unwrap_or(MODE_POD);

    let mut namespaces = vec![namespace(LinuxNamespaceType::Mount, None)?];
    if !spec_in.host_network {
        namespaces.push(namespace(
            LinuxNamespaceType::Network,
            sandbox.netns_path.clone(),
        )?);
        namespaces.push(namespace(LinuxNamespaceType::Uts, None)?);
    }
    if mode("ipc") != MODE_NODE {
        namespaces.push(namespace(LinuxNamespaceType::Ipc, None)?);
    }
    // POD: the sandbox owns the pod's pid namespace; CONTAINER: each container has its own;
    // NODE: the host's. A sandbox spec has a pid namespace unless it is the node's.
    if mode("pid") != MODE_NODE {
        namespaces.push(namespace(LinuxNamespaceType::Pid, None)?);
    }
    Ok(namespaces)
}

/// Read-only bind mounts of the sandbox's `hostname`, `hosts` and `resolv.conf`.
fn file_mounts(files_dir: &Path) -> Result<Vec<Mount>, String> {
    [
        ("hostname", "/etc/hostname"),
        ("hosts", "/etc/hosts"),
        ("resolv.conf", "/etc/resolv.conf"),
    ]
    .into_iter()
    .map(|(file, target)| {
        MountBuilder::default()
            .destination(target)
            .typ("bind")
            .source(files_dir.join(file))
            .options(vec!["rbind".to_string(), "ro".to_string()])
            .build()
            .map_err(|e| e.to_string())
    })
    .collect()
}

/// The annotations containerd puts on a sandbox spec.
fn annotations(sandbox: &Sandbox) -> HashMap<String, String> {
    let spec_in = &sandbox.spec;
    let mut annotations = HashMap::from([
        (ANNOTATION_CONTAINER_TYPE.to_string(), "sandbox".to_string()),
        (ANNOTATION_SANDBOX_ID.to_string(), sandbox.id.clone()),
        (
            ANNOTATION_SANDBOX_NAME.to_string(),
            spec_in.metadata.name.clone(),
        ),
        (
            ANNOTATION_SANDBOX_NAMESPACE.to_string(),
            spec_in.metadata.namespace.clone(),
        ),
        (
            ANNOTATION_SANDBOX_UID.to_string(),
            spec_in.metadata.uid.clone(),
        ),
    ]);
    if let Some(dir) = spec_in.raw_config["log_directory"]
        .as_str()
        .filter(|d| !d.is_empty())
    {
        annotations.insert(ANNOTATION_SANDBOX_LOG_DIR.to_string(), dir.to_string());
    }
    annotations
}

/// The spec as JSON, for files and verbose status.
pub fn runtime_spec_json(sandbox: &Sandbox, files_dir: &Path) -> Value {
    runtime_spec(sandbox, files_dir)
        .and_then(|s| serde_json::to_value(s).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| serde_json::json!({ "error": e }))
}

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> Result<LinuxNamespace, String> {
    let builder = LinuxNamespaceBuilder::default().typ(typ);
    let builder = match path {
        Some(p) => builder.path(p),
        None => builder,
    };
    builder.build().map_err(|e| e.to_string())
}

/// The pod's hostname: the requested one, or the pod name cut to a DNS label.
pub fn hostname(sandbox: &Sandbox) -> String {
    let requested = &sandbox.spec.hostname;
    if requested.is_empty() {
        sandbox.spec.metadata.name.chars().take(63).collect()
    } else {
        requested.clone()
    }
}

/// cgroupsPath in the driver's syntax: a systemd slice parent gives `slice:prefix:name`
/// (runc's systemd driver), a cgroupfs parent gives a path below it.
fn cgroups_path(parent: &str, id: &str) -> Option<PathBuf> {
    if parent.is_empty() {
        None
    } else if parent.ends_with(".slice") {
        Some(PathBuf::from(format!("{parent}:crisp:{id}")))
    } else {
        Some(Path::new(parent).join(format!("crisp-{id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_follow_the_driver() {
        assert_eq!(
            cgroups_path("kubepods-besteffort-podu.slice", "ab"),
            Some(PathBuf::from("kubepods-besteffort-podu.slice:crisp:ab"))
        );
        assert_eq!(
            cgroups_path("/kubepods/besteffort/podu", "ab"),
            Some(PathBuf::from("/kubepods/besteffort/podu/crisp-ab"))
        );
        assert_eq!(cgroups_path("", "ab"), None);
    }
}
