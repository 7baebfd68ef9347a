//! A blocking connection for control commands (INFO, SAVE, queries) and
//! for bulk loading, with timeouts on every read and write.

use crate::resp::{self, Reply};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Refuses anything but a loopback address: this tool only ever loads
/// servers on the machine it runs on.
pub fn check_loopback(addr: &SocketAddr) -> Result<()> {
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address; bitmapist-bench only talks to servers on this machine (127.0.0.0/8, ::1)");
    }
    Ok(())
}

/// Parses `HOST:PORT` (a name such as `localhost` is resolved) and checks
/// that it is loopback.
pub fn resolve_loopback(addr: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let sa = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    check_loopback(&sa)?;
    Ok(sa)
}

pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    addr: SocketAddr,
}

impl Client {
    /// Connects with a 5 s connect timeout; reads and writes time out after
    /// `io_timeout`.
    pub fn connect(addr: SocketAddr, io_timeout: Duration) -> Result<Client> {
        check_loopback(&addr)?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        stream
            .set_read_timeout(Some(io_timeout))
            .context("setting read timeout")?;
        stream
            .set_write_timeout(Some(io_timeout))
            .context("setting write timeout")?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            addr,
        })
    }

    /// Sends one command and reads its reply (an error reply is a value, not
    /// an `Err`).
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply> {
        let mut out = Vec::new();
        resp::encode(&mut out, args);
        self.send_raw(&out)?;
        self.read_reply()
            .with_context(|| format!("reply to {}", describe_args(args)))
    }

    /// Like [`call`](Self::call), but an error reply is an `Err`.
    pub fn call_ok<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply> {
        let r = self.call(args)?;
        if let Reply::Error(e) = &r {
            bail!("{} answered -{e}", describe_args(args));
        }
        Ok(r)
    }

    /// Sends one command and times the round trip.
    pub fn timed<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<(Reply, Duration)> {
        let t = Instant::now();
        let r = self.call_ok(args)?;
        Ok((r, t.elapsed()))
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .with_context(|| format!("writing to {}", self.addr))
    }

    pub fn writer(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Reads one reply.
    pub fn read_reply(&mut self) -> Result<Reply> {
        loop {
            if self.start < self.buf.len() {
                if let Some((r, used)) = resp::parse_reply(&self.buf[self.start..])
                    .with_context(|| format!("from {}", self.addr))?
                {
                    self.start += used;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return Ok(r);
                }
            }
            self.fill()?;
        }
    }

    /// Reads one reply without keeping it; returns whether it was an error
    /// and its text if so.
    pub fn skip_reply(&mut self) -> Result<Option<String>> {
        loop {
            if self.start < self.buf.len() {
                if let Some((used, err)) = resp::skip_reply(&self.buf[self.start..])
                    .with_context(|| format!("from {}", self.addr))?
                {
                    let text = err.then(|| {
                        String::from_utf8_lossy(&self.buf[self.start..self.start + used.min(200)])
                            .trim_end()
                            .to_string()
                    });
                    self.start += used;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return Ok(text);
                }
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> Result<()> {
        if self.start > 0 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        let want = (self.buf.capacity() - len).max(64 * 1024);
        self.buf.resize(len + want, 0);
        let n = match self.stream.read(&mut self.buf[len..]) {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(len);
                return Err(e).with_context(|| format!("reading from {}", self.addr));
            }
        };
        self.buf.truncate(len + n);
        if n == 0 {
            bail!("{} closed the connection", self.addr);
        }
        Ok(())
    }

    /// `INFO section` as key/value pairs.
    pub fn info(&mut self, section: &str) -> Result<Vec<(String, String)>> {
        let r = self.call_ok(&["INFO", section])?;
        let text = r
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .with_context(|| format!("INFO {section} answered {}", r.describe()))?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            })
            .collect())
    }

    /// One numeric field of `INFO section`, if the server reports it.
    pub fn info_field(&mut self, section: &str, field: &str) -> Result<Option<f64>> {
        Ok(self
            .info(section)?
            .into_iter()
            .find(|(k, _)| k == field)
            .and_then(|(_, v)| v.parse::<f64>().ok()))
    }
}

fn describe_args<A: AsRef<[u8]>>(args: &[A]) -> String {
    let mut s = String::new();
    for (i, a) in args.iter().enumerate().take(4) {
        if i > 0 {
            s.push(' ');
        }
        let a = a.as_ref();
        if a.len() > 40 {
            s.push_str(&format!("<{} bytes>", a.len()));
        } else {
            s.push_str(&String::from_utf8_lossy(a));
        }
    }
    if args.len() > 4 {
        s.push_str(" ...");
    }
    s
}

/// Waits until `addr` answers PING, up to `timeout`; returns how long it took.
pub fn wait_for_ping(
    addr: SocketAddr,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        alive()?;
        if let Ok(mut c) = Client::connect(addr, Duration::from_secs(2)) {
            if let Ok(Reply::Simple(s)) = c.call(&["PING"]) {
                if s == "PONG" {
                    return Ok(t0.elapsed());
                }
            }
        }
        if t0.elapsed() > timeout {
            bail!("{addr} did not answer PING within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
