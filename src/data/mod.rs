//! Data: the byte vocabulary, text files, the built-in synthetic corpus, tokenizers (and training
//! one), token files, SFT records, and the batches training reads.

pub mod batches;
pub mod bpe_training;
pub mod sft;
pub mod synthetic;
pub mod text;
pub mod token_file;
pub mod tokenizer;
pub mod vocab;

pub use batches::{Batch, BatchSource, WindowSampler};
pub use synthetic::synthetic_corpus;
pub use tokenizer::Tokenizer;
pub use vocab::{byte_tokens, join_documents, BYTE_BOS, BYTE_EOS, BYTE_VOCAB};
