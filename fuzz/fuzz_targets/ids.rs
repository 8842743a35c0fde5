//! Id and name validation: a string accepted as a sandbox id (prefix) or as a CNI name is
//! exactly one plain path component, so it can never walk out of the state, cache or netns dirs.
#![no_main]

use std::path::{Component, Path};

use crisp::cni::conf::valid_network_name;
use crisp::sandbox::model::is_id_prefix;
use libfuzzer_sys::fuzz_target;

fn one_plain_component(s: &str) -> bool {
    let mut parts = Path::new(s).components();
    matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none()
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if is_id_prefix(s) {
        assert!(s.len() <= 64 && one_plain_component(s), "{s:?}");
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
    if valid_network_name(s) {
        assert!(one_plain_component(s) && !s.contains('\0'), "{s:?}");
    }
});
