//! RuntimeService: the thin trait impl. The sandbox RPCs check the request (`request`),
//! delegate to the manager and render the answer (`response`); the container RPCs a
//! sandbox-only runtime cannot serve answer what kubelet tolerates (empty lists, NotFound)
//! or Unimplemented with a message — never an Ok that did nothing. Every call goes through
//! [`Call`]: one log line and one latency sample each. No check, rule or rendering lives
//! here. Status, list and stats calls never wait on a plugin (they read the manager's memory
//! or a namespace's counters); only Run, Stop and Remove run plugins, inside the manager.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tokio::sync::broadcast::{self, error::RecvError};
use tonic::{Request, Response, Status};

use super::call::Call;
use super::{request, response, Shared};
use crate::error::Error;
use crate::sandbox::SandboxEvent;
use crate::sandbox::{stats, ListFilter, SandboxState};

pub struct RuntimeApi {
    shared: Arc<Shared>,
}

impl RuntimeApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        RuntimeApi { shared }
    }
}

/// The CRI API version kubelet checks for in `Version`.
const KUBELET_API_VERSION: &str = "0.1.0";

type Reply<T> = Result<Response<T>, Status>;
type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

/// A call a sandbox-only runtime cannot serve: Unimplemented, naming the method.
fn unimplemented<T>(method: &'static str) -> Reply<T> {
    Call::read(method).finish(Err(Error::Unimplemented { what: method }))
}

