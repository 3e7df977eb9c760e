//! LongLoRA's passkey retrieval test (from Landmark Attention): a five-digit-or-shorter key hidden at
//! some depth inside repeated filler sentences, then asked for. Greedy decoding answers correctly
//! exactly when, in one teacher-forced forward over the prompt followed by the answer, every answer
//! position's argmax is the answer's next token, so no KV cache or sampling loop is needed.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ops::cross_entropy::cross_entropy_forward;
use crate::rng::Rng;

/// The instruction that opens every prompt.
pub const TASK: &str = "There is an important info hidden inside a lot of irrelevant text. \
Find it and memorize them. I will quiz you about the important information there.";
/// The filler sentences, repeated (joined by spaces) and cut to length.
pub const FILLER: &str =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
/// The question that closes every prompt; the answer follows it after a space.
pub const QUESTION: &str = "What is the pass key? The pass key is";
/// Pass keys are drawn uniformly from 1..=MAX_PASSKEY.
pub const MAX_PASSKEY: u32 = 50_000;

/// The line that carries the key.
pub fn information_line(passkey: u32) -> String {
    format!("The pass key is {passkey}. Remember it. {passkey} is the pass key.")
}

/// One test case: the tokens of the prompt followed by the answer's tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct PasskeyPrompt {
    pub passkey: u32,
    /// Where the key sits in the filler, 0 = at its start, 1 = at its end.
    pub depth: f64,
    pub tokens: Vec<u32>,
    /// Tokens before the answer.
    pub prompt_len: usize,
}

impl PasskeyPrompt {
    /// The answer's tokens (the key, with the space before it).
    pub fn answer(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }
}

pub(crate) fn filler(chars: usize) -> String {
    let mut text = String::with_capacity(chars + FILLER.len());
    while text.len() < chars {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(FILLER);
    }
    // FILLER is ASCII, so every byte index is a character boundary.
    text.truncate(chars);
    text
}

fn prompt_text(filler_chars: usize, depth: f64, passkey: u32) -> String {
    let before = (depth * filler_chars as f64).round() as usize;
    [
        TASK,
        &filler(before),
        &information_line(passkey),
        &filler(filler_chars - before),
        QUESTION,
    ]
    .join("\n")
}

/// Tokenizes the prompt with `filler_chars` characters of filler, and the prompt with its answer.
fn encode_case(
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
    filler_chars: usize,
    depth: f64,
    passkey: u32,
) -> Result<PasskeyPrompt> {
    let prompt = prompt_text(filler_chars, depth, passkey);
    let prompt_tokens = encode(&prompt)?;
    let full = encode(&format!("{prompt} {passkey}"))?;
    // A subword tokenizer may merge across the prompt/answer boundary; score the answer as the
    // tokenizer splits the whole text whenever the prompt's own tokens are a prefix of it.
    let (tokens, prompt_len) =
        if full.starts_with(&prompt_tokens) && full.len() > prompt_tokens.len() {
            (full, prompt_tokens.len())
        } else {
            let mut tokens = prompt_tokens;
            let prompt_len = tokens.len();
            tokens.extend(encode(&format!(" {passkey}"))?);
            (tokens, prompt_len)
        };
    Ok(PasskeyPrompt {
        passkey,
        depth,
        tokens,
        prompt_len,
    })
}

/// The longest prompt (prompt + answer) of at most `length` tokens with the key at `depth`.
/// `encode` turns text into the model's tokens (including any BOS the model expects).
pub fn build_prompt(
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
    length: usize,
    passkey: u32,
    depth: f64,
) -> Result<PasskeyPrompt> {
    fit_prompt(encode, length, passkey, depth).map(|(_, prompt)| prompt)
}

