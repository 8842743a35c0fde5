//! Faults through the real socket: plugins that hang, crash after allocating an IP, print
//! garbage, return CNI errors, exit silently, are missing or not executable; a broken conf
//! dir; a missing or read-only state or netns dir; a DEL that fails on Stop; a second crisp
//! on the same root; a CNI cache entry whose sandbox record was lost. Each case checks the
//! exact gRPC code, that the message names the plugin or file and the cause, that nothing
//! leaked, and that crisp is still serving.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tonic::Code;

/// Nothing left anywhere: no pin, IP file, record, cache entry, veth or listed sandbox.
async fn assert_nothing_leaked_nor_listed(node: &Node, what: &str) {
    let left = node.leftovers();
    assert!(left.is_empty(), "{what}: leaked {left:?}");
    assert!(node.veths().is_empty(), "{what}: veths {:?}", node.veths());
    let mut c = node.client().await;
    assert!(list(&mut c, None).await.is_empty(), "{what}: still listed");
}

/// crisp still serves: with the default conf back, a pod runs, stops and is removed.
async fn assert_still_serving(node: &Node) {
    node.write_conf("10-crisp-test.conflist", &node.conflist(vec![portmap()]));
    for f in list_conf(&node.conf_dir) {
        if !f.ends_with("10-crisp-test.conflist") {
            std::fs::remove_file(&f).expect("remove extra conf");
        }
    }
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("after-fault")).await;
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    assert_nothing_leaked_nor_listed(node, "after the recovery pod").await;
}

fn list_conf(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// RunPodSandbox of pod `name` must fail with `code` and a message holding every piece of
/// `says`; returns the message.
async fn run_fails(node: &Node, name: &str, code: Code, says: &[&str]) -> String {
    let mut c = node.client().await;
    let err = run_fails_with(&mut c, node.pod_config(name), code, says).await;
    err.message().to_string()
}

/// A plugin entry with a `stateDir` the shell stand-ins write to.
fn with_state(node: &Node, plugin: &str) -> Value {
    json!({ "type": plugin, "stateDir": node.dir })
}

#[tokio::test]
async fn hung_plugin_is_killed_with_its_group_and_rolled_back() {
    let node = Node::start_with_args(Conf::Empty, &["--cni-plugin-timeout", "1"]).await;
    node.write_conf(
        "10-crisp-test.conflist",
        &node.conflist(vec![with_state(&node, "hang")]),
    );
    run_fails(
        &node,
        "hang",
        Code::DeadlineExceeded,
        &[
            "plugin hang ADD",
            "timed out after 1s",
            "process group was killed",
        ],
    )
    .await;
    // The plugin's own child (sleep 3600) died with the group.
    let pid: i32 = std::fs::read_to_string(node.dir.join("hang-child.pid"))
        .expect("hang wrote its child's pid")
        .trim()
        .parse()
        .expect("pid");
    let gone = eventually(Duration::from_secs(5), || async move {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the hung plugin's child {pid} still runs");
    assert_nothing_leaked_nor_listed(&node, "hang").await;
    assert_still_serving(&node).await;
}

#[tokio::test]
async fn plugin_crashing_after_taking_an_ip_gives_it_back() {
    let node = Node::start_with(Conf::Empty).await;
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [{
            "type": "crash-after-ipam",
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": SUBNET }]],
                "dataDir": node.ipam_dir,
            }
        }]
    });
    node.write_conf("10-crisp-test.conflist", &conf.to_string());
    run_fails(
        &node,
        "crash",
        Code::Internal,
        &[
            "plugin crash-after-ipam ADD failed",
            "killed by signal 9",
            "address allocated, now dying",
        ],
    )
    .await;
    // The rollback's DEL released the address the crashed ADD had taken.
    assert_nothing_leaked_nor_listed(&node, "crash-after-ipam").await;
    assert_still_serving(&node).await;
}

#[tokio::test]
async fn garbage_output_is_internal_naming_the_plugin() {
    let node = Node::start_with(Conf::After(vec![stand_in("garbage")])).await;
    run_fails(
        &node,
        "garbage",
        Code::Internal,
        &["plugin garbage ADD answered something that is not a CNI result"],
    )
    .await;
    assert_nothing_leaked_nor_listed(&node, "garbage").await;
    assert_still_serving(&node).await;
}

#[tokio::test]
async fn cni_error_json_is_internal_with_code_and_message() {
    let node = Node::start_with(Conf::After(vec![stand_in("fail-add")])).await;
    run_fails(
        &node,
        "cni-error",
        Code::Internal,
        &[
            "plugin fail-add ADD failed",
            "CNI error code 11",
            "deliberate stand-in failure",
        ],
    )
    .await;
    assert_nothing_leaked_nor_listed(&node, "fail-add").await;
    assert_still_serving(&node).await;
}

