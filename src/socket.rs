//! Binding a daemon socket (CRI, NRI): parent directory created, a stale socket replaced only when
//! nothing answers on it, the socket made mode 0600 (access to it is root on the node).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;

use crate::error::{Error, Result};

pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating socket dir {}", parent.display()), e))?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(format!("chmod {}", parent.display()), e))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::io(
                    format!("socket {}", path.display()),
                    std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "another process is serving on it; stop it first",
                    ),
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| Error::io(format!("removing stale socket {}", path.display()), e))?;
        }
        Ok(_) => {
            return Err(Error::io(
                format!("socket {}", path.display()),
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the path exists and is not a socket",
                ),
            ))
        }
        Err(_) => {}
    }
    // Bind under a tight umask so the socket never exists with looser permissions.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| Error::io(format!("binding {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
    Ok(listener)
}
