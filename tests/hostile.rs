//! Hostile and malformed requests through the real socket. Each case asserts the exact gRPC
//! code (OK for a Stop or Remove of an id that names no sandbox, as CRI requires), that the
//! message names the offending field, and that nothing was created: no
//! sandbox listed, no netns pin, no host-local IP, no record, no CNI cache entry, no link in
//! the node namespace. Afterwards crisp still serves a valid pod.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use k8s_cri::v1 as cri;
use support::*;
use tonic::Code;

enum Call {
    Run(Box<cri::RunPodSandboxRequest>),
    Stop(String),
    Status(String),
    Remove(String),
}

struct Case {
    what: &'static str,
    call: Call,
    code: Code,
    /// A piece the message must contain (the field it names, or the cause).
    says: &'static str,
}

fn base(node: &Node) -> cri::PodSandboxConfig {
    node.pod_config("hostile")
}

fn run_case(
    what: &'static str,
    node: &Node,
    code: Code,
    says: &'static str,
    edit: impl FnOnce(&mut cri::RunPodSandboxRequest),
) -> Case {
    let mut req = run_req(base(node));
    edit(&mut req);
    Case {
        what,
        call: Call::Run(Box::new(req)),
        code,
        says,
    }
}

fn meta(req: &mut cri::RunPodSandboxRequest) -> &mut cri::PodSandboxMetadata {
    req.config
        .as_mut()
        .and_then(|c| c.metadata.as_mut())
        .expect("metadata")
}

fn config(req: &mut cri::RunPodSandboxRequest) -> &mut cri::PodSandboxConfig {
    req.config.as_mut().expect("config")
}

fn dns(servers: &[&str], searches: &[&str], options: &[&str]) -> Option<cri::DnsConfig> {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    Some(cri::DnsConfig {
        servers: v(servers),
        searches: v(searches),
        options: v(options),
    })
}

