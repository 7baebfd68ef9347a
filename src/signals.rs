//! Signal handling: SIGTERM and SIGINT stop the server cleanly, SIGUSR1
//! asks for a backup. Signals are blocked in every thread and received by
//! one dedicated thread with sigwait, so no handler runs inside the event
//! loops.

use crate::server::Server;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::sync::Arc;

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set
}

/// Blocks the handled signals in the calling thread; call before starting
/// any other thread so that every thread inherits the mask.
pub fn block() -> nix::Result<()> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None)
}

/// Starts the thread that waits for signals and acts on them.
pub fn spawn_handler(server: Arc<Server>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = handled();
            loop {
                match set.wait() {
                    Ok(Signal::SIGTERM) => server.shutdown("SIGTERM"),
                    Ok(Signal::SIGINT) => server.shutdown("SIGINT"),
                    Ok(Signal::SIGUSR1) => match &server.config.bak {
                        Some(path) => {
                            tracing::info!(path = %path.display(), "SIGUSR1: backup requested");
                            if !server.storage.request_backup() {
                                tracing::error!(
                                    "SIGUSR1: the checkpointer is not running; no backup"
                                );
                            }
                        }
                        None => tracing::warn!(
                            "SIGUSR1: no backup path is configured (-bak); nothing to do"
                        ),
                    },
                    Ok(other) => tracing::info!(signal = ?other, "signal ignored"),
                    Err(e) => tracing::error!(error = %e, "waiting for signals failed"),
                }
            }
        })?;
    Ok(())
}
