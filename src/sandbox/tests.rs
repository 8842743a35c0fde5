//! Unit tests of the lifecycle through the seams, without root: name reservation, the
//! rollback order of a failed Run, and the decisions recovery takes for each kind of record.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::Error;
use crate::sandbox::double::{Call, Double, Test, NETWORK};
use crate::sandbox::manager::Manager;
use crate::sandbox::model::{
    DnsConfig, NetworkAttachment, PodMetadata, Sandbox, SandboxSpec, SandboxState,
};
use crate::sandbox::seams::Namespaces;
use crate::sandbox::RecoveryReport;

use Call::*;
use SandboxState::{Creating, NotReady, Ready, Stopping};

fn spec(hostname: &str) -> SandboxSpec {
    SandboxSpec {
        metadata: PodMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid-1".into(),
            attempt: 0,
        },
        hostname: hostname.into(),
        host_network: false,
        port_mappings: Vec::new(),
        dns: DnsConfig::default(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        cgroup_parent: String::new(),
        sysctls: BTreeMap::from([("net.ipv4.ip_forward".to_string(), "1".to_string())]),
        runtime_handler: String::new(),
        raw_config: serde_json::json!({}),
    }
}

const KEY: &str = "web_default_uid-1_0";

/// The holder a NameReserved error names, or a panic on any other outcome.
fn holder(outcome: crate::error::Result<String>) -> String {
    match outcome {
        Err(Error::NameReserved { name, holder }) => {
            assert_eq!(name, KEY);
            holder
        }
        other => panic!("expected NameReserved, got {other:?}"),
    }
}

// ---- name reservation ----

#[tokio::test]
async fn a_run_with_another_config_is_refused_while_the_first_is_in_flight() {
    let double = Double::default();
    let manager = double.manager();
    double.hold_attach();
    let second = async {
        double.called(Attach).await;
        let refused = manager.run(spec("other")).await;
        double.release_attach();
        refused
    };
    let (first, second) = tokio::join!(manager.run(spec("")), second);
    assert!(first.is_ok(), "{first:?}");
    assert_eq!(
        holder(second),
        "a sandbox still being created with a different config"
    );
}

#[tokio::test]
async fn a_retry_with_the_same_config_waits_and_gets_the_first_id() {
    let double = Double::default();
    let manager = double.manager();
    double.hold_attach();
    let retry = async {
        double.called(Attach).await;
        let retry = manager.run(spec(""));
        let release = async {
            tokio::task::yield_now().await;
            double.release_attach();
        };
        tokio::join!(retry, release).0
    };
    let (first, retry) = tokio::join!(manager.run(spec("")), retry);
    assert_eq!(first.expect("first run"), retry.expect("retry"));
    let intents = double
        .log()
        .iter()
        .filter(|c| **c == Save(Creating))
        .count();
    assert_eq!(intents, 1, "the retry created nothing: {:?}", double.log());
}

#[tokio::test]
async fn a_ready_sandbox_holds_its_name() {
    let double = Double::default();
    let manager = double.manager();
    let id = manager.run(spec("")).await.expect("run");
    assert_eq!(holder(manager.run(spec("")).await), id);
    assert_eq!(holder(manager.run(spec("other")).await), id);
}

#[tokio::test]
async fn the_name_is_free_again_after_a_failed_run() {
    let double = Double::default();
    let manager = double.manager();
    double.fail(Attach);
    manager.run(spec("")).await.expect_err("ADD fails");
    double.heal();
    manager.run(spec("")).await.expect("the name is free");
}

#[tokio::test]
async fn the_name_is_free_again_after_remove() {
    let double = Double::default();
    let manager = double.manager();
    let first = manager.run(spec("")).await.expect("run");
    manager.remove(&first).await.expect("remove");
    let second = manager.run(spec("")).await.expect("the name is free");
    assert_ne!(first, second);
}

#[tokio::test]
async fn a_run_whose_rollback_failed_keeps_the_name() {
    let double = Double::default();
    let manager = double.manager();
    double.fail(Attach);
    double.fail(Detach { netns: false });
    manager.run(spec("")).await.expect_err("ADD fails");
    let kept = manager.list(&Default::default());
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].state, NotReady);
    assert_eq!(holder(manager.run(spec("")).await), kept[0].id);
}

// ---- rollback order ----

/// What a rollback does after a failure once the intent is recorded: the teardown, then
/// the record goes.
const ROLLBACK: [Call; 5] = [
    Save(Stopping),
    Detach { netns: true },
    RemoveNetns,
    Save(NotReady),
    Delete,
];

