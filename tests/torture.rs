//! The torture test: rounds of RunPodSandbox / StopPodSandbox / RemovePodSandbox calls with the
//! real bridge + host-local + portmap chain, crisp killed with SIGKILL at a random instant
//! 0–100 ms in, restarted, and the node checked against what crisp reports. After all rounds
//! and a final stop + remove of every pod, nothing may be left: no netns file or mount, no
//! veth besides the bridge, no host-local IP file, no CNI-HOSTPORT DNAT rule, no CNI cache
//! entry, no record.
//!
//! `CRISP_TORTURE_ROUNDS` sets the number of rounds (10 by default, as in `make test`;
//! `make torture` runs 200). `CRISP_TORTURE_SEED` replays a run; the seed is printed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use support::*;
use tonic::transport::Channel;

/// Pods kept alive at most; above this each round also removes one.
const MAX_PODS: usize = 6;
/// A call in flight when crisp is killed fails fast; this bounds waiting for it anyway.
const CALL_LIMIT: Duration = Duration::from_secs(60);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What crisp says about one sandbox.
#[derive(Debug)]
struct Reported {
    ready: bool,
    ip: String,
    netns: Option<PathBuf>,
    last_error: Option<String>,
}

/// What the node holds, counted.
#[derive(Debug, Default)]
struct Held {
    netns_files: BTreeSet<PathBuf>,
    netns_mounts: usize,
    /// IP file name → owning container id.
    ip_files: BTreeMap<String, String>,
    veths: usize,
    /// Container ids with a CNI-HOSTPORT DNAT chain.
    dnat_ids: BTreeSet<String>,
    cache_ids: BTreeSet<String>,
    record_ids: BTreeSet<String>,
}

fn held(node: &Node) -> Held {
    let left = node.leftovers();
    let name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let netns_dir = node.netns_dir.display().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    Held {
        netns_files: left.netns_files.iter().cloned().collect(),
        netns_mounts: mountinfo
            .lines()
            .filter(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|m| m.starts_with(&netns_dir))
            })
            .count(),
        ip_files: left
            .ip_files
            .iter()
            .map(|p| {
                let owner = std::fs::read_to_string(p).unwrap_or_default();
                let owner = owner.lines().next().unwrap_or("").trim().to_string();
                (name(p), owner)
            })
            .collect(),
        veths: node
            .node_links()
            .iter()
            .filter(|l| l.starts_with("veth"))
            .count(),
        dnat_ids: dnat_ids(node),
        cache_ids: left
            .cache_files
            .iter()
            .filter_map(|p| {
                let n = name(p);
                let rest = n.strip_prefix(&format!("{NETWORK}-"))?;
                rest.strip_suffix("-eth0").map(str::to_string)
            })
            .collect(),
        record_ids: left
            .records
            .iter()
            .filter_map(|p| name(p).strip_suffix(".json").map(str::to_string))
            .collect(),
    }
}

/// Container ids named by portmap's DNAT rules in the node namespace.
fn dnat_ids(node: &Node) -> BTreeSet<String> {
    let out = run(Command::new("nsenter")
        .arg(format!("--net={}", node.node_netns_path().display()))
        .args(["iptables-save", "-t", "nat"]));
    out.lines()
        .filter(|l| l.contains("dnat name:"))
        .filter_map(|l| {
            let at = l.find("id: \\\"")? + 6;
            let id: String = l[at..]
                .chars()
                .take_while(|c| c.is_ascii_hexdigit())
                .collect();
            (id.len() == 64).then_some(id)
        })
        .collect()
}

