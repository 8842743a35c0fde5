//! `make bench`: crisp's figures against the bare CNI chain, at scale.
//!
//! Everything runs inside network namespaces this program creates: crisp runs in its own
//! node namespace (bridge + host-local + portmap, the repo's cni-conf/ list), the floor
//! driver in another, the scale run in a third (with the `noop` stand-in plugin, so its
//! figures are crisp's own). Prints a table, writes target/bench/results.json and
//! target/bench/latency.svg (and .png when rsvg-convert is installed).
//!
//! Settings (environment): CRISP_BENCH_N (sequential cycles, default 200), CRISP_BENCH_SCALE
//! (live sandboxes for the scale run, default 1000), CRISP_BENCH_CYCLES (cycles per client
//! in the concurrency run, default 4, at least 32 in all), CRISP_BENCH_USER (grpcurl cycles,
//! default 20).
//!
//! The HTTP/2 authority adapter's cost (a socket-path `:authority` client against a `localhost`
//! one, idle connections) is measured on its own crisp: see authority.rs; the background
//! network checker (a live-check and a CHECK round over CRISP_BENCH_SCALE real pods, plain vs
//! verbose PodSandboxStatus) on another: see checker.rs. CRISP_BENCH_ONLY=checker runs only
//! that part. What NRI adds to a Run (one no-op plugin against NRI off) is nri.rs;
//! CRISP_BENCH_ONLY=nri runs only that part.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it only says how to run it.

mod authority;
mod checker;
mod floor;
mod nri;
mod procfs;
mod report;
// The tests' harness: the node, its daemon, the CRI calls, the raw HTTP/2 client.
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use serde_json::{json, Value};

use floor::Floor;
use procfs::{rss_kib, rss_parts, threads};
use report::{ms, round3, Panel, Samples, Table};
use support::{
    pod_config_in, try_list, try_remove_pod, try_run_pod, try_status, try_stop_pod, Client, Conf,
    Node,
};

struct Settings {
    n: usize,
    scale: usize,
    cycles: usize,
    user: usize,
    levels: Vec<usize>,
}

impl Settings {
    fn from_env() -> Settings {
        let get = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        Settings {
            n: get("CRISP_BENCH_N", 200).max(1),
            scale: get("CRISP_BENCH_SCALE", 1000).max(1),
            cycles: get("CRISP_BENCH_CYCLES", 4).max(1),
            user: get("CRISP_BENCH_USER", 20),
            levels: vec![1, 8, 32],
        }
    }
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "crisp bench: built; run it with `make bench` (cargo bench --bench crisp), as root"
        );
        return ExitCode::SUCCESS;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("crisp bench: needs root (it creates network namespaces)");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crisp bench: tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(bench(Settings::from_env())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crisp bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, String>;

/// The repo's default pod network with host-local's store moved into `ipam_dir`.
fn chain_list(ipam_dir: &Path) -> Res<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cni-conf/10-crisp.conflist");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut list: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    list["plugins"][0]["ipam"]["dataDir"] = json!(ipam_dir);
    Ok(list)
}

/// A node for the bench: no conf yet, crisp logging at `info` as in production.
fn bench_node() -> Node {
    let mut node = Node::prepared(Conf::Empty);
    node.log_level = "info";
    node
}

/// A bench node on the repo's default network, its daemon started with `args`.
async fn chain_node(args: &[&str]) -> Res<Node> {
    let mut node = bench_node();
    node.extra_args = args.iter().map(|a| a.to_string()).collect();
    let list = chain_list(&node.ipam_dir)?;
    node.write_conf("10-crisp.conflist", &list.to_string());
    node.start_daemon().await;
    Ok(node)
}

/// The chain node's memory and threads through the first phases.
struct ChainMemory {
    idle: u64,
    after_seq: u64,
    after_conc: u64,
    threads: Option<u64>,
}

/// Everything the phases measured: what the report prints and writes.
struct Figures {
    machine: String,
    seq: Seq,
    conc: Vec<(usize, Level, Level)>,
    chain: ChainMemory,
    fast: FastRun,
    user: Option<UserView>,
    adapter: authority::AuthorityCost,
    scale: Scale,
    checks: checker::Figures,
    nri: nri::NriCost,
}

async fn bench(s: Settings) -> Res<()> {
    let wall = Instant::now();
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let machine = machine();
    println!("crisp bench on {machine}");
    println!(
        "N={} sequential cycles, scale={} sandboxes, concurrency {:?}",
        s.n, s.scale, s.levels
    );
    if std::env::var("CRISP_BENCH_ONLY").is_ok_and(|v| v == "checker") {
        eprintln!(
            "checker only: {} READY sandboxes on the real chain",
            s.scale
        );
        let figures = checker::measure(s.scale).await?;
        print!("{}", figures.table());
        return Ok(());
    }
    if std::env::var("CRISP_BENCH_ONLY").is_ok_and(|v| v == "nri") {
        eprintln!("NRI only: {} Runs with NRI off and on", s.n);
        print!("{}", nri::measure(s.n).await?.table(s.n));
        return Ok(());
    }
    let f = measure(&s, machine).await?;
    eprintln!("[5/5] report");
    report(&s, &f);
    let targets = targets(&f);
    print_targets(&targets);
    write_files(&s, &f, &targets, &out_dir, wall)
}

