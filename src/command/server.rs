//! Server commands: INFO (Redis sections plus the Go server's `keys` and
//! `commands`), DBSIZE, FLUSHDB, FLUSHALL, TIME, SHUTDOWN, COMMAND and
//! CONFIG GET|SET|RESETSTAT.

use super::args;
use super::table::{CommandSpec, COMMANDS};
use super::{CmdError, CmdResult, Ctx};
use crate::config::{REDIS_COMPAT_VERSION, VERSION};
use crate::keyspace::glob;
use crate::resp::ReplyBuf;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

pub fn dbsize(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    let n = ctx.db().len();
    ctx.out.int(n as i64);
    Ok(())
}

/// FLUSHDB/FLUSHALL accept an optional ASYNC or SYNC.
fn flush_mode(argv: &[&[u8]]) -> CmdResult {
    match argv {
        [_] => Ok(()),
        [_, mode] if args::is(mode, "async") || args::is(mode, "sync") => Ok(()),
        _ => Err(CmdError::syntax()),
    }
}

pub fn flushdb(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    flush_mode(argv)?;
    ctx.db().flush();
    ctx.out.ok();
    Ok(())
}

pub fn flushall(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    flush_mode(argv)?;
    ctx.keyspace().flush_all();
    ctx.out.ok();
    Ok(())
}

pub fn time(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ctx.out.array(2);
    ctx.out.bulk(now.as_secs().to_string().as_bytes());
    ctx.out.bulk(now.subsec_micros().to_string().as_bytes());
    Ok(())
}

pub fn shutdown(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let mut abort = false;
    for a in &argv[1..] {
        if args::is(a, "abort") {
            abort = true;
        } else if !["nosave", "save", "now", "force"]
            .iter()
            .any(|k| args::is(a, k))
        {
            return Err(CmdError::syntax());
        }
    }
    if abort {
        return Err(CmdError::new("ERR No shutdown in progress."));
    }
    // Replies nothing: the connection closes as the server stops.
    ctx.session.shutdown_requested = true;
    Ok(())
}

pub fn save(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    // The checkpointer takes the keyspace lock: release ours first.
    ctx.release();
    ctx.server
        .storage
        .save()
        .map_err(|e| CmdError::new(format!("ERR checkpoint failed: {e}")))?;
    ctx.out.ok();
    Ok(())
}

pub fn bgsave(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    if argv.len() > 2 || argv.get(1).is_some_and(|a| !args::is(a, "schedule")) {
        return Err(CmdError::syntax());
    }
    if !ctx.server.storage.background_save() {
        return Err(CmdError::new("ERR the checkpointer is not running"));
    }
    ctx.out.simple("Background saving started");
    Ok(())
}

pub fn lastsave(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    let ms = crate::server::lock(&ctx.server.storage.stats).last_checkpoint_unix_ms;
    ctx.out.int((ms / 1000) as i64);
    Ok(())
}

// ---- INFO ----

const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "keyspace",
    "keys",
    "slurp",
];
const ALL_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "commandstats",
    "keyspace",
    "keys",
    "commands",
    "slurp",
];

