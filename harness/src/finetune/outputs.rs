//! A finished fine-tune's outputs: the adapter in PEFT's format, the trained embeddings and norms,
//! the merged model, `run.json`, and a summary on stdout.

use std::time::Instant;

use longlora::hf::peft::{save_adapter, save_trainable_params, TRAINABLE_PARAMS_FILE};
use longlora::hf::save_model;
use longlora::model::lora::merge_lora;
use longlora::train::{Extension, HeldoutLosses, RunCommand, RunRecord, StepReport, RUN_FILE};
use longlora::Result;

use super::setup::Run;
use super::FinetuneArgs;
use crate::training_loop::run_record;

/// Writes every output of `run` and prints the summary.
pub fn write(
    args: &FinetuneArgs,
    run: &mut Run,
    reports: &[StepReport],
    loss_after: Option<f64>,
    started: Instant,
) -> Result<()> {
    write_model_files(args, run)?;
    let record = record(args, run, reports, loss_after, started);
    record.save(&run.dir.path.join(RUN_FILE))?;
    print_summary(args, run, &record);
    Ok(())
}

/// The adapter (none for a full fine-tune, whose trained tensors are all in trainable_params),
/// the trained embeddings and norms, and the merged model with the tokenizer.
fn write_model_files(args: &FinetuneArgs, run: &mut Run) -> Result<()> {
    let out = &run.dir.path;
    let model = run.trainer.model()?;
    let weights = &model.weights;
    if args.trainable.uses_lora() {
        save_adapter(out, weights, &run.source)?;
    }
    save_trainable_params(&out.join(TRAINABLE_PARAMS_FILE), weights, args.trainable)?;
    let mut merged = weights.clone();
    merge_lora(&mut merged);
    let mut merged_cfg = model.config.clone();
    merged_cfg.max_position_embeddings = run.plan.context;
    save_model(&out.join("model"), &merged_cfg, &merged)?;
    if let Some(tokenizer) = &run.tokenizer {
        tokenizer.save(&out.join("model"))?;
    }
    Ok(())
}

fn record(
    args: &FinetuneArgs,
    run: &Run,
    reports: &[StepReport],
    loss_after: Option<f64>,
    started: Instant,
) -> RunRecord {
    RunRecord {
        base_model: Some(run.source.clone()),
        tokenizer: run.tokenizer.as_ref().map(|t| t.source()),
        data: args.data.as_ref().map(|p| p.display().to_string()),
        extension: Some(Extension {
            context: run.plan.context,
            rope_factor: run.plan.factor,
        }),
        original_context: Some(run.plan.original),
        heldout: HeldoutLosses {
            heldout_loss_after: loss_after,
            ..run.losses
        },
        ..run_record(
            RunCommand::Finetune,
            &run.trainer,
            &run.checkpointing,
            reports,
            started,
        )
    }
}

fn print_summary(args: &FinetuneArgs, run: &Run, record: &RunRecord) {
    println!(
        "LongLoRA fine-tune finished in {:.1} s",
        record.total_time_s
    );
    let (original, context) = (run.plan.original, run.plan.context);
    let h = &record.heldout;
    if let (Some(base), Some(b), Some(a)) = (
        h.heldout_loss_base_at_original_context,
        h.heldout_loss_before,
        h.heldout_loss_after,
    ) {
        println!(
            "  held-out loss (nats/token) of the base model at its context {original}: {base:.4}"
        );
        println!(
            "  held-out loss at context {context}: {b:.4} before -> {a:.4} after the fine-tune"
        );
    }
    println!(
        "  training loss: {:.4} first step -> {:.4} last step; {:.0} tokens/s",
        record.first_step_loss, record.last_step_loss, record.tokens_per_s
    );
    if let Some(mib) = record.peak_memory_mib {
        println!("  peak memory: {mib:.0} MiB");
    }
    println!(
        "  wrote {}: {}trainable_params.safetensors, model/ (merged){}",
        run.dir.path.display(),
        if args.trainable.uses_lora() {
            "adapter_model.safetensors, adapter_config.json, "
        } else {
            ""
        },
        if args.builtin_model() {
            ", base-model/"
        } else {
            ""
        }
    );
}
