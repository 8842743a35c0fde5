//! Stand-ins for crictl v1.29, critest v1.29 and the kubelet 1.29: exactly the calls they make
//! (`shared/CRI-CLIENTS.md` §1–§3), and the checks they apply to the answers.

mod support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_cri::v1 as cri;
use serde_json::Value;
use support::*;
use tonic::Code;

// ---------------------------------------------------------------------------------------------
// The shared client layer (§0).

/// Opening the runtime service: `Version{version:""}` at once; any error = give up.
async fn open_runtime(node: &Node) -> Client {
    let mut c = node.client().await;
    c.version(cri::VersionRequest {
        version: String::new(),
    })
    .await
    .expect("connect-time Version");
    c
}

/// Opening the image service: `ImageFsInfo{}` at once; any error = give up.
async fn open_images(node: &Node) -> cri::ImageFsInfoResponse {
    node.images()
        .await
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .expect("connect-time ImageFsInfo")
        .into_inner()
}

/// `versionV1`: all four fields non-empty.
fn check_version(v: &cri::VersionResponse) {
    assert!(!v.version.is_empty(), "{v:?}");
    assert!(!v.runtime_name.is_empty(), "{v:?}");
    assert!(!v.runtime_version.is_empty(), "{v:?}");
    assert!(!v.runtime_api_version.is_empty(), "{v:?}");
}

/// `statusV1`: status set with at least two conditions.
fn check_status(s: &cri::StatusResponse) -> &cri::RuntimeStatus {
    let st = s.status.as_ref().expect("Status answer has status");
    assert!(st.conditions.len() >= 2, "fewer than 2 conditions: {st:?}");
    st
}

/// How crictl prints an `info` map: JSON values are embedded, anything else is pasted inside
/// quotes without escaping. Returns the document crictl would print; it must parse.
fn crictl_info_json(status_json: Value, info: &HashMap<String, String>) -> Value {
    let mut keys: Vec<&String> = info.keys().collect();
    keys.sort();
    let mut out = format!("{{\"status\":{status_json}");
    for k in keys {
        let v = &info[k];
        if serde_json::from_str::<Value>(v).is_ok() {
            out.push_str(&format!(",\"{k}\":{v}"));
        } else {
            out.push_str(&format!(",\"{k}\":\"{v}\""));
        }
    }
    out.push('}');
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("crictl would print broken JSON ({e}): {out}"))
}

// ---------------------------------------------------------------------------------------------
// crictl v1.29 commands (§1). Each opens only the runtime service.

/// `crictl version`
async fn crictl_version(node: &Node) -> cri::VersionResponse {
    let mut c = open_runtime(node).await;
    let v = c
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .expect("crictl version")
        .into_inner();
    check_version(&v);
    v
}

/// `crictl info`
async fn crictl_info(node: &Node) -> Value {
    let mut c = open_runtime(node).await;
    let r = c
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("crictl info")
        .into_inner();
    let st = check_status(&r);
    let conds: Vec<Value> = st
        .conditions
        .iter()
        .map(|c| {
            serde_json::json!({"type": c.r#type, "status": c.status, "reason": c.reason,
                "message": c.message})
        })
        .collect();
    crictl_info_json(serde_json::json!({ "conditions": conds }), &r.info)
}

/// `crictl runp pod.json` (client-side check of name/namespace/uid first).
async fn crictl_runp(node: &Node, config: cri::PodSandboxConfig) -> String {
    let m = config.metadata.as_ref().expect("metadata");
    assert!(!m.name.is_empty() && !m.namespace.is_empty() && !m.uid.is_empty());
    let mut c = open_runtime(node).await;
    let id = c
        .run_pod_sandbox(run_req(config))
        .await
        .expect("crictl runp")
        .into_inner()
        .pod_sandbox_id;
    assert!(!id.is_empty(), "RunPodSandbox answered an empty id");
    id
}

/// `crictl inspectp ID`: returns the status and the document crictl prints.
async fn crictl_inspectp(node: &Node, id: &str) -> (cri::PodSandboxStatus, Value) {
    let mut c = open_runtime(node).await;
    let r = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        })
        .await
        .unwrap_or_else(|e| panic!("crictl inspectp {id}: {e:?}"))
        .into_inner();
    let st = r.status.expect("a nil status crashes crictl");
    verify_sandbox_status(&st);
    let doc = crictl_info_json(serde_json::to_value(&st).unwrap(), &r.info);
    (st, doc)
}

