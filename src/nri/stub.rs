//! The plugin's side of NRI, for plugins written in Rust: crisp's tests and `nri-test-plugin`
//! use it. It serves the Plugin service on connection 1 with the caller's handler and
//! registers on connection 2, as containerd/nri's Go stub (`pkg/stub`) does.

use std::future::Future;

use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};

use super::mux;
use super::plugin::NRI_VERSION;
use super::proto::api::{ConfigureResponse, Empty, RegisterPluginRequest};
use super::proto::ttrpc::Request;
use super::ttrpc::{self, Client, RpcStatus};

/// A handler's answer: the response message's bytes, or a gRPC code and message.
pub type Answer = Result<Vec<u8>, RpcStatus>;

/// Registers as `name`/`index` and serves `handler` until the runtime closes the connection.
/// Returns an error when the registration fails.
pub async fn run<S, F, Fut>(stream: S, name: &str, index: &str, handler: F) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    F: Fn(Request) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<u8>, RpcStatus>> + Send + 'static,
{
    let (writer, inbound) = mux::split(stream);
    let runtime = Client::new(writer.clone(), mux::RUNTIME_CONN, inbound.runtime);
    let served = tokio::spawn(ttrpc::serve(
        writer,
        mux::PLUGIN_CONN,
        inbound.plugin,
        handler,
    ));
    let request = RegisterPluginRequest {
        plugin_name: name.to_string(),
        plugin_idx: index.to_string(),
        nri_version: NRI_VERSION.to_string(),
    };
    let timeout = std::time::Duration::from_secs(5);
    runtime
        .call(
            "nri.pkg.api.v1alpha1.Runtime",
            "RegisterPlugin",
            &request,
            timeout,
        )
        .await
        .map_err(|e| format!("RegisterPlugin: {e}"))?;
    let _ = served.await;
    Ok(())
}

/// The answer to Configure that subscribes to `events` (0: all).
pub fn configured(events: i32) -> Vec<u8> {
    ConfigureResponse { events }.encode_to_vec()
}

/// The answer to a method that returns `Empty` (or an empty response message).
pub fn empty() -> Vec<u8> {
    Empty {}.encode_to_vec()
}
