//! The load generator: `threads` event loops (mio/epoll), each driving its
//! share of `connections` non-blocking connections. A connection sends a
//! batch of `pipeline` operations, waits for every reply, and sends the
//! next (as `redis-benchmark -P` does). An operation is one command or a
//! MULTI ... EXEC transaction; its latency runs from the write of its batch
//! to its last reply and goes into an HdrHistogram.
//!
//! Runs are bounded: by a duration, or by an operation count with a time
//! limit, and a run whose replies stop coming fails after `stall_timeout`.

use crate::resp;
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Produces the operations of one connection.
pub trait OpGen: Send {
    /// Appends one operation's commands to `buf`; returns how many replies
    /// it produces.
    fn next_op(&mut self, buf: &mut Vec<u8>) -> u32;
}

/// Builds the generator for connection `i` (seed it from `i`).
pub type GenFactory<'a> = &'a (dyn Fn(usize) -> Box<dyn OpGen> + Sync);

#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub connections: usize,
    pub threads: usize,
    pub pipeline: usize,
    /// Stop issuing batches after this long (measured after the warm-up).
    pub duration: Option<Duration>,
    /// Stop after this many operations in all (split over connections).
    pub max_ops: Option<u64>,
    /// Operations completed in the first `warmup` are not counted.
    pub warmup: Duration,
    /// A run fails when no reply arrives for this long.
    pub stall_timeout: Duration,
    /// Hard limit for the whole run, warm-up and drain included.
    pub time_limit: Duration,
}

impl LoadSpec {
    pub fn new(addr: SocketAddr) -> LoadSpec {
        LoadSpec {
            addr,
            connections: 50,
            threads: 1,
            pipeline: 1,
            duration: Some(Duration::from_secs(5)),
            max_ops: None,
            warmup: Duration::ZERO,
            stall_timeout: Duration::from_secs(30),
            time_limit: Duration::from_secs(600),
        }
    }
}

/// What a run measured.
pub struct LoadResult {
    /// Operations completed inside the measured window.
    pub ops: u64,
    /// Error replies seen (anywhere in the run).
    pub errors: u64,
    pub first_error: Option<String>,
    /// The measured window.
    pub elapsed: Duration,
    /// Latency in nanoseconds, one histogram per phase (see [`run`]).
    pub hist: Vec<Histogram<u64>>,
    /// CPU time (user + system) the load generator itself used.
    pub client_cpu: Duration,
}

impl LoadResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Runs a load. `phase`, when given, is read at each operation's completion
/// and picks the histogram it is recorded in (0..phases).
pub fn run(
    spec: &LoadSpec,
    factory: GenFactory<'_>,
    phase: Option<(&AtomicUsize, usize)>,
) -> Result<LoadResult> {
    if spec.connections == 0 || spec.pipeline == 0 || spec.threads == 0 {
        bail!("connections, pipeline and threads must be at least 1");
    }
    if spec.duration.is_none() && spec.max_ops.is_none() {
        bail!("a load needs a duration or an operation count");
    }
    crate::client::check_loopback(&spec.addr)?;
    let threads = spec.threads.min(spec.connections);
    let phases = phase.map(|(_, n)| n.max(1)).unwrap_or(1);
    let cpu0 = process_cpu();
    let start = Instant::now();
    let window_start = start + spec.warmup;
    let stop = AtomicBool::new(false);
    let results: Vec<Result<ThreadResult>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let conns: Vec<usize> =
                    (0..spec.connections).filter(|c| c % threads == t).collect();
                let stop = &stop;
                s.spawn(move || {
                    let r = run_thread(spec, factory, &conns, window_start, phase, phases, stop);
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("a load thread panicked")),
            })
            .collect()
    });
    let mut hist: Vec<Histogram<u64>> = (0..phases).map(|_| new_histogram()).collect();
    let mut ops = 0;
    let mut errors = 0;
    let mut first_error = None;
    let mut window_end = window_start;
    for r in results {
        let r = r?;
        ops += r.ops;
        errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
        window_end = window_end.max(r.window_end);
        for (h, th) in hist.iter_mut().zip(&r.hist) {
            h.add(th).context("merging histograms")?;
        }
    }
    let elapsed = match spec.duration {
        Some(d) => d,
        None => window_end.saturating_duration_since(window_start),
    };
    Ok(LoadResult {
        ops,
        errors,
        first_error,
        elapsed,
        hist,
        client_cpu: process_cpu().saturating_sub(cpu0),
    })
}

