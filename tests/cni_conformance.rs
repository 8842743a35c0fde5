//! CNI conformance: what exactly each plugin receives (environment and stdin) for ADD, CHECK,
//! DEL, STATUS, GC and VERSION, with recording stand-in plugins (tests/fixtures/cni-recorder)
//! that append every call to a file whose path is baked into the installed script. Also the
//! faults real plugins cannot produce on demand: a version mismatch, error JSON, garbage, a
//! hang, a STATUS error.
//!
//! Needs root (namespaces); runs the real crisp binary in its own node network namespace.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::{json, Map, Value};
use support::*;
use tonic::transport::Channel;

const RECORDERS: &[&str] = &["rec-031", "rec-040", "rec-110", "rec-old", "rec-hang"];
const WAIT: Duration = Duration::from_secs(20);

/// Installs the recorders into the node's stand-in bin dir; returns the record file.
fn install_recorders(node: &Node) -> PathBuf {
    let record = node.dir.join("calls.jsonl");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cni-recorder");
    let body = fs::read_to_string(src)
        .expect("read recorder fixture")
        .replace("@RECORD@", record.to_str().expect("utf-8 path"));
    for name in RECORDERS {
        let dst = node.bin_dir.join(name);
        fs::write(&dst, &body).expect("install recorder");
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    record
}

#[derive(Debug, Clone)]
struct Call {
    plugin: String,
    env: BTreeMap<String, String>,
    stdin: Value,
}

impl Call {
    fn command(&self) -> &str {
        self.env.get("CNI_COMMAND").map_or("", String::as_str)
    }
}

fn calls(record: &Path) -> Vec<Call> {
    let text = fs::read_to_string(record).unwrap_or_default();
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("record line is not JSON ({e}): {line}"));
            Call {
                plugin: v["plugin"].as_str().unwrap_or_default().to_string(),
                env: v["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|kv| kv.as_str()?.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                stdin: v["stdin"].clone(),
            }
        })
        .collect()
}

fn calls_of(record: &Path, command: &str) -> Vec<Call> {
    calls(record)
        .into_iter()
        .filter(|c| c.command() == command)
        .collect()
}

fn plugins_of(calls: &[Call]) -> Vec<&str> {
    calls.iter().map(|c| c.plugin.as_str()).collect()
}

/// The exact environment a plugin must see: the CNI variables and PATH, nothing else.
fn env(
    node: &Node,
    command: &str,
    id: &str,
    netns: &str,
    ifname: &str,
    args: &str,
) -> BTreeMap<String, String> {
    [
        ("CNI_ARGS", args),
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", ifname),
        ("CNI_NETNS", netns),
        ("CNI_PATH", &node.cni_bin_dirs()),
        ("PATH", &std::env::var("PATH").expect("PATH set")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn cni_args(name: &str, id: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};\
         K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID={}",
        uid_of(name)
    )
}

/// A plugin's conf as the plugin must receive it: its own keys plus `extra`.
fn with(plugin: &Value, extra: Value) -> Value {
    let mut out: Map<String, Value> = plugin.as_object().expect("object").clone();
    for (k, v) in extra.as_object().expect("object") {
        out.insert(k.clone(), v.clone());
    }
    Value::Object(out)
}

/// A node started with `args`, the recording stand-ins installed and `plugins` (a list of
/// `version`) loaded as `10-rec.conflist`: the node, the recorders' call log, a client.
async fn recording_node(
    args: &[&str],
    version: &str,
    plugins: &[Value],
) -> (Node, PathBuf, RuntimeServiceClient<Channel>) {
    let node = Node::start_with_args(Conf::Empty, args).await;
    let record = install_recorders(&node);
    let mut client = node.client().await;
    use_conf(
        &node,
        &mut client,
        "10-rec.conflist",
        &conflist(version, NETWORK, plugins),
    )
    .await;
    (node, record, client)
}

async fn runtime_status(client: &mut RuntimeServiceClient<Channel>) -> cri::StatusResponse {
    client
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner()
}

fn network_ready(st: &cri::StatusResponse) -> (bool, String) {
    let c = st
        .status
        .as_ref()
        .expect("status")
        .conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady condition");
    (c.status, c.message.clone())
}

/// Writes a conf file and waits until crisp has it in effect (the watch is asynchronous).
async fn use_conf(node: &Node, client: &mut RuntimeServiceClient<Channel>, file: &str, body: &str) {
    node.write_conf(file, body);
    let want: Value = serde_json::from_str(body).expect("conf json");
    let ok = eventually(WAIT, || {
        let mut client = client.clone();
        let want = want.clone();
        async move {
            let st = runtime_status(&mut client).await;
            let net: Value = serde_json::from_str(st.info.get("network")?).ok()?;
            let loaded = &net["loaded"];
            let plugins: Vec<Value> = want["plugins"]
                .as_array()?
                .iter()
                .map(|p| p["type"].clone())
                .collect();
            (loaded["name"] == want["name"]
                && loaded["cniVersion"] == want["cniVersion"]
                && loaded["plugins"] == Value::Array(plugins))
            .then_some(())
        }
    })
    .await;
    assert!(ok.is_some(), "crisp did not pick up {file}");
}

async fn update_pod_cidr(client: &mut RuntimeServiceClient<Channel>, cidr: &str) {
    client
        .update_runtime_config(cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig {
                    pod_cidr: cidr.to_string(),
                }),
            }),
        })
        .await
        .expect("UpdateRuntimeConfig");
}