/// The phases in order: crisp and the floor on the real chain (sequential, then
/// concurrent), the fast path, a user's view, the authority adapter, scale, the checker.
async fn measure(s: &Settings, machine: String) -> Res<Figures> {
    let chain = chain_node(&[]).await?;
    let idle = rss_kib(&chain)?;
    let floor_node = bench_node();
    let floor = Arc::new(Floor::new(
        &chain_list(&floor_node.ipam_dir)?,
        &floor_node.node_netns_path(),
        &floor_node.netns_dir,
    )?);
    eprintln!("[1/5] sequential: {} cycles of crisp and of the floor", s.n);
    let seq = sequential(&chain, &floor, s.n).await?;
    let after_seq = rss_kib(&chain)?;
    eprintln!("[2/5] concurrency {:?}, crisp then the floor", s.levels);
    let conc = concurrency(&chain, &floor, s).await?;
    let chain_memory = ChainMemory {
        idle,
        after_seq,
        after_conc: rss_kib(&chain)?,
        threads: threads(&chain),
    };
    eprintln!(
        "[2b/5] fast path (--cni-fast-path auto): {} cycles, concurrency {:?}",
        s.n, s.levels
    );
    let fast = fast_path_run(s).await?;
    eprintln!(
        "[2c/5] NRI: {} Runs with one no-op plugin and with NRI off",
        s.n
    );
    let nri = nri::measure(s.n).await?;
    eprintln!("[3/5] grpcurl: {} cycles, one process per call", s.user);
    let user = user_view(&chain, s.user)?;
    eprintln!(
        "[3b/5] HTTP/2 authority adapter: {} status calls per client",
        s.n
    );
    let adapter = authority::measure(s.n).await?;
    drop(chain);
    drop(floor_node);
    eprintln!("[4/5] scale: {} live sandboxes (noop plugin)", s.scale);
    let scale = scale_run(s.scale).await?;
    eprintln!(
        "[4b/5] network checker: {} READY sandboxes on the real chain",
        s.scale
    );
    let checks = checker::measure(s.scale).await?;
    Ok(Figures {
        machine,
        seq,
        conc,
        chain: chain_memory,
        fast,
        user,
        adapter,
        scale,
        checks,
        nri,
    })
}

/// Phase 1: `n` run → status → list → stop → remove cycles of crisp, each followed by one
/// ADD + DEL cycle of the floor (interleaved, so both see the same machine).
async fn sequential(chain: &Node, floor: &Arc<Floor>, n: usize) -> Res<Seq> {
    let floor_thread = FloorThread::start(floor.clone());
    let mut client = chain.client().await;
    let logs = chain.dir.join("logs");
    for i in 0..3 {
        cycle(&mut client, &logs, &format!("warm-{i}")).await?;
        floor_thread.cycle(&format!("{:064x}", 0xfeed_0000_u64 + i))?;
    }
    let mut seq = Seq::default();
    for i in 0..n {
        let name = format!("seq-{i}");
        let t = Instant::now();
        let id = try_run_pod(&mut client, pod_config_in(&logs, &name)).await?;
        seq.run.push(t.elapsed());
        let t = Instant::now();
        try_status(&mut client, &id, false).await?;
        seq.status.push(t.elapsed());
        let t = Instant::now();
        try_list(&mut client, None).await?;
        seq.list.push(t.elapsed());
        let t = Instant::now();
        try_stop_pod(&mut client, &id).await?;
        seq.stop.push(t.elapsed());
        let t = Instant::now();
        try_remove_pod(&mut client, &id).await?;
        seq.remove.push(t.elapsed());
        let (add, del) = floor_thread.cycle(&format!("{:064x}", i + 1))?;
        seq.floor_add.push(add);
        seq.floor_del.push(del);
    }
    Ok(seq)
}

/// Phase 2: at each concurrency level, crisp's cycles then the floor's.
async fn concurrency(chain: &Node, floor: &Floor, s: &Settings) -> Res<Vec<(usize, Level, Level)>> {
    let mut conc = Vec::new();
    for &c in &s.levels {
        let total = (s.cycles * c).max(32);
        let crisp_level = crisp_concurrent(chain, c, total).await?;
        let floor_level = floor_concurrent(floor, c, total)?;
        conc.push((c, crisp_level, floor_level));
    }
    Ok(conc)
}

/// crisp's figure minus the floor's, at the same percentile.
fn overhead(c: &Samples, f: &Samples, p: f64) -> f64 {
    c.pct(p) - f.pct(p)
}

/// Phase 5, the tables: every figure the phases measured, on stdout.
fn report(s: &Settings, f: &Figures) {
    print_sequential(s, &f.seq);
    print_concurrency(&f.conc);
    print_scale(&f.scale);
    print_memory(&f.scale, &f.chain);
    if let Some(u) = &f.user {
        print_user(u);
    }
    print!("{}", f.adapter.table());
    print!("{}", f.checks.table());
    print_fast(s, f);
    print!("{}", f.nri.table(s.n));
}

