//! Pod sandbox lifecycle against the real daemon, real namespaces and the real CNI plugins.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use k8s_cri::v1 as cri;
use support::*;
use tonic::Code;

fn no_veths(node: &Node) -> Vec<String> {
    node.node_links()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect()
}

fn random_id() -> String {
    let mut s = String::new();
    let mut x = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    while s.len() < 64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{x:016x}"));
    }
    s.truncate(64);
    s
}

/// Run → READY with an IP in the pod subnet, echoed metadata/labels/annotations/namespace
/// options → listed → Stop → NOTREADY with ip "" and the netns gone → Remove → NotFound and
/// nothing left behind (netns pin, host-local IP, record, CNI cache, veth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let config = node.pod_config("life");
    let id = run_pod(&mut c, config.clone()).await;

    let (st, info) = status(&mut c, &id, false).await;
    assert_eq!(st.id, id);
    assert!(
        info.is_empty(),
        "info must be empty when not verbose: {info:?}"
    );
    assert_ready_and_echoes(&st, &config);
    let netns = verbose_names_the_pin(&node, &mut c, &id).await;
    let items = list(&mut c, None).await;
    assert_eq!(ids(&items), vec![id.clone()]);
    assert_listed_ready(&items[0], &config);
    assert_one_of_each_held(&node);

    stop_pod(&mut c, &id).await;
    assert_stopped_and_released(&node, &mut c, &id, &netns).await;

    remove_pod(&mut c, &id).await;
    assert_removed(&node, &mut c, &id).await;
}

/// READY, with an IP in the pod subnet and the config's metadata, labels, annotations and
/// namespace options echoed.
fn assert_ready_and_echoes(st: &cri::PodSandboxStatus, config: &cri::PodSandboxConfig) {
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(st.metadata, config.metadata);
    assert!(st.created_at > 0, "created_at must be ns > 0");
    let ip: Ipv4Addr = st
        .network
        .as_ref()
        .expect("network")
        .ip
        .parse()
        .expect("network.ip is an IPv4 address");
    assert_eq!(ip.octets()[..3], [10, 99, 0], "ip {ip} not in {SUBNET}");
    assert_eq!(st.labels, config.labels);
    assert_eq!(st.annotations, config.annotations);
    assert_eq!(st.runtime_handler, "");
    let want_ns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    let got_ns = st
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.clone());
    assert_eq!(
        got_ns, want_ns,
        "linux.namespaces.options echoes the config"
    );
}

/// Verbose status names an existing pin under --netns-dir, the CNI result and the config;
/// returns the pin.
async fn verbose_names_the_pin(node: &Node, c: &mut Client, id: &str) -> std::path::PathBuf {
    let info = verbose_info(c, id).await;
    let netns = std::path::PathBuf::from(info["netnsPath"].as_str().expect("netnsPath"));
    assert!(
        netns.starts_with(&node.netns_dir),
        "netns {} not under --netns-dir",
        netns.display()
    );
    assert!(netns.exists());
    assert!(!info["cniResult"].is_null(), "info has cniResult: {info}");
    assert!(!info["config"].is_null(), "info has config: {info}");
    netns
}

fn assert_listed_ready(item: &cri::PodSandbox, config: &cri::PodSandboxConfig) {
    assert_eq!(item.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(item.metadata, config.metadata);
    assert!(item.created_at > 0);
    assert_eq!(item.labels, config.labels);
    assert_eq!(item.annotations, config.annotations);
}

/// A running pod holds one pin, one host-local IP, one record and one veth on the bridge.
fn assert_one_of_each_held(node: &Node) {
    let before = node.leftovers();
    assert_eq!(before.netns_files.len(), 1, "{before:?}");
    assert_eq!(before.ip_files.len(), 1, "{before:?}");
    assert_eq!(before.records.len(), 1, "{before:?}");
    assert_eq!(no_veths(node).len(), 1, "one veth on the bridge");
}

/// After Stop: NOTREADY with ip "", still listed, and the pin, the IP and the veth gone.
async fn assert_stopped_and_released(
    node: &Node,
    c: &mut Client,
    id: &str,
    netns: &std::path::Path,
) {
    let (st, _) = status(c, id, false).await;
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    assert_eq!(st.network.map(|n| n.ip).unwrap_or_default(), "");
    assert!(st.created_at > 0);
    assert!(!netns.exists(), "netns pin removed on stop");
    let after_stop = node.leftovers();
    assert!(after_stop.netns_files.is_empty(), "{after_stop:?}");
    assert!(
        after_stop.ip_files.is_empty(),
        "IP released on stop: {after_stop:?}"
    );
    assert!(no_veths(node).is_empty(), "veth gone after stop");
    let items = list(c, None).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].state, PodSandboxState::SandboxNotready as i32);
}

