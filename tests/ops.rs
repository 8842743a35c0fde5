//! Operating crisp: pod network stats, lifecycle events, Prometheus metrics, health, the
//! sandbox's files and OCI spec, sysctls, and systemd readiness — through the real socket,
//! real namespaces and the real CNI plugins.

mod support;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_cri::v1 as cri;
use serde_json::Value;
use support::*;
use tonic::Code;

/// The address the metrics tests serve on: loopback of the test's own node namespace, so every
/// node can use the same port.
const METRICS_ADDR: &str = "127.0.0.1:9325";

fn pod_ip(st: &cri::PodSandboxStatus) -> Ipv4Addr {
    st.network
        .as_ref()
        .expect("network")
        .ip
        .parse()
        .expect("pod ip")
}

/// `crictl statsp [--id ID] [--label k=v] -o json`: one ListPodSandboxStats with that filter.
async fn crictl_statsp(
    node: &Node,
    id: &str,
    labels: &[(&str, &str)],
) -> Vec<cri::PodSandboxStats> {
    let mut c = node.client().await;
    c.version(cri::VersionRequest {
        version: String::new(),
    })
    .await
    .expect("connect-time Version");
    let mut stats = c
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                id: id.to_string(),
                label_selector: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
        })
        .await
        .expect("crictl statsp")
        .into_inner()
        .stats;
    stats.sort_by(|a, b| {
        let id = |s: &cri::PodSandboxStats| s.attributes.as_ref().map(|a| a.id.clone());
        id(a).cmp(&id(b))
    });
    stats
}

fn network_of(s: &cri::PodSandboxStats) -> &cri::NetworkUsage {
    s.linux
        .as_ref()
        .and_then(|l| l.network.as_ref())
        .expect("linux.network set for a READY pod")
}

fn counter(v: &Option<cri::UInt64Value>) -> u64 {
    v.as_ref().expect("counter set").value
}

/// Two pods on the node bridge; 1 MiB goes from one to the other over TCP. The sender's eth0
/// shows at least that much tx, the receiver's at least that much rx, as `crictl statsp`
/// reads them (ListPodSandboxStats with id and label filters), and PodSandboxStats agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statsp_counts_traffic_between_two_pods() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let sender_config = node.pod_config("sender");
    let sender = run_pod(&mut c, sender_config.clone()).await;
    let receiver = run_pod(&mut c, node.pod_config("receiver")).await;
    let receiver_ip = pod_ip(&status(&mut c, &receiver, false).await.0);
    let sender_ns = netns_path(&mut c, &sender).await;
    let receiver_ns = netns_path(&mut c, &receiver).await;
    send_between_pods(&sender_ns, &receiver_ns, receiver_ip);
    statsp_lists_both_pods(&node, &sender, &receiver).await;
    statsp_filters_and_counts_what_was_sent(&node, &sender, &sender_config).await;
    pod_stats_count_what_was_received(&mut c, &receiver).await;
    stats_of_a_stopped_pod_have_no_network(&node, &mut c, &sender).await;
    for id in [&sender, &receiver] {
        remove_pod(&mut c, id).await;
    }
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// What the statsp test sends from one pod to the other.
const STATSP_BYTES: usize = 1 << 20;

/// Sends STATSP_BYTES over TCP from the sender's namespace to the receiver's port 8080.
fn send_between_pods(sender_ns: &Path, receiver_ns: &Path, receiver_ip: Ipv4Addr) {
    let listener = in_netns(receiver_ns, || {
        TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080))).expect("listen")
    });
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        read_all(&mut conn).len()
    });
    in_netns(sender_ns, || {
        let mut conn =
            TcpStream::connect(SocketAddr::from((receiver_ip, 8080))).expect("connect to pod");
        conn.write_all(&vec![7u8; STATSP_BYTES]).expect("send");
    });
    assert_eq!(server.join().expect("server thread"), STATSP_BYTES);
}