fn print_sequential(s: &Settings, seq: &Seq) {
    let mut t = Table::new(
        &format!(
            "Sequential latency over the socket (tonic client), N={} each, real chain bridge + \
             host-local + portmap",
            s.n
        ),
        &["call", "p50 ms", "p90 ms", "p99 ms", "max ms"],
    );
    let rows: [(&str, &Samples); 7] = [
        ("RunPodSandbox", &seq.run),
        ("  floor: netns + ADD chain", &seq.floor_add),
        ("StopPodSandbox", &seq.stop),
        ("  floor: DEL chain + netns rm", &seq.floor_del),
        ("RemovePodSandbox", &seq.remove),
        ("PodSandboxStatus (1 live)", &seq.status),
        ("ListPodSandbox (1 live)", &seq.list),
    ];
    for (name, smp) in rows {
        t.row(vec![
            name.into(),
            ms(smp.pct(50.0)),
            ms(smp.pct(90.0)),
            ms(smp.pct(99.0)),
            ms(smp.pct(100.0)),
        ]);
    }
    print!("{}", t.render());

    let mut t = Table::new(
        "crisp overhead over the floor (crisp − floor, same percentile)",
        &["call", "p50 ms", "p90 ms", "crisp/floor p50"],
    );
    for (name, c, f) in [
        ("RunPodSandbox vs ADD", &seq.run, &seq.floor_add),
        ("StopPodSandbox vs DEL", &seq.stop, &seq.floor_del),
    ] {
        t.row(vec![
            name.into(),
            ms(overhead(c, f, 50.0)),
            ms(overhead(c, f, 90.0)),
            format!("{:.3}", c.pct(50.0) / f.pct(50.0)),
        ]);
    }
    let cycle_crisp = seq.run.pct(50.0) + seq.stop.pct(50.0) + seq.remove.pct(50.0);
    let cycle_floor = seq.floor_add.pct(50.0) + seq.floor_del.pct(50.0);
    t.row(vec![
        "run+stop+remove vs ADD+DEL".into(),
        ms(cycle_crisp - cycle_floor),
        "-".into(),
        format!("{:.3}", cycle_crisp / cycle_floor),
    ]);
    print!("{}", t.render());
}

fn print_concurrency(conc: &[(usize, Level, Level)]) {
    let mut t = Table::new(
        "Concurrency: each client runs run → stop → remove cycles on its own connection",
        &[
            "clients",
            "cycles",
            "crisp /s",
            "floor /s",
            "crisp/floor",
            "Run p99",
            "Stop p99",
            "Remove p99",
            "floor ADD p99",
            "errors",
        ],
    );
    for (c, cl, fl) in conc {
        t.row(vec![
            c.to_string(),
            cl.cycles.to_string(),
            format!("{:.1}", cl.per_sec()),
            format!("{:.1}", fl.per_sec()),
            format!("{:.3}", cl.per_sec() / fl.per_sec()),
            ms(cl.run.pct(99.0)),
            ms(cl.stop.pct(99.0)),
            ms(cl.remove.pct(99.0)),
            ms(fl.run.pct(99.0)),
            format!("{}/{}", cl.errors, fl.errors),
        ]);
    }
    print!("{}", t.render());
}

fn print_scale(scale: &Scale) {
    let mut t = Table::new(
        &format!(
            "Scale: {} live sandboxes (noop stand-in plugin: each has a pinned netns, a CNI \
             cache entry and a record; no real plugin runs)",
            scale.n
        ),
        &["figure", "p50", "p90", "p99"],
    );
    for (name, smp) in [
        ("PodSandboxStatus ms", &scale.status),
        ("ListPodSandbox, no filter ms", &scale.list),
        ("ListPodSandbox, pod-uid label ms", &scale.list_label),
    ] {
        t.row(vec![
            name.into(),
            ms(smp.pct(50.0)),
            ms(smp.pct(90.0)),
            ms(smp.pct(99.0)),
        ]);
    }
    for (name, value) in [
        (
            "recovery (crisp log millis=)".to_string(),
            format!("{} ms", scale.recovery_log_ms),
        ),
        (
            "restart: spawn → Version answers".to_string(),
            format!("{:.1} ms", scale.restart.as_secs_f64() * 1000.0),
        ),
        (
            format!("create {} (16 clients)", scale.n),
            format!("{:.1} s", scale.create.as_secs_f64()),
        ),
    ] {
        t.row(vec![name, value, "".into(), "".into()]);
    }
    print!("{}", t.render());
}

/// A table of 15 rows, one per memory figure.
fn print_memory(scale: &Scale, chain: &ChainMemory) {
    let mut t = Table::new("Memory: crisp's VmRSS", &["when", "KiB"]);
    for (name, v) in [
        (
            "idle, just started (scale node)",
            scale.rss_idle.to_string(),
        ),
        (
            "  of which anon / file-backed (binary, libs)",
            format!("{} / {}", scale.rss_idle_parts.0, scale.rss_idle_parts.1),
        ),
        ("  threads when idle", scale.idle_threads.to_string()),
        ("idle, just started (chain node)", chain.idle.to_string()),
        (
            "chain node after N sequential cycles",
            chain.after_seq.to_string(),
        ),
        (
            "chain node after the concurrency runs",
            chain.after_conc.to_string(),
        ),
        (
            "with the sandboxes live (created over gRPC)",
            scale.rss_live.to_string(),
        ),
        (
            "with the sandboxes live (after a restart)",
            scale.rss_after_restart.to_string(),
        ),
        ("after removing them", scale.rss_removed1.to_string()),
        (
            "after creating and removing them again",
            scale.rss_removed2.to_string(),
        ),
        (
            "after a third create and remove",
            scale.rss_removed3.to_string(),
        ),
        (
            "  per live sandbox, bytes",
            format!("{:.0}", scale.per_sandbox()),
        ),
        (
            "  per live sandbox after restart, bytes",
            format!("{:.0}", scale.per_sandbox_after_restart()),
        ),
        (
            "  growth, 3rd round vs 2nd, KiB",
            scale.growth().to_string(),
        ),
    ] {
        t.row(vec![name.into(), v]);
    }
    print!("{}", t.render());
}

fn print_user(u: &UserView) {
    let mut t = Table::new(
        &format!(
            "As a user sees it: wall time of one `{}` process per call, {} cycles",
            u.tool,
            u.run.0.len()
        ),
        &["call", "p50 ms", "p90 ms"],
    );
    for (name, smp) in [
        ("RunPodSandbox", &u.run),
        ("StopPodSandbox", &u.stop),
        ("RemovePodSandbox", &u.remove),
        ("Version (the tool's own cost)", &u.version),
    ] {
        t.row(vec![name.into(), ms(smp.pct(50.0)), ms(smp.pct(90.0))]);
    }
    print!("{}", t.render());
}

