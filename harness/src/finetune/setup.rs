//! A fine-tune up to its first step: the plan, the run directory, the base model and data, the
//! held-out loss before training, the adapters, and the trainer (at a checkpoint's step when the
//! run resumes).

use longlora::backend::{Compute, Engine};
use longlora::data::tokenizer::Tokenizer;
use longlora::data::BatchSource;
use longlora::eval::perplexity;
use longlora::hf::load_config;
use longlora::model::{Llama, LlamaConfig};
use longlora::ops::attention::AttnMask;
use longlora::rng::Rng;
use longlora::train::checkpoint::{RunCheckpoint, RunOptions};
use longlora::train::{HeldoutLosses, TrainConfig, Trainer};
use longlora::Result;
use serde_json::json;

use super::base::{load_base, Base, BASE_MODEL_DIR};
use super::plan::{plan, Plan};
use super::FinetuneArgs;
use crate::builtin;
use crate::device_arg::{self, Workload};
use crate::run_dir::{latest_checkpoint, no_checkpoint, RunDir};
use crate::train_args::RunShape;
use crate::training_loop::{start_run, Checkpointing};

/// A fine-tune ready for its steps.
pub struct Run {
    pub dir: RunDir,
    pub plan: Plan,
    pub tokenizer: Option<Tokenizer>,
    pub heldout: Option<Vec<u32>>,
    pub source: String,
    pub sampler: Box<dyn BatchSource>,
    pub trainer: Trainer,
    pub checkpointing: Checkpointing,
    pub losses: HeldoutLosses,
}

/// Validates the options, opens the run directory and prepares everything the steps need.
pub fn setup(args: &FinetuneArgs) -> Result<Run> {
    let base_config = match &args.model {
        Some(dir) => load_config(dir)?,
        None => builtin::config(),
    };
    let plan = plan(args, &base_config)?;
    let compute = open_device(args, &base_config)?;
    let lora_rank = if args.trainable.uses_lora() {
        args.lora_rank
    } else {
        0
    };
    let tokens = args.train.batch_size * plan.context;
    compute.check_memory(
        &base_config,
        args.trainable,
        lora_rank,
        tokens,
        args.recompute,
    )?;
    let dir = args.run.open("finetune")?;
    let resume = checkpoint_to_resume(args, &dir)?;
    let base = load_base(
        args,
        &dir.path,
        args.run.resume.is_some(),
        base_config.vocab_size,
    )?;
    let Base {
        model,
        tokenizer,
        train,
        heldout,
        source,
    } = base;
    let mut base_engine = Engine::new(compute, model, None, false)?;
    let base_loss = base_loss(
        args,
        &plan,
        heldout.as_deref(),
        resume.as_ref(),
        &mut base_engine,
    )?;
    let (compute, mut model) = base_engine.into_parts()?;
    extend(args, &plan, &mut model);
    let config = train_config(args, &plan);
    let options = run_options(args, &plan, train.fingerprint());
    let sampler = train.sampler(tokenizer.as_ref(), plan.context)?;
    let engine = Engine::new(compute, model, Some(args.trainable), args.recompute)?;
    let (trainer, checkpointing) =
        start_run(&args.run, dir.path.clone(), options, config, engine, resume)?;
    let mut run = Run {
        dir,
        plan,
        tokenizer,
        heldout,
        source,
        sampler,
        trainer,
        checkpointing,
        losses: HeldoutLosses {
            heldout_loss_base_at_original_context: base_loss,
            ..HeldoutLosses::default()
        },
    };
    run.describe(args);
    run.measure_before(args)?;
    Ok(run)
}

/// The backend for the extension, refusing (before any work) what the device cannot train.
fn open_device(args: &FinetuneArgs, base_config: &LlamaConfig) -> Result<Compute> {
    device_arg::open(
        args.device,
        &Workload {
            config: base_config,
            trainable: Some(args.trainable),
            lora_rank: if args.trainable.uses_lora() {
                args.lora_rank
            } else {
                0
            },
        },
    )
}

/// The fine-tune's checkpoint `--resume` names. A built-in run stopped during its pre-training
/// has none yet, only the pre-training's own in OUTPUT/base-model.
fn checkpoint_to_resume(args: &FinetuneArgs, dir: &RunDir) -> Result<Option<RunCheckpoint>> {
    let Some(from) = &args.run.resume else {
        return Ok(None);
    };
    let found = latest_checkpoint(from)?;
    if found.is_none() && !(args.builtin_model() && dir.path.join(BASE_MODEL_DIR).is_dir()) {
        return Err(no_checkpoint(from));
    }
    Ok(found)
}

