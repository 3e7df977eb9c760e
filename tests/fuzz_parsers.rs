//! Property-based fuzzing of every file parser: safetensors files, config.json (with its weights),
//! the index of a sharded model, token files and their side files, SFT JSON and JSONL, PEFT adapters, run.json and checkpoints.
//! Each starts from a valid file and damages it (truncation, byte flips, inserted bytes, header
//! lengths up to 2^64 - 1, JSON values replaced by extreme or wrongly typed ones: offsets out of
//! range, overlapping tensors, unknown dtypes, huge dimensions). Every parser must return a value
//! or an error that names the file, and never panic, abort or hang; a counting allocator checks
//! that it never holds more than a small multiple of the bytes it reads (see `MAX_BYTES_PER_BYTE`):
//! nothing is sized by what a header claims.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{short_run_config, tiny_config};
use longlora::data::sft::load_records;
use longlora::data::token_file::{side_file, TokenDtype, TokenFile, TokenFileMeta};
use longlora::data::WindowSampler;
use longlora::hf::peft::{load_adapter, save_adapter, ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use longlora::hf::{load_model, load_tensors, save_model, save_model_sharded};
use longlora::model::{Llama, LlamaWeights};
use longlora::rng::Rng;
use longlora::train::checkpoint::{load_run_checkpoint, save_run_checkpoint, RunMeta};
use longlora::train::{RunRecord, Trainer};
use proptest::prelude::*;
use proptest::sample::Index;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};

/// Cases per parser: together they run in well under a minute on two loaded cores.
const CASES: u32 = 300;

/// The allocation bound: this many bytes held per byte read, plus `SLACK`. Decoding may
/// legitimately double (bf16 or u16 to 32 bits) and JSON maps cost a few bytes per byte of text.
const MAX_BYTES_PER_BYTE: usize = 4;
const SLACK: usize = 64 << 10;

// ---------------------------------------------------------------------------------------------
// The allocation meter: bytes this thread holds, and their peak, while a parser runs.

struct Meter;

thread_local! {
    static METERING: Cell<bool> = const { Cell::new(false) };
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    let on = METERING.try_with(Cell::get).unwrap_or(false);
    if on {
        let held = HELD.with(|h| {
            h.set(h.get() + delta);
            h.get()
        });
        PEAK.with(|p| p.set(p.get().max(held)));
    }
}

unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static METER: Meter = Meter;

/// Runs `f` and returns its result and the most bytes it held allocated at once.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    HELD.with(|h| h.set(0));
    PEAK.with(|p| p.set(0));
    METERING.with(|m| m.set(true));
    let out = f();
    METERING.with(|m| m.set(false));
    (out, PEAK.with(Cell::get).max(0) as usize)
}

