//! Checkpoints against a full disk and damage: a save that fails after any number of bytes leaves
//! the previous checkpoint complete and loadable and names the file and the OS error; a damaged
//! newest checkpoint is named and passed over for the one before it.

mod common;

use std::path::{Path, PathBuf};

use common::{short_run_config, tiny_config};
use longlora::backend::{Compute, Engine};
use longlora::data::WindowSampler;
use longlora::fs::fault::fail_writes_after;
use longlora::model::{Llama, LlamaConfig, LlamaWeights, TrainableSet};
use longlora::rng::Rng;
use longlora::train::checkpoint::{
    load_latest_checkpoint, save_run_checkpoint, RunCheckpoint, RunMeta,
};
use longlora::train::Trainer;
use longlora::Error;
use serde_json::json;

/// A one-layer model with rank-1 adapters: a checkpoint of a few kilobytes, so that every byte
/// count of a save can be tried.
fn small_model() -> Llama<f32> {
    let cfg = LlamaConfig {
        num_hidden_layers: 1,
        ..tiny_config()
    };
    let mut w = LlamaWeights::random(&cfg, 0.5, &mut Rng::new(1));
    w.add_lora(1, 2.0, &mut Rng::new(2));
    Llama::new(cfg, w).unwrap()
}

fn small_run() -> (Trainer, WindowSampler) {
    let trainer = Trainer::new(small_model(), short_run_config()).unwrap();
    let mut rng = Rng::new(4);
    let tokens = (0..64).map(|_| rng.below(11) as u32).collect();
    (trainer, WindowSampler::new(tokens, 4).unwrap())
}

fn options() -> Vec<(&'static str, serde_json::Value)> {
    vec![("lora_rank", json!(1))]
}

/// A directory where syncing is cheap when the machine has one (a RAM file system).
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

fn save(dir: &Path, trainer: &mut Trainer) -> longlora::Result<PathBuf> {
    let meta = RunMeta {
        options: &options(),
        step_targets: &[4],
        notes: &json!({"note": 1}),
    };
    save_run_checkpoint(dir, trainer, &meta, 2)
}

fn weight_bits(m: &Llama<f32>) -> Vec<u32> {
    m.weights
        .params()
        .iter()
        .flat_map(|p| p.data.iter().map(|v| v.to_bits()))
        .collect()
}

/// The checkpoint `load_latest_checkpoint` finds in `dir`, with the errors of those it passed.
fn latest(dir: &Path) -> (RunCheckpoint, Vec<String>) {
    let mut passed = Vec::new();
    let found = load_latest_checkpoint(dir, |e| passed.push(e.to_string()))
        .unwrap()
        .expect("a checkpoint");
    (found, passed)
}

fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_save_that_fails_after_any_byte_leaves_the_previous_checkpoint_whole() {
    let dir = scratch_dir();
    let (mut trainer, data) = small_run();
    trainer.step(&data).unwrap();
    let previous = save(dir.path(), &mut trainer).unwrap();
    let saved_weights = weight_bits(trainer.model().unwrap());
    trainer.step(&data).unwrap();
    // The size of the save under test, measured by making it once elsewhere.
    let sizing = scratch_dir();
    let total = bytes_under(&save(sizing.path(), &mut trainer).unwrap());
    assert!(total > 1000, "a save of {total} bytes tests little");

    for k in 0..total {
        let saved = {
            let _fault = fail_writes_after(k);
            save(dir.path(), &mut trainer)
        };
        // The sizing save's JSON may print a few bytes more than this one's (times, counters), so
        // a budget at or past this save's own size may let it finish; below it, it must fail.
        let err = match saved {
            Err(err) => err,
            Ok(done) => {
                let written = bytes_under(&done);
                assert!(
                    k >= written,
                    "a save of {written} bytes finished with a budget of {k}"
                );
                std::fs::remove_dir_all(&done).unwrap();
                break;
            }
        };
        let Error::Io { path, source } = &err else {
            panic!("after {k} bytes: expected an I/O error, got {err}");
        };
        assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert!(path.starts_with(dir.path()), "{err}");
        assert!(err.to_string().contains("No space left on device"), "{err}");
        assert_eq!(
            entries(dir.path()),
            ["checkpoint-000001"],
            "after a failure at byte {k}"
        );
    }
    let (found, passed) = latest(dir.path());
    assert!(passed.is_empty(), "{passed:?}");
    assert_eq!(found.dir, previous);
    assert_eq!(found.progress.step, 1);
    let engine = Engine::new(Compute::Cpu, small_model(), Some(TrainableSet::Lora), false).unwrap();
    let mut restored = found
        .resume(engine, short_run_config(), &options())
        .unwrap();
    assert!(
        weight_bits(restored.model().unwrap()) == saved_weights,
        "restored weights differ"
    );

    // The progress's elapsed time, and so state.json's length, varies by a few bytes between saves.
    let _enough = fail_writes_after(2 * total);
    let newer = save(dir.path(), &mut trainer).unwrap();
    assert_eq!(latest(dir.path()).0.dir, newer);
}

/// Two checkpoints (steps 1 and 2) in a new directory.
fn two_checkpoints() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = scratch_dir();
    let (mut trainer, data) = small_run();
    trainer.step(&data).unwrap();
    let older = save(dir.path(), &mut trainer).unwrap();
    trainer.step(&data).unwrap();
    let newer = save(dir.path(), &mut trainer).unwrap();
    (dir, older, newer)
}

/// Something that happens to a file after it was saved.
type Damage = fn(&Path);

#[test]
fn a_damaged_newest_checkpoint_is_named_and_the_previous_one_resumes() {
    let damages: [(&str, Damage); 4] = [
        ("trained.safetensors", |p| {
            let mut bytes = std::fs::read(p).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x40;
            std::fs::write(p, bytes).unwrap();
        }),
        ("optimizer.safetensors", |p| {
            let bytes = std::fs::read(p).unwrap();
            std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
        }),
        ("state.json", |p| {
            std::fs::write(p, "{\"format_version\": 2").unwrap()
        }),
        ("state.json", |p| std::fs::remove_file(p).unwrap()),
    ];
    for (file, damage) in damages {
        let (dir, older, newer) = two_checkpoints();
        damage(&newer.join(file));
        let (found, passed) = latest(dir.path());
        assert_eq!(found.dir, older, "damaged {file}");
        assert_eq!(passed.len(), 1, "{passed:?}");
        let named = newer.join(file);
        assert!(passed[0].contains(named.to_str().unwrap()), "{passed:?}");
        // Named directly, the damaged checkpoint falls back the same way.
        let (found, _) = latest(&newer);
        assert_eq!(found.dir, older);
    }
    let (dir, older, newer) = two_checkpoints();
    std::fs::remove_file(older.join("state.json")).unwrap();
    std::fs::remove_file(newer.join("trained.safetensors")).unwrap();
    let err = load_latest_checkpoint(dir.path(), |_| ())
        .err()
        .expect("no intact checkpoint");
    assert!(err.to_string().contains("state.json"), "{err}");
}
