//! Evaluation: perplexity over sliding windows, and passkey retrieval.

pub mod passkey;
pub mod passkey_drill;
mod perplexity;

pub use perplexity::{perplexity, window_starts, Perplexity};
