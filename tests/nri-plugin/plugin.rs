//! `nri-test-plugin`: the NRI plugin crisp's tests drive (tests/nri.rs). It speaks NRI from
//! the plugin's side with `crisp::nri::stub` (whose framing tests/nri-wire's golden bytes pin)
//! and writes every request it gets as one JSON line to its log, so a test can read what
//! arrived, when and with what.
//!
//! ```text
//! nri-test-plugin [--socket=PATH] [--name=N] [--idx=NN] [--log=FILE] [--on-run=MODE]
//!                 [--delivery=dedicated|statechange] [--events=MASK]
//! ```
//!
//! Without `--socket` it uses fd 3 when `NRI_PLUGIN_SOCKET=3` (a plugin crisp started);
//! `--name`/`--idx` default to `NRI_PLUGIN_NAME`/`NRI_PLUGIN_IDX`. The config crisp sends in
//! Configure, a JSON object with the same keys (`{"log": "...", "on-run": "reject:no"}`),
//! overrides the flags, so a plugin in the plugin dir is configured by its `.conf` file.
//!
//! `--on-run`: `accept` (default); `reject:MESSAGE` answers RunPodSandbox with an error;
//! `hang` never answers it; `hold:FILE` answers once FILE exists. `--delivery=statechange`
//! answers the dedicated pod RPCs with UNIMPLEMENTED, as a plugin built on an old stub does.
//! The plugin exits 0 when crisp closes the connection, after logging `{"event":"exit"}`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crisp::nri::proto::api::{
    ConfigureRequest, PodSandbox, RemovePodSandboxRequest, RunPodSandboxRequest, StateChangeEvent,
    StopPodSandboxRequest, SynchronizeRequest, SynchronizeResponse,
};
use crisp::nri::proto::ttrpc::Request;
use crisp::nri::stub;
use prost::Message;
use serde_json::{json, Value};

const UNIMPLEMENTED: i32 = 12;
const UNKNOWN: i32 = 2;
/// RunPodSandbox, StopPodSandbox, RemovePodSandbox.
const POD_EVENTS: i32 = 0b111;

#[derive(Debug, Clone)]
struct Options {
    socket: Option<PathBuf>,
    name: String,
    idx: String,
    log: Option<PathBuf>,
    on_run: String,
    statechange_only: bool,
    events: i32,
}

impl Options {
    fn from_args() -> Result<Options, String> {
        let mut options = Options {
            socket: None,
            name: std::env::var("NRI_PLUGIN_NAME").unwrap_or_else(|_| "test".into()),
            idx: std::env::var("NRI_PLUGIN_IDX").unwrap_or_else(|_| "50".into()),
            log: None,
            on_run: "accept".into(),
            statechange_only: false,
            events: POD_EVENTS,
        };
        for arg in std::env::args().skip(1) {
            let (key, value) = arg
                .strip_prefix("--")
                .and_then(|a| a.split_once('='))
                .ok_or_else(|| format!("bad argument {arg:?}: want --key=value"))?;
            options.set(key, value)?;
        }
        Ok(options)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "socket" => self.socket = Some(value.into()),
            "name" => self.name = value.into(),
            "idx" => self.idx = value.into(),
            "log" => self.log = Some(value.into()),
            "on-run" => self.on_run = value.into(),
            "delivery" => self.statechange_only = value == "statechange",
            "events" => self.events = value.parse().map_err(|e| format!("--events: {e}"))?,
            _ => return Err(format!("unknown option {key:?}")),
        }
        Ok(())
    }

    /// The Configure config: a JSON object of options, or nothing.
    fn merge_config(&mut self, config: &str) -> Result<(), String> {
        if config.trim().is_empty() {
            return Ok(());
        }
        let object: BTreeMap<String, String> =
            serde_json::from_str(config).map_err(|e| format!("config {config:?}: {e}"))?;
        for (key, value) in object {
            self.set(&key, &value)?;
        }
        Ok(())
    }
}

struct State {
    options: Options,
}