/// The GetContainerEvents stream over one subscription. A subscriber that falls more than the
/// buffer behind skips what it missed (logged and counted; kubelet's relist repairs it): the
/// lifecycle never waits for it. The receiver goes away with the stream.
fn event_stream(rx: broadcast::Receiver<SandboxEvent>) -> EventStream {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => return Some((Ok(response::container_event(&event)), rx)),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "a GetContainerEvents subscriber fell behind and skipped events"
                    );
                    crate::telemetry::record_events_skipped(missed);
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }))
}

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    async fn version(&self, _req: Request<cri::VersionRequest>) -> Reply<cri::VersionResponse> {
        Call::read("Version").finish(Ok(cri::VersionResponse {
            version: KUBELET_API_VERSION.into(),
            runtime_name: "crisp".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Reply<cri::RunPodSandboxResponse> {
        let req = req.into_inner();
        let pod = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| format!("{}/{}", m.namespace, m.name))
            .unwrap_or_default();
        let mut call = Call::write("RunPodSandbox").pod(pod);
        let result = match request::check_run_request(req) {
            Ok(spec) => self.shared.manager.run(spec).await,
            Err(e) => Err(e),
        };
        if let Ok(id) = &result {
            call.set_sandbox_id(id);
        }
        call.finish(result.map(|pod_sandbox_id| cri::RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Reply<cri::StopPodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let call = Call::write("StopPodSandbox").sandbox(&self.shared, &id);
        let result = self.shared.manager.stop(&id).await;
        call.finish(result.map(|()| cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Reply<cri::RemovePodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let call = Call::write("RemovePodSandbox").sandbox(&self.shared, &id);
        let result = self.shared.manager.remove(&id).await;
        call.finish(result.map(|()| cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Reply<cri::PodSandboxStatusResponse> {
        let req = req.into_inner();
        let call = Call::read("PodSandboxStatus").sandbox(&self.shared, &req.pod_sandbox_id);
        let manager = &self.shared.manager;
        let sandbox = match manager.status(&req.pod_sandbox_id) {
            Ok(sandbox) => sandbox,
            Err(e) => return call.finish(Err(e)),
        };
        let info = if req.verbose {
            let dir = manager.files_dir(&sandbox.id);
            // The spec exactly as written for runtimes (kept in memory once read).
            let spec = manager.runtime_spec(&sandbox).await;
            let last_ops = self.shared.plugin_timings.last_ops(&sandbox.id);
            // From memory and the sandbox's files: the background checker's last outcomes,
            // never a plugin run on this call's path.
            let health = manager.health(&sandbox.id);
            let nri_hooks = manager.nri_hooks(&sandbox.id);
            response::verbose_info(
                &sandbox,
                &dir,
                spec.as_deref(),
                last_ops,
                &health,
                &nri_hooks,
            )
        } else {
            Default::default()
        };
        call.finish(Ok(cri::PodSandboxStatusResponse {
            status: Some(response::pod_sandbox_status(&sandbox)),
            info,
            containers_statuses: Vec::new(),
            timestamp: crate::clock::now_nanos(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Reply<cri::ListPodSandboxResponse> {
        let call = Call::read("ListPodSandbox");
        let filter = request::list_filter(req.into_inner().filter);
        let items = self
            .shared
            .manager
            .list(&filter)
            .iter()
            .map(|s| response::pod_sandbox(s))
            .collect();
        call.finish(Ok(cri::ListPodSandboxResponse { items }))
    }

    async fn status(&self, req: Request<cri::StatusRequest>) -> Reply<cri::StatusResponse> {
        let call = Call::read("Status");
        // Never waits on a plugin: STATUS answers come from the background task.
        let readiness = self.shared.manager.network_readiness().await;
        let problem = readiness.ready_problem();
        let info = if req.into_inner().verbose {
            response::status_info(&self.shared, &readiness, problem.as_deref())
        } else {
            HashMap::new()
        };
        call.finish(Ok(response::runtime_status(problem.as_deref(), info)))
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Reply<cri::UpdateRuntimeConfigResponse> {
        let call = Call::write("UpdateRuntimeConfig");
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .filter(|c| !c.is_empty());
        tracing::info!(pod_cidr = ?cidr, "pod CIDR set by UpdateRuntimeConfig");
        self.shared.manager.set_pod_cidr(cidr);
        call.finish(Ok(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn runtime_config(
        &self,
        _req: Request<cri::RuntimeConfigRequest>,
    ) -> Reply<cri::RuntimeConfigResponse> {
        // crisp creates no cgroups: by default `linux` stays unset and kubelet (≥ 1.31, which
        // replaces its own cgroupDriver with the answer) keeps its setting; --cgroup-driver
        // makes kubelet follow the operator's choice for the node.
        Call::read("RuntimeConfig").finish(Ok(response::runtime_config(
            self.shared.config.cgroup_driver,
        )))
    }

    async fn list_containers(
        &self,
        _req: Request<cri::ListContainersRequest>,
    ) -> Reply<cri::ListContainersResponse> {
        // Empty, not Unimplemented: kubelet's PLEG relist fails on any error.
        Call::read("ListContainers").finish(Ok(cri::ListContainersResponse::default()))
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Reply<cri::ContainerStatusResponse> {
        Call::read("ContainerStatus").finish_status(Err(Status::not_found(format!(
            "container {:?} not found: crisp runs pod sandboxes only",
            req.into_inner().container_id
        ))))
    }

    async fn list_container_stats(
        &self,
        _req: Request<cri::ListContainerStatsRequest>,
    ) -> Reply<cri::ListContainerStatsResponse> {
        Call::read("ListContainerStats").finish(Ok(cri::ListContainerStatsResponse::default()))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Reply<cri::ListPodSandboxStatsResponse> {
        let call = Call::read("ListPodSandboxStats");
        let filter = request::stats_filter(req.into_inner().filter);
        let mut out = Vec::new();
        for sandbox in self.shared.manager.list(&filter) {
            match stats::network_stats(&sandbox).await {
                Ok(network) => out.push(response::pod_sandbox_stats(&sandbox, network)),
                // Stopped or removed while listing: it no longer has stats to give.
                Err(e) => {
                    tracing::debug!(
                        sandbox_id = %sandbox.id, error = %e, "skipped in ListPodSandboxStats"
                    )
                }
            }
        }
        call.finish(Ok(cri::ListPodSandboxStatsResponse { stats: out }))
    }

    async fn create_container(
        &self,
        _req: Request<cri::CreateContainerRequest>,
    ) -> Reply<cri::CreateContainerResponse> {
        unimplemented("CreateContainer")
    }

    async fn start_container(
        &self,
        _req: Request<cri::StartContainerRequest>,
    ) -> Reply<cri::StartContainerResponse> {
        unimplemented("StartContainer")
    }

    async fn stop_container(
        &self,
        _req: Request<cri::StopContainerRequest>,
    ) -> Reply<cri::StopContainerResponse> {
        unimplemented("StopContainer")
    }

    async fn remove_container(
        &self,
        _req: Request<cri::RemoveContainerRequest>,
    ) -> Reply<cri::RemoveContainerResponse> {
        unimplemented("RemoveContainer")
    }

    async fn update_container_resources(
        &self,
        _req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Reply<cri::UpdateContainerResourcesResponse> {
        unimplemented("UpdateContainerResources")
    }

    async fn reopen_container_log(
        &self,
        _req: Request<cri::ReopenContainerLogRequest>,
    ) -> Reply<cri::ReopenContainerLogResponse> {
        unimplemented("ReopenContainerLog")
    }

    async fn exec_sync(&self, _req: Request<cri::ExecSyncRequest>) -> Reply<cri::ExecSyncResponse> {
        unimplemented("ExecSync")
    }

    async fn exec(&self, _req: Request<cri::ExecRequest>) -> Reply<cri::ExecResponse> {
        unimplemented("Exec")
    }

    async fn attach(&self, _req: Request<cri::AttachRequest>) -> Reply<cri::AttachResponse> {
        unimplemented("Attach")
    }

    async fn port_forward(
        &self,
        _req: Request<cri::PortForwardRequest>,
    ) -> Reply<cri::PortForwardResponse> {
        unimplemented("PortForward")
    }

    async fn container_stats(
        &self,
        _req: Request<cri::ContainerStatsRequest>,
    ) -> Reply<cri::ContainerStatsResponse> {
        unimplemented("ContainerStats")
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Reply<cri::PodSandboxStatsResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let call = Call::read("PodSandboxStats").sandbox(&self.shared, &id);
        let result =
            match self.shared.manager.status(&id) {
                Ok(sandbox) => stats::network_stats(&sandbox).await.map(|network| {
                    cri::PodSandboxStatsResponse {
                        stats: Some(response::pod_sandbox_stats(&sandbox, network)),
                    }
                }),
                Err(e) => Err(e),
            };
        call.finish(result)
    }

    async fn checkpoint_container(
        &self,
        _req: Request<cri::CheckpointContainerRequest>,
    ) -> Reply<cri::CheckpointContainerResponse> {
        unimplemented("CheckpointContainer")
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _req: Request<cri::GetEventsRequest>,
    ) -> Reply<Self::GetContainerEventsStream> {
        let call = Call::read("GetContainerEvents");
        call.finish(Ok(event_stream(self.shared.manager.subscribe())))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Reply<cri::ListMetricDescriptorsResponse> {
        Call::read("ListMetricDescriptors").finish(Ok(cri::ListMetricDescriptorsResponse {
            descriptors: response::metric_descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Reply<cri::ListPodSandboxMetricsResponse> {
        let call = Call::read("ListPodSandboxMetrics");
        let ready = ListFilter {
            state: Some(SandboxState::Ready),
            ..ListFilter::default()
        };
        let mut pod_metrics = Vec::new();
        for sandbox in self.shared.manager.list(&ready) {
            match stats::network_stats(&sandbox).await {
                Ok(Some(network)) => {
                    pod_metrics.push(response::pod_sandbox_metrics(&sandbox, &network))
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(
                        sandbox_id = %sandbox.id, error = %e, "skipped in ListPodSandboxMetrics"
                    )
                }
            }
        }
        call.finish(Ok(cri::ListPodSandboxMetricsResponse { pod_metrics }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::model::{DnsConfig, PodMetadata, Sandbox, SandboxSpec};
    use crate::sandbox::EventKind;
    use futures::StreamExt;

    fn event(n: usize) -> SandboxEvent {
        let spec = SandboxSpec {
            metadata: PodMetadata {
                name: format!("pod-{n}"),
                namespace: "default".into(),
                uid: format!("uid-{n}"),
                attempt: 0,
            },
            hostname: String::new(),
            host_network: false,
            port_mappings: Vec::new(),
            dns: DnsConfig::default(),
            labels: Default::default(),
            annotations: Default::default(),
            cgroup_parent: String::new(),
            sysctls: Default::default(),
            runtime_handler: String::new(),
            raw_config: serde_json::Value::Null,
        };
        SandboxEvent {
            kind: EventKind::Created,
            sandbox: Arc::new(Sandbox {
                id: format!("{n:064x}"),
                spec,
                state: SandboxState::Ready,
                created_at: 1,
                netns_path: None,
                network: None,
                last_error: None,
            }),
            at: n as i64 + 1,
        }
    }

    #[tokio::test]
    async fn a_lagging_subscriber_skips_the_oldest_and_the_sender_never_waits() {
        let (tx, rx) = broadcast::channel(4);
        let mut stream = event_stream(rx);
        // Nobody reads while ten events go out: every send returns at once.
        for n in 0..10 {
            tx.send(event(n)).expect("a receiver exists");
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(item) = stream.next().await {
            let e = item.expect("event");
            assert!(e.pod_sandbox_status.and_then(|s| s.metadata).is_some());
            got.push(e.created_at);
        }
        assert_eq!(got, [7, 8, 9, 10], "the newest 4 remain, in order");
    }
}