/// After Remove: Status is NotFound, List is empty and nothing is left on the node.
async fn assert_removed(node: &Node, c: &mut Client, id: &str) {
    let err = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        })
        .await
        .expect_err("status after remove");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(list(c, None).await.is_empty());
    let left = node.leftovers();
    assert!(left.is_empty(), "leftovers after remove: {left:?}");
}

/// The IP crisp reports is really on the pod's eth0 (read inside the pod's namespace), with `lo`
/// up and a default route through the bridge gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_eth0_has_reported_ip() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("eth0")).await;
    let (st, _) = status(&mut c, &id, false).await;
    let ip: Ipv4Addr = st.network.unwrap().ip.parse().unwrap();
    let netns = netns_path(&mut c, &id).await;

    assert_eq!(ipv4_of(&netns, "eth0"), vec![ip]);
    let links = links_in_netns(&netns);
    assert!(links.contains(&"lo".to_string()), "{links:?}");
    assert!(links.contains(&"eth0".to_string()), "{links:?}");
    assert_eq!(ipv4_of(&netns, "lo"), vec![Ipv4Addr::LOCALHOST], "lo is up");

    // In-process view: a socket made inside the pod namespace can bind the pod IP.
    let bound = in_netns(&netns, move || {
        TcpListener::bind(SocketAddr::from((ip, 0))).is_ok()
    });
    assert!(bound, "pod IP {ip} is bindable inside the pod netns");

    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// Two pods on the bridge reach each other: a TCP listener in pod A's namespace accepts a