/// Appends `line`, with this plugin's `IDX-NAME` as "plugin", to the log (one write per line,
/// O_APPEND: plugins sharing a log file do not tear each other's lines).
fn log(state: &Mutex<State>, mut line: Value) {
    let (path, identity) = {
        let options = &lock(state).options;
        let identity = format!("{}-{}", options.idx, options.name);
        (options.log.clone(), identity)
    };
    let Some(path) = path else { return };
    if let Some(object) = line.as_object_mut() {
        object.insert("plugin".into(), Value::String(identity));
    }
    let opened = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    if let Ok(mut file) = opened {
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a test checks of a pod: the fields crisp fills, and whether the netns exists now.
fn pod_json(pod: &Option<PodSandbox>) -> Value {
    let Some(pod) = pod else { return Value::Null };
    let linux = pod.linux.clone().unwrap_or_default();
    let netns = linux
        .namespaces
        .iter()
        .find(|n| n.r#type == "network")
        .map(|n| n.path.clone())
        .unwrap_or_default();
    json!({
        "id": pod.id,
        "name": pod.name,
        "uid": pod.uid,
        "namespace": pod.namespace,
        "labels": pod.labels,
        "annotations": pod.annotations,
        "runtime_handler": pod.runtime_handler,
        "cgroup_parent": linux.cgroup_parent,
        "netns": netns,
        "netns_exists": !netns.is_empty() && std::path::Path::new(&netns).exists(),
        "ips": pod.ips,
    })
}

fn decode<M: Message + Default>(request: &Request) -> Result<M, (i32, String)> {
    M::decode(request.payload.as_slice()).map_err(|e| (UNKNOWN, format!("{}: {e}", request.method)))
}

async fn handle(state: Arc<Mutex<State>>, request: Request) -> Result<Vec<u8>, (i32, String)> {
    let method = request.method.clone();
    match method.as_str() {
        "Configure" => {
            let configure: ConfigureRequest = decode(&request)?;
            let merged = lock(&state).options.merge_config(&configure.config);
            let mut env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            env.sort();
            log(
                &state,
                json!({
                    "event": "Configure",
                    "config": configure.config,
                    "runtime_name": configure.runtime_name,
                    "runtime_version": configure.runtime_version,
                    "registration_timeout": configure.registration_timeout,
                    "request_timeout": configure.request_timeout,
                    "env": env,
                    "pid": std::process::id(),
                }),
            );
            merged.map_err(|e| (UNKNOWN, e))?;
            Ok(stub::configured(lock(&state).options.events))
        }
        "Synchronize" => {
            let sync: SynchronizeRequest = decode(&request)?;
            let pods: Vec<Value> = sync
                .pods
                .iter()
                .map(|p| pod_json(&Some(p.clone())))
                .collect();
            log(
                &state,
                json!({"event": "Synchronize", "pods": pods, "more": sync.more}),
            );
            Ok(SynchronizeResponse { more: sync.more }.encode_to_vec())
        }
        "Shutdown" => {
            log(&state, json!({"event": "Shutdown"}));
            Ok(stub::empty())
        }
        "StateChange" => {
            let change: StateChangeEvent = decode(&request)?;
            let event = crisp::nri::proto::api::Event::try_from(change.event)
                .map(|e| e.as_str_name().to_string())
                .unwrap_or_else(|_| change.event.to_string());
            pod_event(&state, &event, "StateChange", &change.pod).await
        }
        "RunPodSandbox" | "StopPodSandbox" | "RemovePodSandbox" => {
            if lock(&state).options.statechange_only {
                return Err((UNIMPLEMENTED, format!("{method} not implemented")));
            }
            let pod = match method.as_str() {
                "RunPodSandbox" => decode::<RunPodSandboxRequest>(&request)?.pod,
                "StopPodSandbox" => decode::<StopPodSandboxRequest>(&request)?.pod,
                _ => decode::<RemovePodSandboxRequest>(&request)?.pod,
            };
            pod_event(&state, &method, "dedicated", &pod).await
        }
        _ => Err((UNIMPLEMENTED, format!("{method} not implemented"))),
    }
}

/// Logs the event on arrival, then answers as `--on-run` says (other events are accepted).
async fn pod_event(
    state: &Mutex<State>,
    event: &str,
    via: &str,
    pod: &Option<PodSandbox>,
) -> Result<Vec<u8>, (i32, String)> {
    let line = json!({"event": canonical(event), "via": via, "pod": pod_json(pod)});
    log(state, line);
    if canonical(event) != "RunPodSandbox" {
        return Ok(stub::empty());
    }
    let on_run = lock(state).options.on_run.clone();
    if let Some(message) = on_run.strip_prefix("reject:") {
        return Err((UNKNOWN, message.to_string()));
    }
    if on_run == "hang" {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if let Some(file) = on_run.strip_prefix("hold:") {
        while !std::path::Path::new(file).exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        log(state, json!({"event": "released", "pod": pod_json(pod)}));
    }
    Ok(stub::empty())
}

/// StateChange names events as the enum does (`RUN_POD_SANDBOX`); log them as the RPCs.
fn canonical(event: &str) -> &str {
    match event {
        "RUN_POD_SANDBOX" => "RunPodSandbox",
        "STOP_POD_SANDBOX" => "StopPodSandbox",
        "REMOVE_POD_SANDBOX" => "RemovePodSandbox",
        other => other,
    }
}

async fn connect(options: &Options) -> Result<tokio::net::UnixStream, String> {
    if let Some(path) = &options.socket {
        return tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| format!("connect {}: {e}", path.display()));
    }
    if std::env::var("NRI_PLUGIN_SOCKET").as_deref() != Ok("3") {
        return Err("no --socket and NRI_PLUGIN_SOCKET is not 3".into());
    }
    // SAFETY: fd 3 is the socket crisp passed, owned by nothing else in this process.
    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(3) };
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let options = match Options::from_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("nri-test-plugin: {e}");
            return ExitCode::from(2);
        }
    };
    let stream = match connect(&options).await {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("nri-test-plugin: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (name, idx) = (options.name.clone(), options.idx.clone());
    let state = Arc::new(Mutex::new(State { options }));
    let handler_state = state.clone();
    let handler = move |request| handle(handler_state.clone(), request);
    let result = stub::run(stream, &name, &idx, handler).await;
    log(&state, json!({"event": "exit"}));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nri-test-plugin: {e}");
            ExitCode::FAILURE
        }
    }
}
