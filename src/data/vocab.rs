//! The byte-level vocabulary: one token per byte, then BOS and EOS; documents joined by EOS.

/// Byte-level vocabulary: the 256 byte values, then BOS and EOS.
pub const BYTE_VOCAB: usize = 258;
/// Beginning-of-sequence token of the byte vocabulary.
pub const BYTE_BOS: u32 = 256;
/// End-of-sequence token of the byte vocabulary; separates documents.
pub const BYTE_EOS: u32 = 257;

/// One token per byte.
pub fn byte_tokens(text: &[u8]) -> Vec<u32> {
    text.iter().map(|&b| b as u32).collect()
}

/// Joins documents into one token stream, each followed by EOS.
pub fn join_documents<'a>(docs: impl IntoIterator<Item = &'a [u8]>) -> Vec<u32> {
    let mut out = Vec::new();
    for d in docs {
        out.extend(d.iter().map(|&b| b as u32));
        out.push(BYTE_EOS);
    }
    out
}