/// A Run's calls, in order, when nothing fails.
const RUN_STEPS: [Call; 7] = [
    Save(Creating),
    CreateNetns,
    Attach,
    Sysctls,
    Files,
    NriRun,
    Save(Ready),
];

#[tokio::test]
async fn a_run_does_its_steps_in_order() {
    let double = Double::default();
    double.manager().run(spec("")).await.expect("run");
    assert_eq!(double.log(), RUN_STEPS);
}

/// The calls of a Run whose `failing` step fails, from the happy path's steps: the steps
/// done so far, then the rollback.
fn undone(steps: &[Call], failing: Call) -> Vec<Call> {
    let done = steps
        .iter()
        .take_while(|c| **c != failing)
        .chain([&failing]);
    let mut calls: Vec<Call> = done.copied().collect();
    match failing {
        // The intent was not written: only the namespace made meanwhile goes.
        Save(Creating) => calls.extend([CreateNetns, RemoveNetns]),
        // No namespace to hand the DEL (it still runs, so IPAM frees the address).
        CreateNetns => calls.extend(ROLLBACK.map(|c| match c {
            Detach { .. } => Detach { netns: false },
            c => c,
        })),
        // The plugins accepted the pod: they are told it is gone before the teardown.
        Save(Ready) => calls.extend([NriRemove].iter().chain(&ROLLBACK)),
        _ => calls.extend(ROLLBACK),
    }
    calls
}

#[tokio::test]
async fn a_failure_at_each_step_undoes_exactly_what_was_done_in_reverse() {
    for failing in RUN_STEPS {
        let double = Double::default();
        let manager = double.manager();
        double.fail(failing);
        manager
            .run(spec(""))
            .await
            .expect_err("the injected failure");
        assert_eq!(
            double.log(),
            undone(&RUN_STEPS, failing),
            "failing {failing:?}"
        );
        let left = (double.records(), double.pins(), double.attachments());
        assert!(
            left.0.is_empty() && left.1.is_empty() && left.2.is_empty(),
            "{left:?}"
        );
        assert!(manager.list(&Default::default()).is_empty(), "{failing:?}");
    }
}

#[tokio::test]
async fn a_host_network_run_has_no_namespace_or_network_to_undo() {
    let double = Double::default();
    let mut host = spec("");
    host.host_network = true;
    double.fail(Files);
    double.manager().run(host).await.expect_err("files fail");
    let expected = [
        Save(Creating),
        Files,
        Save(Stopping),
        Save(NotReady),
        Delete,
    ];
    assert_eq!(double.log(), expected);
}

#[tokio::test]
async fn stop_then_remove_tell_nri_first_and_release_in_order() {
    let double = Double::default();
    let manager = double.manager();
    let id = manager.run(spec("")).await.expect("run");
    let ran = double.log().len();
    manager.stop(&id).await.expect("stop");
    manager.stop(&id).await.expect("a second stop does nothing");
    manager.remove(&id).await.expect("remove");
    let stop = [NriStop, Save(Stopping), Detach { netns: true }, RemoveNetns];
    let expected: Vec<Call> = stop
        .into_iter()
        .chain([Save(NotReady), NriRemove, Delete])
        .collect();
    assert_eq!(double.log()[ran..], expected);
    assert!(double.records().is_empty() && double.pins().is_empty());
}

// ---- recovery decisions ----

fn record(double: &Double, state: SandboxState, pinned: bool) -> Sandbox {
    let id = format!("{:064x}", state as u8 + 1);
    let netns = double.path_for(&id);
    if pinned {
        double.put_pin(&netns);
    }
    Sandbox {
        id,
        spec: spec(""),
        state,
        created_at: 1,
        netns_path: Some(netns),
        network: Some(NetworkAttachment::pending(NETWORK, "eth0")),
        last_error: None,
    }
}

/// How recovery left the records: its report, the calls after loading, the sandbox it
/// indexed first (`None`: none kept), and the manager it recovered.
struct Recovery {
    report: RecoveryReport,
    calls: Vec<Call>,
    kept: Option<Sandbox>,
    manager: Manager<Test>,
}

async fn recover(double: &Double) -> Recovery {
    let manager = double.manager();
    let report = manager.recover().await.expect("recover");
    let calls = double.log()[BEFORE.len()..].to_vec();
    let kept = manager
        .list(&Default::default())
        .first()
        .map(|s| (**s).clone());
    Recovery {
        report,
        calls,
        kept,
        manager,
    }
}

const BEFORE: [Call; 3] = [Load, KillStrays, CachedNetns];