fn hostile_cases(node: &Node) -> Vec<Case> {
    use Code::InvalidArgument as Invalid;
    let tcp = cri::Protocol::Tcp as i32;
    let long = "a".repeat(10 * 1024);
    let mut v = vec![
        // --- missing / empty metadata ---
        run_case("no config", node, Invalid, "config", |r| r.config = None),
        run_case("no metadata", node, Invalid, "config.metadata", |r| {
            config(r).metadata = None
        }),
        run_case("empty name", node, Invalid, "config.metadata.name", |r| {
            meta(r).name.clear()
        }),
        run_case(
            "empty namespace",
            node,
            Invalid,
            "config.metadata.namespace",
            |r| meta(r).namespace.clear(),
        ),
        run_case("empty uid", node, Invalid, "config.metadata.uid", |r| {
            meta(r).uid.clear()
        }),
        // --- names, namespaces, uids that try to be paths or smuggle things ---
        run_case("name with /", node, Invalid, "config.metadata.name", |r| {
            meta(r).name = "../../etc/passwd".into()
        }),
        run_case("name ..", node, Invalid, "config.metadata.name", |r| {
            meta(r).name = "..".into()
        }),
        run_case("name .", node, Invalid, "config.metadata.name", |r| {
            meta(r).name = ".".into()
        }),
        run_case(
            "namespace with /",
            node,
            Invalid,
            "config.metadata.namespace",
            |r| meta(r).namespace = "kube-system/../x".into(),
        ),
        run_case(
            "namespace ..",
            node,
            Invalid,
            "config.metadata.namespace",
            |r| meta(r).namespace = "..".into(),
        ),
        run_case("uid with /", node, Invalid, "config.metadata.uid", |r| {
            meta(r).uid = "/etc".into()
        }),
        run_case("uid ..", node, Invalid, "config.metadata.uid", |r| {
            meta(r).uid = "..".into()
        }),
        run_case(
            "name with NUL",
            node,
            Invalid,
            "config.metadata.name",
            |r| meta(r).name = "web\0evil".into(),
        ),
        run_case("uid with NUL", node, Invalid, "config.metadata.uid", |r| {
            meta(r).uid = "\0".into()
        }),
        run_case(
            "name with newline",
            node,
            Invalid,
            "config.metadata.name",
            |r| meta(r).name = "web\nK8S_POD_NAME=x".into(),
        ),
        run_case(
            "name with zero-width space",
            node,
            Invalid,
            "config.metadata.name",
            |r| meta(r).name = "web\u{200b}".into(),
        ),
        run_case(
            "name with backslash",
            node,
            Invalid,
            "config.metadata.name",
            |r| meta(r).name = "a\\..\\b".into(),
        ),
        run_case(
            "uid smuggling a CNI arg with ;",
            node,
            Invalid,
            "config.metadata.uid",
            |r| meta(r).uid = "u1;K8S_POD_NAMESPACE=kube-system".into(),
        ),
        run_case(
            "namespace with =",
            node,
            Invalid,
            "config.metadata.namespace",
            |r| meta(r).namespace = "a=b".into(),
        ),
        run_case("name 10 kB long", node, Invalid, "config.metadata.name", {
            let long = long.clone();
            move |r| meta(r).name = long
        }),
        run_case(
            "namespace 254 bytes",
            node,
            Invalid,
            "config.metadata.namespace",
            |r| meta(r).namespace = "n".repeat(254),
        ),
        run_case("uid 10 kB long", node, Invalid, "config.metadata.uid", {
            let long = long.clone();
            move |r| meta(r).uid = long
        }),
        run_case("hostname with /", node, Invalid, "config.hostname", |r| {
            config(r).hostname = "a/b".into()
        }),
        run_case(
            "hostname with newline",
            node,
            Invalid,
            "config.hostname",
            |r| config(r).hostname = "a\nb".into(),
        ),
        // --- runtime handler ---
        run_case(
            "unknown runtime_handler",
            node,
            Invalid,
            "runtime_handler",
            |r| r.runtime_handler = "kata".into(),
        ),
        run_case(
            "path runtime_handler",
            node,
            Invalid,
            "runtime_handler",
            |r| r.runtime_handler = "../../bin/sh".into(),
        ),
        // --- port mappings ---
        run_case(
            "container port 0",
            node,
            Invalid,
            "config.port_mappings",
            |r| config(r).port_mappings = vec![port(tcp, 0, 8080, "")],
        ),
        run_case(
            "container port 70000",
            node,
            Invalid,
            "config.port_mappings",
            |r| config(r).port_mappings = vec![port(tcp, 70000, 8080, "")],
        ),
        run_case(
            "host port 65536",
            node,
            Invalid,
            "config.port_mappings",
            |r| config(r).port_mappings = vec![port(tcp, 80, 65536, "")],
        ),
        run_case(
            "negative host port",
            node,
            Invalid,
            "config.port_mappings",
            |r| config(r).port_mappings = vec![port(tcp, 80, -1, "")],
        ),
        run_case(
            "unknown protocol",
            node,
            Invalid,
            "unknown protocol 7",
            |r| config(r).port_mappings = vec![port(7, 80, 8080, "")],
        ),
        run_case("duplicate host port", node, Invalid, "mapped twice", |r| {
            config(r).port_mappings = vec![port(tcp, 80, 8080, ""), port(tcp, 81, 8080, "")]
        }),
        run_case(
            "host_ip not an IP",
            node,
            Invalid,
            "config.port_mappings",
            |r| config(r).port_mappings = vec![port(tcp, 80, 8080, "localhost; rm -rf /")],
        ),
        // --- DNS ---
        run_case(
            "DNS server not an IP",
            node,
            Invalid,
            "config.dns_config.servers",
            |r| config(r).dns_config = dns(&["8.8.8.8\nnameserver 6.6.6.6"], &[], &[]),
        ),
        run_case(
            "DNS option injecting a line",
            node,
            Invalid,
            "config.dns_config.options",
            |r| config(r).dns_config = dns(&[], &[], &["ndots:5\nnameserver 6.6.6.6"]),
        ),
        run_case(
            "DNS option empty",
            node,
            Invalid,
            "config.dns_config.options",
            |r| config(r).dns_config = dns(&[], &[], &[""]),
        ),
        run_case(
            "DNS option ndots without a number",
            node,
            Invalid,
            "config.dns_config.options",
            |r| config(r).dns_config = dns(&[], &[], &["ndots:many"]),
        ),
        run_case(
            "DNS option with two colons",
            node,
            Invalid,
            "config.dns_config.options",
            |r| config(r).dns_config = dns(&[], &[], &["timeout:1:2"]),
        ),
        run_case(
            "DNS search with a blank",
            node,
            Invalid,
            "config.dns_config.searches",
            |r| config(r).dns_config = dns(&[], &["a b"], &[]),
        ),
        // --- network namespace mode ---
        run_case(
            "network mode CONTAINER",
            node,
            Invalid,
            "namespace_options.network",
            |r| set_network_mode(config(r), NamespaceMode::Container),
        ),
        // --- oversized labels and annotations (but under the gRPC limit) ---
        run_case("oversized labels", node, Invalid, "config.labels", |r| {
            config(r)
                .labels
                .insert("big".into(), "x".repeat(300 * 1024));
        }),
        run_case(
            "oversized annotations",
            node,
            Invalid,
            "config.labels",
            |r| {
                let a: HashMap<String, String> = (0..300)
                    .map(|i| (format!("k{i}"), "y".repeat(1024)))
                    .collect();
                config(r).annotations = a;
            },
        ),
        // --- a request past the 16 MiB gRPC limit: refused before decoding, as grpc-go does ---
        run_case(
            "request larger than 16 MiB",
            node,
            Code::ResourceExhausted,
            "larger than crisp's limit of 16777216 bytes",
            |r| {
                config(r)
                    .annotations
                    .insert("huge".into(), "z".repeat(17 << 20));
            },
        ),
    ];
    // --- ids that name no sandbox: Stop and Remove succeed, Status is NotFound ---
    for (what, id) in [
        ("../../etc", "../../etc".to_string()),
        ("10 kB", long.clone()),
        ("65 hex chars", "a".repeat(65)),
        ("NUL", "abc\0".to_string()),
        ("a UUID", "9ab1a92c-4f87-4937-8c9c-a6eb0dd81887".to_string()),
    ] {
        v.push(Case {
            what: Box::leak(format!("Stop with id {what}").into_boxed_str()),
            call: Call::Stop(id.clone()),
            code: Code::Ok,
            says: "",
        });
        v.push(Case {
            what: Box::leak(format!("Status with id {what}").into_boxed_str()),
            call: Call::Status(id.clone()),
            code: Code::NotFound,
            says: "not found",
        });
        v.push(Case {
            what: Box::leak(format!("Remove with id {what}").into_boxed_str()),
            call: Call::Remove(id),
            code: Code::Ok,
            says: "",
        });
    }
    // --- an empty id is not an id at all ---
    for call in [
        Call::Stop(String::new()),
        Call::Status(String::new()),
        Call::Remove(String::new()),
    ] {
        v.push(Case {
            what: "an empty id",
            call,
            code: Invalid,
            says: "pod_sandbox_id",
        });
    }
    v.push(Case {
        what: "Status of an unknown (well-formed) id",
        call: Call::Status("0123456789abcdef".repeat(4)),
        code: Code::NotFound,
        says: "not found",
    });
    v
}

