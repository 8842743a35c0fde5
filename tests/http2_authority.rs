//! The `:authority` every real client sends is accepted, and every request runs the RPC it
//! names: raw HTTP/2 frames, HPACK-encoded as grpc-go encodes them, replay crictl 1.29's header
//! blocks (the socket path as authority) and then hundreds of requests whose paths and
//! metadata make the client's table evict entries, with CONTINUATION, PADDED, empty and
//! missing authorities; other connections stay valid throughout or turn invalid late.

mod support;

use k8s_cri::v1 as cri;
use prost::Message;
use support::http2::{Framing, RawClient, Reply};
use support::*;

const RUNTIME: &str = "/runtime.v1.RuntimeService/";

/// One request of the mix, and how to tell from its answer that it ran the RPC it named.
#[derive(Clone, Copy)]
enum Probe {
    /// Version answers crisp's name.
    Version,
    /// Status answers both conditions.
    Status,
    /// PodSandboxStatus of an unknown 16-hex id: NotFound naming exactly that id.
    UnknownSandbox(u64),
    /// Health/Check of RuntimeService: SERVING.
    Health,
}

impl Probe {
    fn of(seq: u64) -> Probe {
        match seq % 4 {
            0 => Probe::Version,
            1 => Probe::Status,
            2 => Probe::UnknownSandbox(0x00c0_ffee_0000_0000 + seq),
            _ => Probe::Health,
        }
    }

    fn path(self) -> String {
        match self {
            Probe::Version => format!("{RUNTIME}Version"),
            Probe::Status => format!("{RUNTIME}Status"),
            Probe::UnknownSandbox(_) => format!("{RUNTIME}PodSandboxStatus"),
            Probe::Health => "/grpc.health.v1.Health/Check".to_string(),
        }
    }

    fn message(self) -> Vec<u8> {
        match self {
            Probe::Version => cri::VersionRequest::default().encode_to_vec(),
            Probe::Status => cri::StatusRequest::default().encode_to_vec(),
            Probe::UnknownSandbox(id) => cri::PodSandboxStatusRequest {
                pod_sandbox_id: format!("{id:016x}"),
                verbose: false,
            }
            .encode_to_vec(),
            Probe::Health => tonic_health::pb::HealthCheckRequest {
                service: "runtime.v1.RuntimeService".to_string(),
            }
            .encode_to_vec(),
        }
    }

    fn check(self, reply: &Reply, what: &str) {
        let ok = |r: &Reply| assert_eq!(r.grpc_status, "0", "{what}: {r:?}");
        match self {
            Probe::Version => {
                ok(reply);
                let v = cri::VersionResponse::decode(&reply.body[..]).expect("VersionResponse");
                assert_eq!(v.runtime_name, "crisp", "{what}");
            }
            Probe::Status => {
                ok(reply);
                let st = cri::StatusResponse::decode(&reply.body[..]).expect("StatusResponse");
                let conditions = st.status.map(|s| s.conditions).unwrap_or_default();
                assert_eq!(conditions.len(), 2, "{what}: {conditions:?}");
            }
            Probe::UnknownSandbox(id) => {
                assert_eq!(reply.grpc_status, "5", "{what}: {reply:?}");
                assert!(
                    reply.grpc_message.contains(&format!("{id:016x}")),
                    "{what}: {reply:?}"
                );
            }
            Probe::Health => {
                ok(reply);
                let h = tonic_health::pb::HealthCheckResponse::decode(&reply.body[..])
                    .expect("HealthCheckResponse");
                assert_eq!(h.status, 1, "{what}: SERVING");
            }
        }
    }
}

/// Sends probe `seq` with `authority` and a unique metadata value, and checks its answer.
fn probe(client: &mut RawClient, seq: u64, authority: Option<&str>, framing: Framing) {
    let probe = Probe::of(seq);
    let mut fields = RawClient::grpc_go_fields(authority, &probe.path());
    fields.push(("x-request-seq".to_string(), format!("seq-{seq}")));
    let reply = client.call(&fields, &probe.message(), framing);
    probe.check(
        &reply,
        &format!("request {seq} ({authority:?}, {framing:?})"),
    );
}

fn call(client: &mut RawClient, authority: &str, method: &str, message: &[u8]) -> Reply {
    let fields = RawClient::grpc_go_fields(Some(authority), &format!("{RUNTIME}{method}"));
    client.call(&fields, message, Framing::Plain)
}