#[tokio::test]
async fn silent_non_zero_exit_is_internal_with_status_and_stderr() {
    let node = Node::start_with(Conf::After(vec![stand_in("exit-silent")])).await;
    run_fails(
        &node,
        "silent",
        Code::Internal,
        &[
            "plugin exit-silent ADD failed",
            "exit status 3",
            "lost my words",
        ],
    )
    .await;
    assert_nothing_leaked_nor_listed(&node, "exit-silent").await;
    assert_still_serving(&node).await;
}

#[tokio::test]
async fn missing_plugin_is_failed_precondition_naming_it_and_the_dirs() {
    let node = Node::start_with(Conf::After(vec![stand_in("no-such-plugin")])).await;
    let dirs = node.cni_bin_dirs();
    run_fails(
        &node,
        "missing",
        Code::FailedPrecondition,
        &["\"no-such-plugin\" not found", &dirs],
    )
    .await;
    assert_nothing_leaked_nor_listed(&node, "missing plugin").await;
    assert_still_serving(&node).await;
}

#[tokio::test]
async fn non_executable_plugin_is_failed_precondition_naming_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let node = Node::start_with(Conf::Empty).await;
    let file = node.bin_dir.join("not-exec");
    std::fs::copy(node.bin_dir.join("noop"), &file).expect("copy");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    node.write_conf(
        "10-crisp-test.conflist",
        &node.conflist(vec![stand_in("not-exec")]),
    );
    let shown = format!("{} exists but is not an executable file", file.display());
    run_fails(&node, "not-exec", Code::FailedPrecondition, &[&shown]).await;
    assert_nothing_leaked_nor_listed(&node, "not executable").await;
    assert_still_serving(&node).await;
}

#[tokio::test]
async fn broken_conf_json_is_failed_precondition_naming_the_file() {
    let node = Node::start_with(Conf::Empty).await;
    node.write_conf(
        "10-broken.conflist",
        "{\"cniVersion\": \"1.0.0\", \"name\": ",
    );
    run_fails(
        &node,
        "broken-conf",
        Code::FailedPrecondition,
        &["network not ready", "10-broken.conflist"],
    )
    .await;
    assert_nothing_leaked_nor_listed(&node, "broken conf").await;
    assert_still_serving(&node).await;
}

#[tokio::test]
async fn missing_state_dir_is_internal_naming_the_record() {
    let node = Node::start().await;
    let records = node.root.join("sandboxes");
    std::fs::remove_dir_all(&records).expect("remove the record dir");
    let shown = format!("writing sandbox record {}", records.display());
    run_fails(&node, "no-state", Code::Internal, &[&shown, "No such file"]).await;
    assert!(!records.exists(), "nothing recreated it behind our back");
    std::fs::create_dir(&records).expect("put it back");
    assert_nothing_leaked_nor_listed(&node, "missing state dir").await;
    assert_still_serving(&node).await;
}