#[tokio::test]
async fn recovery_rolls_back_an_interrupted_creation() {
    let double = Double::default();
    double.put_record(record(&double, Creating, true));
    let r = recover(&double).await;
    assert_eq!(double.log()[..3], BEFORE);
    assert_eq!(r.calls, ROLLBACK);
    assert_eq!((r.report.rolled_back, r.report.loaded), (1, 1));
    assert!(r.kept.is_none() && double.records().is_empty() && double.pins().is_empty());
}

#[tokio::test]
async fn recovery_keeps_a_creation_whose_rollback_failed() {
    let double = Double::default();
    double.put_record(record(&double, Creating, true));
    double.fail(Detach { netns: false });
    let r = recover(&double).await;
    assert_eq!(
        r.calls,
        [Save(Stopping), Detach { netns: true }, Save(NotReady)]
    );
    assert_eq!((r.report.failed_repairs, r.report.rolled_back), (1, 0));
    let kept = r.kept.expect("kept");
    assert_eq!(kept.state, NotReady);
    assert!(kept.last_error.is_some() && kept.holds_resources());
    assert_eq!(holder(r.manager.run(spec("")).await), kept.id);
}

#[tokio::test]
async fn recovery_keeps_a_creation_whose_record_cannot_be_deleted() {
    let double = Double::default();
    double.put_record(record(&double, Creating, true));
    double.fail(Delete);
    let r = recover(&double).await;
    assert_eq!(r.calls, ROLLBACK);
    assert_eq!(r.report.failed_repairs, 1);
    assert_eq!(r.kept.map(|s| s.state), Some(NotReady));
}

#[tokio::test]
async fn recovery_decides_by_state_and_pin() {
    let teardown = |netns| {
        vec![
            Save(Stopping),
            Detach { netns },
            RemoveNetns,
            Save(NotReady),
        ]
    };
    // (state, pinned, r.calls after loading, stopped, state r.kept, ready)
    let cases = [
        (Stopping, true, teardown(true), 1, NotReady, 0),
        (Stopping, false, teardown(false), 1, NotReady, 0),
        (Ready, true, vec![], 0, Ready, 1),
        // The namespace is gone (a reboot): torn down, DEL without it.
        (Ready, false, teardown(false), 1, NotReady, 0),
        // NOT_READY is r.kept as it is, even holding resources: Stop/Remove retry.
        (NotReady, true, vec![], 0, NotReady, 0),
        (NotReady, false, vec![], 0, NotReady, 0),
    ];
    for (state, pinned, expected, stopped, kept_state, ready) in cases {
        let double = Double::default();
        double.put_record(record(&double, state, pinned));
        let r = recover(&double).await;
        let case = format!("{state:?}, pinned {pinned}");
        assert_eq!(r.calls, expected, "{case}");
        assert_eq!(
            (r.report.stopped, r.report.ready),
            (stopped, ready),
            "{case}"
        );
        assert_eq!(r.kept.map(|s| s.state), Some(kept_state), "{case}");
    }
}

#[tokio::test]
async fn recovery_keeps_a_ready_host_network_sandbox() {
    let double = Double::default();
    let mut host = record(&double, Ready, false);
    host.netns_path = None;
    host.network = None;
    double.put_record(host);
    let r = recover(&double).await;
    assert!(r.calls.is_empty(), "{:?}", r.calls);
    assert_eq!((r.report.ready, r.report.stopped), (1, 0));
    assert_eq!(r.kept.map(|s| s.state), Some(Ready));
}

#[tokio::test]
async fn recovery_counts_unreadable_records_and_leaves_them() {
    let double = Double::default();
    double.put_unreadable_record();
    let r = recover(&double).await;
    assert_eq!((r.report.bad_records, r.report.loaded), (1, 0));
    assert!(r.calls.is_empty() && r.kept.is_none());
}

#[tokio::test]
async fn recovery_removes_pins_no_record_or_cache_entry_names() {
    let double = Double::default();
    let ready = record(&double, Ready, true);
    let orphan = double.path_for(&"e".repeat(64));
    let cached = double.path_for(&"c".repeat(64));
    double.put_pin(&orphan);
    double.put_pin(&cached);
    double.put_cached_netns(&cached);
    let ready_pin: PathBuf = ready.netns_path.clone().expect("pin");
    double.put_record(ready);
    let r = recover(&double).await;
    assert_eq!(r.calls, [RemoveNetns]);
    assert_eq!(r.report.orphan_netns_removed, 1);
    let left = double.pins();
    assert!(left.contains(&ready_pin) && left.contains(&cached) && !left.contains(&orphan));
}
