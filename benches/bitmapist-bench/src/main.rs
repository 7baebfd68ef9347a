//! bitmapist-bench: load generator, "analytics" dataset and side-by-side
//! comparison of bitmapist-server with redis-server. See benches/README.md.

mod client;
mod compare;
mod dataset;
mod loadgen;
mod plots;
mod report;
mod resp;
mod rng;
mod server;
mod workloads;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Load generator and comparison of bitmapist-server with redis-server
/// (loopback only).
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Cmd {
    Compare(CompareArgs),
    Load(LoadArgs),
    Dataset(DatasetArgs),
    Check(CheckArgs),
    Plot(PlotArgs),
}

/// run W1–W6 and the storage figures on bitmapist-server, redis-server and
/// any --other server, alternating, and write results.json, results.md and
/// PNG plots
#[derive(FromArgs)]
#[argh(subcommand, name = "compare")]
struct CompareArgs {
    /// output directory (default docs/bench/latest)
    #[argh(option, default = "PathBuf::from(\"docs/bench/latest\")")]
    out: PathBuf,
    /// a small run for CI (tiny dataset, short runs; well under a minute)
    #[argh(switch)]
    quick: bool,
    /// bitmapist-server binary (default: build it with cargo build --release)
    #[argh(option)]
    server: Option<PathBuf>,
    /// what to call the --server binary's version in the report (default:
    /// the commit of the current directory's git checkout)
    #[argh(option)]
    server_label: Option<String>,
    /// redis-server binary (default redis-server on PATH)
    #[argh(option, default = "PathBuf::from(\"redis-server\")")]
    redis: PathBuf,
    /// another server to compare, NAME=PATH; started with -addr and -db
    /// (Go bitmapist-server flags); repeatable
    #[argh(option)]
    other: Vec<String>,
    /// skip W1 and W2 on redis-server with its append-only file on
    /// (appendfsync everysec), which full runs add as a column (quick runs
    /// never do)
    #[argh(switch)]
    no_redis_aof: bool,
    /// extra flag for bitmapist-server (repeatable, e.g. --server-flag=--threads=2)
    #[argh(option)]
    server_flag: Vec<String>,
    /// highest user id, U (default 20000000; quick 1000000)
    #[argh(option)]
    users: Option<u32>,
    /// event types, E (default 20; quick 4)
    #[argh(option)]
    events: Option<u32>,
    /// days from 2026-01-01, D (default 60; quick 10)
    #[argh(option)]
    days: Option<u32>,
    /// distinct users a day of the busiest event (default 300000; quick 5000)
    #[argh(option)]
    daily: Option<u32>,
    /// dataset and workload seed (default 42)
    #[argh(option, default = "42")]
    seed: u64,
    /// seconds per load run (default 5; quick 0.3)
    #[argh(option)]
    duration: Option<f64>,
    /// rounds per load configuration, alternating servers (default 3; quick 1)
    #[argh(option)]
    rounds: Option<usize>,
    /// client connections for W1, W2 and W6 (default 50)
    #[argh(option, default = "50")]
    connections: usize,
    /// load generator threads (default 1)
    #[argh(option, default = "1")]
    client_threads: usize,
    /// keys in W2's key set (default 100000; quick 10000)
    #[argh(option)]
    w2_keys: Option<usize>,
    /// W2 offsets are below this (default 65536)
    #[argh(option, default = "65536")]
    w2_max_offset: u64,
    /// repetitions of each W3 query (default 10; quick 3)
    #[argh(option)]
    query_reps: Option<usize>,
    /// keys for the one-bit-keys figure (default 1000000; quick 20000)
    #[argh(option)]
    one_bit_keys: Option<u64>,
    /// SETBITs for the WAL replay figure (default 2000000; quick 50000)
    #[argh(option)]
    wal_records: Option<u64>,
    /// extra dataset sizes for the memory plot, as comma-separated day
    /// counts (default D/8,D/4,D/2)
    #[argh(option)]
    mem_days: Option<String>,
    /// where server data goes (default the system temp dir); removed after
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// keep the server data directories
    #[argh(switch)]
    keep_data: bool,
    /// how to load the dataset: set (client-built strings, default) or setbit
    #[argh(option, default = "String::from(\"set\")")]
    load: String,
    /// stop everything after this many seconds (default 2400; quick 300)
    #[argh(option)]
    time_limit: Option<u64>,
}

