//! The registry's decisions without root or a socket: plugins served by `stub` over an
//! in-memory duplex stream, each recording what it was sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;

use super::plugin::{Plugin, Runtime, Timeouts};
use super::proto::api::{
    PodSandbox, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
    SynchronizeRequest, SynchronizeResponse,
};
use super::proto::ttrpc::Request;
use super::registry::{HookObserver, Registry};
use super::stub;

struct Quiet;

impl HookObserver for Quiet {
    fn plugins(&self, _connected: usize) {}
    fn hook(&self, _plugin: &str, _event: &'static str, _took: Duration, _failed: bool) {}
}

/// What a test plugin does with RunPodSandbox.
#[derive(Clone, Copy)]
enum OnRun {
    Accept,
    Reject,
    Hang,
}

type Seen = Arc<Mutex<Vec<String>>>;

fn pod(id: &str) -> PodSandbox {
    PodSandbox {
        id: id.to_string(),
        ..Default::default()
    }
}

/// The pod id of a pod event's request.
fn pod_id(request: &Request) -> String {
    let payload = request.payload.as_slice();
    let pod = match request.method.as_str() {
        "RunPodSandbox" => RunPodSandboxRequest::decode(payload)
            .ok()
            .and_then(|r| r.pod),
        "StopPodSandbox" => StopPodSandboxRequest::decode(payload)
            .ok()
            .and_then(|r| r.pod),
        _ => RemovePodSandboxRequest::decode(payload)
            .ok()
            .and_then(|r| r.pod),
    };
    pod.map(|p| p.id).unwrap_or_default()
}

async fn answer(identity: String, on_run: OnRun, seen: Seen, request: Request) -> stub::Answer {
    let line = |what: String| seen.lock().unwrap_or_else(|p| p.into_inner()).push(what);
    match request.method.as_str() {
        "Configure" => Ok(stub::configured(0)),
        "Synchronize" => {
            let sync = SynchronizeRequest::decode(request.payload.as_slice()).unwrap_or_default();
            let ids: Vec<String> = sync.pods.into_iter().map(|p| p.id).collect();
            line(format!("{identity} Synchronize {}", ids.join(",")));
            Ok(SynchronizeResponse { more: sync.more }.encode_to_vec())
        }
        method @ ("RunPodSandbox" | "StopPodSandbox" | "RemovePodSandbox") => {
            line(format!("{identity} {method} {}", pod_id(&request)));
            match (method, on_run) {
                ("RunPodSandbox", OnRun::Reject) => Err((2, "no".to_string())),
                ("RunPodSandbox", OnRun::Hang) => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(stub::empty())
                }
                _ => Ok(stub::empty()),
            }
        }
        _ => Ok(stub::empty()),
    }
}

/// Connects and admits plugin `identity` (`IDX-NAME`), answering as `on_run` says.
async fn join(registry: &Arc<Registry>, identity: &str, on_run: OnRun, seen: &Seen) {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (index, name) = identity.split_once('-').expect("IDX-NAME");
    let (owned, seen) = (identity.to_string(), seen.clone());
    let handler = move |request| answer(owned.clone(), on_run, seen.clone(), request);
    let (name, index) = (name.to_string(), index.to_string());
    tokio::spawn(async move { stub::run(theirs, &name, &index, handler).await });
    let runtime = Runtime {
        name: "crisp".into(),
        version: "test".into(),
    };
    let timeouts = Timeouts {
        registration: Duration::from_secs(5),
        request: Duration::from_millis(200),
    };
    let (plugin, queue) = Plugin::connect(ours, &runtime, timeouts, |_| String::new())
        .await
        .expect("handshake");
    registry
        .admit(plugin, queue, &Quiet)
        .await
        .expect("admitted");
}

fn seen(seen: &Seen) -> Vec<String> {
    seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[tokio::test]
async fn a_rejection_stops_the_chain_in_index_order_and_tells_the_acceptors_remove() {
    let registry = Arc::new(Registry::default());
    let log = Seen::default();
    join(&registry, "20-after", OnRun::Accept, &log).await;
    join(&registry, "10-rejects", OnRun::Reject, &log).await;
    join(&registry, "05-first", OnRun::Accept, &log).await;
    let rejection = registry.run_pod_sandbox(pod("p1"), &Quiet).await;
    let rejection = rejection.expect_err("rejected");
    assert_eq!(rejection.plugin, "10-rejects");
    assert_eq!(rejection.message, "no");
    let events: Vec<String> = seen(&log)
        .into_iter()
        .filter(|l| !l.contains("Synchronize"))
        .collect();
    let expected = [
        "05-first RunPodSandbox p1",
        "10-rejects RunPodSandbox p1",
        "05-first RemovePodSandbox p1",
    ];
    assert_eq!(events, expected);
    // The pod is forgotten: no Stop or Remove follows for it.
    registry.stop_pod_sandbox("p1", &Quiet).await;
    registry.remove_pod_sandbox("p1", &Quiet).await;
    assert_eq!(seen(&log).len(), 3 + expected.len());
}

#[tokio::test]
async fn stop_and_remove_are_sent_once_each() {
    let registry = Arc::new(Registry::default());
    let log = Seen::default();
    join(&registry, "10-one", OnRun::Accept, &log).await;
    registry
        .run_pod_sandbox(pod("p1"), &Quiet)
        .await
        .expect("run");
    for _ in 0..2 {
        registry.stop_pod_sandbox("p1", &Quiet).await;
    }
    for _ in 0..2 {
        registry.remove_pod_sandbox("p1", &Quiet).await;
    }
    let expected = [
        "10-one Synchronize ",
        "10-one RunPodSandbox p1",
        "10-one StopPodSandbox p1",
        "10-one RemovePodSandbox p1",
    ];
    assert_eq!(seen(&log), expected);
}

#[tokio::test]
async fn a_plugin_joining_later_is_synchronized_with_the_known_pods_only() {
    let registry = Arc::new(Registry::default());
    registry.seed([(pod("seeded"), false)]);
    registry
        .run_pod_sandbox(pod("ran"), &Quiet)
        .await
        .expect("run");
    registry
        .run_pod_sandbox(pod("gone"), &Quiet)
        .await
        .expect("run");
    registry.remove_pod_sandbox("gone", &Quiet).await;
    let log = Seen::default();
    join(&registry, "10-late", OnRun::Accept, &log).await;
    assert_eq!(seen(&log), ["10-late Synchronize ran,seeded"]);
}

#[tokio::test]
async fn a_hanging_plugin_is_disconnected_and_the_run_succeeds_without_it() {
    let registry = Arc::new(Registry::default());
    let log = Seen::default();
    join(&registry, "10-hangs", OnRun::Hang, &log).await;
    join(&registry, "20-fine", OnRun::Accept, &log).await;
    registry
        .run_pod_sandbox(pod("p1"), &Quiet)
        .await
        .expect("run");
    let names: Vec<String> = registry.connected().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["fine"]);
    assert!(seen(&log).contains(&"20-fine RunPodSandbox p1".to_string()));
    let hooks: Vec<String> = registry
        .hook_times("p1")
        .into_iter()
        .map(|h| h.plugin)
        .collect();
    assert_eq!(
        hooks,
        ["20-fine"],
        "only the plugin that answered has a hook time"
    );
}