/// connection made from pod B's namespace to A's reported IP, and bytes flow both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_reach_each_other() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let a = run_pod(&mut c, node.pod_config("pod-a")).await;
    let b = run_pod(&mut c, node.pod_config("pod-b")).await;
    let a_ip: Ipv4Addr = status(&mut c, &a, false)
        .await
        .0
        .network
        .unwrap()
        .ip
        .parse()
        .unwrap();
    let b_ip: Ipv4Addr = status(&mut c, &b, false)
        .await
        .0
        .network
        .unwrap()
        .ip
        .parse()
        .unwrap();
    assert_ne!(a_ip, b_ip);
    let a_ns = netns_path(&mut c, &a).await;
    let b_ns = netns_path(&mut c, &b).await;
    assert_ne!(a_ns, b_ns);

    // The socket keeps the namespace it was created in, so only creation needs the setns.
    let listener = in_netns(&a_ns, move || {
        TcpListener::bind(SocketAddr::from((a_ip, 0))).expect("bind in pod A")
    });
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).expect("read ping");
        s.write_all(b"pong").expect("write pong");
        (buf, peer)
    });
    let mut stream = in_netns(&b_ns, move || {
        TcpStream::connect_timeout(&SocketAddr::from((a_ip, port)), Duration::from_secs(20))
            .expect("connect from pod B to pod A")
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(b"ping").unwrap();
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).expect("read pong");
    assert_eq!(&reply, b"pong");
    let (got, peer) = server.join().unwrap();
    assert_eq!(&got, b"ping");
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(b_ip),
        "source is pod B's IP"
    );

    for id in [&a, &b] {
        stop_pod(&mut c, id).await;
        remove_pod(&mut c, id).await;
    }
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// A second RunPodSandbox with the same name/namespace/uid/attempt fails with AlreadyExists
/// naming the holder while the first exists (even stopped); another attempt number is a
/// different name; after Remove the name is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_name_is_already_exists() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let config = node.pod_config("dup");
    let first = run_pod(&mut c, config.clone()).await;

    let err = c
        .run_pod_sandbox(run_req(config.clone()))
        .await
        .expect_err("duplicate name must fail");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(
        err.message().contains(&first[..12]),
        "message names the holder {first}: {}",
        err.message()
    );
    assert_eq!(list(&mut c, None).await.len(), 1, "no second sandbox");

    stop_pod(&mut c, &first).await;
    let err = c
        .run_pod_sandbox(run_req(config.clone()))
        .await
        .expect_err("still reserved while stopped");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    let mut next = config.clone();
    next.metadata.as_mut().unwrap().attempt = 1;
    let second = run_pod(&mut c, next).await;
    assert_ne!(second, first);

    remove_pod(&mut c, &first).await;
    let third = run_pod(&mut c, config).await;
    assert_ne!(third, first);

    for id in [&second, &third] {
        stop_pod(&mut c, id).await;
        remove_pod(&mut c, id).await;
    }
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// Missing metadata, or an empty name, namespace or uid, is InvalidArgument naming the field,
/// and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configs_are_invalid_argument() {
    let node = Node::start().await;
    let mut c = node.client().await;

    let mut no_meta = node.pod_config("bad");
    no_meta.metadata = None;
    let err = c
        .run_pod_sandbox(run_req(no_meta))
        .await
        .expect_err("no metadata");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("metadata"), "{}", err.message());

    let err = c
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: None,
            runtime_handler: String::new(),
        })
        .await
        .expect_err("no config");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    for field in ["name", "namespace", "uid"] {
        let mut config = node.pod_config("bad");
        let m = config.metadata.as_mut().unwrap();
        match field {
            "name" => m.name.clear(),
            "namespace" => m.namespace.clear(),
            _ => m.uid.clear(),
        }
        let err = c
            .run_pod_sandbox(run_req(config))
            .await
            .expect_err("missing field must fail");
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().contains(field),
            "message names {field}: {}",
            err.message()
        );
    }

    assert!(list(&mut c, None).await.is_empty());
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
    assert!(no_veths(&node).is_empty());
    // The valid config still works afterwards: nothing was reserved by the failures.
    let id = run_pod(&mut c, node.pod_config("bad")).await;
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
}

/// A pod with network namespace mode NODE gets no namespace and no CNI: READY, `ip == ""`, the
/// NODE mode echoed (the kubelet recreates hostNetwork pods otherwise), nothing pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pod() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let mut config = node.pod_config("hostnet");
    set_network_mode(&mut config, NamespaceMode::Node);
    config.hostname.clear();
    let id = run_pod(&mut c, config).await;

    let (st, _) = status(&mut c, &id, false).await;
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(st.network.map(|n| n.ip).unwrap_or_default(), "");
    let mode = st
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .map(|o| o.network);
    assert_eq!(mode, Some(NamespaceMode::Node as i32));
    let left = node.leftovers();
    assert!(left.netns_files.is_empty(), "{left:?}");
    assert!(left.ip_files.is_empty(), "{left:?}");
    assert!(no_veths(&node).is_empty());

    stop_pod(&mut c, &id).await;
    let (st, _) = status(&mut c, &id, false).await;
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    remove_pod(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// Stop and Remove are idempotent: twice in a row, and on ids that never existed, they answer
/// OK; Status on an unknown id is NotFound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_remove_are_idempotent() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("twice")).await;
    stop_pod(&mut c, &id).await;
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    stop_pod(&mut c, &id).await;

    let unknown = random_id();
    stop_pod(&mut c, &unknown).await;
    remove_pod(&mut c, &unknown).await;
    let err = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: unknown,
            verbose: false,
        })
        .await
        .expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Remove of a READY sandbox stops it first and reclaims everything.
    let id = run_pod(&mut c, node.pod_config("twice")).await;
    remove_pod(&mut c, &id).await;
    assert!(list(&mut c, None).await.is_empty());
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
    assert!(no_veths(&node).is_empty());
}