/// run one load against a running server and print throughput and latency
#[derive(FromArgs)]
#[argh(subcommand, name = "load")]
struct LoadArgs {
    /// server address (loopback only), e.g. 127.0.0.1:6380
    #[argh(option)]
    addr: String,
    /// setbit, getbit, bitcount, mix, or mark-event (W1; needs the dataset
    /// parameters)
    #[argh(option, default = "String::from(\"getbit\")")]
    workload: String,
    /// connections (default 50)
    #[argh(option, default = "50")]
    connections: usize,
    /// load generator threads (default 1)
    #[argh(option, default = "1")]
    threads: usize,
    /// pipeline depth (default 1)
    #[argh(option, default = "1")]
    pipeline: usize,
    /// seconds (default 5; ignored with --requests)
    #[argh(option, default = "5.0")]
    duration: f64,
    /// stop after this many operations instead of after a duration
    #[argh(option)]
    requests: Option<u64>,
    /// keys for point workloads (default 100000)
    #[argh(option, default = "100000")]
    keys: usize,
    /// offsets below this (default 65536)
    #[argh(option, default = "65536")]
    max_offset: u64,
    /// highest user id for mark-event (default 20000000)
    #[argh(option, default = "20_000_000")]
    users: u32,
    /// event types for mark-event (default 20)
    #[argh(option, default = "20")]
    events: u32,
    /// days for mark-event: the current week is the one of the last day (default 60)
    #[argh(option, default = "60")]
    days: u32,
    /// seed (default 42)
    #[argh(option, default = "42")]
    seed: u64,
}

/// generate the "analytics" dataset and load it into a running server
#[derive(FromArgs)]
#[argh(subcommand, name = "dataset")]
struct DatasetArgs {
    /// server address (loopback only)
    #[argh(option)]
    addr: String,
    /// highest user id, U (default 20000000)
    #[argh(option, default = "20_000_000")]
    users: u32,
    /// event types, E (default 20)
    #[argh(option, default = "20")]
    events: u32,
    /// days from 2026-01-01, D (default 60)
    #[argh(option, default = "60")]
    days: u32,
    /// distinct users a day of the busiest event (default 300000)
    #[argh(option, default = "300_000")]
    daily: u32,
    /// seed (default 42)
    #[argh(option, default = "42")]
    seed: u64,
    /// set (default) or setbit
    #[argh(option, default = "String::from(\"set\")")]
    load: String,
    /// only print the dataset's size; load nothing
    #[argh(switch)]
    dry_run: bool,
}

/// check a results.json: every workload present with numbers, no failures
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct CheckArgs {
    /// the results.json to check
    #[argh(positional)]
    file: PathBuf,
}

/// draw the PNG plots again from a results.json
#[derive(FromArgs)]
#[argh(subcommand, name = "plot")]
struct PlotArgs {
    /// the results.json
    #[argh(positional)]
    file: PathBuf,
    /// where to write the PNGs (default: beside the JSON)
    #[argh(option)]
    out: Option<PathBuf>,
}

/// The command line with `--name=value` split into `--name value` (argh
/// takes only the second form), so `--server-flag=--cache-size=1GiB` works.
fn split_equals(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    for a in args {
        match a.strip_prefix("--").and_then(|rest| rest.split_once('=')) {
            Some((name, value)) if !name.is_empty() => {
                out.push(format!("--{name}"));
                out.push(value.to_string());
            }
            _ => out.push(a),
        }
    }
    out
}

