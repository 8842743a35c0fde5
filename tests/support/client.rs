//! CRI calls as the tests make them: each panics with the call, the id and the status
//! on error (a test failure); answers are checked the way crictl and kubelet check them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::Value;
use tonic::transport::Channel;

/// The RuntimeService client the tests hold.
pub type Client = RuntimeServiceClient<Channel>;

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
    let id = try_run_pod(client, config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_valid_id(&id);
    id
}

/// Runs a pod; the error names the call, the pod and the status (for the bench's counts).
pub async fn try_run_pod(
    client: &mut RuntimeServiceClient<Channel>,
    config: cri::PodSandboxConfig,
) -> Result<String, String> {
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    client
        .run_pod_sandbox(run_req(config))
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
        .map_err(|e| format!("RunPodSandbox {name}: {e:?}"))
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
    let r = try_status(client, id, verbose)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (r.status.expect("status set"), r.info)
}

/// PodSandboxStatus; the error names the call, the id and the status.
pub async fn try_status(
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
    verbose: bool,
) -> Result<cri::PodSandboxStatusResponse, String> {
    client
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose,
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| format!("PodSandboxStatus {id}: {e:?}"))
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

/// StopPodSandbox (panics on error).
pub async fn stop_pod(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    try_stop_pod(client, id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// StopPodSandbox; the error names the call, the id and the status.
pub async fn try_stop_pod(
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> Result<(), String> {
    client
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .map(drop)
        .map_err(|e| format!("StopPodSandbox {id}: {e:?}"))
}

/// RemovePodSandbox (panics on error).
pub async fn remove_pod(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    try_remove_pod(client, id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// RemovePodSandbox; the error names the call, the id and the status.
pub async fn try_remove_pod(
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> Result<(), String> {
    client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .map(drop)
        .map_err(|e| format!("RemovePodSandbox {id}: {e:?}"))
}

/// ListPodSandbox with an optional filter; returns the items.
pub async fn list(
    client: &mut RuntimeServiceClient<Channel>,
    filter: Option<cri::PodSandboxFilter>,
) -> Vec<cri::PodSandbox> {
    try_list(client, filter)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// ListPodSandbox; the error names the call and the status.
pub async fn try_list(
    client: &mut RuntimeServiceClient<Channel>,
    filter: Option<cri::PodSandboxFilter>,
) -> Result<Vec<cri::PodSandbox>, String> {
    client
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter })
        .await
        .map(|r| r.into_inner().items)
        .map_err(|e| format!("ListPodSandbox: {e:?}"))
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

/// `verifySandboxStatus` (kubelet's remote/utils.go, crictl): id, metadata name, namespace and
/// uid non-empty, created_at set.
pub fn verify_sandbox_status(st: &cri::PodSandboxStatus) {
    assert!(!st.id.is_empty(), "status.id empty");
    let m = st.metadata.as_ref().expect("status.metadata set");
    assert!(!m.name.is_empty(), "metadata.name empty");
    assert!(!m.namespace.is_empty(), "metadata.namespace empty");
    assert!(!m.uid.is_empty(), "metadata.uid empty");
    assert_ne!(st.created_at, 0, "created_at is 0");
}
