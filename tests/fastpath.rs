//! The in-process CNI fast path, tested against the real plugins (containernetworking/plugins
//! 1.1.1 in /usr/lib/cni), which are its specification: for each configuration one pod is set
//! up by exec and one by the fast path, each on a fresh node (its own network namespace), and
//! everything the network leaves is snapshotted and compared once the allocated addresses'
//! owners, generated names and MACs are normalised. Then: teardown across paths, concurrency
//! with real host-local execs, a crash in the middle, and the fallback for what the fast path
//! does not implement.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_cri::v1 as cri;
use serde_json::{json, Value};
use support::*;

const FAST: &[&str] = &["--cni-fast-path", "auto"];

/// One configuration: the bridge entry's extra fields, the IPAM, portmap or not, version.
struct Case {
    name: &'static str,
    bridge: Value,
    ipam: fn(&Node) -> Value,
    portmap: bool,
    loopback: bool,
    version: &'static str,
    ports: Vec<cri::PortMapping>,
}

fn v4_ipam(node: &Node) -> Value {
    json!({
        "type": "host-local",
        "ranges": [[{ "subnet": "10.99.0.0/24" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": node.ipam_dir,
    })
}

fn case_conflist(node: &Node, case: &Case) -> String {
    let mut bridge = json!({
        "type": "bridge",
        "bridge": node.bridge,
        "ipam": (case.ipam)(node),
    });
    for (k, v) in case.bridge.as_object().expect("object") {
        bridge[k] = v.clone();
    }
    let mut plugins = Vec::new();
    if case.loopback {
        plugins.push(json!({"type": "loopback"}));
    }
    plugins.push(bridge);
    if case.portmap {
        plugins.push(portmap());
    }
    conflist(case.version, NETWORK, &plugins)
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "gateway-no-masq-hairpin",
            bridge: json!({"isGateway": true, "ipMasq": false, "hairpinMode": true}),
            ipam: v4_ipam,
            portmap: false,
            loopback: false,
            version: "1.0.0",
            ports: vec![],
        },
        Case {
            name: "ipmasq",
            bridge: json!({"isGateway": true, "ipMasq": true}),
            ipam: v4_ipam,
            portmap: false,
            loopback: false,
            version: "1.0.0",
            ports: vec![],
        },
        Case {
            name: "mtu-promisc-default-gateway",
            bridge: json!({"isDefaultGateway": true, "mtu": 1400, "promiscMode": true}),
            ipam: |node| {
                json!({
                    "type": "host-local",
                    "ranges": [[{ "subnet": "10.99.0.0/24" }]],
                    "dataDir": node.ipam_dir,
                })
            },
            portmap: false,
            loopback: false,
            version: "1.0.0",
            ports: vec![],
        },
        Case {
            name: "portmap-tcp-udp-hostip-masq",
            bridge: json!({"isGateway": true, "ipMasq": true, "hairpinMode": true}),
            ipam: v4_ipam,
            portmap: true,
            loopback: true,
            version: "1.0.0",
            ports: vec![
                port(cri::Protocol::Tcp, 80, 8080, ""),
                port(cri::Protocol::Udp, 53, 5353, "127.0.0.1"),
                port(cri::Protocol::Tcp, 443, 8443, "10.99.0.1"),
            ],
        },
        Case {
            name: "two-ranges-one-set-0.4.0",
            bridge: json!({"isGateway": true}),
            ipam: |node| {
                json!({
                    "type": "host-local",
                    "ranges": [[
                        { "subnet": "10.99.0.0/24", "rangeStart": "10.99.0.200",
                            "rangeEnd": "10.99.0.201" },
                        { "subnet": "10.98.0.0/24" }
                    ]],
                    "routes": [{ "dst": "10.50.0.0/16" }, { "dst": "0.0.0.0/0",
                        "gw": "10.99.0.1" }],
                    "dataDir": node.ipam_dir,
                })
            },
            portmap: true,
            loopback: false,
            version: "0.4.0",
            ports: vec![],
        },
        Case {
            name: "dual-stack-masq-portmap",
            bridge: json!({"isGateway": true, "ipMasq": true}),
            ipam: |node| {
                json!({
                    "type": "host-local",
                    "ranges": [[{ "subnet": "10.99.0.0/24" }], [{ "subnet": "fd00:99::/64" }]],
                    "routes": [{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }],
                    "dataDir": node.ipam_dir,
                })
            },
            portmap: true,
            loopback: false,
            version: "1.0.0",
            ports: vec![port(cri::Protocol::Tcp, 80, 8080, "")],
        },
        Case {
            name: "custom-datadir-no-gateway",
            bridge: json!({"hairpinMode": false}),
            ipam: |node| {
                json!({
                    "type": "host-local",
                    "subnet": "10.99.0.0/24",
                    "gateway": "10.99.0.254",
                    "dataDir": node.dir.join("custom/state/ipam"),
                })
            },
            portmap: false,
            loopback: false,
            version: "0.3.1",
            ports: vec![],
        },
        Case {
            name: "portmap-no-snat-markbit",
            bridge: json!({"isGateway": true, "ipMasq": true}),
            ipam: v4_ipam,
            portmap: true,
            loopback: false,
            version: "1.0.0",
            ports: vec![
                port(cri::Protocol::Udp, 53, 53, ""),
                port(cri::Protocol::Tcp, 22, 2222, "0.0.0.0"),
            ],
        },
    ]
}

/// Everything a pod's network leaves, normalised.
async fn snapshot(
    node: &Node,
    client: &mut RuntimeServiceClientT,
    id: &str,
    case: &Case,
) -> String {
    let netns = netns_path(client, id).await;
    let info = verbose_info(client, id).await;
    let ns = ["-n", node.netns_name.as_str()];
    let mut snap = BTreeMap::new();
    snap.insert("node_links", links(&ns));
    snap.insert("node_addrs", addrs(&ns));
    snap.insert("node_routes", routes(&ns));
    let pod_ns = format!("--net={}", netns.display());
    snap.insert("pod_links", links_nsenter(&pod_ns));
    snap.insert("pod_addrs", addrs_nsenter(&pod_ns));
    snap.insert("pod_routes", routes_nsenter(&pod_ns));
    // Sysctls the bridge and portmap plugins set.
    let mut node_sysctls = vec![
        "net/ipv4/ip_forward".to_string(),
        "net/ipv6/conf/all/forwarding".to_string(),
    ];
    for l in links_in(&ns) {
        node_sysctls.push(format!("net/ipv6/conf/{l}/accept_ra"));
        node_sysctls.push(format!("net/ipv4/conf/{l}/route_localnet"));
    }
    snap.insert(
        "node_sysctls",
        sysctls(&node.node_netns_path(), &node_sysctls),
    );
    let pod_sysctls: Vec<String> = [
        "net/ipv6/conf/eth0/accept_dad",
        "net/ipv4/conf/eth0/arp_notify",
        "net/ipv6/conf/eth0/disable_ipv6",
        "net/ipv6/conf/lo/disable_ipv6",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    snap.insert("pod_sysctls", sysctls(&netns, &pod_sysctls));
    for (key, prog, table) in [
        ("nat4", "iptables-save", "nat"),
        ("filter4", "iptables-save", "filter"),
        ("nat6", "ip6tables-save", "nat"),
        ("filter6", "ip6tables-save", "filter"),
    ] {
        snap.insert(key, Value::String(save(node, prog, table)));
    }
    snap.insert("host_local", host_local_files(&ipam_dir(node, case)));
    let cache = std::fs::read_dir(node.root.join("cni/results"))
        .expect("cache dir")
        .flatten()
        .map(|e| {
            let v: Value = serde_json::from_slice(&std::fs::read(e.path()).expect("read"))
                .expect("cache json");
            (e.file_name().to_string_lossy().into_owned(), v)
        })
        .collect::<BTreeMap<_, _>>();
    snap.insert("cache", json!(cache));
    snap.insert("result", info["cniResult"].clone());
    let text = serde_json::to_string_pretty(&snap).expect("json");
    normalise(&text, node, id)
}

type RuntimeServiceClientT =
    k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

fn ipam_dir(node: &Node, case: &Case) -> PathBuf {
    let ipam = (case.ipam)(node);
    PathBuf::from(ipam["dataDir"].as_str().expect("dataDir")).join(NETWORK)
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("bad json {e}: {out}"))
}

fn pick_links(v: Value) -> Value {
    let mut out: Vec<Value> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let mut flags: Vec<String> = l["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            flags.sort();
            json!({
                "ifname": l["ifname"],
                "flags": flags,
                "mtu": l["mtu"],
                "txqlen": l["txqlen"],
                "qdisc": l["qdisc"],
                "address": l["address"],
                "promiscuity": l["promiscuity"],
                "master": l["master"],
                "kind": l["linkinfo"]["info_kind"],
                "slave_kind": l["linkinfo"]["info_slave_kind"],
                "hairpin": l["linkinfo"]["info_slave_data"]["hairpin"],
                "learning": l["linkinfo"]["info_slave_data"]["learning"],
                "stp_state": l["linkinfo"]["info_data"]["stp_state"],
                "vlan_filtering": l["linkinfo"]["info_data"]["vlan_filtering"],
            })
        })
        .collect();
    out.sort_by_key(|l| l["ifname"].as_str().unwrap_or("").starts_with("veth"));
    Value::Array(out)
}