fn main() {
    let args = split_equals(std::env::args());
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some((cmd, rest)) = strs.split_first() else {
        eprintln!("bitmapist-bench: no command line");
        std::process::exit(2);
    };
    let cli: Cli = match Cli::from_args(&[*cmd], rest) {
        Ok(cli) => cli,
        Err(early) => {
            let code = match early.status {
                Ok(()) => {
                    println!("{}", early.output);
                    0
                }
                Err(()) => {
                    eprintln!(
                        "{}\nRun bitmapist-bench --help for more information.",
                        early.output
                    );
                    1
                }
            };
            std::process::exit(code);
        }
    };
    let r = match cli.cmd {
        Cmd::Compare(a) => cmd_compare(a),
        Cmd::Load(a) => cmd_load(a),
        Cmd::Dataset(a) => cmd_dataset(a),
        Cmd::Check(a) => report::check(&a.file).map(|s| println!("ok: {s}")),
        Cmd::Plot(a) => cmd_plot(a),
    };
    if let Err(e) = r {
        server::kill_all_children();
        eprintln!("bitmapist-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn load_mode(s: &str) -> Result<compare::LoadMode> {
    match s {
        "set" => Ok(compare::LoadMode::Set),
        "setbit" => Ok(compare::LoadMode::SetBit),
        other => bail!("--load must be set or setbit, not {other:?}"),
    }
}

fn cmd_compare(a: CompareArgs) -> Result<()> {
    let q = a.quick;
    let params = dataset::Params {
        users: a.users.unwrap_or(if q { 1_000_000 } else { 20_000_000 }),
        events: a.events.unwrap_or(if q { 4 } else { 20 }),
        days: a.days.unwrap_or(if q { 10 } else { 60 }),
        daily: a.daily.unwrap_or(if q { 5_000 } else { 300_000 }),
        seed: a.seed,
    };
    let mem_days = match &a.mem_days {
        Some(s) if s.trim().is_empty() => vec![],
        Some(s) => s
            .split(',')
            .map(|d| {
                d.trim()
                    .parse::<u32>()
                    .with_context(|| format!("--mem-days: {d:?} is not a number"))
            })
            .collect::<Result<Vec<_>>>()?,
        None => vec![params.days / 8, params.days / 4, params.days / 2],
    };
    let mut others = Vec::new();
    for o in &a.other {
        let (name, path) = o
            .split_once('=')
            .with_context(|| format!("--other {o:?}: expected NAME=PATH"))?;
        if name.is_empty() || name == "bitmapist-server" || name == "redis-server" {
            bail!("--other {o:?}: pick a name other than bitmapist-server and redis-server");
        }
        others.push((name.to_string(), PathBuf::from(path)));
    }
    let time_limit = Duration::from_secs(a.time_limit.unwrap_or(if q { 300 } else { 2400 }));
    start_watchdog(time_limit);
    let server_bin = match a.server {
        Some(p) => p,
        None => build_server()?,
    };
    let opts = compare::CompareOpts {
        out: a.out,
        quick: q,
        server_bin,
        redis_bin: a.redis,
        others,
        server_flags: a.server_flag,
        server_label: a.server_label,
        params,
        duration: Duration::from_secs_f64(
            a.duration.unwrap_or(if q { 0.3 } else { 5.0 }).max(0.05),
        ),
        rounds: a.rounds.unwrap_or(if q { 1 } else { 3 }).max(1),
        connections: a.connections.max(1),
        client_threads: a.client_threads.max(1),
        w2_keys: a.w2_keys.unwrap_or(if q { 10_000 } else { 100_000 }).max(1),
        w2_max_offset: a.w2_max_offset.max(8),
        query_reps: a.query_reps.unwrap_or(if q { 3 } else { 10 }),
        one_bit_keys: a.one_bit_keys.unwrap_or(if q { 20_000 } else { 1_000_000 }),
        wal_records: a.wal_records.unwrap_or(if q { 50_000 } else { 2_000_000 }),
        mem_days,
        work_dir: a.work_dir.unwrap_or_else(std::env::temp_dir),
        keep_data: a.keep_data,
        load_mode: load_mode(&a.load)?,
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        redis_aof: !q && !a.no_redis_aof,
    };
    let report = compare::run(&opts)?;
    println!("{}", report.markdown());
    if !report.failures.is_empty() {
        bail!(
            "{} part(s) of the comparison failed (see Failures above)",
            report.failures.len()
        );
    }
    Ok(())
}

/// Kills the servers and exits if the run takes longer than `limit`.
fn start_watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        server::kill_all_children();
        eprintln!(
            "bitmapist-bench: error: the run passed its time limit of {limit:?}; servers killed"
        );
        std::process::exit(3);
    });
}

