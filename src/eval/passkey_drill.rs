//! Passkey drills: training documents made of many short passkey exercises, each with its own key.
//! The test's own documents hold one key and its one answer in hundreds of tokens of filler, too
//! few copies for a small model to start copying; a drill has one every few dozen tokens.

use crate::error::{Error, Result};
use crate::eval::passkey::{filler, information_line, MAX_PASSKEY, QUESTION};
use crate::rng::Rng;

/// The most filler characters an exercise puts between its key and its question.
pub const MAX_DRILL_FILLER: usize = 40;

/// The random stream of drill keys and filler lengths: neither the test's nor the test-style
/// corpus's.
const DRILL_STREAM: u64 = 0x6472_696c;

/// One exercise: the key's line, `filler_chars` of filler, the test's question and the answer.
pub fn drill_exercise(passkey: u32, filler_chars: usize) -> String {
    format!(
        "{}\n{}\n{QUESTION} {passkey}.",
        information_line(passkey),
        filler(filler_chars)
    )
}

/// The drills of `passkey-corpus --style drill`: for each length, `count` documents with random
/// keys and filler lengths from `seed`.
pub struct Drills {
    rng: Rng,
}

impl Drills {
    pub fn new(seed: u64) -> Drills {
        Drills {
            rng: Rng::derive(seed, DRILL_STREAM),
        }
    }

    /// The next document: exercises joined by newlines while the text stays within `length`
    /// tokens of `encode`, and the keys it asks for, in order.
    pub fn document(
        &mut self,
        encode: &dyn Fn(&str) -> Result<Vec<u32>>,
        length: usize,
    ) -> Result<(String, Vec<u32>)> {
        let mut text = String::new();
        let mut keys = Vec::new();
        loop {
            let passkey = 1 + self.rng.below(MAX_PASSKEY as usize) as u32;
            let exercise = drill_exercise(passkey, self.rng.below(MAX_DRILL_FILLER + 1));
            let longer = match text.is_empty() {
                true => exercise,
                false => format!("{text}\n{exercise}"),
            };
            if encode(&longer)?.len() > length {
                break;
            }
            text = longer;
            keys.push(passkey);
        }
        if keys.is_empty() {
            let longest = drill_exercise(MAX_PASSKEY, MAX_DRILL_FILLER);
            return Err(Error::option(
                "lengths",
                format!(
                    "{length} tokens cannot hold a passkey drill exercise, which needs up to {} \
                     tokens",
                    encode(&longest)?.len()
                ),
            ));
        }
        Ok((text, keys))
    }
}
