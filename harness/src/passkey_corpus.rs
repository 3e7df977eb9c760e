//! `harness passkey-corpus`: training documents in the passkey test's exact template (task line,
//! filler, the key at a random depth, filler, question, answer), one .txt per document, to mix
//! into `pretrain` or `finetune` data so a small model can learn the task.

use std::fs;
use std::path::PathBuf;

use clap::Args;
use longlora::eval::passkey::{corpus_cases, passkey_document};
use longlora::fs::write_atomic;
use longlora::{Error, Result};
use serde_json::json;

use crate::progress::bar;
use crate::training_data::TokenizerSource;

/// The record of what was written, next to the documents (not a .txt, so training skips it).
const MANIFEST: &str = "passkey-corpus.json";

#[derive(Args, Debug)]
pub struct PasskeyCorpusArgs {
    /// Directory to write the documents (passkey-LENGTH-NNNNN.txt) and passkey-corpus.json into.
    #[arg(long)]
    out: PathBuf,
    /// Documents per length.
    #[arg(long)]
    count: usize,
    /// Document lengths in tokens of --tokenizer, comma-separated; each document fills its length
    /// as closely as the tokenizer allows without exceeding it.
    #[arg(long, value_delimiter = ',', required = true)]
    lengths: Vec<usize>,
    /// Whose tokens the lengths count: a directory with tokenizer.json (or a byte-level model
    /// directory) or `builtin` (byte level).
    #[arg(long, default_value = "builtin")]
    tokenizer: TokenizerSource,
    /// Seed of the keys and depths. They come from another random stream than `harness passkey`'s,
    /// so the same seed does not repeat the test's cases.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Write into a directory that already has files (documents of the same names are replaced).
    #[arg(long)]
    overwrite: bool,
}

/// Writes the documents and the manifest.
pub fn run(args: PasskeyCorpusArgs) -> Result<()> {
    if args.count == 0 {
        return Err(Error::option("count", "write at least one document"));
    }
    let not_empty = fs::read_dir(&args.out).is_ok_and(|mut d| d.next().is_some());
    if not_empty && !args.overwrite {
        return Err(Error::option(
            "out",
            format!(
                "{} is not empty; pass --overwrite to write into it",
                args.out.display()
            ),
        ));
    }
    fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let tokenizer = args.tokenizer.load()?;
    let encode = |text: &str| tokenizer.encode(text);
    let cases = corpus_cases(&args.lengths, args.count, args.seed);
    let pb = bar(cases.len(), "passkey-corpus");
    let mut records = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        let text = passkey_document(&encode, case)?;
        let name = format!("passkey-{}-{:05}.txt", case.length, i % args.count);
        write_atomic(&args.out.join(&name), text.as_bytes())?;
        records.push(
            json!({"file": name, "length": case.length, "passkey": case.passkey,
                            "depth": case.depth}),
        );
        pb.inc(1);
    }
    pb.finish_and_clear();
    let manifest = json!({
        "seed": args.seed,
        "count": args.count,
        "lengths": args.lengths,
        "tokenizer": tokenizer.source(),
        "documents": records,
    });
    let text = serde_json::to_string_pretty(&manifest).expect("a JSON value serialises");
    write_atomic(&args.out.join(MANIFEST), text.as_bytes())?;
    println!(
        "wrote {} passkey documents ({} per length, lengths {:?} in tokens of {}) and {} to {}",
        cases.len(),
        args.count,
        args.lengths,
        tokenizer.source(),
        MANIFEST,
        args.out.display()
    );
    Ok(())
}
