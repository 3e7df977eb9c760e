//! Crash-safe file replacement.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Replaces `path` with `bytes` so that readers see the old file or the complete new one, never a
/// torn write. The bytes go to a temporary name in the same directory (a rename is atomic only
/// within one file system), reach the disk, and are renamed over `path`; the directory is then
/// synced so the rename itself survives a power cut. A reader that memory-mapped the old file
/// keeps the old, intact contents.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_name(path)?;
    if let Err(e) = write_synced(&tmp, bytes).and_then(|()| fs::rename(&tmp, path)) {
        // Best effort: the write's own error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_parent_dir(path)
}

/// A name no other writer uses at the same time, even another thread of this process.
fn temporary_name(path: &Path) -> Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let Some(name) = path.file_name() else {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "not a file path");
        return Err(Error::io(path, e));
    };
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(tmp))
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::options().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
