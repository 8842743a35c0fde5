//! `make demo`'s proofs as part of the test suite: runs demo/run.sh with this build's crisp and
//! whoami helper, and checks what it proved, what it read off the live system, the diagram it
//! drew, and that it left no namespace or link behind. A second run without the nodes' routes
//! must fail loudly and still clean up.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The whoami helper is an example target, built next to the binaries (`make test` builds every
/// target; `cargo build --example whoami` builds just it).
fn whoami_bin() -> PathBuf {
    let crisp = Path::new(env!("CARGO_BIN_EXE_crisp"));
    let bin = crisp
        .parent()
        .expect("the crisp binary has a directory")
        .join("examples")
        .join("whoami");
    assert!(
        bin.is_file(),
        "the demo's whoami helper is not built at {}: run `cargo build --example whoami` \
         (make test builds it)",
        bin.display()
    );
    bin
}

struct DemoRun {
    output: Output,
    stdout: String,
    out_dir: tempfile::TempDir,
}

fn run_demo(extra_env: &[(&str, &str)]) -> DemoRun {
    let out_dir = tempfile::Builder::new()
        .prefix("crisp-demo-out-")
        .tempdir()
        .expect("temp dir for the diagram");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/run.sh");
    let output = Command::new("bash")
        .arg(&script)
        .env("CRISP_BIN", env!("CARGO_BIN_EXE_crisp"))
        .env("WHOAMI_BIN", whoami_bin())
        .env("DEMO_OUT_DIR", out_dir.path())
        .envs(extra_env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    // Shown when a test fails (the harness captures it otherwise).
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    DemoRun {
        output,
        stdout,
        out_dir,
    }
}

/// The node namespaces the run announced in its first section.
fn node_namespaces(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("$ ip netns add "))
        .map(str::to_string)
        .collect()
}

fn assert_demo_left_nothing(run: &DemoRun) {
    let names = node_namespaces(&run.stdout);
    assert_eq!(
        names.len(),
        2,
        "two node namespaces announced:\n{}",
        run.stdout
    );
    let listed = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list")
            .stdout,
    )
    .expect("utf-8");
    for name in &names {
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "namespace {name} is still there:\n{listed}"
        );
        assert!(
            !Path::new("/run/netns").join(name).exists(),
            "/run/netns/{name} is still there"
        );
    }
    assert!(
        run.stdout
            .contains("ip netns list entries of this run: none"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("new: none"), "{}", run.stdout);
}

/// How many printed client calls made `method`: grpcurl names the RPC, crictl its subcommand.
fn count_calls(stdout: &str, method: &str) -> usize {
    let crictl = match method {
        "RunPodSandbox" => " runp ",
        "PodSandboxStatus" => " inspectp ",
        "StopPodSandbox" => " stopp ",
        "RemovePodSandbox" => " rmp ",
        other => panic!("no crictl subcommand for {other}"),
    };
    stdout
        .lines()
        .map(str::trim_start)
        .filter(|l| {
            (l.starts_with("$ grpcurl ") && l.ends_with(&format!("RuntimeService/{method}")))
                || (l.starts_with("$ crictl ") && l.contains(crictl))
        })
        .count()
}

/// The hop lines of section 5: (number, where, name, details).
fn hops(stdout: &str) -> Vec<(u32, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let t = l.trim_start();
            let (n, rest) = t.split_once(char::is_whitespace)?;
            Some((n.parse().ok()?, rest.trim().to_string()))
        })
        .collect()
}

#[test]
fn demo_proves_no_nat_pod_networking_across_two_nodes() {
    let run = run_demo(&[]);
    let out = &run.stdout;
    assert!(
        run.output.status.success(),
        "demo exited with {}:\n{out}",
        run.output.status
    );
    assert!(!out.contains("FAIL"), "{out}");
    for proof in [
        "PASS  same-node pod -> pod: a1 10.244.1.",
        "(the wire was not used)",
        "PASS  cross-node pod -> pod: a1 10.244.1.",
        "PASS  cross-node pod -> pod: b2 10.244.2.",
        "PASS  pod -> other node: a1 10.244.1.",
        "PASS  no NAT: b1 saw the source as 10.244.1.",
        "PASS  no NAT: a2 saw the source as 10.244.2.",
        "PASS  no NAT: node-b saw the source as 10.244.1.",
        "all proofs passed; nothing left behind",
    ] {
        assert!(out.contains(proof), "missing {proof:?} in:\n{out}");
    }
    // Each pod was made through crisp's socket and torn down through it.
    for method in [
        "RunPodSandbox",
        "PodSandboxStatus",
        "StopPodSandbox",
        "RemovePodSandbox",
    ] {
        assert_eq!(count_calls(out, method), 4, "{method} once per pod:\n{out}");
    }

    // Nine hops, in order, with the live names the run read.
    let hops = hops(out);
    let numbers: Vec<u32> = hops.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (1..=9).collect::<Vec<_>>(), "{out}");
    let hop = |n: usize| hops[n - 1].1.as_str();
    let name_at = |n: usize| hop(n).split_whitespace().nth(2).unwrap_or_default();
    let (veth_a, veth_b) = (name_at(2), name_at(8));
    assert!(veth_a.starts_with("veth"), "hop 2: {}", hop(2));
    assert!(veth_b.starts_with("veth"), "hop 8: {}", hop(8));
    let expected = [
        (3, format!("learned on {veth_a}")),
        (4, "10.244.2.0/24 via 192.168.77.2 dev wire-a".to_string()),
        (5, "wire-a -> wire-b".to_string()),
        (6, "dev crisp-b0".to_string()),
        (7, format!("learned on {veth_b}")),
    ];
    for (n, text) in expected {
        assert!(hop(n).contains(&text), "hop {n} lacks {text:?}: {}", hop(n));
    }

    // The diagram shows the same live names.
    let svg = std::fs::read_to_string(run.out_dir.path().join("topology.svg"))
        .expect("the demo wrote topology.svg");
    for name in [
        veth_a,
        veth_b,
        "crisp-a0",
        "crisp-b0",
        "192.168.77.1/30",
        "192.168.77.2/30",
        "10.244.2.0/24 via 192.168.77.2 dev wire-a",
    ] {
        assert!(svg.contains(name), "topology.svg lacks {name}");
    }
    assert!(svg.trim_end().ends_with("</svg>"));

    assert_demo_left_nothing(&run);
}

#[test]
fn demo_without_node_routes_fails_loudly_and_cleans_up() {
    let run = run_demo(&[("DEMO_SKIP_ROUTES", "1")]);
    let out = &run.stdout;
    assert!(
        !run.output.status.success(),
        "the demo passed without routes between the nodes:\n{out}"
    );
    assert!(out.contains("PASS  same-node pod -> pod"), "{out}");
    assert!(
        out.contains("FAIL  cross-node pod -> pod: a1 could not reach b1"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  hop 4: node a forwards"),
        "the hop trace names the missing route:\n{out}"
    );
    assert!(out.contains("demo failed (exit 1)"), "{out}");
    // Torn down through crisp all the same.
    assert_eq!(count_calls(out, "RemovePodSandbox"), 4, "{out}");
    assert_demo_left_nothing(&run);
}