/// A unique id prefix works for Status, Stop, Remove and List's id filter; an ambiguous prefix
/// is InvalidArgument listing the matches; an unknown prefix is NotFound on Status and OK on
/// Stop/Remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_prefixes() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("prefix")).await;
    let short = &id[..13];
    a_unique_prefix_names_the_pod(&mut c, &id, short).await;
    let (others, x, y) = pods_until_two_share_a_first_digit(&node, &mut c, &id).await;
    an_ambiguous_prefix_is_invalid_argument(&mut c, &x, &y).await;
    an_unknown_prefix_is_not_found(&mut c).await;
    // Stop and remove by unique prefix.
    stop_pod(&mut c, short).await;
    assert_eq!(
        status(&mut c, &id, false).await.0.state,
        PodSandboxState::SandboxNotready as i32
    );
    remove_pod(&mut c, short).await;
    for o in &others {
        remove_pod(&mut c, o).await;
    }
    assert!(list(&mut c, None).await.is_empty());
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// Status and an id filter by `short`, a unique prefix, answer the full `id`.
async fn a_unique_prefix_names_the_pod(c: &mut Client, id: &str, short: &str) {
    let (st, _) = status(c, short, false).await;
    assert_eq!(st.id, id, "status by prefix answers the full id");
    let items = list(
        c,
        Some(cri::PodSandboxFilter {
            id: short.to_string(),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(ids(&items), vec![id.to_string()]);
}

/// Host-network pods are cheap: makes them until two share a first hex digit (pigeonhole:
/// at most 17), so a one-character prefix is ambiguous. Returns the pods made and the pair.
async fn pods_until_two_share_a_first_digit(
    node: &Node,
    c: &mut Client,
    id: &str,
) -> (Vec<String>, String, String) {
    let id = id.to_string();
    let mut others: Vec<String> = Vec::new();
    let mut clash = None;
    for i in 0..17 {
        let mut config = node.pod_config(&format!("amb-{i}"));
        set_network_mode(&mut config, NamespaceMode::Node);
        let new = run_pod(c, config).await;
        let all: Vec<&String> = others.iter().chain(std::iter::once(&id)).collect();
        if let Some(old) = all.into_iter().find(|o| o[..1] == new[..1]) {
            clash = Some((old.clone(), new.clone()));
            others.push(new);
            break;
        }
        others.push(new);
    }
    let (x, y) = clash.expect("pigeonhole guarantees a shared first digit");
    (others, x, y)
}

/// The first digit `x` and `y` share is InvalidArgument naming both, for Status, Stop and
/// Remove, and stops or removes nothing.
async fn an_ambiguous_prefix_is_invalid_argument(c: &mut Client, x: &str, y: &str) {
    let amb = &x[..1];
    let err = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: amb.to_string(),
            verbose: false,
        })
        .await
        .expect_err("ambiguous prefix");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    for m in [x, y] {
        assert!(
            err.message().contains(&m[..12]),
            "message lists the match {m}: {}",
            err.message()
        );
    }
    for call in ["stop", "remove"] {
        let r = if call == "stop" {
            c.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: amb.to_string(),
            })
            .await
            .map(|_| ())
        } else {
            c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: amb.to_string(),
            })
            .await
            .map(|_| ())
        };
        let err = r.expect_err("ambiguous prefix on stop/remove");
        assert_eq!(err.code(), Code::InvalidArgument, "{call}: {err:?}");
    }
    // Nothing was stopped or removed by the ambiguous calls.
    for s in list(c, None).await {
        assert_eq!(s.state, PodSandboxState::SandboxReady as i32, "{}", s.id);
    }
}

