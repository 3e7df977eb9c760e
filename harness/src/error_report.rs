//! How the command line reports a library error: option names in the command line's spelling
//! (`lora_rank` is `--lora-rank`), the hints that only make sense on the command line, the
//! command that resumes an interrupted run, and the exit status.

use std::path::Path;
use std::process::ExitCode;

use longlora::Error;

/// Prints `e` on stderr and returns the exit status: 128 + the signal's number for a run a signal
/// stopped (what a shell reports for a process the signal killed), else 1.
pub fn report(e: &Error) -> ExitCode {
    match e {
        Error::InvalidOption { option, message } => {
            eprintln!("error: invalid option --{}: {message}", flag(option));
        }
        Error::Interrupted {
            signal, run_dir, ..
        } => {
            eprintln!("error: {e}");
            let args: Vec<String> = std::env::args().collect();
            eprintln!("to continue: {}", resume_command(&args, run_dir));
            return ExitCode::from(u8::try_from(128 + signal).unwrap_or(1));
        }
        Error::Diverged {
            checkpoint: None, ..
        } => eprintln!("error: {e} (see --save-every)"),
        Error::DeviceMemory { recompute, .. } => {
            eprintln!("error: {e}");
            let recompute = if *recompute { "" } else { "--recompute, " };
            eprintln!(
                "to need less: {recompute}a shorter --context, a smaller --batch-size (with \
                 --grad-accum for the same batch) or a smaller --lora-rank"
            );
        }
        _ => eprintln!("error: {e}"),
    }
    ExitCode::FAILURE
}

/// The command-line flag (without `--`) of a library option name.
fn flag(option: &str) -> String {
    match option {
        "seq_len" => "context".into(),
        "depth" => "depths".into(),
        other => other.replace('_', "-"),
    }
}

/// The command line `args` with `--resume RUN_DIR` in place of `--output` (or of an earlier
/// `--resume`) and without `--overwrite`, quoted for a POSIX shell.
fn resume_command(args: &[String], run_dir: &Path) -> String {
    let mut out: Vec<String> = Vec::with_capacity(args.len() + 2);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let name = arg.split('=').next().unwrap_or(arg);
        match name {
            "--overwrite" => {}
            "--output" | "--resume" => {
                if !arg.contains('=') {
                    rest.next();
                }
            }
            _ => out.push(arg.clone()),
        }
    }
    out.push("--resume".into());
    out.push(run_dir.display().to_string());
    out.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(String::from).collect()
    }

    #[test]
    fn the_resume_command_replaces_output_and_drops_overwrite() {
        let run = Path::new("runs/a b");
        assert_eq!(
            resume_command(
                &args("harness finetune --output runs/x --overwrite --steps 5"),
                run
            ),
            "harness finetune --steps 5 --resume 'runs/a b'"
        );
        assert_eq!(
            resume_command(&args("harness pretrain --output=runs/x --data d"), run),
            "harness pretrain --data d --resume 'runs/a b'"
        );
        assert_eq!(
            resume_command(
                &args("harness finetune --resume runs/x/checkpoint-000005"),
                run
            ),
            "harness finetune --resume 'runs/a b'"
        );
        assert_eq!(
            resume_command(&args("harness finetune"), Path::new("runs/it's")),
            r"harness finetune --resume 'runs/it'\''s'"
        );
    }

    #[test]
    fn option_names_become_flags() {
        assert_eq!(flag("lora_rank"), "lora-rank");
        assert_eq!(flag("seq_len"), "context");
        assert_eq!(flag("lr"), "lr");
    }
}