/// `crictl statsp`: both READY pods, each with its metadata, labels and eth0 counters.
async fn statsp_lists_both_pods(node: &Node, sender: &str, receiver: &str) {
    let all = crictl_statsp(node, "", &[]).await;
    assert_eq!(all.len(), 2, "both READY pods are listed: {all:?}");
    for s in &all {
        let attrs = s.attributes.as_ref().expect("attributes");
        assert!([sender, receiver].contains(&attrs.id.as_str()));
        let meta = attrs.metadata.as_ref().expect("metadata");
        assert!(["sender", "receiver"].contains(&meta.name.as_str()));
        assert_eq!(attrs.labels.get("app"), Some(&meta.name));
        let net = network_of(s);
        assert!(net.timestamp > 0, "timestamp in ns");
        let eth0 = net.default_interface.as_ref().expect("default_interface");
        assert_eq!(eth0.name, "eth0");
        assert!(net.interfaces.iter().any(|i| i.name == "eth0"));
        assert!(net.interfaces.iter().all(|i| i.name != "lo"));
        assert_eq!(counter(&eth0.rx_errors), 0);
        assert_eq!(counter(&eth0.tx_errors), 0);
    }
}

/// `crictl statsp --id <13-char prefix>` and `--label app=sender`; eth0 counted what the
/// sender sent.
async fn statsp_filters_and_counts_what_was_sent(
    node: &Node,
    sender: &str,
    sender_config: &cri::PodSandboxConfig,
) {
    let by_id = crictl_statsp(node, &sender[..13], &[]).await;
    assert_eq!(by_id.len(), 1);
    let sent = by_id[0].clone();
    assert_eq!(
        sent.attributes.as_ref().expect("attributes").annotations,
        sender_config.annotations
    );
    let by_label = crictl_statsp(node, "", &[("app", "sender")]).await;
    assert_eq!(by_label.len(), 1);
    assert_eq!(
        by_label[0].attributes.as_ref().expect("attrs").id,
        sender,
        "label filter"
    );
    let tx = counter(
        &network_of(&sent)
            .default_interface
            .as_ref()
            .expect("eth0")
            .tx_bytes,
    );
    assert!(
        tx >= STATSP_BYTES as u64,
        "sender eth0 tx {tx} < {STATSP_BYTES}"
    );
}

/// PodSandboxStats of the receiver: eth0 counted what it received.
async fn pod_stats_count_what_was_received(c: &mut Client, receiver: &str) {
    let got = c
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: receiver.to_string(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .expect("stats");
    let rx = counter(
        &network_of(&got)
            .default_interface
            .as_ref()
            .expect("eth0")
            .rx_bytes,
    );
    assert!(
        rx >= STATSP_BYTES as u64,
        "receiver eth0 rx {rx} < {STATSP_BYTES}"
    );
}

/// Stopped: no namespace, so no network usage, and not listed; an unknown id is NotFound.
async fn stats_of_a_stopped_pod_have_no_network(node: &Node, c: &mut Client, sender: &str) {
    stop_pod(c, sender).await;
    let stopped = c
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: sender.to_string(),
        })
        .await
        .expect("PodSandboxStats of a stopped pod")
        .into_inner()
        .stats
        .expect("stats");
    assert!(stopped.linux.as_ref().expect("linux").network.is_none());
    assert_eq!(crictl_statsp(node, "", &[]).await.len(), 1);
    let unknown = c
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: "f".repeat(64),
        })
        .await
        .expect_err("unknown id");
    assert_eq!(unknown.code(), Code::NotFound);
}

/// Opens GetContainerEvents as kubelet's evented PLEG does.
async fn subscribe(node: &Node) -> tonic::Streaming<cri::ContainerEventResponse> {
    node.client()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner()
}

