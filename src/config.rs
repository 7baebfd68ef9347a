//! Command-line configuration: the flags, their defaults, and compatibility
//! with the Go bitmapist-server's single-dash flags (`-addr`, `-db`, `-bak`,
//! `-debug`, `-version`), which are translated to argh's `--long` form
//! before parsing.

use argh::FromArgs;
use std::path::PathBuf;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The Redis version this server's replies follow; reported where clients
/// and tools look for a Redis version.
pub const REDIS_COMPAT_VERSION: &str = "7.0.15";

/// bitmapist-server: a Redis-compatible server for the bitmapist analytics
/// library that keeps bitmaps compressed.
///
/// Go-style single-dash flags (-addr, -db, -bak, -debug, -version) work too.
#[derive(FromArgs, Debug, Clone, PartialEq)]
pub struct Config {
    /// address to listen on, host:port (default localhost:6379)
    #[argh(option, default = "String::from(\"localhost:6379\")")]
    pub addr: String,

    /// database file (default bitmapist.db)
    #[argh(option, default = "PathBuf::from(\"bitmapist.db\")")]
    pub db: PathBuf,

    /// file to write a consistent backup to on SIGUSR1
    #[argh(option)]
    pub bak: Option<PathBuf>,

    /// log every command (verbose)
    #[argh(switch)]
    pub debug: bool,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,

    /// number of network threads, each with its own io_uring runtime
    /// (default: available cores)
    #[argh(option)]
    pub threads: Option<usize>,

    /// memory for decoded bitmaps of unchanged keys, e.g. 64MiB, 1GiB
    /// (default 96MiB)
    #[argh(option, default = "String::from(\"96MiB\")")]
    pub cache_size: String,

    /// when the write-ahead log is flushed to disk: always, everysec or no
    /// (default everysec)
    #[argh(option, default = "String::from(\"everysec\")")]
    pub fsync: String,

    /// seconds between checkpoints while there are changes (default 300)
    #[argh(option, default = "300")]
    pub checkpoint_interval: u64,

    /// checkpoint when the write-ahead log grows past this size (default
    /// 64MiB)
    #[argh(option, default = "String::from(\"64MiB\")")]
    pub checkpoint_log_size: String,

    /// log level: error, warn, info, debug, trace (default info; RUST_LOG
    /// overrides it with a full filter)
    #[argh(option, default = "String::from(\"info\")")]
    pub log_level: String,

    /// require clients to authenticate with this password (AUTH, or HELLO
    /// with AUTH); prefer --requirepass-file, which keeps it out of `ps`
    #[argh(option)]
    pub requirepass: Option<String>,

    /// read the password from the first line of this file
    #[argh(option)]
    pub requirepass_file: Option<PathBuf>,

    /// refuse to listen on a non-loopback address without a password: yes
    /// or no (default yes)
    #[argh(option, default = "String::from(\"yes\")")]
    pub protected_mode: String,

    /// make a command unknown to clients, e.g. slurp, flushall, keys,
    /// shutdown (may be given several times)
    #[argh(option)]
    pub disable_command: Vec<String>,

    /// most clients connected at once; more are refused (default 10000)
    #[argh(option, default = "10000")]
    pub maxclients: usize,

    /// close a client idle for this many seconds (default 0: never)
    #[argh(option, default = "0")]
    pub timeout: u64,

    /// close a client whose unprocessed input grows past this size (default
    /// 1GiB)
    #[argh(option, default = "String::from(\"1GiB\")")]
    pub client_query_buffer_limit: String,

    /// close a client whose pending replies grow past this size (default
    /// 256MiB)
    #[argh(option, default = "String::from(\"256MiB\")")]
    pub client_output_buffer_limit: String,

    #[argh(subcommand)]
    pub command: Option<Subcommand>,
}

/// Subcommands besides running the server.
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand)]
pub enum Subcommand {
    Version(VersionCommand),
    ImportBolt(ImportBoltCommand),
}