/// [`build_prompt`] with the number of filler characters that fills the length.
fn fit_prompt(
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
    length: usize,
    passkey: u32,
    depth: f64,
) -> Result<(usize, PasskeyPrompt)> {
    if !(0.0..=1.0).contains(&depth) {
        return Err(Error::option(
            "depth",
            format!("must lie in [0, 1], got {depth}"),
        ));
    }
    let shortest = encode_case(encode, 0, depth, passkey)?;
    if shortest.tokens.len() > length {
        return Err(Error::option(
            "lengths",
            format!(
                "{length} tokens cannot hold the passkey prompt, which needs at least {} tokens",
                shortest.tokens.len()
            ),
        ));
    }
    // Token counts grow with the filler (no tokenizer packs more than a few characters per token
    // of this text, hence the upper bound); binary search for the most filler that fits.
    let (mut fits, mut too_long) = (0, 16 * length + FILLER.len());
    let mut best = shortest;
    while too_long - fits > 1 {
        let mid = (fits + too_long) / 2;
        let case = encode_case(encode, mid, depth, passkey)?;
        if case.tokens.len() <= length {
            fits = mid;
            best = case;
        } else {
            too_long = mid;
        }
    }
    Ok((fits, best))
}

/// A training document in the test's exact template: the prompt [`build_prompt`] makes for
/// `case` followed by its answer, so it encodes to that prompt's tokens (at most `case.length`).
/// `encode` is the tokenizer as training data goes through it (no BOS: documents are joined by
/// EOS). Mixed into pre-training or fine-tuning data, such documents teach the task.
pub fn passkey_document(
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
    case: &PasskeyCase,
) -> Result<String> {
    let (filler_chars, _) = fit_prompt(encode, case.length, case.passkey, case.depth)?;
    let prompt = prompt_text(filler_chars, case.depth, case.passkey);
    Ok(format!("{prompt} {}", case.passkey))
}

/// Whether greedy decoding after the prompt would produce the answer: `logits` are the
/// `[rows][vocab]` next-token logits of a forward over `prompt.tokens[..rows]`, with `rows` at least
/// `prompt.tokens.len() - 1`. The argmax takes the first of equal maxima; NaN never matches.
pub fn answered_correctly(logits: &[f32], vocab: usize, prompt: &PasskeyPrompt) -> bool {
    (prompt.prompt_len..prompt.tokens.len()).all(|pos| {
        let row = &logits[(pos - 1) * vocab..pos * vocab];
        argmax(row) == Some(prompt.tokens[pos] as usize)
    })
}

/// The answer's mean negative log-likelihood per token in nats, from the same logits as
/// [`answered_correctly`]: a graded view of retrieval that moves before accuracy does (a model that
/// ignores the key scores about ln 10 per digit). A NaN logit makes it NaN.
pub fn answer_nats(logits: &[f32], vocab: usize, prompt: &PasskeyPrompt) -> f64 {
    let rows = prompt.prompt_len - 1..prompt.tokens.len() - 1;
    let answer_logits: Vec<f64> = logits[rows.start * vocab..rows.end * vocab]
        .iter()
        .map(|&v| v as f64)
        .collect();
    let targets: Vec<i32> = prompt.answer().iter().map(|&t| t as i32).collect();
    let mut lse = vec![0.0; targets.len()];
    cross_entropy_forward(&mut lse, &answer_logits, &targets, vocab) / targets.len().max(1) as f64
}

fn argmax(row: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() {
            return None;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

/// Accuracy over some trials.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Accuracy {
    pub trials: usize,
    pub correct: usize,
    pub accuracy: f64,
}

impl Accuracy {
    fn new(results: &[bool]) -> Accuracy {
        let correct = results.iter().filter(|&&ok| ok).count();
        Accuracy {
            trials: results.len(),
            correct,
            accuracy: correct as f64 / results.len().max(1) as f64,
        }
    }
}

/// Accuracy at one depth.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DepthAccuracy {
    pub depth: f64,
    #[serde(flatten)]
    pub accuracy: Accuracy,
}

/// Accuracy at one prompt length.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LengthAccuracy {
    /// The requested length: every prompt has at most this many tokens.
    pub length: usize,
    /// The longest prompt actually built at this length.
    pub max_prompt_tokens: usize,
    #[serde(flatten)]
    pub accuracy: Accuracy,
    /// The answers' mean negative log-likelihood per token over the trials ([`answer_nats`]).
    pub answer_nats: f64,
    /// Per depth, when fixed depths were asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_depth: Vec<DepthAccuracy>,
}

/// What to run: `trials` keys per length and per depth; with no depths, each trial draws its depth
/// uniformly (LongLoRA's protocol).
#[derive(Clone, Debug)]
pub struct PasskeyPlan {
    pub lengths: Vec<usize>,
    pub trials: usize,
    pub depths: Vec<f64>,
    pub seed: u64,
}

