//! One connected NRI plugin: its registration and configuration, then its pod events.
//!
//! `connect` runs NRI's handshake on a fresh socket: the plugin calls RegisterPlugin on the
//! Runtime service (connection 2) within the registration timeout, then crisp calls Configure
//! on the Plugin service (connection 1) and learns the plugin's event subscription. Events go
//! through the plugin's own queue, one at a time, so a plugin sees each pod's events in order
//! and no other lock is held while a plugin thinks.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, OwnedMutexGuard};

use super::mux::{self, MuxWriter};
use super::proto::api::{
    ConfigureRequest, ConfigureResponse, Empty, Event, PodSandbox, RegisterPluginRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StateChangeEvent, StopPodSandboxRequest,
    SynchronizeRequest, SynchronizeResponse, UpdateContainersRequest, UpdateContainersResponse,
};
use super::proto::ttrpc::Request;
use super::ttrpc::{self, CallError, Client, RpcStatus};

/// The NRI version whose protocol crisp speaks (proto/README.md).
pub const NRI_VERSION: &str = "v0.12.2";
const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
/// Room left under ttrpc's 4 MiB for the envelope around a Synchronize.
const SYNC_ENVELOPE: usize = 64 << 10;

/// What crisp tells plugins about itself in Configure.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub registration: Duration,
    pub request: Duration,
}

impl Default for Timeouts {
    /// NRI's defaults (pkg/api/timeouts.go).
    fn default() -> Self {
        Timeouts {
            registration: Duration::from_secs(5),
            request: Duration::from_secs(2),
        }
    }
}

/// A plugin's name and its two-digit index, as it registered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    pub index: String,
    pub name: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.index, self.name)
    }
}

impl Identity {
    /// NRI's rules: a name from `[a-zA-Z0-9_.+-]`, an index of exactly two digits.
    pub fn parse(name: &str, index: &str) -> Result<Identity, String> {
        let name_ok = |c: char| c.is_ascii_alphanumeric() || "_.+-".contains(c);
        if name.is_empty() || !name.chars().all(name_ok) {
            return Err(format!(
                "invalid plugin name {name:?}: want [a-zA-Z0-9_.+-]+"
            ));
        }
        if index.len() != 2 || !index.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid plugin index {index:?}: want two digits"));
        }
        Ok(Identity {
            index: index.to_string(),
            name: name.to_string(),
        })
    }
}

/// The subscribed events: bit `1 << (event - 1)` per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMask(pub i32);

impl EventMask {
    /// Every event NRI defines (UNKNOWN and LAST excluded).
    pub const ALL: EventMask = EventMask((1 << (Event::Last as i32 - 1)) - 1);

    pub fn contains(self, event: Event) -> bool {
        let n = event as i32;
        n > 0 && self.0 & (1 << (n - 1)) != 0
    }

    pub fn names(self) -> Vec<&'static str> {
        (1..Event::Last as i32)
            .filter_map(|n| Event::try_from(n).ok())
            .filter(|e| self.contains(*e))
            .map(|e| e.as_str_name())
            .collect()
    }
}

/// How a plugin took a pod event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not subscribed to it: nothing was sent.
    Skipped,
    Accepted(Duration),
    /// The plugin answered with an error: its message.
    Rejected(String),
    /// The plugin timed out, closed or broke the protocol: it is disconnected now.
    Disconnected(String),
}

/// Per-plugin delivery state, behind the plugin's queue.
#[derive(Default)]
pub struct Queue {
    /// Events whose dedicated RPC the plugin does not implement: sent as StateChange.
    state_change_only: HashSet<i32>,
}

pub struct Plugin {
    pub identity: Identity,
    pub events: EventMask,
    client: Client,
    timeouts: Timeouts,
    queue: Arc<tokio::sync::Mutex<Queue>>,
}

