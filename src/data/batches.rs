//! The batches a trainer reads: random windows of a token stream (SFT records are in `sft`).

use crate::error::{Error, Result};
use crate::rng::Rng;

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
