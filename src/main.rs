//! The `bitmapist-server` binary: parses the command line, sets up logging
//! and signals, and runs the server. Everything else lives in the library.

use bitmapist_server::config::{self, Parsed, VERSION};
use bitmapist_server::server::Server;
use bitmapist_server::{keyspace, logging, memory, net, persistence, signals};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

fn main() -> ExitCode {
    let mut args = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    let program = args
        .next()
        .unwrap_or_else(|| String::from("bitmapist-server"));
    let rest: Vec<String> = args.collect();
    match config::parse(&program, &rest) {
        Parsed::Print(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Parsed::Usage(text) => {
            eprintln!("{text}");
            ExitCode::from(2)
        }
        Parsed::Run(config) => match &config.command {
            Some(config::Subcommand::ImportBolt(cmd)) => import_bolt(cmd),
            _ => run(*config),
        },
    }
}

/// `bitmapist-server import-bolt --from OLD.db --db NEW.db`
fn import_bolt(cmd: &config::ImportBoltCommand) -> ExitCode {
    if let Err(e) = net::probe_io_uring() {
        eprintln!("bitmapist-server: {e}");
        return ExitCode::FAILURE;
    }
    logging::init("warn");
    match bitmapist_server::import::import_bolt(&cmd.from, &cmd.db) {
        Ok(s) => {
            println!(
                "imported {} keys ({} with a TTL, {} set bits) from {} into {} ({} bytes) in {} ms; \
                 dropped {} expired keys, skipped {} keys longer than 1024 bytes; verified",
                s.keys,
                s.with_ttl,
                s.set_bits,
                cmd.from.display(),
                cmd.db.display(),
                s.db_bytes,
                s.ms,
                s.expired_dropped,
                s.skipped_long_keys
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bitmapist-server import-bolt: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut config: config::Config) -> ExitCode {
    memory::configure_allocator();
    // Before anything else is printed: without io_uring there is one line to say.
    if let Err(e) = net::probe_io_uring() {
        eprintln!("bitmapist-server: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = config.resolve_security() {
        eprintln!("bitmapist-server: {e}");
        return ExitCode::FAILURE;
    }
    // Refuse an exposed address without a password before opening anything.
    if let Err(e) = net::check_protected(&config) {
        eprintln!("bitmapist-server: {e}");
        return ExitCode::FAILURE;
    }
    logging::init(&config.log_level);
    if let Err(e) = signals::block() {
        eprintln!("bitmapist-server: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!(
        version = VERSION,
        address = %config.addr,
        database = %config.db.display(),
        threads = config.thread_count(),
        "bitmapist-server starting"
    );
    let server = match persistence::open(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("bitmapist-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = signals::spawn_handler(server.clone()) {
        eprintln!("bitmapist-server: cannot start the signal thread: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = spawn_housekeeping(server.clone()) {
        eprintln!("bitmapist-server: cannot start the housekeeping thread: {e}");
        return ExitCode::FAILURE;
    }
    match net::serve(server) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bitmapist-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How often the mapped pages of the database file are released (the
/// expiry sweep alone maps about 1.5 MB of directory pages a second on a
/// database of 100k keys; hot pages come back at the cost of a minor fault).
const RELEASE_MAPPED_PAGES_EVERY: Duration = Duration::from_secs(2);

/// How long housekeeping evicts from an over-budget cache per hold of the
/// keyspace lock.
const SHRINK_CACHE_TIME: Duration = Duration::from_micros(200);

/// Housekeeping: ten times a second, active expiry (examine a bounded number
/// of keys and delete the expired ones), evict what the value cache holds
/// over its budget, and give memory the value cache released back to the
/// system when enough was released and no checkpoint is running (see
/// `memory::Trimmer::due`); every two seconds, release the mapped
/// pages of the database file (see
/// `Committed::release_mapped_pages`).
fn spawn_housekeeping(server: Arc<Server>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || {
            let mut trimmer = memory::Trimmer::default();
            let mut last_release = std::time::Instant::now();
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let mut ks = server.keyspace();
                ks.sweep_expired(keyspace::now_ms(), 200);
                // Evict what insertions left over the cache's budget, in
                // short holds of the lock.
                while ks.shrink_cache(SHRINK_CACHE_TIME) {
                    ks.unlock_fair();
                    ks = server.keyspace();
                }
                let released = ks.cache().released_bytes;
                let committed = ks.committed().clone();
                drop(ks);
                let checkpoint_running = server.storage.write_hold.checkpoint_running();
                if trimmer.due(released, checkpoint_running) {
                    memory::trim();
                }
                if last_release.elapsed() >= RELEASE_MAPPED_PAGES_EVERY {
                    committed.release_mapped_pages();
                    last_release = std::time::Instant::now();
                }
            }
        })?;
    Ok(())
}
