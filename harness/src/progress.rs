//! Progress bars and the process's peak memory, for long-running commands.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar on stderr with a free-form message (step, loss, tokens/s).
pub fn bar(len: usize, prefix: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    pb
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`); `None` elsewhere.
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
