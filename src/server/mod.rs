//! The gRPC adapter: serves CRI v1 (RuntimeService, ImageService), gRPC reflection and
//! health on a listener it is given (`crate::socket` binds it), and at shutdown waits for the
//! calls in flight, not for idle connections. It owns the tower stack in front of the
//! handlers (the authority adapter, the in-flight count, the oversize rewrite) and [`Shared`],
//! what every handler sees. tonic and the CRI proto stop here (outside `server/`, only
//! `error.rs` names tonic, to map errors to codes). Handlers translate and delegate to
//! `sandbox/`: nothing here names the CNI or fast-path modules, touches a namespace or writes a
//! record, and no handler picks a gRPC code for an error itself.

pub mod authority;
mod call;
mod image;
mod inflight;
mod oversize;
mod request;
mod response;
mod runtime;

use std::future::Future;
use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::config::Config;
use crate::sandbox::{EventKind, ListFilter, RecoveryReport, SandboxManager};
use crate::telemetry::{self, PluginTelemetry};

pub use image::ImageApi;
pub use request::check_run_request;
pub use runtime::RuntimeApi;

/// The CRI proto's descriptor set, for reflection (built from `proto/api.proto`).
const CRI_DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cri_descriptor.bin"));

/// Largest request accepted, as kubelet's own client limit.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// What every handler shares.
pub struct Shared {
    pub manager: SandboxManager,
    pub config: Config,
    pub recovery: RecoveryReport,
    /// Each sandbox's last CNI ADD/DEL timings (cni reports them through its observer hook).
    pub plugin_timings: Arc<PluginTelemetry>,
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight calls finish
/// (for at most `drain_limit`). Idle client connections do not hold the exit back.
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send,
    drain_limit: std::time::Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    telemetry::record_recovery(&shared.recovery.repairs());
    tokio::spawn(watch_sandboxes(shared.clone()));
    // Both reflection versions: grpcurl releases differ in which one they ask for.
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let health = health_service().await;
    let runtime = RuntimeServiceServer::new(RuntimeApi::new(shared.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let image =
        ImageServiceServer::new(ImageApi::new(shared)).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let calls = inflight::InFlight::default();
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        // The limits the authority adapter enforces are the ones h2 advertises.
        .http2_max_header_list_size(authority::LIMITS.max_header_list_size as u32)
        .max_frame_size(authority::LIMITS.max_frame_size as u32)
        .layer(calls.layer())
        .layer(tower::util::MapResponseLayer::new(
            oversize::as_resource_exhausted::<tonic::body::Body>,
        ))
        .add_service(runtime)
        .add_service(image)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(health)
        .serve_with_incoming_shutdown(accepted(listener), async {
            let _ = stopped.await;
        });
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => return Ok(served?),
        () = shutdown => {}
    }
    let _ = stop_accepting.send(());
    // tonic's own drain waits for every connection to close, and an idle kubelet
    // connection may never close: wait for the calls in flight instead.
    tokio::select! {
        served = &mut server => served?,
        () = calls.idle(drain_limit) => {
            tracing::info!(
                in_flight = calls.count(),
                "in-flight calls finished or drain limit reached; exiting"
            );
        }
    }
    Ok(())
}

/// gRPC reflection over the CRI proto and the health service.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(CRI_DESCRIPTOR)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// The gRPC health service, with both CRI services serving.
async fn health_service() -> HealthServer<impl Health> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<RuntimeServiceServer<RuntimeApi>>()
        .await;
    health_reporter
        .set_serving::<ImageServiceServer<ImageApi>>()
        .await;
    health
}

/// One accepted client connection, behind the authority adapter.
type Connection = authority::AuthorityAdapter<tokio::net::UnixStream>;

/// Each accepted connection, wrapped so that any `:authority` is accepted.
fn accepted(listener: UnixListener) -> impl futures::Stream<Item = std::io::Result<Connection>> {
    use futures::TryStreamExt;
    UnixListenerStream::new(listener).map_ok(authority::AuthorityAdapter::new)
}

/// Keeps the sandbox gauges current and forgets the plugin timings of removed sandboxes.
/// Events queued together are handled as one batch with one recount (a recount reads every
/// sandbox); if some were missed (lag), the timings are pruned to the sandboxes that exist.
async fn watch_sandboxes(shared: Arc<Shared>) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut events = shared.manager.subscribe();
    loop {
        let sandboxes = shared.manager.list(&ListFilter::default());
        telemetry::record_sandboxes(&crate::sandbox::count_by_state(&sandboxes));
        let mut next = events.recv().await;
        loop {
            match next {
                Ok(event) if event.kind == EventKind::Deleted => {
                    shared.plugin_timings.forget(&event.sandbox.id)
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    let live: std::collections::HashSet<String> = shared
                        .manager
                        .list(&ListFilter::default())
                        .iter()
                        .map(|s| s.id.clone())
                        .collect();
                    shared.plugin_timings.retain(|id| live.contains(id));
                }
                Err(RecvError::Closed) => return,
            }
            next = match events.try_recv() {
                Ok(event) => Ok(event),
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            };
        }
    }
}
