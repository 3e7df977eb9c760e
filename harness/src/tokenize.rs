//! `harness tokenize`: text documents to a token file in LongLoRA's evaluation format.

use std::path::PathBuf;

use clap::Args;
use longlora::data::text::text_files;
use longlora::data::token_file::{side_file, TokenFileWriter};
use longlora::Result;

use crate::progress::bar;
use crate::training_data::TokenizerSource;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Text to tokenize: a .txt file, or a directory of .txt files (searched recursively, in path
    /// order), each file one document.
    #[arg(long)]
    data: PathBuf,
    /// Whose tokenizer: a model directory (its tokenizer.json, or the byte-level tokenizer when
    /// config.json's vocab_size is 258) or `builtin` (byte level).
    #[arg(long)]
    model: TokenizerSource,
    /// Output token file: little-endian u16 ids, or u32 when the vocabulary exceeds 65536, with
    /// documents joined by EOS. The side file OUT.json records dtype, vocabulary and counts.
    #[arg(long)]
    out: PathBuf,
}

/// Tokenizes every document and writes the token file and its side file.
pub fn run(args: TokenizeArgs) -> Result<()> {
    let tokenizer = args.model.load()?;
    let files = text_files(&args.data)?;
    let mut writer = TokenFileWriter::create(&args.out, tokenizer.vocab_size())?;
    let pb = bar(files.len(), "tokenize");
    for f in &files {
        let mut ids = tokenizer.encode_file(f)?;
        ids.push(tokenizer.eos_id());
        writer.push_document(&ids)?;
        pb.inc(1);
    }
    pb.finish();
    let meta = writer.finish(&tokenizer.source())?;
    println!(
        "wrote {} ({} tokens as {}, {} documents, vocabulary {}) and {}",
        args.out.display(),
        meta.tokens,
        meta.dtype,
        meta.documents,
        meta.vocab_size,
        side_file(&args.out).display()
    );
    Ok(())
}
