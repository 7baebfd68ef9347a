//! Starting, restarting and stopping the servers under test, on loopback
//! ports chosen here, and reading their CPU time and memory from /proc.
//!
//! Every child gets `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with the bench
//! even when the bench is killed; [`Server`] also kills its child on drop.

use crate::client::{wait_for_ping, Client};
use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// This repository's bitmapist-server.
    Ours,
    /// redis-server, in memory (`--save '' --appendonly no`).
    Redis,
    /// Another bitmapist-compatible server given by path (Go-style flags
    /// `-addr` and `-db`).
    Other,
}

#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub name: String,
    pub kind: Kind,
    pub bin: PathBuf,
    /// Extra flags for our server (e.g. `--threads 2`).
    pub extra: Vec<String>,
}

/// Pids of every child started, for the watchdog.
pub static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Kills every child still registered (used by the watchdog).
pub fn kill_all_children() {
    if let Ok(pids) = CHILDREN.lock() {
        for &pid in pids.iter() {
            // SAFETY: kill(2) on a pid we started; failure (already gone) is fine.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// A free loopback port (bound and released; not 6379).
pub fn free_port() -> Result<u16> {
    for _ in 0..20 {
        let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .context("binding a loopback port")?;
        let port = l.local_addr().context("local address")?.port();
        if port != 6379 {
            return Ok(port);
        }
    }
    bail!("no free loopback port")
}

pub struct Server {
    pub spec: ServerSpec,
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    /// Flags of the current run (besides address and database).
    pub run_flags: Vec<String>,
    /// How long the last start took until PING answered.
    pub last_open: Duration,
    starts: u32,
}

impl Server {
    /// Starts a server with its data in `dir` (created if missing).
    pub fn start(spec: &ServerSpec, dir: &Path, flags: &[String]) -> Result<Server> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut s = Server {
            spec: spec.clone(),
            dir: dir.to_path_buf(),
            port: free_port()?,
            child: None,
            run_flags: flags.to_vec(),
            last_open: Duration::ZERO,
            starts: 0,
        };
        s.spawn()?;
        Ok(s)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("bitmapist.db")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn connect(&self) -> Result<Client> {
        Client::connect(self.addr(), Duration::from_secs(300))
            .with_context(|| format!("connecting to {}", self.spec.name))
    }

    fn command(&self) -> Command {
        let addr = format!("127.0.0.1:{}", self.port);
        let mut cmd = Command::new(&self.spec.bin);
        match self.spec.kind {
            Kind::Ours => {
                cmd.arg("--addr").arg(&addr).arg("--db").arg(self.db_path());
                cmd.arg("--bak").arg(self.dir.join("bitmapist.bak"));
                cmd.args(["--log-level", "warn"]);
                cmd.args(&self.spec.extra);
            }
            Kind::Redis => {
                cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"]);
                cmd.args(["--save", "", "--appendonly", "no", "--daemonize", "no"]);
                cmd.arg("--dir").arg(&self.dir);
                cmd.args(["--dbfilename", "dump.rdb", "--loglevel", "warning"]);
                cmd.args(&self.spec.extra);
            }
            Kind::Other => {
                cmd.arg("-addr").arg(&addr).arg("-db").arg(self.db_path());
                cmd.args(&self.spec.extra);
            }
        }
        cmd.args(&self.run_flags);
        cmd
    }

    fn spawn(&mut self) -> Result<()> {
        let log_path = self.dir.join(format!("server-{}.log", self.starts));
        self.starts += 1;
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let log2 = log.try_clone().context("cloning log handle")?;
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .current_dir(&self.dir);
        // SAFETY: prctl is async-signal-safe; it only sets the death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let t0 = Instant::now();
        let child = cmd.spawn().with_context(|| {
            format!("starting {} ({})", self.spec.name, self.spec.bin.display())
        })?;
        if let Ok(mut c) = CHILDREN.lock() {
            c.push(child.id());
        }
        self.child = Some(child);
        let name = self.spec.name.clone();
        let addr = self.addr();
        let child = &mut self.child;
        let ready = wait_for_ping(addr, Duration::from_secs(300), || {
            if let Some(c) = child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                    bail!("{name} exited during start-up ({status}): {tail}");
                }
            }
            Ok(())
        });
        match ready {
            Ok(_) => {
                self.last_open = t0.elapsed();
                Ok(())
            }
            Err(e) => {
                self.kill9();
                Err(e)
            }
        }
    }

    /// Stops gracefully: SHUTDOWN (Redis: SHUTDOWN NOSAVE), then SIGTERM,
    /// then SIGKILL, each with a time limit. Returns how long it took.
    pub fn stop(&mut self) -> Result<Duration> {
        let t0 = Instant::now();
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        let cmd: &[&str] = if self.spec.kind == Kind::Redis {
            &["SHUTDOWN", "NOSAVE"]
        } else {
            &["SHUTDOWN"]
        };
        if let Ok(mut c) = Client::connect(self.addr(), Duration::from_secs(60)) {
            let _ = c.call(cmd); // the connection closes as it exits
        }
        if wait_exit(&mut child, Duration::from_secs(120))? {
            forget(child.id());
            return Ok(t0.elapsed());
        }
        signal(child.id(), libc::SIGTERM);
        if wait_exit(&mut child, Duration::from_secs(60))? {
            forget(child.id());
            return Ok(t0.elapsed());
        }
        let _ = child.kill();
        let _ = child.wait();
        forget(child.id());
        bail!(
            "{} did not exit after SHUTDOWN and SIGTERM; killed",
            self.spec.name
        )
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            forget(child.id());
        }
    }

    /// Starts again on the same data with `flags`.
    pub fn restart(&mut self, flags: &[String]) -> Result<Duration> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.run_flags = flags.to_vec();
        self.spawn()?;
        Ok(self.last_open)
    }

    /// After a kill: starts again and returns the time until PING answered.
    pub fn start_again(&mut self) -> Result<Duration> {
        self.spawn()?;
        Ok(self.last_open)
    }

    pub fn signal(&self, sig: i32) -> Result<()> {
        let pid = self.pid().context("server not running")?;
        signal(pid, sig);
        Ok(())
    }

    pub fn proc_stats(&self) -> Result<ProcStats> {
        let pid = self.pid().context("server not running")?;
        ProcStats::read(pid).with_context(|| format!("/proc of {} (pid {pid})", self.spec.name))
    }

    /// The size of the database: every file in the server's directory
    /// whose name starts with `bitmapist.db` (database and log segments).
    pub fn db_bytes(&self) -> u64 {
        let mut total = 0;
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("bitmapist.db") {
                    total += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
        total
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn forget(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.retain(|&p| p != pid);
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> Result<bool> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if child.try_wait().context("waiting for a server")?.is_some() {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(false)
}

/// CPU time and memory of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// utime + stime.
    pub cpu: Duration,
    pub rss_bytes: u64,
}

impl ProcStats {
    pub fn read(pid: u32) -> Result<ProcStats> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // Fields after the command name, which is in parentheses and may
        // hold spaces: state is field 3, utime 14, stime 15.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("malformed /proc/PID/stat")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<u64> {
            f.get(i)
                .and_then(|s| s.parse().ok())
                .context("malformed /proc/PID/stat")
        };
        let total = ticks(11)? + ticks(12)?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let cpu = Duration::from_nanos(total * 1_000_000_000 / hz);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let rss_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .context("no VmRSS in /proc/PID/status")?;
        Ok(ProcStats {
            cpu,
            rss_bytes: rss_kb * 1024,
        })
    }
}
