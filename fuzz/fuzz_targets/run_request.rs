//! RunPodSandbox request validation over arbitrary protobuf bytes (what a client can put on
//! the socket): decoding and checking never panic; an accepted request's name, namespace and
//! uid cannot smuggle CNI_ARGS or path parts, and its spec survives the record's JSON round trip.
#![no_main]

use crisp::sandbox::SandboxSpec;
use crisp::server::check_run_request;
use k8s_cri::v1::RunPodSandboxRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = RunPodSandboxRequest::decode(data) else {
        return;
    };
    let Ok(spec) = check_run_request(req) else {
        return;
    };
    let m = &spec.metadata;
    for part in [&m.name, &m.namespace, &m.uid] {
        assert!(!part.is_empty() && part.len() <= 253, "{part:?}");
        assert!(
            !part.contains(['/', ';', '=', '\\', '\0']) && part != "." && part != "..",
            "{part:?}"
        );
    }
    for p in &spec.port_mappings {
        assert!(p.container_port != 0);
    }
    let bytes = serde_json::to_vec(&spec).expect("spec encodes");
    let back: SandboxSpec = serde_json::from_slice(&bytes).expect("spec decodes");
    assert_eq!(back, spec, "record round trip changed the spec");
});
