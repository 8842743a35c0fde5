//! A standalone measurement of the CNI fast path beside the exec path (until `make bench`
//! carries it): RunPodSandbox and StopPodSandbox latency p50/p90 over sequential rounds, and
//! RunPodSandbox throughput with 8 and 32 concurrent clients, against the real daemon in its
//! own node namespace over its Unix socket. Figures are printed, never asserted.
//!
//! ```text
//! cargo test --release --test fastpath_bench -- --ignored --nocapture
//! ```
//! `FASTPATH_BENCH_ROUNDS` (default 50) sets the sequential rounds; `FASTPATH_BENCH_GAP_MS`
//! (default 0) a pause before each sequential Run.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

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

async fn measure(args: &[&str], ip_masq: bool, rounds: usize) -> String {
    let node = Node::start_with_args(Conf::Empty, args).await;
    node.write_conf("10-crisp-test.conflist", &conf(&node, ip_masq));
    let mut client = node.client().await;
    // The conf dir is watched: wait until the daemon has loaded the list.
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
    // Warm up (bridge creation, first netlink connection).
    let id = run_pod(&mut client, node.pod_config("warm")).await;
    stop_pod(&mut client, &id).await;
    remove_pod(&mut client, &id).await;
    let (mut run, mut stop) = (Vec::new(), Vec::new());
    let gap = Duration::from_millis(
        std::env::var("FASTPATH_BENCH_GAP_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    for i in 0..rounds {
        // A pause before each Run (none by default): pods rarely start within milliseconds
        // of another's Stop, and the kernel finishes the previous teardown meanwhile.
        tokio::time::sleep(gap).await;
        let t = Instant::now();
        let id = run_pod(&mut client, node.pod_config(&format!("seq-{i}"))).await;
        run.push(t.elapsed());
        let t = Instant::now();
        stop_pod(&mut client, &id).await;
        stop.push(t.elapsed());
        remove_pod(&mut client, &id).await;
    }
    let mut out = format!(
        "Run p50 {:.1} ms p90 {:.1} ms | Stop p50 {:.1} ms p90 {:.1} ms",
        pct(&mut run, 0.5),
        pct(&mut run, 0.9),
        pct(&mut stop, 0.5),
        pct(&mut stop, 0.9)
    );
    for clients in [8usize, 32] {
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
        let secs = t.elapsed().as_secs_f64();
        out.push_str(&format!(
            " | {clients} clients: {:.0} Run/s",
            ids.len() as f64 / secs
        ));
        for id in ids {
            stop_pod(&mut client, &id).await;
            remove_pod(&mut client, &id).await;
        }
    }
    if std::env::var_os("FASTPATH_BENCH_STEPS").is_some() {
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
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test --release --test fastpath_bench -- --ignored --nocapture"]
async fn fast_path_beside_exec_path() {
    let rounds = std::env::var("FASTPATH_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    for ip_masq in [false, true] {
        for (label, args) in [
            ("exec", &[][..]),
            ("fast", &["--cni-fast-path", "auto"][..]),
        ] {
            let line = measure(args, ip_masq, rounds).await;
            println!("ipMasq={ip_masq:<5} {label}: {line}");
        }
    }
}
