//! A current kubelet's calls, replayed in its order over the socket, each answer checked
//! against what kubelet accepts (pkg/kubelet/kuberuntime, pkg/kubelet/cri/remote, pleg/,
//! stats/, images/; see /work/shared/CRI-CLIENTS.md §0 and §3 and docs/operating.md).

mod support;

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use support::*;
use tonic::Code;

fn uid_selector(uid: &str) -> HashMap<String, String> {
    HashMap::from([("io.kubernetes.pod.uid".to_string(), uid.to_string())])
}

async fn relist(c: &mut Client) -> Vec<cri::PodSandbox> {
    // Generic PLEG: ListPodSandbox with no filter, then ListContainers{filter: {}}; either
    // failing skips the relist, and 3 min without one makes the node NotReady.
    let pods = c
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .expect("relist ListPodSandbox")
        .into_inner()
        .items;
    for p in &pods {
        assert!(!p.id.is_empty() && p.metadata.is_some() && p.created_at > 0);
    }
    let containers = c
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter::default()),
        })
        .await
        .expect("relist ListContainers must not fail (Unimplemented would)")
        .into_inner()
        .containers;
    assert!(containers.is_empty());
    pods
}

/// The eviction manager / stats provider round (CRI stats provider, and with
/// PodAndContainerStatsFromCRI the pod stats and the cadvisor-style metrics).
async fn stats_round(c: &mut Client, node: &Node) -> Vec<cri::PodSandboxStats> {
    relist(c).await;
    c.list_container_stats(cri::ListContainerStatsRequest {
        filter: Some(cri::ContainerStatsFilter::default()),
    })
    .await
    .expect("ListContainerStats");
    let stats = c
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter::default()),
        })
        .await
        .expect("ListPodSandboxStats")
        .into_inner()
        .stats;
    // kubelet's CRI metrics collector: label_values must match the descriptor's label_keys.
    let descriptors: HashMap<String, usize> = c
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors
        .into_iter()
        .map(|d| (d.name, d.label_keys.len()))
        .collect();
    let pod_metrics = c
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics;
    assert_eq!(pod_metrics.len(), stats.len(), "one entry per READY pod");
    for pod in &pod_metrics {
        assert!(!pod.metrics.is_empty());
        for m in &pod.metrics {
            assert_eq!(
                descriptors.get(&m.name),
                Some(&m.label_values.len()),
                "{} is described with as many labels as it carries",
                m.name
            );
            assert!(m.value.is_some() && m.timestamp > 0);
        }
    }
    image_fs_info(node).await;
    stats
}

/// ImageFsInfo: `image_filesystems[0]` with `used_bytes` set (1.29 dereferences it),
/// timestamp in ns, a mountpoint.
async fn image_fs_info(node: &Node) {
    let fs = node
        .images()
        .await
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner();
    let first = fs.image_filesystems.first().expect("an image filesystem");
    assert!(first.used_bytes.is_some(), "used_bytes must be set");
    assert!(
        first.timestamp > 1_000_000_000_000_000_000,
        "timestamp in ns"
    );
    assert!(!first.fs_id.as_ref().expect("fs_id").mountpoint.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_calls_in_order() {
    let node = Node::start().await;
    let mut c = node.client().await;
    let mut events = kubelet_starts(&node, &mut c).await;
    loops_with_no_pods(&node, &mut c).await;
    let (config, uid) = (node.pod_config("web"), uid_of("web"));
    let id = pod_starts(&mut c, &mut events, &config, &uid).await;
    relist_and_reinspect(&mut c, &id, &uid).await;
    stats_with_the_pod(&node, &mut c, &id, &config).await;
    pod_killed(&mut c, &mut events, &id).await;
    pod_collected(&mut c, &mut events, &id).await;
    assert!(relist(&mut c).await.is_empty());
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

/// Start-up (kubelet.go PreInitRuntimeService, kuberuntime_manager.go): returns the event
/// stream Evented PLEG opens.
async fn kubelet_starts(
    node: &Node,
    c: &mut Client,
) -> tonic::Streaming<cri::ContainerEventResponse> {
    c.version(cri::VersionRequest {
        version: String::new(),
    })
    .await
    .expect("connect-time Version: any error and kubelet exits");
    image_fs_info(node).await;
    kubelet_runtime_config(c).await;
    let v = c
        .version(cri::VersionRequest {
            version: "0.1.0".into(),
        })
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(
        v.version, "0.1.0",
        "else: runtime api version is not supported"
    );
    for field in [&v.runtime_name, &v.runtime_version, &v.runtime_api_version] {
        assert!(!field.is_empty());
    }
    c.update_runtime_config(cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig {
                pod_cidr: SUBNET.into(),
            }),
        }),
    })
    .await
    .expect("UpdateRuntimeConfig with the node's pod CIDR");
    let st = c
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status every 5 s")
        .into_inner();
    let conditions = st.status.expect("status").conditions;
    assert!(conditions.len() >= 2);
    for ty in ["RuntimeReady", "NetworkReady"] {
        let cond = conditions
            .iter()
            .find(|c| c.r#type == ty)
            .unwrap_or_else(|| panic!("{ty} missing: node NotReady"));
        assert!(cond.status, "{ty} false: {cond:?}");
    }
    assert!(
        st.runtime_handlers.iter().any(|h| h.name.is_empty()),
        "the default handler is listed"
    );
    // Evented PLEG (gate EventedPLEG) opens the event stream once at start.
    let events = c
        .get_container_events(cri::GetEventsRequest {})
        .await
        .expect("GetContainerEvents: 5 failures and kubelet falls back to relisting")
        .into_inner();
    events
}

