//! What a fine-tune starts from: its tokenizer (none for pre-tokenized data on a model directory
//! without one), its training and held-out data, and the base model: a directory's, or the
//! built-in one, pre-trained by the run itself in OUTPUT/base-model with checkpoints of its own,
//! so that a signal during pre-training saves and a resume continues it.

use std::fs;
use std::path::Path;

use longlora::backend::{Compute, Engine};
use longlora::data::tokenizer::{Tokenizer, TOKENIZER_FILE};
use longlora::hf::{load_model, save_model};
use longlora::model::Llama;
use longlora::train::checkpoint::remove_checkpoints;
use longlora::{Error, Result};
use serde_json::json;

use super::FinetuneArgs;
use crate::builtin;
use crate::run_dir::latest_checkpoint;
use crate::training_data::{is_token_file, load_tokens, load_train_data, TrainData};
use crate::training_loop::{run_steps, start_run};

/// The built-in base model's directory inside the run's output.
pub const BASE_MODEL_DIR: &str = "base-model";

pub struct Base {
    pub model: Llama<f32>,
    pub tokenizer: Option<Tokenizer>,
    pub train: TrainData,
    pub heldout: Option<Vec<u32>>,
    /// Where the base model came from, for the record.
    pub source: String,
}

/// The tokenizer the data needs: none when it is all token files and the model directory has no
/// tokenizer (its ids are checked against the model's vocabulary instead).
fn tokenizer(args: &FinetuneArgs) -> Result<Option<Tokenizer>> {
    let Some(dir) = &args.model else {
        return Ok(Some(Tokenizer::builtin()));
    };
    let token_files_only = args.data.as_deref().is_some_and(is_token_file)
        && args.eval_data.as_deref().is_none_or(is_token_file);
    match Tokenizer::from_model_dir(dir) {
        Err(_) if token_files_only && !dir.join(TOKENIZER_FILE).exists() => Ok(None),
        found => found.map(Some),
    }
}

/// The training data and the held-out tokens.
fn data(
    args: &FinetuneArgs,
    tokenizer: Option<&Tokenizer>,
    vocab: usize,
) -> Result<(TrainData, Option<Vec<u32>>)> {
    match (&args.data, &args.model) {
        (Some(p), _) => Ok((
            load_train_data(p, tokenizer, vocab)?,
            args.eval_data
                .as_deref()
                .map(|p| load_tokens(p, tokenizer, vocab))
                .transpose()?,
        )),
        (None, None) => Ok((
            TrainData::Tokens(builtin::train_corpus(args.train.seed)),
            Some(builtin::heldout_corpus(args.train.seed)),
        )),
        (None, Some(_)) => Err(Error::option(
            "data",
            "a --model needs --data: the built-in corpus is byte-level and fits only the built-in \
             model",
        )),
    }
}

/// Loads the data, then the base model (pre-training the built-in one, the slow part, last).
/// `resuming` continues the built-in model's pre-training, or takes its result, from `run_dir`.
pub fn load_base(
    args: &FinetuneArgs,
    run_dir: &Path,
    resuming: bool,
    vocab: usize,
) -> Result<Base> {
    let tokenizer = tokenizer(args)?;
    let (train, heldout) = data(args, tokenizer.as_ref(), vocab)?;
    let (model, source) = match &args.model {
        Some(dir) => {
            let (cfg, weights) = load_model(dir)?;
            (Llama::new(cfg, weights)?, dir.display().to_string())
        }
        None => (
            builtin_base(args, run_dir, resuming)?,
            "built-in (pre-trained in this run)".to_string(),
        ),
    };
    Ok(Base {
        model,
        tokenizer,
        train,
        heldout,
        source,
    })
}

/// The built-in base model in the run's BASE_MODEL_DIR: read back when a resumed run finished it,
/// else pre-trained (from its newest checkpoint when resuming) and saved there. An interruption
/// is resumed through the fine-tune's own directory.
fn builtin_base(args: &FinetuneArgs, run_dir: &Path, resuming: bool) -> Result<Llama<f32>> {
    let dir = &run_dir.join(BASE_MODEL_DIR);
    if resuming {
        if let Ok((cfg, weights)) = load_model(dir) {
            return Llama::new(cfg, weights);
        }
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let resume = if resuming && dir.is_dir() {
        latest_checkpoint(dir)?
    } else {
        None
    };
    let builtin::Pretraining {
        model,
        sampler,
        config,
    } = builtin::pretraining(args.train.seed, args.pretrain_steps)?;
    let options = vec![("pretrain_steps", json!(args.pretrain_steps))];
    let engine = Engine::new(Compute::Cpu, model, Some(config.trainable), false)?;
    let (mut trainer, checkpointing) = start_run(
        &args.run,
        dir.to_path_buf(),
        options,
        config,
        engine,
        resume,
    )?;
    run_steps(&mut trainer, &sampler, &checkpointing, "pretrain")
        .map_err(|e| resumed_through(e, run_dir))?;
    let model = trainer.into_model()?;
    save_model(dir, &model.config, &model.weights)?;
    Tokenizer::builtin().save(dir)?;
    // Its checkpoints served only to finish it.
    remove_checkpoints(dir, None)?;
    Ok(model)
}

/// An interruption of the pre-training resumes through the fine-tune's directory, `run_dir`.
fn resumed_through(e: Error, run_dir: &Path) -> Error {
    match e {
        Error::Interrupted {
            signal,
            step,
            checkpoint,
            ..
        } => Error::Interrupted {
            signal,
            step,
            checkpoint,
            run_dir: run_dir.to_path_buf(),
        },
        e => e,
    }
}