#[derive(Default)]
struct PodsOpts {
    id: Option<String>,
    state: Option<&'static str>,
    labels: Vec<(&'static str, String)>,
}

/// `crictl pods [--id] [--state] [--label]`: the filter is always present; returns the rows
/// (13-char id, state, name, namespace, attempt) sorted newest first.
async fn crictl_pods(
    node: &Node,
    opts: PodsOpts,
) -> Vec<(String, &'static str, String, String, u32)> {
    let mut c = open_runtime(node).await;
    let mut filter = cri::PodSandboxFilter::default();
    if let Some(id) = opts.id {
        filter.id = id;
    }
    if let Some(s) = opts.state {
        let state = match s.to_lowercase().as_str() {
            "ready" => PodSandboxState::SandboxReady,
            "notready" => PodSandboxState::SandboxNotready,
            other => panic!("crictl: unknown state {other}"),
        };
        filter.state = Some(cri::PodSandboxStateValue {
            state: state as i32,
        });
    }
    for (k, v) in opts.labels {
        filter.label_selector.insert(k.to_string(), v);
    }
    let mut items = c
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await
        .expect("crictl pods")
        .into_inner()
        .items;
    items.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    items
        .into_iter()
        .map(|p| {
            let m = p.metadata.expect("an item without metadata panics crictl");
            let state = match PodSandboxState::try_from(p.state) {
                Ok(PodSandboxState::SandboxReady) => "Ready",
                Ok(PodSandboxState::SandboxNotready) => "NotReady",
                Err(_) => panic!("unknown state value {} is fatal to crictl", p.state),
            };
            assert!(p.created_at > 0);
            (
                p.id[..13].to_string(),
                state,
                m.name,
                m.namespace,
                m.attempt,
            )
        })
        .collect()
}

/// `crictl stopp ID…`: in order, stop at the first error.
async fn crictl_stopp(node: &Node, ids: &[&str]) -> Result<Vec<String>, tonic::Status> {
    let mut c = open_runtime(node).await;
    let mut out = Vec::new();
    for id in ids {
        c.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await?;
        out.push(format!("Stopped sandbox {id}"));
    }
    Ok(out)
}

/// `crictl rmp [-f] ID…` / `crictl rmp -a [-f]`: per id, concurrently, Status{verbose:false},
/// refuse READY without -f, else Stop then Remove. Errors are aggregated.
async fn crictl_rmp(
    node: &Node,
    ids: &[&str],
    all: bool,
    force: bool,
) -> Vec<Result<String, String>> {
    let c = open_runtime(node).await;
    let ids: Vec<String> = if all {
        let items = c
            .clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
            .expect("rmp -a list")
            .into_inner()
            .items;
        if items.is_empty() {
            return vec![Ok("No pods to remove".into())];
        }
        items.into_iter().map(|p| p.id).collect()
    } else {
        ids.iter().map(|s| s.to_string()).collect()
    };
    let tasks = ids.into_iter().map(|id| {
        let mut c = c.clone();
        async move {
            let st = c
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: false,
                })
                .await
                .map_err(|e| format!("getting sandbox status of pod {id:?}: {e}"))?
                .into_inner()
                .status
                .ok_or("nil status")?;
            verify_sandbox_status(&st);
            if st.state == PodSandboxState::SandboxReady as i32 {
                if !force {
                    return Err(format!(
                        "pod sandbox {id:?} is running, please stop it first"
                    ));
                }
                c.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .map_err(|e| format!("stopping the pod sandbox {id:?}: {e}"))?;
            }
            c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .map_err(|e| format!("removing the pod sandbox {id:?}: {e}"))?;
            Ok(format!("Removed sandbox {id}"))
        }
    });
    futures::future::join_all(tasks).await
}

/// The verbose info object every inspectp must carry.
fn check_verbose_info(doc: &Value) {
    let info = &doc["info"];
    assert!(
        info.is_object(),
        "inspectp prints an \"info\" object: {doc}"
    );
    assert!(info["netnsPath"].is_string(), "info.netnsPath: {info}");
    assert!(!info["cniResult"].is_null(), "info.cniResult: {info}");
    assert!(info["config"].is_object(), "info.config: {info}");
}

