//! Tokenizers: the built-in byte-level vocabulary, or a model directory's Hugging Face
//! `tokenizer.json` (e.g. Llama-2's BPE with byte fallback) through the `tokenizers` crate.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::data::text::utf8_text;
use crate::data::{BYTE_BOS, BYTE_EOS, BYTE_VOCAB};
use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::hf::load_config;

/// File name of a Hugging Face fast tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// transformers' tokenizer settings, copied along with `tokenizer.json` when present.
const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
const SPECIAL_TOKENS_FILE: &str = "special_tokens_map.json";

/// End-of-sequence spellings of common vocabularies, tried when config.json names no EOS id.
const EOS_NAMES: &[&str] = &["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"];
const BOS_NAMES: &[&str] = &["<s>", "<|begin_of_text|>", "<bos>"];

/// A text-to-ids mapping with its document separator (EOS).
pub enum Tokenizer {
    /// One token per byte, then BOS 256 and EOS 257 (see [`crate::data`]).
    Bytes,
    /// A `tokenizer.json` read from `dir`.
    HuggingFace {
        inner: Box<tokenizers::Tokenizer>,
        dir: PathBuf,
        bos: Option<u32>,
        eos: u32,
    },
}

impl Tokenizer {
    /// The built-in byte-level tokenizer.
    pub fn builtin() -> Self {
        Tokenizer::Bytes
    }