/// A pod config with a host port and bandwidth annotations.
fn rich_pod(node: &Node, name: &str) -> cri::PodSandboxConfig {
    let mut config = node.pod_config(name);
    config.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 80,
        host_port: 8080,
        host_ip: String::new(),
    }];
    config
        .annotations
        .insert("kubernetes.io/ingress-bandwidth".into(), "10M".into());
    config
        .annotations
        .insert("kubernetes.io/egress-bandwidth".into(), "1Gi".into());
    config
}

fn result_json(version: &str, netns: &str, ip: &str, v4_field: bool) -> Value {
    let mut ipc = json!({"address": ip, "gateway": "10.88.0.1", "interface": 0});
    if v4_field {
        ipc["version"] = json!("4");
    }
    json!({
        "cniVersion": version,
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:58:00:05", "sandbox": netns}],
        "ips": [ipc],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}],
        "dns": {"nameservers": ["10.88.0.10"], "search": ["example.test"]},
    })
}

#[tokio::test]
async fn chain_add_check_status_gc_del_get_exactly_the_spec_env_and_stdin() {
    let (mut node, mut client, chain) = recorded_chain_pod().await;
    versions_asked_first(&node, &chain);
    adds_in_order_with_prev_results(&node, &chain, &mut client).await;
    checks_in_background_rounds(&node, &chain, &mut client).await;
    status_in_background(&node, &chain, &mut client).await;
    status_error_is_network_not_ready(&chain, &mut client).await;
    let gcs_before = calls_of(&chain.record, "GC").len();
    drop(client);
    node.restart().await;
    gc_after_restart_lists_the_live_pod(&node, &chain, gcs_before).await;
    let mut client = node.client().await;
    stop_pod(&mut client, &chain.id).await;
    dels_in_reverse_from_the_cache(&node, &chain);
    remove_pod(&mut client, &chain.id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// One pod on a chain of three recorders (CNI 0.3.1, 0.4.0, 1.1.0) and what each must be sent.
struct RecordedChain {
    record: PathBuf,
    id: String,
    netns: String,
    args: String,
    /// The list's name and version, as every plugin's conf carries them.
    base: Value,
    /// The plugins' confs, in list order.
    plugins: [Value; 3],
    /// The runtimeConfig each plugin gets: only the capabilities it declares.
    runtime_confs: [Value; 3],
    /// The chain's result, cached and sent as prevResult to CHECK and DEL.
    final_result: Value,
}

/// A node whose checker runs every second, the three recorders loaded, one rich pod run.
async fn recorded_chain_pod() -> (Node, RuntimeServiceClient<Channel>, RecordedChain) {
    // CHECK runs in the background: every second here, so the test sees rounds.
    let node = Node::start_with_args(Conf::Empty, &["--cni-check-interval", "1"]).await;
    let record = install_recorders(&node);
    let mut client = node.client().await;
    update_pod_cidr(&mut client, "10.88.0.0/16").await;
    let p031 = json!({"type": "rec-031", "marker": "first",
        "capabilities": {"portMappings": true, "dns": false}});
    let p040 = json!({"type": "rec-040",
        "capabilities": {"bandwidth": true, "ipRanges": true,
            "io.kubernetes.cri.pod-annotations": true}});
    let p110 = json!({"type": "rec-110",
        "capabilities": {"dns": true, "cgroupPath": true, "notOffered": true}});
    let plugins = [p031, p040, p110];
    use_conf(
        &node,
        &mut client,
        "10-rec.conflist",
        &conflist("1.1.0", NETWORK, &plugins),
    )
    .await;
    let config = rich_pod(&node, "chain");
    let annotations: BTreeMap<String, String> = config.annotations.clone().into_iter().collect();
    let id = run_pod(&mut client, config).await;
    let netns = netns_path(&mut client, &id).await.display().to_string();
    let chain = RecordedChain {
        record,
        args: cni_args("chain", &id),
        base: json!({"name": NETWORK, "cniVersion": "1.1.0"}),
        plugins,
        runtime_confs: rich_pod_runtime_confs(annotations),
        final_result: result_json("1.1.0", &netns, "10.88.0.7/24", false),
        id,
        netns,
    };
    (node, client, chain)
}

/// What `rich_pod` asks of each recorder's declared capabilities.
fn rich_pod_runtime_confs(annotations: BTreeMap<String, String>) -> [Value; 3] {
    let rc031 = json!({"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]});
    let rc040 = json!({
        "bandwidth": {"ingressRate": 10_000_000u64, "ingressBurst": u32::MAX,
                      "egressRate": 1u64 << 30, "egressBurst": u32::MAX},
        "ipRanges": [[{"subnet": "10.88.0.0/16"}]],
        "io.kubernetes.cri.pod-annotations": annotations,
    });
    let rc110 = json!({
        "dns": {"servers": ["10.96.0.10"],
                "searches": ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
                "options": ["ndots:5"]},
        "cgroupPath": "/kubepods/besteffort/poduid-chain",
    });
    [rc031, rc040, rc110]
}

/// VERSION: asked before first use, with libcni's dummy values.
fn versions_asked_first(node: &Node, chain: &RecordedChain) {
    let versions = calls_of(&chain.record, "VERSION");
    for plugin in ["rec-031", "rec-040", "rec-110"] {
        let call = versions
            .iter()
            .find(|c| c.plugin == plugin)
            .unwrap_or_else(|| panic!("{plugin} was never asked VERSION"));
        assert_eq!(call.env, env(node, "VERSION", "", "dummy", "dummy", ""));
        assert_eq!(call.stdin, json!({"cniVersion": "1.1.0"}));
    }
}

/// ADD: in order; each gets its conf, the list's name and version, only the capabilities
/// it declares, and from the second on the previous result converted to 1.1.0.
async fn adds_in_order_with_prev_results(
    node: &Node,
    chain: &RecordedChain,
    client: &mut RuntimeServiceClient<Channel>,
) {
    let RecordedChain {
        record,
        id,
        netns,
        args,
        base,
        ..
    } = chain;
    let [p031, p040, p110] = &chain.plugins;
    let [rc031, rc040, rc110] = &chain.runtime_confs;
    let adds = calls_of(record, "ADD");
    assert_eq!(plugins_of(&adds), ["rec-031", "rec-040", "rec-110"]);
    for call in &adds {
        assert_eq!(
            call.env,
            env(node, "ADD", id, netns, "eth0", args),
            "{}",
            call.plugin
        );
    }
    assert_eq!(
        adds[0].stdin,
        with(p031, with(base, json!({"runtimeConfig": rc031})))
    );
    assert_eq!(
        adds[1].stdin,
        with(
            p040,
            with(
                base,
                json!({"runtimeConfig": rc040,
            "prevResult": result_json("1.1.0", netns, "10.88.0.5/24", false)})
            )
        )
    );
    assert_eq!(
        adds[2].stdin,
        with(
            p110,
            with(
                base,
                json!({"runtimeConfig": rc110,
            "prevResult": result_json("1.1.0", netns, "10.88.0.6/24", false)})
            )
        )
    );
    let (st, _) = status(client, id, false).await;
    assert_eq!(st.network.expect("network").ip, "10.88.0.7");
}

/// CHECK (the background checker's rounds, never a status call): in order, the cached
/// result as prevResult; verbose status shows the outcome.
async fn checks_in_background_rounds(
    node: &Node,
    chain: &RecordedChain,
    client: &mut RuntimeServiceClient<Channel>,
) {
    let id = &chain.id;
    let info = eventually(WAIT, || {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            let info = verbose_info(&mut client, &id).await;
            (info["networkCheck"]["outcome"] == "passed").then_some(info)
        }
    })
    .await;
    let Some(info) = info else {
        let last = verbose_info(client, id).await;
        panic!("no background CHECK passed: {last}\n{}", node.log());
    };
    assert!(
        info["networkCheck"]["at"].as_i64().is_some_and(|t| t > 0),
        "{info}"
    );
    let checks = calls_of(&chain.record, "CHECK");
    assert_eq!(plugins_of(&checks[..3]), ["rec-031", "rec-040", "rec-110"]);
    assert_sent_the_cached_result(node, chain, "CHECK", &checks[..3], [0, 1, 2]);
}

/// Each of `calls` (for plugins `order` of the list) got the attachment's env, its conf,
/// its runtimeConfig and the cached result as prevResult.
fn assert_sent_the_cached_result(
    node: &Node,
    chain: &RecordedChain,
    command: &str,
    calls: &[Call],
    order: [usize; 3],
) {
    for (call, k) in calls.iter().zip(order) {
        let (plugin, rc) = (&chain.plugins[k], &chain.runtime_confs[k]);
        assert_eq!(
            call.env,
            env(node, command, &chain.id, &chain.netns, "eth0", &chain.args)
        );
        assert_eq!(
            call.stdin,
            with(
                plugin,
                with(
                    &chain.base,
                    json!({"runtimeConfig": rc, "prevResult": chain.final_result})
                )
            )
        );
    }
}

/// STATUS: in the background, no attachment variables, no runtimeConfig.
async fn status_in_background(
    node: &Node,
    chain: &RecordedChain,
    client: &mut RuntimeServiceClient<Channel>,
) {
    let asked = eventually(WAIT, || async {
        let st = calls_of(&chain.record, "STATUS");
        (plugins_of(&st).len() >= 3).then_some(st)
    })
    .await
    .expect("STATUS asked");
    for (call, plugin) in asked.iter().take(3).zip(&chain.plugins) {
        assert_eq!(call.env, env(node, "STATUS", "", "", "", ""));
        assert_eq!(call.stdin, with(plugin, chain.base.clone()));
    }
    assert!(network_ready(&runtime_status(client).await).0);
}

/// A STATUS error (code 50) makes NetworkReady false with the plugin's message; it comes
/// back once the plugin answers again.
async fn status_error_is_network_not_ready(
    chain: &RecordedChain,
    client: &mut RuntimeServiceClient<Channel>,
) {
    let marker = format!("{}.status50", chain.record.display());
    fs::write(&marker, "").expect("marker");
    let message = eventually(WAIT, || {
        let mut client = client.clone();
        async move {
            let (ready, message) = network_ready(&runtime_status(&mut client).await);
            // A round already under way when the marker appeared may fail at a later plugin.
            (!ready && message.contains("plugin rec-031 ")).then_some(message)
        }
    })
    .await
    .expect("NetworkReady turns false");
    for part in [
        "rec-031",
        "STATUS",
        "code 50",
        "stand-in backend unavailable",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    fs::remove_file(&marker).expect("rm marker");
    let ready = eventually(WAIT, || {
        let mut client = client.clone();
        async move {
            network_ready(&runtime_status(&mut client).await)
                .0
                .then_some(())
        }
    })
    .await;
    assert!(ready.is_some(), "NetworkReady back to true");
}

/// GC after a restart: every plugin, the live attachment listed, nothing torn down.
async fn gc_after_restart_lists_the_live_pod(node: &Node, chain: &RecordedChain, before: usize) {
    let gcs = eventually(WAIT, || async {
        let gc = calls_of(&chain.record, "GC");
        (gc.len() >= before + 3).then_some(gc)
    })
    .await
    .expect("GC after start-up");
    let valid = json!([{"containerID": chain.id, "ifname": "eth0"}]);
    for (call, plugin) in gcs[before..].iter().zip(&chain.plugins) {
        assert_eq!(call.env, env(node, "GC", "", "", "", ""));
        assert_eq!(
            call.stdin,
            with(
                plugin,
                with(
                    &chain.base,
                    json!({"cni.dev/valid-attachments": valid, "cni.dev/attachments": valid})
                )
            )
        );
    }
    assert!(
        calls_of(&chain.record, "DEL").is_empty(),
        "GC tore down a live pod"
    );
}

/// DEL: reverse order, cached result as prevResult, cached capability args.
fn dels_in_reverse_from_the_cache(node: &Node, chain: &RecordedChain) {
    let dels = calls_of(&chain.record, "DEL");
    assert_eq!(plugins_of(&dels), ["rec-110", "rec-040", "rec-031"]);
    assert_sent_the_cached_result(node, chain, "DEL", &dels, [2, 1, 0]);
}

#[tokio::test]
async fn teardown_uses_the_cached_config_after_the_conf_dir_changed_and_a_restart() {
    let mut node = Node::start_with(Conf::Empty).await;
    let record = install_recorders(&node);
    let mut client = node.client().await;
    // A 0.4.0 list: the 1.1.0 answer of rec-110 reaches rec-031 converted down.
    let a110 = json!({"type": "rec-110", "conf": "A"});
    let a031 = json!({"type": "rec-031", "conf": "A"});
    use_conf(
        &node,
        &mut client,
        "10-a.conflist",
        &conflist("0.4.0", NETWORK, &[a110.clone(), a031.clone()]),
    )
    .await;
    let id = run_pod(&mut client, node.pod_config("cached")).await;
    let netns = netns_path(&mut client, &id).await.display().to_string();
    let adds = calls_of(&record, "ADD");
    assert_eq!(plugins_of(&adds), ["rec-110", "rec-031"]);
    let base = json!({"name": NETWORK, "cniVersion": "0.4.0"});
    assert_eq!(
        adds[1].stdin,
        with(
            &a031,
            with(
                &base,
                json!({"prevResult": result_json("0.4.0", &netns, "10.88.0.7/24", true)})
            )
        )
    );

    // The operator replaces the network; crisp restarts.
    fs::remove_file(node.conf_dir.join("10-a.conflist")).expect("rm conf");
    let b040 = json!({"type": "rec-040", "conf": "B"});
    use_conf(
        &node,
        &mut client,
        "20-b.conflist",
        &conflist("1.1.0", "other-net", &[b040]),
    )
    .await;
    drop(client);
    node.restart().await;
    let mut client = node.client().await;
    // Start-up GC of the new network must not touch the pod of the old one.
    let gc = eventually(WAIT, || async {
        let gc = calls_of(&record, "GC");
        (!gc.is_empty()).then_some(gc)
    })
    .await
    .expect("GC of other-net");
    assert_eq!(gc[0].stdin["cni.dev/valid-attachments"], json!([]));
    assert!(calls_of(&record, "DEL").is_empty());

    stop_pod(&mut client, &id).await;
    let dels = calls_of(&record, "DEL");
    assert_eq!(
        plugins_of(&dels),
        ["rec-031", "rec-110"],
        "torn down with the cached list"
    );
    let prev = result_json("0.4.0", &netns, "10.88.0.5/24", true);
    assert_eq!(
        dels[0].stdin,
        with(&a031, with(&base, json!({"prevResult": prev})))
    );
    assert_eq!(
        dels[1].stdin,
        with(&a110, with(&base, json!({"prevResult": prev})))
    );
    assert_eq!(
        dels[0].env,
        env(&node, "DEL", &id, &netns, "eth0", &cni_args("cached", &id))
    );
    remove_pod(&mut client, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

#[tokio::test]
async fn cache_entries_of_unknown_sandboxes_are_torn_down_at_start() {
    let p040 = json!({"type": "rec-040"});
    let p110 = json!({"type": "rec-110"});
    let (mut node, record, mut client) =
        recording_node(&[], "1.1.0", &[p040.clone(), p110.clone()]).await;
    let kept = run_pod(&mut client, node.pod_config("kept")).await;
    let lost = run_pod(&mut client, node.pod_config("lost")).await;
    let base = json!({"name": NETWORK, "cniVersion": "1.1.0"});

    // crisp loses the record of one sandbox (its cache entry stays).
    drop(client);
    node.stop().await;
    fs::remove_file(node.root.join("sandboxes").join(format!("{lost}.json"))).expect("rm record");
    node.start_daemon().await;

    let dels = eventually(WAIT, || async {
        let d = calls_of(&record, "DEL");
        (d.len() >= 2).then_some(d)
    })
    .await
    .expect("stale attachment torn down");
    assert_eq!(plugins_of(&dels), ["rec-110", "rec-040"]);
    // Its namespace pin is kept for the DEL (so the plugins can clean up inside it), then
    // removed as an orphan.
    let pin = node.netns_dir.join(format!("crisp-{lost}"));
    assert_eq!(
        dels[0].env,
        env(
            &node,
            "DEL",
            &lost,
            &pin.to_string_lossy(),
            "eth0",
            &cni_args("lost", &lost)
        )
    );
    assert!(
        eventually(WAIT, || async { (!pin.exists()).then_some(()) })
            .await
            .is_some(),
        "the orphan pin is removed after the DEL"
    );
    assert_eq!(
        dels[0].stdin["prevResult"]["ips"][0]["address"],
        "10.88.0.7/24"
    );
    let gc = eventually(WAIT, || async {
        let gc = calls_of(&record, "GC");
        (gc.len() >= 2).then_some(gc)
    })
    .await
    .expect("GC");
    let valid = json!([{"containerID": kept, "ifname": "eth0"}]);
    assert_eq!(
        gc[0].stdin,
        with(
            &p040,
            with(
                &base,
                json!({"cni.dev/valid-attachments": valid, "cni.dev/attachments": valid})
            )
        )
    );
    let cache = node.root.join("cni/results");
    let left: Vec<String> = fs::read_dir(&cache)
        .expect("cache dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [format!("{NETWORK}-{kept}-eth0")]);

    let mut client = node.client().await;
    remove_pod(&mut client, &kept).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

#[tokio::test]
async fn a_version_the_plugin_does_not_speak_is_reported_as_such() {
    let (node, record, mut client) =
        recording_node(&[], "1.1.0", &[json!({"type": "rec-old"})]).await;
    run_fails_with(
        &mut client,
        node.pod_config("old"),
        tonic::Code::FailedPrecondition,
        &[
            "rec-old",
            "wants CNI version 1.1.0",
            "0.3.0, 0.3.1, 0.4.0, 1.0.0",
        ],
    )
    .await;
    let version = calls_of(&record, "VERSION");
    assert!(!version.is_empty());
    assert_eq!(
        version[0].env,
        env(&node, "VERSION", "", "dummy", "dummy", "")
    );
    assert!(
        calls_of(&record, "ADD").is_empty(),
        "ADD ran despite the mismatch"
    );
    // Status says the same (from the background STATUS round), without waiting on a plugin.
    let message = eventually(WAIT, || {
        let mut client = client.clone();
        async move {
            let (ready, message) = network_ready(&runtime_status(&mut client).await);
            (!ready).then_some(message)
        }
    })
    .await
    .expect("NetworkReady false");
    assert!(message.contains("wants CNI version 1.1.0"), "{message}");
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// Processes of this node's hanging stand-in still alive (its shell names the script's path;
/// the kill of its children with the process group is covered by the exec unit test).
fn hang_processes(node: &Node) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(&node.bin_dir.join("rec-hang").display().to_string()) {
            found.push(text);
        }
    }
    found
}

#[tokio::test]
async fn a_hung_plugin_is_killed_the_sandbox_rolled_back_and_crisp_keeps_serving() {
    let (node, record, mut client) = recording_node(
        &["--cni-plugin-timeout", "2"],
        "1.1.0",
        &[json!({"type": "rec-110"}), json!({"type": "rec-hang"})],
    )
    .await;
    run_fails_with(
        &mut client,
        node.pod_config("hang"),
        tonic::Code::DeadlineExceeded,
        &[
            "rec-hang",
            "ADD",
            "timed out after 2s",
            "process group was killed",
        ],
    )
    .await;
    // Rolled back: DEL for both plugins, in reverse, and nothing left.
    assert_eq!(
        plugins_of(&calls_of(&record, "DEL")),
        ["rec-hang", "rec-110"]
    );
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
    assert!(
        hang_processes(&node).is_empty(),
        "{:?}",
        hang_processes(&node)
    );
    // Still serving.
    assert!(list(&mut client, None).await.is_empty());
    runtime_status(&mut client).await;
    client
        .version(cri::VersionRequest {
            version: String::new(),
        })
        .await
        .expect("Version");
}

#[tokio::test]
async fn error_json_and_garbage_become_structured_errors() {
    let (node, record, mut client) = recording_node(
        &[],
        "1.0.0",
        &[json!({"type": "rec-040"}), json!({"type": "fail-add"})],
    )
    .await;
    run_fails_with(
        &mut client,
        node.pod_config("errjson"),
        tonic::Code::Internal,
        &[
            "plugin fail-add ADD failed (exit status 1",
            "CNI error code 11",
            "deliberate stand-in failure",
            "fail-add always fails ADD",
        ],
    )
    .await;
    assert_eq!(plugins_of(&calls_of(&record, "DEL")), ["rec-040"]);
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());

    use_conf(
        &node,
        &mut client,
        "10-rec.conflist",
        &conflist("1.0.0", NETWORK, &[json!({"type": "garbage"})]),
    )
    .await;
    let err = client
        .run_pod_sandbox(run_req(node.pod_config("garbage")))
        .await
        .expect_err("must fail");
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(
        err.message()
            .contains("plugin garbage ADD answered something that is not a CNI result"),
        "{}",
        err.message()
    );
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

#[tokio::test]
async fn an_invalid_bandwidth_annotation_is_invalid_argument() {
    let node = Node::start().await;
    let mut client = node.client().await;
    let mut config = node.pod_config("bw");
    config
        .annotations
        .insert("kubernetes.io/egress-bandwidth".into(), "fast".into());
    let err = client
        .run_pod_sandbox(run_req(config))
        .await
        .expect_err("must be refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("kubernetes.io/egress-bandwidth"),
        "{}",
        err.message()
    );
    assert!(node.leftovers().is_empty());
}

#[tokio::test]
async fn conf_dir_changes_take_effect_without_a_restart() {
    let node = Node::start_with(Conf::Empty).await;
    install_recorders(&node);
    let mut client = node.client().await;
    let st = runtime_status(&mut client).await;
    let (ready, message) = network_ready(&st);
    assert!(!ready);
    assert!(
        message.contains(&node.conf_dir.display().to_string()),
        "{message}"
    );
    let net: Value = serde_json::from_str(&st.info["network"]).expect("json");
    assert_eq!(net["confDirWatched"], true);

    // A list whose plugins partly live in <dir>/<name>/ (loadOnlyInlinedPlugins unset).
    fs::create_dir(node.conf_dir.join(NETWORK)).expect("mkdir");
    fs::write(
        node.conf_dir.join(NETWORK).join("10-more.conf"),
        r#"{"type":"rec-110"}"#,
    )
    .expect("w");
    let body = conflist("1.1.0", NETWORK, &[json!({"type": "rec-040"})]);
    node.write_conf("10-rec.conflist", &body);
    let seen = eventually(WAIT, || {
        let mut client = client.clone();
        async move {
            let st = runtime_status(&mut client).await;
            let net: Value = serde_json::from_str(st.info.get("network")?).ok()?;
            (net["loaded"]["plugins"] == json!(["rec-040", "rec-110"]) && network_ready(&st).0)
                .then_some(())
        }
    })
    .await;
    assert!(
        seen.is_some(),
        "the new list (with its dir's plugin) is not in effect"
    );

    // loadOnlyInlinedPlugins: the dir's plugin is dropped.
    let mut only: Value = serde_json::from_str(&body).expect("json");
    only["loadOnlyInlinedPlugins"] = json!(true);
    node.write_conf("10-rec.conflist", &only.to_string());
    let seen = eventually(WAIT, || {
        let mut client = client.clone();
        async move {
            let st = runtime_status(&mut client).await;
            let net: Value = serde_json::from_str(st.info.get("network")?).ok()?;
            (net["loaded"]["plugins"] == json!(["rec-040"])).then_some(())
        }
    })
    .await;
    assert!(seen.is_some(), "loadOnlyInlinedPlugins not honoured");

    fs::remove_file(node.conf_dir.join("10-rec.conflist")).expect("rm");
    let gone = eventually(WAIT, || {
        let mut client = client.clone();
        async move { (!network_ready(&runtime_status(&mut client).await).0).then_some(()) }
    })
    .await;
    assert!(
        gone.is_some(),
        "removing the conf did not make the network not ready"
    );
}
