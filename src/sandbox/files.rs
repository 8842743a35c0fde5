//! The files a container runtime mounts into the pod's containers, written per sandbox under
//! `<root>/sandboxes/<id>/` beside the record `<root>/sandboxes/<id>.json`: `hostname`,
//! `hosts`, `resolv.conf` and the sandbox's OCI runtime spec `config.json`. The record store
//! removes the directory with the record, so Remove, a rolled-back Run and recovery clean it;
//! this module never deletes anything.
//!
//! The three mounted files are 0644, since a container runtime mounts them for whatever user a
//! container runs as; `config.json` carries the pod's annotations and is 0600. The directory is
//! 0711 (as containerd's sandbox dirs): the mounted files open by path, the dir is not listable.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::modes;
use crate::sandbox::model::Sandbox;
use crate::sandbox::oci;

/// Writes every file of `sandbox` into `dir` (created if needed), each atomically. Returns the
/// runtime spec as compact JSON, for verbose status to serve from memory.
pub fn write_all(dir: &Path, sandbox: &Sandbox) -> Result<String> {
    modes::create_dir_all(dir, modes::FILES_DIR)
        .map_err(|e| Error::io(format!("creating sandbox dir {}", dir.display()), e))?;
    let spec = oci::runtime_spec(sandbox, dir).map_err(|reason| Error::Record {
        path: dir.join("config.json"),
        reason: format!("building the OCI runtime spec: {reason}"),
    })?;
    let spec_json = serde_json::to_vec_pretty(&spec).map_err(|e| Error::Record {
        path: dir.join("config.json"),
        reason: format!("encoding the OCI runtime spec: {e}"),
    })?;
    let hostname = format!("{}\n", oci::hostname(sandbox));
    write(dir, "hostname", hostname.as_bytes(), modes::MOUNTED_FILE)?;
    write(dir, "hosts", hosts(sandbox).as_bytes(), modes::MOUNTED_FILE)?;
    let resolv = resolv_conf(sandbox);
    write(dir, "resolv.conf", &resolv, modes::MOUNTED_FILE)?;
    write(dir, "config.json", &spec_json, modes::PRIVATE_FILE)?;
    serde_json::to_string(&spec).map_err(|e| Error::Record {
        path: dir.join("config.json"),
        reason: format!("encoding the OCI runtime spec: {e}"),
    })
}

/// Writes `name` atomically, its temp file created with `mode` (which the rename keeps).
fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    modes::create_file(&tmp, mode)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("writing {}", path.display()), e)
        })
}

/// A host-network pod sees the node's hosts file; others get localhost and their own name.
fn hosts(sandbox: &Sandbox) -> String {
    if sandbox.spec.host_network {
        return fs::read_to_string("/etc/hosts").unwrap_or_default();
    }
    let mut out = String::from(
        "# written by crisp for this pod sandbox\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let name = oci::hostname(sandbox);
    for ip in sandbox.network.iter().flat_map(|n| n.ips.iter()) {
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    out
}

/// resolv.conf from dns_config; without one, the node's (as containerd does).
fn resolv_conf(sandbox: &Sandbox) -> Vec<u8> {
    let dns = &sandbox.spec.dns;
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return fs::read("/etc/resolv.conf").unwrap_or_default();
    }
    let mut out = String::from("# written by crisp from the pod's dns_config\n");
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out.into_bytes()
}
