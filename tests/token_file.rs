//! Token files: u16 or u32 little-endian ids as the side file says (bare files are u16), and the
//! errors for files that do not fit their description or their vocabulary.

use std::path::Path;

use longlora::data::token_file::{side_file, TokenDtype, TokenFile, TokenFileWriter};

fn write_u16(path: &Path, ids: &[u16]) {
    let bytes: Vec<u8> = ids.iter().flat_map(|t| t.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn writer_stores_u16_little_endian_and_describes_it_in_the_side_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.bin");
    let mut w = TokenFileWriter::create(&path, 258).unwrap();
    w.push_document(&[104, 105, 257]).unwrap();
    w.push_document(&[256, 0, 257]).unwrap();
    let meta = w.finish("builtin byte-level").unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        [104, 0, 105, 0, 1, 1, 0, 1, 0, 0, 1, 1]
    );
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(side_file(&path)).unwrap()).unwrap();
    assert_eq!(side["dtype"], "u16");
    assert_eq!(side["vocab_size"], 258);
    assert_eq!(side["tokens"], 6);
    assert_eq!(side["documents"], 2);
    assert_eq!(side["tokenizer"], "builtin byte-level");
    assert_eq!(meta.dtype, TokenDtype::U16);

    let f = TokenFile::open(&path).unwrap();
    assert_eq!(f.len(), 6);
    assert_eq!(f.meta(), Some(&meta));
    assert_eq!(f.tokens(258).unwrap(), vec![104, 105, 257, 256, 0, 257]);
    assert!(!dir.path().join("tokens.bin.partial").exists());
}

#[test]
fn a_vocabulary_above_65536_is_stored_as_u32() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    assert_eq!(TokenDtype::for_vocab(65_536), TokenDtype::U16);
    let mut w = TokenFileWriter::create(&path, 65_537).unwrap();
    w.push_document(&[65_536, 7, 65_535]).unwrap();
    assert_eq!(w.finish("test").unwrap().dtype, TokenDtype::U32);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 12);
    assert_eq!(&bytes[..4], &65_536u32.to_le_bytes());
    let f = TokenFile::open(&path).unwrap();
    assert_eq!(f.tokens(65_537).unwrap(), vec![65_536, 7, 65_535]);
    let e = f.window(0, 1, 65_536).unwrap_err().to_string();
    assert!(
        e.contains("big.bin") && e.contains("token 65536") && e.contains("index 0"),
        "{e}"
    );
}

#[test]
fn a_bare_bin_is_u16_and_out_of_range_ids_name_the_file_offset_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.bin");
    write_u16(&path, &[3, 258, 1, 700]);
    let f = TokenFile::open(&path).unwrap();
    assert_eq!(f.len(), 4);
    assert!(f.meta().is_none());
    let e = f.window(2, 3, 1000).expect_err("past the end").to_string();
    assert!(e.contains("tokens 2..5") && e.contains("holds 4"), "{e}");
    assert_eq!(f.window(0, 3, 1000).unwrap(), vec![3, 258, 1]);
    let e = f.window(1, 3, 500).unwrap_err().to_string();
    assert!(
        e.contains("tokens.bin")
            && e.contains("token 700")
            && e.contains("index 3")
            && e.contains("byte offset 6"),
        "{e}"
    );
    std::fs::write(&path, [1u8, 0, 2]).unwrap();
    let e = TokenFile::open(&path)
        .err()
        .expect("odd length must fail")
        .to_string();
    assert!(e.contains("tokens.bin") && e.contains("3 bytes"), "{e}");
}

#[test]
fn a_side_file_that_disagrees_with_the_data_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.bin");
    write_u16(&path, &[1, 2, 3]);
    let side = side_file(&path);
    std::fs::write(
        &side,
        r#"{"dtype":"u16","vocab_size":258,"tokens":5,"documents":1,"tokenizer":"x"}"#,
    )
    .unwrap();
    let e = TokenFile::open(&path)
        .err()
        .expect("count mismatch")
        .to_string();
    assert!(e.contains("holds 3 tokens") && e.contains("says 5"), "{e}");
    std::fs::write(
        &side,
        r#"{"dtype":"u32","vocab_size":258,"tokens":1,"documents":1,"tokenizer":"x"}"#,
    )
    .unwrap();
    let e = TokenFile::open(&path)
        .err()
        .expect("6 bytes are not u32s")
        .to_string();
    assert!(e.contains("6 bytes") && e.contains("u32"), "{e}");
    std::fs::write(&side, "{").unwrap();
    let e = TokenFile::open(&path).err().expect("bad JSON").to_string();
    assert!(
        e.contains("tokens.bin.json") && e.contains("invalid JSON"),
        "{e}"
    );
}

#[test]
fn the_writer_rejects_ids_outside_its_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TokenFileWriter::create(&dir.path().join("t.bin"), 258).unwrap();
    w.push_document(&[1, 2]).unwrap();
    let e = w.push_document(&[5, 258]).unwrap_err().to_string();
    assert!(e.contains("document 1") && e.contains("258"), "{e}");
}

#[test]
fn ids_from_another_tokenizer_are_a_mismatch_even_when_in_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bytes.bin");
    let mut w = TokenFileWriter::create(&path, 258).unwrap();
    w.push_document(&[1, 2, 257]).unwrap();
    w.finish("builtin byte-level").unwrap();
    let f = TokenFile::open(&path).unwrap();
    f.check_tokenizer(258, "builtin byte-level").unwrap();
    let e = f
        .check_tokenizer(32_000, "llama/tokenizer.json")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tokenizer/vocabulary mismatch")
            && e.contains("builtin byte-level (258 tokens)")
            && e.contains("llama/tokenizer.json (32000 tokens)"),
        "{e}"
    );
    let bare = dir.path().join("bare.bin");
    write_u16(&bare, &[1, 2]);
    TokenFile::open(&bare)
        .unwrap()
        .check_tokenizer(32_000, "anything")
        .expect("a bare file says nothing about its tokenizer");
}