fn links(ns: &[&str]) -> Value {
    let mut args = ns.to_vec();
    args.extend_from_slice(&["-d", "-j", "link", "show"]);
    pick_links(json_of(&run(Command::new("ip").args(args))))
}

fn links_nsenter(pod_ns: &str) -> Value {
    pick_links(json_of(&run(Command::new("nsenter")
        .arg(pod_ns)
        .args(["ip", "-d", "-j", "link", "show"]))))
}

fn pick_addrs(v: Value) -> Value {
    let mut out = Vec::new();
    for l in v.as_array().into_iter().flatten() {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            if a["scope"] == "link" {
                continue; // IPv6 link-local: derived from the random MAC, timing-dependent
            }
            out.push(json!({
                "ifname": l["ifname"],
                "family": a["family"],
                "local": a["local"],
                "prefixlen": a["prefixlen"],
                "broadcast": a["broadcast"],
                "scope": a["scope"],
            }));
        }
    }
    Value::Array(out)
}

fn addrs(ns: &[&str]) -> Value {
    let mut args = ns.to_vec();
    args.extend_from_slice(&["-j", "addr", "show"]);
    pick_addrs(json_of(&run(Command::new("ip").args(args))))
}

fn addrs_nsenter(pod_ns: &str) -> Value {
    pick_addrs(json_of(&run(Command::new("nsenter")
        .arg(pod_ns)
        .args(["ip", "-j", "addr", "show"]))))
}

