//! The results of a comparison: the JSON file, the Markdown table, and
//! the check that CI runs on the JSON.

use crate::loadgen::Latency;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub const WORKLOADS: [&str; 6] = ["W1", "W2", "W3", "W4", "W5", "W6"];

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    pub mode: String,
    pub started_unix: u64,
    pub elapsed_s: f64,
    pub host: String,
    pub cpus: usize,
    pub server_bin: String,
    pub server_commit: String,
    pub redis_version: String,
    pub dataset: crate::dataset::Params,
    pub dataset_keys: u64,
    pub dataset_bits: u64,
    pub dataset_redis_bytes: u64,
    pub connections: usize,
    pub client_threads: usize,
    pub duration_s: f64,
    pub rounds: usize,
    pub command_line: String,
}

/// One line of the table. `values` maps server name to a number, or
/// `None` for "n/a".
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Row {
    pub section: String,
    pub metric: String,
    pub unit: String,
    pub higher_is_better: bool,
    pub values: BTreeMap<String, Option<f64>>,
    /// A target from the storage issue, e.g. "≤ 150 MB", and whether it is met.
    pub target: Option<String>,
    pub target_met: Option<bool>,
    pub note: Option<String>,
    /// Shown in the short summary table too.
    pub summary: bool,
    /// A value may be n/a for our server (e.g. SIGUSR1 when not supported).
    pub optional: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RoundRecord {
    pub ops_per_sec: f64,
    pub cpu_us_per_op: f64,
    pub client_cpu_pct: f64,
}

/// One load configuration on one server, all rounds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadRecord {
    pub section: String,
    pub config: String,
    pub server: String,
    pub rounds: Vec<RoundRecord>,
    pub ops_per_sec: f64,
    /// Server CPU time per operation (n/a where not measured).
    pub cpu_us_per_op: Option<f64>,
    pub latency: Latency,
    pub errors: u64,
    pub first_error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct QueryRecord {
    pub section: String,
    pub query: String,
    pub server: String,
    pub samples_ms: Vec<f64>,
    pub p50_ms: f64,
    pub max_ms: f64,
}

/// Memory at one dataset size.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemoryPoint {
    pub server: String,
    pub params: Option<crate::dataset::Params>,
    pub keys: u64,
    pub bits: u64,
    pub redis_string_bytes: u64,
    pub rss_after_load: Option<u64>,
    pub used_memory: Option<u64>,
    pub rss_after_open: Option<u64>,
    pub rss_after_touch: Option<u64>,
    pub db_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub meta: Meta,
    /// Server names; the first is this server, the second redis-server.
    pub servers: Vec<String>,
    pub rows: Vec<Row>,
    pub loads: Vec<LoadRecord>,
    pub queries: Vec<QueryRecord>,
    pub memory: Vec<MemoryPoint>,
    pub notes: Vec<String>,
    pub failures: Vec<String>,
    /// Wall time of each phase of the run, seconds.
    pub phase_seconds: Vec<(String, f64)>,
}

impl Report {
    pub fn ours(&self) -> &str {
        self.servers.first().map(String::as_str).unwrap_or("")
    }

    pub fn redis(&self) -> &str {
        self.servers.get(1).map(String::as_str).unwrap_or("")
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self).context("serializing results")?;
        let p = dir.join("results.json");
        std::fs::write(&p, json).with_context(|| format!("writing {}", p.display()))?;
        let p = dir.join("results.md");
        std::fs::write(&p, self.markdown()).with_context(|| format!("writing {}", p.display()))?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.meta;
        let _ = writeln!(s, "# bitmapist-server vs redis-server ({} run)\n", m.mode);
        let _ = writeln!(
            s,
            "Dataset \"analytics\": {} ({} keys, {:.1} M set bits, {} as Redis strings). \
             {} connections, {} client thread(s), {} s per load run, {} round(s) alternating servers. \
             {} CPUs, {}. Server {} ({}), {}. Whole run {:.0} s.\n",
            m.dataset.label(),
            m.dataset_keys,
            m.dataset_bits as f64 / 1e6,
            fmt_bytes(m.dataset_redis_bytes as f64),
            m.connections,
            m.client_threads,
            m.duration_s,
            m.rounds,
            m.cpus,
            m.host,
            m.server_bin,
            m.server_commit,
            m.redis_version,
            m.elapsed_s
        );
        let _ = writeln!(
            s,
            "Ratio is this server ÷ redis-server; ↑ means higher is better, ↓ lower is better. \
             Absolute numbers drift on shared machines; ratios from one run hold.\n"
        );
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        let order = |r: &Row| {
            WORKLOADS
                .iter()
                .position(|w| *w == r.section)
                .unwrap_or(WORKLOADS.len())
        };
        rows.sort_by_key(|r| order(r));
        let summary: Vec<&Row> = rows.iter().copied().filter(|r| r.summary).collect();
        if !summary.is_empty() {
            let _ = writeln!(s, "## Summary\n");
            self.table(&mut s, &summary);
        }
        let _ = writeln!(s, "## All results\n");
        self.table(&mut s, &rows);
        if !self.notes.is_empty() {
            let _ = writeln!(s, "## Notes\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
            s.push('\n');
        }
        if !self.failures.is_empty() {
            let _ = writeln!(s, "## Failures\n");
            for f in &self.failures {
                let _ = writeln!(s, "- {f}");
            }
            s.push('\n');
        }
        if !self.phase_seconds.is_empty() {
            let _ = writeln!(s, "## Time per phase\n");
            let parts: Vec<String> = self
                .phase_seconds
                .iter()
                .map(|(p, t)| format!("{p} {t:.0} s"))
                .collect();
            let _ = writeln!(s, "{}\n", parts.join(", "));
        }
        s
    }

