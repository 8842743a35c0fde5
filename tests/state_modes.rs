//! The state is root's alone: the modes of what crisp writes under its root, through the real
//! daemon, socket and CNI plugins, and the tightening at start of what an older crisp wrote.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::*;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Every path crisp keeps for one pod, with the mode it must have.
fn expected_modes(root: &Path, id: &str) -> Vec<(PathBuf, u32)> {
    let sandboxes = root.join("sandboxes");
    let files = sandboxes.join(id);
    let results = root.join("cni").join("results");
    let entries: Vec<PathBuf> = fs::read_dir(&results)
        .expect("list the CNI cache")
        .map(|e| e.expect("cache entry").path())
        .collect();
    assert_eq!(
        entries,
        vec![results.join(format!("{NETWORK}-{id}-eth0"))],
        "one CNI cache entry for the pod"
    );
    vec![
        (root.to_owned(), 0o700),
        (root.join("crisp.lock"), 0o600),
        (sandboxes.clone(), 0o700),
        (sandboxes.join(format!("{id}.json")), 0o600),
        (files.clone(), 0o711),
        (files.join("config.json"), 0o600),
        (files.join("hostname"), 0o644),
        (files.join("hosts"), 0o644),
        (files.join("resolv.conf"), 0o644),
        (root.join("cni"), 0o700),
        (results, 0o700),
        (entries[0].clone(), 0o600),
    ]
}

fn assert_modes(expected: &[(PathBuf, u32)]) {
    for (path, want) in expected {
        assert_eq!(
            mode(path),
            *want,
            "mode of {} is {:04o}, want {want:04o}",
            path.display(),
            mode(path)
        );
    }
}

async fn stop_and_remove(node: &Node, id: &str) {
    let mut c = node.client().await;
    stop_pod(&mut c, id).await;
    remove_pod(&mut c, id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// A root crisp creates itself is 0700, and so is every dir in it (the files dir 0711); every
/// file is 0600 but the three a container runtime mounts for container users (0644).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_root_is_private() {
    let mut node = Node::prepared(Conf::Default);
    // The harness makes the root; crisp must create it.
    fs::remove_dir(&node.root).expect("remove the harness's root");
    node.start_daemon().await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("modes")).await;

    assert_modes(&expected_modes(&node.root, &id));
    stop_and_remove(&node, &id).await;
}

/// An older crisp's 0755/0644 state (and a 0666 hosts file) is tightened at start, each change
/// logged with the path and both modes; the mounted files stay 0644, and the pod is still READY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_crisps_state_is_tightened_at_start() {
    let mut node = Node::prepared(Conf::Default);
    // A root made before crisp's first start is not crisp's yet, so it is left as it was; what
    // crisp creates in it is private.
    chmod(&node.root, 0o755);
    node.start_daemon().await;
    let mut c = node.client().await;
    let id = run_pod(&mut c, node.pod_config("upgrade")).await;
    assert_eq!(
        mode(&node.root),
        0o755,
        "a dir crisp never used is left alone"
    );
    assert_eq!(mode(&node.root.join("sandboxes")), 0o700);
    node.stop().await;

    // What an older crisp wrote.
    let expected = expected_modes(&node.root, &id);
    let files = node.root.join("sandboxes").join(&id);
    let mut loosened = Vec::new();
    for (path, want) in &expected {
        let old = match *want {
            0o700 | 0o711 => 0o755,
            0o600 => 0o644,
            _ if path == &files.join("hosts") => 0o666,
            _ => continue,
        };
        chmod(path, old);
        loosened.push((path.clone(), old, *want));
    }
    let log_before = node.log().len();

    node.start_daemon().await;
    assert_modes(&expected);
    let mut c = node.client().await;
    let (st, _) = status(&mut c, &id, false).await;
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);

    let log = node.log()[log_before..].to_string();
    let tightened: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tightened the mode"))
        .collect();
    for (path, old, new) in &loosened {
        let fields = format!("path={} old={old:04o} new={new:04o}", path.display());
        assert!(
            tightened.iter().any(|l| l.contains(&fields)),
            "no log line with {fields:?} in:\n{}",
            tightened.join("\n")
        );
    }
    assert_eq!(tightened.len(), loosened.len(), "{}", tightened.join("\n"));

    // A second start has nothing left to tighten.
    let log_before = node.log().len();
    node.restart().await;
    let log = node.log()[log_before..].to_string();
    assert!(
        !log.contains("tightened the mode"),
        "a second start tightened something:\n{log}"
    );
    stop_and_remove(&node, &id).await;
}