/// A hex string no id starts with: Status is NotFound, Stop and Remove succeed, an id
/// filter lists nothing.
async fn an_unknown_prefix_is_not_found(c: &mut Client) {
    let used: Vec<char> = list(c, None)
        .await
        .iter()
        .map(|p| p.id.chars().next().unwrap())
        .collect();
    let free = "0123456789abcdef"
        .chars()
        .find(|ch| !used.contains(ch))
        .expect("fewer than 16 first digits in use");
    let unknown = format!("{free}{free}{free}");
    let err = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: unknown.clone(),
            verbose: false,
        })
        .await
        .expect_err("unknown prefix");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    stop_pod(c, &unknown).await;
    remove_pod(c, &unknown).await;
    let items = list(
        c,
        Some(cri::PodSandboxFilter {
            id: unknown,
            ..Default::default()
        }),
    )
    .await;
    assert!(items.is_empty(), "unknown id filter lists nothing");
}

/// ListPodSandbox filters by id, state (present wrapper; `state:{}` is READY) and every
/// label pair, ANDed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let mut ca = node.pod_config("filt-a");
    ca.labels.insert("tier".into(), "web".into());
    let mut cb = node.pod_config("filt-b");
    cb.labels.insert("tier".into(), "web".into());
    set_network_mode(&mut cb, NamespaceMode::Node);
    let a = run_pod(&mut c, ca).await;
    let b = run_pod(&mut c, cb).await;
    stop_pod(&mut c, &b).await;

    let state = |s: PodSandboxState| cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue { state: s as i32 }),
        ..Default::default()
    };
    let label = |pairs: &[(&str, &str)]| cri::PodSandboxFilter {
        label_selector: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let mut all = ids(&list(&mut c, None).await);
    all.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(all, want);
    let mut empty_filter = ids(&list(&mut c, Some(Default::default())).await);
    empty_filter.sort();
    assert_eq!(empty_filter, want, "an empty filter lists everything");
    assert_eq!(
        ids(&list(&mut c, Some(state(PodSandboxState::SandboxReady))).await),
        vec![a.clone()]
    );
    assert_eq!(
        ids(&list(&mut c, Some(state(PodSandboxState::SandboxNotready))).await),
        vec![b.clone()]
    );
    assert_eq!(
        ids(&list(&mut c, Some(label(&[("app", "filt-b")]))).await),
        vec![b.clone()]
    );
    assert_eq!(
        ids(&list(
            &mut c,
            Some(label(&[("io.kubernetes.pod.uid", &uid_of("filt-a"))]))
        )
        .await),
        vec![a.clone()]
    );
    let mut web = ids(&list(&mut c, Some(label(&[("tier", "web")]))).await);
    web.sort();
    assert_eq!(web, want);
    assert!(
        list(&mut c, Some(label(&[("tier", "web"), ("app", "nope")])))
            .await
            .is_empty()
    );
    let mut both = label(&[("tier", "web")]);
    both.state = Some(cri::PodSandboxStateValue {
        state: PodSandboxState::SandboxNotready as i32,
    });
    assert_eq!(ids(&list(&mut c, Some(both)).await), vec![b.clone()]);
    let mut by_id = state(PodSandboxState::SandboxNotready);
    by_id.id = a.clone();
    assert!(
        list(&mut c, Some(by_id)).await.is_empty(),
        "filters are ANDed"
    );

    for id in [&a, &b] {
        stop_pod(&mut c, id).await;
        remove_pod(&mut c, id).await;
    }
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// SIGTERM exits 0; after a restart on the same dirs a READY sandbox is still READY with the
/// same IP (still on its eth0), a stopped one is still NOTREADY, the names are still reserved,
/// and Stop/Remove still reclaim everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_sandboxes() {
    let mut node = Node::start().await;
    let mut c = node.client().await;
    let ready_cfg = node.pod_config("keep");
    let stopped_cfg = node.pod_config("keep-stopped");
    let ready = run_pod(&mut c, ready_cfg.clone()).await;
    let stopped = run_pod(&mut c, stopped_cfg.clone()).await;
    stop_pod(&mut c, &stopped).await;
    let (st, _) = status(&mut c, &ready, false).await;
    let ip = st.network.unwrap().ip;
    let netns = netns_path(&mut c, &ready).await;
    drop(c);

    node.restart().await;
    let mut c = node.client().await;
    let (st, _) = status(&mut c, &ready, false).await;
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(st.network.unwrap().ip, ip, "same IP after restart");
    assert_eq!(st.metadata, ready_cfg.metadata);
    assert_eq!(st.annotations, ready_cfg.annotations);
    assert_eq!(netns_path(&mut c, &ready).await, netns);
    assert_eq!(
        ipv4_of(&netns, "eth0"),
        vec![ip.parse::<Ipv4Addr>().unwrap()]
    );
    let (st, _) = status(&mut c, &stopped, false).await;
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    assert_eq!(list(&mut c, None).await.len(), 2);

    for cfg in [ready_cfg, stopped_cfg] {
        let err = c
            .run_pod_sandbox(run_req(cfg))
            .await
            .expect_err("name still reserved after restart");
        assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    }

    for id in [&ready, &stopped] {
        stop_pod(&mut c, id).await;
        remove_pod(&mut c, id).await;
    }
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
    assert!(no_veths(&node).is_empty());
    drop(c);
    node.stop().await;
}