/// A crictl session as a user types it: runp, pods (all filters), inspectp by the 13-char id
/// `pods` shows, rmp refused while READY, stopp, rmp, and rmp on an unknown id failing at the
/// Status step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_session() {
    let node = Node::start().await;
    let v = crictl_version(&node).await;
    assert_eq!(v.runtime_name, "crisp");
    assert_eq!(v.runtime_api_version, "v1");

    let config = node.pod_config("nginx-sandbox");
    let id = crictl_runp(&node, config.clone()).await;
    assert_valid_id(&id);
    let other = crictl_runp(&node, node.pod_config("busybox-sandbox")).await;
    let short = id[..13].to_string();
    pods_lists_both_with_every_filter(&node, &short, &other).await;
    inspectp_by_the_short_id_shows_the_pod(&node, &id, &short, &config).await;
    let r = crictl_rmp(&node, &[&short], false, false).await;
    assert!(
        r[0].as_ref()
            .is_err_and(|e| e.contains("please stop it first")),
        "{r:?}"
    );
    stopp_makes_it_not_ready(&node, &id, &short, &other).await;
    rmp_removes_it_once(&node, &id, &short).await;
    let r = crictl_rmp(&node, &[], true, true).await;
    assert_eq!(r, vec![Ok(format!("Removed sandbox {other}"))]);
    let r = crictl_rmp(&node, &[], true, false).await;
    assert_eq!(r, vec![Ok("No pods to remove".to_string())]);
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// `crictl pods`: newest first, then by `--id` (the short id) and by `--label`.
async fn pods_lists_both_with_every_filter(node: &Node, short: &str, other: &str) {
    let short = short.to_string();
    let rows = crictl_pods(node, PodsOpts::default()).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, other[..13], "newest first");
    assert_eq!(
        rows[1],
        (
            short.clone(),
            "Ready",
            "nginx-sandbox".into(),
            "default".into(),
            0
        )
    );
    let rows = crictl_pods(
        node,
        PodsOpts {
            id: Some(short.clone()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rows.len(), 1, "--id with the short id");
    assert_eq!(rows[0].0, short);
    let rows = crictl_pods(
        node,
        PodsOpts {
            labels: vec![("app", "busybox-sandbox".into())],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, "busybox-sandbox");
}

/// `crictl inspectp SHORT`: the full id, READY, an IPv4 address, the verbose info and the
/// annotations.
async fn inspectp_by_the_short_id_shows_the_pod(
    node: &Node,
    id: &str,
    short: &str,
    config: &cri::PodSandboxConfig,
) {
    let id = id.to_string();
    let (st, doc) = crictl_inspectp(node, short).await;
    assert_eq!(st.id, id);
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    let ip: IpAddr = st
        .network
        .as_ref()
        .unwrap()
        .ip
        .parse()
        .expect("inspectp shows the IP");
    assert!(ip.is_ipv4());
    assert_eq!(doc["status"]["id"], Value::String(id.clone()));
    check_verbose_info(&doc);
    assert_eq!(st.annotations, config.annotations);
}

/// `crictl stopp`: the pod is NotReady (filtered as such, the other one still ready) and
/// inspectp shows no IP.
async fn stopp_makes_it_not_ready(node: &Node, id: &str, short: &str, other: &str) {
    let out = crictl_stopp(node, &[short]).await.expect("crictl stopp");
    assert_eq!(out, vec![format!("Stopped sandbox {short}")]);
    let rows = crictl_pods(
        node,
        PodsOpts {
            state: Some("NotReady"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, short);
    assert_eq!(rows[0].1, "NotReady");
    let rows = crictl_pods(
        node,
        PodsOpts {
            state: Some("ready"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, other[..13]);
    let (st, doc) = crictl_inspectp(node, id).await;
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    assert_eq!(st.network.map(|n| n.ip).unwrap_or_default(), "");
    assert!(doc["info"].is_object());
}

/// `crictl rmp`: removed once; again it fails at the Status step (NotFound), even though
/// Remove is idempotent; stopp of the removed id is fine (Stop is idempotent).
async fn rmp_removes_it_once(node: &Node, id: &str, short: &str) {
    let r = crictl_rmp(node, &[short], false, false).await;
    assert_eq!(r, vec![Ok(format!("Removed sandbox {short}"))]);
    let rows = crictl_pods(node, PodsOpts::default()).await;
    assert_eq!(rows.len(), 1);

    // An unknown id fails at the Status step (NotFound), even though Remove is idempotent.
    let r = crictl_rmp(node, &[short], false, false).await;
    let e = r[0].as_ref().expect_err("rmp of a removed id");
    assert!(e.contains("NotFound") || e.contains("not found"), "{e}");
    // stopp of a removed id is fine (Stop is idempotent).
    crictl_stopp(node, &[id]).await.expect("stopp removed id");
}

/// `crictl rmp -a -f` removes several READY pods concurrently, and `crictl info` prints valid
/// JSON with both conditions true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_rmp_all_force_and_info() {
    let node = Node::start().await;
    let info = crictl_info(&node).await;
    let conds = info["status"]["conditions"].as_array().unwrap();
    for kind in ["RuntimeReady", "NetworkReady"] {
        let c = conds
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind}: {info}"));
        assert_eq!(c["status"], Value::Bool(true), "{c}");
    }

    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(crictl_runp(&node, node.pod_config(&format!("many-{i}"))).await);
    }
    let r = crictl_rmp(&node, &[], true, true).await;
    assert_eq!(r.len(), 4, "{r:?}");
    for x in &r {
        assert!(x.is_ok(), "{r:?}");
    }
    assert!(crictl_pods(&node, PodsOpts::default()).await.is_empty());
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

// ---------------------------------------------------------------------------------------------
// critest v1.29 (§2): "basic operations on PodSandboxes | Runtime info".

static UUIDS: AtomicUsize = AtomicUsize::new(0);

fn uuid() -> String {
    let n = UUIDS.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        std::process::id(),
        n & 0xffff,
        (t >> 12) & 0xfff,
        t & 0xfff,
        (t >> 24) & 0xffff_ffff_ffff
    )
}

/// critest's BeforeEach: dial both services.
async fn critest_before_each(node: &Node) -> Client {
    let c = open_runtime(node).await;
    open_images(node).await;
    c
}

/// critest's RunDefaultPodSandbox, preceded by RuntimeConfig (GetCgroupParent).
async fn critest_run_default(c: &mut Client, prefix: &str) -> String {
    let cgroup_parent = match c.runtime_config(cri::RuntimeConfigRequest {}).await {
        Ok(r) => match r.into_inner().linux {
            Some(l) if l.cgroup_driver == cri::CgroupDriver::Cgroupfs as i32 => String::new(),
            _ => "/test.slice".to_string(),
        },
        Err(_) => "/test.slice".to_string(),
    };
    let u = uuid();
    let config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("{prefix}{u}"),
            uid: format!("cri-test-uid{u}"),
            namespace: format!("cri-test-namespace{u}"),
            attempt: 2,
        }),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent,
            ..Default::default()
        }),
        labels: HashMap::new(),
        ..Default::default()
    };
    let id = c
        .run_pod_sandbox(run_req(config))
        .await
        .expect("critest RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    assert!(!id.is_empty());
    id
}