async fn reported(c: &mut RuntimeServiceClient<Channel>) -> BTreeMap<String, Reported> {
    let mut out = BTreeMap::new();
    for pod in list(c, None).await {
        let (st, _) = status(c, &pod.id, false).await;
        let info = verbose_info(c, &pod.id).await;
        let netns = info["netnsPath"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        out.insert(
            pod.id.clone(),
            Reported {
                ready: st.state == PodSandboxState::SandboxReady as i32,
                ip: st.network.map(|n| n.ip).unwrap_or_default(),
                netns,
                last_error: info["lastError"].as_str().map(str::to_string),
            },
        );
    }
    out
}

/// The node must hold exactly what crisp reports: a READY pod holds its pin, one IP file
/// (its reported IP), one veth and its DNAT rules; a NOT_READY pod holds nothing unless its
/// teardown failed (then `lastError` says so); nothing is held for a pod crisp does not list.
fn check(round: usize, pods: &BTreeMap<String, Reported>, h: &Held) -> Vec<String> {
    let mut bad = Vec::new();
    let ids: BTreeSet<String> = pods.keys().cloned().collect();
    if h.record_ids != ids {
        bad.push(format!("records {:?} != listed {:?}", h.record_ids, ids));
    }
    for (ip, owner) in &h.ip_files {
        match pods.get(owner) {
            Some(p) if p.ready && p.ip == *ip => {}
            Some(p) if !p.ready && p.last_error.is_some() => {}
            _ => bad.push(format!(
                "IP file {ip} held for {owner}, which is not a READY pod with that IP"
            )),
        }
    }
    for f in &h.netns_files {
        let owned = pods
            .values()
            .any(|p| p.netns.as_ref() == Some(f) && (p.ready || p.last_error.is_some()));
        if !owned {
            bad.push(format!("netns file {} owned by no live pod", f.display()));
        }
    }
    for id in h.cache_ids.iter().chain(&h.dnat_ids) {
        match pods.get(id) {
            Some(p) if p.ready || p.last_error.is_some() => {}
            _ => bad.push(format!(
                "CNI cache entry or DNAT rule for {id}, not a live pod"
            )),
        }
    }
    let ready = pods.values().filter(|p| p.ready).count();
    let failed = pods
        .values()
        .filter(|p| !p.ready && p.last_error.is_some())
        .count();
    if h.veths < ready || h.veths > ready + failed {
        bad.push(format!("{} veths for {ready} READY pods", h.veths));
    }
    for (id, p) in pods {
        if p.ready {
            let pinned = p.netns.as_ref().is_some_and(|n| h.netns_files.contains(n));
            let ip_held = h.ip_files.get(&p.ip) == Some(id);
            if !pinned || !ip_held {
                bad.push(format!(
                    "READY pod {id} lacks its pin ({pinned}) or IP file ({ip_held})"
                ));
            }
        }
    }
    bad.into_iter()
        .map(|b| format!("round {round}: {b}"))
        .collect()
}

fn port_pod(node: &Node, name: &str, host_port: i32) -> cri::PodSandboxConfig {
    let mut config = node.pod_config(name);
    config.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 80,
        host_port,
        host_ip: String::new(),
    }];
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_random_instants_leaks_nothing() {
    let (rounds, seed) = torture_settings();
    eprintln!("torture: {rounds} rounds, seed {seed} (CRISP_TORTURE_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let mut node = Node::start().await;
    let mut tally = Tally::default();
    for round in 0..rounds {
        let mut c = node.client().await;
        tally.setup_pods += keep_two_ready(&node, &mut c, round).await;
        let tasks = calls_in_flight(&node, &mut c, round, &mut rng).await;
        tally.calls += tasks.len();
        tokio::time::sleep(Duration::from_millis(rng.below(101))).await;
        node.kill_hard();
        tally.ok_calls += answered_ok(tasks).await;
        drop(c);
        node.start_daemon().await;
        check_recovered(&node, round, &mut tally).await;
    }
    assert_eq!(tally.checks, rounds);
    final_teardown_leaves_nothing(&node, rounds, &tally).await;
}

/// CRISP_TORTURE_ROUNDS (default 10) and CRISP_TORTURE_SEED (default: from the clock).
fn torture_settings() -> (usize, u64) {
    let rounds: usize = std::env::var("CRISP_TORTURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("CRISP_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    (rounds, seed)
}

/// What the rounds did, for the closing line.
struct Tally {
    started: Instant,
    calls: usize,
    ok_calls: usize,
    checks: usize,
    setup_pods: usize,
    recovered: BTreeMap<&'static str, usize>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            started: Instant::now(),
            calls: 0,
            ok_calls: 0,
            checks: 0,
            setup_pods: 0,
            recovered: BTreeMap::new(),
        }
    }
}

/// Keeps a few READY pods around (made outside the timed window), so the kill also lands
/// inside Stops and Removes, not only inside Runs. Returns how many it made.
async fn keep_two_ready(node: &Node, c: &mut RuntimeServiceClient<Channel>, round: usize) -> usize {
    let ready_now = list(c, None)
        .await
        .iter()
        .filter(|p| p.state == PodSandboxState::SandboxReady as i32)
        .count();
    let mut made = 0;
    for k in ready_now..2 {
        let port = 40000 + (round * 2 + k) as i32;
        run_pod(c, port_pod(node, &format!("p{round}-{k}"), port)).await;
        made += 1;
    }
    made
}

type Call = tokio::task::JoinHandle<Result<(), tonic::Status>>;