async fn assert_rolled_back(node: &Node, plugin: &str, plugin_msg: Option<&str>) {
    let mut c = node.client().await;
    for round in 0..2 {
        let err = c
            .run_pod_sandbox(run_req(node.pod_config("rollback")))
            .await
            .expect_err("a failing plugin must fail RunPodSandbox");
        assert_ne!(err.code(), Code::Ok);
        assert_ne!(
            err.code(),
            Code::AlreadyExists,
            "round {round}: the name must be released by the rollback: {err:?}"
        );
        assert!(
            err.message().contains(plugin),
            "error names the plugin {plugin}: {}",
            err.message()
        );
        if let Some(msg) = plugin_msg {
            assert!(
                err.message().contains(msg),
                "error carries the plugin's message {msg:?}: {}",
                err.message()
            );
        }
        let left = node.leftovers();
        assert!(left.netns_files.is_empty(), "no netns pin left: {left:?}");
        assert!(left.ip_files.is_empty(), "no host-local IP left: {left:?}");
        assert!(left.records.is_empty(), "no record left: {left:?}");
        assert!(left.cache_files.is_empty(), "no CNI cache left: {left:?}");
        assert!(no_veths(node).is_empty(), "no veth left");
        assert!(list(&mut c, None).await.is_empty(), "no sandbox listed");
    }
}

/// bridge+host-local then a plugin whose ADD fails: the error names `fail-add` and its message,
/// and everything is rolled back (the IP bridge took is released, no netns, no record, the name
/// is free for a retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_plugin_rolls_back() {
    let node = Node::start_with(Conf::After(vec![stand_in("fail-add")])).await;
    assert_rolled_back(&node, "fail-add", Some("deliberate stand-in failure")).await;
}

/// A plugin that exits 0 but prints something that is not JSON fails the Run, named, and is
/// rolled back like any other failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_plugin_output_rolls_back() {
    let node = Node::start_with(Conf::After(vec![stand_in("garbage")])).await;
    assert_rolled_back(&node, "garbage", None).await;
}

/// A plugin after bridge that only echoes its prevResult keeps the chain's result: the pod gets
/// bridge's IP, which is really on eth0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_prev_result_passes_through() {
    let node = Node::start_with(Conf::After(vec![stand_in("noop")])).await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("chain")).await;
    let (st, _) = status(&mut c, &id, false).await;
    let ip: Ipv4Addr = st
        .network
        .unwrap()
        .ip
        .parse()
        .expect("an IPv4 from the chain");
    let netns = netns_path(&mut c, &id).await;
    assert_eq!(ipv4_of(&netns, "eth0"), vec![ip]);
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