fn print_fast(s: &Settings, f: &Figures) {
    let (seq, fast) = (&f.seq, &f.fast);
    let mut t = Table::new(
        &format!(
            "Fast path (--cni-fast-path auto) beside the exec path, same network, N={}",
            s.n
        ),
        &["figure", "exec", "fast", "exec/fast"],
    );
    for (name, e, fa) in [
        ("RunPodSandbox p50 ms", &seq.run, &fast.run, 50.0),
        ("RunPodSandbox p90 ms", &seq.run, &fast.run, 90.0),
        ("StopPodSandbox p50 ms", &seq.stop, &fast.stop, 50.0),
        ("StopPodSandbox p90 ms", &seq.stop, &fast.stop, 90.0),
    ]
    .map(|(name, e, fa, p)| (name, e.pct(p), fa.pct(p)))
    {
        t.row(vec![name.into(), ms(e), ms(fa), format!("{:.2}", e / fa)]);
    }
    for (c, fl) in &fast.levels {
        if let Some((_, cl, _)) = f.conc.iter().find(|(cc, _, _)| cc == c) {
            t.row(vec![
                format!("{c} clients, cycles/s"),
                format!("{:.1}", cl.per_sec()),
                format!("{:.1}", fl.per_sec()),
                format!("{:.2}", cl.per_sec() / fl.per_sec()),
            ]);
        }
    }
    print!("{}", t.render());
}

/// (target, met, measured).
type Target = (String, bool, String);

/// The targets crisp is held to (docs/performance.md), each with what was measured.
fn targets(f: &Figures) -> Vec<Target> {
    let (seq, scale) = (&f.seq, &f.scale);
    let run_over = overhead(&seq.run, &seq.floor_add, 50.0);
    let stop_over = overhead(&seq.stop, &seq.floor_del, 50.0);
    let per_sandbox = scale.per_sandbox();
    let growth = scale.growth();
    let mut targets: Vec<Target> = vec![
        (
            "Run overhead ≤ 1 ms p50".into(),
            run_over <= 1.0,
            format!("{} ms", ms(run_over)),
        ),
        (
            "Stop overhead ≤ 1 ms p50".into(),
            stop_over <= 1.0,
            format!("{} ms", ms(stop_over)),
        ),
        (
            "idle RSS ≤ 8 MB".into(),
            scale.rss_idle <= 8 * 1024,
            format!("{} KiB", scale.rss_idle),
        ),
        (
            "≤ 50 KB per live sandbox".into(),
            per_sandbox <= 50_000.0,
            format!("{per_sandbox:.0} B"),
        ),
        (
            "no growth after removal (3rd round vs 2nd ≤ 1 MiB)".into(),
            growth <= 1024,
            format!("{growth} KiB"),
        ),
    ];
    targets.extend(scale_targets(f));
    let nri_added = f.nri.added_p50();
    targets.push((
        "NRI with one no-op plugin adds ≤ 0.5 ms to Run p50".into(),
        nri_added <= 0.5,
        format!("{} ms", ms(nri_added)),
    ));
    targets
}

/// The targets at scale, of the adapter, under 32 clients and of the checker.
fn scale_targets(f: &Figures) -> Vec<Target> {
    let (scale, adapter, checks) = (&f.scale, &f.adapter, &f.checks);
    let c32 = f.conc.iter().find(|(c, _, _)| *c == 32);
    vec![
        (
            format!("Status with {} ≤ 2 ms p50", scale.n),
            scale.status.pct(50.0) <= 2.0,
            format!("{} ms", ms(scale.status.pct(50.0))),
        ),
        (
            format!("List with {} ≤ 2 ms p50", scale.n),
            scale.list.pct(50.0) <= 2.0,
            format!("{} ms", ms(scale.list.pct(50.0))),
        ),
        (
            format!("recovery of {} ≤ 1 s", scale.n),
            scale.recovery_log_ms <= 1000,
            format!("{} ms", scale.recovery_log_ms),
        ),
        (
            "socket-path :authority Status p50 within 20 µs of localhost".into(),
            adapter.p50_delta_us() <= 20.0,
            format!("{:.1} µs", adapter.p50_delta_us()),
        ),
        (
            "32 clients: no errors".into(),
            c32.is_some_and(|(_, c, _)| c.errors == 0),
            c32.map(|(_, c, _)| format!("{} errors", c.errors))
                .unwrap_or_default(),
        ),
        (
            "32 clients: throughput ≥ 0.9 × the floor's".into(),
            c32.is_some_and(|(_, c, f)| c.per_sec() >= 0.9 * f.per_sec()),
            c32.map(|(_, c, f)| format!("{:.1}/s vs {:.1}/s", c.per_sec(), f.per_sec()))
                .unwrap_or_default(),
        ),
        (
            "verbose PodSandboxStatus ≤ 0.3 ms p50 (no plugin run)".into(),
            checks.verbose_p50() <= 0.3,
            format!(
                "{} ms (plain {} ms)",
                ms(checks.verbose_p50()),
                ms(checks.plain_p50())
            ),
        ),
    ]
}

fn print_targets(targets: &[Target]) {
    let mut t = Table::new("Targets", &["target", "measured", "met"]);
    for (name, met, measured) in targets {
        t.row(vec![
            name.clone(),
            measured.clone(),
            if *met { "yes" } else { "NO" }.into(),
        ]);
    }
    print!("{}", t.render());
}