/// The loops that run with no pods yet: relist, housekeeping, image GC, stats.
async fn loops_with_no_pods(node: &Node, c: &mut Client) {
    assert!(relist(c).await.is_empty());
    c.list_pod_sandbox(cri::ListPodSandboxRequest {
        filter: Some(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue { state: 0 }),
            ..Default::default()
        }),
    })
    .await
    .expect("housekeeping ListPodSandbox{READY}");
    node.images()
        .await
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .expect("image GC ListImages");
    assert!(stats_round(c, node).await.is_empty());
}

/// A pod starts (kuberuntime_sandbox.go createPodSandbox): its status and its events.
async fn pod_starts(
    c: &mut Client,
    events: &mut tonic::Streaming<cri::ContainerEventResponse>,
    config: &cri::PodSandboxConfig,
    uid: &str,
) -> String {
    let uid = uid.to_string();
    let id = c
        .run_pod_sandbox(run_req(config.clone()))
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    assert!(!id.is_empty(), "an empty id is an error to kubelet");
    let st = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus right after Run")
        .into_inner();
    assert!(st.timestamp > 0, "evented PLEG compares this timestamp");
    let st = st.status.expect("a nil status fails the sync");
    verify_sandbox_status(&st);
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    let ip: std::net::IpAddr = st
        .network
        .as_ref()
        .expect("network")
        .ip
        .parse()
        .expect("IP");
    assert!(ip.is_ipv4());
    let mode = network_mode(&st);
    assert_eq!(
        mode,
        Some(NamespaceMode::Pod as i32),
        "else kubelet recreates the sandbox"
    );
    for kind in [
        cri::ContainerEventType::ContainerCreatedEvent,
        cri::ContainerEventType::ContainerStartedEvent,
    ] {
        let e = next_event(events).await;
        assert_eq!(e.container_event_type, kind as i32);
        assert_eq!(e.container_id, id);
        let meta = e.pod_sandbox_status.and_then(|s| s.metadata);
        assert_eq!(
            meta.map(|m| m.uid),
            Some(uid.clone()),
            "events without metadata are dropped"
        );
    }
    id
}

/// Relist sees the pod; GetPodStatus re-inspects it by uid label.
async fn relist_and_reinspect(c: &mut Client, id: &str, uid: &str) {
    let (id, uid) = (id.to_string(), uid.to_string());
    let pods = relist(c).await;
    assert_eq!(ids(&pods), std::slice::from_ref(&id));
    let by_uid = c
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: uid_selector(&uid),
                ..Default::default()
            }),
        })
        .await
        .expect("ListPodSandbox by uid label")
        .into_inner()
        .items;
    assert_eq!(ids(&by_uid), std::slice::from_ref(&id));
    for p in &by_uid {
        let st = c
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: p.id.clone(),
                verbose: false,
            })
            .await
            .expect("PodSandboxStatus")
            .into_inner()
            .status
            .expect("status");
        verify_sandbox_status(&st);
    }
    let containers = c
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: uid_selector(&uid),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainers by uid label")
        .into_inner()
        .containers;
    assert!(containers.is_empty());
    c.list_containers(cri::ListContainersRequest {
        filter: Some(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        }),
    })
    .await
    .expect("housekeeping ListContainers{RUNNING}");
}

