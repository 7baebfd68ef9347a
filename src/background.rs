//! Background work's scheduling priority: checkpoints and backups
//! (serializing, writing and freeing whole bitmaps) run on a short-lived
//! thread lowered below the network threads, at idle priority where the
//! process may raise it back, else at nice 10. Owns that thread's priority
//! and nothing else; callers pass the work.

use std::time::Duration;

/// Probes (once) and logs how far background work can be lowered.
pub fn probe() {
    background_priority();
}

/// Nice value of the thread that serializes and writes a checkpoint or
/// copies a backup (and of the io_uring workers it starts, which inherit
/// it) when it cannot run at idle priority, or has run too long at it.
const BACKGROUND_IO_NICE: libc::c_int = 10;

/// How long background work may run at idle priority (SCHED_IDLE) before
/// it is raised to nice 10, so that a machine whose cores are all busy
/// still finishes checkpoints.
const BACKGROUND_IDLE_FOR: Duration = Duration::from_secs(2);

/// Runs `work` (serializing and writing a checkpoint, copying a backup) on
/// a short-lived thread of lower scheduling priority, and waits for it.
/// That work handles whole bitmaps; on a machine with few cores it would
/// otherwise take CPU time from the network threads and double the latency
/// of the requests served meanwhile. An idle core runs it at full speed.
///
/// The thread runs at idle priority (SCHED_IDLE) where this process may
/// take that back (`background_priority`): a network thread that wakes up
/// then preempts it at once. At nice 10 it waited for the rest of the
/// background thread's time slice, milliseconds, often enough to make W6's
/// p99 during checkpoints 4x the idle one (measured on 2 cores, together
/// with bounded cache eviction: 1.8 to 2.4 ms with idle priority against
/// 3.3 to 4.3 ms with nice 10, idle p99 0.7 to 1.1 ms). After
/// `BACKGROUND_IDLE_FOR` it is raised to nice 10.
///
/// Only this thread is lowered: the checkpointer itself keeps the normal
/// priority because it takes the keyspace lock to publish a checkpoint, and
/// a low-priority lock holder, preempted by busy threads of normal priority
/// (clients, the load on the machine), would stop every client for tens of
/// milliseconds (measured: 30 to 76 ms) while it waits for a time slice.
pub fn at_background_priority<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    at_background_priority_for(BACKGROUND_IDLE_FOR, work)
}

fn at_background_priority_for<T: Send>(idle_for: Duration, work: impl FnOnce() -> T + Send) -> T {
    let priority = background_priority();
    let mut work = Some(work);
    let done = std::thread::scope(|scope| {
        let slot = &mut work;
        // Disconnected when the thread is done.
        let (running, finished) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("checkpoint-io".into())
            .spawn_scoped(scope, move || {
                let _running = running;
                lower_own_priority(priority);
                slot.take().map(|work| work())
            });
        match spawned {
            Ok(handle) => {
                if priority == BackgroundPriority::Idle
                    && finished.recv_timeout(idle_for)
                        == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                {
                    raise_idle_threads();
                }
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a background thread; checkpointing at normal priority");
                None
            }
        }
    });
    match (done, work) {
        (Some(result), _) => result,
        // The thread could not be started, so the work has not run.
        (None, Some(work)) => work(),
        (None, None) => unreachable!("the background thread ran the work and returned its result"),
    }
}

