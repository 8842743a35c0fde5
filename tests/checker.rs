//! The background network checker, through the socket with the real bridge and host-local
//! plugins followed by the `check-probe` stand-in (which logs when each command runs and can
//! hang or fail CHECK on demand): CHECK never runs on a call's path, runs in rounds, never
//! during its sandbox's Run or Stop, is killed by a Stop, and a failure is reported while the
//! sandbox stays READY; a pod whose address or namespace pin is gone becomes NOT_READY, stays
//! so across a restart, and is then torn down with nothing leaked. No timing thresholds:
//! each step waits for an outcome with a generous deadline.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_cri::v1 as cri;
use serde_json::{json, Value};
use support::*;

const WAIT: Duration = Duration::from_secs(60);
const METRICS_ADDR: &str = "127.0.0.1:9326";

/// A node whose chain ends in `check-probe` with its state in `<node>/probe`, daemon flags
/// `args` (kept across restarts).
async fn probe_node(args: &[&str]) -> (Node, PathBuf) {
    let probe = tempfile::Builder::new()
        .prefix("crisp-probe-")
        .tempdir()
        .expect("probe dir")
        .keep();
    let node = Node::start_with_args(
        Conf::After(vec![json!({"type": "check-probe", "stateDir": probe})]),
        args,
    )
    .await;
    (node, probe)
}

/// The probe's log as (command, start|end, container id) lines.
fn probe_log(probe: &Path) -> Vec<(String, String, String)> {
    fs::read_to_string(probe.join("probe.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ').map(str::to_string);
            Some((parts.next()?, parts.next()?, parts.next()?))
        })
        .collect()
}

fn check_starts(probe: &Path, id: &str) -> usize {
    probe_log(probe)
        .iter()
        .filter(|(c, phase, who)| c == "CHECK" && phase == "start" && who == id)
        .count()
}

async fn state_of(
    c: &mut cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
) -> i32 {
    status(c, id, false).await.0.state
}

const READY: i32 = cri::PodSandboxState::SandboxReady as i32;
const NOT_READY: i32 = cri::PodSandboxState::SandboxNotready as i32;

/// With the checker off, every CHECK would have to come from a call: 200 verbose
/// PodSandboxStatus calls in a row run none, and show no check outcome yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_status_never_runs_a_plugin() {
    let (node, probe) = probe_node(&["--cni-check-interval", "0"]).await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("verbose")).await;
    for _ in 0..200 {
        let info = verbose_info(&mut c, &id).await;
        assert!(info["networkCheck"].is_null(), "{info}");
        assert!(info.get("runtimeSpec").is_some());
    }
    assert_eq!(check_starts(&probe, &id), 0, "{:?}", probe_log(&probe));
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    assert_nothing_leaked(&node, "after teardown").await;
}

/// Every second, CHECK runs for each READY sandbox, again and again, and never between the
/// start and end of that sandbox's ADD (Run) or after its DEL (Stop) began, even when both
/// take seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_runs_in_rounds_and_never_during_run_or_stop() {
    let (node, probe) = probe_node(&["--cni-check-interval", "1"]).await;
    let mut c = node.client().await;
    let first = run_pod(&mut c, node.pod_config("first")).await;
    fs::write(probe.join("slow"), "").expect("slow marker");
    let second = run_pod(&mut c, node.pod_config("second")).await;
    let repeated = eventually(WAIT, || async {
        (check_starts(&probe, &first) >= 3 && check_starts(&probe, &second) >= 3).then_some(())
    })
    .await;
    assert!(repeated.is_some(), "CHECK repeats: {:?}", probe_log(&probe));
    stop_pod(&mut c, &second).await;
    // Rounds go on for the first pod; then look at the whole history.
    let more = check_starts(&probe, &first) + 2;
    let went_on = eventually(WAIT, || async {
        (check_starts(&probe, &first) >= more).then_some(())
    })
    .await;
    assert!(went_on.is_some(), "rounds go on after a Stop");
    let log = probe_log(&probe);
    for id in [&first, &second] {
        let mine: Vec<_> = log.iter().filter(|(_, _, who)| who == id).collect();
        let mut in_add = false;
        let mut deleting = false;
        for (command, phase, _) in &mine {
            match (command.as_str(), phase.as_str()) {
                ("ADD", "start") => in_add = true,
                ("ADD", "end") => in_add = false,
                ("DEL", "start") => deleting = true,
                ("CHECK", "start") => {
                    assert!(!in_add, "CHECK during the ADD of {id}: {mine:?}");
                    assert!(!deleting, "CHECK during or after the DEL of {id}: {mine:?}");
                }
                _ => {}
            }
        }
    }
    let info = verbose_info(&mut c, &first).await;
    assert_eq!(info["networkCheck"]["outcome"], "passed", "{info}");
    assert_eq!(info["liveCheck"]["outcome"], "passed", "{info}");
    fs::remove_file(probe.join("slow")).expect("rm marker");
    for id in [&first, &second] {
        stop_pod(&mut c, id).await;
        remove_pod(&mut c, id).await;
    }
    assert_nothing_leaked(&node, "after teardown").await;
    let _ = fs::remove_dir_all(&probe);
}