pub fn info(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let mut wanted: Vec<&str> = Vec::new();
    if argv.len() == 1 {
        wanted.extend(DEFAULT_SECTIONS);
    }
    for a in &argv[1..] {
        let a = String::from_utf8_lossy(a).to_ascii_lowercase();
        match a.as_str() {
            "default" => wanted.extend(DEFAULT_SECTIONS),
            "all" | "everything" => wanted.extend(ALL_SECTIONS),
            other => {
                if let Some(s) = ALL_SECTIONS.iter().find(|s| **s == other) {
                    wanted.push(s);
                }
            }
        }
    }
    let mut text = String::new();
    for section in ALL_SECTIONS.iter().filter(|s| wanted.contains(s)) {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        write_section(ctx, section, &mut text);
    }
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

fn rss_bytes() -> u64 {
    // Second field of /proc/self/statm: resident pages.
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn cpu_seconds() -> (f64, f64) {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    match usage {
        Ok(u) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            (secs(u.system_time()), secs(u.user_time()))
        }
        Err(_) => (0.0, 0.0),
    }
}

fn write_section(ctx: &mut Ctx<'_>, section: &str, t: &mut String) {
    let server = ctx.server;
    let stats = &server.stats;
    let uptime = server.started.elapsed().as_secs();
    // Writing to a String cannot fail.
    let _ = match section {
        "server" => {
            let port = server.listening_port();
            write!(
                t,
                "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nbitmapist_server_version:{VERSION}\r\n\
                 redis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nmultiplexing_api:io_uring\r\n\
                 process_id:{}\r\nrun_id:{:040x}\r\ntcp_port:{port}\r\nserver_time_usec:{}\r\n\
                 uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nio_threads_active:{}\r\nexecutable:{}\r\n",
                std::env::consts::OS,
                std::env::consts::ARCH,
                std::process::id(),
                server.started_unix_ms,
                ctx.now * 1000,
                uptime / 86400,
                server.config.thread_count(),
                std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
            )
        }
        "clients" => write!(
            t,
            "# Clients\r\nconnected_clients:{}\r\nblocked_clients:0\r\ntracking_clients:0\r\n",
            server.client_count()
        ),
        "memory" => {
            let rss = rss_bytes();
            let ks = ctx.keyspace();
            let (cache_bytes, budget, cached, dirty) = (
                ks.cache().bytes(),
                ks.cache().budget(),
                ks.cache().len(),
                ks.dirty_bytes(),
            );
            let (hits, misses, evictions, sync_loads) =
                (ks.cache().hits, ks.cache().misses, ks.cache().evictions, ks.sync_loads);
            let bitop_memo_hits = ks.bitop_memo.hits;
            let entries = ks.cache().entries();
            write!(
                t,
                "# Memory\r\nused_memory:{rss}\r\nused_memory_human:{:.2}M\r\nused_memory_rss:{rss}\r\n\
                 used_memory_rss_human:{:.2}M\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n\
                 cache_bytes:{cache_bytes}\r\ncache_budget_bytes:{budget}\r\ncache_keys:{cached}\r\n\
                 cache_hits:{hits}\r\ncache_misses:{misses}\r\ncache_evictions:{evictions}\r\n\
                 cache_sync_loads:{sync_loads}\r\ndirty_bytes:{dirty}\r\n\
                 cache_entries:{entries}\r\nbitop_memo_hits:{bitop_memo_hits}\r\n",
                rss as f64 / 1048576.0,
                rss as f64 / 1048576.0
            )
        }
        "persistence" => {
            let storage = &server.storage;
            let p = crate::server::lock(&storage.stats).clone();
            let log = &storage.log;
            let db_bytes = std::fs::metadata(&storage.db_path).map_or(0, |m| m.len());
            let dirty = ctx.keyspace().dirty_bytes();
            write!(
                t,
                "# Persistence\r\nloading:0\r\npersistence_enabled:1\r\nfsync:{}\r\n\
                 wal_segment_bytes:{}\r\nwal_appended:{}\r\nwal_written:{}\r\nwal_write_ok:{}\r\n\
                 wal_replayed_records:{}\r\nwal_replayed_commands:{}\r\ndirty_bytes:{dirty}\r\n\
                 write_holds:{}\r\ncheckpoint_in_progress:{}\r\ncheckpoints:{}\r\nlast_checkpoint_time:{}\r\n\
                 last_checkpoint_duration_ms:{}\r\nlast_checkpoint_status:{}\r\n\
                 db_file_bytes:{db_bytes}\r\ndb_pages:{}\r\ndb_free_pages:{}\r\n\
                 backup_in_progress:{}\r\nbackups:{}\r\nlast_backup_time:{}\r\nlast_backup_duration_ms:{}\r\n\
                 last_backup_bytes:{}\r\nlast_backup_status:{}\r\n\
                 rdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:{}\r\naof_enabled:1\r\n",
                log.policy().name(),
                log.segment_bytes(),
                log.appended(),
                log.written(),
                u8::from(!log.is_failing()),
                p.wal_replayed_records,
                p.wal_replayed_commands,
                ctx.server.storage.write_hold.holds.load(Relaxed),
                u8::from(ctx.server.storage.write_hold.checkpoint_running()),
                p.checkpoints,
                p.last_checkpoint_unix_ms / 1000,
                p.last_checkpoint_ms,
                if p.last_checkpoint_error.is_some() { "err" } else { "ok" },
                p.db_pages,
                p.free_pages,
                u8::from(p.backup_running),
                p.backups,
                p.last_backup_unix_ms / 1000,
                p.last_backup_ms,
                p.last_backup_bytes,
                match (&p.last_backup_error, p.backups) {
                    (Some(_), _) => "err",
                    (None, 0) => "none",
                    (None, _) => "ok",
                },
                u8::from(ctx.server.storage.write_hold.checkpoint_running()),
                p.last_checkpoint_unix_ms / 1000,
                if p.last_checkpoint_error.is_some() { "err" } else { "ok" },
            )
        }
        "stats" => write!(
            t,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             total_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\n",
            stats.connections_received.load(Relaxed),
            stats.commands_processed.load(Relaxed),
            stats.net_input_bytes.load(Relaxed),
            stats.net_output_bytes.load(Relaxed),
            stats.rejected_connections.load(Relaxed),
            ctx.keyspace().expired_keys,
        ),
        "replication" => write!(t, "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"),
        "cpu" => {
            let (sys, user) = cpu_seconds();
            write!(t, "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\n")
        }
        "commandstats" => {
            let _ = write!(t, "# Commandstats\r\n");
            for (spec, calls) in COMMANDS.iter().zip(&stats.per_command) {
                let calls = calls.load(Relaxed);
                if calls > 0 {
                    let _ = write!(t, "cmdstat_{}:calls={calls}\r\n", spec.name);
                }
            }
            Ok(())
        }
        "keyspace" => {
            let _ = write!(t, "# Keyspace\r\n");
            let ks = ctx.keyspace();
            for i in 0..crate::keyspace::DATABASES {
                let keys = ks.key_count(i);
                if keys > 0 {
                    let _ = write!(t, "db{i}:keys={keys},expires=0,avg_ttl=0\r\n");
                }
            }
            Ok(())
        }
        "keys" => {
            let ks = ctx.keyspace();
            let (total, cached) = (ks.total_keys(), ks.cache().len());
            write!(t, "# Keys\r\nkeys_total:{total}\r\nkeys_cached:{cached}\r\n")
        }
        "commands" => {
            let _ = write!(t, "# Commands\r\n");
            for (spec, calls) in COMMANDS.iter().zip(&stats.per_command) {
                let calls = calls.load(Relaxed);
                if calls > 0 {
                    let _ = write!(t, "{}:{calls}\r\n", spec.name);
                }
            }
            Ok(())
        }
        "slurp" => {
            crate::server::lock(&server.slurp).info_section(t);
            Ok(())
        }
        _ => Ok(()),
    };
}

// ---- COMMAND ----

fn acl_categories(spec: &CommandSpec) -> Vec<String> {
    let mut cats = Vec::new();
    cats.push(if spec.is_write() { "@write" } else { "@read" }.to_string());
    if spec.group != "server" && spec.group != "connection" && spec.group != "transactions" {
        cats.push(format!("@{}", spec.group));
    } else if spec.group == "server" {
        cats.push("@admin".to_string());
    } else {
        cats.push(format!("@{}", spec.group));
    }
    if spec.flags.contains(&"fast") {
        cats.push("@fast".to_string());
    } else {
        cats.push("@slow".to_string());
    }
    cats
}

fn write_command_info(out: &mut ReplyBuf, spec: &CommandSpec) {
    out.array(10);
    out.bulk(spec.name.as_bytes());
    out.int(i64::from(spec.arity));
    out.set(spec.flags.len());
    for f in spec.flags {
        out.simple(f);
    }
    out.int(i64::from(spec.keys.0));
    out.int(i64::from(spec.keys.1));
    out.int(i64::from(spec.keys.2));
    let cats = acl_categories(spec);
    out.set(cats.len());
    for c in &cats {
        out.simple(c);
    }
    out.set(0); // tips
    out.array(0); // key specifications
    out.array(spec.subcommands.len());
    for sub in spec.subcommands {
        write_command_info(out, sub);
    }
}

fn write_command_docs(out: &mut ReplyBuf, spec: &CommandSpec) {
    out.bulk(spec.name.as_bytes());
    let subs = !spec.subcommands.is_empty();
    out.map(if subs { 4 } else { 3 });
    out.bulk(b"summary");
    out.bulk(spec.summary.as_bytes());
    out.bulk(b"since");
    out.bulk(b"1.0.0");
    out.bulk(b"group");
    out.bulk(spec.group.as_bytes());
    if subs {
        out.bulk(b"subcommands");
        out.map(spec.subcommands.len());
        for sub in spec.subcommands {
            write_command_docs(out, sub);
        }
    }
}

pub fn command(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    // A command switched off with --disable-command does not exist, here
    // as everywhere (Redis's `rename-command X ""`).
    let config = &ctx.server.config;
    let enabled = |spec: &&CommandSpec| !config.is_disabled(spec.name.as_bytes(), spec.name);
    let visible: Vec<&CommandSpec> = COMMANDS.iter().filter(enabled).collect();
    let find = |name: &[u8]| {
        super::table::find(name)
            .map(|(_, s)| s)
            .filter(|s| !config.is_disabled(name, s.name))
    };
    let out = &mut *ctx.out;
    if argv.len() == 1 {
        out.array(visible.len());
        for spec in &visible {
            write_command_info(out, spec);
        }
        return Ok(());
    }
    let sub = argv[1];
    if args::is(sub, "count") && argv.len() == 2 {
        out.int(visible.len() as i64);
    } else if args::is(sub, "info") {
        if argv.len() == 2 {
            out.array(visible.len());
            for spec in &visible {
                write_command_info(out, spec);
            }
        } else {
            out.array(argv.len() - 2);
            for name in &argv[2..] {
                match find(name) {
                    Some(spec) => write_command_info(out, spec),
                    None => out.null(),
                }
            }
        }
    } else if args::is(sub, "docs") {
        let specs: Vec<&CommandSpec> = if argv.len() == 2 {
            visible
        } else {
            argv[2..].iter().filter_map(|n| find(n)).collect()
        };
        out.map(specs.len());
        for spec in specs {
            write_command_docs(out, spec);
        }
    } else if args::is(sub, "list") && argv.len() == 2 {
        out.array(visible.len());
        for spec in &visible {
            out.bulk(spec.name.as_bytes());
        }
    } else if ["count", "list", "getkeys", "getkeysandflags"]
        .iter()
        .any(|s| args::is(sub, s))
    {
        return Err(CmdError::new(format!(
            "ERR wrong number of arguments for 'command|{}' command",
            String::from_utf8_lossy(sub).to_ascii_lowercase()
        )));
    } else {
        return Err(CmdError::new(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(sub)
        )));
    }
    Ok(())
}