struct ThreadResult {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Vec<Histogram<u64>>,
    window_end: Instant,
}

struct Conn {
    stream: TcpStream,
    gen: Box<dyn OpGen>,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    rstart: usize,
    /// Replies still expected for each operation of the batch in flight.
    pending: std::collections::VecDeque<u32>,
    batch_start: Instant,
    /// Operations this connection may still issue (count mode).
    budget: u64,
    done: bool,
}

#[allow(clippy::too_many_arguments)]
fn run_thread(
    spec: &LoadSpec,
    factory: GenFactory<'_>,
    conn_ids: &[usize],
    window_start: Instant,
    phase: Option<(&AtomicUsize, usize)>,
    phases: usize,
    stop: &AtomicBool,
) -> Result<ThreadResult> {
    let mut poll = Poll::new().context("creating epoll instance")?;
    let mut events = Events::with_capacity(1024);
    let deadline = spec.duration.map(|d| window_start + d);
    let hard_limit = Instant::now() + spec.time_limit;
    let mut conns = Vec::with_capacity(conn_ids.len());
    for (slot, &id) in conn_ids.iter().enumerate() {
        let std = std::net::TcpStream::connect_timeout(&spec.addr, Duration::from_secs(5))
            .with_context(|| format!("connection {id} to {}", spec.addr))?;
        std.set_nodelay(true).context("TCP_NODELAY")?;
        std.set_nonblocking(true).context("O_NONBLOCK")?;
        let mut stream = TcpStream::from_std(std);
        poll.registry()
            .register(
                &mut stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            )
            .context("registering a connection with epoll")?;
        let budget = match spec.max_ops {
            Some(n) => {
                let per = n / spec.connections as u64;
                per + u64::from((id as u64) < n % spec.connections as u64)
            }
            None => u64::MAX,
        };
        conns.push(Conn {
            stream,
            gen: factory(id),
            wbuf: Vec::with_capacity(16 * 1024),
            wpos: 0,
            rbuf: vec![0; 64 * 1024],
            rstart: 0,
            pending: Default::default(),
            batch_start: Instant::now(),
            budget,
            done: false,
        });
    }
    let mut hist: Vec<Histogram<u64>> = (0..phases).map(|_| new_histogram()).collect();
    let mut ops = 0u64;
    let mut errors = 0u64;
    let mut first_error: Option<String> = None;
    let mut window_end = window_start;
    let mut rlen: Vec<usize> = vec![0; conns.len()];
    // Start every connection.
    for c in conns.iter_mut() {
        start_batch(c, spec.pipeline, deadline, stop);
        flush(c)?;
    }
    let mut active = conns.iter().filter(|c| !c.done).count();
    let mut last_progress = Instant::now();
    while active > 0 {
        let now = Instant::now();
        if now > hard_limit {
            bail!(
                "load against {} passed its time limit of {:?}",
                spec.addr,
                spec.time_limit
            );
        }
        if now.duration_since(last_progress) > spec.stall_timeout {
            bail!(
                "no reply from {} for {:?} ({} connections still waiting)",
                spec.addr,
                spec.stall_timeout,
                active
            );
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .context("epoll_wait")?;
        for ev in events.iter() {
            let slot = ev.token().0;
            let c = &mut conns[slot];
            if c.done {
                continue;
            }
            if ev.is_writable() {
                flush(c)?;
            }
            if !ev.is_readable() && !ev.is_read_closed() && !ev.is_error() {
                continue;
            }
            // Read until WouldBlock (edge-triggered).
            loop {
                let len = rlen[slot];
                if len == c.rbuf.len() {
                    if c.rstart > 0 {
                        c.rbuf.copy_within(c.rstart..len, 0);
                        rlen[slot] = len - c.rstart;
                        c.rstart = 0;
                        continue;
                    }
                    let grow = c.rbuf.len();
                    c.rbuf.resize(grow * 2, 0);
                }
                let len = rlen[slot];
                match c.stream.read(&mut c.rbuf[len..]) {
                    Ok(0) => bail!("{} closed a connection mid-run", spec.addr),
                    Ok(n) => rlen[slot] += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).with_context(|| format!("reading from {}", spec.addr)),
                }
            }
            // Consume complete replies.
            let now = Instant::now();
            let mut progressed = false;
            while !c.pending.is_empty() && c.rstart < rlen[slot] {
                let Some((used, is_err)) = resp::skip_reply(&c.rbuf[c.rstart..rlen[slot]])
                    .with_context(|| format!("reply from {}", spec.addr))?
                else {
                    break;
                };
                if is_err {
                    errors += 1;
                    if first_error.is_none() {
                        let end = (c.rstart + used).min(c.rstart + 200);
                        first_error = Some(
                            String::from_utf8_lossy(&c.rbuf[c.rstart..end])
                                .trim_end()
                                .to_string(),
                        );
                    }
                }
                c.rstart += used;
                progressed = true;
                if let Some(front) = c.pending.front_mut() {
                    *front -= 1;
                    if *front == 0 {
                        c.pending.pop_front();
                        if now >= window_start && deadline.is_none_or(|d| now <= d) {
                            let ns = now.duration_since(c.batch_start).as_nanos() as u64;
                            let p = phase
                                .map(|(a, n)| a.load(Ordering::Relaxed).min(n.max(1) - 1))
                                .unwrap_or(0);
                            hist[p].saturating_record(ns.max(1));
                            ops += 1;
                            window_end = window_end.max(now);
                        }
                    }
                }
            }
            if c.rstart == rlen[slot] {
                c.rstart = 0;
                rlen[slot] = 0;
            }
            if progressed {
                last_progress = now;
            }
            if c.pending.is_empty() {
                if c.rstart != rlen[slot] {
                    bail!("{} sent more replies than commands", spec.addr);
                }
                start_batch(c, spec.pipeline, deadline, stop);
                if c.done {
                    active -= 1;
                } else {
                    flush(c)?;
                }
            }
        }
    }
    Ok(ThreadResult {
        ops,
        errors,
        first_error,
        hist,
        window_end,
    })
}