/// Sets a thread's nice value (its own or a thread of this process).
fn set_nice(tid: libc::pid_t, nice: libc::c_int) -> std::io::Result<()> {
    // SAFETY: setpriority takes no pointers.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a thread's scheduling policy (SCHED_IDLE or SCHED_OTHER).
fn set_policy(tid: libc::pid_t, policy: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call.
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How far background work can be lowered in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackgroundPriority {
    /// SCHED_IDLE, raised to nice 10 when it runs long: going back from
    /// SCHED_IDLE needs CAP_SYS_NICE or an RLIMIT_NICE of at least 10
    /// (systemd's `LimitNICE=+10`).
    Idle,
    /// Nice 10 (raising one's own nice value needs no privilege).
    Nice,
    /// Neither is allowed (a seccomp filter denies setpriority).
    Normal,
}

impl BackgroundPriority {
    fn name(self) -> &'static str {
        match self {
            BackgroundPriority::Idle => "idle",
            BackgroundPriority::Nice => "nice",
            BackgroundPriority::Normal => "normal",
        }
    }
}

/// Probes once, on a scratch thread, how far background work can be
/// lowered, and logs it.
fn background_priority() -> BackgroundPriority {
    static PRIORITY: std::sync::OnceLock<BackgroundPriority> = std::sync::OnceLock::new();
    *PRIORITY.get_or_init(|| {
        let probe = std::thread::Builder::new()
            .name("priority-probe".into())
            .spawn(|| {
                // SAFETY: gettid takes no arguments and cannot fail.
                let tid = unsafe { libc::gettid() };
                if let Err(e) = set_nice(tid, BACKGROUND_IO_NICE) {
                    return (BackgroundPriority::Normal, format!("setpriority: {e}"));
                }
                if let Err(e) = set_policy(tid, libc::SCHED_IDLE) {
                    return (BackgroundPriority::Nice, format!("SCHED_IDLE: {e}"));
                }
                match set_policy(tid, libc::SCHED_OTHER) {
                    Ok(()) => (BackgroundPriority::Idle, String::new()),
                    Err(e) => (
                        BackgroundPriority::Nice,
                        format!("back from SCHED_IDLE to nice {BACKGROUND_IO_NICE}: {e}"),
                    ),
                }
            });
        let (priority, why_not_idle) = probe
            .map_err(|e| format!("starting a thread: {e}"))
            .and_then(|t| t.join().map_err(|_| String::from("the probe panicked")))
            .unwrap_or_else(|e| (BackgroundPriority::Normal, e));
        match priority {
            BackgroundPriority::Idle => tracing::info!(
                background = priority.name(),
                "checkpoints and backups run at idle priority (SCHED_IDLE, nice 10 after 2 s)"
            ),
            _ => tracing::info!(
                background = priority.name(),
                why_not_idle,
                "checkpoints and backups run at {} priority",
                priority.name()
            ),
        }
        priority
    })
}

/// Lowers the calling thread as far as `priority` says.
fn lower_own_priority(priority: BackgroundPriority) {
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    let lowered = match priority {
        BackgroundPriority::Normal => Ok(()),
        BackgroundPriority::Nice => set_nice(tid, BACKGROUND_IO_NICE),
        BackgroundPriority::Idle => {
            set_nice(tid, BACKGROUND_IO_NICE).and_then(|()| set_policy(tid, libc::SCHED_IDLE))
        }
    };
    if let Err(e) = lowered {
        tracing::debug!(error = %e, "cannot lower the priority of the checkpoint's background thread");
    }
}

/// Raises every thread of this process at idle priority (the background
/// thread and the io_uring workers it started, which inherit its policy) to
/// normal scheduling at nice 10.
fn raise_idle_threads() {
    let tasks = match std::fs::read_dir("/proc/self/task") {
        Ok(tasks) => tasks,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this process's threads to raise background work");
            return;
        }
    };
    let mut raised = 0;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: sched_getscheduler takes no pointers.
        if unsafe { libc::sched_getscheduler(tid) } != libc::SCHED_IDLE {
            continue;
        }
        match set_policy(tid, libc::SCHED_OTHER).and_then(|()| set_nice(tid, BACKGROUND_IO_NICE)) {
            Ok(()) => raised += 1,
            Err(e) => {
                tracing::warn!(tid, error = %e, "cannot raise background work from idle priority")
            }
        }
    }
    tracing::info!(
        threads = raised,
        seconds = BACKGROUND_IDLE_FOR.as_secs(),
        "background work ran long at idle priority (the cores are busy); raised to nice 10"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's scheduling policy and nice value.
    fn own_priority() -> (libc::c_int, libc::c_int) {
        // SAFETY: plain system calls on the calling thread, no pointers.
        unsafe {
            let tid = libc::gettid();
            let policy = libc::sched_getscheduler(tid);
            *libc::__errno_location() = 0;
            let nice = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            (policy, nice)
        }
    }

    #[test]
    fn background_work_runs_at_idle_priority_and_is_raised_when_it_runs_long() {
        let caller = own_priority();
        let (policy, nice) = at_background_priority(own_priority);
        assert_ne!(background_priority(), BackgroundPriority::Normal);
        assert_eq!(nice, BACKGROUND_IO_NICE);
        if background_priority() == BackgroundPriority::Idle {
            assert_eq!(policy, libc::SCHED_IDLE);
            // Work that outlasts its time at idle priority ends at nice 10.
            let (before, after) = at_background_priority_for(Duration::from_millis(20), || {
                let before = own_priority();
                std::thread::sleep(Duration::from_millis(300));
                (before, own_priority())
            });
            assert_eq!(before.0, libc::SCHED_IDLE);
            assert_eq!(after, (libc::SCHED_OTHER, BACKGROUND_IO_NICE));
            // Short work is left alone.
            let (policy, _) = at_background_priority_for(Duration::from_secs(60), own_priority);
            assert_eq!(policy, libc::SCHED_IDLE);
        } else {
            assert_eq!(policy, libc::SCHED_OTHER);
        }
        assert_eq!(own_priority(), caller, "the caller's priority is untouched");
        // A panic in the work reaches the caller.
        let panicked = std::panic::catch_unwind(|| at_background_priority(|| panic!("boom")));
        assert!(panicked.is_err());
    }
}