fn condition(st: &cri::StatusResponse, kind: &str) -> cri::RuntimeCondition {
    st.status
        .as_ref()
        .expect("status set")
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {st:?}"))
        .clone()
}

/// With an empty conf dir NetworkReady is false (reason NetworkPluginNotReady, message naming
/// the conf dir) while RuntimeReady is true; once a conf is written it turns true and pods run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_ready_follows_conf_dir() {
    let node = Node::start_with(Conf::Empty).await;
    let mut c = node.client().await;
    let st = c
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    assert!(condition(&st, "RuntimeReady").status);
    let net = condition(&st, "NetworkReady");
    assert!(!net.status, "{net:?}");
    assert_eq!(net.reason, "NetworkPluginNotReady");
    let conf_dir = node.conf_dir.display().to_string();
    assert!(
        net.message.contains(&conf_dir),
        "message names {conf_dir}: {}",
        net.message
    );

    node.write_conf("10-crisp-test.conflist", &node.conflist(vec![portmap()]));
    let ready = eventually(Duration::from_secs(10), || {
        let mut c = c.clone();
        async move {
            let st = c
                .status(cri::StatusRequest { verbose: false })
                .await
                .ok()?
                .into_inner();
            condition(&st, "NetworkReady").status.then_some(st)
        }
    })
    .await
    .expect("NetworkReady turns true after a conf appears");
    assert!(condition(&ready, "RuntimeReady").status);

    let id = run_pod(&mut c, node.pod_config("late")).await;
    let (st, _) = status(&mut c, &id, false).await;
    assert!(!st.network.unwrap().ip.is_empty());
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// A port mapping with a host port reaches portmap: from the node, a connection to the
/// bridge gateway's host port lands on the listener in the pod; after Stop the mapping is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_port_mapping_forwards_to_pod() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let mut config = node.pod_config("hostport");
    config.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: 30080,
        host_ip: String::new(),
    }];
    let id = run_pod(&mut c, config).await;
    let netns = netns_path(&mut c, &id).await;
    let listener = in_netns(&netns, || {
        TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], 8080))).expect("bind in pod")
    });
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.write_all(b"hello from the pod").expect("write");
    });
    let gateway = SocketAddr::from(([10, 99, 0, 1], 30080));
    let mut stream = in_netns(&node.node_netns_path(), move || {
        TcpStream::connect_timeout(&gateway, Duration::from_secs(20))
            .expect("connect to the host port from the node")
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(read_all(&mut stream), b"hello from the pod");
    server.join().unwrap();

    let nat = |node: &Node| {
        run(std::process::Command::new("nsenter")
            .arg(format!("--net={}", node.node_netns_path().display()))
            .args(["iptables", "-w", "-t", "nat", "-S"]))
    };
    assert!(nat(&node).contains("30080"), "DNAT rule present");
    stop_pod(&mut c, &id).await;
    assert!(!nat(&node).contains("30080"), "DNAT rule removed on stop");
    remove_pod(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// Many pods run, stop and remove concurrently: distinct IPs, all READY, and afterwards
/// nothing left (no lock held across a whole chain would still pass; a shared-state race
/// would not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pods_get_distinct_ips() {
    let node = Node::start().await;
    let c = node.client().await;
    let runs = (0..8).map(|i| {
        let mut c = c.clone();
        let config = node.pod_config(&format!("par-{i}"));
        async move { run_pod(&mut c, config).await }
    });
    let pod_ids = futures::future::join_all(runs).await;
    let mut ips = Vec::new();
    for id in &pod_ids {
        let (st, _) = status(&mut c.clone(), id, false).await;
        assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
        ips.push(st.network.unwrap().ip);
    }
    let mut uniq = ips.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), ips.len(), "distinct IPs: {ips:?}");
    assert_eq!(node.leftovers().ip_files.len(), 8);

    let teardown = pod_ids.iter().map(|id| {
        let mut c = c.clone();
        async move {
            stop_pod(&mut c, id).await;
            remove_pod(&mut c, id).await;
        }
    });
    futures::future::join_all(teardown).await;
    assert!(list(&mut c.clone(), None).await.is_empty());
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
    assert!(no_veths(&node).is_empty());
}

