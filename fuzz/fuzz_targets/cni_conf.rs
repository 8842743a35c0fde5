//! CNI network configuration loading: any bytes in a `.conflist` or `.conf` file must load or
//! be refused with an error, never panic; a loaded list builds every plugin's stdin, and its
//! plugin types are plain file names (they are joined onto the bin dirs).
#![no_main]

use std::path::Path;

use crisp::cni::{plugin_stdin, NetworkConfigList};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let loaded = [
        NetworkConfigList::from_list_bytes(data, Path::new("fuzz.conflist")),
        NetworkConfigList::from_conf_bytes(data, Path::new("fuzz.conf")),
    ];
    for list in loaded.into_iter().flatten() {
        for plugin in &list.plugins {
            let t = &plugin.plugin_type;
            assert!(
                !t.contains('/') && t != "." && t != ".." && !t.is_empty(),
                "plugin type {t:?} would escape the bin dirs"
            );
            let stdin = plugin_stdin(&list, plugin, None, &serde_json::Map::new());
            serde_json::from_slice::<serde_json::Value>(&stdin).expect("plugin stdin is JSON");
        }
    }
});
