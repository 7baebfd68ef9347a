//! `compare`: runs W1–W6 and the storage figures on this server,
//! redis-server and any `--other` server in one run, alternating servers
//! between rounds, and writes JSON, Markdown and PNG plots.

use crate::client::Client;
use crate::dataset::{self, Dataset, Params};
use crate::loadgen::{self, Latency, LoadResult, LoadSpec};
use crate::report::{LoadRecord, MemoryPoint, QueryRecord, Report, RoundRecord, Row};
use crate::resp::Reply;
use crate::server::{Kind, Server, ServerSpec};
use crate::workloads::{MarkEventShared, PointCmd, PointShared};
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    Set,
    SetBit,
}

#[derive(Clone, Debug)]
pub struct CompareOpts {
    pub out: PathBuf,
    pub quick: bool,
    pub server_bin: PathBuf,
    pub redis_bin: PathBuf,
    pub others: Vec<(String, PathBuf)>,
    pub server_flags: Vec<String>,
    pub server_label: Option<String>,
    pub params: Params,
    pub duration: Duration,
    pub rounds: usize,
    pub connections: usize,
    pub client_threads: usize,
    pub w2_keys: usize,
    pub w2_max_offset: u64,
    pub query_reps: usize,
    pub one_bit_keys: u64,
    pub wal_records: u64,
    /// Extra dataset sizes for the memory plot, as numbers of days.
    pub mem_days: Vec<u32>,
    pub work_dir: PathBuf,
    pub keep_data: bool,
    pub load_mode: LoadMode,
    pub command_line: String,
    /// Also run W1 and W2 on redis-server with its append-only file on
    /// (`appendfsync everysec`): the durability this server gives by default.
    pub redis_aof: bool,
}

/// The name of the redis-server run with its append-only file.
const REDIS_AOF: &str = "redis-server-aof";

const MB: f64 = 1e6;

struct Ctx<'a> {
    o: &'a CompareOpts,
    report: Report,
    t0: Instant,
    phase_t: Instant,
}

impl Ctx<'_> {
    fn log(&self, msg: impl AsRef<str>) {
        eprintln!(
            "[{:7.1}s] {}",
            self.t0.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }

    fn phase_done(&mut self, name: &str) {
        let s = self.phase_t.elapsed().as_secs_f64();
        self.report.phase_seconds.push((name.to_string(), s));
        self.phase_t = Instant::now();
        self.log(format!("{name} done in {s:.1} s"));
    }

    fn fail(&mut self, what: String) {
        self.log(format!("FAILED: {what}"));
        self.report.failures.push(what);
    }

    fn row(
        &mut self,
        section: &str,
        metric: &str,
        unit: &str,
        higher: bool,
        values: Vec<(String, Option<f64>)>,
    ) -> &mut Row {
        self.report.rows.push(Row {
            section: section.into(),
            metric: metric.into(),
            unit: unit.into(),
            higher_is_better: higher,
            values: values.into_iter().collect(),
            ..Default::default()
        });
        self.report.rows.last_mut().expect("just pushed")
    }
}

fn ours_spec(o: &CompareOpts) -> ServerSpec {
    ServerSpec {
        name: "bitmapist-server".into(),
        kind: Kind::Ours,
        bin: o.server_bin.clone(),
        extra: o.server_flags.clone(),
    }
}

fn specs(o: &CompareOpts) -> Vec<ServerSpec> {
    let mut v = vec![
        ours_spec(o),
        ServerSpec {
            name: "redis-server".into(),
            kind: Kind::Redis,
            bin: o.redis_bin.clone(),
            extra: vec![],
        },
    ];
    for (name, path) in &o.others {
        v.push(ServerSpec {
            name: name.clone(),
            kind: Kind::Other,
            bin: path.clone(),
            extra: vec![],
        });
    }
    v
}

/// redis-server logging every write to its append-only file before it
/// replies and flushing it to disk once a second (as this server's log does
/// by default); no rewrites of the file during the run.
fn redis_aof_spec(o: &CompareOpts) -> ServerSpec {
    ServerSpec {
        name: REDIS_AOF.into(),
        kind: Kind::Redis,
        bin: o.redis_bin.clone(),
        extra: [
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--auto-aof-rewrite-percentage",
            "0",
        ]
        .map(String::from)
        .to_vec(),
    }
}

/// Starts redis-server with its append-only file and loads the dataset and
/// W2's keys into it (not timed: only W1 and W2 run on it).
fn start_redis_aof(
    o: &CompareOpts,
    run_dir: &Path,
    ds: &Dataset,
    point: &PointShared,
) -> Result<Server> {
    let spec = redis_aof_spec(o);
    let s = Server::start(&spec, &run_dir.join(&spec.name), &[])?;
    dataset::load_with_set(&mut s.connect()?, ds)?;
    dataset::verify(&mut s.connect()?, ds)
        .with_context(|| format!("{} does not hold the dataset it was sent", s.name()))?;
    populate_points(&s, point)?;
    Ok(s)
}

fn mb(b: u64) -> f64 {
    b as f64 / MB
}

/// Runs the whole comparison and writes the results into `o.out`.
pub fn run(o: &CompareOpts) -> Result<Report> {
    let run_dir = o.work_dir.join(format!(
        "bitmapist-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let _cleanup = DirGuard {
        path: run_dir.clone(),
        keep: o.keep_data,
    };
    let mut ctx = Ctx {
        o,
        report: Report::default(),
        t0: Instant::now(),
        phase_t: Instant::now(),
    };
    let specs = specs(o);
    ctx.report.servers = specs.iter().map(|s| s.name.clone()).collect();
    if o.redis_aof {
        ctx.report.servers.push(REDIS_AOF.into());
    }
    fill_meta(&mut ctx)?;
    ctx.log(format!(
        "data in {}; dataset {}",
        run_dir.display(),
        o.params.label()
    ));

    let ds = Dataset::generate(o.params)?;
    ctx.report.meta.dataset_keys = ds.keys.len() as u64;
    ctx.report.meta.dataset_bits = ds.total_bits();
    ctx.report.meta.dataset_redis_bytes = ds.total_bytes();
    ctx.log(format!(
        "dataset: {} keys, {:.1} M bits, {:.0} MB as strings, generated in {:.1} s",
        ds.keys.len(),
        ds.total_bits() as f64 / 1e6,
        mb(ds.total_bytes()),
        ds.generate_time.as_secs_f64()
    ));
    ctx.phase_done("dataset generation");

    // Main servers, loaded with the dataset.
    let mut servers = Vec::new();
    for s in &specs {
        servers.push(Server::start(s, &run_dir.join(&s.name), &[])?);
    }
    let mut mem: Vec<MemoryPoint> = specs
        .iter()
        .map(|s| MemoryPoint {
            server: s.name.clone(),
            params: Some(o.params),
            keys: ds.keys.len() as u64,
            bits: ds.total_bits(),
            redis_string_bytes: ds.total_bytes(),
            ..Default::default()
        })
        .collect();
    load_dataset_all(&mut ctx, &mut servers, &ds, &mut mem)?;
    ctx.phase_done("load");

    let point = PointShared::new(o.w2_keys, o.w2_max_offset, o.params.seed);
    for s in &servers {
        if let Err(e) = populate_points(s, &point) {
            ctx.fail(format!("populating W2 keys on {}: {e:#}", s.name()));
        }
    }
    let mut with_aof = o.redis_aof;
    if with_aof {
        match start_redis_aof(o, &run_dir, &ds, &point) {
            Ok(s) => {
                ctx.log(format!(
                    "{REDIS_AOF} loaded; RSS {:.0} MB",
                    rss(&s).map(mb).unwrap_or(f64::NAN)
                ));
                servers.push(s);
            }
            Err(e) => {
                ctx.fail(format!("starting {REDIS_AOF}: {e:#}"));
                with_aof = false;
            }
        }
    }
    w1(&mut ctx, &servers, &ds);
    ctx.phase_done("W1");
    w2(&mut ctx, &servers, &point);
    ctx.phase_done("W2");
    if with_aof {
        if let Some(mut s) = servers.pop() {
            let _ = s.stop();
        }
    }
    let queries = Queries::new(&ds);
    let warm = w3(&mut ctx, &servers, &ds, &queries);
    ctx.phase_done("W3");
    w6(&mut ctx, &mut servers, &ds, &point);
    w6_cache_holds_dataset(&mut ctx, &mut servers, &ds, &point);
    ctx.phase_done("W6");
    w4_w5(&mut ctx, &mut servers, &ds, &queries, &warm, &mut mem);
    ctx.phase_done("W4+W5");
    for s in servers.iter_mut() {
        let _ = s.stop();
    }
    drop(servers);
    ctx.report.memory.extend(mem);

    storage_one_bit_keys(&mut ctx, &specs, &run_dir);
    ctx.phase_done("1M one-bit keys");
    storage_wal_replay(&mut ctx, &run_dir);
    ctx.phase_done("WAL replay");
    memory_scales(&mut ctx, &specs, &run_dir);
    ctx.phase_done("memory scales");

    ctx.report.meta.elapsed_s = ctx.t0.elapsed().as_secs_f64();
    ctx.report.write(&o.out)?;
    if let Err(e) = crate::plots::draw_all(&ctx.report, &o.out) {
        ctx.fail(format!("plots: {e:#}"));
        ctx.report.write(&o.out)?;
    }
    ctx.log(format!("results in {}", o.out.display()));
    Ok(ctx.report)
}

struct DirGuard {
    path: PathBuf,
    keep: bool,
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn fill_meta(ctx: &mut Ctx<'_>) -> Result<()> {
    let o = ctx.o;
    let m = &mut ctx.report.meta;
    m.mode = if o.quick { "quick" } else { "full" }.into();
    m.started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    m.cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    m.host = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    m.server_bin = o.server_bin.display().to_string();
    m.server_commit = match &o.server_label {
        Some(l) => l.clone(),
        None => git_commit(),
    };
    m.redis_version = redis_version(&o.redis_bin);
    m.dataset = o.params;
    m.connections = o.connections;
    m.client_threads = o.client_threads;
    m.duration_s = o.duration.as_secs_f64();
    m.rounds = o.rounds;
    m.command_line = o.command_line.clone();
    Ok(())
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .map(|c| format!("commit {c}"))
        .unwrap_or_else(|| "unknown commit".into())
}

fn redis_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|out| {
            let t = String::from_utf8_lossy(&out.stdout);
            t.split_whitespace()
                .find_map(|w| w.strip_prefix("v="))
                .map(|v| format!("redis-server {v}"))
                .unwrap_or_else(|| t.trim().to_string())
        })
        .unwrap_or_else(|| "redis-server (version unknown)".into())
}