fn start_batch(c: &mut Conn, pipeline: usize, deadline: Option<Instant>, stop: &AtomicBool) {
    let now = Instant::now();
    if c.budget == 0 || deadline.is_some_and(|d| now >= d) || stop.load(Ordering::Relaxed) {
        c.done = true;
        return;
    }
    c.wbuf.clear();
    c.wpos = 0;
    let n = (pipeline as u64).min(c.budget);
    for _ in 0..n {
        let replies = c.gen.next_op(&mut c.wbuf);
        c.pending.push_back(replies.max(1));
    }
    c.budget -= n;
    c.batch_start = now;
}

fn flush(c: &mut Conn) -> Result<()> {
    while c.wpos < c.wbuf.len() {
        match c.stream.write(&c.wbuf[c.wpos..]) {
            Ok(0) => bail!("connection closed while writing"),
            Ok(n) => c.wpos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("writing requests"),
        }
    }
    Ok(())
}

/// CPU time (user + system) of this process so far.
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Latency summary of a histogram, in microseconds.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// (percentile, µs) points for plotting, on a "nines" scale up to 99.99.
    pub spectrum: Vec<(f64, f64)>,
}

impl Latency {
    pub fn from_hist(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        let mut spectrum = Vec::new();
        let mut x = 0.0f64;
        while x <= 4.0001 {
            let q = 1.0 - 10f64.powf(-x);
            spectrum.push((q * 100.0, us(h.value_at_quantile(q))));
            x += 0.1;
        }
        Latency {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            spectrum,
        }
    }
}