/// Runs a parser over `files` (which exist or not) and checks the verdict: a value, or an error
/// that names one of the files; and an allocation peak within the bound of their total size.
fn check<T>(files: &[PathBuf], parse: impl FnOnce() -> longlora::Result<T>) -> Result<(), String> {
    let size: usize = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len() as usize))
        .sum();
    let (result, peak) = peak_of(parse);
    if let Err(e) = result {
        let text = e.to_string();
        let named = files.iter().any(|f| text.contains(f.to_str().unwrap()));
        if !named {
            return Err(format!("error names none of {files:?}: {text}"));
        }
    }
    let limit = MAX_BYTES_PER_BYTE * size + SLACK;
    if peak > limit {
        return Err(format!("held {peak} bytes reading {size} (limit {limit})"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Valid files to damage, written once (saves sync to disk) and copied into each case's directory.

/// The files a writer leaves in a directory, by name.
type Template = Vec<(String, Vec<u8>)>;

fn template(write: impl FnOnce(&Path)) -> Template {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path());
    let mut files: Template = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// A new directory holding the template's files.
fn materialize(template: &Template) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in template {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Damage: byte-level and JSON-level mutations.

#[derive(Clone, Debug)]
enum ByteDamage {
    Truncate(Index),
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
}

fn byte_damage() -> impl Strategy<Value = ByteDamage> {
    prop_oneof![
        any::<Index>().prop_map(ByteDamage::Truncate),
        (any::<Index>(), 1..=255u8).prop_map(|(i, x)| ByteDamage::Flip(i, x)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| ByteDamage::Insert(i, b)),
    ]
}

fn damage_bytes(bytes: &mut Vec<u8>, damage: &[ByteDamage]) {
    for d in damage {
        let len = bytes.len();
        match d {
            ByteDamage::Truncate(i) => bytes.truncate(i.index(len + 1)),
            ByteDamage::Flip(i, x) if len > 0 => bytes[i.index(len)] ^= x,
            ByteDamage::Flip(..) => {}
            ByteDamage::Insert(i, b) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
        }
    }
}

/// Values that break assumptions: extremes, wrong types, names of unsupported dtypes.
fn odd_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1u64 << 32)),
        Just(json!(1u64 << 62)),
        Just(json!(1e308)),
        Just(json!(-0.5)),
        Just(json!([])),
        Just(json!({})),
        Just(json!([0, u64::MAX])),
        Just(json!([1u64 << 40, 1u64 << 40])),
        Just(json!([3, 1])),
        prop::sample::select(vec![
            "F4", "BOOL", "U8", "I64", "C64", "F8_E4M3", "Q4_K", "", "u64", "u16", "F32"
        ])
        .prop_map(|s| json!(s)),
        any::<i64>().prop_map(|v| json!(v)),
        "[a-z_]{0,12}".prop_map(Value::String),
    ]
}

/// The replacement of the `Index`-th node of a JSON tree (in pre-order) by a value.
type JsonDamage = Vec<(Index, Value)>;

fn json_damage() -> impl Strategy<Value = JsonDamage> {
    prop::collection::vec((any::<Index>(), odd_json()), 1..4)
}

fn node_count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(node_count).sum(),
        Value::Object(o) => o.values().map(node_count).sum(),
        _ => 0,
    }
}

/// Replaces the `n`-th node below `v` (pre-order, `v` itself excluded); returns the nodes left.
fn replace_node(v: &mut Value, mut n: usize, with: &Value) -> Option<usize> {
    let children: Vec<&mut Value> = match v {
        Value::Array(a) => a.iter_mut().collect(),
        Value::Object(o) => o.values_mut().collect(),
        _ => return Some(n),
    };
    for child in children {
        if n == 0 {
            *child = with.clone();
            return None;
        }
        n = replace_node(child, n - 1, with)?;
    }
    Some(n)
}

fn damage_json(v: &mut Value, damage: &JsonDamage) {
    for (i, with) in damage {
        let nodes = node_count(v) - 1;
        if nodes > 0 {
            replace_node(v, i.index(nodes), with);
        }
    }
}

/// Damage to a JSON file: to its values (still JSON) or to its bytes.
#[derive(Clone, Debug)]
enum JsonFileDamage {
    Values(JsonDamage),
    Bytes(Vec<ByteDamage>),
}

fn json_file_damage() -> impl Strategy<Value = JsonFileDamage> {
    prop_oneof![
        json_damage().prop_map(JsonFileDamage::Values),
        prop::collection::vec(byte_damage(), 1..4).prop_map(JsonFileDamage::Bytes),
    ]
}