/// One key hidden at one depth in a prompt or document of at most `length` tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PasskeyCase {
    pub length: usize,
    pub passkey: u32,
    pub depth: f64,
}

/// The random stream of the test's keys and depths (from its seed).
const TEST_STREAM: u64 = 0x7061_7373;
/// The random stream of training documents' keys and depths: another stream than the test's, so
/// that for any seeds a document repeats a test case only by chance.
const CORPUS_STREAM: u64 = 0x636f_7270;

/// A uniform key, then a uniform depth unless the depth is fixed.
fn draw_case(rng: &mut Rng, length: usize, depth: Option<f64>) -> PasskeyCase {
    let passkey = 1 + rng.below(MAX_PASSKEY as usize) as u32;
    let depth = depth.unwrap_or_else(|| rng.uniform());
    PasskeyCase {
        length,
        passkey,
        depth,
    }
}

/// The cases [`run_passkey`] tests, in its order: per length, per depth (one slot of random depths
/// when none are fixed), `trials` each.
pub fn test_cases(plan: &PasskeyPlan) -> Vec<PasskeyCase> {
    let mut rng = Rng::derive(plan.seed, TEST_STREAM);
    let depths: Vec<Option<f64>> = match plan.depths.is_empty() {
        true => vec![None],
        false => plan.depths.iter().copied().map(Some).collect(),
    };
    let mut cases = Vec::new();
    for &length in &plan.lengths {
        for &depth in &depths {
            cases.extend((0..plan.trials).map(|_| draw_case(&mut rng, length, depth)));
        }
    }
    cases
}

/// `count` training cases per length with uniform keys and depths, from the corpus's stream.
pub fn corpus_cases(lengths: &[usize], count: usize, seed: u64) -> Vec<PasskeyCase> {
    let mut rng = Rng::derive(seed, CORPUS_STREAM);
    lengths
        .iter()
        .flat_map(|&length| vec![length; count])
        .map(|length| draw_case(&mut rng, length, None))
        .collect()
}

/// Runs the plan. `logits_of(tokens)` runs the model over `tokens` and returns its `[len][vocab]`
/// logits; `on_trial(done, total)` reports progress.
pub fn run_passkey(
    plan: &PasskeyPlan,
    vocab: usize,
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
    logits_of: &mut dyn FnMut(&[u32]) -> Result<Vec<f32>>,
    on_trial: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LengthAccuracy>> {
    if plan.trials == 0 {
        return Err(Error::option("trials", "must be at least 1"));
    }
    if plan.lengths.is_empty() {
        return Err(Error::option("lengths", "give at least one length"));
    }
    let depth_count = plan.depths.len().max(1);
    let cases = test_cases(plan);
    let total = cases.len();
    let mut done = 0;
    let mut results = Vec::with_capacity(plan.lengths.len());
    for (&length, length_cases) in plan
        .lengths
        .iter()
        .zip(cases.chunks(depth_count * plan.trials))
    {
        let mut per_depth = vec![Vec::with_capacity(plan.trials); depth_count];
        let mut max_prompt_tokens = 0;
        let mut nats = 0.0;
        for (outcomes, depth_cases) in per_depth.iter_mut().zip(length_cases.chunks(plan.trials)) {
            for case in depth_cases {
                let prompt = build_prompt(encode, length, case.passkey, case.depth)?;
                max_prompt_tokens = max_prompt_tokens.max(prompt.tokens.len());
                let inputs = &prompt.tokens[..prompt.tokens.len() - 1];
                let logits = logits_of(inputs)?;
                outcomes.push(answered_correctly(&logits, vocab, &prompt));
                nats += answer_nats(&logits, vocab, &prompt);
                done += 1;
                on_trial(done, total);
            }
        }
        let all: Vec<bool> = per_depth.concat();
        let by_depth = plan
            .depths
            .iter()
            .zip(&per_depth)
            .map(|(&depth, outcomes)| DepthAccuracy {
                depth,
                accuracy: Accuracy::new(outcomes),
            })
            .collect();
        results.push(LengthAccuracy {
            length,
            max_prompt_tokens,
            accuracy: Accuracy::new(&all),
            answer_nats: nats / all.len() as f64,
            by_depth,
        });
    }
    Ok(results)
}