/// The identity RegisterPlugin gave, or why there is none (refused, closed, too late); the
/// connection is closed where crisp gives up on it.
async fn await_registration(
    client: &Client,
    registered: oneshot::Receiver<Result<Identity, String>>,
    limit: Duration,
) -> Result<Identity, String> {
    tokio::select! {
        r = tokio::time::timeout(limit, registered) => match r {
            Ok(Ok(Ok(identity))) => Ok(identity),
            Ok(Ok(Err(refused))) => {
                client.close().await;
                Err(refused)
            }
            Ok(Err(_)) => Err("closed the connection before registering".into()),
            Err(_) => {
                client.close().await;
                Err(format!("did not register within {limit:?}"))
            }
        },
        () = client.closed() => Err("closed the connection before registering".into()),
    }
}

/// Configure: the plugin's config and the runtime's identity and timeouts.
async fn configure(
    client: &Client,
    identity: &Identity,
    config: String,
    runtime: &Runtime,
    timeouts: &Timeouts,
) -> Result<ConfigureResponse, String> {
    let request = ConfigureRequest {
        config,
        runtime_name: runtime.name.clone(),
        runtime_version: runtime.version.clone(),
        registration_timeout: millis(timeouts.registration),
        request_timeout: millis(timeouts.request),
        nri_version: NRI_VERSION.to_string(),
    };
    let bytes = client
        .call(PLUGIN_SERVICE, "Configure", &request, timeouts.request)
        .await
        .map_err(|e| format!("{identity}: Configure: {e}"))?;
    ConfigureResponse::decode(bytes.as_slice())
        .map_err(|e| format!("{identity}: Configure answer: {e}"))
}