// ---- CONFIG ----

/// The parameters CONFIG GET reports: what monitoring tools and
/// redis-benchmark ask for.
fn config_params(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    let c = &ctx.server.config;
    let (bind, port) = match c.addr.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_matches(|ch| ch == '[' || ch == ']').to_string(),
            p.to_string(),
        ),
        None => (c.addr.clone(), String::from("6379")),
    };
    let dir =
        c.db.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| String::from("."), |p| p.display().to_string());
    let dbfilename =
        c.db.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
    vec![
        ("appendonly", "no".into()),
        ("bind", bind),
        ("databases", crate::keyspace::DATABASES.to_string()),
        ("dbfilename", dbfilename),
        ("dir", dir),
        ("io-threads", c.thread_count().to_string()),
        ("maxclients", c.maxclients.to_string()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("port", port),
        ("proto-max-bulk-len", (512u64 * 1024 * 1024).to_string()),
        ("protected-mode", c.protected_mode.clone()),
        // Redis 7 reports the password itself to an authenticated client.
        ("requirepass", c.requirepass.clone().unwrap_or_default()),
        ("save", String::new()),
        ("timeout", c.timeout.to_string()),
    ]
}

pub fn config_get(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let params = config_params(ctx);
    let matched: Vec<&(&str, String)> = params
        .iter()
        .filter(|(name, _)| {
            argv[2..]
                .iter()
                .any(|p| glob::matches(&p.to_ascii_lowercase(), name.as_bytes()))
        })
        .collect();
    ctx.out.map(matched.len());
    for (name, value) in matched {
        ctx.out.bulk(name.as_bytes());
        ctx.out.bulk(value.as_bytes());
    }
    Ok(())
}

pub fn config_set(_ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    Err(CmdError::new(format!(
        "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
        String::from_utf8_lossy(argv[2])
    )))
}

pub fn config_resetstat(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    let s = &ctx.server.stats;
    for c in [
        &s.commands_processed,
        &s.connections_received,
        &s.rejected_connections,
        &s.net_input_bytes,
        &s.net_output_bytes,
    ] {
        c.store(0, Relaxed);
    }
    for c in &s.per_command {
        c.store(0, Relaxed);
    }
    ctx.out.ok();
    Ok(())
}