async fn critest_status(c: &mut Client, id: &str) -> cri::PodSandboxStatus {
    let st = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        })
        .await
        .expect("critest PodSandboxStatus")
        .into_inner()
        .status
        .expect("status");
    verify_sandbox_status(&st);
    st
}

/// critest's AfterEach: Stop then Remove, errors ignored (twice, as after "removing").
async fn critest_after_each(c: &mut Client, id: &str) {
    let _ = c
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await;
    let _ = c
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await;
}

/// critest "should support running PodSandbox": READY, and listed by its full id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_running_pod_sandbox() {
    let node = Node::start().await;
    let mut c = critest_before_each(&node).await;
    let id = critest_run_default(&mut c, "PodSandbox-for-create-test-").await;
    let st = critest_status(&mut c, &id).await;
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    let items = list(
        &mut c,
        Some(cri::PodSandboxFilter {
            id: id.clone(),
            ..Default::default()
        }),
    )
    .await;
    assert!(items.iter().any(|p| p.id == id));
    critest_after_each(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// critest "should support stopping PodSandbox": Stop OK, then NOTREADY (status checks still
/// pass after stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_stopping_pod_sandbox() {
    let node = Node::start().await;
    let mut c = critest_before_each(&node).await;
    let id = critest_run_default(&mut c, "PodSandbox-for-test-stop-").await;
    stop_pod(&mut c, &id).await;
    let st = critest_status(&mut c, &id).await;
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    critest_after_each(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// critest "should support removing PodSandbox": Stop, Remove, then a List by id is no error
/// and empty; the AfterEach on the removed id is harmless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_removing_pod_sandbox() {
    let node = Node::start().await;
    let mut c = critest_before_each(&node).await;
    let id = critest_run_default(&mut c, "PodSandbox-for-test-remove-").await;
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    let items = list(
        &mut c,
        Some(cri::PodSandboxFilter {
            id: id.clone(),
            ..Default::default()
        }),
    )
    .await;
    assert!(!items.iter().any(|p| p.id == id));
    // AfterEach: both calls on an already-removed id must succeed (idempotent).
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// critest "Runtime info should return version info": Version{"0.1.0"}, all four fields set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_version_info() {
    let node = Node::start().await;
    let mut c = critest_before_each(&node).await;
    let v = c
        .version(cri::VersionRequest {
            version: "0.1.0".into(),
        })
        .await
        .expect("Version")
        .into_inner();
    check_version(&v);
    assert_eq!(v.runtime_name, "crisp");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, "0.1.0");
}

