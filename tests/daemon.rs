//! The daemon as an operator meets it: its socket, signals, restarts over changed state, the
//! network readiness it reports, and the RPCs it does not serve.

mod support;

use std::os::unix::fs::PermissionsExt;

use k8s_cri::v1 as cri;
use serde_json::Value;
use support::*;
use tonic::Code;

/// The socket is created mode 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_private() {
    let node = Node::start().await;
    let mode = std::fs::metadata(&node.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
}

/// A second crisp on the same socket refuses to start with a message naming what is taken —
/// the socket (with its own root) or the root dir (with the same one) — and the first keeps
/// serving its pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_socket_is_not_taken_over() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("first")).await;

    let other_root = node.dir.join("root2");
    let (exit, text) = run_second(node.daemon_command_with_root(&other_root)).await;
    assert!(!exit.success(), "second crisp exited {exit}: {text}");
    assert!(
        text.contains(&node.socket.display().to_string()),
        "the refusal names the socket: {text}"
    );
    let (exit, text) = run_second(node.daemon_command()).await;
    assert!(!exit.success(), "second crisp exited {exit}: {text}");
    assert!(
        text.contains(&node.socket.display().to_string())
            || text.contains(&node.root.display().to_string()),
        "the refusal names the socket or the root: {text}"
    );

    let mut c = node.client().await;
    let (st, _) = status(&mut c, &id, false).await;
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(list(&mut c, None).await.len(), 1);
    remove_pod(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// A stale socket file (nothing listening) is replaced at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_is_replaced() {
    let mut node = Node::start().await;
    node.stop().await;
    let _ = std::fs::remove_file(&node.socket);
    drop(std::os::unix::net::UnixListener::bind(&node.socket).expect("bind stale socket"));
    assert!(node.socket.exists(), "stale socket file left behind");
    node.start_daemon().await;
    let mut c = node.client().await;
    let v = c
        .version(cri::VersionRequest {
            version: String::new(),
        })
        .await
        .expect("Version after replacing a stale socket")
        .into_inner();
    assert_eq!(v.runtime_name, "crisp");
}

/// SIGINT, like SIGTERM, exits 0 and keeps the pods for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_zero_and_keeps_pods() {
    let mut node = Node::start().await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("int")).await;
    drop(c);
    node.stop_with(libc::SIGINT).await;
    node.start_daemon().await;
    let mut c = node.client().await;
    let (st, _) = status(&mut c, &id, false).await;
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    remove_pod(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// A READY sandbox whose namespace vanished while crisp was down comes back NOTREADY with no
/// IP; Stop and Remove still release its host-local IP (DEL from the cached result) and leave
/// nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_netns_becomes_notready_after_restart() {
    let mut node = Node::start().await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("vanish")).await;
    let netns = netns_path(&mut c, &id).await;
    drop(c);
    node.stop().await;

    nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH).expect("umount pod netns");
    std::fs::remove_file(&netns).expect("remove pod netns pin");
    node.start_daemon().await;

    let mut c = node.client().await;
    let (st, _) = status(&mut c, &id, false).await;
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    assert_eq!(st.network.map(|n| n.ip).unwrap_or_default(), "");
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    let left = node.leftovers();
    assert!(left.is_empty(), "{left:?}");
    // The test unpinned the namespace itself: the kernel removes the veth with it, in its
    // own time (asynchronous namespace teardown).
    let veths = node.veths_left_after_teardown().await;
    assert!(veths.is_empty(), "{veths:?}");
}

fn network_condition(st: &cri::StatusResponse) -> cri::RuntimeCondition {
    st.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady condition")
        .clone()
}

/// A conf whose plugin binary is in none of the bin dirs is not ready: NetworkReady false,
/// naming the plugin; a Run fails, names it, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_plugin_is_network_not_ready() {
    let node = Node::start_with(Conf::After(vec![stand_in("no-such-plugin")])).await;
    let mut c = node.client().await;
    let st = c
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let net = network_condition(&st);
    assert!(!net.status, "{net:?}");
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(
        net.message.contains("no-such-plugin"),
        "message names the missing plugin: {}",
        net.message
    );
    let err = c
        .run_pod_sandbox(run_req(node.pod_config("nope")))
        .await
        .expect_err("Run without a usable network");
    assert!(
        err.message().contains("no-such-plugin") || err.message().contains("not ready"),
        "{err:?}"
    );
    assert!(list(&mut c, None).await.is_empty());
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// Status{verbose:true} fills `info` with JSON values describing the effective config: the conf
/// dir and the loaded network; non-verbose leaves it empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_status_shows_effective_config() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let r = c
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    assert!(!r.info.is_empty(), "verbose Status has info");
    let mut all = String::new();
    for (k, v) in &r.info {
        serde_json::from_str::<Value>(v)
            .unwrap_or_else(|e| panic!("info[{k}] is not JSON ({e}): {v}"));
        all.push_str(v);
    }
    assert!(
        all.contains(&node.conf_dir.display().to_string()),
        "info names the conf dir: {all}"
    );
    assert!(all.contains(NETWORK), "info names the network: {all}");
    assert!(
        all.contains("10-crisp-test.conflist"),
        "info names the file: {all}"
    );
}