/// The base model's held-out loss at its own context (recorded by a resumed run).
fn base_loss(
    args: &FinetuneArgs,
    plan: &Plan,
    heldout: Option<&[u32]>,
    resume: Option<&RunCheckpoint>,
    engine: &mut Engine,
) -> Result<Option<f64>> {
    let Some(tokens) = heldout else {
        return Ok(None);
    };
    if let Some(ck) = resume {
        return Ok(ck.notes["heldout_loss_base_at_original_context"].as_f64());
    }
    let windows = args.eval_windows * plan.context / plan.original;
    heldout_loss(engine, tokens, plan.original, windows).map(Some)
}

/// Interpolates RoPE and attaches the adapters.
fn extend(args: &FinetuneArgs, plan: &Plan, model: &mut Llama<f32>) {
    model.config.rope_scaling_factor = plan.factor;
    if args.trainable.uses_lora() {
        model.weights.add_lora(
            args.lora_rank,
            args.lora_alpha,
            &mut Rng::derive(args.train.seed, 2),
        );
    }
}

fn train_config(args: &FinetuneArgs, plan: &Plan) -> TrainConfig {
    let builtin_model = args.builtin_model();
    args.train.config(RunShape {
        seq_len: plan.context,
        attn: args.attn,
        group_ratio: args.group_ratio,
        trainable: args.trainable,
        default_lr: if builtin_model { 1e-3 } else { 2e-5 },
        default_warmup_steps: if builtin_model { 5 } else { 20 },
    })
}

/// The options that define the run besides its training configuration: a resume must repeat
/// them.
fn run_options(args: &FinetuneArgs, plan: &Plan, data_size: usize) -> RunOptions {
    vec![
        ("model", json!(args.model)),
        ("data", json!({"path": args.data, "size": data_size})),
        (
            "pretrain_steps",
            json!(args.builtin_model().then_some(args.pretrain_steps)),
        ),
        ("rope_factor", json!(plan.factor)),
        ("lora_rank", json!(args.lora_rank)),
        ("lora_alpha", json!(args.lora_alpha)),
    ]
}

impl Run {
    fn describe(&self, args: &FinetuneArgs) {
        let Plan {
            original,
            context,
            factor,
        } = self.plan;
        eprintln!(
            "extending {} from context {original} to {context}: rope factor {factor}, attention \
             {}, group ratio {}, trainable {} ({} parameters)",
            self.source,
            args.attn,
            args.group_ratio,
            args.trainable,
            self.trainer.trained_params()
        );
    }

    /// The extended model's held-out loss before training (recorded by a resumed run), and the
    /// notes its checkpoints keep.
    fn measure_before(&mut self, args: &FinetuneArgs) -> Result<()> {
        self.losses.heldout_loss_before = if self.checkpointing.resumed_from.is_some() {
            self.checkpointing.notes["heldout_loss_before"].as_f64()
        } else {
            self.heldout_loss(args, self.plan.context)?
        };
        self.checkpointing.notes = json!({
            "heldout_loss_base_at_original_context":
                self.losses.heldout_loss_base_at_original_context,
            "heldout_loss_before": self.losses.heldout_loss_before,
        });
        Ok(())
    }

    /// The model's held-out loss at `context` on the trainer's engine; `None` without held-out
    /// data.
    pub fn heldout_loss(&mut self, args: &FinetuneArgs, context: usize) -> Result<Option<f64>> {
        let Some(tokens) = &self.heldout else {
            return Ok(None);
        };
        let engine = self.trainer.engine();
        heldout_loss(engine, tokens, context, args.eval_windows).map(Some)
    }
}

/// Mean loss over the first `windows` held-out windows of `context + 1` tokens (full attention).
fn heldout_loss(
    engine: &mut Engine,
    tokens: &[u32],
    context: usize,
    windows: usize,
) -> Result<f64> {
    let usable = tokens.len().min(windows * context + 1);
    let ppl = perplexity(
        engine,
        usable,
        |s, n| Ok(tokens[s..s + n].to_vec()),
        context,
        context,
        &AttnMask::dense(),
        |_, _| {},
    )?;
    Ok(ppl.mean_loss)
}