/// Two Runs, a Stop of a random READY pod and one or two Removes of random pods, all started.
async fn calls_in_flight(
    node: &Node,
    c: &mut RuntimeServiceClient<Channel>,
    round: usize,
    rng: &mut Rng,
) -> Vec<Call> {
    let pods: Vec<cri::PodSandbox> = list(c, None).await;
    let mut tasks = Vec::new();
    for k in 0..2 {
        let mut client = c.clone();
        let config = port_pod(
            node,
            &format!("t{round}-{k}"),
            20000 + (round * 2 + k) as i32,
        );
        tasks.push(tokio::spawn(async move {
            client.run_pod_sandbox(run_req(config)).await.map(|_| ())
        }));
    }
    let ready: Vec<&cri::PodSandbox> = pods
        .iter()
        .filter(|p| p.state == PodSandboxState::SandboxReady as i32)
        .collect();
    if !ready.is_empty() {
        let id = ready[rng.below(ready.len() as u64) as usize].id.clone();
        let mut client = c.clone();
        tasks.push(tokio::spawn(async move {
            client
                .stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
                .await
                .map(|_| ())
        }));
    }
    let removals = if pods.len() > MAX_PODS { 2 } else { 1 };
    for _ in 0..removals.min(pods.len()) {
        let id = pods[rng.below(pods.len() as u64) as usize].id.clone();
        let mut client = c.clone();
        tasks.push(tokio::spawn(async move {
            client
                .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
                .map(|_| ())
        }));
    }
    tasks
}

/// How many of the calls answered OK before the kill.
async fn answered_ok(tasks: Vec<Call>) -> usize {
    let mut ok = 0;
    for t in tasks {
        if let Ok(Ok(Ok(()))) = tokio::time::timeout(CALL_LIMIT, t).await {
            ok += 1;
        }
    }
    ok
}

/// After the restart: what crisp reports matches what the node holds, and recovery repaired
/// everything it tried to.
async fn check_recovered(node: &Node, round: usize, tally: &mut Tally) {
    let mut c = node.client().await;
    let pods = reported(&mut c).await;
    let h = held(node);
    tally.checks += 1;
    let bad = check(round, &pods, &h);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let report = recovery_report(&mut c).await;
    for key in [
        "rolled_back",
        "stopped",
        "failed_repairs",
        "orphan_netns_removed",
        "stray_plugins_killed",
    ] {
        *tally.recovered.entry(key).or_default() += report[key].as_u64().unwrap_or(0) as usize;
    }
    assert_eq!(report["failed_repairs"], 0, "round {round}: {report}");
}

/// Final: stop and remove every pod, then nothing at all may be left.
async fn final_teardown_leaves_nothing(node: &Node, rounds: usize, tally: &Tally) {
    let mut c = node.client().await;
    let last = list(&mut c, None).await;
    for pod in &last {
        stop_pod(&mut c, &pod.id).await;
        remove_pod(&mut c, &pod.id).await;
    }
    let h = held(node);
    let bridge_present = node.node_links().contains(&node.bridge);
    let other_links: Vec<String> = node
        .node_links()
        .into_iter()
        .filter(|l| l != "lo" && *l != node.bridge)
        .collect();
    eprintln!(
        "torture: {rounds} rounds survived in {:.1}s ({} pods set up, {} calls \
         started in the kill window, {} answered OK before the kill); recovery: {:?}; after the \
          final stop+remove of {} pods: \
         netns files {}, netns mounts {}, veths {} (bridge present: {bridge_present}), other \
          links {}, \
         host-local IP files {}, DNAT rules {}, CNI cache entries {}, records {}",
        tally.started.elapsed().as_secs_f64(),
        tally.setup_pods,
        tally.calls,
        tally.ok_calls,
        tally.recovered,
        last.len(),
        h.netns_files.len(),
        h.netns_mounts,
        h.veths,
        other_links.len(),
        h.ip_files.len(),
        h.dnat_ids.len(),
        h.cache_ids.len(),
        h.record_ids.len(),
    );
    assert!(list(&mut c, None).await.is_empty());
    assert!(h.netns_files.is_empty(), "{:?}", h.netns_files);
    assert_eq!(h.netns_mounts, 0);
    assert_eq!(h.veths, 0);
    assert!(other_links.is_empty(), "{other_links:?}");
    assert!(h.ip_files.is_empty(), "{:?}", h.ip_files);
    assert!(h.dnat_ids.is_empty(), "{:?}", h.dnat_ids);
    assert!(h.cache_ids.is_empty() && node.leftovers().cache_files.is_empty());
    assert!(h.record_ids.is_empty());
}

async fn recovery_report(c: &mut RuntimeServiceClient<Channel>) -> serde_json::Value {
    let st = c
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let raw = st.info.get("recovery").expect("recovery in verbose status");
    serde_json::from_str(raw).expect("recovery JSON")
}
