//! `make bench` (second part): the CNI fast path beside the exec path. RunPodSandbox and
//! StopPodSandbox latency p50/p90 over sequential rounds, and RunPodSandbox throughput with
//! 8 and 32 concurrent clients, against the real daemon in its own node namespace over its
//! Unix socket, with the bridge's ipMasq off and on. Figures are printed, never asserted.
//!
//! ```text
//! cargo bench --bench fastpath
//! ```
//! `FASTPATH_BENCH_ROUNDS` (default 50) sets the sequential rounds; `FASTPATH_BENCH_GAP_MS`
//! (default 0) a pause before each sequential Run; `FASTPATH_BENCH_STEPS` prints some of the
//! daemon's step timings. Under `cargo test --all-targets` (no `--bench`) it only says how
//! to run it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("fastpath bench: built; run it with `make bench` (cargo bench --bench fastpath)");
        return ExitCode::SUCCESS;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("fastpath bench: needs root (it creates network namespaces)");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fastpath bench: tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(fast_path_beside_exec_path());
    ExitCode::SUCCESS
}

async fn fast_path_beside_exec_path() {
    let rounds = env_number("FASTPATH_BENCH_ROUNDS", 50);
    for ip_masq in [false, true] {
        for (label, args) in [
            ("exec", &[][..]),
            ("fast", &["--cni-fast-path", "auto"][..]),
        ] {
            let line = measure(args, ip_masq, rounds as usize).await;
            println!("ipMasq={ip_masq:<5} {label}: {line}");
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn conf(node: &Node, ip_masq: bool) -> String {
    serde_json::to_string(&json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": node.bridge,
                "isGateway": true,
                "ipMasq": ip_masq,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": "10.99.0.0/16" }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": node.ipam_dir,
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    }))
    .expect("json")
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// One node with `args`, its figures as one line.
async fn measure(args: &[&str], ip_masq: bool, rounds: usize) -> String {
    let node = loaded_node(args, ip_masq).await;
    let mut client = node.client().await;
    // Warm up (bridge creation, first netlink connection).
    let id = run_pod(&mut client, node.pod_config("warm")).await;
    stop_pod(&mut client, &id).await;
    remove_pod(&mut client, &id).await;
    let mut out = sequential(&node, &mut client, rounds).await;
    for clients in [8usize, 32] {
        let per_sec = runs_per_second(&node, &mut client, clients).await;
        out.push_str(&format!(" | {clients} clients: {per_sec:.0} Run/s"));
    }
    if std::env::var_os("FASTPATH_BENCH_STEPS").is_some() {
        print_steps(&node);
    }
    out
}

/// A node with `args` whose daemon has loaded the bench's conf (the conf dir is watched).
async fn loaded_node(args: &[&str], ip_masq: bool) -> Node {
    let node = Node::start_with_args(Conf::Empty, args).await;
    node.write_conf("10-crisp-test.conflist", &conf(&node, ip_masq));
    let client = node.client().await;
    let loaded = eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let resp = client
                .status(k8s_cri::v1::StatusRequest { verbose: true })
                .await
                .ok()?
                .into_inner();
            let net: serde_json::Value = serde_json::from_str(resp.info.get("network")?).ok()?;
            (!net["loaded"].is_null()).then_some(())
        }
    })
    .await;
    assert!(loaded.is_some(), "the daemon did not load the conf");
    node
}

/// `rounds` sequential run → stop → remove cycles: Run and Stop p50/p90.
async fn sequential(node: &Node, client: &mut Client, rounds: usize) -> String {
    let (mut run, mut stop) = (Vec::new(), Vec::new());
    let gap = Duration::from_millis(env_number("FASTPATH_BENCH_GAP_MS", 0));
    for i in 0..rounds {
        // A pause before each Run (none by default): pods rarely start within milliseconds
        // of another's Stop, and the kernel finishes the previous teardown meanwhile.
        tokio::time::sleep(gap).await;
        let t = Instant::now();
        let id = run_pod(client, node.pod_config(&format!("seq-{i}"))).await;
        run.push(t.elapsed());
        let t = Instant::now();
        stop_pod(client, &id).await;
        stop.push(t.elapsed());
        remove_pod(client, &id).await;
    }
    format!(
        "Run p50 {:.1} ms p90 {:.1} ms | Stop p50 {:.1} ms p90 {:.1} ms",
        pct(&mut run, 0.5),
        pct(&mut run, 0.9),
        pct(&mut stop, 0.5),
        pct(&mut stop, 0.9)
    )
}

/// RunPodSandbox calls per second from `clients` concurrent clients, 4 pods each; the pods
/// are stopped and removed afterwards.
async fn runs_per_second(node: &Node, client: &mut Client, clients: usize) -> f64 {
    let per = 4;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = node.client().await;
        let configs: Vec<_> = (0..per)
            .map(|k| node.pod_config(&format!("tp{clients}-{c}-{k}")))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for config in configs {
                ids.push(run_pod(&mut client, config).await);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.expect("client"));
    }
    let per_sec = ids.len() as f64 / t.elapsed().as_secs_f64();
    for id in ids {
        stop_pod(client, &id).await;
        remove_pod(client, &id).await;
    }
    per_sec
}

/// A few of the daemon's step-timing lines.
fn print_steps(node: &Node) {
    for l in node
        .log()
        .lines()
        .filter(|l| {
            l.contains("fast path ADD done")
                || l.contains("sandbox created")
                || l.contains("sandbox torn down")
                || l.contains("over netlink")
        })
        .skip(20)
        .take(8)
    {
        println!("  {l}");
    }
}
