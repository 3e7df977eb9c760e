//! Crash-safe file replacement, and the lock that keeps two runs out of one directory.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
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
    fault::write_all(&mut file, bytes)?;
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

/// Fault injection for the tests of what a full disk does to a save.
#[doc(hidden)]
pub mod fault {
    use std::cell::Cell;
    use std::fs::File;
    use std::io::{self, Write};

    thread_local! {
        static BUDGET: Cell<Option<u64>> = const { Cell::new(None) };
    }

    /// While the guard lives, [`super::write_atomic`] on this thread writes `bytes` more bytes
    /// and then fails as a full disk does (`ENOSPC`), part-way through a file.
    pub fn fail_writes_after(bytes: u64) -> Guard {
        BUDGET.with(|b| b.set(Some(bytes)));
        Guard
    }

    pub struct Guard;

    impl Drop for Guard {
        fn drop(&mut self) {
            BUDGET.with(|b| b.set(None));
        }
    }

    pub(super) fn write_all(file: &mut File, bytes: &[u8]) -> io::Result<()> {
        let Some(left) = BUDGET.with(Cell::get) else {
            return file.write_all(bytes);
        };
        let n = bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        file.write_all(&bytes[..n])?;
        BUDGET.with(|b| b.set(Some(left - n as u64)));
        if n < bytes.len() {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }
}

/// Name of the lock file in a locked directory.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive advisory lock (`flock`) on a directory's [`LOCK_FILE`], held while the value
/// lives. The file names the holder, so that a second process can say who has it; the kernel
/// releases the lock when its holder dies, so a killed run leaves no stale lock.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Locks `dir` (which must exist) for this process, described as `holder` (e.g. its pid and
/// command line); fails at once with [`Error::Locked`] naming the current holder if another
/// process has it.
pub fn lock_dir(dir: &Path, holder: &str) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared with the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Error::io(&path, e));
        }
        let mut other = String::new();
        // Best effort: the holder may not have written its name yet.
        let _ = file.read_to_string(&mut other);
        return Err(Error::Locked {
            path,
            holder: match other.trim() {
                "" => "a process that has not said which".into(),
                name => name.to_string(),
            },
        });
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(holder.as_bytes()))
        .map_err(|e| Error::io(&path, e))?;
    Ok(DirLock { _file: file })
}