/// The JSON of the sequential, overhead, fast-path and concurrency figures.
fn latency_json(f: &Figures) -> Value {
    let (seq, fast) = (&f.seq, &f.fast);
    json!({
        "sequential": {
            "run": seq.run.json(), "stop": seq.stop.json(), "remove": seq.remove.json(),
            "status": seq.status.json(), "list": seq.list.json(),
            "floor_add": seq.floor_add.json(), "floor_del": seq.floor_del.json(),
        },
        "overhead_ms": {
            "run_p50": round3(overhead(&seq.run, &seq.floor_add, 50.0)),
            "run_p90": round3(overhead(&seq.run, &seq.floor_add, 90.0)),
            "stop_p50": round3(overhead(&seq.stop, &seq.floor_del, 50.0)),
            "stop_p90": round3(overhead(&seq.stop, &seq.floor_del, 90.0)),
            "run_ratio_p50": round3(seq.run.pct(50.0) / seq.floor_add.pct(50.0)),
            "stop_ratio_p50": round3(seq.stop.pct(50.0) / seq.floor_del.pct(50.0)),
        },
        "fast_path": {
            "run": fast.run.json(), "stop": fast.stop.json(), "remove": fast.remove.json(),
            "concurrency": fast.levels.iter().map(|(c, l)| json!({
                "clients": c, "cycles": l.cycles, "per_sec": round3(l.per_sec()),
                "run": l.run.json(), "stop": l.stop.json(), "errors": l.errors,
            })).collect::<Vec<_>>(),
        },
        "concurrency": f.conc.iter().map(|(c, cl, fl)| json!({
            "clients": c, "cycles": cl.cycles,
            "crisp_per_sec": round3(cl.per_sec()), "floor_per_sec": round3(fl.per_sec()),
            "run": cl.run.json(), "stop": cl.stop.json(), "remove": cl.remove.json(),
            "floor_add": fl.run.json(), "floor_del": fl.stop.json(),
            "crisp_errors": cl.errors, "floor_errors": fl.errors,
        })).collect::<Vec<_>>(),
    })
}

/// The JSON of the scale and memory figures.
fn scale_json(f: &Figures) -> Value {
    let (scale, chain) = (&f.scale, &f.chain);
    json!({
        "scale": {
            "sandboxes": scale.n, "plugin": "noop stand-in (tests/fixtures/noop)",
            "status": scale.status.json(), "list": scale.list.json(),
                "list_label": scale.list_label.json(),
            "recovery_log_ms": scale.recovery_log_ms,
            "restart_to_answer_ms": round3(scale.restart.as_secs_f64() * 1000.0),
            "create_s": round3(scale.create.as_secs_f64()),
        },
        "memory_kib": {
            "idle": scale.rss_idle, "idle_anon": scale.rss_idle_parts.0,
                "idle_file": scale.rss_idle_parts.1,
            "idle_threads": scale.idle_threads, "chain_idle": chain.idle,
            "chain_after_sequential": chain.after_seq, "chain_after_concurrency": chain.after_conc,
            "live": scale.rss_live, "live_after_restart": scale.rss_after_restart,
            "removed": scale.rss_removed1, "removed_again": scale.rss_removed2,
                "removed_third": scale.rss_removed3,
            "per_sandbox_bytes": scale.per_sandbox().round(),
            "per_sandbox_after_restart_bytes": scale.per_sandbox_after_restart().round(),
            "growth_kib": scale.growth(), "chain_threads": chain.threads,
        },
    })
}

/// target/bench/results.json: every figure, the settings and the targets.
fn results_json(s: &Settings, f: &Figures, targets: &[Target], wall: Instant) -> Value {
    let mut out = json!({
        "machine": f.machine,
        "settings": {"n": s.n, "scale": s.scale, "levels": s.levels, "cycles_per_client": s.cycles,
            "user_cycles": s.user},
    });
    for part in [latency_json(f), scale_json(f)] {
        if let (Some(out), Value::Object(part)) = (out.as_object_mut(), part) {
            out.extend(part);
        }
    }
    out["user_view"] = json!(f.user.as_ref().map(|u| json!({
        "tool": u.tool, "run": u.run.json(), "stop": u.stop.json(), "remove": u.remove.json(),
        "version": u.version.json(),
    })));
    out["authority_adapter"] = f.adapter.json();
    out["network_checker"] = f.checks.json();
    out["nri"] = json!({
        "run_off": f.nri.off.json(), "run_on": f.nri.on.json(), "hook": f.nri.hook.json(),
        "added_p50_ms": round3(f.nri.added_p50()),
    });
    out["targets"] = targets
        .iter()
        .map(|(n, m, v)| json!({"target": n, "met": m, "measured": v}))
        .collect();
    out["bench_seconds"] = json!(round3(wall.elapsed().as_secs_f64()));
    out
}