fn rss(s: &Server) -> Option<u64> {
    s.proc_stats().ok().map(|p| p.rss_bytes)
}

fn info_num(s: &Server, section: &str, field: &str) -> Option<f64> {
    s.connect().ok()?.info_field(section, field).ok().flatten()
}

/// Waits until a running checkpoint (ours) or BGSAVE (redis) is over.
fn wait_persistence_idle(s: &Server, limit: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let busy = [
            "checkpoint_in_progress",
            "rdb_bgsave_in_progress",
            "backup_in_progress",
        ]
        .iter()
        .any(|f| info_num(s, "persistence", f).unwrap_or(0.0) > 0.0);
        if !busy {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn load_dataset_all(
    ctx: &mut Ctx<'_>,
    servers: &mut [Server],
    ds: &Dataset,
    mem: &mut [MemoryPoint],
) -> Result<()> {
    let mut load_s = Vec::new();
    for (i, s) in servers.iter_mut().enumerate() {
        let r = (|| -> Result<f64> {
            let stats = match ctx.o.load_mode {
                LoadMode::Set => dataset::load_with_set(&mut s.connect()?, ds)?,
                LoadMode::SetBit => dataset::load_with_setbit(s.addr(), ds, 4)?,
            };
            mem[i].rss_after_load = rss(s);
            mem[i].used_memory = info_num(s, "memory", "used_memory").map(|v| v as u64);
            dataset::verify(&mut s.connect()?, ds)
                .with_context(|| format!("{} does not hold the dataset it was sent", s.name()))?;
            Ok(stats.seconds)
        })();
        match r {
            Ok(secs) => {
                ctx.log(format!(
                    "loaded {} in {secs:.1} s; RSS {:.0} MB",
                    s.name(),
                    mem[i].rss_after_load.map(mb).unwrap_or(f64::NAN)
                ));
                load_s.push((s.name().to_string(), Some(secs)));
            }
            Err(e) => {
                if i < 2 {
                    return Err(e.context(format!("loading the dataset into {}", s.name())));
                }
                ctx.fail(format!("loading the dataset into {}: {e:#}", s.name()));
                load_s.push((s.name().to_string(), None));
            }
        }
    }
    let how = match ctx.o.load_mode {
        LoadMode::Set => "SET of client-built strings, 8 in flight",
        LoadMode::SetBit => "pipelined SETBIT, 4 connections",
    };
    ctx.row("W5", "dataset load time", "s", false, load_s).note = Some(how.into());
    Ok(())
}

fn populate_points(s: &Server, point: &PointShared) -> Result<()> {
    let mut c = s.connect()?;
    for batch in point.populate_commands(4) {
        let n = count_commands(&batch);
        c.send_raw(&batch)?;
        for _ in 0..n {
            if let Some(e) = c.skip_reply()? {
                bail!("SETBIT answered {e}");
            }
        }
    }
    Ok(())
}

fn count_commands(buf: &[u8]) -> usize {
    // Every command starts with '*' at the start of a line; values here
    // are numbers and key names, never holding "\r\n*".
    let mut n = usize::from(buf.first() == Some(&b'*'));
    n += buf.windows(3).filter(|w| w == b"\n*").count();
    n
}

/// Waits until no server uses more than a quarter of a core (over 200 ms),
/// up to `limit`, so that one server's background work (a checkpoint
/// after a write load) does not slow the next server's run. Returns
/// whether they went quiet. (Not "no CPU at all": bitmapist-server's
/// expiry sweep keeps using some while there are unsaved keys.)
fn settle(servers: &[&Server], limit: Duration) -> bool {
    let t0 = Instant::now();
    let window = Duration::from_millis(200);
    loop {
        let before: Vec<Duration> = servers
            .iter()
            .map(|s| s.proc_stats().map(|p| p.cpu).unwrap_or_default())
            .collect();
        std::thread::sleep(window);
        let quiet = servers.iter().zip(&before).all(|(s, b)| {
            let now = s.proc_stats().map(|p| p.cpu).unwrap_or_default();
            now.saturating_sub(*b) < window / 4
        });
        if quiet {
            return true;
        }
        if t0.elapsed() > limit {
            return false;
        }
    }
}

/// One load on one server. The server's CPU time is counted from the
/// start of the load until the server is quiet again afterwards, so work
/// it defers (checkpoints of what the load wrote) is included.
fn measured_load(
    s: &Server,
    spec: &LoadSpec,
    factory: loadgen::GenFactory<'_>,
    phase: Option<(&AtomicUsize, usize)>,
) -> Result<(LoadResult, Duration)> {
    let before = s.proc_stats()?;
    let r = loadgen::run(spec, factory, phase)?;
    settle(&[s], Duration::from_secs(20));
    let after = s.proc_stats()?;
    Ok((r, after.cpu.saturating_sub(before.cpu)))
}

struct Agg {
    rounds: Vec<RoundRecord>,
    hist: Histogram<u64>,
    ops: u64,
    cpu: Duration,
    errors: u64,
    first_error: Option<String>,
}

impl Agg {
    fn new() -> Agg {
        Agg {
            rounds: vec![],
            hist: loadgen::new_histogram(),
            ops: 0,
            cpu: Duration::ZERO,
            errors: 0,
            first_error: None,
        }
    }

    fn add(&mut self, r: &LoadResult, cpu: Duration) {
        let ops = r.ops.max(1) as f64;
        self.rounds.push(RoundRecord {
            ops_per_sec: r.ops_per_sec(),
            cpu_us_per_op: cpu.as_secs_f64() * 1e6 / ops,
            client_cpu_pct: 100.0 * r.client_cpu.as_secs_f64() / r.elapsed.as_secs_f64().max(1e-9),
        });
        for h in &r.hist {
            let _ = self.hist.add(h);
        }
        self.ops += r.ops;
        self.cpu += cpu;
        self.errors += r.errors;
        if self.first_error.is_none() {
            self.first_error = r.first_error.clone();
        }
    }

    fn record(&self, section: &str, config: &str, server: &str) -> LoadRecord {
        let mut tp: Vec<f64> = self.rounds.iter().map(|r| r.ops_per_sec).collect();
        tp.sort_by(f64::total_cmp);
        let median = if tp.is_empty() {
            0.0
        } else if tp.len() % 2 == 1 {
            tp[tp.len() / 2]
        } else {
            (tp[tp.len() / 2 - 1] + tp[tp.len() / 2]) / 2.0
        };
        LoadRecord {
            section: section.into(),
            config: config.into(),
            server: server.into(),
            rounds: self.rounds.clone(),
            ops_per_sec: median,
            cpu_us_per_op: Some(self.cpu.as_secs_f64() * 1e6 / self.ops.max(1) as f64),
            latency: Latency::from_hist(&self.hist),
            errors: self.errors,
            first_error: self.first_error.clone(),
        }
    }
}

/// Runs one load configuration on every server, `rounds` times,
/// alternating the order, after a short warm-up on each.
fn alternate(
    ctx: &mut Ctx<'_>,
    servers: &[Server],
    section: &str,
    config: &str,
    pipeline: usize,
    make: &(dyn Fn(usize) -> Box<dyn loadgen::OpGen> + Sync),
) -> Vec<LoadRecord> {
    let o = ctx.o;
    let mut aggs: Vec<Option<Agg>> = servers.iter().map(|_| Some(Agg::new())).collect();
    let spec_for = |s: &Server, d: Duration| LoadSpec {
        connections: o.connections,
        threads: o.client_threads,
        pipeline,
        duration: Some(d),
        ..LoadSpec::new(s.addr())
    };
    let warm = (o.duration / 5).min(Duration::from_secs(1));
    let all: Vec<&Server> = servers.iter().collect();
    for (i, s) in servers.iter().enumerate() {
        if !settle(&all, Duration::from_secs(20)) {
            ctx.log("servers still busy after 20 s; measuring anyway");
        }
        if let Err(e) = loadgen::run(&spec_for(s, warm), make, None) {
            ctx.fail(format!("{section} {config} warm-up on {}: {e:#}", s.name()));
            aggs[i] = None;
        }
    }
    for round in 0..o.rounds {
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            if aggs[i].is_none() {
                continue;
            }
            let s = &servers[i];
            if !settle(&all, Duration::from_secs(20)) {
                ctx.log("servers still busy after 20 s; measuring anyway");
            }
            match measured_load(s, &spec_for(s, o.duration), make, None) {
                Ok((r, cpu)) => {
                    ctx.log(format!(
                        "{section} {config} round {} {}: {:.0} ops/s, p50 {:.0} µs, p99 {:.0} µs, server CPU {:.2} µs/op, client CPU {:.0} %{}",
                        round + 1,
                        s.name(),
                        r.ops_per_sec(),
                        r.hist[0].value_at_quantile(0.5) as f64 / 1e3,
                        r.hist[0].value_at_quantile(0.99) as f64 / 1e3,
                        cpu.as_secs_f64() * 1e6 / r.ops.max(1) as f64,
                        100.0 * r.client_cpu.as_secs_f64() / r.elapsed.as_secs_f64(),
                        if r.errors > 0 {
                            format!(", {} ERRORS ({})", r.errors, r.first_error.clone().unwrap_or_default())
                        } else {
                            String::new()
                        }
                    ));
                    if let Some(a) = aggs[i].as_mut() {
                        a.add(&r, cpu);
                    }
                }
                Err(e) => {
                    ctx.fail(format!("{section} {config} on {}: {e:#}", s.name()));
                    aggs[i] = None;
                }
            }
        }
    }
    let mut out = Vec::new();
    for (i, a) in aggs.into_iter().enumerate() {
        if let Some(a) = a {
            let rec = a.record(section, config, servers[i].name());
            if rec.errors > 0 && i < 2 {
                ctx.fail(format!(
                    "{section} {config} on {}: {} error replies, first {}",
                    servers[i].name(),
                    rec.errors,
                    rec.first_error.clone().unwrap_or_default()
                ));
            }
            out.push(rec);
        }
    }
    ctx.report.loads.extend(out.clone());
    out
}

fn value_of(
    recs: &[LoadRecord],
    servers: &[Server],
    f: impl Fn(&LoadRecord) -> Option<f64>,
) -> Vec<(String, Option<f64>)> {
    servers
        .iter()
        .map(|s| {
            (
                s.name().to_string(),
                recs.iter().find(|r| r.server == s.name()).and_then(&f),
            )
        })
        .collect()
}

fn load_rows(
    ctx: &mut Ctx<'_>,
    section: &str,
    label: &str,
    unit: &str,
    recs: &[LoadRecord],
    servers: &[Server],
    summary: bool,
) {
    ctx.row(
        section,
        &format!("{label}: throughput"),
        unit,
        true,
        value_of(recs, servers, |r| Some(r.ops_per_sec)),
    )
    .summary = summary;
    ctx.row(
        section,
        &format!("{label}: p50 latency"),
        "µs",
        false,
        value_of(recs, servers, |r| Some(r.latency.p50_us)),
    );
    ctx.row(
        section,
        &format!("{label}: p99 latency"),
        "µs",
        false,
        value_of(recs, servers, |r| Some(r.latency.p99_us)),
    );
    ctx.row(
        section,
        &format!("{label}: p99.9 latency"),
        "µs",
        false,
        value_of(recs, servers, |r| Some(r.latency.p999_us)),
    );
    ctx.row(
        section,
        &format!("{label}: server CPU per op"),
        "µs",
        false,
        value_of(recs, servers, |r| r.cpu_us_per_op),
    );
}

fn w1(ctx: &mut Ctx<'_>, servers: &[Server], ds: &Dataset) {
    let shared = MarkEventShared::new(ds, ctx.o.params.seed);
    let make = |c: usize| shared.generator(c);
    let recs = alternate(ctx, servers, "W1", "mark_event", 1, &make);
    let label = format!(
        "mark_event (MULTI, 3×SETBIT, EXEC), {} conns",
        ctx.o.connections
    );
    load_rows(ctx, "W1", &label, "tx/s", &recs, servers, true);
}

/// CPU each server uses while idle, right after W2's SETBIT runs, over 3 s.
fn idle_cpu(ctx: &mut Ctx<'_>, servers: &[Server]) {
    let dirty = servers
        .first()
        .and_then(|s| info_num(s, "memory", "dirty_bytes"))
        .map(|d| format!("{}: dirty_bytes {d:.0} at the start", servers[0].name()))
        .unwrap_or_default();
    let before: Vec<Option<Duration>> = servers
        .iter()
        .map(|s| s.proc_stats().ok().map(|p| p.cpu))
        .collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let secs = t.elapsed().as_secs_f64();
    let values: Vec<(String, Option<f64>)> = servers
        .iter()
        .zip(before)
        .map(|(s, b)| {
            let v = b.and_then(|b| {
                let a = s.proc_stats().ok()?.cpu;
                Some(100.0 * a.saturating_sub(b).as_secs_f64() / secs)
            });
            (s.name().to_string(), v)
        })
        .collect();
    ctx.log(format!("idle CPU after W2: {values:?}"));
    let r = ctx.row(
        "W2",
        "idle CPU right after the SETBIT runs (no client), over 3 s",
        "% of a core",
        false,
        values,
    );
    r.note = Some(dirty);
}

fn w2(ctx: &mut Ctx<'_>, servers: &[Server], point: &PointShared) {
    for cmd in [PointCmd::SetBit, PointCmd::GetBit, PointCmd::BitCount] {
        for pipeline in [1usize, 16] {
            let make = |c: usize| point.generator(cmd, c);
            let config = format!("{} P{pipeline}", cmd.name());
            let recs = alternate(ctx, servers, "W2", &config, pipeline, &make);
            let label = format!("{}, pipeline {pipeline}", cmd.name());
            load_rows(ctx, "W2", &label, "req/s", &recs, servers, pipeline == 16);
        }
        if cmd == PointCmd::SetBit {
            idle_cpu(ctx, servers);
        }
    }
}

/// W3's queries, chosen so that W4's cold pass touches different keys
/// with each.
struct Queries {
    all_keys: Vec<String>,
    month_and: [String; 2],
    month_or: [String; 2],
    week_and: Vec<String>,
    week_or: Vec<String>,
    get_month: String,
}

impl Queries {
    fn new(ds: &Dataset) -> Queries {
        let e = ds.params.events;
        let month = |ev: u32| -> String {
            let m = ds.month_keys(ev % e);
            m.get(1).or(m.first()).cloned().unwrap_or_default()
        };
        Queries {
            all_keys: ds.keys.iter().map(|k| k.name.clone()).collect(),
            month_and: [month(0), month(1)],
            month_or: [month(2), month(3)],
            week_and: ds.full_week(4 % e).1,
            week_or: ds.full_week(5 % e).1,
            get_month: month(6),
        }
    }

    /// (name, what to run) — a step is a list of commands timed together.
    fn list(&self) -> Vec<(&'static str, Vec<Vec<String>>)> {
        let bitop = |op: &str, keys: &[String]| {
            let mut c = vec!["BITOP".to_string(), op.into(), "bench:dest".into()];
            c.extend(keys.iter().cloned());
            vec![c]
        };
        vec![
            (
                "BITCOUNT every key",
                self.all_keys
                    .iter()
                    .map(|k| vec!["BITCOUNT".into(), k.clone()])
                    .collect(),
            ),
            ("BITOP AND of 2 month keys", bitop("AND", &self.month_and)),
            ("BITOP OR of 2 month keys", bitop("OR", &self.month_or)),
            (
                "BITOP AND of a week's 7 day keys",
                bitop("AND", &self.week_and),
            ),
            (
                "BITOP OR of a week's 7 day keys",
                bitop("OR", &self.week_or),
            ),
            (
                "GET a month key",
                vec![vec!["GET".into(), self.get_month.clone()]],
            ),
            (
                "BITCOUNT key 0 -1 of every key",
                self.all_keys
                    .iter()
                    .map(|k| vec!["BITCOUNT".into(), k.clone(), "0".into(), "-1".into()])
                    .collect(),
            ),
        ]
    }
}

/// Runs a step (commands one after the other on one connection; pipelined
/// in batches of 64 when there are many) and returns its wall time.
fn time_step(c: &mut Client, step: &[Vec<String>]) -> Result<Duration> {
    let t0 = Instant::now();
    if step.len() == 1 {
        c.call_ok(&step[0])?;
    } else {
        for chunk in step.chunks(64) {
            let mut buf = Vec::new();
            for cmd in chunk {
                crate::resp::encode(&mut buf, cmd);
            }
            c.send_raw(&buf)?;
            for cmd in chunk {
                if let Some(e) = c.skip_reply()? {
                    bail!(
                        "{} {} answered {e}",
                        cmd[0],
                        cmd.get(1).map(String::as_str).unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(t0.elapsed())
}

/// Warm query latency (p50, ms) per query and server.
type Warm = BTreeMap<(String, String), f64>;

fn w3(ctx: &mut Ctx<'_>, servers: &[Server], _ds: &Dataset, q: &Queries) -> Warm {
    let mut warm = Warm::new();
    let reps = ctx.o.query_reps.max(1);
    let mut conns: Vec<Option<Client>> = servers.iter().map(|s| s.connect().ok()).collect();
    // One untimed pass so every server is warm.
    for (i, c) in conns.iter_mut().enumerate() {
        if let Some(c) = c {
            for (_, step) in q.list() {
                if let Err(e) = time_step(c, &step) {
                    ctx.report
                        .failures
                        .push(format!("W3 warm-up on {}: {e:#}", servers[i].name()));
                    break;
                }
            }
        }
    }
    let all: Vec<&Server> = servers.iter().collect();
    // Each BITOP twice: into the same destination every time (a report
    // run again; bitmapist-server answers a repeat over unchanged keys
    // from its memo), and into a new key every time (computed each time).
    let mut queries: Vec<(String, Vec<Vec<String>>, bool)> = Vec::new();
    for (name, step) in q.list() {
        let bitop = name.starts_with("BITOP");
        queries.push((name.to_string(), step.clone(), false));
        if bitop {
            queries.push((format!("{name} into a new key each time"), step, true));
        }
    }
    for (name, step, fresh) in queries {
        let name = name.as_str();
        settle(&all, Duration::from_secs(20));
        let mut samples: Vec<Vec<f64>> = vec![vec![]; servers.len()];
        let mut failed = vec![false; servers.len()];
        for rep in 0..reps {
            let mut order: Vec<usize> = (0..servers.len()).collect();
            if rep % 2 == 1 {
                order.reverse();
            }
            for i in order {
                if failed[i] {
                    continue;
                }
                let Some(c) = conns[i].as_mut() else {
                    failed[i] = true;
                    continue;
                };
                let mut step = step.clone();
                let dest = format!("bench:fresh:{rep}");
                if fresh {
                    step[0][2] = dest.clone();
                }
                match time_step(c, &step) {
                    Ok(d) => samples[i].push(d.as_secs_f64() * 1e3),
                    Err(e) => {
                        failed[i] = true;
                        ctx.fail(format!("W3 {name} on {}: {e:#}", servers[i].name()));
                    }
                }
                if fresh {
                    // Untimed: the results would otherwise stay for the
                    // memory measurements that follow.
                    let _ = c.call(&["DEL", dest.as_str()]);
                }
            }
        }
        let mut values = Vec::new();
        let mut line = format!("W3 {name}:");
        for (i, s) in servers.iter().enumerate() {
            let rec = query_record("W3", name, s.name(), &samples[i]);
            let v = (!failed[i] && !samples[i].is_empty()).then_some(rec.p50_ms);
            if let Some(v) = v {
                warm.insert((name.to_string(), s.name().to_string()), v);
                line.push_str(&format!(" {} {v:.2} ms", s.name()));
            }
            values.push((s.name().to_string(), v));
            ctx.report.queries.push(rec);
        }
        ctx.log(line);
        let summary = name.starts_with("BITOP OR of a week's 7 day keys")
            || name == "BITCOUNT key 0 -1 of every key";
        let r = ctx.row(
            "W3",
            &format!("{name}, warm (median of {reps})"),
            "ms",
            false,
            values,
        );
        r.summary = summary;
        if name.contains("every key") {
            r.note = Some(format!(
                "{} keys, one connection, pipelined 64 at a time",
                q.all_keys.len()
            ));
        }
    }
    for c in conns.iter_mut().flatten() {
        let _ = c.call(&["DEL", "bench:dest"]);
    }
    warm
}

fn query_record(section: &str, query: &str, server: &str, samples: &[f64]) -> QueryRecord {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    QueryRecord {
        section: section.into(),
        query: query.into(),
        server: server.into(),
        samples_ms: samples.to_vec(),
        p50_ms: s.get(s.len() / 2).copied().unwrap_or(0.0),
        max_ms: s.last().copied().unwrap_or(0.0),
    }
}

/// Reads every key with GET and BITCOUNT key 0 -1 (forcing a decode).
fn touch_every_key(s: &Server, keys: &[String]) -> Result<Duration> {
    let mut c = s.connect()?;
    let mut step: Vec<Vec<String>> = keys
        .iter()
        .map(|k| vec!["BITCOUNT".to_string(), k.clone(), "0".into(), "-1".into()])
        .collect();
    step.extend(keys.iter().map(|k| vec!["GET".to_string(), k.clone()]));
    time_step(&mut c, &step)
}

fn w4_w5(
    ctx: &mut Ctx<'_>,
    servers: &mut [Server],
    ds: &Dataset,
    q: &Queries,
    warm: &Warm,
    mem: &mut [MemoryPoint],
) {
    let names: Vec<String> = servers.iter().map(|s| s.name().to_string()).collect();
    let keys: Vec<String> = ds.keys.iter().map(|k| k.name.clone()).collect();
    let queries = q.list();
    // cold[query][server]
    let mut cold: BTreeMap<&str, BTreeMap<String, Option<f64>>> = BTreeMap::new();
    let mut open_rss: Vec<Option<f64>> = vec![None; servers.len()];
    let mut open_time: Vec<Option<f64>> = vec![None; servers.len()];
    let mut touched_rss: Vec<Option<f64>> = vec![None; servers.len()];
    let mut bitcount_rss: Vec<Option<f64>> = vec![None; servers.len()];
    let mut db_note = String::new();
    let mut small_open_rss: Vec<Option<f64>> = vec![None; servers.len()];
    let mut small_touched_rss: Vec<Option<f64>> = vec![None; servers.len()];
    let mut small_bitcount: Vec<Option<f64>> = vec![None; servers.len()];
    let mut db_bytes: Vec<Option<f64>> = vec![None; servers.len()];
    let mut cache_note = String::new();
    for (i, s) in servers.iter_mut().enumerate() {
        if s.spec.kind == Kind::Redis {
            // In memory: no cold state. Its on-disk size is an RDB dump.
            let rdb = s.dir.join("dump.rdb");
            if !rdb.exists() {
                let _ = s.connect().and_then(|mut c| c.call_ok(&["SAVE"]));
            }
            db_bytes[i] = std::fs::metadata(&rdb).ok().map(|m| mb(m.len()));
            // Its memory does not change with reads; the RSS with the
            // dataset alone is the one after loading (W1/W2 data came later).
            touched_rss[i] = mem[i].rss_after_load.map(mb);
            bitcount_rss[i] = touched_rss[i];
            mem[i].rss_after_touch = mem[i].rss_after_load;
            continue;
        }
        let r = (|| -> Result<()> {
            s.connect()?.call_ok(&["SAVE"])?;
            wait_persistence_idle(s, Duration::from_secs(300));
            db_bytes[i] = Some(mb(s.db_bytes()));
            mem[i].db_bytes = Some(s.db_bytes());
            if s.spec.kind == Kind::Ours {
                let info = s.connect()?.info("persistence")?;
                let get = |k: &str| {
                    info.iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_else(|| "?".into())
                };
                db_note = format!(
                    "{}: db_file_bytes {}, db_pages {}, db_free_pages {}, wal_segment_bytes {} after SAVE",
                    s.name(),
                    get("db_file_bytes"),
                    get("db_pages"),
                    get("db_free_pages"),
                    get("wal_segment_bytes")
                );
            }
            let open = s.restart(&[])?;
            open_time[i] = Some(open.as_secs_f64() * 1e3);
            let r0 = rss(s);
            open_rss[i] = r0.map(mb);
            mem[i].rss_after_open = r0;
            let mut c = s.connect()?;
            for (name, step) in &queries {
                let d = time_step(&mut c, step)?;
                ctx.log(format!(
                    "W4 {} cold: {name} {:.2} ms",
                    s.name(),
                    d.as_secs_f64() * 1e3
                ));
                cold.entry(name)
                    .or_default()
                    .insert(s.name().to_string(), Some(d.as_secs_f64() * 1e3));
            }
            let _ = c.call(&["DEL", "bench:dest"]);
            bitcount_rss[i] = rss(s).map(mb);
            touch_every_key(s, &keys)?;
            let r1 = rss(s);
            touched_rss[i] = r1.map(mb);
            mem[i].rss_after_touch = r1;
            if s.spec.kind == Kind::Ours {
                if let Ok(mut c) = s.connect() {
                    if let Ok(info) = c.info("memory") {
                        let get = |k: &str| {
                            info.iter()
                                .find(|(n, _)| n == k)
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default()
                        };
                        cache_note = format!(
                            "after touching every key: cache_bytes {} of {}, cache_keys {}, evictions {}",
                            get("cache_bytes"),
                            get("cache_budget_bytes"),
                            get("cache_keys"),
                            get("cache_evictions")
                        );
                    }
                }
                // With a 64 MiB cache.
                s.restart(&["--cache-size".into(), "64MiB".into()])?;
                small_open_rss[i] = rss(s).map(mb);
                let t = {
                    let mut c = s.connect()?;
                    time_step(&mut c, &queries[queries.len() - 1].1)?
                };
                small_bitcount[i] = Some(t.as_secs_f64() * 1e3);
                touch_every_key(s, &keys)?;
                small_touched_rss[i] = rss(s).map(mb);
                s.restart(&[])?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            ctx.fail(format!("W4/W5 on {}: {e:#}", s.name()));
        }
    }
    // W4 rows: cold first touch vs Redis (always in memory: its warm median).
    for (name, _) in &queries {
        let mut values: Vec<(String, Option<f64>)> = Vec::new();
        for n in &names {
            let v = cold.get(name).and_then(|m| m.get(n).copied().flatten());
            let v = v.or_else(|| {
                (n == "redis-server")
                    .then(|| warm.get(&(name.to_string(), n.clone())).copied())
                    .flatten()
            });
            values.push((n.clone(), v));
        }
        let r = ctx.row(
            "W4",
            &format!("{name}, cold (first touch after restart)"),
            "ms",
            false,
            values,
        );
        r.note = Some(
            "redis-server keeps everything in memory: its column is the warm W3 median".into(),
        );
        r.summary = *name == "BITCOUNT key 0 -1 of every key" || *name == "BITCOUNT every key";
    }
    let zip = |v: &[Option<f64>]| -> Vec<(String, Option<f64>)> {
        names.iter().cloned().zip(v.iter().copied()).collect()
    };
    ctx.row(
        "W4",
        "restart: time until PING answers",
        "ms",
        false,
        zip(&open_time),
    )
    .note = Some("SHUTDOWN, start on the loaded database, first PONG".into());
    let redis_used: Vec<Option<f64>> = mem.iter().map(|m| m.used_memory.map(mb)).collect();
    let after_load: Vec<Option<f64>> = mem.iter().map(|m| m.rss_after_load.map(mb)).collect();
    ctx.row(
        "W5",
        "RSS after loading the dataset",
        "MB",
        false,
        zip(&after_load),
    )
    .summary = true;
    ctx.row(
        "W5",
        "used_memory (INFO memory) after loading",
        "MB",
        false,
        zip(&redis_used),
    );
    let r = ctx.row(
        "W5",
        "RSS right after a restart (cold open)",
        "MB",
        false,
        zip(&open_rss),
    );
    r.note = Some("redis-server: n/a (no cold state)".into());
    let r = ctx.row(
        "W5",
        "RSS after W4's cold queries (the last: BITCOUNT 0 -1 of every key), default cache",
        "MB",
        false,
        zip(&bitcount_rss),
    );
    r.note = Some("before any GET of every key: decoded bitmaps, no whole-value replies".into());
    let r = ctx.row(
        "W5",
        "RSS after touching every key (then GET + BITCOUNT 0 -1 of each), default cache",
        "MB",
        false,
        zip(&touched_rss),
    );
    r.note = Some(format!(
        "redis-server: its RSS with the dataset loaded. {cache_note}"
    ));
    ctx.row(
        "W5",
        "RSS right after open, --cache-size 64MiB",
        "MB",
        false,
        zip(&small_open_rss),
    );
    ctx.row(
        "W5",
        "RSS after touching every key, --cache-size 64MiB",
        "MB",
        false,
        zip(&small_touched_rss),
    );
    ctx.row(
        "W5",
        "BITCOUNT 0 -1 of every key from a cold start, --cache-size 64MiB",
        "ms",
        false,
        zip(&small_bitcount),
    );
    let r = ctx.row(
        "W5",
        "database on disk (file + log; Redis: RDB dump)",
        "MB",
        false,
        zip(&db_bytes),
    );
    r.summary = true;
    r.note = Some(db_note);

    // Storage targets from the storage issue.
    let ours = names[0].clone();
    let redis = names[1].clone();
    let target = |ctx: &mut Ctx<'_>,
                  metric: &str,
                  unit: &str,
                  v: Option<f64>,
                  redis_v: Option<f64>,
                  t: &str,
                  limit: f64| {
        let r = ctx.row(
            "storage",
            metric,
            unit,
            false,
            vec![(ours.clone(), v), (redis.clone(), redis_v)],
        );
        r.target = Some(t.into());
        r.target_met = v.map(|v| v <= limit);
    };
    target(
        ctx,
        "RSS right after open (the W5 dataset)",
        "MB",
        open_rss[0],
        None,
        "≤ 16 MB",
        16.0,
    );
    target(
        ctx,
        "RSS after touching every key from a cold start, default cache",
        "MB",
        touched_rss[0],
        touched_rss[1],
        "≤ 150 MB",
        150.0,
    );
    target(
        ctx,
        "RSS after touching every key from a cold start, --cache-size 64MiB",
        "MB",
        small_touched_rss[0],
        touched_rss[1],
        "≤ 96 MB",
        96.0,
    );
    let cold_bc = cold
        .get("BITCOUNT every key")
        .and_then(|m| m.get(&ours).copied().flatten());
    let redis_bc = warm
        .get(&("BITCOUNT every key".to_string(), redis.clone()))
        .copied();
    target(
        ctx,
        "BITCOUNT of every key from a cold start",
        "ms",
        cold_bc,
        redis_bc,
        "≤ 500 ms",
        500.0,
    );
    let cold_bcr = cold
        .get("BITCOUNT key 0 -1 of every key")
        .and_then(|m| m.get(&ours).copied().flatten());
    let redis_bcr = warm
        .get(&("BITCOUNT key 0 -1 of every key".to_string(), redis.clone()))
        .copied();
    let r = ctx.row(
        "storage",
        "BITCOUNT key 0 -1 of every key (decodes every bitmap), cold",
        "ms",
        false,
        vec![(ours.clone(), cold_bcr), (redis.clone(), redis_bcr)],
    );
    r.note = Some("after the other cold queries of W4; redis-server: warm".into());
}

/// W6's load on `s`: the point-op mix, unpipelined, twice as long as a W2 run.
fn w6_load_spec(o: &CompareOpts, s: &Server) -> LoadSpec {
    LoadSpec {
        connections: o.connections,
        threads: o.client_threads,
        pipeline: 1,
        duration: Some(o.duration.max(Duration::from_millis(500)) * 2),
        ..LoadSpec::new(s.addr())
    }
}

fn w6(ctx: &mut Ctx<'_>, servers: &mut [Server], ds: &Dataset, point: &PointShared) {
    let o = ctx.o;
    let keys: Vec<String> = ds.keys.iter().map(|k| k.name.clone()).collect();
    let mut idle_p99 = Vec::new();
    let mut ck_p99 = Vec::new();
    let mut bak_p99 = Vec::new();
    let mut ck_count = Vec::new();
    let mut bak_count = Vec::new();
    let mut ck_ms = Vec::new();
    let all: Vec<&Server> = servers.iter().collect();
    for s in servers.iter() {
        let name = s.name().to_string();
        settle(&all, Duration::from_secs(20));
        let make = |c: usize| point.generator(PointCmd::Mix, c);
        let spec = w6_load_spec(o, s);
        let idle = loadgen::run(&spec, &make, None);
        let idle = match idle {
            Ok(r) => {
                let rec = load_record_from("W6", "idle", &name, &r);
                let p99 = rec.latency.p99_us;
                ctx.report.loads.push(rec);
                Some(p99)
            }
            Err(e) => {
                ctx.fail(format!("W6 idle on {name}: {e:#}"));
                None
            }
        };
        idle_p99.push((name.clone(), idle));
        // During checkpoints (BGSAVE), with every dataset key dirtied first.
        settle(&all, Duration::from_secs(20));
        let ck = interfere(s, &spec, &make, &keys, Interference::Checkpoint);
        match ck {
            Ok(Some((r, n, avg_ms))) => {
                let rec = load_record_from("W6", "during checkpoint", &name, &r);
                ctx.log(format!(
                    "W6 {name}: idle p99 {:.0} µs, during {n} checkpoints (avg {avg_ms:.0} ms) p99 {:.0} µs ({} ops)",
                    idle.unwrap_or(f64::NAN),
                    rec.latency.p99_us,
                    rec.latency.count
                ));
                ck_p99.push((
                    name.clone(),
                    (rec.latency.count > 0).then_some(rec.latency.p99_us),
                ));
                ck_count.push((name.clone(), Some(n as f64)));
                ck_ms.push((name.clone(), Some(avg_ms)));
                ctx.report.loads.push(rec);
            }
            Ok(None) => {
                ck_p99.push((name.clone(), None));
                ck_count.push((name.clone(), None));
                ck_ms.push((name.clone(), None));
            }
            Err(e) => {
                ctx.fail(format!("W6 checkpoint on {name}: {e:#}"));
                ck_p99.push((name.clone(), None));
                ck_count.push((name.clone(), None));
                ck_ms.push((name.clone(), None));
            }
        }
        let bak = if s.spec.kind == Kind::Ours {
            settle(&all, Duration::from_secs(20));
            interfere(s, &spec, &make, &keys, Interference::Backup)
        } else {
            Ok(None)
        };
        match bak {
            Ok(Some((r, n, avg_ms))) => {
                let rec = load_record_from("W6", "during backup", &name, &r);
                ctx.log(format!(
                    "W6 {name}: during {n} SIGUSR1 backups (avg {avg_ms:.0} ms) p99 {:.0} µs",
                    rec.latency.p99_us
                ));
                bak_p99.push((
                    name.clone(),
                    (rec.latency.count > 0).then_some(rec.latency.p99_us),
                ));
                bak_count.push((name.clone(), Some(avg_ms)));
                ctx.report.loads.push(rec);
            }
            Ok(None) => {
                bak_p99.push((name.clone(), None));
                bak_count.push((name.clone(), None));
            }
            Err(e) => {
                ctx.fail(format!("W6 backup on {name}: {e:#}"));
                bak_p99.push((name.clone(), None));
                bak_count.push((name.clone(), None));
            }
        }
    }
    let conns = o.connections;
    ctx.row(
        "W6",
        &format!("point-op mix, {conns} conns, idle: p99"),
        "µs",
        false,
        idle_p99.clone(),
    );
    let r = ctx.row(
        "W6",
        "same, during checkpoints: p99",
        "µs",
        false,
        ck_p99.clone(),
    );
    r.summary = true;
    r.note = Some(
        "every dataset key dirtied, then BGSAVE, repeatedly; measured while INFO persistence shows one running; redis-server: BGSAVE (fork + RDB)"
            .into(),
    );
    let counts: Vec<String> = ck_count
        .iter()
        .map(|(n, c)| {
            format!(
                "{n}: {}",
                c.map(|c| format!("{c:.0}")).unwrap_or("n/a".into())
            )
        })
        .collect();
    ctx.row(
        "W6",
        "checkpoint duration (while INFO shows one running), average",
        "ms",
        false,
        ck_ms,
    )
    .note = Some(format!("checkpoints during the run: {}", counts.join(", ")));
    let r = ctx.row(
        "W6",
        "same, during SIGUSR1 backups: p99",
        "µs",
        false,
        bak_p99.clone(),
    );
    r.optional = true;
    r.note = Some(
        "n/a where SIGUSR1 makes no backup (detected via INFO persistence); redis-server has none"
            .into(),
    );
    let r = ctx.row("W6", "SIGUSR1 backup duration", "ms", false, bak_count);
    r.optional = true;
    // Storage target: p99 during a checkpoint vs idle.
    let ratio = |during: &[(String, Option<f64>)], i: usize| -> Option<f64> {
        Some(during.get(i)?.1? / idle_p99.get(i)?.1?)
    };
    let ours = servers[0].name().to_string();
    let redis = servers[1].name().to_string();
    let r = ctx.row(
        "storage",
        "p99 of point ops during a checkpoint ÷ idle p99",
        "×",
        false,
        vec![(ours, ratio(&ck_p99, 0)), (redis, ratio(&ck_p99, 1))],
    );
    r.note = Some("redis-server: during BGSAVE".into());
}

/// The cache size for W6's second pass on this server: one that holds the
/// whole dataset, as redis-server's memory does.
const W6_LARGE_CACHE: &str = "1GiB";

/// W6 again on this server, restarted with a cache that holds the dataset:
/// with the default cache, dirtying the whole dataset (more than the cache
/// budget) evicts the point-op keys, so the first pass measures cold reads
/// as much as the checkpoint. This pass measures what the checkpoint costs.
fn w6_cache_holds_dataset(
    ctx: &mut Ctx<'_>,
    servers: &mut [Server],
    ds: &Dataset,
    point: &PointShared,
) {
    let o = ctx.o;
    let Some(s) = servers.first_mut() else {
        return;
    };
    if s.spec.extra.iter().any(|f| f.starts_with("--cache-size")) {
        ctx.log("W6 with a large cache: skipped (--server-flag sets --cache-size)");
        return;
    }
    let name = s.name().to_string();
    let keys: Vec<String> = ds.keys.iter().map(|k| k.name.clone()).collect();
    let flags = vec!["--cache-size".to_string(), W6_LARGE_CACHE.to_string()];
    let measured = (|| -> Result<(f64, Option<f64>)> {
        s.restart(&flags)?;
        touch_every_key(s, &keys)?;
        settle(&[&*s], Duration::from_secs(20));
        let make = |c: usize| point.generator(PointCmd::Mix, c);
        let spec = w6_load_spec(o, s);
        let idle = loadgen::run(&spec, &make, None)?;
        let rec = load_record_from("W6", "idle, large cache", &name, &idle);
        let idle_p99 = rec.latency.p99_us;
        ctx.report.loads.push(rec);
        settle(&[&*s], Duration::from_secs(20));
        let during = match interfere(s, &spec, &make, &keys, Interference::Checkpoint)? {
            Some((r, n, avg_ms)) => {
                let rec = load_record_from("W6", "during checkpoint, large cache", &name, &r);
                let p99 = (rec.latency.count > 0).then_some(rec.latency.p99_us);
                ctx.log(format!(
                    "W6 {name} --cache-size {W6_LARGE_CACHE}: idle p99 {idle_p99:.0} µs, during {n} checkpoints (avg {avg_ms:.0} ms) p99 {:.0} µs",
                    rec.latency.p99_us
                ));
                ctx.report.loads.push(rec);
                p99
            }
            None => None,
        };
        Ok((idle_p99, during))
    })();
    // Back to the flags the other workloads expect.
    if let Err(e) = s.restart(&[]) {
        ctx.fail(format!(
            "restarting {name} after W6 with a large cache: {e:#}"
        ));
    }
    let (idle, during) = match measured {
        Ok(m) => m,
        Err(e) => {
            ctx.fail(format!(
                "W6 with --cache-size {W6_LARGE_CACHE} on {name}: {e:#}"
            ));
            return;
        }
    };
    let note =
        format!("{name} restarted with --cache-size {W6_LARGE_CACHE}, every key touched first");
    ctx.row(
        "W6",
        "point-op mix, idle, cache that holds the dataset: p99",
        "µs",
        false,
        vec![(name.clone(), Some(idle))],
    )
    .note = Some(note.clone());
    ctx.row(
        "W6",
        "same, during checkpoints, cache that holds the dataset: p99",
        "µs",
        false,
        vec![(name.clone(), during)],
    )
    .note = Some(note);
    let r = ctx.row(
        "storage",
        "p99 of point ops during a checkpoint ÷ idle p99, cache that holds the dataset",
        "×",
        false,
        vec![(name, during.map(|d| d / idle))],
    );
    r.summary = true;
    r.note = Some(format!(
        "--cache-size {W6_LARGE_CACHE}; the row above it uses the default cache, which dirtying the whole dataset overfills"
    ));
}

fn load_record_from(section: &str, config: &str, server: &str, r: &LoadResult) -> LoadRecord {
    let mut a = Agg::new();
    a.add(r, Duration::ZERO);
    let mut rec = a.record(section, config, server);
    rec.cpu_us_per_op = None;
    rec
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Interference {
    Checkpoint,
    Backup,
}

/// Runs the load while repeatedly making a checkpoint (or a backup) and
/// returns the latencies observed while one was running, how many ran,
/// and their average duration. `None` when the server has no such thing.
fn interfere(
    s: &Server,
    spec: &LoadSpec,
    make: &(dyn Fn(usize) -> Box<dyn loadgen::OpGen> + Sync),
    keys: &[String],
    what: Interference,
) -> Result<Option<(LoadResult, usize, f64)>> {
    let mut probe = s.connect()?;
    let info = probe.info("persistence")?;
    let has = |f: &str| info.iter().any(|(k, _)| k == f);
    let (count_field, busy_field) = match what {
        Interference::Checkpoint if has("checkpoints") => ("checkpoints", "checkpoint_in_progress"),
        Interference::Checkpoint if has("rdb_saves") => ("rdb_saves", "rdb_bgsave_in_progress"),
        Interference::Checkpoint => return Ok(None),
        Interference::Backup if has("backups") && has("backup_in_progress") => {
            ("backups", "backup_in_progress")
        }
        Interference::Backup => return Ok(None),
    };
    // Before a checkpoint: dirty every dataset key (bit 0: no user has id
    // 0), so that the checkpoint has the whole dataset to write. This is
    // not measured: on a server whose cache cannot hold the dataset it is a
    // burst of cold reads, not part of the checkpoint.
    let prepare = |c: &mut Client, flip: &mut bool| -> Result<()> {
        if what == Interference::Checkpoint {
            let mut buf = Vec::new();
            let v = if *flip { "1" } else { "0" };
            *flip = !*flip;
            for k in keys {
                crate::resp::encode(&mut buf, &["SETBIT", k.as_str(), "0", v]);
            }
            c.send_raw(&buf)?;
            for _ in keys {
                if let Some(e) = c.skip_reply()? {
                    bail!("SETBIT answered {e}");
                }
            }
        }
        Ok(())
    };
    let trigger = |c: &mut Client| -> Result<()> {
        match what {
            Interference::Checkpoint => {
                c.call_ok(&["BGSAVE"])?;
            }
            Interference::Backup => s.signal(libc::SIGUSR1)?,
        }
        Ok(())
    };
    let count = |c: &mut Client| -> Result<(f64, bool)> {
        let info = c.info("persistence")?;
        let get = |f: &str| {
            info.iter()
                .find(|(k, _)| k == f)
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok((get(count_field), get(busy_field) > 0.0))
    };
    let mut flip = true;
    wait_persistence_idle(s, Duration::from_secs(300));
    let (c0, _) = count(&mut probe)?;
    prepare(&mut probe, &mut flip)?;
    trigger(&mut probe)?;
    let t = Instant::now();
    loop {
        let (c1, busy) = count(&mut probe)?;
        if c1 > c0 && !busy {
            break;
        }
        if t.elapsed() > Duration::from_secs(if busy { 300 } else { 10 }) {
            if c1 > c0 || busy {
                bail!("{busy_field} still set after 300 s");
            }
            return Ok(None); // no effect: not supported
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // The measured run: prepare and trigger, repeatedly, while a watcher on
    // a connection of its own flags the load's latencies as "during" for as
    // long as the server reports one running, whatever started it (with a
    // cache smaller than the dataset, the dirtying itself starts one).
    let phase = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut watcher_conn = s.connect()?;
    let result = std::thread::scope(|sc| -> Result<(LoadResult, usize, Duration)> {
        let load = sc.spawn(|| {
            let r = loadgen::run(spec, make, Some((&phase, 2)));
            stop.store(true, Ordering::Relaxed);
            r
        });
        let watcher = sc.spawn(|| -> Result<(usize, Duration)> {
            let mut runs = 0usize;
            let mut total = Duration::ZERO;
            let mut since: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                let (_, busy) = count(&mut watcher_conn)?;
                match (busy, since) {
                    (true, None) => {
                        phase.store(1, Ordering::Relaxed);
                        since = Some(Instant::now());
                    }
                    (false, Some(t)) => {
                        phase.store(0, Ordering::Relaxed);
                        runs += 1;
                        total += t.elapsed();
                        since = None;
                    }
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if let Some(t) = since {
                runs += 1;
                total += t.elapsed();
            }
            Ok((runs, total))
        });
        let ctl = (|| -> Result<()> {
            std::thread::sleep(Duration::from_millis(200));
            while !stop.load(Ordering::Relaxed) {
                prepare(&mut probe, &mut flip)?;
                let (c0, _) = count(&mut probe)?;
                let t = Instant::now();
                trigger(&mut probe)?;
                loop {
                    let (c1, busy) = count(&mut probe)?;
                    if c1 > c0 && !busy {
                        break;
                    }
                    if t.elapsed() > Duration::from_secs(300) {
                        bail!("{busy_field} set for more than 300 s");
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        })();
        if ctl.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let r = match load.join() {
            Ok(r) => r,
            Err(_) => bail!("the load thread panicked"),
        };
        let watched = match watcher.join() {
            Ok(w) => w,
            Err(_) => bail!("the watcher thread panicked"),
        };
        ctl?;
        let (runs, total) = watched?;
        Ok((r?, runs, total))
    })?;
    let (mut during, runs, total) = result;
    // Only the latencies recorded while one ran.
    during.hist.swap(0, 1);
    during.hist.truncate(1);
    let avg_ms = if runs > 0 {
        total.as_secs_f64() * 1e3 / runs as f64
    } else {
        0.0
    };
    if what == Interference::Checkpoint {
        // Leave bit 0 clear again, as the dataset has it.
        let mut buf = Vec::new();
        for k in keys {
            crate::resp::encode(&mut buf, &["SETBIT", k.as_str(), "0", "0"]);
        }
        probe.send_raw(&buf)?;
        for _ in keys {
            probe.skip_reply()?;
        }
    }
    wait_persistence_idle(s, Duration::from_secs(300));
    Ok(Some((during, runs, avg_ms)))
}

struct OneBit {
    open_ms: Option<f64>,
    open_rss: Option<f64>,
    rss_loaded: f64,
    keys_ms: f64,
    load_s: f64,
}

/// 1M one-bit keys `user:<a>:<b>` (a < 1000): load, checkpoint, restart
/// (open time, RSS), and `KEYS user:777:*`.
fn storage_one_bit_keys(ctx: &mut Ctx<'_>, specs: &[ServerSpec], run_dir: &Path) {
    let n = ctx.o.one_bit_keys.max(1000);
    let per = n / 1000;
    let label = dataset::human_count(per * 1000);
    let mut open = Vec::new();
    let mut open_rss = Vec::new();
    let mut loaded_rss = Vec::new();
    let mut keys_ms = Vec::new();
    let mut load_s = Vec::new();
    for spec in specs.iter().take(2) {
        let name = spec.name.clone();
        let r = (|| -> Result<OneBit> {
            let mut s = Server::start(spec, &run_dir.join(format!("{name}-onebit")), &[])?;
            let t0 = Instant::now();
            let threads = 2;
            std::thread::scope(|sc| -> Result<()> {
                let hs: Vec<_> = (0..threads)
                    .map(|t| {
                        let s = &s;
                        sc.spawn(move || -> Result<()> {
                            let mut c = s.connect()?;
                            let mut buf = Vec::new();
                            let mut pending = 0;
                            for a in (0..1000u64).filter(|a| a % threads == t) {
                                for b in 0..per {
                                    let key = format!("user:{a}:{b}");
                                    crate::resp::encode(
                                        &mut buf,
                                        &["SETBIT", key.as_str(), "1", "1"],
                                    );
                                    pending += 1;
                                }
                                if pending >= 1000 || a + threads >= 1000 {
                                    c.send_raw(&buf)?;
                                    buf.clear();
                                    for _ in 0..pending {
                                        if let Some(e) = c.skip_reply()? {
                                            bail!("SETBIT answered {e}");
                                        }
                                    }
                                    pending = 0;
                                }
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().map_err(|_| anyhow::anyhow!("loader panicked"))??;
                }
                Ok(())
            })?;
            let load = t0.elapsed().as_secs_f64();
            let size = s.connect()?.call_ok(&["DBSIZE"])?.as_int().unwrap_or(0);
            if size as u64 != per * 1000 {
                bail!("DBSIZE is {size} after loading {} keys", per * 1000);
            }
            let rss_loaded = mb(s.proc_stats()?.rss_bytes);
            let (open_ms, open_rss) = if spec.kind == Kind::Redis {
                (None, None)
            } else {
                s.connect()?.call_ok(&["SAVE"])?;
                let t = s.restart(&[])?;
                (
                    Some(t.as_secs_f64() * 1e3),
                    Some(mb(s.proc_stats()?.rss_bytes)),
                )
            };
            let mut c = s.connect()?;
            let mut times = Vec::new();
            for _ in 0..5 {
                let (r, d) = c.timed(&["KEYS", "user:777:*"])?;
                match r {
                    Reply::Array(Some(v)) if v.len() as u64 == per => {}
                    other => bail!(
                        "KEYS user:777:* answered {} (expected {per} keys)",
                        other.describe()
                    ),
                }
                times.push(d.as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            s.stop()?;
            Ok(OneBit {
                open_ms,
                open_rss,
                rss_loaded,
                keys_ms: times[2],
                load_s: load,
            })
        })();
        match r {
            Ok(OneBit {
                open_ms: o_ms,
                open_rss: o_rss,
                rss_loaded: l_rss,
                keys_ms: k_ms,
                load_s: l_s,
            }) => {
                ctx.log(format!(
                    "{label} one-bit keys on {name}: loaded in {l_s:.1} s, RSS {l_rss:.0} MB, open {o_ms:?} ms, RSS after open {o_rss:?} MB, KEYS {k_ms:.2} ms"
                ));
                open.push((name.clone(), o_ms));
                open_rss.push((name.clone(), o_rss));
                loaded_rss.push((name.clone(), Some(l_rss)));
                keys_ms.push((name.clone(), Some(k_ms)));
                load_s.push((name.clone(), Some(l_s)));
            }
            Err(e) => {
                ctx.fail(format!("{label} one-bit keys on {name}: {e:#}"));
                for v in [
                    &mut open,
                    &mut open_rss,
                    &mut loaded_rss,
                    &mut keys_ms,
                    &mut load_s,
                ] {
                    v.push((name.clone(), None));
                }
            }
        }
    }
    ctx.row(
        "storage",
        &format!("{label} one-bit keys: load (pipelined SETBIT, 2 conns)"),
        "s",
        false,
        load_s,
    );
    ctx.row(
        "storage",
        &format!("{label} one-bit keys: RSS after loading"),
        "MB",
        false,
        loaded_rss,
    );
    ctx.row(
        "storage",
        &format!("{label} one-bit keys: open time (start to PING)"),
        "ms",
        false,
        open,
    )
    .note = Some("redis-server: n/a (in memory)".into());
    ctx.row(
        "storage",
        &format!("{label} one-bit keys: RSS right after open"),
        "MB",
        false,
        open_rss,
    );
    ctx.row(
        "storage",
        &format!("{label} one-bit keys: KEYS user:777:* ({} matches)", per),
        "ms",
        false,
        keys_ms,
    )
    .note = Some("median of 5".into());
}

/// WAL replay: N SETBITs with checkpoints held off, kill -9, restart.
fn storage_wal_replay(ctx: &mut Ctx<'_>, run_dir: &Path) {
    let n = ctx.o.wal_records.max(1000);
    let spec = ours_spec(ctx.o);
    let flags: Vec<String> = [
        "--checkpoint-interval",
        "100000000",
        "--checkpoint-log-size",
        "1024GiB",
        "--cache-size",
        "8GiB",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = (|| -> Result<(f64, f64, f64, f64)> {
        let mut s = Server::start(&spec, &run_dir.join("wal-replay"), &flags)?;
        let t0 = Instant::now();
        let mut c = s.connect()?;
        let mut rng = crate::rng::Rng::new(ctx.o.params.seed ^ 0x5a5a);
        let mut buf = Vec::new();
        let mut sent = 0u64;
        while sent < n {
            buf.clear();
            let batch = (n - sent).min(1000);
            for _ in 0..batch {
                crate::resp::push_array_header(&mut buf, 4);
                crate::resp::push_bulk(&mut buf, b"SETBIT");
                crate::resp::push_bulk(&mut buf, format!("wal:{}", rng.below(10_000)).as_bytes());
                crate::resp::push_bulk_u64(&mut buf, rng.below(1 << 20));
                crate::resp::push_bulk(&mut buf, b"1");
            }
            c.send_raw(&buf)?;
            for _ in 0..batch {
                if let Some(e) = c.skip_reply()? {
                    bail!("SETBIT answered {e}");
                }
            }
            sent += batch;
        }
        let write_s = t0.elapsed().as_secs_f64();
        let checkpoints = c.info_field("persistence", "checkpoints")?.unwrap_or(0.0);
        let wal_bytes = c
            .info_field("persistence", "wal_segment_bytes")?
            .unwrap_or(0.0);
        if checkpoints > 0.0 {
            bail!("the server checkpointed {checkpoints} times despite the flags; replay would be partial");
        }
        drop(c);
        s.kill9();
        let open = s.start_again()?;
        // Commands, not records: a record holds a pipelined batch's writes
        // (servers before wal_replayed_commands logged one per command).
        let mut c = s.connect()?;
        let replayed = match c.info_field("persistence", "wal_replayed_commands")? {
            Some(commands) => commands,
            None => c
                .info_field("persistence", "wal_replayed_records")?
                .unwrap_or(n as f64),
        };
        drop(c);
        s.stop()?;
        Ok((open.as_secs_f64(), replayed, write_s, wal_bytes))
    })();
    match r {
        Ok((open_s, replayed, write_s, wal_bytes)) => {
            let rate = replayed / open_s.max(1e-6);
            ctx.log(format!(
                "WAL replay: {replayed} SETBITs ({:.0} MB of log) in {open_s:.2} s = {rate:.0} SETBITs/s (written at {:.0}/s)",
                wal_bytes / MB,
                n as f64 / write_s
            ));
            let r = ctx.row(
                "storage",
                &format!(
                    "WAL replay after kill -9 ({} SETBITs)",
                    dataset::human_count(n)
                ),
                "SETBITs/s",
                true,
                vec![("bitmapist-server".into(), Some(rate))],
            );
            r.note = Some(format!(
                "{replayed} SETBITs replayed, {:.0} MB of log, {:.0} ms from start to PING",
                wal_bytes / MB,
                open_s * 1e3
            ));
        }
        Err(e) => {
            ctx.fail(format!("WAL replay: {e:#}"));
            ctx.row(
                "storage",
                "WAL replay after kill -9",
                "SETBITs/s",
                true,
                vec![("bitmapist-server".into(), None)],
            );
        }
    }
}

/// Memory at smaller dataset sizes (fewer days), for the memory plot.
fn memory_scales(ctx: &mut Ctx<'_>, specs: &[ServerSpec], run_dir: &Path) {
    let days: Vec<u32> = ctx
        .o
        .mem_days
        .iter()
        .copied()
        .filter(|&d| d > 0 && d != ctx.o.params.days)
        .collect();
    for d in days {
        let params = Params {
            days: d,
            ..ctx.o.params
        };
        let ds = match Dataset::generate(params) {
            Ok(ds) => ds,
            Err(e) => {
                ctx.fail(format!("memory scale {}: {e:#}", params.label()));
                continue;
            }
        };
        let keys: Vec<String> = ds.keys.iter().map(|k| k.name.clone()).collect();
        for spec in specs {
            let r = (|| -> Result<MemoryPoint> {
                let mut s =
                    Server::start(spec, &run_dir.join(format!("{}-mem-{d}", spec.name)), &[])?;
                let mut p = MemoryPoint {
                    server: spec.name.clone(),
                    params: Some(params),
                    keys: ds.keys.len() as u64,
                    bits: ds.total_bits(),
                    redis_string_bytes: ds.total_bytes(),
                    ..Default::default()
                };
                dataset::load_with_set(&mut s.connect()?, &ds)?;
                p.rss_after_load = rss(&s);
                p.used_memory = info_num(&s, "memory", "used_memory").map(|v| v as u64);
                if spec.kind != Kind::Redis {
                    s.connect()?.call_ok(&["SAVE"])?;
                    wait_persistence_idle(&s, Duration::from_secs(300));
                    p.db_bytes = Some(s.db_bytes());
                    s.restart(&[])?;
                    p.rss_after_open = rss(&s);
                }
                touch_every_key(&s, &keys)?;
                p.rss_after_touch = rss(&s);
                s.stop()?;
                Ok(p)
            })();
            match r {
                Ok(p) => {
                    ctx.log(format!(
                        "memory at {} on {}: RSS after load {:.0} MB, after touch {:.0} MB",
                        params.label(),
                        spec.name,
                        p.rss_after_load.map(mb).unwrap_or(f64::NAN),
                        p.rss_after_touch.map(mb).unwrap_or(f64::NAN)
                    ));
                    ctx.report.memory.push(p);
                }
                Err(e) => ctx.fail(format!(
                    "memory scale {} on {}: {e:#}",
                    params.label(),
                    spec.name
                )),
            }
        }
    }
}
