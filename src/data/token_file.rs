//! Token files: ids as little-endian u16 (LongLoRA's evaluation format), or u32 when the vocabulary
//! exceeds 65536, described by a side file `FILE.bin.json`. A bare `.bin` without one is u16.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fs::write_atomic;

/// Width of one stored token id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    U16,
    U32,
}

impl TokenDtype {
    /// The narrowest width that holds every id of a vocabulary of `vocab_size` tokens.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 {
            TokenDtype::U16
        } else {
            TokenDtype::U32
        }
    }

    /// Bytes per token id.
    pub fn bytes(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::U32 => 4,
        }
    }
}

impl std::fmt::Display for TokenDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenDtype::U16 => "u16",
            TokenDtype::U32 => "u32",
        })
    }
}

/// The side file `FILE.bin.json`: what a token file holds and where its ids come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenFileMeta {
    pub dtype: TokenDtype,
    pub vocab_size: usize,
    pub tokens: usize,
    pub documents: usize,
    /// The tokenizer that produced the ids (a path or "builtin byte-level").
    pub tokenizer: String,
}

/// Path of the side file that describes `bin`.
pub fn side_file(bin: &Path) -> PathBuf {
    let mut name = bin.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// A memory-mapped token file.
pub struct TokenFile {
    path: PathBuf,
    map: Mmap,
    dtype: TokenDtype,
    meta: Option<TokenFileMeta>,
}

impl TokenFile {
    /// Maps the file, reading its side file when there is one; the length must be a whole number
    /// of ids and agree with the side file's token count.
    pub fn open(path: &Path) -> Result<Self> {
        let side = side_file(path);
        let meta: Option<TokenFileMeta> = match fs::read(&side) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                    path: side.clone(),
                    source,
                })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&side, e)),
        };
        let dtype = meta.as_ref().map_or(TokenDtype::U16, |m| m.dtype);
        let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and only ever read as bytes; a concurrent writer could
        // change token values (which are range-checked) but not break memory safety.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let width = dtype.bytes();
        if map.len() % width != 0 {
            return Err(Error::BadFile {
                path: path.into(),
                message: format!(
                    "{} bytes is not a whole number of {dtype} tokens",
                    map.len()
                ),
            });
        }
        if let Some(m) = &meta {
            if m.tokens != map.len() / width {
                return Err(Error::BadFile {
                    path: path.into(),
                    message: format!(
                        "holds {} tokens but {} says {}",
                        map.len() / width,
                        side.display(),
                        m.tokens
                    ),
                });
            }
        }
        Ok(TokenFile {
            path: path.into(),
            map,
            dtype,
            meta,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.map.len() / self.dtype.bytes()
    }

    /// Whether the file holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The side file's description, if the file has one.
    pub fn meta(&self) -> Option<&TokenFileMeta> {
        self.meta.as_ref()
    }

    /// Checks that the ids come from a tokenizer of `vocab_size` tokens (described by `source`),
    /// as far as the side file tells: ids of another vocabulary would train on the wrong tokens
    /// even when they are in range.
    pub fn check_tokenizer(&self, vocab_size: usize, source: &str) -> Result<()> {
        match &self.meta {
            Some(m) if m.vocab_size != vocab_size => Err(Error::BadFile {
                path: self.path.clone(),
                message: format!(
                    "tokenizer/vocabulary mismatch: tokenized with {} ({} tokens), but the \
                     tokenizer in use is {source} ({vocab_size} tokens)",
                    m.tokenizer, m.vocab_size
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Tokens `start..start + len`, each checked against the vocabulary size `vocab`.
    pub fn window(&self, start: usize, len: usize, vocab: usize) -> Result<Vec<u32>> {
        if start + len > self.len() {
            return Err(Error::BadFile {
                path: self.path.clone(),
                message: format!(
                    "tokens {start}..{} asked for, but the file holds {}",
                    start + len,
                    self.len()
                ),
            });
        }
        let w = self.dtype.bytes();
        let bytes = &self.map[w * start..w * (start + len)];
        let out: Vec<u32> = match self.dtype {
            TokenDtype::U16 => bytes
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            TokenDtype::U32 => bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        };
        if let Some(i) = out.iter().position(|&t| t as usize >= vocab) {
            return Err(Error::BadFile {
                path: self.path.clone(),
                message: format!(
                    "token {} at index {} (byte offset {}) is outside the vocabulary of {vocab}",
                    out[i],
                    start + i,
                    w * (start + i)
                ),
            });
        }
        Ok(out)
    }

    /// Every token, checked against the vocabulary size `vocab`.
    pub fn tokens(&self, vocab: usize) -> Result<Vec<u32>> {
        self.window(0, self.len(), vocab)
    }
}

/// Streams documents into a token file; [`TokenFileWriter::finish`] moves it into place and
/// writes the side file, so an interrupted run leaves no file that looks complete.
pub struct TokenFileWriter {
    path: PathBuf,
    partial: PathBuf,
    out: BufWriter<fs::File>,
    dtype: TokenDtype,
    vocab_size: usize,
    tokens: usize,
    documents: usize,
}

impl TokenFileWriter {
    /// Starts `path` for ids of a vocabulary of `vocab_size` tokens.
    pub fn create(path: &Path, vocab_size: usize) -> Result<Self> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = fs::File::create(&partial).map_err(|e| Error::io(&partial, e))?;
        Ok(TokenFileWriter {
            path: path.into(),
            partial,
            out: BufWriter::new(file),
            dtype: TokenDtype::for_vocab(vocab_size),
            vocab_size,
            tokens: 0,
            documents: 0,
        })
    }

    /// Appends one document's ids (the caller adds the separator it wants).
    pub fn push_document(&mut self, ids: &[u32]) -> Result<()> {
        if let Some(&t) = ids.iter().find(|&&t| t as usize >= self.vocab_size) {
            return Err(Error::Data(format!(
                "document {} of {} has token id {t}, outside the vocabulary of {}",
                self.documents,
                self.path.display(),
                self.vocab_size
            )));
        }
        let mut bytes = Vec::with_capacity(ids.len() * self.dtype.bytes());
        match self.dtype {
            TokenDtype::U16 => ids
                .iter()
                .for_each(|&t| bytes.extend_from_slice(&(t as u16).to_le_bytes())),
            TokenDtype::U32 => ids
                .iter()
                .for_each(|&t| bytes.extend_from_slice(&t.to_le_bytes())),
        }
        self.out
            .write_all(&bytes)
            .map_err(|e| Error::io(&self.partial, e))?;
        self.tokens += ids.len();
        self.documents += 1;
        Ok(())
    }

    /// Flushes, renames the file into place and writes the side file; returns what it wrote.
    pub fn finish(self, tokenizer: &str) -> Result<TokenFileMeta> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.partial, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.partial, e))?;
        fs::rename(&self.partial, &self.path).map_err(|e| Error::io(&self.path, e))?;
        let meta = TokenFileMeta {
            dtype: self.dtype,
            vocab_size: self.vocab_size,
            tokens: self.tokens,
            documents: self.documents,
            tokenizer: tokenizer.to_string(),
        };
        let text = serde_json::to_string_pretty(&meta).expect("a plain struct serialises");
        write_atomic(&side_file(&self.path), text.as_bytes())?;
        Ok(meta)
    }
}