/// convert a Go bitmapist-server (bbolt) database into a new database of
/// this server; the Go file is only read
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand, name = "import-bolt")]
pub struct ImportBoltCommand {
    /// the Go server's database file
    #[argh(option)]
    pub from: PathBuf,

    /// the database to create (must not exist yet)
    #[argh(option)]
    pub db: PathBuf,
}

/// print the version and exit
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand, name = "version")]
pub struct VersionCommand {}

/// Long flags that the Go server spelt with a single dash.
const GO_FLAGS: &[&str] = &["addr", "db", "bak", "debug", "version"];
/// Boolean flags: a Go-style `-flag=true|false` is turned into a switch.
const SWITCHES: &[&str] = &["debug", "version"];

/// Options of the server that take a value; given more than once, the last
/// one wins (as with the Go server's flags), so that a unit's `$OPTIONS`
/// can override the flags written before it.
const VALUE_OPTIONS: &[&str] = &[
    "addr",
    "db",
    "bak",
    "threads",
    "cache-size",
    "fsync",
    "checkpoint-interval",
    "checkpoint-log-size",
    "log-level",
    "requirepass",
    "requirepass-file",
    "protected-mode",
    "maxclients",
    "timeout",
    "client-query-buffer-limit",
    "client-output-buffer-limit",
];

/// Options that may be given several times, each adding a value.
const REPEATED_OPTIONS: &[&str] = &["disable-command"];

/// Rewrites Go-style flags into argh's form: `-addr x` and `-addr=x` become
/// `--addr x`, `--addr=x` becomes `--addr x`, `-debug=false` is dropped. Of
/// a server option given several times, only the last is kept.
/// Everything after `--` is left alone.
pub fn normalize_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest_literal = false;
    for arg in args {
        if rest_literal || arg == "--" || !arg.starts_with('-') || arg == "-" {
            rest_literal |= arg == "--";
            out.push(arg.clone());
            continue;
        }
        let body = arg.trim_start_matches('-');
        let dashes = arg.len() - body.len();
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let known_go = GO_FLAGS.contains(&name);
        if dashes == 1 && !known_go {
            // Short flags such as -h stay as they are.
            out.push(arg.clone());
            continue;
        }
        if dashes > 2 {
            out.push(arg.clone());
            continue;
        }
        let long = format!("--{name}");
        match value {
            None => out.push(long),
            Some(v) if SWITCHES.contains(&name) => {
                if v != "false" && v != "0" {
                    out.push(long);
                }
            }
            Some(v) => {
                out.push(long);
                out.push(v.to_string());
            }
        }
    }
    keep_last_values(out)
}

/// Drops all but the last `--option value` pair of each server option,
/// up to the first subcommand or `--`.
fn keep_last_values(args: Vec<String>) -> Vec<String> {
    let mut last = std::collections::HashMap::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].strip_prefix("--") {
            Some(name) if VALUE_OPTIONS.contains(&name) && i + 1 < args.len() => {
                last.insert(name, i);
                i += 2;
            }
            Some(name) if REPEATED_OPTIONS.contains(&name) && i + 1 < args.len() => i += 2,
            Some(name) if !name.is_empty() => i += 1,
            // A subcommand, a stray value or `--`: the server's options end.
            _ => break,
        }
    }
    let end = i;
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        match args[i].strip_prefix("--") {
            Some(name) if i < end && last.get(name).is_some_and(|&at| at != i) => i += 2,
            _ => {
                out.push(args[i].clone());
                i += 1;
            }
        }
    }
    out
}

/// Parses a size: a number with an optional unit. `K`, `M`, `G` and
/// `KiB`, `MiB`, `GiB` are powers of 1024; `KB`, `MB`, `GB` powers of 1000;
/// `B` or nothing is bytes. Case does not matter.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (examples: 64MiB, 1GiB, 500MB, 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?} (use KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// What `main` should do after parsing.
pub enum Parsed {
    Run(Box<Config>),
    /// Print this text (help or version) to stdout and exit 0.
    Print(String),
    /// Print this text to stderr and exit 2.
    Usage(String),
}