/// A CHECK that hangs (plugin timeout one hour) delays no verbose status, and a Stop during
/// it returns at once, killing the plugin and its child and discarding the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_check_delays_nothing_and_stop_kills_it() {
    let (node, probe) =
        probe_node(&["--cni-check-interval", "1", "--cni-plugin-timeout", "3600"]).await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("hung")).await;
    fs::write(probe.join("check-hang"), "").expect("hang marker");
    let pid_file = probe.join("check-hang.pid");
    let child = eventually(WAIT, || async {
        fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    })
    .await
    .expect("a CHECK is hanging");
    // The harness gives each call 60 s; a status waiting for the plugin would take an hour.
    for _ in 0..5 {
        let info = verbose_info(&mut c, &id).await;
        assert_eq!(info["state"], "ready", "{info}");
    }
    stop_pod(&mut c, &id).await;
    let proc_dir = PathBuf::from(format!("/proc/{child}"));
    let gone = eventually(WAIT, || async {
        let zombie = fs::read_to_string(proc_dir.join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        zombie.then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the hung CHECK's child was killed with its group"
    );
    let ends = probe_log(&probe)
        .iter()
        .filter(|(cmd, phase, who)| cmd == "CHECK" && phase == "end" && *who == id)
        .count();
    assert_eq!(ends, 0, "the hung CHECK never finished: it was killed");
    let info = verbose_info(&mut c, &id).await;
    assert!(
        info["networkCheck"].is_null(),
        "the cancelled CHECK's result was discarded: {info}"
    );
    remove_pod(&mut c, &id).await;
    assert_nothing_leaked(&node, "after teardown").await;
    let _ = fs::remove_dir_all(&probe);
}

/// A CHECK that fails with a CNI error shows in verbose status (plugin, code, message), in
/// `crisp_cni_plugin_failures_total{command="CHECK"}` and in a warning, and the sandbox stays
/// READY; once the plugin is well again, the next round says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_check_is_reported_and_the_sandbox_stays_ready() {
    let (node, probe) =
        probe_node(&["--cni-check-interval", "1", "--metrics-addr", METRICS_ADDR]).await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("failing")).await;
    fs::write(probe.join("check-fail"), "").expect("fail marker");
    let info = eventually(WAIT, || {
        let mut c = c.clone();
        let id = id.clone();
        async move {
            let info = verbose_info(&mut c, &id).await;
            (info["networkCheck"]["outcome"] == "failed").then_some(info)
        }
    })
    .await
    .expect("the failed CHECK is reported");
    let check = &info["networkCheck"];
    assert_eq!(check["plugin"], "check-probe", "{check}");
    assert_eq!(check["cniCode"], 99, "{check}");
    assert!(
        check["message"]
            .as_str()
            .is_some_and(|m| m.contains("deliberate CHECK failure")),
        "{check}"
    );
    assert_eq!(
        state_of(&mut c, &id).await,
        READY,
        "a failed CHECK changes no state"
    );
    let metrics = curl_in_node(&node, &format!("http://{METRICS_ADDR}/metrics"));
    let failures = metrics
        .lines()
        .find(|l| {
            l.starts_with("crisp_cni_plugin_failures_total")
                && l.contains("command=\"CHECK\"")
                && l.contains("plugin=\"check-probe\"")
                && l.contains("code=\"99\"")
        })
        .unwrap_or_else(|| panic!("no CHECK failure counted:\n{metrics}"));
    assert!(sample(failures, "crisp_cni_plugin_failures_total").is_some_and(|n| n >= 1.0));
    let log = node.log();
    assert!(
        log.lines().any(|l| l.contains("CNI CHECK failed")
            && l.contains(&id)
            && l.contains("check-probe")),
        "a warning names the sandbox and plugin"
    );
    fs::remove_file(probe.join("check-fail")).expect("rm marker");
    let healed = eventually(WAIT, || {
        let mut c = c.clone();
        let id = id.clone();
        async move {
            (verbose_info(&mut c, &id).await["networkCheck"]["outcome"] == "passed").then_some(())
        }
    })
    .await;
    assert!(
        healed.is_some(),
        "the next round reports the plugin well again"
    );
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    assert_nothing_leaked(&node, "after teardown").await;
    let _ = fs::remove_dir_all(&probe);
}

/// What breaks a pod's network in a live-check test.
enum Breakage {
    FlushAddress,
    UnmountPin,
}

