//! Readiness for systemd `Type=notify`: one `READY=1` datagram to `$NOTIFY_SOCKET` once crisp
//! serves (sd_notify's protocol, without linking libsystemd). Without the variable this is a
//! no-op, so crisp runs the same under any supervisor.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Tells the service manager crisp is ready. `notify_socket` is `$NOTIFY_SOCKET` as read in
/// main; a leading `@` names an abstract socket.
pub fn notify_ready(notify_socket: Option<&str>) -> std::io::Result<()> {
    let Some(target) = notify_socket.filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let addr = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(target)?,
    };
    let socket = UnixDatagram::unbound()?;
    let status = format!(
        "READY=1\nMAINPID={}\nSTATUS=serving CRI",
        std::process::id()
    );
    socket.send_to_addr(status.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        notify_ready(path.to_str()).expect("notify");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).expect("recv");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("READY=1\n"), "{text}");
    }

    #[test]
    fn no_socket_is_a_no_op() {
        notify_ready(None).expect("no-op");
        notify_ready(Some("")).expect("no-op");
    }
}
