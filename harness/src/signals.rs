//! Stopping a training run cleanly. SIGINT (Ctrl-C), SIGTERM and SIGHUP (what schedulers such as
//! SLURM and Kubernetes send before they kill a job) ask the run to finish its step and save a
//! checkpoint; the command then exits with 128 + the signal's number, the status a shell reports
//! for a process the signal killed. A second signal exits at once, without a checkpoint.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

use longlora::error::signal_name;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The first stop signal received; 0 for none.
static STOP: AtomicI32 = AtomicI32::new(0);

/// Starts listening for the stop signals (once per process).
pub fn watch() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(mut signals) => {
            std::thread::spawn(move || signals.forever().for_each(on_signal));
        }
        Err(e) => eprintln!("warning: signals will stop the run without a checkpoint: {e}"),
    });
}

fn on_signal(signal: i32) {
    let name = signal_name(signal);
    if STOP
        .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        eprintln!("\n{name} again: exiting without a checkpoint");
        std::process::exit(128 + signal);
    }
    eprintln!("\n{name}: finishing this step, then saving a checkpoint (again to quit now)");
}

/// The signal that asked the run to stop, if one did.
pub fn requested() -> Option<i32> {
    match STOP.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}