/// Writes results.json and the latency CDFs (latency.svg, and .png with rsvg-convert).
fn write_files(
    s: &Settings,
    f: &Figures,
    targets: &[Target],
    out_dir: &Path,
    wall: Instant,
) -> Res<()> {
    let json_out = results_json(s, f, targets, wall);
    let json_path = out_dir.join("results.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json_out).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", json_path.display()))?;
    let svg = latency_svg(s, f);
    let svg_path = out_dir.join("latency.svg");
    std::fs::write(&svg_path, svg).map_err(|e| format!("{}: {e}", svg_path.display()))?;
    let png_path = out_dir.join("latency.png");
    let png = Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png_path)
        .arg(&svg_path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    println!(
        "\nwrote {}, {}{} in {:.0} s",
        json_path.display(),
        svg_path.display(),
        if png {
            format!(", {}", png_path.display())
        } else {
            String::new()
        },
        wall.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The sequential figures as latency CDFs, crisp against the floor.
fn latency_svg(s: &Settings, f: &Figures) -> String {
    let seq = &f.seq;
    report::cdf_svg(
        "crisp vs the bare CNI chain (bridge + host-local + portmap): latency CDFs",
        &format!("{} sequential cycles each, interleaved; {}", s.n, f.machine),
        &[
            Panel {
                title: "RunPodSandbox vs netns + ADD",
                series: vec![
                    ("crisp RunPodSandbox", &seq.run, "#1f77b4"),
                    ("floor netns + ADD", &seq.floor_add, "#ff7f0e"),
                ],
            },
            Panel {
                title: "StopPodSandbox vs DEL + netns rm",
                series: vec![
                    ("crisp StopPodSandbox", &seq.stop, "#1f77b4"),
                    ("floor DEL + netns rm", &seq.floor_del, "#ff7f0e"),
                ],
            },
            Panel {
                title: "crisp's own calls (no plugin runs)",
                series: vec![
                    ("RemovePodSandbox", &seq.remove, "#2ca02c"),
                    ("PodSandboxStatus", &seq.status, "#9467bd"),
                    ("ListPodSandbox", &seq.list, "#8c564b"),
                ],
            },
        ],
    )
}

#[derive(Default)]
struct Seq {
    run: Samples,
    stop: Samples,
    remove: Samples,
    status: Samples,
    list: Samples,
    floor_add: Samples,
    floor_del: Samples,
}

// ---------------------------------------------------------------- the floor, on its own thread

enum Job {
    Cycle(String, mpsc::Sender<Res<(Duration, Duration)>>),
}

/// A dedicated thread in the floor's node namespace, driven from the async side.
struct FloorThread {
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl FloorThread {
    fn start(floor: Arc<Floor>) -> FloorThread {
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = std::thread::spawn(move || {
            let worker = floor.worker();
            for Job::Cycle(id, reply) in rx {
                let r = match &worker {
                    Ok(w) => floor_cycle(w, &id),
                    Err(e) => Err(e.clone()),
                };
                let _ = reply.send(r);
            }
        });
        FloorThread {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// One ADD + DEL cycle; the times are taken on the floor thread.
    fn cycle(&self, id: &str) -> Res<(Duration, Duration)> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .ok_or("floor thread gone")?
            .send(Job::Cycle(id.to_string(), tx))
            .map_err(|_| "floor thread gone")?;
        rx.recv().map_err(|_| "floor thread died".to_string())?
    }
}

impl Drop for FloorThread {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn floor_cycle(w: &floor::Worker, id: &str) -> Res<(Duration, Duration)> {
    let pod = format!("floor-{}", &id[56..]);
    let t = Instant::now();
    let result = w.add(id, &pod)?;
    let add = t.elapsed();
    let t = Instant::now();
    w.del(id, &pod, &result)?;
    Ok((add, t.elapsed()))
}

// ---------------------------------------------------------------- concurrency

#[derive(Default)]
struct Level {
    cycles: usize,
    wall: Duration,
    run: Samples,
    stop: Samples,
    remove: Samples,
    errors: usize,
}

impl Level {
    fn per_sec(&self) -> f64 {
        (self.cycles - self.errors.min(self.cycles)) as f64 / self.wall.as_secs_f64()
    }
}

async fn crisp_concurrent(node: &Node, clients: usize, total: usize) -> Res<Level> {
    let per = total / clients;
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(node.client().await);
    }
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (k, mut client) in conns.into_iter().enumerate() {
        let logs = node.dir.join("logs");
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut l = Level::default();
            for i in 0..per {
                let name = format!("c{clients}-{k}-{i}");
                match timed_cycle(&mut client, &logs, &name).await {
                    Ok((r, s, m)) => {
                        l.run.push(r);
                        l.stop.push(s);
                        l.remove.push(m);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("  {clients} clients: {e}");
                        }
                    }
                }
            }
            l
        }));
    }
    let mut level = Level::default();
    for t in tasks {
        let l = t.await.map_err(|e| e.to_string())?;
        level.run.0.extend(l.run.0);
        level.stop.0.extend(l.stop.0);
        level.remove.0.extend(l.remove.0);
    }
    level.wall = started.elapsed();
    level.cycles = per * clients;
    level.errors = errors.load(Ordering::Relaxed);
    Ok(level)
}

/// The floor at the same concurrency: `clients` threads, each ADD then DEL.
fn floor_concurrent(floor: &Floor, clients: usize, total: usize) -> Res<Level> {
    let per = total / clients;
    static NEXT: AtomicU64 = AtomicU64::new(0x1000_0000);
    let started = Instant::now();
    let parts: Vec<Res<Level>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..clients)
            .map(|_| {
                sc.spawn(|| {
                    let w = floor.worker()?;
                    let mut l = Level::default();
                    for _ in 0..per {
                        let id = format!("{:064x}", NEXT.fetch_add(1, Ordering::Relaxed));
                        match floor_cycle(&w, &id) {
                            Ok((a, d)) => {
                                l.run.push(a);
                                l.stop.push(d);
                            }
                            Err(e) => {
                                if l.errors == 0 {
                                    eprintln!("  floor, {clients} clients: {e}");
                                }
                                l.errors += 1;
                            }
                        }
                    }
                    Ok(l)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("floor thread panicked".into()))
            })
            .collect()
    });
    let mut level = Level {
        wall: started.elapsed(),
        cycles: per * clients,
        ..Level::default()
    };
    for p in parts {
        let l = p?;
        level.run.0.extend(l.run.0);
        level.stop.0.extend(l.stop.0);
        level.errors += l.errors;
    }
    Ok(level)
}