/// The live check: once the pod's network is broken, the sandbox becomes NOT_READY with the
/// reason, a stopped event is sent, a restart keeps it NOT_READY, and Stop/Remove then tear it
/// down with nothing leaked.
async fn lost_network_makes_the_sandbox_not_ready(breakage: Breakage, says: &str) {
    let mut node = Node::start_with_args(Conf::Default, &["--cni-check-interval", "1"]).await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("lost")).await;
    let (st, _) = status(&mut c, &id, false).await;
    let ip = st.network.expect("network").ip;
    let mut events = c
        .get_container_events(cri::GetEventsRequest {})
        .await
        .expect("events")
        .into_inner();
    let pin = netns_path(&mut c, &id).await;
    match breakage {
        Breakage::FlushAddress => {
            in_netns(&pin, || {
                run(Command::new("ip").args(["addr", "flush", "dev", "eth0"]))
            });
        }
        Breakage::UnmountPin => {
            run(Command::new("umount").arg(&pin));
        }
    }
    let marked = eventually(WAIT, || {
        let mut c = c.clone();
        let id = id.clone();
        async move { (state_of(&mut c, &id).await == NOT_READY).then_some(()) }
    })
    .await;
    assert!(marked.is_some(), "the sandbox became NOT_READY");
    let info = verbose_info(&mut c, &id).await;
    let last_error = info["lastError"].as_str().unwrap_or_default().to_string();
    assert!(last_error.contains(says), "{last_error:?} names {says:?}");
    if matches!(breakage, Breakage::FlushAddress) {
        assert!(
            last_error.contains(&format!("address {ip} on eth0")),
            "{last_error}"
        );
    }
    assert_eq!(info["liveCheck"]["outcome"], "failed", "{info}");
    let stopped = loop {
        let event = next_event(&mut events).await;
        if event.container_id == id
            && event.container_event_type == cri::ContainerEventType::ContainerStoppedEvent as i32
        {
            break event;
        }
    };
    assert_eq!(stopped.pod_sandbox_status.expect("status").state, NOT_READY);
    assert!(node.log().contains("live network check failed"));

    drop(events);
    drop(c);
    node.restart().await;
    let mut c = node.client().await;
    assert_eq!(
        state_of(&mut c, &id).await,
        NOT_READY,
        "a restart keeps it NOT_READY"
    );
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    assert_nothing_leaked(&node, "after teardown").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_address_was_flushed_becomes_not_ready() {
    lost_network_makes_the_sandbox_not_ready(Breakage::FlushAddress, "address").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_pin_was_unmounted_becomes_not_ready() {
    lost_network_makes_the_sandbox_not_ready(Breakage::UnmountPin, "network namespace pin").await;
}

/// Host-network pods have no namespace of their own: the checker never marks them, through
/// several rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pods_are_never_marked() {
    let node = Node::start_with_args(Conf::Default, &["--cni-check-interval", "1"]).await;
    let mut c = node.client().await;
    let mut config = node.pod_config("host");
    set_network_mode(&mut config, cri::NamespaceMode::Node);
    let id = run_pod(&mut c, config).await;
    let rounds = |info: &std::collections::HashMap<String, String>| -> u64 {
        info.get("networkChecker")
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .and_then(|v| v["rounds"].as_u64())
            .unwrap_or(0)
    };
    let several = eventually(WAIT, || {
        let mut c = c.clone();
        async move {
            let info = c
                .status(cri::StatusRequest { verbose: true })
                .await
                .expect("Status")
                .into_inner()
                .info;
            (rounds(&info) >= 3).then_some(())
        }
    })
    .await;
    assert!(several.is_some(), "three rounds ran");
    assert_eq!(state_of(&mut c, &id).await, READY);
    let info = verbose_info(&mut c, &id).await;
    assert!(
        info["liveCheck"].is_null() && info["networkCheck"].is_null(),
        "{info}"
    );
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    assert_nothing_leaked(&node, "after teardown").await;
}

/// A pod the fast path set up is checked by the real plugins (its state is theirs): CHECK of
/// bridge, host-local and portmap passes against what crisp built in process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_path_pod_is_checked_by_the_real_plugins() {
    let node = Node::start_with_args(
        Conf::Default,
        &["--cni-fast-path", "auto", "--cni-check-interval", "1"],
    )
    .await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("fast")).await;
    assert_eq!(verbose_info(&mut c, &id).await["networkPath"], "fast");
    let info = eventually(WAIT, || {
        let mut c = c.clone();
        let id = id.clone();
        async move {
            let info = verbose_info(&mut c, &id).await;
            (!info["networkCheck"].is_null()).then_some(info)
        }
    })
    .await
    .expect("a CHECK round reached the pod");
    assert_eq!(info["networkCheck"]["outcome"], "passed", "{info}");
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    assert_nothing_leaked(&node, "after teardown").await;
}
