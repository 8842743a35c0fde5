//! Test-only: executable shell scripts that a test can exec at once.
//!
//! A script written by this (multi-threaded) test process can fail to exec with
//! ETXTBSY: a thread that forks between our open() and close() hands the child a
//! copy of the write descriptor until that child execs. So the bytes are written by
//! a `sh` child; the only writable descriptor lives in that child, which has exited
//! before the script is run.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Writes `text` to `path` with mode 0755, through a child process (see the module doc).
pub fn write_executable(path: &Path, text: &str) {
    let mut child = Command::new("/bin/sh")
        .args(["-c", "cat > \"$1\" && chmod 0755 \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh to write a script");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("write the script to sh");
    let status = child.wait().expect("wait for sh");
    assert!(
        status.success(),
        "writing {} failed: {status}",
        path.display()
    );
}
