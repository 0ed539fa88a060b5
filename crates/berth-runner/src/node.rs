//! Who this runner is. A node's id names it in leases and container labels; it is kept on
//! disk in the data directory, so that the same runner started again (after a crash, say) is
//! the same node and recognises the attempts its earlier run lost. Each id is held under a
//! lock while the runner runs: two runners sharing a data directory never share an id — the
//! second takes the next free slot, with an id of its own.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The most runners that take ids from one data directory at once.
const SLOTS: usize = 64;

/// A node id, held for as long as this value lives.
#[derive(Debug)]
pub struct NodeIdentity {
    id: String,
    /// Holding the lock is holding the id; the kernel lets go of it when the process dies.
    _lock: File,
}

impl NodeIdentity {
    /// The id to run under: `configured` (locked in `data_dir`, so that a second runner with
    /// the same setting on this data directory is refused), or else the id kept in the first
    /// free slot of `data_dir`, made on first use as `hostname-<random>`.
    pub fn acquire(data_dir: &Path, configured: Option<&str>) -> Result<Self, String> {
        let dir = data_dir.join("runner");
        std::fs::create_dir_all(&dir)
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        if let Some(id) = configured {
            let path = dir.join(format!("{id}.lock"));
            return match lock(&path)? {
                Some(lock) => Ok(Self {
                    id: id.to_string(),
                    _lock: lock,
                }),
                None => Err(format!(
                    "another runner on {} already runs as {id:?} (runner_node_id); give each \
                     runner its own id, or leave runner_node_id unset",
                    data_dir.display()
                )),
            };
        }
        for slot in 0..SLOTS {
            let path = dir.join(format!("node-{slot}.id"));
            if let Some(mut lock) = lock(&path)? {
                let id = read_or_make_id(&mut lock, &path)?;
                return Ok(Self { id, _lock: lock });
            }
        }
        Err(format!(
            "{SLOTS} runners already run on {}; give others a data directory of their own",
            data_dir.display()
        ))
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The file at `path`, opened and exclusively locked; `None` while another process holds it.
fn lock(path: &PathBuf) -> Result<Option<File>, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|err| format!("cannot open {}: {err}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(err)) => Err(format!("cannot lock {}: {err}", path.display())),
    }
}

/// The id the slot's file holds, or a new one written to it.
fn read_or_make_id(file: &mut File, path: &Path) -> Result<String, String> {
    let mut kept = String::new();
    file.read_to_string(&mut kept)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let kept = kept.trim();
    if valid(kept) {
        return Ok(kept.to_string());
    }
    let id = format!("{}-{:08x}", host_name(), rand::random::<u32>());
    file.set_len(0)
        .and_then(|()| file.write_all(id.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    Ok(id)
}

/// The machine's name as far as a node id may carry it.
fn host_name() -> String {
    let name: String = std::fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(40)
        .collect();
    if name.is_empty() {
        "node".to_string()
    } else {
        name
    }
}

/// What `runner_node_id` accepts: 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_kept_held_and_handed_to_the_next_runner_only_when_free() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeIdentity::acquire(dir.path(), None).unwrap();
        let second = NodeIdentity::acquire(dir.path(), None).unwrap();
        assert_ne!(first.id(), second.id(), "two runners, two ids");
        assert!(valid(first.id()) && valid(second.id()));
        let kept = first.id().to_string();
        drop(first);
        let again = NodeIdentity::acquire(dir.path(), None).unwrap();
        assert_eq!(again.id(), kept, "the same slot, the same id");

        let named = NodeIdentity::acquire(dir.path(), Some("blue")).unwrap();
        assert_eq!(named.id(), "blue");
        let twice = NodeIdentity::acquire(dir.path(), Some("blue")).unwrap_err();
        assert!(twice.contains("already runs as \"blue\""), "{twice}");
    }
}
