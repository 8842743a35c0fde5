//! `make install` / `make uninstall`, always staged under a temporary DESTDIR (never the real
//! root, never systemctl): what install puts in place, what it leaves alone, and that uninstall
//! reverses exactly what install did.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn make(target: &str, destdir: &Path) -> String {
    assert!(
        destdir.starts_with(std::env::temp_dir()) && destdir != Path::new("/"),
        "tests install only under a temp DESTDIR"
    );
    let out = Command::new("make")
        .arg("-C")
        .arg(repo())
        .arg("--no-print-directory")
        .arg(target)
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("CRISP_BIN={}", env!("CARGO_BIN_EXE_crisp")))
        .output()
        .expect("run make");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "make {target} failed: {text}");
    text
}

/// Whether an ELF file has DWARF debug info (a `.debug_info` section, as `readelf -S` lists).
fn has_debug_sections(elf: &Path) -> bool {
    let out = Command::new("readelf")
        .arg("-SW")
        .arg(elf)
        .output()
        .expect("run readelf");
    assert!(out.status.success(), "readelf -S {} failed", elf.display());
    String::from_utf8_lossy(&out.stdout).contains(" .debug_info ")
}

/// Every path under `root` (files and dirs), relative, sorted.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(root).expect("under root").to_path_buf());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn install_puts_everything_in_place_and_uninstall_removes_exactly_that() {
    let dest = tempfile::tempdir().expect("tempdir");
    let root = dest.path();
    make("install", root);

    let bin = root.join("usr/local/bin/crisp");
    // Stripped: the built binary's debug sections are gone, and what is left still runs.
    let built = Path::new(env!("CARGO_BIN_EXE_crisp"));
    assert!(
        has_debug_sections(built),
        "the test build carries debug info"
    );
    assert!(
        !has_debug_sections(&bin),
        "installed binary is not stripped"
    );
    let size = |p: &Path| fs::metadata(p).expect("size").len();
    assert!(size(&bin) < size(built));
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .expect("run installed");
    assert!(version.status.success(), "installed binary does not run");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&bin).expect("meta").permissions().mode() & 0o777,
        0o755
    );
    let unit = fs::read_to_string(root.join("etc/systemd/system/crisp.service")).expect("unit");
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/crisp --socket /run/crisp/crisp.sock",
        "Restart=on-failure",
        "RuntimeDirectory=crisp",
        "StateDirectory=crisp",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "unit lacks {line:?}:\n{unit}"
        );
    }
    assert_eq!(
        fs::read(root.join("etc/cni/net.d/10-crisp.conflist")).expect("conf"),
        fs::read(repo().join("cni-conf/10-crisp.conflist")).expect("source conf")
    );
    let crictl = fs::read_to_string(root.join("etc/crictl.yaml")).expect("crictl.yaml");
    assert!(crictl.contains("runtime-endpoint: unix:///run/crisp/crisp.sock"));

    make("uninstall", root);
    assert_eq!(
        tree(root),
        Vec::<PathBuf>::new(),
        "uninstall leaves nothing"
    );
}

#[test]
fn install_keeps_an_existing_conf_and_crictl_yaml_and_uninstall_keeps_changed_files() {
    let dest = tempfile::tempdir().expect("tempdir");
    let root = dest.path();
    fs::create_dir_all(root.join("etc/cni/net.d")).expect("mkdir");
    fs::write(root.join("etc/cni/net.d/05-cluster.conflist"), "{}\n").expect("conf");
    fs::write(
        root.join("etc/crictl.yaml"),
        "runtime-endpoint: unix:///other.sock\n",
    )
    .expect("crictl.yaml");
    let before = tree(root);

    let out = make("install", root);
    assert!(out.contains("already holds a CNI conf"), "{out}");
    assert!(!root.join("etc/cni/net.d/10-crisp.conflist").exists());
    assert_eq!(
        fs::read_to_string(root.join("etc/crictl.yaml")).expect("crictl.yaml"),
        "runtime-endpoint: unix:///other.sock\n"
    );
    // An operator edits the unit after install: uninstall keeps the edit.
    let unit = root.join("etc/systemd/system/crisp.service");
    let mut text = fs::read_to_string(&unit).expect("unit");
    text.push_str("# local change\n");
    fs::write(&unit, &text).expect("edit unit");

    let out = make("uninstall", root);
    assert!(out.contains("changed since install"), "{out}");
    assert_eq!(fs::read_to_string(&unit).expect("kept"), text);
    fs::remove_file(&unit).expect("remove the kept unit");
    for dir in ["etc/systemd/system", "etc/systemd"] {
        fs::remove_dir(root.join(dir)).expect("only the kept unit was in it");
    }
    assert_eq!(
        tree(root),
        before,
        "everything else is as it was before install"
    );
}
