//! What the bench reads of the running daemon from /proc: resident set and threads. Reads
//! only; the daemon itself is the harness's (tests/support's `Node`).

use std::fs;

use crate::support::Node;
use crate::Res;

/// The daemon's /proc/<pid>/status text.
fn proc_status(node: &Node) -> Res<String> {
    let pid = node.pid().ok_or("crisp is not running")?;
    fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))
}

/// A `kB` field of a /proc status text, e.g. `VmRSS:`.
fn kib_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The daemon's resident set (VmRSS) in KiB.
pub fn rss_kib(node: &Node) -> Res<u64> {
    let status = proc_status(node)?;
    kib_field(&status, "VmRSS:").ok_or_else(|| "no VmRSS in the daemon's /proc status".into())
}

/// (RssAnon, RssFile) in KiB: heap and stacks vs the mapped binary and libraries.
pub fn rss_parts(node: &Node) -> Option<(u64, u64)> {
    let status = proc_status(node).ok()?;
    Some((
        kib_field(&status, "RssAnon:")?,
        kib_field(&status, "RssFile:")?,
    ))
}

/// The daemon's thread count.
pub fn threads(node: &Node) -> Option<u64> {
    let status = proc_status(node).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}
