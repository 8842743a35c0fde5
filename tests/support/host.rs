//! Looking at the host as root does: `ip`, `nsenter`, curl, a closure run inside a pod's
//! namespace, commands that must succeed, and polling until something holds.

use std::fs::File;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Node;

/// The IPv4 addresses of `dev` inside the namespace pinned at `netns`.
pub fn ipv4_of(netns: &Path, dev: &str) -> Vec<Ipv4Addr> {
    let out = run(Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-j", "-4", "addr", "show", "dev", dev]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j: {e}: {out}"));
    let mut ips = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let Some(ip) = a["local"].as_str() {
                ips.push(ip.parse().expect("ipv4"));
            }
        }
    }
    ips
}

/// Interface names of the namespace selected by `ns_args` (e.g. `["-n", name]`).
pub fn links_in(ns_args: &[&str]) -> Vec<String> {
    let mut args = ns_args.to_vec();
    args.extend_from_slice(&["-j", "link", "show"]);
    let out = run(Command::new("ip").args(args));
    ifnames(&out)
}

/// The interface names in `ip -j link show` output.
fn ifnames(out: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("ip -j: {e}: {out}"));
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

/// Interface names inside the namespace pinned at `netns`.
pub fn links_in_netns(netns: &Path) -> Vec<String> {
    let out = run(Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-j", "link", "show"]));
    ifnames(&out)
}

/// Runs `f` on a fresh OS thread that has entered the network namespace pinned at `path`
/// (never on a tokio worker: the setns dies with the thread).
pub fn in_netns<T, F>(path: &Path, f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns =
                File::open(path).unwrap_or_else(|e| panic!("open netns {}: {e}", path.display()));
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Runs a command, panics unless it exits 0, returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// GETs a URL from inside the node namespace with curl (loopback only).
pub fn curl_in_node(node: &Node, url: &str) -> String {
    run(Command::new("ip").args([
        "netns",
        "exec",
        &node.netns_name,
        "curl",
        "-sS",
        "--fail",
        "--max-time",
        "20",
        url,
    ]))
}

/// The value of the first Prometheus sample whose line starts with `prefix`.
pub fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `f` every 100 ms until it returns Some, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads a whole stream (used for sockets in pod namespaces).
pub fn read_all(r: &mut impl Read) -> Vec<u8> {
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).expect("read");
    buf
}