/// Stats with the pod running.
async fn stats_with_the_pod(node: &Node, c: &mut Client, id: &str, config: &cri::PodSandboxConfig) {
    let id = id.to_string();
    let stats = stats_round(c, node).await;
    assert_eq!(stats.len(), 1);
    let attrs = stats[0].attributes.as_ref().expect("attributes");
    assert_eq!(attrs.id, id);
    assert_eq!(attrs.labels, config.labels);
    let net = stats[0]
        .linux
        .as_ref()
        .and_then(|l| l.network.as_ref())
        .expect("network usage");
    assert_eq!(
        net.default_interface.as_ref().map(|i| i.name.as_str()),
        Some("eth0")
    );
}

/// The pod is killed (killPodWithSyncResult).
async fn pod_killed(
    c: &mut Client,
    events: &mut tonic::Streaming<cri::ContainerEventResponse>,
    id: &str,
) {
    let id = id.to_string();
    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("StopPodSandbox");
    let e = next_event(events).await;
    assert_eq!(
        e.container_event_type,
        cri::ContainerEventType::ContainerStoppedEvent as i32
    );
    let st = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .expect("status after stop")
        .into_inner()
        .status
        .expect("status");
    verify_sandbox_status(&st);
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    assert_eq!(st.network.as_ref().map(|n| n.ip.as_str()), Some(""));
}

/// Container GC: Stop first (any error skips the remove), then Remove; both stay OK on a
/// removed sandbox.
async fn pod_collected(
    c: &mut Client,
    events: &mut tonic::Streaming<cri::ContainerEventResponse>,
    id: &str,
) {
    let id = id.to_string();
    // Container GC: Stop first (any error skips the remove), then Remove.
    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("GC's StopPodSandbox on a stopped sandbox");
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("RemovePodSandbox");
    let e = next_event(events).await;
    assert_eq!(
        e.container_event_type,
        cri::ContainerEventType::ContainerDeletedEvent as i32
    );
    let gone = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .expect_err("removed");
    assert_eq!(
        gone.code(),
        Code::NotFound,
        "kubelet skips NotFound, other errors abort"
    );
    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("Stop of a removed sandbox is OK");
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("Remove of a removed sandbox is OK");
}

/// RuntimeConfig (kubelet ≥ 1.31 replaces its cgroupDriver with the answer): no `linux` by
/// default, the configured driver with `--cgroup-driver` (or CRISP_CGROUP_DRIVER), which
/// verbose Status also shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_config_answers_the_configured_cgroup_driver() {
    for (args, env, want) in [
        (vec![], None, None),
        (
            vec!["--cgroup-driver", "systemd"],
            None,
            Some(cri::CgroupDriver::Systemd),
        ),
        (vec![], Some("cgroupfs"), Some(cri::CgroupDriver::Cgroupfs)),
    ] {
        let mut node = Node::prepared(Conf::Default);
        let mut cmd = node.daemon_command();
        cmd.args(&args);
        if let Some(driver) = env {
            cmd.env("CRISP_CGROUP_DRIVER", driver);
        }
        node.start_daemon_with(cmd).await;
        let mut c = node.client().await;
        let answer = c
            .runtime_config(cri::RuntimeConfigRequest {})
            .await
            .expect("RuntimeConfig answers OK")
            .into_inner();
        assert_eq!(
            answer.linux.map(|l| l.cgroup_driver),
            want.map(|d| d as i32),
            "{args:?} {env:?}"
        );
        let info = c
            .status(cri::StatusRequest { verbose: true })
            .await
            .expect("Status")
            .into_inner()
            .info;
        let shown = info
            .get("cgroupDriver")
            .expect("cgroupDriver in verbose Status");
        let want_shown = match want {
            None => "null",
            Some(cri::CgroupDriver::Systemd) => "\"systemd\"",
            Some(cri::CgroupDriver::Cgroupfs) => "\"cgroupfs\"",
        };
        assert_eq!(shown, want_shown);
    }
}
