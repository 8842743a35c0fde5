//! The bytes on the socket against the golden fixtures of tests/nri-wire/ (written by an
//! encoder of their own from NRI's field numbers): what the stub sends to register, and what
//! crisp sends to configure, synchronize and tell of a RunPodSandbox.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::plugin::{Plugin, Runtime, Timeouts};
use super::proto::api::{ConfigureResponse, Event, LinuxNamespace, LinuxPodSandbox, PodSandbox};
use super::proto::ttrpc::Response;
use super::{stub, ttrpc};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/nri-wire/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hex: String = text.lines().filter(|l| !l.starts_with('#')).collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

async fn read_exactly(peer: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), peer.read_exact(&mut buf))
        .await
        .expect("bytes within 5 s")
        .expect("read");
    buf
}

/// An answer from the plugin's side, framed as Go frames it (header frame, payload frame).
async fn answer(peer: &mut DuplexStream, conn: u32, stream: u32, payload: Vec<u8>) {
    let response = Response {
        status: None,
        payload,
    }
    .encode_to_vec();
    let header = ttrpc::encode_header(response.len(), stream, 2);
    for frame in [&header[..], &response[..]] {
        if frame.is_empty() {
            continue;
        }
        let mut bytes = conn.to_be_bytes().to_vec();
        bytes.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        bytes.extend_from_slice(frame);
        peer.write_all(&bytes).await.expect("write");
    }
}

fn golden_pod() -> PodSandbox {
    let id = "a".repeat(64);
    PodSandbox {
        name: "web-0".into(),
        uid: "uid-1".into(),
        namespace: "default".into(),
        labels: BTreeMap::from([("app".into(), "web".into())]),
        linux: Some(LinuxPodSandbox {
            cgroup_parent: "/kubepods".into(),
            namespaces: vec![LinuxNamespace {
                r#type: "network".into(),
                path: format!("/var/run/netns/crisp-{}", &id[..12]),
            }],
            ..Default::default()
        }),
        ips: vec!["10.88.0.5".into()],
        id,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_stub_registers_with_the_golden_bytes() {
    let (plugin_end, mut runtime_end) = tokio::io::duplex(1 << 16);
    tokio::spawn(stub::run(plugin_end, "test", "05", |_| async {
        Ok(stub::empty())
    }));
    let register = fixture("register");
    assert_eq!(
        read_exactly(&mut runtime_end, register.len()).await,
        register
    );
}

#[tokio::test]
async fn crisp_configures_synchronizes_and_sends_run_with_the_golden_bytes() {
    let (runtime_end, mut peer) = tokio::io::duplex(1 << 16);
    let runtime = Runtime {
        name: "crisp".into(),
        version: "0.1.0".into(),
    };
    let connecting = tokio::spawn(async move {
        Plugin::connect(runtime_end, &runtime, Timeouts::default(), |_| {
            String::new()
        })
        .await
    });
    // The golden Register, fed to crisp, is accepted (its answer is on conn 2, stream 1).
    peer.write_all(&fixture("register")).await.expect("write");
    let configure = fixture("configure");
    let sent = read_exactly(&mut peer, 18 + configure.len()).await;
    assert_eq!(
        &sent[..18],
        &[0, 0, 0, 2, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0]
    );
    assert_eq!(&sent[18..], &configure[..]);
    answer(
        &mut peer,
        1,
        1,
        ConfigureResponse { events: 0 }.encode_to_vec(),
    )
    .await;
    let (plugin, queue) = connecting.await.expect("task").expect("connected");

    let syncing = tokio::spawn(async move {
        let synced = plugin.synchronize(&queue, vec![golden_pod()]).await;
        drop(queue);
        (plugin, synced)
    });
    let synchronize = fixture("synchronize");
    assert_eq!(
        read_exactly(&mut peer, synchronize.len()).await,
        synchronize
    );
    answer(&mut peer, 1, 3, Vec::new()).await;
    let (plugin, synced) = syncing.await.expect("task");
    assert_eq!(synced, Ok(()));

    let running = tokio::spawn(async move {
        let outcome = plugin.pod_event(Event::RunPodSandbox, &golden_pod()).await;
        (plugin, outcome)
    });
    let run = fixture("run_pod_sandbox");
    assert_eq!(read_exactly(&mut peer, run.len()).await, run);
    answer(&mut peer, 1, 5, Vec::new()).await;
    let (_plugin, outcome) = running.await.expect("task");
    assert!(
        matches!(outcome, super::plugin::Outcome::Accepted(_)),
        "{outcome:?}"
    );
}