/// Parses the process arguments (without argv[0]).
pub fn parse(program: &str, args: &[String]) -> Parsed {
    let args = normalize_args(args);
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match Config::from_args(&[program], &strs) {
        Ok(config) => {
            if config.version || matches!(config.command, Some(Subcommand::Version(_))) {
                Parsed::Print(format!("bitmapist-server {VERSION}\n"))
            } else {
                Parsed::Run(Box::new(config))
            }
        }
        Err(early) => match early.status {
            Ok(()) => Parsed::Print(early.output),
            Err(()) => Parsed::Usage(early.output),
        },
    }
}

impl Config {
    /// The number of network threads to start. By default half the cores,
    /// at most 4: every batch takes the one keyspace lock, so more threads
    /// stop adding throughput beyond about 2-4 (benches/scaling.sh), and the
    /// other half is left to the kernel's network work, the log writer and
    /// checkpoints (on 2 cores, 1 thread beats 2 in every W2 workload).
    pub fn thread_count(&self) -> usize {
        self.threads.filter(|&n| n > 0).unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / 2).clamp(1, 4)
        })
    }

    /// Checks the security options and resolves them: reads the password
    /// file into `requirepass`, lowercases the disabled commands. Returns a
    /// one-line reason on failure.
    pub fn resolve_security(&mut self) -> Result<(), String> {
        if let Some(path) = &self.requirepass_file {
            if self.requirepass.is_some() {
                return Err(String::from(
                    "give either --requirepass or --requirepass-file, not both",
                ));
            }
            let text = std::fs::read(path)
                .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
            let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                return Err(format!(
                    "the password file {} is empty; put the password on its first line",
                    path.display()
                ));
            }
            let password = String::from_utf8(line.to_vec())
                .map_err(|_| format!("the password file {} is not UTF-8 text", path.display()))?;
            self.requirepass = Some(password);
        }
        if self.requirepass.as_deref() == Some("") {
            // As in Redis, an empty password means none.
            self.requirepass = None;
        }
        match self.protected_mode.to_ascii_lowercase().as_str() {
            "yes" | "no" => self.protected_mode.make_ascii_lowercase(),
            other => return Err(format!("--protected-mode must be yes or no, not {other:?}")),
        }
        if self.maxclients == 0 {
            return Err(String::from("--maxclients must be at least 1"));
        }
        for (flag, value) in [
            (
                "--client-query-buffer-limit",
                &self.client_query_buffer_limit,
            ),
            (
                "--client-output-buffer-limit",
                &self.client_output_buffer_limit,
            ),
        ] {
            match parse_size(value) {
                Ok(0) => return Err(format!("{flag} must be above 0")),
                Ok(_) => {}
                Err(e) => return Err(format!("{flag}: {e}")),
            }
        }
        for name in &mut self.disable_command {
            name.make_ascii_lowercase();
        }
        Ok(())
    }

    /// Whether binding a non-loopback address needs a password.
    pub fn protected(&self) -> bool {
        self.protected_mode != "no" && self.requirepass.is_none()
    }

    /// `--client-query-buffer-limit` in bytes.
    pub fn query_buffer_limit(&self) -> usize {
        parse_size(&self.client_query_buffer_limit).map_or(1 << 30, |n| n as usize)
    }

    /// `--client-output-buffer-limit` in bytes.
    pub fn output_buffer_limit(&self) -> usize {
        parse_size(&self.client_output_buffer_limit).map_or(256 << 20, |n| n as usize)
    }

    /// Whether `--disable-command` names this command (`name` is the first
    /// argument; `spec_name` the table's name, `parent|sub` for a
    /// subcommand).
    pub fn is_disabled(&self, name: &[u8], spec_name: &str) -> bool {
        self.disable_command
            .iter()
            .any(|d| d.as_bytes().eq_ignore_ascii_case(name) || d == spec_name)
    }

    /// The defaults, as if started with no arguments.
    pub fn defaults() -> Config {
        match parse("bitmapist-server", &[]) {
            Parsed::Run(c) => *c,
            _ => unreachable!("no arguments always parse"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn run(v: &[&str]) -> Config {
        match parse("bitmapist-server", &s(v)) {
            Parsed::Run(c) => *c,
            Parsed::Print(t) | Parsed::Usage(t) => panic!("did not parse: {t}"),
        }
    }

    #[test]
    fn go_style_flags_translate() {
        let c = run(&[
            "-addr",
            "0.0.0.0:6400",
            "-db",
            "/tmp/x/bitmapist.db",
            "-bak=/tmp/b",
            "-debug",
        ]);
        assert_eq!(c.addr, "0.0.0.0:6400");
        assert_eq!(c.db, PathBuf::from("/tmp/x/bitmapist.db"));
        assert_eq!(c.bak, Some(PathBuf::from("/tmp/b")));
        assert!(c.debug);
        let c = run(&["--addr=127.0.0.1:1", "-debug=false", "--threads", "3"]);
        assert_eq!(c.addr, "127.0.0.1:1");
        assert!(!c.debug);
        assert_eq!(c.thread_count(), 3);
    }

    #[test]
    fn the_last_of_a_repeated_option_wins() {
        let c = run(&[
            "-addr",
            "127.0.0.1:6379",
            "-db",
            "/var/lib/bitmapist/bitmapist.db",
            "--cache-size=1GiB",
            "-addr",
            "0.0.0.0:6400",
            "--cache-size",
            "2GiB",
            "-debug",
        ]);
        assert_eq!(c.addr, "0.0.0.0:6400");
        assert_eq!(c.cache_size, "2GiB");
        assert_eq!(c.db, PathBuf::from("/var/lib/bitmapist/bitmapist.db"));
        assert!(c.debug);
        // The subcommand's own --db is not the server's.
        let c = run(&[
            "--db",
            "a.db",
            "import-bolt",
            "--from",
            "old.db",
            "--db",
            "new.db",
        ]);
        assert_eq!(c.db, PathBuf::from("a.db"));
        match c.command {
            Some(Subcommand::ImportBolt(cmd)) => assert_eq!(cmd.db, PathBuf::from("new.db")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_option_with_a_value_is_known_to_keep_last_values() {
        let help = match parse("bitmapist-server", &s(&["--help"])) {
            Parsed::Print(t) => t,
            _ => panic!("--help did not print"),
        };
        let usage = help.lines().next().unwrap_or_default();
        for part in usage.split('[').skip(1) {
            if let Some((flag, _)) = part.split_once(" <") {
                let name = flag.trim_start_matches("--");
                if flag.starts_with("--") {
                    assert!(
                        VALUE_OPTIONS.contains(&name) || REPEATED_OPTIONS.contains(&name),
                        "add {name} to VALUE_OPTIONS"
                    );
                }
            }
        }
    }

    #[test]
    fn defaults_match_the_go_server() {
        let c = Config::defaults();
        assert_eq!(c.addr, "localhost:6379");
        assert_eq!(c.db, PathBuf::from("bitmapist.db"));
        assert_eq!(c.bak, None);
        assert!(c.thread_count() >= 1);
    }

    #[test]
    fn version_in_every_spelling() {
        for v in [&["-version"][..], &["--version"], &["version"]] {
            match parse("bitmapist-server", &s(v)) {
                Parsed::Print(t) => assert!(t.contains(VERSION), "{t}"),
                _ => panic!("{v:?} did not print the version"),
            }
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("12k"), Ok(12 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn unknown_flag_is_a_usage_error() {
        assert!(matches!(
            parse("bitmapist-server", &s(&["--nope"])),
            Parsed::Usage(_)
        ));
        assert!(matches!(
            parse("bitmapist-server", &s(&["--help"])),
            Parsed::Print(_)
        ));
    }
}
