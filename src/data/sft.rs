//! Supervised fine-tuning data: LongAlpaca-style records (`instruction`, optional `input`,
//! `output`) in the Alpaca prompt template. Only the answer and its EOS are scored; the prompt's
//! targets are [`IGNORE_INDEX`]. Each record is one sequence padded to the context, so with causal
//! attention no record ever sees another's tokens.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::data::tokenizer::Tokenizer;
use crate::data::{Batch, BatchSource};
use crate::error::{Error, Result};
use crate::ops::cross_entropy::IGNORE_INDEX;
use crate::rng::Rng;

/// One instruction-following example.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct SftRecord {
    pub instruction: String,
    #[serde(default)]
    pub input: Option<String>,
    pub output: String,
}

/// The Alpaca preamble; LongAlpaca's records use the same template.
const PREAMBLE_INPUT: &str = "Below is an instruction that describes a task, paired with an input \
    that provides further context. Write a response that appropriately completes the request.";
const PREAMBLE_NO_INPUT: &str =
    "Below is an instruction that describes a task. Write a response that appropriately completes \
     the request.";

impl SftRecord {
    /// The Alpaca prompt: with the input section when `input` is present and not empty.
    pub fn prompt(&self) -> String {
        let instruction = &self.instruction;
        match self.input.as_deref().filter(|i| !i.is_empty()) {
            Some(input) => format!(
                "{PREAMBLE_INPUT}\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
            ),
            None => format!("{PREAMBLE_NO_INPUT}\n\n### Instruction:\n{instruction}\n\n### Response:"),
        }
    }
}

/// Reads a `.json` file (an array of records) or a `.jsonl` file (one record per line). Malformed
/// JSON names the file and line; an empty answer names the file and the record's index.
pub fn load_records(path: &Path) -> Result<Vec<SftRecord>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let json_error = |source| Error::Json {
        path: path.to_path_buf(),
        source,
    };
    // A JSON Lines file is a stream of JSON values, so serde's positions are lines of the file.
    let records: Vec<SftRecord> = if jsonl {
        serde_json::Deserializer::from_str(&text)
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(json_error)?
    } else {
        serde_json::from_str(&text).map_err(json_error)?
    };
    if records.is_empty() {
        return Err(Error::BadFile {
            path: path.to_path_buf(),
            message: "holds no SFT records".into(),
        });
    }
    if let Some(i) = records.iter().position(|r| r.output.trim().is_empty()) {
        return Err(Error::BadFile {
            path: path.to_path_buf(),
            message: format!(
                "record {i} (counting from 0) has an empty \"output\": there is no answer to train on"
            ),
        });
    }
    Ok(records)
}

/// Records tokenized and padded to one context each, sampled uniformly.
pub struct SftSampler {
    /// `records × seq_len` inputs.
    tokens: Vec<u32>,
    /// `records × seq_len` next-token targets, [`IGNORE_INDEX`] outside the answers.
    targets: Vec<i32>,
    seq_len: usize,
    truncated: usize,
    answerless: usize,
    source: PathBuf,
}

impl SftSampler {
    /// Tokenizes `[BOS] prompt answer EOS` per record (BOS when the tokenizer has one), keeping
    /// the first `seq_len + 1` tokens of a longer record; [`SftSampler::truncated`] counts those.
    pub fn new(
        records: &[SftRecord],
        tokenizer: &Tokenizer,
        seq_len: usize,
        source: &Path,
    ) -> Result<Self> {
        if seq_len == 0 {
            return Err(Error::option("context", "must be at least 1"));
        }
        if records.is_empty() {
            return Err(Error::Data(format!(
                "{} holds no SFT records",
                source.display()
            )));
        }
        let n = records.len();
        let mut sampler = SftSampler {
            tokens: Vec::with_capacity(n * seq_len),
            targets: Vec::with_capacity(n * seq_len),
            seq_len,
            truncated: 0,
            answerless: 0,
            source: source.to_path_buf(),
        };
        let eos = tokenizer.eos_id();
        for r in records {
            let mut seq: Vec<u32> = tokenizer.bos_id().into_iter().collect();
            seq.extend(tokenizer.encode(&r.prompt())?);
            let prompt_len = seq.len();
            seq.extend(tokenizer.encode(&r.output)?);
            seq.push(eos);
            if seq.len() > seq_len + 1 {
                seq.truncate(seq_len + 1);
                sampler.truncated += 1;
                if seq.len() <= prompt_len {
                    sampler.answerless += 1;
                }
            }
            let inputs = seq.len() - 1;
            sampler.tokens.extend_from_slice(&seq[..inputs]);
            let padded = sampler.tokens.len() + seq_len - inputs;
            sampler.tokens.resize(padded, eos);
            // Target i is the token at i + 1: scored only where that token is part of the answer.
            sampler
                .targets
                .extend(seq[1..].iter().enumerate().map(|(i, &t)| {
                    if i + 1 < prompt_len {
                        IGNORE_INDEX
                    } else {
                        t as i32
                    }
                }));
            sampler.targets.resize(padded, IGNORE_INDEX);
        }
        Ok(sampler)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.tokens.len() / self.seq_len
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Records longer than the context, cut to fit.
    pub fn truncated(&self) -> usize {
        self.truncated
    }

    /// Truncated records whose prompt alone fills the context: they score nothing.
    pub fn answerless(&self) -> usize {
        self.answerless
    }

    /// A warning for stderr when records were truncated, so it never happens silently.
    pub fn truncation_warning(&self) -> Option<String> {
        (self.truncated > 0).then(|| {
            format!(
                "warning: {} of {} SFT records in {} are longer than the context of {} tokens and \
                 were truncated ({} of them lose their whole answer and train nothing)",
                self.truncated,
                self.len(),
                self.source.display(),
                self.seq_len,
                self.answerless
            )
        })
    }

    /// Inputs and targets of record `i`.
    pub fn record(&self, i: usize) -> (&[u32], &[i32]) {
        let span = i * self.seq_len..(i + 1) * self.seq_len;
        (&self.tokens[span.clone()], &self.targets[span])
    }
}

impl BatchSource for SftSampler {
    fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// `batch` records drawn uniformly with replacement.
    fn sample(&self, batch: usize, rng: &mut Rng) -> Batch {
        let mut out = Batch {
            tokens: Vec::with_capacity(batch * self.seq_len),
            targets: Vec::with_capacity(batch * self.seq_len),
            batch,
            seq_len: self.seq_len,
        };
        for _ in 0..batch {
            let (tokens, targets) = self.record(rng.below(self.len()));
            out.tokens.extend_from_slice(tokens);
            out.targets.extend_from_slice(targets);
        }
        out
    }
}