/// RPCs crisp does not serve say so (Unimplemented with a message) instead of answering Ok;
/// the image calls kubelet makes answer as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_rpcs_say_so() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let err = c
        .create_container(cri::CreateContainerRequest::default())
        .await
        .expect_err("CreateContainer");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(
        err.message().contains("crisp runs pod sandboxes only"),
        "{}",
        err.message()
    );
    let err = c
        .start_container(cri::StartContainerRequest {
            container_id: "x".into(),
        })
        .await
        .expect_err("StartContainer");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");

    let mut im = node.images().await;
    let err = im
        .pull_image(cri::PullImageRequest::default())
        .await
        .expect_err("PullImage");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(!err.message().is_empty());
    let err = im
        .remove_image(cri::RemoveImageRequest::default())
        .await
        .expect_err("RemoveImage");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(!err.message().is_empty());
    let st = im
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "registry.k8s.io/pause:3.9".into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus answers (empty)")
        .into_inner();
    assert!(st.image.is_none(), "{st:?}");
}

/// A RunPodSandbox naming a runtime handler crisp does not have is refused and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_runtime_handler_is_refused() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let err = c
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(node.pod_config("kata")),
            runtime_handler: "kata-qemu".into(),
        })
        .await
        .expect_err("unknown runtime handler");
    assert_ne!(err.code(), Code::Ok);
    assert!(err.message().contains("kata-qemu"), "{}", err.message());
    assert!(list(&mut c, None).await.is_empty());
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// SIGTERM finishes in-flight calls but does not wait for idle clients that never hang up: a
/// connection that sent only the HTTP/2 preface and SETTINGS, and one that sent nothing at all
/// (think of a stopped kubelet) must not keep crisp from exiting 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_idle_clients() {
    use std::io::Write;
    let mut node = Node::start().await;
    let silent = std::os::unix::net::UnixStream::connect(&node.socket).expect("connect");
    let mut h2 = std::os::unix::net::UnixStream::connect(&node.socket).expect("connect");
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    // An empty SETTINGS frame: length 0, type 4, flags 0, stream 0.
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    // Make sure the daemon has accepted both before the signal.
    let mut c = node.client().await;
    c.version(cri::VersionRequest {
        version: String::new(),
    })
    .await
    .expect("Version");
    drop(c);
    node.stop().await;
    drop((silent, h2));
}

/// `--version` and `--help` work without a socket, and `--help` names every documented flag.
#[test]
fn version_and_help() {
    let out = run(std::process::Command::new(env!("CARGO_BIN_EXE_crisp")).arg("--version"));
    assert!(out.contains("0.1.0"), "{out}");
    let out = run(std::process::Command::new(env!("CARGO_BIN_EXE_crisp")).arg("--help"));
    for flag in [
        "--socket",
        "--root",
        "--netns-dir",
        "--cni-conf-dir",
        "--cni-bin-dir",
        "--config",
        "--log-level",
        "--log-format",
    ] {
        assert!(out.contains(flag), "--help names {flag}: {out}");
    }
    for env in [
        "CRISP_SOCKET",
        "CRISP_ROOT",
        "CRISP_NETNS_DIR",
        "CRISP_CNI_CONF_DIR",
        "CRISP_CNI_BIN_DIR",
    ] {
        assert!(out.contains(env), "--help names {env}: {out}");
    }
}

/// Configuration from a TOML file (kebab-case keys) and CRISP_* variables, with a flag beating
/// both; `log-format = "json"` makes every log line a JSON object. Pods made under the flags
/// are found again under this configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_env_and_flags() {
    let mut node = Node::start().await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("conf")).await;
    drop(c);
    node.stop().await;

    let toml = format!(
        "netns-dir = {:?}\ncni-conf-dir = {:?}\ncni-bin-dir = {:?}\nlog-level = \
         \"debug\"\nlog-format = \"json\"\nroot = \"/nonexistent/overridden-by-env\"\n",
        node.netns_dir.display().to_string(),
        node.conf_dir.display().to_string(),
        node.cni_bin_dirs(),
    );
    let file = node.dir.join("crisp.toml");
    std::fs::write(&file, toml).unwrap();
    let log_len = std::fs::metadata(&node.log_path).unwrap().len() as usize;
    let mut cmd = node.bare_daemon_command();
    cmd.env("CRISP_CONFIG", &file)
        .env("CRISP_ROOT", &node.root)
        .env("CRISP_SOCKET", node.dir.join("env-loses.sock"))
        .arg("--socket")
        .arg(&node.socket);
    node.start_daemon_with(cmd).await;

    let mut c = node.client().await;
    let (st, _) = status(&mut c, &id, false).await;
    assert_eq!(
        st.state,
        PodSandboxState::SandboxReady as i32,
        "same root, same pod"
    );
    assert!(
        !node.dir.join("env-loses.sock").exists(),
        "the flag beats the env"
    );
    remove_pod(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());

    let log = node.log();
    let lines: Vec<&str> = log[log_len..].lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "the daemon logged something");
    for l in lines {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("log line not JSON ({e}): {l}"));
    }
}
