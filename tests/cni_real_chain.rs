//! The real plugin chain from /usr/lib/cni: bridge + host-local, portmap, bandwidth, tuning.
//! A pod with a host port is reachable at the node's own address and that port (listener in
//! the pod's namespace, client in the node namespace the test made), and DEL removes the
//! DNAT rules, the bandwidth qdisc and the IP reservation.
//!
//! Needs root; all traffic stays inside the namespaces this test creates.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_cri::v1 as cri;
use serde_json::json;
use support::*;

/// An address the test gives the node namespace (on its `lo`), standing for the node IP.
const NODE_ADDR: &str = "10.250.0.1";
const HOST_PORT: i32 = 8080;
const POD_PORT: i32 = 80;

fn node_cmd(node: &Node, args: &[&str]) -> String {
    run(Command::new("nsenter")
        .arg(format!("--net={}", node.node_netns_path().display()))
        .args(args))
}

fn dnat_rules(node: &Node) -> Vec<String> {
    node_cmd(node, &["iptables-save", "-t", "nat"])
        .lines()
        .filter(|l| l.contains("CNI-DN") || l.contains(&format!("--dport {HOST_PORT}")))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn host_port_reaches_the_pod_through_the_real_chain_and_del_cleans_up() {
    let node = Node::start_with(Conf::After(vec![
        json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
        json!({"type": "tuning", "sysctl": {"net.core.somaxconn": "1024"}}),
    ]))
    .await;
    node.ip_in_node(&["addr", "add", &format!("{NODE_ADDR}/32"), "dev", "lo"]);

    let mut client = node.client().await;
    let mut config = node.pod_config("web");
    config.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: POD_PORT,
        host_port: HOST_PORT,
        host_ip: String::new(),
    }];
    config
        .annotations
        .insert("kubernetes.io/ingress-bandwidth".into(), "10M".into());
    config
        .annotations
        .insert("kubernetes.io/egress-bandwidth".into(), "10M".into());
    let id = run_pod(&mut client, config).await;
    let netns = netns_path(&mut client, &id).await;
    // (No CHECK assertion here: Debian's portmap 1.1.1 fails CHECK on an IPv4-only pod,
    // looking for its IPv6 chain; tests/cni_conformance.rs covers CHECK.)
    let (st, _) = status(&mut client, &id, false).await;
    let pod_ip = st.network.expect("network").ip;

    // tuning set the sysctl inside the pod's namespace.
    let somaxconn = in_netns(&netns, || {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn").expect("read sysctl")
    });
    assert_eq!(somaxconn.trim(), "1024");
    // bandwidth shaped the pod's traffic with tbf qdiscs in the node namespace.
    assert!(node_cmd(&node, &["tc", "qdisc", "show"]).contains("qdisc tbf"));
    assert!(!dnat_rules(&node).is_empty(), "portmap made no DNAT rule");

    // Listener in the pod, client in the node namespace dialling the node's own address.
    let listener = in_netns(&netns, || {
        TcpListener::bind(("0.0.0.0", POD_PORT as u16)).expect("bind in pod")
    });
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().expect("accept");
        let mut got = [0u8; 4];
        conn.read_exact(&mut got).expect("read ping");
        conn.write_all(b"pong from the pod").expect("write");
        (got, peer)
    });
    let answer = in_netns(&node.node_netns_path(), || {
        let addr: SocketAddr = format!("{NODE_ADDR}:{HOST_PORT}").parse().expect("addr");
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        conn.write_all(b"ping").expect("write");
        read_all(&mut conn)
    });
    assert_eq!(answer, b"pong from the pod");
    let (got, peer) = server.join().expect("server thread");
    assert_eq!(&got, b"ping");
    assert_ne!(
        peer.ip().to_string(),
        pod_ip,
        "the connection came from outside the pod"
    );

    stop_pod(&mut client, &id).await;
    assert!(
        dnat_rules(&node).is_empty(),
        "DNAT rules left: {:?}",
        dnat_rules(&node)
    );
    assert!(!node_cmd(&node, &["tc", "qdisc", "show"]).contains("qdisc tbf"));
    assert!(
        !Path::new(&node.ipam_dir)
            .join(NETWORK)
            .join(&pod_ip)
            .exists(),
        "the IP reservation of {pod_ip} is left"
    );
    remove_pod(&mut client, &id).await;
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}
