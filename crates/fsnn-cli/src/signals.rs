//! Stop requests from outside: Ctrl-C (SIGINT), SIGTERM (what Slurm, `docker stop` and `kill`
//! send) and SIGHUP (the terminal went away) all let a training run finish its step, write a
//! checkpoint and exit with 128 + the signal's number; a second one, or one outside training,
//! ends the process at once with that status.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that stopped training (SIGINT's number until one arrives).
static STOPPED_BY: AtomicI32 = AtomicI32::new(2);

/// The exit status for a run stopped by a signal: 128 + its number (130 for Ctrl-C, 143 for
/// SIGTERM, 129 for SIGHUP), as shells report a process the signal killed.
pub fn exit_status() -> i32 {
    128 + STOPPED_BY.load(Ordering::SeqCst)
}

/// How the signal is named in messages.
pub fn name() -> &'static str {
    signal_name(STOPPED_BY.load(Ordering::SeqCst))
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        15 => "SIGTERM",
        _ => "Ctrl-C",
    }
}

/// What to do on a stop signal (run on an ordinary thread, not in the signal handler).
fn on_signal(sig: i32) {
    use std::io::Write;
    if fsnn::train::request_stop() {
        STOPPED_BY.store(sig, Ordering::SeqCst);
        // After SIGHUP the terminal may be gone: a failed write must not end the thread.
        let _ = writeln!(
            std::io::stderr(),
            "\n{}: finishing the current step and writing a checkpoint (a second signal quits at once)",
            signal_name(sig)
        );
    } else {
        let _ = writeln!(std::io::stderr(), "\ninterrupted");
        // _exit, not exit: atexit handlers (the GPU driver's among them) could block on a lock
        // the interrupted main thread holds.
        #[cfg(unix)]
        // SAFETY: _exit(2) ends the process without touching any Rust state.
        unsafe {
            libc::_exit(128 + sig)
        };
        #[allow(unreachable_code)]
        std::process::exit(128 + sig);
    }
}

/// Installs the handlers. SIGHUP is left alone when it is ignored at start (`nohup`), so that a
/// run the user detached keeps going when the terminal closes.
#[cfg(unix)]
pub fn install() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut wanted = vec![SIGINT, SIGTERM];
    if !ignored(SIGHUP) {
        wanted.push(SIGHUP);
    }
    let mut signals = signal_hook::iterator::Signals::new(&wanted)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                on_signal(sig);
            }
        })?;
    Ok(())
}

/// Whether `sig`'s disposition is "ignore".
#[cfg(unix)]
fn ignored(sig: i32) -> bool {
    // SAFETY: sigaction(2) with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Elsewhere Ctrl-C (and the console's close events, through ctrlc) stop as SIGINT does.
#[cfg(not(unix))]
pub fn install() -> anyhow::Result<()> {
    ctrlc::set_handler(|| on_signal(2))?;
    Ok(())
}