/// A read-only bind mount over a directory, undone on drop (also when the test fails).
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn over(dir: &Path) -> ReadOnly {
        run(Command::new("mount").arg("--bind").arg(dir).arg(dir));
        let guard = ReadOnly(dir.to_owned());
        run(Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(dir));
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(&self.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn read_only_state_dir_is_internal_and_creates_nothing() {
    let node = Node::start().await;
    let records = node.root.join("sandboxes");
    {
        let _ro = ReadOnly::over(&records);
        run_fails(
            &node,
            "ro-state",
            Code::Internal,
            &["writing sandbox record", "Read-only file system"],
        )
        .await;
    }
    assert_nothing_leaked_nor_listed(&node, "read-only state dir").await;
    assert_still_serving(&node).await;
}

#[tokio::test]
async fn read_only_netns_dir_is_internal_and_rolls_back() {
    let node = Node::start().await;
    {
        let _ro = ReadOnly::over(&node.netns_dir);
        let shown = format!("creating network namespace {}", node.netns_dir.display());
        run_fails(
            &node,
            "ro-netns",
            Code::Internal,
            &[&shown, "Read-only file system"],
        )
        .await;
    }
    assert_nothing_leaked_nor_listed(&node, "read-only netns dir").await;
    assert_still_serving(&node).await;
}

#[tokio::test]
async fn missing_netns_dir_is_made_again() {
    let node = Node::start().await;
    std::fs::remove_dir(&node.netns_dir).expect("remove the empty netns dir");
    assert_still_serving(&node).await;
}

/// DEL fails on Stop: the sandbox stays NOT_READY with the error in verbose status and keeps
/// its IP and namespace on record; Remove refuses to forget it; a restart keeps it; once DEL
/// works, Stop and Remove release everything.
#[tokio::test]
async fn failed_del_is_kept_visible_and_retried() {
    let node = Node::start_with(Conf::Empty).await;
    node.write_conf(
        "10-crisp-test.conflist",
        &node.conflist(vec![with_state(&node, "fail-del")]),
    );
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("del-fails")).await;
    let marker = node.dir.join("fail-del");
    std::fs::write(&marker, "").expect("marker");

    let stop = c
        .stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect_err("Stop must fail while DEL fails");
    assert_eq!(stop.code(), Code::Internal, "{}", stop.message());
    for piece in [
        id.as_str(),
        "CNI DEL",
        "plugin fail-del DEL failed",
        "deliberate DEL failure",
    ] {
        assert!(
            stop.message().contains(piece),
            "{piece}: {}",
            stop.message()
        );
    }
    let (st, _) = status(&mut c, &id, false).await;
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    let info = verbose_info(&mut c, &id).await;
    assert!(
        info["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("deliberate DEL failure")),
        "{info}"
    );
    let held = node.leftovers();
    assert_eq!(held.ip_files.len(), 1, "the IP is still held: {held:?}");
    assert_eq!(
        held.netns_files.len(),
        1,
        "the netns is still held: {held:?}"
    );

    let remove = c
        .remove_pod_sandbox(k8s_cri::v1::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect_err("Remove must not forget what it could not release");
    assert_eq!(remove.code(), Code::Internal, "{}", remove.message());
    assert_eq!(ids(&list(&mut c, None).await), vec![id.clone()]);
    assert_eq!(node.leftovers().records.len(), 1);

    // Across a restart the sandbox and its error are still there.
    drop(c);
    let mut node = node;
    node.restart().await;
    let mut c = node.client().await;
    let info = verbose_info(&mut c, &id).await;
    assert!(info["lastError"].as_str().is_some(), "{info}");

    std::fs::remove_file(&marker).expect("let DEL work");
    stop_pod(&mut c, &id).await;
    let info = verbose_info(&mut c, &id).await;
    assert!(info["lastError"].is_null(), "error cleared: {info}");
    remove_pod(&mut c, &id).await;
    assert_nothing_leaked_nor_listed(&node, "after DEL works again").await;
    assert_still_serving(&node).await;
}

/// One crisp per root: a second one refuses to start and names the first one's pid.
#[tokio::test]
async fn second_instance_on_the_same_root_refuses_naming_the_pid() {
    let node = Node::start().await;
    let pid = node.pid().expect("running");
    let out = Command::new(env!("CARGO_BIN_EXE_crisp"))
        .arg("--socket")
        .arg(node.dir.join("second.sock"))
        .arg("--root")
        .arg(&node.root)
        .arg("--netns-dir")
        .arg(&node.netns_dir)
        .arg("--cni-conf-dir")
        .arg(&node.conf_dir)
        .output()
        .expect("run a second crisp");
    assert!(!out.status.success(), "the second crisp started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("another crisp (pid {pid}) already uses root")),
        "{stderr}"
    );
    assert!(!node.dir.join("second.sock").exists());
    assert_still_serving(&node).await;
}

/// A CNI cache entry whose sandbox record is gone (state lost while a pod was up) is torn
/// down with CNI DEL by the GC pass right after start, releasing its IP, veth and port rules;
/// recovery removes its pin; both repairs are logged, and recovery logs its time.
#[tokio::test]
async fn cache_entry_without_a_record_is_deleted_at_start() {
    let mut node = Node::start().await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("lost")).await;
    drop(c);
    node.kill_hard();
    std::fs::remove_file(node.root.join("sandboxes").join(format!("{id}.json")))
        .expect("lose the record");
    assert_eq!(node.leftovers().ip_files.len(), 1);
    node.start_daemon().await;
    let repaired = eventually(Duration::from_secs(30), || async {
        node.leftovers().is_empty().then_some(())
    })
    .await;
    assert!(repaired.is_some(), "left: {:?}", node.leftovers());
    assert_nothing_leaked_nor_listed(&node, "after recovery").await;
    let log = node.log();
    assert!(
        log.contains("tore down a cached CNI attachment that no sandbox owns") && log.contains(&id),
        "the repair is logged with what and why"
    );
    // The DEL runs while the pin still exists, so the plugin removes the veth itself
    // rather than leaving it to the kernel's asynchronous namespace teardown.
    let torn_down = log.find("tore down a cached CNI attachment");
    let unpinned = log.find("removed a namespace pin no sandbox record names");
    assert!(
        matches!((torn_down, unpinned), (Some(d), Some(u)) if d < u),
        "the pin is removed after the DEL"
    );
    assert!(log.contains("recovery finished") && log.contains("millis"));
    assert_still_serving(&node).await;
}
