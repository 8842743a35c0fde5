//! Sandbox records on disk: one JSON file per sandbox under `<root>/sandboxes/`, each
//! written atomically (temp file, rename), so a crash leaves either the old record or the new
//! one, never a torn one. The only writer of records; it never decides a sandbox's state
//! and never touches a namespace or the network.
//!
//! Durability policy (an fsync is the costliest part of a Run, so few writes are synced):
//! - A crash of crisp itself (kill -9, panic, OOM) loses nothing that was renamed: the page
//!   cache belongs to the kernel. Every write is therefore atomic, but not every write is
//!   synced.
//! - Only the `creating` intent is synced (file, rename, directory) before the CNI ADD starts
//!   (the namespace is created meanwhile: it does not outlive a power cut, and a pin no
//!   record names is removed by recovery): it is the one record whose loss in a power cut
//!   could leave state that outlives a reboot (host-local's IP files on disk) with nothing
//!   naming it. After a reboot the pod namespaces are gone anyway, so any later record that
//!   a power cut rolls back (ready, stopping, not_ready, or a deleted record coming back) is
//!   repaired by recovery: a sandbox whose namespace is gone is torn down with CNI DEL,
//!   which plugins must tolerate twice.
//!
//! Records hold the pod's labels, annotations and config: `sandboxes/` is 0700 and each
//! record is created 0600 (see `crate::modes`).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::modes;
use crate::sandbox::model::{is_id_prefix, Sandbox, SandboxState};

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the record directory under `root`.
    pub fn open(root: &Path) -> Result<Store> {
        let dir = root.join("sandboxes");
        modes::create_dir_all(&dir, modes::PRIVATE_DIR)
            .map_err(|e| Error::io(format!("creating state dir {}", dir.display()), e))?;
        Ok(Store { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The directory of a sandbox's files (`hostname`, `hosts`, `resolv.conf`, `config.json`),
    /// beside its record; it goes with the record.
    pub fn files_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Writes the record atomically; a `creating` intent is also made durable (see the
    /// module comment for why only that one).
    pub fn save(&self, sandbox: &Sandbox) -> Result<()> {
        let durable = sandbox.state == SandboxState::Creating;
        let path = self.path(&sandbox.id);
        let tmp = self.dir.join(format!(".{}.tmp", sandbox.id));
        let bytes = serde_json::to_vec_pretty(sandbox).map_err(|e| Error::Record {
            path: path.clone(),
            reason: format!("encoding: {e}"),
        })?;
        let write = || -> std::io::Result<()> {
            let mut file = modes::create_file(&tmp, modes::PRIVATE_FILE)?;
            file.write_all(&bytes)?;
            if durable {
                file.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            if durable {
                File::open(&self.dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("writing sandbox record {}", path.display()), e)
        })
    }

    /// Deletes the sandbox's files, then the record (so a crash in between leaves a record
    /// that a later Remove or recovery deletes again); missing ones are success.
    pub fn delete(&self, id: &str) -> Result<()> {
        let files = self.files_dir(id);
        match fs::remove_dir_all(&files) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(
                    format!("deleting sandbox files {}", files.display()),
                    e,
                ))
            }
            _ => {}
        }
        let path = self.path(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(
                format!("deleting sandbox record {}", path.display()),
                e,
            )),
            _ => Ok(()),
        }
    }

    /// Reads every record. Unreadable ones are returned as errors beside the good ones so
    /// recovery can report them instead of stopping; leftover temp files are removed.
    pub fn load_all(&self) -> Result<(Vec<Sandbox>, Vec<Error>)> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("reading {}", self.dir.display()), e))?;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let mut file_dirs = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::io(format!("reading {}", self.dir.display()), e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                file_dirs.push(name);
                continue;
            }
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            match read_record(&path) {
                Ok(sandbox) if sandbox.id == id && is_id_prefix(id) && id.len() == 64 => {
                    good.push(sandbox)
                }
                Ok(_) => bad.push(Error::Record {
                    path,
                    reason: "the id inside does not match the file name".into(),
                }),
                Err(e) => bad.push(e),
            }
        }
        // A files dir whose record is gone was left by a crash during Remove: finish it.
        for name in file_dirs {
            if is_id_prefix(&name) && name.len() == 64 && !self.path(&name).exists() {
                let _ = fs::remove_dir_all(self.files_dir(&name));
            }
        }
        Ok((good, bad))
    }
}

fn read_record(path: &Path) -> Result<Sandbox> {
    let bytes = fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Record {
        path: path.to_owned(),
        reason: format!("decoding: {e}"),
    })
}
