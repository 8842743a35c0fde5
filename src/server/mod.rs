//! The gRPC adapter: binds the socket, serves CRI v1 (RuntimeService, ImageService), gRPC
//! reflection and health. Handlers only translate and delegate to `sandbox/`; each call is
//! logged once here with its outcome.

mod convert;
mod image;
mod inflight;
mod runtime;
pub mod socket;

use std::future::Future;
use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::sandbox::{RecoveryReport, SandboxManager};

pub use image::ImageApi;
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
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight calls finish
/// (for at most `drain_limit`). Idle client connections do not hold the exit back.
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send,
    drain_limit: std::time::Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Both reflection versions: grpcurl releases differ in which one they ask for.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(CRI_DESCRIPTOR)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<RuntimeServiceServer<RuntimeApi>>()
        .await;
    health_reporter
        .set_serving::<ImageServiceServer<ImageApi>>()
        .await;
    let runtime = RuntimeServiceServer::new(RuntimeApi::new(shared.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let image =
        ImageServiceServer::new(ImageApi::new(shared)).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let calls = inflight::InFlight::default();
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .layer(calls.layer())
        .add_service(runtime)
        .add_service(image)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(health)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
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
            tracing::info!(in_flight = calls.count(), "in-flight calls finished or drain limit reached; exiting");
        }
    }
    Ok(())
}

/// Logs one line for a finished call and turns its error into a status.
fn finish<T>(
    method: &'static str,
    sandbox_id: &str,
    started: std::time::Instant,
    result: crate::Result<T>,
) -> Result<tonic::Response<T>, tonic::Status> {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(value) => {
            tracing::info!(method, sandbox_id, duration_ms = ms, code = "OK", "rpc");
            Ok(tonic::Response::new(value))
        }
        Err(err) => {
            let status = tonic::Status::from(err);
            tracing::warn!(
                method, sandbox_id, duration_ms = ms, code = ?status.code(),
                error = %status.message(), "rpc failed"
            );
            Err(status)
        }
    }
}
