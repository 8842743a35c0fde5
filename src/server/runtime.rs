//! RuntimeService: the sandbox RPCs delegate to the manager; the container RPCs a
//! sandbox-only runtime cannot serve answer what kubelet tolerates (empty lists, NotFound)
//! or Unimplemented with a message — never an Ok that did nothing.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::{convert, finish, Shared};
use crate::error::Error;

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

fn unimplemented<T>(method: &'static str) -> Reply<T> {
    finish(
        method,
        "",
        Instant::now(),
        Err(Error::Unimplemented { what: method }),
    )
}

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    async fn version(&self, _req: Request<cri::VersionRequest>) -> Reply<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
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
        let started = Instant::now();
        let req = req.into_inner();
        let pod = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| format!("{}/{}", m.namespace, m.name))
            .unwrap_or_default();
        let result = match convert::sandbox_spec(req) {
            Ok(spec) => self.shared.manager.run(spec).await,
            Err(e) => Err(e),
        };
        let id = result.as_ref().map(String::clone).unwrap_or_default();
        tracing::debug!(pod = %pod, sandbox_id = %id, "RunPodSandbox done");
        finish(
            "RunPodSandbox",
            &id,
            started,
            result.map(|pod_sandbox_id| cri::RunPodSandboxResponse { pod_sandbox_id }),
        )
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Reply<cri::StopPodSandboxResponse> {
        let started = Instant::now();
        let id = req.into_inner().pod_sandbox_id;
        let result = self.shared.manager.stop(&id).await;
        finish(
            "StopPodSandbox",
            &id,
            started,
            result.map(|()| cri::StopPodSandboxResponse {}),
        )
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Reply<cri::RemovePodSandboxResponse> {
        let started = Instant::now();
        let id = req.into_inner().pod_sandbox_id;
        let result = self.shared.manager.remove(&id).await;
        finish(
            "RemovePodSandbox",
            &id,
            started,
            result.map(|()| cri::RemovePodSandboxResponse {}),
        )
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Reply<cri::PodSandboxStatusResponse> {
        let started = Instant::now();
        let req = req.into_inner();
        let manager = &self.shared.manager;
        let result = match manager.status(&req.pod_sandbox_id) {
            Ok(sandbox) => {
                let mut info = Default::default();
                if req.verbose {
                    info = convert::verbose_info(&sandbox);
                    // Verbose only (crictl inspectp): CHECK runs the plugins, kubelet's
                    // plain PodSandboxStatus never waits on one.
                    let check = match manager.check_network(&sandbox.id).await {
                        Ok(Some(outcome)) => format!("{outcome:?}"),
                        Ok(None) => "Skipped".to_string(),
                        Err(e) => format!("Failed: {e}"),
                    };
                    info.insert("networkCheck".to_string(), check);
                }
                Ok(cri::PodSandboxStatusResponse {
                    status: Some(convert::pod_sandbox_status(&sandbox)),
                    info,
                    containers_statuses: Vec::new(),
                    timestamp: 0,
                })
            }
            Err(e) => Err(e),
        };
        finish("PodSandboxStatus", &req.pod_sandbox_id, started, result)
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Reply<cri::ListPodSandboxResponse> {
        let filter = convert::list_filter(req.into_inner().filter);
        let items = self
            .shared
            .manager
            .list(&filter)
            .iter()
            .map(|s| convert::pod_sandbox(s))
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn status(&self, req: Request<cri::StatusRequest>) -> Reply<cri::StatusResponse> {
        // Never waits on a plugin: STATUS answers come from the background task.
        let readiness = self.shared.manager.network_readiness().await;
        let problem = readiness.ready_problem();
        let network_ready = cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: problem.is_none(),
            reason: if problem.is_some() {
                "NetworkPluginNotReady".into()
            } else {
                String::new()
            },
            message: problem
                .as_ref()
                .map(|p| format!("Network plugin returns error: {p}"))
                .unwrap_or_default(),
        };
        let runtime_ready = cri::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        let mut info = std::collections::HashMap::new();
        if req.into_inner().verbose {
            let network = readiness.network.as_ref().map(|n| {
                serde_json::json!({
                    "name": n.name,
                    "cniVersion": n.cni_version,
                    "file": n.source.display().to_string(),
                    "plugins": n.plugins.iter().map(|p| &p.plugin_type).collect::<Vec<_>>(),
                })
            });
            let config = &self.shared.config;
            info.insert(
                "config".to_string(),
                serde_json::to_string(config).unwrap_or_default(),
            );
            info.insert(
                "network".to_string(),
                serde_json::json!({
                    "ready": problem.is_none(),
                    "problem": problem,
                    "loaded": network,
                    "status": readiness.status,
                    "confDirWatched": self.shared.manager.network().conf_dir_watched(),
                    "podCIDR": self.shared.manager.network().pod_cidr(),
                })
                .to_string(),
            );
            info.insert(
                "recovery".to_string(),
                serde_json::to_string(&self.shared.recovery).unwrap_or_default(),
            );
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime_ready, network_ready],
            }),
            info,
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: None,
            }],
            features: None,
        }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Reply<cri::UpdateRuntimeConfigResponse> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .filter(|c| !c.is_empty());
        tracing::info!(pod_cidr = ?cidr, "UpdateRuntimeConfig");
        self.shared.manager.network().set_pod_cidr(cidr);
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn runtime_config(
        &self,
        _req: Request<cri::RuntimeConfigRequest>,
    ) -> Reply<cri::RuntimeConfigResponse> {
        // crisp manages no cgroups: Unimplemented makes kubelet keep its own cgroupDriver.
        unimplemented("RuntimeConfig (crisp manages no cgroups; kubelet keeps its cgroupDriver)")
    }

    async fn list_containers(
        &self,
        _req: Request<cri::ListContainersRequest>,
    ) -> Reply<cri::ListContainersResponse> {
        Ok(Response::new(cri::ListContainersResponse::default()))
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Reply<cri::ContainerStatusResponse> {
        Err(Status::not_found(format!(
            "container {:?} not found: crisp runs pod sandboxes only",
            req.into_inner().container_id
        )))
    }

    async fn list_container_stats(
        &self,
        _req: Request<cri::ListContainerStatsRequest>,
    ) -> Reply<cri::ListContainerStatsResponse> {
        Ok(Response::new(cri::ListContainerStatsResponse::default()))
    }

    async fn list_pod_sandbox_stats(
        &self,
        _req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Reply<cri::ListPodSandboxStatsResponse> {
        Ok(Response::new(cri::ListPodSandboxStatsResponse::default()))
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
        _req: Request<cri::PodSandboxStatsRequest>,
    ) -> Reply<cri::PodSandboxStatsResponse> {
        unimplemented("PodSandboxStats")
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
        unimplemented("GetContainerEvents")
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Reply<cri::ListMetricDescriptorsResponse> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse::default()))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Reply<cri::ListPodSandboxMetricsResponse> {
        Ok(Response::new(cri::ListPodSandboxMetricsResponse::default()))
    }
}
