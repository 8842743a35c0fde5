//! CNI result parsing and version conversion: whatever a plugin prints, `parse_result` must
//! not panic; a parsed result converts to every version without panicking, and a converted
//! result parses back as that version and converts to the same JSON again (a fixed point), so
//! what crisp caches and hands to the next plugin is stable.
#![no_main]

use crisp::cni::result::parse_result;
use libfuzzer_sys::fuzz_target;

const VERSIONS: [&str; 8] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "9.9.9",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stdout)) = data.split_first() else {
        return;
    };
    let expected = VERSIONS[usize::from(selector) % VERSIONS.len()];
    let Ok(result) = parse_result(expected, stdout) else {
        return;
    };
    let _ = result.pod_ips();
    for version in VERSIONS {
        let Ok(json) = result.to_version_json(version) else {
            continue;
        };
        let bytes = serde_json::to_vec(&json).expect("a JSON value serialises");
        let again = parse_result(version, &bytes)
            .unwrap_or_else(|e| panic!("{version} output does not parse back: {e}: {json}"));
        let json2 = again
            .to_version_json(version)
            .unwrap_or_else(|e| panic!("{version} reparsed result does not convert: {e}"));
        assert_eq!(json, json2, "conversion to {version} is not a fixed point");
    }
});