/// Run, Stop, Remove give CREATED, STARTED, STOPPED, DELETED with the sandbox id as container
/// id and the sandbox status with metadata; a subscriber that never reads and one that went
/// away block nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_the_sandbox_lifecycle() {
    let mut node = Node::start().await;
    let mut c = node.client().await;
    let mut events = subscribe(&node).await;
    let _never_read = subscribe(&node).await;
    drop(subscribe(&node).await);

    let config = node.pod_config("evented");
    let id = run_pod(&mut c, config.clone()).await;
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;

    use cri::ContainerEventType as T;
    let want = [
        (T::ContainerCreatedEvent, PodSandboxState::SandboxReady),
        (T::ContainerStartedEvent, PodSandboxState::SandboxReady),
        (T::ContainerStoppedEvent, PodSandboxState::SandboxNotready),
        (T::ContainerDeletedEvent, PodSandboxState::SandboxNotready),
    ];
    let mut last_at = 0;
    for (kind, state) in want {
        let e = next_event(&mut events).await;
        assert_eq!(e.container_event_type, kind as i32, "{e:?}");
        assert_eq!(e.container_id, id);
        assert!(e.created_at >= last_at && e.created_at > 0, "ns, in order");
        last_at = e.created_at;
        let st = e.pod_sandbox_status.expect("pod_sandbox_status");
        assert_eq!(
            st.metadata, config.metadata,
            "kubelet drops events without it"
        );
        assert_eq!(st.state, state as i32, "{kind:?}");
    }

    // Many lifecycles with a subscriber that never reads: none of them waits for it.
    for n in 0..8 {
        let id = run_pod(&mut c, node.pod_config(&format!("busy-{n}"))).await;
        remove_pod(&mut c, &id).await;
    }
    let e = next_event(&mut events).await;
    assert_eq!(e.container_event_type, T::ContainerCreatedEvent as i32);
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
    // Open event streams (kubelet keeps one for good) do not hold SIGTERM back.
    node.stop().await;
    drop(events);
}

/// `/metrics` over HTTP: RPC latency by method and code, plugin exec latency by plugin and
/// command, sandboxes by state, recovery repairs; verbose status shows each plugin's timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_and_count_what_happened() {
    let node = Node::start_with_env(Conf::Default, &["--metrics-addr", METRICS_ADDR], &[]).await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("measured")).await;
    let kept = run_pod(&mut c, node.pod_config("kept")).await;
    plugin_timings_in_order_then_stopped(&mut c, &id).await;
    let missing = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: "e".repeat(64),
            verbose: false,
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
    let url = format!("http://{METRICS_ADDR}/metrics");
    metrics_count_two_runs_a_stop_and_a_not_found(&curl_in_node(&node, &url));
    for id in [&id, &kept] {
        remove_pod(&mut c, id).await;
    }
    let text = curl_in_node(&node, &url);
    assert_eq!(
        sample(&text, "crisp_sandboxes{state=\"ready\"}"),
        Some(0.0),
        "{text}"
    );
}