fn damaged_json(v: &Value, damage: &JsonFileDamage) -> Vec<u8> {
    match damage {
        JsonFileDamage::Values(d) => {
            let mut v = v.clone();
            damage_json(&mut v, d);
            serde_json::to_vec_pretty(&v).unwrap()
        }
        JsonFileDamage::Bytes(d) => {
            let mut bytes = serde_json::to_vec_pretty(v).unwrap();
            damage_bytes(&mut bytes, d);
            bytes
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Safetensors files.

/// A valid file of up to three small tensors in the float dtypes we read.
fn safetensors_file() -> impl Strategy<Value = Vec<u8>> {
    let dtype = prop::sample::select(vec![Dtype::F32, Dtype::BF16, Dtype::F16, Dtype::F64]);
    let tensor = (dtype, prop::collection::vec(0..4usize, 0..3), any::<u64>());
    prop::collection::vec(tensor, 1..4).prop_map(|tensors| {
        let data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
            .into_iter()
            .enumerate()
            .map(|(i, (dtype, shape, seed))| {
                let n = shape.iter().product::<usize>() * dtype.bitsize() / 8;
                let mut rng = Rng::new(seed);
                let bytes = (0..n).map(|_| rng.below(256) as u8).collect();
                (format!("t{i}"), dtype, shape, bytes)
            })
            .collect();
        let views = data.iter().map(|(name, dtype, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        });
        safetensors::serialize(views, None).unwrap()
    })
}

#[derive(Clone, Debug)]
enum SafetensorsDamage {
    Bytes(Vec<ByteDamage>),
    /// Replaces the header length: any u64, up to 2^64 - 1.
    HeaderLen(u64),
    /// Edits the header's JSON (offsets, shapes, dtypes) and writes it back with its new length.
    Header(JsonDamage),
}

fn safetensors_damage() -> impl Strategy<Value = SafetensorsDamage> {
    prop_oneof![
        prop::collection::vec(byte_damage(), 1..4).prop_map(SafetensorsDamage::Bytes),
        prop_oneof![any::<u64>(), Just(u64::MAX), 0..256u64].prop_map(SafetensorsDamage::HeaderLen),
        json_damage().prop_map(SafetensorsDamage::Header),
    ]
}

fn damage_safetensors(file: &[u8], damage: &SafetensorsDamage) -> Vec<u8> {
    let mut bytes = file.to_vec();
    match damage {
        SafetensorsDamage::Bytes(d) => damage_bytes(&mut bytes, d),
        SafetensorsDamage::HeaderLen(n) => bytes[..8].copy_from_slice(&n.to_le_bytes()),
        SafetensorsDamage::Header(d) => {
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
            damage_json(&mut header, d);
            let text = serde_json::to_vec(&header).unwrap();
            let mut out = (text.len() as u64).to_le_bytes().to_vec();
            out.extend(text);
            out.extend(&bytes[8 + n..]);
            bytes = out;
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn safetensors_files(file in safetensors_file(), damage in safetensors_damage()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, damage_safetensors(&file, &damage)).unwrap();
        check(std::slice::from_ref(&path), || load_tensors(&path)).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------------------------
// config.json, read with the weights it describes.

/// A model directory of the tiny model and its config.json as JSON.
fn model_dir() -> (tempfile::TempDir, Value) {
    static MODEL: OnceLock<Template> = OnceLock::new();
    let dir = materialize(MODEL.get_or_init(|| {
        template(|dir| {
            let cfg = tiny_config();
            save_model(
                dir,
                &cfg,
                &LlamaWeights::random(&cfg, 0.5, &mut Rng::new(1)),
            )
            .unwrap();
        })
    }));
    let config = read_json(&dir.path().join("config.json"));
    (dir, config)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn config_json_with_its_weights(damage in json_file_damage()) {
        let (dir, config) = model_dir();
        let path = dir.path().join("config.json");
        std::fs::write(&path, damaged_json(&config, &damage)).unwrap();
        let files = [path, dir.path().join("model.safetensors")];
        check(&files, || load_model(dir.path())).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The index of a sharded model.

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn sharded_model_index(damage in json_file_damage()) {
        static SHARDED: OnceLock<Template> = OnceLock::new();
        let dir = materialize(SHARDED.get_or_init(|| {
            template(|dir| {
                let cfg = tiny_config();
                let w = LlamaWeights::random(&cfg, 0.5, &mut Rng::new(1));
                save_model_sharded(dir, &cfg, &w, 1000).unwrap();
            })
        }));
        let index = dir.path().join("model.safetensors.index.json");
        let v = read_json(&index);
        std::fs::write(&index, damaged_json(&v, &damage)).unwrap();
        let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        check(&files, || load_model(dir.path())).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Token files and their side files.

#[derive(Clone, Debug)]
enum SideFile {
    None,
    Valid,
    Damaged(JsonFileDamage),
}

fn side_file_case() -> impl Strategy<Value = SideFile> {
    prop_oneof![
        Just(SideFile::None),
        Just(SideFile::Valid),
        json_file_damage().prop_map(SideFile::Damaged),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn token_files_and_side_files(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        u32_ids in any::<bool>(),
        side in side_file_case(),
        vocab in prop_oneof![Just(300usize), Just(70_000), 1..4usize],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.bin");
        std::fs::write(&path, &bytes).unwrap();
        let dtype = if u32_ids { TokenDtype::U32 } else { TokenDtype::U16 };
        let meta = TokenFileMeta {
            dtype,
            vocab_size: vocab,
            tokens: bytes.len() / dtype.bytes(),
            documents: 1,
            tokenizer: "builtin byte-level".into(),
        };
        let meta = serde_json::to_value(meta).unwrap();
        match &side {
            SideFile::None => {}
            SideFile::Valid => std::fs::write(side_file(&path), meta.to_string()).unwrap(),
            SideFile::Damaged(d) => std::fs::write(side_file(&path), damaged_json(&meta, d)).unwrap(),
        }
        let files = [path.clone(), side_file(&path)];
        check(&files, || TokenFile::open(&path)?.tokens(vocab)).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------------------------
// SFT records, as a JSON array and as JSON lines.

fn sft_records() -> impl Strategy<Value = Vec<Value>> {
    let record = (".{0,12}", prop::option::of(".{0,12}"), ".{0,12}").prop_map(|(i, inp, o)| {
        let mut r = json!({"instruction": i, "output": o});
        if let Some(inp) = inp {
            r["input"] = json!(inp);
        }
        r
    });
    prop::collection::vec(record, 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn sft_json_and_jsonl(records in sft_records(), lines in any::<bool>(), damage in json_file_damage()) {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = if lines {
            let damaged: Vec<Vec<u8>> = records.iter().map(|r| damaged_json(r, &damage)).collect();
            let mut text = Vec::new();
            for line in damaged {
                // One record per line: pretty-printed JSON is folded onto its line.
                text.extend(line.into_iter().map(|b| if b == b'\n' { b' ' } else { b }));
                text.push(b'\n');
            }
            (dir.path().join("data.jsonl"), text)
        } else {
            (dir.path().join("data.json"), damaged_json(&json!(records), &damage))
        };
        std::fs::write(&path, bytes).unwrap();
        check(std::slice::from_ref(&path), || load_records(&path)).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------------------------
// PEFT adapters: adapter_config.json and adapter_model.safetensors.

#[derive(Clone, Debug)]
enum AdapterDamage {
    Config(JsonFileDamage),
    Tensors(SafetensorsDamage),
}

fn adapter_damage() -> impl Strategy<Value = AdapterDamage> {
    prop_oneof![
        json_file_damage().prop_map(AdapterDamage::Config),
        safetensors_damage().prop_map(AdapterDamage::Tensors),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn peft_adapters(damage in adapter_damage()) {
        static ADAPTER: OnceLock<Template> = OnceLock::new();
        let base = LlamaWeights::random(&tiny_config(), 0.5, &mut Rng::new(1));
        let dir = materialize(ADAPTER.get_or_init(|| {
            template(|dir| {
                let mut adapted = base.clone();
                adapted.add_lora(2, 4.0, &mut Rng::new(2));
                save_adapter(dir, &adapted, "base").unwrap();
            })
        }));
        let (config, tensors) = (dir.path().join(ADAPTER_CONFIG), dir.path().join(ADAPTER_WEIGHTS));
        match &damage {
            AdapterDamage::Config(d) => {
                let v = read_json(&config);
                std::fs::write(&config, damaged_json(&v, d)).unwrap();
            }
            AdapterDamage::Tensors(d) => {
                let bytes = std::fs::read(&tensors).unwrap();
                std::fs::write(&tensors, damage_safetensors(&bytes, d)).unwrap();
            }
        }
        let mut weights = base.clone();
        check(&[config, tensors], || load_adapter(dir.path(), &mut weights))
            .map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------------------------
// run.json.

fn run_record() -> Value {
    json!({
        "format_version": 1, "command": "finetune", "version": "0.1.0",
        "base_model": "base", "tokenizer": "builtin byte-level", "data": null,
        "context": 1024, "rope_factor": 4.0, "original_context": 256,
        "train": serde_json::to_value(short_run_config()).unwrap(),
        "step_targets": [100, 150], "trained_parameters": 1234,
        "heldout_loss_base_at_original_context": 2.5, "heldout_loss_before": 3.0,
        "heldout_loss_after": 2.75, "first_step_loss": 3.1, "last_step_loss": 2.9,
        "tokens_per_s": 1000.0, "total_time_s": 4.5, "peak_memory_mib": 120.0,
        "resumed_from": null
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn run_json(damage in json_file_damage()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        std::fs::write(&path, damaged_json(&run_record(), &damage)).unwrap();
        check(std::slice::from_ref(&path), || RunRecord::load(&path)).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints: state.json and the two tensor files (with state.json's digest of a damaged tensor
// file updated, so that the damage reaches the tensor parser and not just the digest check).

#[derive(Clone, Debug)]
enum CheckpointDamage {
    State(JsonFileDamage),
    Tensors {
        optimizer: bool,
        damage: SafetensorsDamage,
        fix_digest: bool,
    },
}

fn checkpoint_damage() -> impl Strategy<Value = CheckpointDamage> {
    prop_oneof![
        json_file_damage().prop_map(CheckpointDamage::State),
        (any::<bool>(), safetensors_damage(), any::<bool>()).prop_map(
            |(optimizer, damage, fix)| {
                CheckpointDamage::Tensors {
                    optimizer,
                    damage,
                    fix_digest: fix,
                }
            }
        ),
    ]
}

/// A checkpoint directory (its files are the template).
fn checkpoint() -> tempfile::TempDir {
    static CHECKPOINT: OnceLock<Template> = OnceLock::new();
    materialize(CHECKPOINT.get_or_init(|| {
        let run = tempfile::tempdir().unwrap();
        let mut w = LlamaWeights::random(&tiny_config(), 0.5, &mut Rng::new(1));
        w.add_lora(1, 2.0, &mut Rng::new(2));
        let model = Llama::new(tiny_config(), w).unwrap();
        let mut trainer = Trainer::new(model, short_run_config()).unwrap();
        let tokens = (0..64).map(|i| i % 11).collect();
        trainer
            .step(&WindowSampler::new(tokens, 4).unwrap())
            .unwrap();
        let meta = RunMeta {
            options: &vec![("lora_rank", json!(1))],
            step_targets: &[4],
            notes: &json!({"heldout_loss_before": 3.0}),
        };
        let ck = save_run_checkpoint(run.path(), &mut trainer, &meta, 2).unwrap();
        template(|dir| {
            for file in ["state.json", "trained.safetensors", "optimizer.safetensors"] {
                std::fs::copy(ck.join(file), dir.join(file)).unwrap();
            }
        })
    }))
}

fn damage_checkpoint(ck: &Path, damage: &CheckpointDamage) {
    let state_path = ck.join("state.json");
    let state = read_json(&state_path);
    match damage {
        CheckpointDamage::State(d) => std::fs::write(&state_path, damaged_json(&state, d)).unwrap(),
        CheckpointDamage::Tensors {
            optimizer,
            damage,
            fix_digest,
        } => {
            let name = if *optimizer {
                "optimizer.safetensors"
            } else {
                "trained.safetensors"
            };
            let damaged = damage_safetensors(&std::fs::read(ck.join(name)).unwrap(), damage);
            std::fs::write(ck.join(name), &damaged).unwrap();
            if *fix_digest {
                let mut state = state;
                state["files"][name] = json!({
                    "bytes": damaged.len(),
                    "crc32": crc32fast::hash(&damaged),
                });
                std::fs::write(&state_path, state.to_string()).unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn checkpoint_files(damage in checkpoint_damage()) {
        let dir = checkpoint();
        let ck = dir.path();
        damage_checkpoint(ck, &damage);
        let files = ["state.json", "trained.safetensors", "optimizer.safetensors"].map(|f| ck.join(f));
        check(&files, || load_run_checkpoint(ck)).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions: what the fuzzing found, each at a size where the old behaviour breaks the bound.

#[test]
fn the_meter_sees_an_allocation_and_check_refuses_one_past_the_bound() {
    let (_, peak) = peak_of(|| vec![1u8; 1 << 20]);
    assert!(peak >= 1 << 20, "{peak}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small");
    std::fs::write(&path, [0u8; 16]).unwrap();
    assert!(check(&[path], || Ok(vec![1u8; 1 << 20])).is_err());
}

#[test]
fn a_config_larger_than_its_weights_is_refused_before_allocating() {
    let (dir, mut config) = model_dir();
    for key in ["vocab_size", "hidden_size", "intermediate_size"] {
        config[key] = json!(1 << 16);
    }
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let files = [path, dir.path().join("model.safetensors")];
    check(&files, || load_model(dir.path())).unwrap();
    let err = load_model(dir.path()).unwrap_err();
    assert!(err.to_string().contains("weight files hold"), "{err}");
}

#[test]
fn an_adapter_rank_beyond_the_model_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let base = LlamaWeights::random(&tiny_config(), 0.5, &mut Rng::new(1));
    let mut adapted = base.clone();
    adapted.add_lora(2, 4.0, &mut Rng::new(2));
    save_adapter(dir.path(), &adapted, "base").unwrap();
    let path = dir.path().join(ADAPTER_CONFIG);
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["r"] = json!(1u64 << 40);
    std::fs::write(&path, config.to_string()).unwrap();
    let mut weights = base;
    let files = [path, dir.path().join(ADAPTER_WEIGHTS)];
    check(&files, || load_adapter(dir.path(), &mut weights)).unwrap();
    assert!(load_adapter(dir.path(), &mut weights.clone()).is_err());
}

#[test]
fn a_four_bit_tensor_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f4.safetensors");
    let data = vec![0x11u8; 1 << 20];
    let view = TensorView::new(Dtype::F4, vec![2 << 20], &data).unwrap();
    std::fs::write(&path, safetensors::serialize([("t", view)], None).unwrap()).unwrap();
    check(std::slice::from_ref(&path), || load_tensors(&path)).unwrap();
    let err = load_tensors(&path).unwrap_err();
    assert!(err.to_string().contains("unsupported dtype F4"), "{err}");
}

#[test]
fn a_shard_that_is_not_a_file_of_the_directory_is_the_index_error() {
    for name in ["", "..", "../model.safetensors", "/etc/hostname"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tiny_config();
        let w = LlamaWeights::random(&cfg, 0.5, &mut Rng::new(1));
        save_model_sharded(dir.path(), &cfg, &w, 1000).unwrap();
        let index = dir.path().join("model.safetensors.index.json");
        let mut v = read_json(&index);
        v["weight_map"]["model.norm.weight"] = json!(name);
        std::fs::write(&index, v.to_string()).unwrap();
        let err = load_model(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(index.to_str().unwrap()) && err.contains("not a file in"),
            "{name:?}: {err}"
        );
    }
}
