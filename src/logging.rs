//! Logging set-up, filtered by `--log-level` or, when set, `RUST_LOG`.
//! When systemd connects stderr to the journal (`JOURNAL_STREAM` names
//! stderr's device and inode), events are sent to journald natively: the
//! level as `PRIORITY`, the text as `MESSAGE`, and every field as a journal
//! field of its own (`ADDRESS=`, `KEYS=`, `CLIENT=` ...). Otherwise they are
//! human-readable lines on stderr.

use std::os::unix::fs::MetadataExt;
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `level` is the `--log-level` value.
pub fn init(level: &str) {
    let filter = || match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(level),
    };
    let mut journal_error = None;
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier(String::from("bitmapist-server"))
                    .with_priority_mappings(PriorityMappings {
                        error: Priority::Error,
                        warn: Priority::Warning,
                        info: Priority::Informational,
                        debug: Priority::Debug,
                        trace: Priority::Debug,
                    });
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .try_init();
                return;
            }
            Err(e) => journal_error = Some(e),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
    if let Some(e) = journal_error {
        tracing::warn!(error = %e, "stderr is the journal but its native socket cannot be used; logging lines to stderr");
    }
}

/// Whether stderr is the stream systemd connected to the journal.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some(value) = value.to_str() else {
        return false;
    };
    // Duplicate stderr to stat it without unsafe code.
    let stat = std::os::fd::AsFd::as_fd(&std::io::stderr())
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata());
    match stat {
        Ok(m) => journal_stream_is(value, m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// `JOURNAL_STREAM` is `DEVICE:INODE` in decimal.
fn journal_stream_is(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    matches!((d.parse::<u64>(), i.parse::<u64>()), (Ok(d), Ok(i)) if d == dev && i == ino)
}

#[cfg(test)]
mod tests {
    use super::journal_stream_is;

    #[test]
    fn journal_stream_must_name_this_device_and_inode() {
        assert!(journal_stream_is("8:12345", 8, 12345));
        assert!(!journal_stream_is("8:12345", 8, 12346));
        assert!(!journal_stream_is("9:12345", 8, 12345));
        assert!(!journal_stream_is("", 8, 12345));
        assert!(!journal_stream_is("8", 8, 12345));
        assert!(!journal_stream_is("x:y", 8, 12345));
    }
}