/// Teardown uses the network config cached at ADD: with the conf dir emptied after the pod
/// started, Stop still succeeds and releases the IP, veth and namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_after_conf_dir_emptied_uses_cached_config() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("cached")).await;
    for f in std::fs::read_dir(&node.conf_dir).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    stop_pod(&mut c, &id).await;
    let left = node.leftovers();
    assert!(left.netns_files.is_empty(), "{left:?}");
    assert!(
        left.ip_files.is_empty(),
        "IP released with the cached config: {left:?}"
    );
    assert!(no_veths(&node).is_empty());
    remove_pod(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// Several concurrent Stops of one pod all succeed and tear it down once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stops_of_one_pod_all_succeed() {
    let node = Node::start().await;
    let c = node.client().await;
    let id = run_pod(&mut c.clone(), node.pod_config("stops")).await;
    let stops = (0..6).map(|_| {
        let mut c = c.clone();
        let id = id.clone();
        async move {
            c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
                .await
                .map(|_| ())
        }
    });
    for r in futures::future::join_all(stops).await {
        r.expect("every concurrent Stop succeeds");
    }
    let (st, _) = status(&mut c.clone(), &id, false).await;
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    assert!(no_veths(&node).is_empty());
    remove_pod(&mut c.clone(), &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// Concurrent RunPodSandbox calls with one name make exactly one sandbox: every call either
/// answers that sandbox's id or AlreadyExists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_of_one_name_make_one_sandbox() {
    let node = Node::start().await;
    let c = node.client().await;
    let config = node.pod_config("racy");
    let runs = (0..6).map(|_| {
        let mut c = c.clone();
        let config = config.clone();
        async move { c.run_pod_sandbox(run_req(config)).await }
    });
    let mut got = Vec::new();
    for r in futures::future::join_all(runs).await {
        match r {
            Ok(resp) => got.push(resp.into_inner().pod_sandbox_id),
            Err(e) => assert_eq!(e.code(), Code::AlreadyExists, "{e:?}"),
        }
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 1, "exactly one sandbox id answered: {got:?}");
    let items = list(&mut c.clone(), None).await;
    assert_eq!(ids(&items), got);
    assert_eq!(node.leftovers().netns_files.len(), 1);
    assert_eq!(node.leftovers().ip_files.len(), 1);
    remove_pod(&mut c.clone(), &got[0]).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
    assert!(no_veths(&node).is_empty());
}

/// A conf written just before a RunPodSandbox is the one that call uses, even when the conf
/// dir watcher has not read the change yet: each round narrows host-local's range to a new
/// slice of the subnet and runs a pod at once; its address must come from that slice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conf_written_just_before_run_is_the_one_used() {
    let node = Node::start().await;
    let mut c = node.client().await;
    for round in 1..=6u8 {
        let mut list: serde_json::Value =
            serde_json::from_str(&node.conflist(vec![portmap()])).expect("conflist");
        list["plugins"][0]["ipam"]["ranges"] = serde_json::json!([[{
            "subnet": SUBNET,
            "rangeStart": format!("10.99.0.{}", round * 10),
            "rangeEnd": format!("10.99.0.{}", round * 10 + 9),
        }]]);
        node.write_conf("10-crisp-test.conflist", &list.to_string());
        let id = run_pod(&mut c, node.pod_config(&format!("fresh-{round}"))).await;
        let (st, _) = status(&mut c, &id, false).await;
        let ip: Ipv4Addr = st
            .network
            .map(|n| n.ip)
            .unwrap_or_default()
            .parse()
            .expect("an IPv4 pod address");
        let last = ip.octets()[3];
        assert!(
            (round * 10..=round * 10 + 9).contains(&last),
            "round {round}: {ip} is not from the conf written just before the call"
        );
        stop_pod(&mut c, &id).await;
        remove_pod(&mut c, &id).await;
    }
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}