/// critest "Runtime info should return runtime conditions": ≥ 2 conditions, RuntimeReady and
/// NetworkReady both true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_runtime_conditions() {
    let node = Node::start().await;
    let mut c = critest_before_each(&node).await;
    let r = c
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let st = check_status(&r);
    for kind in ["RuntimeReady", "NetworkReady"] {
        let cond = st
            .conditions
            .iter()
            .find(|c| c.r#type == kind)
            .unwrap_or_else(|| panic!("no {kind} in {st:?}"));
        assert!(cond.status, "{cond:?}");
    }
    assert!(r.info.is_empty(), "info only when verbose: {:?}", r.info);
}

// ---------------------------------------------------------------------------------------------
// kubelet 1.29 (§3).

/// The kubelet's start-up sequence and its periodic loops: connect-time Version, ImageFsInfo
/// (used_bytes set), RuntimeConfig ×3 (OK, no driver by default), Version{"0.1.0"} answering
/// exactly "0.1.0", Status ≥ 2 conditions, PLEG relist (ListPodSandbox unfiltered +
/// ListContainers empty), housekeeping, image GC, stats — none of which may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_startup_sequence() {
    let node = Node::start().await;
    let mut c = open_runtime(&node).await;
    image_fs_info_has_usage(&node).await;
    kubelet_runtime_config(&mut c).await;
    version_and_status_as_kubelet_needs(&mut c).await;
    pleg_and_housekeeping_find_nothing(&mut c).await;
    image_gc_and_stats_find_nothing(&node, &mut c).await;
    an_unknown_container_is_not_found(&mut c).await;
}

/// ImageFsInfo: one filesystem with used_bytes, a timestamp and a mountpoint.
async fn image_fs_info_has_usage(node: &Node) {
    let fs = open_images(node).await;
    let usage = fs
        .image_filesystems
        .first()
        .expect("an empty image_filesystems list is an error");
    assert!(
        usage.used_bytes.is_some(),
        "used_bytes must be set: {usage:?}"
    );
    assert!(usage.timestamp > 0, "{usage:?}");
    assert!(
        usage
            .fs_id
            .as_ref()
            .is_some_and(|f| !f.mountpoint.is_empty()),
        "{usage:?}"
    );
}

/// Version{"0.1.0"} answers exactly "0.1.0"; Status has RuntimeReady and NetworkReady true.
async fn version_and_status_as_kubelet_needs(c: &mut Client) {
    let v = c
        .version(cri::VersionRequest {
            version: "0.1.0".into(),
        })
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(v.version, "0.1.0", "kubelet requires exactly 0.1.0");
    assert_eq!(v.runtime_name, "crisp");
    let st = c
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let st = check_status(&st);
    for kind in ["RuntimeReady", "NetworkReady"] {
        assert!(
            st.conditions.iter().any(|c| c.r#type == kind && c.status),
            "{kind} true: {st:?}"
        );
    }
}

/// Generic PLEG relist (ListPodSandbox unfiltered + ListContainers) and housekeeping.
async fn pleg_and_housekeeping_find_nothing(c: &mut Client) {
    assert!(list(c, None).await.is_empty());
    let containers = c
        .list_containers(cri::ListContainersRequest {
            filter: Some(Default::default()),
        })
        .await
        .expect("ListContainers must answer, not Unimplemented")
        .into_inner()
        .containers;
    assert!(containers.is_empty());
    // Housekeeping.
    let ready = list(
        c,
        Some(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue { state: 0 }),
            ..Default::default()
        }),
    )
    .await;
    assert!(ready.is_empty());
    let running = c
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainers RUNNING")
        .into_inner();
    assert!(running.containers.is_empty());
}

