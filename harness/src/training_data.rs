//! What `--data` names, read into something a trainer samples: text (a .txt file or a directory of
//! them, tokenized with the model's tokenizer), a `.bin` token file, or SFT records (.json/.jsonl).

use std::path::{Path, PathBuf};

use longlora::data::sft::{load_records, SftRecord, SftSampler};
use longlora::data::token_file::TokenFile;
use longlora::data::tokenizer::Tokenizer;
use longlora::data::{BatchSource, WindowSampler};
use longlora::{Error, Result};

use crate::progress::bar;

/// Training data before it is cut to a context.
pub enum TrainData {
    /// One token stream, documents separated by EOS.
    Tokens(Vec<u32>),
    /// Instruction records, one padded sequence each.
    Sft {
        records: Vec<SftRecord>,
        path: PathBuf,
    },
}

impl TrainData {
    /// Its size, recorded in checkpoints so a resume on other data is refused: tokens, or records.
    pub fn fingerprint(&self) -> usize {
        match self {
            TrainData::Tokens(tokens) => tokens.len(),
            TrainData::Sft { records, .. } => records.len(),
        }
    }

    /// The sampler for training at `context`. SFT truncation is reported on stderr.
    pub fn sampler(
        self,
        tokenizer: Option<&Tokenizer>,
        context: usize,
    ) -> Result<Box<dyn BatchSource>> {
        match self {
            TrainData::Tokens(tokens) => Ok(Box::new(WindowSampler::new(tokens, context)?)),
            TrainData::Sft { records, path } => {
                let tokenizer = need_tokenizer(tokenizer, &path)?;
                let sampler = SftSampler::new(&records, tokenizer, context, &path)?;
                if let Some(w) = sampler.truncation_warning() {
                    eprintln!("{w}");
                }
                Ok(Box::new(sampler))
            }
        }
    }
}

/// The tokenizer that text or SFT data at `path` needs.
fn need_tokenizer<'a>(tokenizer: Option<&'a Tokenizer>, path: &Path) -> Result<&'a Tokenizer> {
    tokenizer.ok_or_else(|| {
        Error::option(
            "data",
            format!(
                "{} is text, which needs a tokenizer, and the model has none (no tokenizer.json); \
                 give a .bin token file",
                path.display()
            ),
        )
    })
}

/// Whether `path` names a token file (`.bin`) rather than text or SFT records.
pub fn is_token_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "bin")
}

fn is_sft(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == "json" || e == "jsonl")
}

/// Reads `--data` for training: SFT records when the file is .json/.jsonl, else tokens.
pub fn load_train_data(
    path: &Path,
    tokenizer: Option<&Tokenizer>,
    vocab: usize,
) -> Result<TrainData> {
    if is_sft(path) {
        return Ok(TrainData::Sft {
            records: load_records(path)?,
            path: path.to_path_buf(),
        });
    }
    load_tokens(path, tokenizer, vocab).map(TrainData::Tokens)
}

/// Token ids of a `.bin` token file (checked against `vocab`, and its side file against the
/// tokenizer or, without one, the vocabulary) or of text files, each file one document followed
/// by EOS.
pub fn load_tokens(path: &Path, tokenizer: Option<&Tokenizer>, vocab: usize) -> Result<Vec<u32>> {
    if is_token_file(path) {
        let file = TokenFile::open(path)?;
        match tokenizer {
            Some(t) => file.check_tokenizer(t.vocab_size(), &t.source())?,
            None => file.check_tokenizer(vocab, "none (the model's vocabulary)")?,
        }
        return file.tokens(vocab);
    }
    if is_sft(path) {
        return Err(Error::option(
            "data",
            format!(
                "{} is SFT data; this option takes text or a .bin token file",
                path.display()
            ),
        ));
    }
    let tokenizer = need_tokenizer(tokenizer, path)?;
    let files = longlora::data::text::text_files(path)?;
    let pb = bar(files.len(), "tokenize");
    let mut tokens = Vec::new();
    for f in &files {
        tokens.extend(tokenizer.encode_file(f)?);
        tokens.push(tokenizer.eos_id());
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(tokens)
}

/// `--model`/`--tokenizer` values: a directory, or the word `builtin`.
#[derive(Clone, Debug)]
pub enum TokenizerSource {
    Builtin,
    Dir(PathBuf),
}

impl std::str::FromStr for TokenizerSource {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(if s == "builtin" {
            TokenizerSource::Builtin
        } else {
            TokenizerSource::Dir(PathBuf::from(s))
        })
    }
}

impl TokenizerSource {
    /// The tokenizer it names.
    pub fn load(&self) -> Result<Tokenizer> {
        match self {
            TokenizerSource::Builtin => Ok(Tokenizer::builtin()),
            TokenizerSource::Dir(dir) => Tokenizer::from_model_dir(dir),
        }
    }
}