impl Plugin {
    /// NRI's handshake on `stream`: wait for RegisterPlugin, then Configure with the config
    /// `config_of` gives for the registered identity. The returned guard holds the plugin's
    /// queue, so no event reaches it before its Synchronize.
    pub async fn connect<S>(
        stream: S,
        runtime: &Runtime,
        timeouts: Timeouts,
        config_of: impl FnOnce(&Identity) -> String,
    ) -> Result<(Plugin, OwnedMutexGuard<Queue>), String>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (writer, inbound) = mux::split(stream);
        let client = Client::new(writer.clone(), mux::PLUGIN_CONN, inbound.plugin);
        let (registered_tx, registered) = oneshot::channel();
        tokio::spawn(serve_runtime(writer, inbound.runtime, registered_tx));
        let identity = await_registration(&client, registered, timeouts.registration).await?;
        let config = config_of(&identity);
        let configured = configure(&client, &identity, config, runtime, &timeouts).await;
        let events = match configured.and_then(|r| subscription(&identity, r.events)) {
            Ok(events) => events,
            Err(e) => {
                client.close().await;
                return Err(e);
            }
        };
        let queue = Arc::new(tokio::sync::Mutex::new(Queue::default()));
        let held = queue
            .clone()
            .try_lock_owned()
            .map_err(|_| format!("{identity}: its new queue is busy"))?;
        let plugin = Plugin {
            identity,
            events,
            client,
            timeouts,
            queue,
        };
        Ok((plugin, held))
    }

    /// Sends every known pod, split with `more` where one message would pass ttrpc's limit.
    /// Called with the guard `connect` returned, so it runs before any event.
    pub async fn synchronize(
        &self,
        _queue: &OwnedMutexGuard<Queue>,
        pods: Vec<PodSandbox>,
    ) -> Result<(), String> {
        let batches = split_for_sync(pods, ttrpc::MAX_MESSAGE - SYNC_ENVELOPE);
        let last = batches.len() - 1;
        for (i, pods) in batches.into_iter().enumerate() {
            let more = i < last;
            let request = SynchronizeRequest { pods, more };
            let answer = self
                .client
                .call(
                    PLUGIN_SERVICE,
                    "Synchronize",
                    &request,
                    self.timeouts.request,
                )
                .await
                .map_err(|e| format!("Synchronize: {e}"))?;
            let answer = SynchronizeResponse::decode(answer.as_slice())
                .map_err(|e| format!("Synchronize answer: {e}"))?;
            if more && !answer.more {
                return Err("the plugin does not handle split Synchronize requests".into());
            }
        }
        Ok(())
    }

    /// Delivers one pod event through the plugin's queue: the dedicated RPC, or StateChange
    /// where the plugin does not implement it (as NRI's adaptation falls back).
    pub async fn pod_event(&self, event: Event, pod: &PodSandbox) -> Outcome {
        if !self.events.contains(event) {
            return Outcome::Skipped;
        }
        let mut queue = self.queue.lock().await;
        let started = Instant::now();
        let mut answer = Err(CallError::Status {
            code: ttrpc::UNIMPLEMENTED,
            message: String::new(),
        });
        if !queue.state_change_only.contains(&(event as i32)) {
            answer = self.dedicated(event, pod).await;
        }
        if matches!(&answer, Err(CallError::Status { code, .. }) if *code == ttrpc::UNIMPLEMENTED) {
            queue.state_change_only.insert(event as i32);
            let change = StateChangeEvent {
                event: event as i32,
                pod: Some(pod.clone()),
            };
            answer = self.call("StateChange", &change).await;
        }
        drop(queue);
        match answer {
            Ok(_) => Outcome::Accepted(started.elapsed()),
            Err(CallError::Status { message, .. }) => Outcome::Rejected(message),
            Err(fatal) => {
                self.client.close().await;
                Outcome::Disconnected(fatal.to_string())
            }
        }
    }

    async fn dedicated(&self, event: Event, pod: &PodSandbox) -> Result<Vec<u8>, CallError> {
        let pod = Some(pod.clone());
        match event {
            Event::RunPodSandbox => {
                let request = RunPodSandboxRequest { pod };
                self.call("RunPodSandbox", &request).await
            }
            Event::StopPodSandbox => {
                let request = StopPodSandboxRequest { pod };
                self.call("StopPodSandbox", &request).await
            }
            Event::RemovePodSandbox => {
                let request = RemovePodSandboxRequest { pod };
                self.call("RemovePodSandbox", &request).await
            }
            // crisp sends pod lifecycle events only.
            _ => Err(CallError::Protocol(format!("{event:?} is not a pod event"))),
        }
    }

    async fn call(&self, method: &str, request: &impl Message) -> Result<Vec<u8>, CallError> {
        self.client
            .call(PLUGIN_SERVICE, method, request, self.timeouts.request)
            .await
    }

    /// Tells the plugin crisp is going down, then closes the connection.
    pub async fn shutdown(&self) {
        let _queue = self.queue.lock().await;
        let _ = self.call("Shutdown", &Empty {}).await;
        self.client.close().await;
    }

    /// Closes the connection without a Shutdown (the plugin is dropped, not crisp).
    pub async fn close(&self) {
        self.client.close().await;
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Resolves when the plugin's connection has closed, for whatever reason.
    pub async fn closed(&self) {
        self.client.closed().await
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// NRI's reading of a ConfigureResponse: 0 subscribes to everything, unknown bits are an error.
fn subscription(identity: &Identity, events: i32) -> Result<EventMask, String> {
    if events == 0 {
        return Ok(EventMask::ALL);
    }
    let extra = events & !EventMask::ALL.0;
    if extra != 0 {
        return Err(format!(
            "{identity}: subscribed to unknown events 0x{extra:x}"
        ));
    }
    Ok(EventMask(events))
}

/// Splits `pods` into batches whose encoded size stays under `limit` (at least one batch).
fn split_for_sync(pods: Vec<PodSandbox>, limit: usize) -> Vec<Vec<PodSandbox>> {
    let mut batches = vec![Vec::new()];
    let mut size = 0;
    for pod in pods {
        // Field tag and length prefix of the repeated field, at most 6 bytes.
        let len = pod.encoded_len() + 6;
        let current = batches.len() - 1;
        if size + len > limit && !batches[current].is_empty() {
            batches.push(Vec::new());
            size = 0;
        }
        size += len;
        let current = batches.len() - 1;
        batches[current].push(pod);
    }
    batches
}

/// crisp's Runtime service for one plugin: the first valid RegisterPlugin completes the
/// handshake; UpdateContainers reports every update failed (crisp has no containers).
async fn serve_runtime(
    writer: MuxWriter,
    inbound: tokio::sync::mpsc::Receiver<Vec<u8>>,
    registered: oneshot::Sender<Result<Identity, String>>,
) {
    let registered = Mutex::new(Some(registered));
    let handler = |request: Request| {
        let answer = handle_runtime_call(&request, &registered);
        async move { answer }
    };
    ttrpc::serve(writer, mux::RUNTIME_CONN, inbound, handler).await
}

fn handle_runtime_call(
    request: &Request,
    registered: &Mutex<Option<oneshot::Sender<Result<Identity, String>>>>,
) -> Result<Vec<u8>, RpcStatus> {
    let bad = |m: String| (ttrpc::INVALID_ARGUMENT, m);
    match (request.service.as_str(), request.method.as_str()) {
        (RUNTIME_SERVICE, "RegisterPlugin") => {
            let req = RegisterPluginRequest::decode(request.payload.as_slice())
                .map_err(|e| bad(format!("RegisterPlugin: {e}")))?;
            let waiting = registered.lock().unwrap_or_else(|p| p.into_inner()).take();
            let Some(tx) = waiting else {
                return Err(bad("the plugin is already registered".into()));
            };
            let identity = match Identity::parse(&req.plugin_name, &req.plugin_idx) {
                Ok(identity) => identity,
                Err(e) => {
                    let _ = tx.send(Err(format!("registered with {e}")));
                    return Err(bad(e));
                }
            };
            let nri_version = if req.nri_version.is_empty() {
                "unknown"
            } else {
                &req.nri_version
            };
            tracing::info!(plugin = %identity, nri_version, "NRI plugin registered");
            let _ = tx.send(Ok(identity));
            Ok(Empty {}.encode_to_vec())
        }
        (RUNTIME_SERVICE, "UpdateContainers") => {
            let req = UpdateContainersRequest::decode(request.payload.as_slice())
                .map_err(|e| bad(format!("UpdateContainers: {e}")))?;
            let failed = req.update;
            Ok(UpdateContainersResponse { failed }.encode_to_vec())
        }
        (service, method) => Err((
            ttrpc::UNIMPLEMENTED,
            format!("{service}/{method} is not implemented by crisp"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_follow_nri_rules() {
        let cases = [
            ("dranet", "05", true),
            ("a.b+c_d-e", "99", true),
            ("", "05", false),
            ("bad name", "05", false),
            ("x", "5", false),
            ("x", "123", false),
            ("x", "a1", false),
        ];
        for (name, index, ok) in cases {
            assert_eq!(
                Identity::parse(name, index).is_ok(),
                ok,
                "{name:?} {index:?}"
            );
        }
    }

    #[test]
    fn a_zero_mask_subscribes_to_all_and_unknown_bits_are_refused() {
        let id = Identity::parse("p", "01").expect("valid");
        assert_eq!(subscription(&id, 0), Ok(EventMask::ALL));
        let pods_only = 0b111;
        let mask = subscription(&id, pods_only).expect("valid mask");
        assert!(mask.contains(Event::RunPodSandbox) && mask.contains(Event::RemovePodSandbox));
        assert!(!mask.contains(Event::CreateContainer));
        assert_eq!(
            mask.names(),
            ["RUN_POD_SANDBOX", "STOP_POD_SANDBOX", "REMOVE_POD_SANDBOX"]
        );
        assert!(subscription(&id, 1 << 20).is_err());
    }

    #[test]
    fn synchronize_batches_stay_under_the_limit() {
        let pod = |i: usize| PodSandbox {
            id: format!("{i:064}"),
            name: "n".repeat(100),
            ..Default::default()
        };
        let one = pod(0).encoded_len() + 6;
        let batches = split_for_sync((0..10).map(pod).collect(), one * 4);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(split_for_sync(Vec::new(), one).len(), 1);
    }
}