/// Image GC and the stats round.
async fn image_gc_and_stats_find_nothing(node: &Node, c: &mut Client) {
    let mut images = node.images().await;
    let imgs = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .expect("ListImages")
        .into_inner();
    assert!(imgs.images.is_empty());
    // Stats round.
    let stats = c
        .list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(Default::default()),
        })
        .await
        .expect("ListContainerStats")
        .into_inner();
    assert!(stats.stats.is_empty());
    let pstats = c
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(Default::default()),
        })
        .await
        .expect("ListPodSandboxStats")
        .into_inner();
    assert!(pstats.stats.is_empty());
}

/// A container lookup is NotFound, not a crash or a stub.
async fn an_unknown_container_is_not_found(c: &mut Client) {
    let err = c
        .container_status(cri::ContainerStatusRequest {
            container_id: "0123456789abcdef".into(),
            verbose: false,
        })
        .await
        .expect_err("ContainerStatus of an unknown container");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

/// A kubelet pod start and teardown: RunPodSandbox with the kubelet's fields (every container
/// port, host_port 0 unless asked), PodSandboxStatus gives a parsable IP and network mode POD,
/// relist by the pod-uid label; hostNetwork pods report NODE; kill = Stop, GC = Stop then Remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_pod_lifecycle() {
    let node = Node::start().await;
    let mut c = open_runtime(&node).await;
    let id = kubelet_web_pod(&node, &mut c).await;
    let hid = kubelet_host_network_pod(&node, &mut c).await;
    get_pod_status_by_uid(&mut c, &id, &uid_of("web-0")).await;
    // Kill: StopPodSandbox; GC: Stop then Remove (a Stop error would skip the Remove).
    for sid in [&id, &hid] {
        stop_pod(&mut c, sid).await;
        stop_pod(&mut c, sid).await;
        remove_pod(&mut c, sid).await;
    }
    assert!(list(&mut c, None).await.is_empty());
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// RunPodSandbox with the kubelet's fields (every container port, host_port 0 unless asked);
/// its status gives parsable IPs and network mode POD. Returns the id.
async fn kubelet_web_pod(node: &Node, c: &mut Client) -> String {
    let mut config = node.pod_config("web-0");
    config.port_mappings = vec![
        port(cri::Protocol::Tcp, 8080, 0, ""),
        port(cri::Protocol::Udp, 53, 0, ""),
        port(cri::Protocol::Tcp, 443, 30443, ""),
    ];
    config
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
    let id = run_pod(c, config.clone()).await;
    let (st, _) = status(c, &id, false).await;
    verify_sandbox_status(&st);
    let net = st.network.clone().expect("network set");
    let ips: Vec<&str> = std::iter::once(net.ip.as_str())
        .chain(net.additional_ips.iter().map(|p| p.ip.as_str()))
        .collect();
    for ip in &ips {
        ip.parse::<IpAddr>()
            .unwrap_or_else(|_| panic!("unparsable IP {ip:?} means no pod IPs at all"));
    }
    let mode = network_mode(&st);
    assert_eq!(
        mode,
        Some(NamespaceMode::Pod as i32),
        "else kubelet recreates the pod"
    );
    id
}

/// A hostNetwork pod reports network mode NODE. Returns the id.
async fn kubelet_host_network_pod(node: &Node, c: &mut Client) -> String {
    let mut host = node.pod_config("host-0");
    set_network_mode(&mut host, NamespaceMode::Node);
    host.hostname.clear();
    let hid = run_pod(c, host).await;
    let (hst, _) = status(c, &hid, false).await;
    let hmode = hst
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .map(|o| o.network);
    assert_eq!(
        hmode,
        Some(NamespaceMode::Node as i32),
        "else kubelet recreates hostNetwork pods forever"
    );
    hid
}

/// GetPodStatus: the pod by its uid label, and no containers for it.
async fn get_pod_status_by_uid(c: &mut Client, id: &str, uid: &str) {
    let (id, uid) = (id.to_string(), uid.to_string());
    let mut by_uid = list(
        c,
        Some(cri::PodSandboxFilter {
            label_selector: [("io.kubernetes.pod.uid".to_string(), uid.clone())].into(),
            ..Default::default()
        }),
    )
    .await;
    by_uid.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    assert_eq!(ids(&by_uid), vec![id.clone()]);
    let conts = c
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: [("io.kubernetes.pod.uid".to_string(), uid)].into(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainers by uid")
        .into_inner();
    assert!(conts.containers.is_empty());
}