fn pick_routes(v4: Value, v6: Value) -> Value {
    let mut out = Vec::new();
    for r in v4
        .as_array()
        .into_iter()
        .flatten()
        .chain(v6.as_array().into_iter().flatten())
    {
        let mut r = r.clone();
        if let Some(o) = r.as_object_mut() {
            o.remove("expires");
        }
        out.push(r);
    }
    Value::Array(out)
}

fn routes(ns: &[&str]) -> Value {
    let mut a4 = ns.to_vec();
    a4.extend_from_slice(&["-j", "-4", "route", "show"]);
    let mut a6 = ns.to_vec();
    a6.extend_from_slice(&["-j", "-6", "route", "show"]);
    pick_routes(
        json_of(&run(Command::new("ip").args(a4))),
        json_of(&run(Command::new("ip").args(a6))),
    )
}

fn routes_nsenter(pod_ns: &str) -> Value {
    pick_routes(
        json_of(&run(Command::new("nsenter")
            .arg(pod_ns)
            .args(["ip", "-j", "-4", "route", "show"]))),
        json_of(&run(Command::new("nsenter")
            .arg(pod_ns)
            .args(["ip", "-j", "-6", "route", "show"]))),
    )
}

fn sysctls(netns: &Path, keys: &[String]) -> Value {
    let keys = keys.to_vec();
    in_netns(netns, move || {
        let map: BTreeMap<String, String> = keys
            .iter()
            .map(|k| {
                let v = std::fs::read_to_string(Path::new("/proc/sys").join(k))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "<absent>".into());
                (k.clone(), v)
            })
            .collect();
        json!(map)
    })
}

/// One table from iptables-save/ip6tables-save in the node, without comments and counters;
/// a table with nothing but empty built-in chains counts as absent.
fn save(node: &Node, prog: &str, table: &str) -> String {
    let out = run(Command::new("ip").args(["netns", "exec", &node.netns_name, prog, "-t", table]));
    // Per-pod chain names hash the container id: name them by kind. iptables-save lists
    // user chains by name, so their order follows the hash: sort chain declarations and
    // group rules by chain (keeping each chain's rule order, which is what matters).
    let mut decls = Vec::new();
    let mut rules: Vec<(String, String)> = Vec::new();
    let mut head = Vec::new();
    for l in out.lines().filter(|l| !l.starts_with('#')) {
        let l = pod_chain_names(&l.replace("[0:0]", ""));
        if l.starts_with(':') && !l.contains("ACCEPT") {
            decls.push(l);
        } else if let Some(rest) = l.strip_prefix("-A ") {
            let chain = rest.split(' ').next().unwrap_or("").to_string();
            let builtin = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING", "FORWARD"]
                .contains(&chain.as_str());
            rules.push((if builtin { String::new() } else { chain }, l));
        } else if l != "COMMIT" {
            head.push(l);
        }
    }
    decls.sort();
    rules.sort_by(|a, b| a.0.cmp(&b.0));
    let lines: Vec<String> = head
        .into_iter()
        .chain(decls)
        .chain(rules.into_iter().map(|r| r.1))
        .collect();
    let meaningful = lines
        .iter()
        .any(|l| l.starts_with("-A") || (l.starts_with(':') && !l.contains("ACCEPT")));
    if meaningful {
        lines.join("\n")
    } else {
        String::new()
    }
}