// ---------------------------------------------------------------- scale

struct Scale {
    n: usize,
    create: Duration,
    status: Samples,
    list: Samples,
    list_label: Samples,
    restart: Duration,
    recovery_log_ms: u64,
    rss_idle: u64,
    /// (anon, file-backed) KiB
    rss_idle_parts: (u64, u64),
    idle_threads: u64,
    rss_live: u64,
    rss_after_restart: u64,
    rss_removed1: u64,
    rss_removed2: u64,
    rss_removed3: u64,
}

async fn scale_run(n: usize) -> Res<Scale> {
    let mut node = bench_node();
    node.write_conf(
        "10-noop.conflist",
        r#"{"cniVersion":"1.0.0","name":"crisp-bench-noop","plugins":[{"type":"noop"}]}"#,
    );
    node.start_daemon().await;
    let rss_idle = rss_kib(&node)?;
    let rss_idle_parts = rss_parts(&node).unwrap_or_default();
    let idle_threads = threads(&node).unwrap_or_default();
    let t = Instant::now();
    let ids = create_many(&node, n, "a").await?;
    let create = t.elapsed();
    let rss_live = rss_kib(&node)?;

    let mut client = node.client().await;
    let status_s = status_calls(&mut client, &ids, n).await?;
    let (list_s, list_label) = list_calls(&mut client, n).await?;
    drop(client);

    node.stop().await;
    let restart = node.start_daemon().await;
    let rss_after_restart = rss_kib(&node)?;
    let recovery_log_ms = recovery_millis(&node.log())
        .ok_or("no `recovery finished ... millis=` line in crisp's log")?;

    let [rss_removed1, rss_removed2, rss_removed3] = removal_rounds(&node, &ids, n).await?;
    Ok(Scale {
        n,
        create,
        status: status_s,
        list: list_s,
        list_label,
        restart,
        recovery_log_ms,
        rss_idle,
        rss_idle_parts,
        idle_threads,
        rss_live,
        rss_after_restart,
        rss_removed1,
        rss_removed2,
        rss_removed3,
    })
}

