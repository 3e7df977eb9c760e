//! `harness passkey-corpus`: training documents in the passkey test's exact template (task line,
//! filler, the key at a random depth, filler, question, answer), or drills of many short
//! exercises, one .txt per document, to mix into `pretrain` or `finetune` data so a small model
//! can learn the task.

use std::fs;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use longlora::eval::passkey::{corpus_cases, passkey_document};
use longlora::eval::passkey_drill::Drills;
use longlora::fs::write_atomic;
use longlora::{Error, Result};
use serde_json::json;

use crate::progress::bar;
use crate::training_data::TokenizerSource;

/// The record of what was written, next to the documents (not a .txt, so training skips it).
const MANIFEST: &str = "passkey-corpus.json";

/// What the documents look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Style {
    /// The test's prompt and answer: one key at a random depth in filler.
    Test,
    /// Short exercises back to back, each made of its key's line, 0–40 characters of filler, the
    /// question and the answer: a copy every few dozen tokens, which a small model needs before
    /// it retrieves at all.
    Drill,
}

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
    /// test: the test's own prompt and answer; drill: short exercises (file names drill-*).
    #[arg(long, value_enum, default_value_t = Style::Test)]
    style: Style,
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
    let pb = bar(args.lengths.len() * args.count, "passkey-corpus");
    let mut records = Vec::with_capacity(args.lengths.len() * args.count);
    let mut write = |name: String, text: String, mut record: serde_json::Value| {
        write_atomic(&args.out.join(&name), text.as_bytes())?;
        record["file"] = name.into();
        records.push(record);
        pb.inc(1);
        Ok::<_, Error>(())
    };
    match args.style {
        Style::Test => {
            let cases = corpus_cases(&args.lengths, args.count, args.seed);
            for (i, case) in cases.iter().enumerate() {
                let text = passkey_document(&encode, case)?;
                let name = format!("passkey-{}-{:05}.txt", case.length, i % args.count);
                let record =
                    json!({"length": case.length, "passkey": case.passkey, "depth": case.depth});
                write(name, text, record)?;
            }
        }
        Style::Drill => {
            let mut drills = Drills::new(args.seed);
            for &length in &args.lengths {
                for i in 0..args.count {
                    let (text, passkeys) = drills.document(&encode, length)?;
                    let name = format!("drill-{length}-{i:05}.txt");
                    write(name, text, json!({"length": length, "passkeys": passkeys}))?;
                }
            }
        }
    }
    pb.finish_and_clear();
    let manifest = json!({
        "style": format!("{:?}", args.style).to_lowercase(),
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
        args.lengths.len() * args.count,
        args.count,
        args.lengths,
        tokenizer.source(),
        MANIFEST,
        args.out.display()
    );
    Ok(())
}
