//! The built-in synthetic corpus: prose with facts stated early and recalled much later, so that
//! predicting a recall needs long-range attention.

use crate::data::vocab::join_documents;
use crate::rng::Rng;

const ADJECTIVES: &[&str] = &[
    "red", "quiet", "old", "bright", "small", "heavy", "green", "cold", "swift", "gentle", "dark",
    "tall",
];
const NOUNS: &[&str] = &[
    "river", "stone", "garden", "lamp", "horse", "tower", "letter", "field", "window", "bridge",
    "forest", "ship",
];
const VERBS: &[&str] = &[
    "rests", "waits", "turns", "falls", "shines", "moves", "stands", "sleeps",
];
const PREPOSITIONS: &[&str] = &["near", "under", "beyond", "beside", "above", "behind"];

fn pick<'a>(rng: &mut Rng, words: &[&'a str]) -> &'a str {
    words[rng.below(words.len())]
}

fn random_key(rng: &mut Rng) -> String {
    const CONSONANTS: &[u8] = b"bdfgklmnprstvz";
    const VOWELS: &[u8] = b"aeiou";
    (0..4)
        .map(|i| {
            let set = if i % 2 == 0 { CONSONANTS } else { VOWELS };
            set[rng.below(set.len())] as char
        })
        .collect()
}

/// One synthetic document of about `len` bytes with long-range structure: facts
/// ("Remember: bado is 4821.") are stated throughout filler prose, and recalls ("Recall: bado is
/// 4821.") of any earlier fact appear later, so the digits of a recall are predictable only by
/// attending back to where the fact was stated, possibly thousands of tokens earlier.
pub fn synthetic_document(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut text = String::with_capacity(len + 64);
    let mut facts: Vec<(String, u32)> = Vec::new();
    while text.len() < len {
        let r = rng.uniform();
        if facts.is_empty() || r < 0.12 {
            let fact = (random_key(rng), rng.below(10_000) as u32);
            text.push_str(&format!("Remember: {} is {:04}.\n", fact.0, fact.1));
            facts.push(fact);
        } else if r < 0.3 {
            let (key, value) = &facts[rng.below(facts.len())];
            text.push_str(&format!("Recall: {key} is {value:04}.\n"));
        } else {
            text.push_str(&format!(
                "The {} {} {} {} the {}. ",
                pick(rng, ADJECTIVES),
                pick(rng, NOUNS),
                pick(rng, VERBS),
                pick(rng, PREPOSITIONS),
                pick(rng, NOUNS)
            ));
        }
    }
    text.into_bytes()
}

/// A synthetic corpus of `n_docs` documents of about `doc_len` bytes, as one token stream.
pub fn synthetic_corpus(seed: u64, n_docs: usize, doc_len: usize) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let docs: Vec<Vec<u8>> = (0..n_docs)
        .map(|_| synthetic_document(&mut rng, doc_len))
        .collect();
    join_documents(docs.iter().map(|d| d.as_slice()))
}
