//! Text documents on disk: the `.txt` files a data path names.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The `.txt` files a `--data` path names: the file itself, or the directory's `.txt` files
/// (recursively, sorted by path so runs are reproducible).
pub fn text_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let p = entry.map_err(|e| Error::io(&dir, e))?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "txt") {
                files.push(p);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::BadFile {
            path: path.to_path_buf(),
            message: "directory contains no .txt files".into(),
        });
    }
    Ok(files)
}

/// The contents `bytes` of the file at `path` as text, or an error naming the file and the first
/// invalid byte; `why` says what needs UTF-8.
pub fn utf8_text(path: &Path, bytes: Vec<u8>, why: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| Error::BadFile {
        path: path.to_path_buf(),
        message: format!(
            "not UTF-8 (invalid byte at offset {}); {why}",
            e.utf8_error().valid_up_to()
        ),
    })
}