fn no_connection_closed(node: &Node) {
    let log = node.log();
    assert!(!log.contains("closing a CRI socket connection"), "{log}");
}

/// crictl 1.29's `runp`, `inspectp`, `stopp`, `rmp` (each opening with `Version{}`), on one
/// connection with the socket path as authority, then 400 mixed requests and every framing
/// and authority shape on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_129_blocks_then_hundreds_of_requests_on_one_connection() {
    let node = Node::start().await;
    let authority = node.socket.to_string_lossy().into_owned();
    let mut client = RawClient::connect(&node.socket);
    let version = cri::VersionRequest::default().encode_to_vec();

    assert_eq!(
        call(&mut client, &authority, "Version", &version).grpc_status,
        "0"
    );
    let run = cri::RunPodSandboxRequest {
        config: Some(node.pod_config("raw-http2")),
        runtime_handler: String::new(),
    };
    let reply = call(
        &mut client,
        &authority,
        "RunPodSandbox",
        &run.encode_to_vec(),
    );
    assert_eq!(reply.grpc_status, "0", "{reply:?}");
    let id = cri::RunPodSandboxResponse::decode(&reply.body[..])
        .expect("RunPodSandboxResponse")
        .pod_sandbox_id;
    assert_valid_id(&id);

    call(&mut client, &authority, "Version", &version);
    let req = cri::PodSandboxStatusRequest {
        pod_sandbox_id: id[..13].to_string(),
        verbose: true,
    };
    let reply = call(
        &mut client,
        &authority,
        "PodSandboxStatus",
        &req.encode_to_vec(),
    );
    let st = cri::PodSandboxStatusResponse::decode(&reply.body[..]).expect("status");
    let st = st.status.expect("status set");
    assert_eq!((st.id.as_str(), st.state), (id.as_str(), 0), "READY");
    assert!(!st.network.map(|n| n.ip).unwrap_or_default().is_empty());

    for (seq, framing) in (0..400).map(|s| (s, Framing::Plain)).chain([
        (400, Framing::Continuation),
        (401, Framing::PaddedWithPriority),
        (402, Framing::Continuation),
    ]) {
        probe(&mut client, seq, Some(&authority), framing);
    }
    probe(&mut client, 403, Some(""), Framing::Plain);
    probe(&mut client, 404, None, Framing::Plain);
    probe(
        &mut client,
        405,
        Some("%2Frun%2Fcrisp%2Fcrisp.sock"),
        Framing::Plain,
    );
    probe(&mut client, 406, Some("localhost"), Framing::Plain);

    let by_id = cri::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    }
    .encode_to_vec();
    call(&mut client, &authority, "Version", &version);
    assert_eq!(
        call(&mut client, &authority, "StopPodSandbox", &by_id).grpc_status,
        "0"
    );
    call(&mut client, &authority, "Version", &version);
    assert_eq!(
        call(&mut client, &authority, "RemovePodSandbox", &by_id).grpc_status,
        "0"
    );
    no_connection_closed(&node);
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// A `localhost` connection (what crictl ≥ 1.31 and tonic send) passes through untouched; a
/// second connection switches to re-encoding at its 31st request and every request on it
/// still runs what it names; the two do not disturb each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_and_late_invalid_connections_side_by_side() {
    let node = Node::start().await;
    let mut valid = RawClient::connect(&node.socket);
    let mut late = RawClient::connect(&node.socket);
    for seq in 0..150 {
        probe(&mut valid, seq, Some("localhost"), Framing::Plain);
        let authority = if seq == 30 {
            "/run/crisp/crisp.sock"
        } else {
            "localhost"
        };
        probe(&mut late, seq, Some(authority), Framing::Plain);
    }
    no_connection_closed(&node);
}

/// A connection that is not HTTP/2 is closed with one log line naming why, and crisp keeps
/// serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_is_not_http2_is_closed_and_logged() {
    use std::io::{Read, Write};
    let node = Node::start().await;
    let mut http1 = std::os::unix::net::UnixStream::connect(&node.socket).expect("connect");
    http1
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut rest = Vec::new();
    // The connection ends (EOF or reset): either way nothing is served on it.
    let _ = http1.read_to_end(&mut rest);
    let logged = eventually(std::time::Duration::from_secs(30), || async {
        node.log()
            .contains("the connection preface is wrong")
            .then_some(())
    })
    .await;
    assert!(logged.is_some(), "{}", node.log());
    probe(
        &mut RawClient::connect(&node.socket),
        0,
        Some("localhost"),
        Framing::Plain,
    );
}