/// Builds bitmapist-server in release mode and returns the binary's path.
fn build_server() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building bitmapist-server (cargo build --release --bin bitmapist-server)");
    let out = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--bin",
            "bitmapist-server",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo build for bitmapist-server")?;
    if !out.status.success() {
        bail!(
            "cargo build --release --bin bitmapist-server failed ({})",
            out.status
        );
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["target"]["name"] == "bitmapist-server" {
            if let Some(exe) = v["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo build did not report the bitmapist-server executable")
}

fn cmd_plot(a: PlotArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let report: report::Report =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", a.file.display()))?;
    let out = a.out.unwrap_or_else(|| {
        a.file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    for f in plots::draw_all(&report, &out)? {
        println!("{f}");
    }
    Ok(())
}

fn cmd_load(a: LoadArgs) -> Result<()> {
    let addr = client::resolve_loopback(&a.addr)?;
    let spec = loadgen::LoadSpec {
        connections: a.connections,
        threads: a.threads,
        pipeline: a.pipeline,
        duration: if a.requests.is_some() {
            None
        } else {
            Some(Duration::from_secs_f64(a.duration.max(0.01)))
        },
        max_ops: a.requests,
        ..loadgen::LoadSpec::new(addr)
    };
    let point = workloads::PointShared::new(a.keys.max(1), a.max_offset.max(8), a.seed);
    let result = if a.workload == "mark-event" {
        let ds_params = dataset::Params {
            users: a.users,
            events: a.events,
            days: a.days,
            daily: 50,
            seed: a.seed,
        };
        let ds = dataset::Dataset::generate(ds_params)?;
        let shared = workloads::MarkEventShared::new(&ds, a.seed);
        loadgen::run(&spec, &|c| shared.generator(c), None)?
    } else {
        let cmd = match a.workload.as_str() {
            "setbit" => workloads::PointCmd::SetBit,
            "getbit" => workloads::PointCmd::GetBit,
            "bitcount" => workloads::PointCmd::BitCount,
            "mix" => workloads::PointCmd::Mix,
            other => {
                bail!("unknown --workload {other:?} (setbit, getbit, bitcount, mix, mark-event)")
            }
        };
        loadgen::run(&spec, &|c| point.generator(cmd, c), None)?
    };
    let lat = loadgen::Latency::from_hist(&result.hist[0]);
    println!(
        "{} ops in {:.2} s: {:.0} ops/s; latency p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs; errors {}; client CPU {:.0} %",
        result.ops,
        result.elapsed.as_secs_f64(),
        result.ops_per_sec(),
        lat.p50_us,
        lat.p99_us,
        lat.p999_us,
        lat.max_us,
        result.errors,
        100.0 * result.client_cpu.as_secs_f64() / result.elapsed.as_secs_f64()
    );
    if let Some(e) = result.first_error {
        println!("first error reply: {e}");
    }
    Ok(())
}

fn cmd_dataset(a: DatasetArgs) -> Result<()> {
    let params = dataset::Params {
        users: a.users,
        events: a.events,
        days: a.days,
        daily: a.daily,
        seed: a.seed,
    };
    let ds = dataset::Dataset::generate(params)?;
    let (months, weeks, days) = ds.kinds();
    println!(
        "{}: {} keys ({months} month, {weeks} week, {days} day), {} set bits, {} as Redis strings (generated in {:.1} s)",
        params.label(),
        ds.keys.len(),
        ds.total_bits(),
        report::fmt_bytes(ds.total_bytes() as f64),
        ds.generate_time.as_secs_f64()
    );
    if a.dry_run {
        return Ok(());
    }
    let addr = client::resolve_loopback(&a.addr)?;
    let stats = match load_mode(&a.load)? {
        compare::LoadMode::Set => dataset::load_with_set(
            &mut client::Client::connect(addr, Duration::from_secs(300))?,
            &ds,
        )?,
        compare::LoadMode::SetBit => dataset::load_with_setbit(addr, &ds, 4)?,
    };
    dataset::verify(
        &mut client::Client::connect(addr, Duration::from_secs(300))?,
        &ds,
    )?;
    println!(
        "loaded {} keys ({} bits) in {:.1} s; STRLEN and BITCOUNT of every key checked",
        stats.keys, stats.bits, stats.seconds
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_equals;

    fn split(args: &[&str]) -> Vec<String> {
        split_equals(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn name_equals_value_is_split_at_the_first_equals_sign() {
        assert_eq!(
            split(&[
                "bench",
                "compare",
                "--server-flag=--cache-size=1GiB",
                "--rounds",
                "1"
            ]),
            [
                "bench",
                "compare",
                "--server-flag",
                "--cache-size=1GiB",
                "--rounds",
                "1"
            ]
        );
        assert_eq!(split(&["--duration=2"]), ["--duration", "2"]);
        // Not options: left alone.
        assert_eq!(split(&["a=b", "-x=1", "--=y"]), ["a=b", "-x=1", "--=y"]);
    }
}
