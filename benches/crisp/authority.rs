//! The cost of the HTTP/2 authority adapter (`src/server/authority/`): PodSandboxStatus round
//! trips from one raw HTTP/2 client that sends `localhost` (its bytes pass through the adapter
//! untouched) and one that sends the socket path as crictl 1.29 does (every header block
//! decoded and re-encoded), interleaved on one crisp; and what 100 idle connections of each
//! kind add to crisp's RSS.

use std::path::Path;
use std::time::Instant;

use prost::Message;
use serde_json::{json, Value};

use crate::procfs::rss_kib;
use crate::report::{ms, Samples, Table};
use crate::support::http2::{Framing, RawClient};
use crate::support::{try_remove_pod, try_run_pod, try_stop_pod, Node};
use crate::{chain_node, cri, Res};

const STATUS: &str = "/runtime.v1.RuntimeService/PodSandboxStatus";
const VERSION: &str = "/runtime.v1.RuntimeService/Version";
const IDLE_CONNECTIONS: usize = 100;

pub struct AuthorityCost {
    pub localhost: Samples,
    pub path: Samples,
    /// RSS added by 100 idle connections (KiB): passthrough ones, then rewriting ones.
    pub idle_localhost_kib: i64,
    pub idle_path_kib: i64,
}

impl AuthorityCost {
    /// p50 of the socket-path client minus p50 of the localhost client, in microseconds.
    pub fn p50_delta_us(&self) -> f64 {
        (self.path.pct(50.0) - self.localhost.pct(50.0)) * 1000.0
    }

    pub fn table(&self) -> String {
        let mut t = Table::new(
            &format!(
                "HTTP/2 authority adapter: PodSandboxStatus from a raw HTTP/2 client, N={} each, \
                 interleaved",
                self.path.0.len()
            ),
            &["client's :authority", "p50 ms", "p90 ms", "p99 ms"],
        );
        for (name, s) in [
            ("localhost (passed through)", &self.localhost),
            ("/run/…/crisp.sock (re-encoded)", &self.path),
        ] {
            t.row(vec![
                name.into(),
                ms(s.pct(50.0)),
                ms(s.pct(90.0)),
                ms(s.pct(99.0)),
            ]);
        }
        t.row(vec![
            "p50 difference".into(),
            format!("{:.1} µs", self.p50_delta_us()),
            String::new(),
            String::new(),
        ]);
        for (name, kib) in [
            (
                "RSS of 100 idle localhost connections",
                self.idle_localhost_kib,
            ),
            (
                "RSS of 100 idle re-encoding connections",
                self.idle_path_kib,
            ),
        ] {
            t.row(vec![
                name.into(),
                format!("{kib} KiB"),
                format!("{:.1} KiB each", kib as f64 / IDLE_CONNECTIONS as f64),
                String::new(),
            ]);
        }
        t.render()
    }

    pub fn json(&self) -> Value {
        json!({
            "status_localhost": self.localhost.json(),
            "status_socket_path": self.path.json(),
            "p50_delta_us": (self.p50_delta_us() * 10.0).round() / 10.0,
            "idle_connections": IDLE_CONNECTIONS,
            "idle_localhost_kib": self.idle_localhost_kib,
            "idle_socket_path_kib": self.idle_path_kib,
        })
    }
}

/// One crisp on the real chain, one pod, `n` status calls from each client.
pub async fn measure(n: usize) -> Res<AuthorityCost> {
    let node = chain_node(&[]).await?;
    let mut client = node.client().await;
    let id = try_run_pod(&mut client, node.pod_config("authority")).await?;
    let socket = node.socket.clone();
    let request = cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.clone(),
        verbose: false,
    }
    .encode_to_vec();
    let (localhost, path) = tokio::task::spawn_blocking(move || round_trips(&socket, &request, n))
        .await
        .map_err(|e| format!("status round trips: {e}"))??;
    let (idle_localhost_kib, idle_path_kib) = idle_connections(&node).await?;
    try_stop_pod(&mut client, &id).await?;
    try_remove_pod(&mut client, &id).await?;
    Ok(AuthorityCost {
        localhost,
        path,
        idle_localhost_kib,
        idle_path_kib,
    })
}

fn round_trips(socket: &Path, request: &[u8], n: usize) -> Res<(Samples, Samples)> {
    let authority = socket.to_string_lossy().into_owned();
    let mut clients = [
        (RawClient::connect(socket), "localhost", Samples::default()),
        (
            RawClient::connect(socket),
            authority.as_str(),
            Samples::default(),
        ),
    ];
    for i in 0..n + 20 {
        for (client, authority, samples) in clients.iter_mut() {
            let fields = RawClient::grpc_go_fields(Some(authority), STATUS);
            let t = Instant::now();
            let reply = client.call(&fields, request, Framing::Plain);
            let took = t.elapsed();
            if reply.grpc_status != "0" {
                return Err(format!(
                    "PodSandboxStatus with :authority {authority}: grpc-status {} {}",
                    reply.grpc_status, reply.grpc_message
                ));
            }
            if i >= 20 {
                samples.push(took); // the first 20 warm both connections up
            }
        }
    }
    let [(_, _, localhost), (_, _, path)] = clients;
    Ok((localhost, path))
}

/// Opens 100 connections that each made one call, for each kind, and reads the RSS growth.
async fn idle_connections(node: &Node) -> Res<(i64, i64)> {
    let mut held = Vec::new();
    let mut growth = Vec::new();
    let path_authority = node.socket.to_string_lossy().into_owned();
    for authority in ["localhost", path_authority.as_str()] {
        let before = rss_kib(node)? as i64;
        let socket = node.socket.clone();
        let authority = authority.to_string();
        let opened = tokio::task::spawn_blocking(move || {
            (0..IDLE_CONNECTIONS)
                .map(|_| {
                    let mut client = RawClient::connect(&socket);
                    let fields = RawClient::grpc_go_fields(Some(&authority), VERSION);
                    client.call(&fields, &[], Framing::Plain);
                    client
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| format!("opening idle connections: {e}"))?;
        held.push(opened);
        growth.push(rss_kib(node)? as i64 - before);
    }
    Ok((growth[0], growth[1]))
}
