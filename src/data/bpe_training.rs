//! Training a Llama-2-like tokenizer: a BPE with byte fallback (`<unk>`, `<s>`, `</s>`, then the
//! 256 byte tokens `<0x00>`..`<0xFF>`, then the merges, as Llama-2 numbers them), learnt by the
//! `tokenizers` crate's BPE trainer and written as a Hugging Face tokenizer directory.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::Split;
use tokenizers::{
    AddedToken, AddedVocabulary, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, SplitDelimiterBehavior, TokenizerImpl,
};

use crate::data::text::utf8_text;
use crate::data::tokenizer::{Tokenizer, TOKENIZER_FILE};
use crate::error::{Error, Result};
use crate::fs::write_atomic;

/// Llama-2's special tokens, ids 0, 1 and 2.
pub const SPECIAL_TOKENS: [&str; 3] = ["<unk>", "<s>", "</s>"];
/// Special tokens and byte tokens: a vocabulary must be larger to hold any merge.
pub const RESERVED_TOKENS: usize = SPECIAL_TOKENS.len() + 256;
/// Stands for a space inside tokens (SentencePiece's convention, as in Llama-2's vocabulary).
const SPACE_MARK: char = '▁';

type Bpe = TokenizerImpl<
    BPE,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

fn bpe_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

/// Words as Llama-2 splits them: spaces become `▁` and start a word, digits stand alone, and line
/// breaks are tokens of their own. No space is prepended, so decoding returns the text exactly.
fn pre_tokenizer() -> PreTokenizerWrapper {
    let newline = Split::new("\n", SplitDelimiterBehavior::Isolated, false)
        .expect("a literal split pattern always compiles");
    PreTokenizerWrapper::Sequence(PreTokenizerSequence::new(vec![
        PreTokenizerWrapper::Split(newline),
        PreTokenizerWrapper::Metaspace(Metaspace::new(SPACE_MARK, PrependScheme::Never, true)),
        PreTokenizerWrapper::Digits(Digits::new(true)),
    ]))
}

/// Byte tokens back to bytes (and those to UTF-8), tokens joined, `▁` back to spaces.
fn decoder() -> DecoderWrapper {
    DecoderWrapper::Sequence(DecoderSequence::new(vec![
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
        DecoderWrapper::Metaspace(Metaspace::new(SPACE_MARK, PrependScheme::Never, true)),
    ]))
}

/// The trainer: reserved tokens first (so they take Llama-2's ids), at most a quarter of the
/// remaining room for single characters (rarer characters fall back to bytes), merges of pairs
/// seen at least twice for the rest.
fn trainer(vocab_size: usize) -> BpeTrainer {
    let mut reserved: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    reserved.extend((0..=255u8).map(|b| AddedToken::from(format!("<0x{b:02X}>"), true)));
    BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(reserved)
        .limit_alphabet((vocab_size - RESERVED_TOKENS).div_ceil(4))
        .build()
}

/// The documents' lines (with their line breaks), what the trainer counts words in.
fn read_lines(files: &[PathBuf]) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for f in files {
        let bytes = fs::read(f).map_err(|e| Error::io(f, e))?;
        let text = utf8_text(f, bytes, "a tokenizer is trained on text")?;
        lines.extend(text.split_inclusive('\n').map(str::to_owned));
    }
    Ok(lines)
}

/// The transformers settings that go with tokenizer.json (Llama-2's: BOS added by the caller, no
/// EOS, no cleanup of spaces).
fn write_settings(out: &Path) -> Result<()> {
    let [unk, bos, eos] = SPECIAL_TOKENS;
    let settings = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": unk, "bos_token": bos, "eos_token": eos,
        "add_bos_token": false, "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
    });
    let special = json!({"unk_token": unk, "bos_token": bos, "eos_token": eos});
    for (name, value) in [
        ("tokenizer_config.json", settings),
        ("special_tokens_map.json", special),
    ] {
        let text = serde_json::to_string_pretty(&value).expect("a JSON value serialises");
        write_atomic(&out.join(name), text.as_bytes())?;
    }
    Ok(())
}

/// Trains a byte-fallback BPE of at most `vocab_size` tokens on `files` (UTF-8 text) and writes
/// tokenizer.json, tokenizer_config.json and special_tokens_map.json into `out`. Returns the
/// tokenizer as this crate loads it from `out`.
pub fn train_bpe_tokenizer(files: &[PathBuf], vocab_size: usize, out: &Path) -> Result<Tokenizer> {
    if vocab_size <= RESERVED_TOKENS {
        return Err(Error::option(
            "vocab_size",
            format!("must exceed the {RESERVED_TOKENS} special and byte tokens, got {vocab_size}"),
        ));
    }
    let lines = read_lines(files)?;
    let model = BPE::builder()
        .byte_fallback(true)
        .unk_token(SPECIAL_TOKENS[0].into())
        .build()
        .map_err(|e| bpe_error(out, "building the BPE model failed", e))?;
    let mut bpe = Bpe::new(model);
    bpe.with_pre_tokenizer(Some(pre_tokenizer()))
        .with_decoder(Some(decoder()));
    bpe.train(&mut trainer(vocab_size), lines.iter())
        .map_err(|e| bpe_error(out, "training the BPE failed", e))?;
    // The trainer registers every reserved token as "special", which decoding would drop: only
    // <unk>, <s> and </s> are; the byte tokens are ordinary vocabulary that byte fallback uses.
    bpe.with_added_vocabulary(AddedVocabulary::new());
    bpe.add_special_tokens(SPECIAL_TOKENS.map(|t| AddedToken::from(t, true)))
        .map_err(|e| bpe_error(out, "registering the special tokens failed", e))?;
    fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let file = out.join(TOKENIZER_FILE);
    let text = bpe
        .to_string(true)
        .map_err(|e| bpe_error(&file, "serialising the tokenizer failed", e))?;
    write_atomic(&file, text.as_bytes())?;
    write_settings(out)?;
    Tokenizer::from_model_dir(out)
}