/// Every path under the root and netns dirs with its size and mtime: what "nothing on disk
/// changed" compares.
fn state_listing(node: &Node) -> Vec<(std::path::PathBuf, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![node.root.clone(), node.netns_dir.clone()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                todo.push(path.clone());
            }
            out.push((path, meta.len(), meta.mtime(), meta.mtime_nsec()));
        }
    }
    out.sort();
    out
}

/// With a pod running, Stop and Remove of ids that name no sandbox (a UUID as cri-tools sends,
/// a traversal, 10 kB, an unknown 64-hex id) answer OK and change nothing on disk; Status of
/// each is NotFound; an empty id is InvalidArgument for all three; the pod stays READY.
#[tokio::test]
async fn ids_that_name_no_sandbox_are_success_and_touch_nothing() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, base(&node)).await;
    let unknown = if id.starts_with('0') { "1" } else { "0" }.repeat(64);
    let before = state_listing(&node);
    for other in [
        "9ab1a92c-4f87-4937-8c9c-a6eb0dd81887".to_string(),
        "../../x".to_string(),
        "x".repeat(10 * 1024),
        unknown,
    ] {
        let shown = &other[..other.len().min(40)];
        c.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: other.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("Stop {shown}: {e:?}"));
        c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: other.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("Remove {shown}: {e:?}"));
        let err = c
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: other.clone(),
                verbose: false,
            })
            .await
            .expect_err("no such sandbox");
        assert_eq!(err.code(), Code::NotFound, "Status {shown}: {err:?}");
        assert!(err.message().len() < 300, "the id is cut in the message");
        assert_eq!(
            state_listing(&node),
            before,
            "{shown}: something on disk changed"
        );
    }
    let empty = [
        c.stop_pod_sandbox(cri::StopPodSandboxRequest::default())
            .await
            .map(|_| ()),
        c.remove_pod_sandbox(cri::RemovePodSandboxRequest::default())
            .await
            .map(|_| ()),
        c.pod_sandbox_status(cri::PodSandboxStatusRequest::default())
            .await
            .map(|_| ()),
    ];
    for got in empty {
        let err = got.expect_err("an empty id is refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("pod_sandbox_id"), "{err:?}");
    }
    let (st, _) = status(&mut c, &id, false).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    assert!(node
        .log()
        .contains("the id named no sandbox: nothing to do"));
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

fn assert_nothing_created(node: &Node, what: &str) {
    let left = node.leftovers();
    assert!(left.is_empty(), "{what}: something was created: {left:?}");
    let links: Vec<String> = node
        .node_links()
        .into_iter()
        .filter(|l| l != "lo")
        .collect();
    assert!(links.is_empty(), "{what}: links appeared: {links:?}");
}

#[tokio::test]
async fn hostile_requests_get_exact_codes_and_create_nothing() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let cases = hostile_cases(&node);
    let total = cases.len();
    assert!(total >= 40, "only {total} cases");
    let mut failures = Vec::new();
    for case in cases {
        let got: Result<(), tonic::Status> = match case.call {
            Call::Run(req) => c.run_pod_sandbox(*req).await.map(|_| ()),
            Call::Stop(id) => c
                .stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
                .await
                .map(|_| ()),
            Call::Status(id) => c
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id,
                    verbose: true,
                })
                .await
                .map(|_| ()),
            Call::Remove(id) => c
                .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
                .map(|_| ()),
        };
        match got {
            Ok(()) if case.code == Code::Ok => {}
            Ok(()) => failures.push(format!("{}: accepted", case.what)),
            Err(e) if e.code() != case.code || !e.message().contains(case.says) => {
                failures.push(format!(
                    "{}: got {:?} {:?}, want {:?} containing {:?}",
                    case.what,
                    e.code(),
                    e.message().chars().take(300).collect::<String>(),
                    case.code,
                    case.says
                ))
            }
            Err(_) => {}
        }
        assert!(list(&mut c, None).await.is_empty(), "{}: listed", case.what);
        assert_nothing_created(&node, case.what);
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{total} hostile requests refused with the exact code; nothing created");

    // Still serving, and the refusals reserved nothing: the valid form of the pod runs.
    let id = run_pod(&mut c, base(&node)).await;
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// Names that are odd but harmless are accepted, and names joined with `_` never collide:
/// pod "a_b" in namespace "c" and pod "a" in namespace "b_c" are different pods.
#[tokio::test]
async fn underscored_names_do_not_collide() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let mut one = node.pod_config("a_b");
    one.metadata.as_mut().expect("meta").namespace = "c".into();
    one.metadata.as_mut().expect("meta").uid = "u".into();
    let mut two = node.pod_config("a");
    two.metadata.as_mut().expect("meta").namespace = "b_c".into();
    two.metadata.as_mut().expect("meta").uid = "u".into();
    let first = run_pod(&mut c, one).await;
    let second = run_pod(&mut c, two).await;
    assert_ne!(first, second);
    for id in [first, second] {
        stop_pod(&mut c, &id).await;
        remove_pod(&mut c, &id).await;
    }
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// Access to the socket is root on the node: it is mode 0600, owned by root.
#[tokio::test]
async fn socket_is_0600_root_only() {
    use std::os::unix::fs::MetadataExt;
    let node = Node::start().await;
    let meta = std::fs::metadata(&node.socket).expect("socket exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0, "socket owned by root");
}
