//! Perplexity as LongLoRA's evaluation computes it: windows of `context + 1` tokens every
//! `stride` tokens (a window that would run past the end is dropped), each scoring all `context`
//! next-token predictions; perplexity = exp(mean of the windows' mean losses).

use serde::Serialize;

use crate::backend::Engine;
use crate::error::{Error, Result};
use crate::ops::attention::AttnMask;

/// The result of a perplexity evaluation, printed as one JSON object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Perplexity {
    pub windows: usize,
    pub tokens_scored: usize,
    pub mean_loss: f64,
    pub perplexity: f64,
}

/// Start offsets of the evaluation windows over `len` tokens.
pub fn window_starts(len: usize, context: usize, stride: usize) -> Vec<usize> {
    (0..len)
        .step_by(stride.max(1))
        .take_while(|&s| s + context < len)
        .collect()
}

/// Evaluates the model of `engine` over the windows of a token source; `window(start, len)`
/// returns those tokens. `on_window(done, total)` reports progress.
pub fn perplexity(
    engine: &mut Engine,
    len: usize,
    mut window: impl FnMut(usize, usize) -> Result<Vec<u32>>,
    context: usize,
    stride: usize,
    mask: &AttnMask,
    mut on_window: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    for (option, value) in [("context", context), ("stride", stride)] {
        if value == 0 {
            return Err(Error::option(option, "must be at least 1"));
        }
    }
    let starts = window_starts(len, context, stride);
    if starts.is_empty() {
        return Err(Error::Data(format!(
            "{len} tokens are fewer than one evaluation window of context {context} + 1"
        )));
    }
    let mut sum = 0.0;
    for (i, &s) in starts.iter().enumerate() {
        let w = window(s, context + 1)?;
        engine.forward(&w[..context], 1, context, mask)?;
        let targets: Vec<i32> = w[1..].iter().map(|&t| t as i32).collect();
        sum += engine.loss(&targets)?.mean();
        on_window(i + 1, starts.len());
    }
    let mean_loss = sum / starts.len() as f64;
    Ok(Perplexity {
        windows: starts.len(),
        tokens_scored: starts.len() * context,
        mean_loss,
        perplexity: mean_loss.exp(),
    })
}
