//! Python grpcio, as it ships on PyPI, with a default channel on `unix:///…` (it sends the
//! %-encoded socket path as `:authority`): a whole pod lifecycle, checked field by field by
//! `tests/grpcio/lifecycle.py` with stubs that grpcio-tools generates from `proto/api.proto`.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_runs_a_whole_pod_lifecycle() {
    let node = Node::start().await;
    let stubs = node.dir.join("stubs");
    std::fs::create_dir_all(&stubs).expect("stub dir");
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    run(Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg(proto.join("api.proto")));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpcio/lifecycle.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&node.socket)
        .arg(&stubs)
        .arg(node.dir.join("logs").join("grpcio-pod"))
        .arg("grpcio-pod")
        .output()
        .expect("python3 runs (pip install grpcio grpcio-tools: make deps)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lifecycle.py failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(r#""lifecycle": "passed""#), "{stdout}");
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}