    /// The tokenizer of a model directory: its `tokenizer.json` when there is one, else the
    /// byte-level tokenizer when config.json's vocabulary is the byte vocabulary. A tokenizer with
    /// more tokens than the model's embedding rows is a mismatch: its ids would index past them.
    /// A directory without config.json (a tokenizer only) is accepted as it is.
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let config = dir.join("config.json");
        let cfg = if config.is_file() {
            Some(load_config(dir)?)
        } else {
            None
        };
        let file = dir.join(TOKENIZER_FILE);
        if !file.is_file() {
            return match cfg {
                Some(c) if c.vocab_size == BYTE_VOCAB => Ok(Tokenizer::Bytes),
                Some(c) => Err(Error::BadFile {
                    path: file,
                    message: format!(
                        "tokenizer/vocabulary mismatch: there is no tokenizer.json, and the built-in \
                         byte-level tokenizer has {BYTE_VOCAB} tokens while config.json's vocab_size \
                         is {}",
                        c.vocab_size
                    ),
                }),
                None => Err(Error::BadFile {
                    path: dir.to_path_buf(),
                    message: "neither tokenizer.json nor config.json: not a model or tokenizer \
                              directory"
                        .into(),
                }),
            };
        }
        let inner = tokenizers::Tokenizer::from_file(&file).map_err(|e| Error::BadFile {
            path: file.clone(),
            message: format!("not a Hugging Face tokenizer: {e}"),
        })?;
        let by_name = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let eos = cfg
            .as_ref()
            .and_then(|c| c.eos_token_id)
            .or_else(|| by_name(EOS_NAMES));
        let bos = cfg
            .as_ref()
            .and_then(|c| c.bos_token_id)
            .or_else(|| by_name(BOS_NAMES));
        let Some(eos) = eos else {
            return Err(Error::BadFile {
                path: file,
                message: format!(
                    "no end-of-sequence token to separate documents: config.json has no \
                     eos_token_id and the vocabulary has none of {EOS_NAMES:?}"
                ),
            });
        };
        let tokenizer = Tokenizer::HuggingFace {
            inner: Box::new(inner),
            dir: dir.to_path_buf(),
            bos,
            eos,
        };
        let vocab = tokenizer.vocab_size();
        if let Some(c) = cfg {
            if vocab > c.vocab_size {
                return Err(Error::BadFile {
                    path: file,
                    message: format!(
                        "tokenizer/vocabulary mismatch: the tokenizer has {vocab} tokens but \
                         config.json's vocab_size is {}",
                        c.vocab_size
                    ),
                });
            }
        }
        if let Some(id) = [Some(eos), bos]
            .into_iter()
            .flatten()
            .find(|&t| t as usize >= vocab)
        {
            return Err(Error::BadFile {
                path: file,
                message: format!("special token id {id} is outside the tokenizer's {vocab} tokens"),
            });
        }
        Ok(tokenizer)
    }

    /// Token ids of `text`, without BOS/EOS (callers place those).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Bytes => Ok(text.bytes().map(u32::from).collect()),
            Tokenizer::HuggingFace { inner, dir, .. } => inner
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| Error::BadFile {
                    path: dir.join(TOKENIZER_FILE),
                    message: format!("encoding failed: {e}"),
                }),
        }
    }

    /// Token ids of a text file's contents. The byte-level tokenizer takes any bytes; a
    /// `tokenizer.json` needs UTF-8.
    pub fn encode_file(&self, path: &Path) -> Result<Vec<u32>> {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        match self {
            Tokenizer::Bytes => Ok(bytes.into_iter().map(u32::from).collect()),
            Tokenizer::HuggingFace { .. } => {
                let text = utf8_text(path, bytes, "tokenizer.json tokenizes text")?;
                self.encode(&text)
            }
        }
    }

    /// Text of `ids`, special tokens left out; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Bytes => {
                let bytes: Vec<u8> = ids.iter().filter_map(|&t| u8::try_from(t).ok()).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Tokenizer::HuggingFace { inner, dir, .. } => {
                inner.decode(ids, true).map_err(|e| Error::BadFile {
                    path: dir.join(TOKENIZER_FILE),
                    message: format!("decoding failed: {e}"),
                })
            }
        }
    }

    /// Number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Bytes => BYTE_VOCAB,
            Tokenizer::HuggingFace { inner, .. } => inner.get_vocab_size(true),
        }
    }

    /// Beginning-of-sequence id, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        match self {
            Tokenizer::Bytes => Some(BYTE_BOS),
            Tokenizer::HuggingFace { bos, .. } => *bos,
        }
    }

    /// End-of-sequence id: separates documents and ends SFT answers.
    pub fn eos_id(&self) -> u32 {
        match self {
            Tokenizer::Bytes => BYTE_EOS,
            Tokenizer::HuggingFace { eos, .. } => *eos,
        }
    }

    /// Where the tokenizer comes from, for run records.
    pub fn source(&self) -> String {
        match self {
            Tokenizer::Bytes => "builtin byte-level".into(),
            Tokenizer::HuggingFace { dir, .. } => dir.join(TOKENIZER_FILE).display().to_string(),
        }
    }

    /// Writes `tokenizer.json` (and the transformers settings that came with it) into `dir`, so a
    /// model directory carries a tokenizer that `transformers` and this crate both load.
    pub fn save(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        match self {
            Tokenizer::Bytes => {
                let text = to_pretty(&byte_level_tokenizer_json());
                write_atomic(&dir.join(TOKENIZER_FILE), text.as_bytes())?;
                let settings = json!({
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "add_bos_token": false,
                    "add_eos_token": false,
                    "clean_up_tokenization_spaces": false,
                });
                write_atomic(
                    &dir.join(TOKENIZER_CONFIG_FILE),
                    to_pretty(&settings).as_bytes(),
                )
            }
            Tokenizer::HuggingFace { dir: source, .. } => {
                for name in [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE] {
                    let from = source.join(name);
                    if from.is_file() && from != dir.join(name) {
                        let bytes = fs::read(&from).map_err(|e| Error::io(&from, e))?;
                        write_atomic(&dir.join(name), &bytes)?;
                    }
                }
                Ok(())
            }
        }
    }
}

fn to_pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("a JSON value always serialises")
}

/// The byte-level vocabulary as a `tokenizer.json`: a BPE without merges whose vocabulary holds
/// only the 256 byte tokens `<0xNN>` (id = byte) and `<s>`/`</s>`, so no character is ever in
/// the vocabulary and byte fallback maps every UTF-8 byte to its own id, as
/// [`crate::data::byte_tokens`] does.
pub fn byte_level_tokenizer_json() -> Value {
    let mut vocab = Map::new();
    for b in 0..=255u32 {
        vocab.insert(format!("<0x{b:02X}>"), json!(b));
    }
    vocab.insert("<s>".into(), json!(BYTE_BOS));
    vocab.insert("</s>".into(), json!(BYTE_EOS));
    let special = |id: u32, content: &str| {
        json!({
            "id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        })
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(BYTE_BOS, "<s>"), special(BYTE_EOS, "</s>")],
        "normalizer": null,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {
            "type": "Sequence",
            "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]
        },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": true,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": []
        }
    })
}
