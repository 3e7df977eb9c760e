//! Evaluation: perplexity over sliding windows, and passkey retrieval.

pub mod passkey;
mod perplexity;

pub use perplexity::{perplexity, window_starts, Perplexity};
