//! Data: the byte-level tokenizer, text files, the built-in synthetic corpus with long-range
//! structure, and the batches training reads (random windows of a token stream).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Byte-level vocabulary: the 256 byte values, then BOS and EOS.
pub const BYTE_VOCAB: usize = 258;
/// Beginning-of-sequence token of the byte vocabulary.
pub const BYTE_BOS: u32 = 256;
/// End-of-sequence token of the byte vocabulary; separates documents.
pub const BYTE_EOS: u32 = 257;

/// One token per byte.
pub fn byte_tokens(text: &[u8]) -> Vec<u32> {
    text.iter().map(|&b| b as u32).collect()
}

/// Joins documents into one token stream, each followed by EOS.
pub fn join_documents<'a>(docs: impl IntoIterator<Item = &'a [u8]>) -> Vec<u32> {
    let mut out = Vec::new();
    for d in docs {
        out.extend(d.iter().map(|&b| b as u32));
        out.push(BYTE_EOS);
    }
    out
}

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

/// Byte tokens of a text file or a directory of `.txt` files, documents separated by EOS.
pub fn load_text_tokens(path: &Path) -> Result<Vec<u32>> {
    let mut docs = Vec::new();
    for f in text_files(path)? {
        docs.push(fs::read(&f).map_err(|e| Error::io(&f, e))?);
    }
    Ok(join_documents(docs.iter().map(|d| d.as_slice())))
}

const ADJECTIVES: &[&str] = &[
    "red", "quiet", "old", "bright", "small", "heavy", "green", "cold", "swift", "gentle", "dark",
    "tall",
];
const NOUNS: &[&str] = &[
    "river", "stone", "garden", "lamp", "horse", "tower", "letter", "field", "window", "bridge",
    "forest", "ship",
];
const VERBS: &[&str] = &[
    "rests", "waits", "turns", "falls", "shines", "moves", "stands", "sleeps",
];
const PREPOSITIONS: &[&str] = &["near", "under", "beyond", "beside", "above", "behind"];

fn pick<'a>(rng: &mut Rng, words: &[&'a str]) -> &'a str {
    words[rng.below(words.len())]
}

fn random_key(rng: &mut Rng) -> String {
    const CONSONANTS: &[u8] = b"bdfgklmnprstvz";
    const VOWELS: &[u8] = b"aeiou";
    (0..4)
        .map(|i| {
            let set = if i % 2 == 0 { CONSONANTS } else { VOWELS };
            set[rng.below(set.len())] as char
        })
        .collect()
}

/// One synthetic document of about `len` bytes with long-range structure: facts
/// ("Remember: bado is 4821.") are stated throughout filler prose, and recalls ("Recall: bado is
/// 4821.") of any earlier fact appear later, so the digits of a recall are predictable only by
/// attending back to where the fact was stated, possibly thousands of tokens earlier.
pub fn synthetic_document(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut text = String::with_capacity(len + 64);
    let mut facts: Vec<(String, u32)> = Vec::new();
    while text.len() < len {
        let r = rng.uniform();
        if facts.is_empty() || r < 0.12 {
            let fact = (random_key(rng), rng.below(10_000) as u32);
            text.push_str(&format!("Remember: {} is {:04}.\n", fact.0, fact.1));
            facts.push(fact);
        } else if r < 0.3 {
            let (key, value) = &facts[rng.below(facts.len())];
            text.push_str(&format!("Recall: {key} is {value:04}.\n"));
        } else {
            text.push_str(&format!(
                "The {} {} {} {} the {}. ",
                pick(rng, ADJECTIVES),
                pick(rng, NOUNS),
                pick(rng, VERBS),
                pick(rng, PREPOSITIONS),
                pick(rng, NOUNS)
            ));
        }
    }
    text.into_bytes()
}

/// A synthetic corpus of `n_docs` documents of about `doc_len` bytes, as one token stream.
pub fn synthetic_corpus(seed: u64, n_docs: usize, doc_len: usize) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let docs: Vec<Vec<u8>> = (0..n_docs)
        .map(|_| synthetic_document(&mut rng, doc_len))
        .collect();
    join_documents(docs.iter().map(|d| d.as_slice()))
}

/// Where a trainer's batches come from: windows of a token stream, or padded SFT records.
pub trait BatchSource {
    /// Tokens per sequence (the context).
    fn seq_len(&self) -> usize;
    /// `batch` sequences, drawn with `rng`.
    fn sample(&self, batch: usize, rng: &mut Rng) -> Batch;
}

/// Random training windows of `seq_len + 1` tokens from one token stream.
#[derive(Clone, Debug)]
pub struct WindowSampler {
    tokens: Vec<u32>,
    seq_len: usize,
}

/// A batch of `batch × seq_len` inputs and their next-token targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub targets: Vec<i32>,
    pub batch: usize,
    pub seq_len: usize,
}

impl WindowSampler {
    /// Fails when the stream is shorter than one window.
    pub fn new(tokens: Vec<u32>, seq_len: usize) -> Result<Self> {
        if seq_len == 0 || tokens.len() < seq_len + 1 {
            return Err(Error::Data(format!(
                "the data has {} tokens, fewer than one training window of context {} + 1",
                tokens.len(),
                seq_len
            )));
        }
        Ok(WindowSampler { tokens, seq_len })
    }
}

impl BatchSource for WindowSampler {
    fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// `batch` windows at uniformly random offsets.
    fn sample(&self, batch: usize, rng: &mut Rng) -> Batch {
        let n = self.seq_len;
        let mut out = Batch {
            tokens: Vec::with_capacity(batch * n),
            targets: Vec::with_capacity(batch * n),
            batch,
            seq_len: n,
        };
        for _ in 0..batch {
            let start = rng.below(self.tokens.len() - n);
            let w = &self.tokens[start..start + n + 1];
            out.tokens.extend_from_slice(&w[..n]);
            out.targets.extend(w[1..].iter().map(|&t| t as i32));
        }
        out
    }
}
