//! Logging set-up: tracing to stderr, filtered by `--log-level` or, when
//! set, `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `level` is the `--log-level` value.
pub fn init(level: &str) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(level),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