    fn table(&self, s: &mut String, rows: &[&Row]) {
        let others: Vec<&String> = self.servers.iter().skip(2).collect();
        let _ = write!(
            s,
            "| workload | metric | {} | {} | ratio |",
            self.ours(),
            self.redis()
        );
        for o in &others {
            let _ = write!(s, " {o} |");
        }
        let _ = writeln!(s, " target / note |");
        let _ = write!(s, "|---|---|--:|--:|--:|");
        for _ in &others {
            let _ = write!(s, "--:|");
        }
        let _ = writeln!(s, "---|");
        for r in rows {
            let arrow = if r.higher_is_better { "↑" } else { "↓" };
            let ours = r.values.get(self.ours()).copied().flatten();
            let redis = r.values.get(self.redis()).copied().flatten();
            let ratio = match (ours, redis) {
                (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
                _ => "–".into(),
            };
            let _ = write!(
                s,
                "| {} | {} ({} {arrow}) | {} | {} | {ratio} |",
                r.section,
                r.metric,
                r.unit,
                fmt_val(ours, &r.unit),
                fmt_val(redis, &r.unit)
            );
            for o in &others {
                let _ = write!(
                    s,
                    " {} |",
                    fmt_val(r.values.get(*o).copied().flatten(), &r.unit)
                );
            }
            let mut note = String::new();
            if let Some(t) = &r.target {
                note.push_str(&format!("target {t}"));
                match r.target_met {
                    Some(true) => note.push_str(" ✓"),
                    Some(false) => note.push_str(" ✗ missed"),
                    None => {}
                }
            }
            if let Some(n) = &r.note {
                if !note.is_empty() {
                    note.push_str("; ");
                }
                note.push_str(n);
            }
            let _ = writeln!(s, " {note} |");
        }
        s.push('\n');
    }
}

fn fmt_val(v: Option<f64>, unit: &str) -> String {
    let Some(v) = v else {
        return "n/a".into();
    };
    if unit == "MB" || unit == "ms" || unit == "s" || unit == "µs" || unit.starts_with("µs") {
        if v >= 100.0 {
            format!("{v:.0}")
        } else if v >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        }
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

pub fn fmt_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

/// What `smoke.sh` checks: every workload has rows, every row has a
/// number for this server (unless optional), every workload has at least
/// one number for redis-server, and nothing failed.
pub fn check(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let report: Report =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let ours = report.ours().to_string();
    let redis = report.redis().to_string();
    if ours.is_empty() || redis.is_empty() {
        bail!(
            "{}: the servers list lacks this server or redis-server",
            path.display()
        );
    }
    let mut problems = Vec::new();
    for f in &report.failures {
        problems.push(format!("failure: {f}"));
    }
    let mut summary = Vec::new();
    for w in WORKLOADS.iter().copied().chain(["storage"]) {
        let rows: Vec<&Row> = report.rows.iter().filter(|r| r.section == w).collect();
        if rows.is_empty() {
            problems.push(format!("{w}: no results"));
            continue;
        }
        let num = |r: &Row, s: &str| {
            r.values
                .get(s)
                .copied()
                .flatten()
                .is_some_and(f64::is_finite)
        };
        for r in &rows {
            if !r.optional && !num(r, &ours) {
                problems.push(format!("{w} {}: no number for {ours}", r.metric));
            }
        }
        if w != "storage" && !rows.iter().any(|r| num(r, &redis)) {
            problems.push(format!("{w}: no number for {redis}"));
        }
        summary.push(format!("{w}: {} rows", rows.len()));
    }
    for l in &report.loads {
        if l.errors > 0 && (l.server == ours || l.server == redis) {
            problems.push(format!(
                "{} {} on {}: {} error replies (first: {})",
                l.section,
                l.config,
                l.server,
                l.errors,
                l.first_error.as_deref().unwrap_or("?")
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} problems in {}:\n  {}",
            problems.len(),
            path.display(),
            problems.join("\n  ")
        );
    }
    Ok(summary.join(", "))
}