fn pod_chain_names(l: &str) -> String {
    let mut out = String::new();
    let mut rest = l;
    while let Some(i) = rest.find("CNI-") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let hex = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        };
        if tail.len() >= 28 && tail.starts_with("CNI-DN-") && hex(&tail[7..28]) {
            out.push_str("CNI-DN-<POD>");
            rest = &tail[28..];
        } else if tail.len() >= 28 && hex(&tail[4..28]) {
            out.push_str("CNI-<POD>");
            rest = &tail[28..];
        } else {
            out.push_str("CNI-");
            rest = &tail[4..];
        }
    }
    out.push_str(rest);
    out
}

fn host_local_files(dir: &Path) -> Value {
    use std::os::unix::fs::PermissionsExt;
    let mut map = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let meta = e.metadata().expect("meta");
            let content = std::fs::read(e.path()).expect("read");
            map.insert(
                e.file_name().to_string_lossy().into_owned(),
                json!({
                    "mode": format!("{:o}", meta.permissions().mode()),
                    "content": String::from_utf8_lossy(&content),
                }),
            );
        }
    }
    json!(map)
}

/// Replaces what differs by construction between two nodes: ids, names, dirs, MACs, chain
/// hashes (which hash the container id), veth names.
fn normalise(text: &str, node: &Node, id: &str) -> String {
    let mut t = text
        .replace(id, "<ID>")
        .replace(&node.dir.display().to_string(), "<DIR>")
        .replace(&node.netns_name, "<NODE>")
        .replace(&node.bridge, "<BR>");
    let mut seen: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut out = String::new();
    let chars: Vec<char> = t.chars().collect();
    let is_hex = |c: char| c.is_ascii_hexdigit() && !c.is_ascii_uppercase();
    let mut i = 0;
    while i < chars.len() {
        let prev_ok = i == 0 || !(is_hex(chars[i - 1]) || chars[i - 1] == ':');
        let mut hit: Option<(usize, &'static str)> = None;
        // A MAC: xx:xx:xx:xx:xx:xx
        if prev_ok && i + 17 <= chars.len() {
            let ok = (0..17).all(|k| {
                if k % 3 == 2 {
                    chars[i + k] == ':'
                } else {
                    is_hex(chars[i + k])
                }
            });
            let end_ok = i + 17 == chars.len() || !(is_hex(chars[i + 17]) || chars[i + 17] == ':');
            if ok && end_ok {
                hit = Some((17, "MAC"));
            }
        }
        for (prefix, len, tag) in [
            ("veth", 12, "VETH"),
            ("CNI-DN-", 28, "CHAIN"),
            ("CNI-", 28, "CHAIN"),
        ] {
            if hit.is_none() && i + len <= chars.len() {
                let cand: String = chars[i..i + len].iter().collect();
                if cand.starts_with(prefix) && cand[prefix.len()..].chars().all(is_hex) {
                    hit = Some((len, tag));
                }
            }
        }
        match hit {
            Some((len, tag)) => {
                let cand: String = chars[i..i + len].iter().collect();
                let list = seen.entry(tag).or_default();
                let n = list.iter().position(|m| *m == cand).unwrap_or_else(|| {
                    list.push(cand.clone());
                    list.len() - 1
                });
                out.push_str(&format!("<{tag}{n}>"));
                i += len;
            }
            None => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    t = out;
    t
}

/// Writes the conflist and waits until the daemon has loaded it (the conf dir is watched, so
/// a write right after start-up is seen a moment later).
async fn install_conf(node: &Node, content: &str) {
    node.write_conf("10-crisp-test.conflist", content);
    let want: Value = serde_json::from_str(content).expect("conf json");
    let loaded = eventually(Duration::from_secs(10), || async {
        let mut client = node.client().await;
        let resp = client
            .status(cri::StatusRequest { verbose: true })
            .await
            .ok()?
            .into_inner();
        let net: Value = serde_json::from_str(resp.info.get("network")?).ok()?;
        (net["loaded"]["name"] == want["name"]
            && net["loaded"]["cniVersion"] == want["cniVersion"]
            && net["loaded"]["plugins"].as_array().map(Vec::len)
                == want["plugins"].as_array().map(Vec::len))
        .then_some(())
    })
    .await;
    assert!(
        loaded.is_some(),
        "the daemon did not load the conf:\n{}",
        node.log()
    );
}

async fn setup_one(case: &Case, fast: bool) -> (Node, String, String) {
    let args: &[&str] = if fast { FAST } else { &[] };
    let node = Node::start_with_args(Conf::Empty, args).await;
    install_conf(&node, &case_conflist(&node, case)).await;
    let mut client = node.client().await;
    let mut config = node.pod_config(case.name);
    config.port_mappings = case.ports.clone();
    let resp = client
        .run_pod_sandbox(run_req(config))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{} ({}): RunPodSandbox: {e}",
                case.name,
                if fast { "fast" } else { "exec" }
            )
        });
    let id = resp.into_inner().pod_sandbox_id;
    let info = verbose_info(&mut client, &id).await;
    let want = if fast { "fast" } else { "exec" };
    assert_eq!(info["networkPath"], want, "{}: {info}", case.name);
    let snap = snapshot(&node, &mut client, &id, case).await;
    (node, id, snap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_leaves_exactly_what_the_plugins_leave() {
    let mut failures = Vec::new();
    for case in cases() {
        let (_exec_node, _, exec) = setup_one(&case, false).await;
        let (_fast_node, _, fast) = setup_one(&case, true).await;
        if exec != fast {
            let diff: Vec<String> = exec
                .lines()
                .zip(fast.lines())
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("  exec: {a}\n  fast: {b}"))
                .collect();
            failures.push(format!(
                "case {}: {} differing lines\n{}\n--- exec snapshot ---\n{exec}\n--- fast \
                 snapshot ---\n{fast}",
                case.name,
                diff.len(),
                diff.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The default-like network: gateway, ipMasq, hairpin, portmap, IPv4 + IPv6.
fn full_case() -> Case {
    Case {
        name: "full",
        bridge: json!({"isGateway": true, "ipMasq": true, "hairpinMode": true}),
        ipam: |node| {
            json!({
                "type": "host-local",
                "ranges": [[{ "subnet": "10.99.0.0/24" }], [{ "subnet": "fd00:99::/64" }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": node.ipam_dir,
            })
        },
        portmap: true,
        loopback: false,
        version: "1.0.0",
        ports: vec![
            port(cri::Protocol::Tcp, 80, 8080, ""),
            port(cri::Protocol::Udp, 53, 5353, ""),
        ],
    }
}

/// Asserts the node holds nothing for any pod: no records, pins, cache entries, host-local
/// files, per-pod iptables chains or rules, and (once the kernel has destroyed the pod
/// namespaces) no veth.
async fn assert_nothing_left(node: &Node, what: &str) {
    for prog in ["iptables-save", "ip6tables-save"] {
        let nat = save(node, prog, "nat");
        assert!(
            !nat.contains("<POD>"),
            "{what}: {prog} still has per-pod chains:\n{nat}"
        );
    }
    assert_nothing_leaked(node, what).await;
}

async fn start_case_node(case: &Case, args: &[&str]) -> Node {
    let node = Node::start_with_args(Conf::Empty, args).await;
    install_conf(&node, &case_conflist(&node, case)).await;
    node
}

async fn run_case_pod(node: &Node, case: &Case, name: &str) -> String {
    let mut client = node.client().await;
    let mut config = node.pod_config(name);
    config.port_mappings = case.ports.clone();
    run_pod(&mut client, config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_works_across_paths() {
    let case = full_case();
    for (add_args, del_args, what) in [
        (FAST, &[][..], "fast ADD, exec DEL"),
        (&[][..], FAST, "exec ADD, fast DEL"),
    ] {
        let mut node = start_case_node(&case, add_args).await;
        let id = run_case_pod(&node, &case, "cross").await;
        let mut client = node.client().await;
        let first_path = verbose_info(&mut client, &id).await["networkPath"].clone();
        node.stop().await;
        node.extra_args = del_args.iter().map(|a| a.to_string()).collect();
        node.start_daemon().await;
        let mut client = node.client().await;
        stop_pod(&mut client, &id).await;
        remove_pod(&mut client, &id).await;
        assert_ne!(first_path, Value::Null, "{what}");
        assert_nothing_left(&node, what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_stop_releases_the_address_at_once() {
    let case = full_case();
    let node = start_case_node(&case, FAST).await;
    let mut client = node.client().await;
    let id = run_case_pod(&node, &case, "first").await;
    let (st, _) = status(&mut client, &id, false).await;
    let ip = st.network.expect("network").ip;
    assert!(node.ipam_dir.join(NETWORK).join(&ip).exists());
    stop_pod(&mut client, &id).await;
    // Released when Stop returns: the file is gone and a request for it would succeed.
    assert!(
        !node.ipam_dir.join(NETWORK).join(&ip).exists(),
        "{ip} still reserved after Stop"
    );
    remove_pod(&mut client, &id).await;
    assert_nothing_left(&node, "fast stop").await;
    // With the nf_tables variant of iptables (Debian's default) the nat rules went in one
    // netlink transaction; with iptables-legacy, through iptables-restore.
    let version = run(Command::new("iptables-restore").arg("-V"));
    let log = node.log();
    assert_eq!(
        log.contains("pod nat rules deleted over netlink"),
        version.contains("(nf_tables)"),
        "{version}"
    );
    assert!(!log.contains("over netlink failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fast_adds_and_exec_host_local_adds_never_share_an_address() {
    let case = full_case();
    let node = start_case_node(&case, FAST).await;
    let ipam_conf = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "ipam": (case.ipam)(&node),
    })
    .to_string();
    let tasks = fast_adds(&node, 32).await;
    // Real host-local, exec'd with the same store, interleaved with the fast ADDs.
    let execs = exec_host_local_adds(&node, &ipam_conf, 16);
    let mut all = Vec::new();
    let mut ids = Vec::new();
    for t in tasks {
        let (id, ips) = t.await.expect("pod task");
        ids.push(id);
        all.extend(ips);
    }
    for e in execs {
        all.extend(e.await.expect("exec task"));
    }
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        all.len(),
        "an address was given twice: {all:?}"
    );
    assert_eq!(all.len(), (32 + 16) * 2);
    let mut client = node.client().await;
    for id in &ids {
        stop_pod(&mut client, id).await;
        remove_pod(&mut client, id).await;
    }
    for i in 0..16 {
        let out = host_local(&node.netns_name, "DEL", i, &ipam_conf);
        assert!(out.status.success());
    }
    assert_nothing_left(&node, "concurrency").await;
}

/// `n` pods run at once, each on its own connection: their ids and addresses.
async fn fast_adds(node: &Node, n: usize) -> Vec<tokio::task::JoinHandle<(String, Vec<String>)>> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut client = node.client().await;
        let mut config = node.pod_config(&format!("conc-{i}"));
        config.port_mappings = vec![];
        tasks.push(tokio::spawn(async move {
            let id = run_pod(&mut client, config).await;
            let (st, _) = status(&mut client, &id, false).await;
            let net = st.network.expect("network");
            let mut ips = vec![net.ip];
            ips.extend(net.additional_ips.into_iter().map(|p| p.ip));
            (id, ips)
        }));
    }
    tasks
}

/// `n` ADDs of the real host-local on `conf`, each on a blocking thread: their addresses.
fn exec_host_local_adds(
    node: &Node,
    conf: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..n)
        .map(|i| {
            let conf = conf.to_string();
            let netns = node.netns_name.clone();
            tokio::task::spawn_blocking(move || {
                let out = host_local(&netns, "ADD", i, &conf);
                assert!(
                    out.status.success(),
                    "host-local ADD: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
                let v: Value = serde_json::from_slice(&out.stdout).expect("result");
                v["ips"]
                    .as_array()
                    .expect("ips")
                    .iter()
                    .map(|ip| {
                        ip["address"]
                            .as_str()
                            .expect("address")
                            .split('/')
                            .next()
                            .unwrap_or("")
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect()
}

/// Runs /usr/lib/cni/host-local `command` for container `exec-{i}` in the node namespace.
fn host_local(netns: &str, command: &str, i: usize, conf: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "/usr/lib/cni/host-local"])
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", format!("exec-{i}"))
        .env("CNI_NETNS", "/dev/null")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn host-local");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.as_bytes())
        .expect("write");
    child.wait_with_output().expect("host-local")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_fast_adds_and_dels_is_recovered_without_leftovers() {
    let case = full_case();
    let mut node = start_case_node(&case, FAST).await;
    // Crash in the middle of ADDs.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let mut client = node.client().await;
        let mut config = node.pod_config(&format!("crash-{i}"));
        config.port_mappings = case
            .ports
            .iter()
            .map(|p| cri::PortMapping {
                host_port: p.host_port + i,
                ..p.clone()
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            client
                .run_pod_sandbox(run_req(config))
                .await
                .ok()
                .map(|r| r.into_inner().pod_sandbox_id)
        }));
    }
    let dir = node.ipam_dir.join(NETWORK);
    eventually(Duration::from_secs(20), || {
        let dir = dir.clone();
        async move {
            let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
            (n >= 4).then_some(())
        }
    })
    .await
    .expect("some ADDs started");
    node.kill_hard();
    for t in tasks {
        let _ = t.await;
    }
    node.start_daemon().await;
    // Crash in the middle of DELs.
    let mut client = node.client().await;
    let pods = ids(&list(&mut client, None).await);
    let mut stops = Vec::new();
    for id in pods.clone() {
        let mut client = node.client().await;
        stops.push(tokio::spawn(async move {
            let _ = client
                .stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
                .await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    node.kill_hard();
    for s in stops {
        let _ = s.await;
    }
    node.start_daemon().await;
    let mut client = node.client().await;
    for id in ids(&list(&mut client, None).await) {
        stop_pod(&mut client, &id).await;
        remove_pod(&mut client, &id).await;
    }
    assert_nothing_left(&node, "crash recovery").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_configs_run_by_exec_and_the_log_says_why() {
    let base = full_case();
    type MakeConf = Box<dyn Fn(&Node) -> String>;
    let variants: Vec<(&str, MakeConf)> = vec![
        (
            "bridge: forceAddress",
            Box::new(|n: &Node| {
                let mut v: Value =
                    serde_json::from_str(&case_conflist(n, &full_case())).expect("json");
                v["plugins"][0]["forceAddress"] = json!(true);
                v.to_string()
            }),
        ),
        (
            "plugins [\"bridge\", \"portmap\", \"tuning\"]",
            Box::new(|n: &Node| {
                let mut v: Value =
                    serde_json::from_str(&case_conflist(n, &full_case())).expect("json");
                v["plugins"]
                    .as_array_mut()
                    .expect("list")
                    .push(json!({"type": "tuning"}));
                v.to_string()
            }),
        ),
        (
            "bridge: capability \"mac\"",
            Box::new(|n: &Node| {
                let mut v: Value =
                    serde_json::from_str(&case_conflist(n, &full_case())).expect("json");
                v["plugins"][0]["capabilities"] = json!({"mac": true});
                v.to_string()
            }),
        ),
        (
            "host-local: field \"resolvConf\"",
            Box::new(|n: &Node| {
                let resolv = n.dir.join("resolv.conf");
                std::fs::write(&resolv, "nameserver 10.96.0.10\n").expect("write");
                let mut v: Value =
                    serde_json::from_str(&case_conflist(n, &full_case())).expect("json");
                v["plugins"][0]["ipam"]["resolvConf"] = json!(resolv);
                v.to_string()
            }),
        ),
        (
            "portmap: field \"conditionsV4\"",
            Box::new(|n: &Node| {
                let mut v: Value =
                    serde_json::from_str(&case_conflist(n, &full_case())).expect("json");
                v["plugins"][1]["conditionsV4"] = json!(["!", "-d", "192.0.2.1"]);
                v.to_string()
            }),
        ),
        (
            "bridge: enabledad",
            Box::new(|n: &Node| {
                let mut v: Value =
                    serde_json::from_str(&case_conflist(n, &full_case())).expect("json");
                v["plugins"][0]["enabledad"] = json!(true);
                v.to_string()
            }),
        ),
    ];
    for (why, make) in variants {
        let node = Node::start_with_args(Conf::Empty, FAST).await;
        install_conf(&node, &make(&node)).await;
        let mut client = node.client().await;
        let mut config = node.pod_config("fallback");
        config.port_mappings = base.ports.clone();
        let id = run_pod(&mut client, config).await;
        let info = verbose_info(&mut client, &id).await;
        assert_eq!(info["networkPath"], "exec", "{why}: {info}");
        let log = node.log();
        let line = log
            .lines()
            .find(|l| l.contains("falling back to the plugins"))
            .unwrap_or_else(|| panic!("{why}: no fallback line in the log:\n{log}"));
        assert!(
            line.contains(why.split(':').next().unwrap_or(why)),
            "{why}: {line}"
        );
        assert_eq!(
            log.matches("falling back to the plugins").count(),
            1,
            "{why}: logged more than once per config:\n{log}"
        );
        stop_pod(&mut client, &id).await;
        remove_pod(&mut client, &id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_which_path_new_pods_take() {
    let case = full_case();
    for (args, want) in [(FAST, "fast"), (&[][..], "exec")] {
        let node = start_case_node(&case, args).await;
        let mut client = node.client().await;
        let resp = client
            .status(cri::StatusRequest { verbose: true })
            .await
            .expect("status")
            .into_inner();
        let net: Value =
            serde_json::from_str(resp.info.get("network").expect("network info")).expect("json");
        assert_eq!(net["path"], want, "{net}");
    }
}

/// The node's UDP conntrack entries (IPv4) as (original destination port, line).
fn udp_flows(node: &Node) -> Vec<(u16, String)> {
    let table = in_netns(&Path::new("/run/netns").join(&node.netns_name), || {
        std::fs::read_to_string("/proc/thread-self/net/nf_conntrack").expect("nf_conntrack")
    });
    table
        .lines()
        .filter(|l| l.starts_with("ipv4") && l.contains(" udp "))
        .filter_map(|l| {
            let port = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("dport="))?;
            Some((port.parse().ok()?, l.to_string()))
        })
        .collect()
}

/// portmap's stale-UDP cleanup, by both paths: UDP flows the node already tracks to a host
/// port (sent before a pod claimed it) are deleted once a pod mapping that port is set up,
/// and a flow to another port stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_udp_flows_to_a_new_host_port_are_deleted_by_both_paths() {
    let case = full_case();
    let claimed = case
        .ports
        .iter()
        .find(|p| p.protocol == cri::Protocol::Udp as i32)
        .expect("a UDP mapping")
        .host_port as u16;
    let other = claimed + 1;
    for (args, what) in [(&[][..], "exec"), (FAST, "fast")] {
        let node = start_case_node(&case, args).await;
        let mut client = node.client().await;
        // conntrack tracks a namespace's traffic once a rule there needs it: a first pod's
        // ipMasq rule does.
        let warm = run_pod(&mut client, node.pod_config("warm")).await;
        in_netns(&Path::new("/run/netns").join(&node.netns_name), || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            for port in [claimed, other] {
                socket.send_to(b"stale", ("127.0.0.1", port)).expect("send");
            }
        });
        let before: Vec<u16> = udp_flows(&node).into_iter().map(|(p, _)| p).collect();
        assert!(
            before.contains(&claimed) && before.contains(&other),
            "{what}: the flows are tracked first: {before:?}"
        );

        let id = run_case_pod(&node, &case, "claims").await;
        let after = udp_flows(&node);
        assert!(
            !after.iter().any(|(p, _)| *p == claimed),
            "{what}: a UDP flow to {claimed} survived the ADD: {after:?}"
        );
        assert!(
            after.iter().any(|(p, _)| *p == other),
            "{what}: the flow to {other} was deleted too: {after:?}"
        );
        for pod in [&warm, &id] {
            stop_pod(&mut client, pod).await;
            remove_pod(&mut client, pod).await;
        }
        assert_nothing_left(&node, what).await;
    }
}

/// The ipMasq case's node state after two pods: `iptables-save -t nat` and the nat table's
/// nf_tables expressions (`nft --debug=netlink`, rule handles dropped), normalised.
async fn two_masq_pods(args: &[&str]) -> (String, String, String) {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "ipmasq")
        .expect("the ipmasq case");
    let node = start_case_node(&case, args).await;
    let first = run_case_pod(&node, &case, "first").await;
    let second = run_case_pod(&node, &case, "second").await;
    let ids = |text: String| text.replace(&first, "<ID1>").replace(&second, "<ID2>");
    let saved = ids(save(&node, "iptables-save", "nat"));
    let expressions = ids(run(Command::new("ip").args([
        "netns",
        "exec",
        &node.netns_name,
        "nft",
        "--debug=netlink",
        "list",
        "table",
        "ip",
        "nat",
    ])));
    // The header line of each rule ends with its handle (and the position it was added at).
    let expressions: Vec<String> = expressions
        .lines()
        .map(|l| match l.strip_prefix("ip nat ") {
            Some(rest) => format!("ip nat {}", rest.split(' ').next().unwrap_or("")),
            None => l.to_string(),
        })
        .collect();
    // iptables-save orders the pods' chains by name (a hash of the id): order its lines by the
    // pod they belong to, keeping each pod's rule order. The expression listing has no ids:
    // compare its rule blocks as a sorted set, each block keeping its expression order.
    let saved = normalise(&saved, &node, "<no id>");
    let mut lines: Vec<&str> = saved.lines().collect();
    lines.sort_by_key(|l| (l.contains("<ID1>"), l.contains("<ID2>")));
    let saved = lines.join("\n");
    let expressions = normalise(&expressions.join("\n"), &node, "<no id>")
        .replace("<CHAIN0>", "<CHAIN>")
        .replace("<CHAIN1>", "<CHAIN>");
    let mut blocks: Vec<&str> = expressions.split("\n\n").collect();
    blocks.sort_unstable();
    let expressions = blocks.join("\n\n");
    let mut client = node.client().await;
    for id in [&first, &second] {
        stop_pod(&mut client, id).await;
        remove_pod(&mut client, id).await;
    }
    assert_nothing_left(&node, "two masq pods").await;
    (saved, expressions, node.log())
}

/// ipMasq's rules written over netlink (on iptables-nft, every pod after the first on a node:
/// the first one's iptables-restore makes the nat table) are what the bridge plugin leaves:
/// two pods by exec and two by the fast path give the same nat table, in `iptables-save` and in
/// its nf_tables expressions (payload, cmp, bitwise, the comment match, counter, verdict, the
/// MASQUERADE target).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmasq_rules_over_netlink_are_the_plugins() {
    let (exec_saved, exec_exprs, _) = two_masq_pods(&[]).await;
    let (fast_saved, fast_exprs, fast_log) = two_masq_pods(FAST).await;
    assert_eq!(fast_saved, exec_saved);
    assert_eq!(fast_exprs, exec_exprs);
    assert!(exec_saved.contains("MASQUERADE"), "{exec_saved}");
    let version = run(Command::new("iptables-restore").arg("-V"));
    if version.contains("(nf_tables)") {
        assert_eq!(
            fast_log
                .matches("ipMasq rules written over netlink")
                .count(),
            1,
            "the second pod's rules went over netlink"
        );
    }
}
