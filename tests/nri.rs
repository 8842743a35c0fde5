//! NRI through the real socket: crisp with `--nri on` in a test node, the real CNI plugins,
//! and `nri-test-plugin` (tests/nri-plugin/plugin.rs) as the node plugin, external (connected
//! to `--nri-socket`) or pre-registered (started from `--nri-plugin-dir` with fd 3).

mod support;

use std::path::Path;
use std::time::Duration;

use k8s_cri::v1 as cri;
use serde_json::Value;
use support::*;
use tonic::Code;

/// A node with NRI on (request timeout 1 s) and its daemon running.
async fn nri_node() -> (Node, NriDirs) {
    let mut node = Node::prepared(Conf::Default);
    let dirs = enable_nri(&mut node, 1);
    node.start_daemon().await;
    (node, dirs)
}

fn pod_ip(status: &cri::PodSandboxStatus) -> String {
    let network = status.network.as_ref().expect("status has a network");
    network.ip.clone()
}

/// Run → Stop → Stop → Remove → Remove reach the plugin as one Run, one Stop and one Remove,
/// delivered `via` the dedicated RPCs or StateChange, with the pod's metadata, its existing
/// netns and its IP; verbose Status and PodSandboxStatus show the plugin and its hook time.
async fn lifecycle_reaches_the_plugin(delivery: &str, via: &str) {
    let (node, dirs) = nri_node().await;
    let mut client = node.client().await;
    let log = node.dir.join("plugin.log");
    let option = format!("--delivery={delivery}");
    let plugin = TestPlugin::connect(&mut client, &dirs.socket, "20-watch", &log, &[&option]).await;

    let id = run_pod(&mut client, node.pod_config("nri-pod")).await;
    let (status, _) = status(&mut client, &id, false).await;
    let netns = netns_path(&mut client, &id).await;
    let hooks = verbose_info(&mut client, &id).await["nriHooks"].clone();
    stop_pod(&mut client, &id).await;
    stop_pod(&mut client, &id).await;
    remove_pod(&mut client, &id).await;
    remove_pod(&mut client, &id).await;

    let events: Vec<String> = pod_events(&log).into_iter().map(|(_, e, _)| e).collect();
    assert_eq!(
        events,
        ["RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"]
    );
    let run = &plugin.events("RunPodSandbox")[0];
    assert_eq!(run["via"], via);
    let pod = &run["pod"];
    assert_eq!(pod["id"], id.as_str());
    assert_eq!(pod["name"], "nri-pod");
    assert_eq!(pod["uid"], uid_of("nri-pod").as_str());
    assert_eq!(pod["namespace"], "default");
    assert_eq!(pod["labels"]["app"], "nri-pod");
    assert_eq!(pod["annotations"]["crisp.test/purpose"], "integration test");
    assert_eq!(
        pod["cgroup_parent"],
        format!("/kubepods/besteffort/pod{}", uid_of("nri-pod"))
    );
    assert_eq!(pod["netns"], netns.display().to_string().as_str());
    assert_eq!(
        pod["netns_exists"], true,
        "the netns exists when RunPodSandbox arrives"
    );
    assert_eq!(pod["ips"], serde_json::json!([pod_ip(&status)]));
    assert_eq!(
        hooks[0]["plugin"], "20-watch",
        "verbose PodSandboxStatus: {hooks}"
    );
    assert_eq!(hooks[0]["event"], "RunPodSandbox");
    assert!(hooks[0]["micros"].is_u64());
    let listed = &nri_status(&mut client).await["plugins"][0];
    assert_eq!(listed["name"], "watch");
    assert_eq!(listed["index"], "20");
    let events = serde_json::json!(["RUN_POD_SANDBOX", "STOP_POD_SANDBOX", "REMOVE_POD_SANDBOX"]);
    assert_eq!(listed["events"], events);
    assert_nothing_leaked(&node, "after Remove").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_stop_remove_reach_a_plugin_once_each_by_their_dedicated_rpcs() {
    lifecycle_reaches_the_plugin("dedicated", "dedicated").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_stop_remove_reach_an_old_plugin_once_each_by_state_change() {
    lifecycle_reaches_the_plugin("statechange", "StateChange").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn while_a_plugin_holds_run_the_pod_is_neither_listed_nor_found() {
    let (node, dirs) = nri_node().await;
    let mut client = node.client().await;
    let log = node.dir.join("plugin.log");
    let release = node.dir.join("release");
    let hold = format!("--on-run=hold:{}", release.display());
    let _plugin = TestPlugin::connect(&mut client, &dirs.socket, "20-hold", &log, &[&hold]).await;

    let mut running = node.client().await;
    let config = node.pod_config("held");
    let run = tokio::spawn(async move { run_pod(&mut running, config).await });
    let held = wait_for_event(&log, "RunPodSandbox").await;
    let id = held["pod"]["id"].as_str().expect("pod id").to_string();

    assert!(
        list(&mut client, None).await.is_empty(),
        "a held pod is listed"
    );
    let request = cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.clone(),
        verbose: false,
    };
    let err = client
        .pod_sandbox_status(request)
        .await
        .expect_err("held pod found");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    std::fs::write(&release, "").expect("release the hook");
    let ran = run.await.expect("Run task");
    assert_eq!(ran, id);
    assert_eq!(ids(&list(&mut client, None).await), [id.as_str()]);
    stop_pod(&mut client, &id).await;
    remove_pod(&mut client, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejecting_plugin_fails_the_run_by_name_and_the_one_that_accepted_is_told_remove() {
    let (node, dirs) = nri_node().await;
    let mut client = node.client().await;
    let log = node.dir.join("plugins.log");
    let socket = &dirs.socket;
    let _accepts = TestPlugin::connect(&mut client, socket, "05-accepts", &log, &[]).await;
    let reject = "--on-run=reject:no NIC left for this pod";
    let rejects = TestPlugin::connect(&mut client, socket, "10-rejects", &log, &[reject]).await;

    let says = [
        "NRI plugin 10-rejects",
        "no NIC left for this pod",
        "RunPodSandbox",
    ];
    run_fails_with(
        &mut client,
        node.pod_config("rejected"),
        Code::Unknown,
        &says,
    )
    .await;
    let events = pod_events(&log);
    let id = events[0].2.clone();
    let expected = [
        ("05-accepts", "RunPodSandbox"),
        ("10-rejects", "RunPodSandbox"),
        ("05-accepts", "RemovePodSandbox"),
    ];
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|(p, e, _)| (p.as_str(), e.as_str()))
        .collect();
    assert_eq!(seen, expected);
    assert!(events.iter().all(|(_, _, pod)| *pod == id), "{events:?}");
    assert_nothing_leaked(&node, "after the rejected Run").await;

    drop(rejects);
    let gone = eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move { (connected_plugins(&mut client).await == ["05-accepts"]).then_some(()) }
    })
    .await;
    assert!(gone.is_some(), "10-rejects still listed after it exited");
    let id = run_pod(&mut client, node.pod_config("rejected")).await;
    stop_pod(&mut client, &id).await;
    remove_pod(&mut client, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_plugin_is_disconnected_at_the_request_timeout_and_the_run_goes_on() {
    let (node, dirs) = nri_node().await;
    let mut client = node.client().await;
    let log = node.dir.join("plugin.log");
    let hang = "--on-run=hang";
    let _plugin = TestPlugin::connect(&mut client, &dirs.socket, "20-hangs", &log, &[hang]).await;

    let id = run_pod(&mut client, node.pod_config("goes-on")).await;
    assert!(connected_plugins(&mut client).await.is_empty());
    let logged = node.log();
    assert!(logged.contains("NRI plugin disconnected"), "{logged}");
    stop_pod(&mut client, &id).await;
    remove_pod(&mut client, &id).await;
    assert_eq!(pod_events(&log).len(), 1, "only the hung Run reached it");
}

fn synchronized_ids(plugin: &TestPlugin) -> Vec<String> {
    plugin
        .events("Synchronize")
        .iter()
        .flat_map(|sync| sync["pods"].as_array().cloned().unwrap_or_default())
        .filter_map(|pod| pod["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_connecting_late_is_synchronized_with_every_running_pod() {
    let (node, dirs) = nri_node().await;
    let mut client = node.client().await;
    let mut ids = Vec::new();
    for name in ["sync-a", "sync-b", "sync-c"] {
        ids.push(run_pod(&mut client, node.pod_config(name)).await);
    }
    let log = node.dir.join("plugin.log");
    let plugin = TestPlugin::connect(&mut client, &dirs.socket, "20-late", &log, &[]).await;

    let mut synced = synchronized_ids(&plugin);
    synced.sort();
    ids.sort();
    assert_eq!(synced, ids);
    let pods = plugin.events("Synchronize")[0]["pods"].clone();
    let all_have_netns = pods
        .as_array()
        .is_some_and(|p| p.iter().all(|p| p["netns_exists"] == true));
    assert!(all_have_netns, "{pods}");
    for id in &ids {
        stop_pod(&mut client, id).await;
        remove_pod(&mut client, id).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_connecting_during_a_run_learns_of_that_pod() {
    let (node, dirs) = nri_node().await;
    let mut client = node.client().await;
    let log = node.dir.join("plugins.log");
    let release = node.dir.join("release");
    let hold = format!("--on-run=hold:{}", release.display());
    let _holds = TestPlugin::connect(&mut client, &dirs.socket, "10-holds", &log, &[&hold]).await;
    let mut running = node.client().await;
    let config = node.pod_config("in-flight");
    let run = tokio::spawn(async move { run_pod(&mut running, config).await });
    let id = wait_for_event(&log, "RunPodSandbox").await["pod"]["id"].clone();

    let late_log = node.dir.join("late.log");
    let late = TestPlugin::connect(&mut client, &dirs.socket, "20-late", &late_log, &[]).await;
    std::fs::write(&release, "").expect("release the hook");
    let id_text = run.await.expect("Run task");
    assert_eq!(id, id_text.as_str());

    let in_sync = synchronized_ids(&late).contains(&id_text);
    let as_event = late
        .events("RunPodSandbox")
        .iter()
        .any(|e| e["pod"]["id"] == id);
    assert!(in_sync || as_event, "20-late never learned of {id_text}");
    assert!(!(in_sync && as_event), "20-late learned of {id_text} twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_are_called_in_index_order_whatever_order_they_connected_in() {
    let (node, dirs) = nri_node().await;
    let mut client = node.client().await;
    let log = node.dir.join("plugins.log");
    let _ten = TestPlugin::connect(&mut client, &dirs.socket, "10-second", &log, &[]).await;
    let _five = TestPlugin::connect(&mut client, &dirs.socket, "05-first", &log, &[]).await;

    let id = run_pod(&mut client, node.pod_config("ordered")).await;
    stop_pod(&mut client, &id).await;
    remove_pod(&mut client, &id).await;
    let seen: Vec<(String, String)> = pod_events(&log)
        .into_iter()
        .map(|(p, e, _)| (p, e))
        .collect();
    let expected: Vec<(String, String)> = ["RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"]
        .iter()
        .flat_map(|e| [("05-first", *e), ("10-second", *e)])
        .map(|(p, e)| (p.to_string(), e.to_string()))
        .collect();
    assert_eq!(seen, expected);
}

/// A plugin dir with the test plugin as `10-logger` (a symlink), a misnamed executable and a
/// README; `10-logger.conf` wins over `logger.conf`.
fn preregister(dirs: &NriDirs, log: &Path, on_run: &str) -> String {
    let plugin = dirs.plugin_dir.join("10-logger");
    std::os::unix::fs::symlink(plugin_bin(), &plugin).expect("link the plugin");
    std::os::unix::fs::symlink(plugin_bin(), dirs.plugin_dir.join("logger")).expect("link");
    std::fs::write(dirs.plugin_dir.join("README"), "not a plugin").expect("write README");
    let config = serde_json::json!({"log": log, "on-run": on_run}).to_string();
    std::fs::write(dirs.config_dir.join("10-logger.conf"), &config).expect("write conf");
    std::fs::write(
        dirs.config_dir.join("logger.conf"),
        "{\"log\": \"/nowhere\"}",
    )
    .expect("conf");
    config
}

fn configure_of(log: &Path) -> Value {
    let lines = log_lines(log);
    let configure = lines.iter().rev().find(|l| l["event"] == "Configure");
    configure
        .cloned()
        .unwrap_or_else(|| panic!("no Configure in {}", log.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preregistered_plugin_starts_with_fd3_and_its_config_before_cri_serves() {
    let mut node = Node::prepared(Conf::Default);
    let dirs = enable_nri(&mut node, 1);
    let log = node.dir.join("logger.log");
    let config = preregister(&dirs, &log, "accept");
    node.start_daemon().await;
    let mut client = node.client().await;

    // Registered before the CRI socket answered: listed on the first Status.
    assert_eq!(connected_plugins(&mut client).await, ["10-logger"]);
    let configure = configure_of(&log);
    assert_eq!(configure["config"], config.as_str());
    let env = serde_json::json!(["NRI_PLUGIN_IDX", "NRI_PLUGIN_NAME", "NRI_PLUGIN_SOCKET"]);
    assert_eq!(configure["env"], env);
    assert_eq!(configure["runtime_name"], "crisp");
    assert_eq!(configure["request_timeout"], 1000);
    assert_eq!(configure["registration_timeout"], 5000);
    let skipped = node.log();
    for file in ["logger", "README"] {
        let line = format!("nri-plugins/{file}");
        assert!(
            skipped.contains(&line),
            "no log line skipping {file}: {skipped}"
        );
    }
    let id = run_pod(&mut client, node.pod_config("prereg")).await;
    assert_eq!(pod_events(&log).len(), 1);
    stop_pod(&mut client, &id).await;
    remove_pod(&mut client, &id).await;

    let pid = configure["pid"].as_u64().expect("pid") as u32;
    node.stop().await;
    let events: Vec<Value> = log_lines(&log)
        .into_iter()
        .map(|l| l["event"].clone())
        .collect();
    assert!(
        events.ends_with(&["Shutdown".into(), "exit".into()]),
        "{events:?}"
    );
    assert!(!alive(pid), "the plugin crisp started outlived it");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_while_a_hook_is_held_is_repaired_on_restart_and_leaves_no_plugin() {
    let mut node = Node::prepared(Conf::Default);
    let dirs = enable_nri(&mut node, 30);
    let log = node.dir.join("logger.log");
    let never = node.dir.join("never-released");
    preregister(&dirs, &log, &format!("hold:{}", never.display()));
    node.start_daemon().await;
    let mut running = node.client().await;
    let config = node.pod_config("interrupted");
    let run = tokio::spawn(async move { try_run_pod(&mut running, config).await });
    let held = wait_for_event(&log, "RunPodSandbox").await;
    let first_pid = configure_of(&log)["pid"].as_u64().expect("pid") as u32;

    node.kill_hard();
    assert!(
        run.await.expect("Run task").is_err(),
        "the Run answered after a kill -9"
    );
    node.start_daemon().await;
    let mut client = node.client().await;
    assert!(
        !alive(first_pid),
        "the plugin held by the killed crisp was not killed"
    );
    assert!(list(&mut client, None).await.is_empty());
    assert_nothing_leaked(&node, "after the restart").await;
    let second = configure_of(&log);
    let second_pid = second["pid"].as_u64().expect("pid") as u32;
    assert_ne!(second_pid, first_pid);
    let synced: Vec<Value> = log_lines(&log)
        .into_iter()
        .filter(|l| l["event"] == "Synchronize")
        .collect();
    let pod = &held["pod"]["id"];
    let told = synced.iter().any(|s| {
        s["pods"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["id"] == *pod))
    });
    assert!(
        !told,
        "a plugin was told of the interrupted pod: {synced:?}"
    );

    node.stop().await;
    assert!(
        !alive(second_pid),
        "the restarted crisp's plugin outlived it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nri_metrics_count_plugins_and_hooks() {
    const METRICS_ADDR: &str = "127.0.0.1:9326";
    let mut node = Node::prepared(Conf::Default);
    let dirs = enable_nri(&mut node, 1);
    node.extra_args
        .extend(["--metrics-addr".to_string(), METRICS_ADDR.to_string()]);
    node.start_daemon().await;
    let mut client = node.client().await;
    let log = node.dir.join("plugins.log");
    let socket = &dirs.socket;
    let _accepts = TestPlugin::connect(&mut client, socket, "05-ok", &log, &[]).await;
    let reject = "--on-run=reject:no";
    let _rejects = TestPlugin::connect(&mut client, socket, "10-no", &log, &[reject]).await;
    let _ = try_run_pod(&mut client, node.pod_config("counted")).await;

    let text = curl_in_node(&node, &format!("http://{METRICS_ADDR}/metrics"));
    assert_eq!(sample(&text, "crisp_nri_plugins "), Some(2.0), "{text}");
    let failures = "crisp_nri_hook_failures_total{plugin=\"10-no\",event=\"RunPodSandbox\"}";
    assert_eq!(sample(&text, failures), Some(1.0), "{text}");
    let took = "crisp_nri_hook_duration_seconds_count{plugin=\"05-ok\",event=\"RunPodSandbox\"}";
    assert_eq!(sample(&text, took), Some(1.0), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preregistered_plugin_that_never_registers_is_killed_and_crisp_serves_anyway() {
    let mut node = Node::prepared(Conf::Default);
    let dirs = enable_nri(&mut node, 1);
    node.extra_args
        .extend(["--nri-registration-timeout".into(), "1".into()]);
    // A stand-in plugin that starts and says nothing (NRI_PLUGIN_SOCKET=3 unread).
    let pid_file = node.dir.join("silent.pid");
    let script = format!(
        "#!/bin/sh\necho $$ > {}\nexec /bin/sleep 600\n",
        pid_file.display()
    );
    let silent = dirs.plugin_dir.join("30-silent");
    std::fs::write(&silent, script).expect("write the stand-in");
    let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&silent, executable).expect("chmod");
    node.start_daemon().await;
    let mut client = node.client().await;

    assert!(connected_plugins(&mut client).await.is_empty());
    let logged = node.log();
    assert!(logged.contains("did not register within 1s"), "{logged}");
    assert!(
        logged.contains("killing an NRI plugin that did not register"),
        "{logged}"
    );
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    let gone = eventually(Duration::from_secs(5), || async {
        (!alive(pid)).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the silent plugin {pid} still runs");
    let id = run_pod(&mut client, node.pod_config("without-plugins")).await;
    stop_pod(&mut client, &id).await;
    remove_pod(&mut client, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_nri_socket_is_private_and_a_live_one_is_not_taken_over() {
    let (node, dirs) = nri_node().await;
    let mode = std::fs::metadata(&dirs.socket)
        .expect("NRI socket")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // A second crisp of its own (socket, root) that wants the same NRI socket refuses.
    let mut second = node.bare_daemon_command();
    second
        .arg("--socket")
        .arg(node.dir.join("second.sock"))
        .arg("--root")
        .arg(node.dir.join("root2"))
        .arg("--netns-dir")
        .arg(&node.netns_dir)
        .arg("--cni-conf-dir")
        .arg(&node.conf_dir)
        .arg("--cni-bin-dir")
        .arg(node.cni_bin_dirs())
        .args(["--nri", "on", "--nri-socket"])
        .arg(&dirs.socket)
        .arg("--nri-plugin-dir")
        .arg(&dirs.plugin_dir);
    let (exit, text) = run_second(second).await;
    assert!(!exit.success(), "second crisp exited {exit}: {text}");
    let socket = dirs.socket.display().to_string();
    assert!(
        text.contains(&socket),
        "the refusal names the NRI socket: {text}"
    );

    let mut client = node.client().await;
    let plugin_log = node.dir.join("plugin.log");
    let _plugin =
        TestPlugin::connect(&mut client, &dirs.socket, "20-still", &plugin_log, &[]).await;
}