/// Verbose status times each plugin of ADD (in order, all OK) and, once `id` is stopped, of
/// DEL (in reverse).
async fn plugin_timings_in_order_then_stopped(c: &mut Client, id: &str) {
    let info = verbose_info(c, id).await;
    let add = &info["cniPluginTimings"]["add"];
    let plugins: Vec<&str> = add["plugins"]
        .as_array()
        .expect("add.plugins")
        .iter()
        .map(|p| p["plugin"].as_str().expect("plugin"))
        .collect();
    assert_eq!(plugins, ["bridge", "portmap"], "{add}");
    assert!(add["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .all(|p| p["outcome"] == "ok" && p["millis"].as_f64().is_some()));
    stop_pod(c, id).await;
    let del = verbose_info(c, id).await["cniPluginTimings"]["del"].clone();
    let del_order: Vec<&str> = del["plugins"]
        .as_array()
        .expect("del.plugins")
        .iter()
        .map(|p| p["plugin"].as_str().expect("plugin"))
        .collect();
    assert_eq!(del_order, ["portmap", "bridge"], "DEL runs in reverse");
}

/// The /metrics text after two Runs, one Stop and one NotFound Status.
fn metrics_count_two_runs_a_stop_and_a_not_found(text: &str) {
    let runs = sample(
        text,
        "crisp_rpc_duration_seconds_count{method=\"RunPodSandbox\",code=\"OK\"}",
    );
    assert_eq!(runs, Some(2.0), "{text}");
    assert!(
        text.contains(
            "crisp_rpc_duration_seconds_bucket{method=\"RunPodSandbox\",code=\"OK\",le=\"0.5\"}"
        ),
        "a histogram, not a summary: {text}"
    );
    assert_eq!(
        sample(
            text,
            "crisp_rpc_duration_seconds_count{method=\"PodSandboxStatus\",code=\"NOT_FOUND\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            text,
            "crisp_cni_plugin_duration_seconds_count{plugin=\"bridge\",command=\"ADD\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            text,
            "crisp_cni_plugin_duration_seconds_count{plugin=\"portmap\",command=\"DEL\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(text, "crisp_sandboxes{state=\"ready\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(text, "crisp_sandboxes{state=\"not_ready\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("crisp_recovery_repairs_total{kind=\"rolled_back\"} 0"),
        "{text}"
    );
    assert!(text.contains("# TYPE crisp_rpc_duration_seconds histogram"));
}

/// A plugin that fails ADD with CNI error code 11 shows as a failure by plugin, command and
/// code; its timing shows as `failed` in the daemon's metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_failures_are_counted_by_cni_code() {
    let node = Node::start_with_env(
        Conf::After(vec![stand_in("fail-add")]),
        &["--metrics-addr", METRICS_ADDR],
        &[],
    )
    .await;
    let mut c = node.client().await;
    let err = c
        .run_pod_sandbox(run_req(node.pod_config("doomed")))
        .await
        .expect_err("ADD fails");
    assert!(err.message().contains("fail-add"), "{}", err.message());
    let text = curl_in_node(&node, &format!("http://{METRICS_ADDR}/metrics"));
    assert_eq!(
        sample(
            &text,
            "crisp_cni_plugin_failures_total{plugin=\"fail-add\",command=\"ADD\",code=\"11\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let code = format!("{:?}", err.code());
    assert!(
        text.lines().any(|l| l
            .starts_with("crisp_rpc_duration_seconds_count{method=\"RunPodSandbox\",code=")
            && !l.contains("code=\"OK\"")),
        "{code}: {text}"
    );
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// grpcurl's health check answers SERVING for the whole server and for each CRI service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_with_grpcurl() {
    let node = Node::start().await;
    for service in ["", "runtime.v1.RuntimeService", "runtime.v1.ImageService"] {
        let body = format!("{{\"service\":\"{service}\"}}");
        let out = run(Command::new("grpcurl").args([
            "-plaintext",
            "-unix",
            "-d",
            &body,
            node.socket.to_str().expect("utf-8 path"),
            "grpc.health.v1.Health/Check",
        ]));
        let v: Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(v["status"], "SERVING", "{service}: {out}");
    }
}

fn files_dir(node: &Node, id: &str) -> PathBuf {
    node.root.join("sandboxes").join(id)
}

/// Under `<root>/sandboxes/<id>/`: hostname, hosts (with the pod IP), resolv.conf from
/// dns_config and config.json, an OCI spec naming the pinned netns, the hostname, the sysctls,
/// the cgroup parent and the sandbox annotations; verbose status shows the same spec. The
/// sysctls are set inside the pod's namespace. Remove deletes the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_files_runtime_spec_and_sysctls() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let mut config = node.pod_config("files");
    let linux = config.linux.as_mut().expect("linux");
    linux
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "80".into());
    linux
        .sysctls
        .insert("net/ipv4/conf/eth0/accept_local".into(), "1".into());
    let id = run_pod(&mut c, config.clone()).await;
    let (st, _) = status(&mut c, &id, false).await;
    let ip = pod_ip(&st);
    let dir = files_dir(&node, &id);
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
    };
    assert_eq!(read("hostname"), "files\n");
    assert!(
        read("hosts").contains(&format!("{ip}\tfiles")),
        "{}",
        read("hosts")
    );
    let resolv = read("resolv.conf");
    assert!(resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local\n"));
    assert!(resolv.contains("nameserver 10.96.0.10\n"));
    assert!(resolv.contains("options ndots:5\n"));

    let spec: Value = serde_json::from_str(&read("config.json")).expect("config.json is JSON");
    let netns = netns_path(&mut c, &id).await;
    let namespaces = spec["linux"]["namespaces"].as_array().expect("namespaces");
    let net = namespaces
        .iter()
        .find(|n| n["type"] == "network")
        .expect("a network namespace");
    assert_eq!(net["path"], netns.display().to_string());
    assert!(namespaces.iter().any(|n| n["type"] == "uts"));
    assert_eq!(spec["hostname"], "files");
    assert_eq!(
        spec["linux"]["sysctl"]["net.ipv4.ip_unprivileged_port_start"],
        "80"
    );
    let uid = uid_of("files");
    assert_eq!(
        spec["linux"]["cgroupsPath"],
        format!("/kubepods/besteffort/pod{uid}/crisp-{id}")
    );
    let ann = &spec["annotations"];
    assert_eq!(ann["io.kubernetes.cri.sandbox-id"], id);
    assert_eq!(ann["io.kubernetes.cri.sandbox-name"], "files");
    assert_eq!(ann["io.kubernetes.cri.sandbox-namespace"], "default");
    assert_eq!(ann["io.kubernetes.cri.sandbox-uid"], uid);
    assert_eq!(ann["io.kubernetes.cri.container-type"], "sandbox");
    let mounted: Vec<&str> = spec["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["destination"].as_str())
        .collect();
    for target in ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"] {
        assert!(
            mounted.contains(&target),
            "{target} not mounted: {mounted:?}"
        );
    }
    let info = verbose_info(&mut c, &id).await;
    assert_eq!(
        info["runtimeSpec"], spec,
        "verbose status shows the written spec"
    );

    let (port_start, accept_local) = in_netns(&netns, || {
        (
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
                .expect("read sysctl"),
            std::fs::read_to_string("/proc/sys/net/ipv4/conf/eth0/accept_local")
                .expect("read sysctl"),
        )
    });
    assert_eq!(port_start.trim(), "80", "set inside the pod's namespace");
    assert_eq!(accept_local.trim(), "1");

    stop_pod(&mut c, &id).await;
    assert!(dir.exists(), "files stay until Remove");
    remove_pod(&mut c, &id).await;
    assert!(!dir.exists(), "Remove deletes {}", dir.display());
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// Sysctls crisp cannot honour: InvalidArgument naming the key, before or after the namespace
/// exists; a failed Run leaves no files, record, namespace or IP behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sysctls_are_refused_naming_the_key() {
    let node = Node::start().await;
    let mut c = node.client().await;
    for key in [
        "kernel.shm_rmid_forced",
        "net/../../kernel/core_pattern",
        // Well-formed, but no such sysctl in a pod's namespace: the kernel says so.
        "net.ipv4.no_such_sysctl",
    ] {
        let mut config = node.pod_config("sysctl");
        config
            .linux
            .as_mut()
            .expect("linux")
            .sysctls
            .insert(key.into(), "1".into());
        let err = c
            .run_pod_sandbox(run_req(config))
            .await
            .expect_err("refused");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{key}: {}",
            err.message()
        );
        assert!(err.message().contains(key), "{key}: {}", err.message());
        assert!(node.leftovers().is_empty(), "{key}: {:?}", node.leftovers());
        let dirs: Vec<_> = std::fs::read_dir(node.root.join("sandboxes"))
            .expect("sandboxes dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .collect();
        assert!(dirs.is_empty(), "{key}: files left: {dirs:?}");
    }
}

/// With NOTIFY_SOCKET set, crisp sends READY=1 once its socket serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_systemd_when_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let node = Node::start_with_env(
        Conf::Default,
        &[],
        &[("NOTIFY_SOCKET", path.to_str().expect("utf-8"))],
    )
    .await;
    let mut buf = [0u8; 512];
    let n = listener.recv(&mut buf).expect("READY=1 datagram");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.lines().any(|l| l == "READY=1"), "{text}");
    assert!(node.socket.exists());
}