/// `max(n, 200)` PodSandboxStatus calls spread over the live sandboxes.
async fn status_calls(client: &mut Client, ids: &[String], n: usize) -> Res<Samples> {
    let mut samples = Samples::default();
    for k in 0..n.max(200) {
        let id = &ids[(k * 7919) % ids.len()];
        let t = Instant::now();
        try_status(client, id, false).await?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// 200 unfiltered ListPodSandbox calls and 200 by pod-uid label, each answer counted.
async fn list_calls(client: &mut Client, n: usize) -> Res<(Samples, Samples)> {
    let mut list_s = Samples::default();
    let mut list_label = Samples::default();
    for k in 0..200 {
        let t = Instant::now();
        let items = try_list(client, None).await?.len();
        list_s.push(t.elapsed());
        if items != n {
            return Err(format!("List returned {items} sandboxes, expected {n}"));
        }
        let uid = format!("uid-scale-a-{}", (k * 31) % n);
        let filter = cri::PodSandboxFilter {
            label_selector: [("io.kubernetes.pod.uid".to_string(), uid)].into(),
            ..Default::default()
        };
        let t = Instant::now();
        let items = try_list(client, Some(filter)).await?.len();
        list_label.push(t.elapsed());
        if items != 1 {
            return Err(format!("List by pod uid returned {items} sandboxes"));
        }
    }
    Ok((list_s, list_label))
}

/// Removes `ids`, then creates and removes `n` twice more: the RSS after each round.
async fn removal_rounds(node: &Node, ids: &[String], n: usize) -> Res<[u64; 3]> {
    // crisp gives freed heap back to the kernel once removals have stopped for a second
    // (crisp::heap::TRIM_AFTER_QUIET): read RSS after that.
    let settle = crisp::heap::TRIM_AFTER_QUIET * 2;
    remove_many(node, ids).await?;
    tokio::time::sleep(settle).await;
    let first = rss_kib(node)?;
    let ids = create_many(node, n, "b").await?;
    remove_many(node, &ids).await?;
    tokio::time::sleep(settle).await;
    let second = rss_kib(node)?;
    let ids = create_many(node, n, "c").await?;
    remove_many(node, &ids).await?;
    tokio::time::sleep(settle).await;
    Ok([first, second, rss_kib(node)?])
}

impl Scale {
    /// Bytes of RSS each live sandbox adds (created over gRPC).
    fn per_sandbox(&self) -> f64 {
        (self.rss_live as f64 - self.rss_idle as f64) * 1024.0 / self.n as f64
    }

    /// Bytes of RSS each live sandbox adds when recovered by a restart.
    fn per_sandbox_after_restart(&self) -> f64 {
        (self.rss_after_restart as f64 - self.rss_idle as f64) * 1024.0 / self.n as f64
    }

    /// KiB the third create-and-remove round left over the second (both over gRPC, no
    /// restart in between).
    fn growth(&self) -> i64 {
        self.rss_removed3 as i64 - self.rss_removed2 as i64
    }
}

const SCALE_CLIENTS: usize = 16;

async fn create_many(node: &Node, n: usize, round: &str) -> Res<Vec<String>> {
    let mut tasks = Vec::new();
    for k in 0..SCALE_CLIENTS {
        let mut client = node.client().await;
        let logs = node.dir.join("logs");
        let round = round.to_string();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (k..n).step_by(SCALE_CLIENTS) {
                let name = format!("scale-{round}-{i}");
                ids.push(try_run_pod(&mut client, pod_config_in(&logs, &name)).await?);
            }
            Ok::<_, String>(ids)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.map_err(|e| e.to_string())??);
    }
    Ok(ids)
}

async fn remove_many(node: &Node, ids: &[String]) -> Res<()> {
    let mut tasks = Vec::new();
    for k in 0..SCALE_CLIENTS {
        let mut client = node.client().await;
        let mine: Vec<String> = ids.iter().skip(k).step_by(SCALE_CLIENTS).cloned().collect();
        tasks.push(tokio::spawn(async move {
            for id in mine {
                try_stop_pod(&mut client, &id).await?;
                try_remove_pod(&mut client, &id).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// `millis=` of the last `recovery finished` line (ANSI colours stripped).
fn recovery_millis(log: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("recovery finished"))?;
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let at = plain.find("millis=")? + "millis=".len();
    plain[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

// ---------------------------------------------------------------- a user's view: grpcurl

struct UserView {
    tool: String,
    run: Samples,
    stop: Samples,
    remove: Samples,
    version: Samples,
}

fn user_view(node: &Node, cycles: usize) -> Res<Option<UserView>> {
    if cycles == 0 {
        return Ok(None);
    }
    let tool = "grpcurl".to_string();
    if Command::new(&tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("  grpcurl is not on PATH: the user-view figures are left out");
        return Ok(None);
    }
    let call = |method: &str, body: &str| -> Res<(Duration, String)> {
        let t = Instant::now();
        let mut child = Command::new(&tool)
            .args(["-plaintext", "-unix", "-d", "@"])
            .arg(&node.socket)
            .arg(format!("runtime.v1.RuntimeService/{method}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("grpcurl: {e}"))?;
        if let Some(mut w) = child.stdin.take() {
            use std::io::Write;
            let _ = w.write_all(body.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let d = t.elapsed();
        if !out.status.success() {
            return Err(format!(
                "grpcurl {method}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok((d, String::from_utf8_lossy(&out.stdout).into_owned()))
    };
    let mut u = UserView {
        tool: "grpcurl (as found on PATH)".into(),
        run: Samples::default(),
        stop: Samples::default(),
        remove: Samples::default(),
        version: Samples::default(),
    };
    for i in 0..cycles {
        let config = node.pod_config(&format!("user-{i}"));
        let body = json!({ "config": serde_json::to_value(&config).map_err(|e| e.to_string())? })
            .to_string();
        let (d, out) = call("RunPodSandbox", &body)?;
        u.run.0.push(d.as_secs_f64() * 1000.0);
        let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
        let id = v["podSandboxId"]
            .as_str()
            .ok_or_else(|| format!("no podSandboxId in {out}"))?
            .to_string();
        let body = json!({ "podSandboxId": id }).to_string();
        let (d, _) = call("StopPodSandbox", &body)?;
        u.stop.0.push(d.as_secs_f64() * 1000.0);
        let (d, _) = call("RemovePodSandbox", &body)?;
        u.remove.0.push(d.as_secs_f64() * 1000.0);
        let (d, _) = call("Version", "{}")?;
        u.version.0.push(d.as_secs_f64() * 1000.0);
    }
    Ok(Some(u))
}

/// The fast path's figures: the same sequential cycles and concurrency levels as the exec
/// path's, on a node started with `--cni-fast-path auto`.
struct FastRun {
    run: Samples,
    stop: Samples,
    remove: Samples,
    levels: Vec<(usize, Level)>,
}

async fn fast_path_run(s: &Settings) -> Res<FastRun> {
    let node = chain_node(&["--cni-fast-path", "auto"]).await?;
    let mut client = node.client().await;
    let logs = node.dir.join("logs");
    for i in 0..3 {
        cycle(&mut client, &logs, &format!("warm-{i}")).await?;
    }
    if !node.log().contains("this network runs in process") {
        return Err(format!(
            "the fast path did not take the network (see {})",
            node.log_path.display()
        ));
    }
    let (mut run, mut stop, mut remove) =
        (Samples::default(), Samples::default(), Samples::default());
    for i in 0..s.n {
        let (r, st, rm) = timed_cycle(&mut client, &logs, &format!("fseq-{i}")).await?;
        run.push(r);
        stop.push(st);
        remove.push(rm);
    }
    let mut levels = Vec::new();
    for &c in &s.levels {
        let total = (s.cycles * c).max(32);
        levels.push((c, crisp_concurrent(&node, c, total).await?));
    }
    Ok(FastRun {
        run,
        stop,
        remove,
        levels,
    })
}

/// One run → stop → remove cycle of a pod whose logs go under `logs`.
async fn cycle(client: &mut Client, logs: &Path, name: &str) -> Res<()> {
    timed_cycle(client, logs, name).await.map(drop)
}

/// [`cycle`], timing each call.
async fn timed_cycle(
    client: &mut Client,
    logs: &Path,
    name: &str,
) -> Res<(Duration, Duration, Duration)> {
    let t = Instant::now();
    let id = try_run_pod(client, pod_config_in(logs, name)).await?;
    let run = t.elapsed();
    let t = Instant::now();
    try_stop_pod(client, &id).await?;
    let stop = t.elapsed();
    let t = Instant::now();
    try_remove_pod(client, &id).await?;
    Ok((run, stop, t.elapsed()))
}

/// CPU model, cores, kernel: where the figures came from.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {kernel}")
}
