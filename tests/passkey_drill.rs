//! Passkey drills: documents of short exercises (key line, short filler, the test's question and
//! the answer), each with its own key, filling a length without exceeding it, reproducible from the
//! seed.

use longlora::data::byte_tokens;
use longlora::eval::passkey::{information_line, FILLER, MAX_PASSKEY, QUESTION};
use longlora::eval::passkey_drill::{drill_exercise, Drills, MAX_DRILL_FILLER};
use longlora::Result;

fn bytes(text: &str) -> Result<Vec<u32>> {
    Ok(byte_tokens(text.as_bytes()))
}

/// The keys a drill document asks for, read back from its text: every exercise is three lines,
/// its key's line, filler and the question with its answer.
fn exercises(text: &str) -> Vec<u32> {
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.len() % 3, 0, "{text}");
    lines
        .chunks(3)
        .map(|exercise| {
            let answer = exercise[2]
                .strip_prefix(&format!("{QUESTION} "))
                .and_then(|a| a.strip_suffix('.'))
                .unwrap_or_else(|| panic!("not a question and answer: {:?}", exercise[2]));
            let key: u32 = answer.parse().unwrap();
            assert_eq!(exercise[0], information_line(key));
            assert!(exercise[1].len() <= MAX_DRILL_FILLER, "{:?}", exercise[1]);
            assert!(FILLER.starts_with(exercise[1]), "{:?}", exercise[1]);
            key
        })
        .collect()
}

#[test]
fn drills_fill_their_length_with_exercises_whose_answers_are_their_keys() {
    let mut drills = Drills::new(3);
    let longest = drill_exercise(MAX_PASSKEY, MAX_DRILL_FILLER).len();
    let mut fillers = std::collections::BTreeSet::new();
    for length in [longest, 300, 512, 2048] {
        for _ in 0..20 {
            let (text, keys) = drills.document(&bytes, length).unwrap();
            assert!(text.len() <= length, "{} > {length}", text.len());
            // One more exercise of any key and filler would not have fitted.
            assert!(
                text.len() + 1 + longest > length,
                "{length}: {}",
                text.len()
            );
            assert_eq!(exercises(&text), keys);
            assert!(keys.iter().all(|&k| (1..=MAX_PASSKEY).contains(&k)));
            fillers.extend(text.split('\n').skip(1).step_by(3).map(str::len));
        }
    }
    assert!(fillers.len() > 20, "filler lengths vary: {fillers:?}");
    assert!(fillers.contains(&0) || fillers.contains(&1), "{fillers:?}");
}

#[test]
fn drills_are_reproducible_from_their_seed() {
    let run = |seed| {
        let mut drills = Drills::new(seed);
        (0..5)
            .map(|_| drills.document(&bytes, 512).unwrap().0)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn a_length_that_cannot_hold_an_exercise_is_an_error() {
    let err = Drills::new(1).document(&bytes, 60).unwrap_err().to_string();
    assert!(
        err.contains("60 tokens cannot hold a passkey drill exercise"),
        "{err}"
    );
}
