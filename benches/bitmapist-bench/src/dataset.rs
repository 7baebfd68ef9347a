//! The "analytics" dataset of shared/WORKLOAD.md: what bitmapist's
//! `mark_event(name, uid)` leaves behind after `days` days of `events`
//! event types, as month, ISO-week and day keys.
//!
//! Deterministic for a seed. Values are built client side as exact Redis
//! byte strings (bit `uid` is bit `7 - uid % 8` of byte `uid / 8`) and
//! loaded with SET, so every server gets the same bytes; `--load setbit`
//! sends one SETBIT per bit instead, as bitmapist itself would.

use crate::client::Client;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// Highest user id (U).
    pub users: u32,
    /// Event types (E).
    pub events: u32,
    /// Days starting 2026-01-01 (D).
    pub days: u32,
    /// Distinct users a day of event 0; event `e` has
    /// `max(50, daily / (e+1)^1.5)` (±30 %). WORKLOAD.md's value is 300,000.
    pub daily: u32,
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Params {
        Params::full()
    }
}

impl Params {
    pub fn full() -> Params {
        Params {
            users: 20_000_000,
            events: 20,
            days: 60,
            daily: 300_000,
            seed: 42,
        }
    }

    pub fn label(&self) -> String {
        format!(
            "U={} E={} D={} daily={}",
            human_count(self.users as u64),
            self.events,
            self.days,
            human_count(self.daily as u64)
        )
    }
}

pub fn human_count(n: u64) -> String {
    if n >= 1_000_000 && n % 100_000 == 0 {
        format!("{}M", n as f64 / 1e6)
    } else if n >= 1000 && n % 100 == 0 {
        format!("{}k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KeyKind {
    Month,
    Week,
    Day,
}

#[derive(Clone, Debug)]
pub struct KeyData {
    pub name: String,
    pub kind: KeyKind,
    /// Sorted, distinct user ids: the set bits.
    pub ids: Vec<u32>,
}

impl KeyData {
    /// The Redis string length: up to the byte of the highest bit.
    pub fn byte_len(&self) -> usize {
        self.ids.last().map(|&m| m as usize / 8 + 1).unwrap_or(0)
    }

    /// The exact bytes of the value.
    pub fn bytes_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.resize(self.byte_len(), 0);
        for &id in &self.ids {
            out[id as usize / 8] |= 0x80 >> (id % 8);
        }
    }
}

/// A calendar date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub y: i32,
    pub m: u32,
    pub d: u32,
}

impl Date {
    /// Days since 1970-01-01 (H. Hinnant's days_from_civil).
    pub fn to_days(self) -> i64 {
        let y = if self.m <= 2 { self.y - 1 } else { self.y } as i64;
        let era = if y >= 0 { y } else { y - 399 } / 400;
        let yoe = y - era * 400;
        let m = self.m as i64;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + self.d as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    pub fn from_days(z: i64) -> Date {
        let z = z + 719_468;
        let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Date {
            y: (if m <= 2 { y + 1 } else { y }) as i32,
            m,
            d,
        }
    }

    /// Monday = 0.
    pub fn weekday(self) -> i64 {
        (self.to_days() + 3).rem_euclid(7)
    }

    /// ISO year and week number.
    pub fn iso_week(self) -> (i32, u32) {
        let z = self.to_days();
        let thursday = z - self.weekday() + 3;
        let ty = Date::from_days(thursday).y;
        let jan1 = Date { y: ty, m: 1, d: 1 }.to_days();
        (ty, ((thursday - jan1) / 7 + 1) as u32)
    }
}

/// bitmapist's key names (month and day not zero-padded).
pub fn month_key(event: &str, d: Date) -> String {
    format!("trackist_{event}_{}-{}", d.y, d.m)
}
pub fn week_key(event: &str, d: Date) -> String {
    let (iy, iw) = d.iso_week();
    format!("trackist_{event}_W{iy}-{iw}")
}
pub fn day_key(event: &str, d: Date) -> String {
    format!("trackist_{event}_{}-{}-{}", d.y, d.m, d.d)
}

pub const START: Date = Date {
    y: 2026,
    m: 1,
    d: 1,
};

const NAMES: [&str; 20] = [
    "active",
    "login",
    "page_view",
    "search",
    "add_to_cart",
    "checkout",
    "purchase",
    "signup",
    "share",
    "comment",
    "like",
    "upload",
    "download",
    "invite",
    "subscribe",
    "unsubscribe",
    "refund",
    "support_ticket",
    "feedback",
    "logout",
];

pub fn event_name(e: u32) -> String {
    NAMES
        .get(e as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("event_{e}"))
}

pub struct Dataset {
    pub params: Params,
    pub keys: Vec<KeyData>,
    pub generate_time: Duration,
}

impl Dataset {
    pub fn generate(params: Params) -> Result<Dataset> {
        if params.users < 16 || params.events == 0 || params.days == 0 {
            bail!(
                "dataset needs U ≥ 16, E ≥ 1, D ≥ 1 (got {})",
                params.label()
            );
        }
        let t0 = Instant::now();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .min(params.events as usize);
        let per_event: Vec<Vec<KeyData>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        (0..params.events)
                            .filter(|e| *e as usize % threads == t)
                            .map(|e| (e, generate_event(&params, e)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all: Vec<(u32, Vec<KeyData>)> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect();
            all.sort_by_key(|(e, _)| *e);
            all.into_iter().map(|(_, k)| k).collect()
        });
        if per_event.len() != params.events as usize {
            bail!("dataset generation failed (a worker thread panicked)");
        }
        let keys: Vec<KeyData> = per_event.into_iter().flatten().collect();
        Ok(Dataset {
            params,
            keys,
            generate_time: t0.elapsed(),
        })
    }

    #[cfg(test)]
    pub fn key(&self, name: &str) -> Option<&KeyData> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// How many month, week and day keys there are.
    pub fn kinds(&self) -> (usize, usize, usize) {
        let n = |kind| self.keys.iter().filter(|k| k.kind == kind).count();
        (n(KeyKind::Month), n(KeyKind::Week), n(KeyKind::Day))
    }

    pub fn total_bits(&self) -> u64 {
        self.keys.iter().map(|k| k.ids.len() as u64).sum()
    }

    /// The bytes the dataset takes as Redis strings.
    pub fn total_bytes(&self) -> u64 {
        self.keys.iter().map(|k| k.byte_len() as u64).sum()
    }

    pub fn dates(&self) -> Vec<Date> {
        let s = START.to_days();
        (0..self.params.days as i64)
            .map(|i| Date::from_days(s + i))
            .collect()
    }

    /// The month keys of an event, in date order.
    pub fn month_keys(&self, e: u32) -> Vec<String> {
        let name = event_name(e);
        let mut v: Vec<String> = Vec::new();
        for d in self.dates() {
            let k = month_key(&name, d);
            if !v.contains(&k) {
                v.push(k);
            }
        }
        v
    }

    /// The first ISO week that lies entirely in the dataset (else the
    /// first week): its key and its day keys, for event `e`.
    pub fn full_week(&self, e: u32) -> (String, Vec<String>) {
        let name = event_name(e);
        let dates = self.dates();
        let start = dates
            .iter()
            .position(|d| d.weekday() == 0 && dates.len() >= 7)
            .filter(|&i| i + 7 <= dates.len())
            .unwrap_or(0);
        let days: Vec<Date> = dates[start..].iter().take(7).copied().collect();
        let week = week_key(&name, days[0]);
        let days = days
            .into_iter()
            .filter(|d| week_key(&name, *d) == week)
            .map(|d| day_key(&name, d))
            .collect();
        (week, days)
    }

    /// The dates of the ISO week that holds the last day ("the current
    /// week" for W1), all seven of them.
    pub fn current_week(&self) -> Vec<Date> {
        let last = START.to_days() + self.params.days as i64 - 1;
        let monday = last - Date::from_days(last).weekday();
        (0..7).map(|i| Date::from_days(monday + i)).collect()
    }
}

fn generate_event(p: &Params, e: u32) -> Vec<KeyData> {
    let mut rng = Rng::derive(p.seed, 1, e as u64);
    let name = event_name(e);
    let daily = (p.daily as f64 / ((e + 1) as f64).powf(1.5)).max(50.0);
    // The pool: 5× the daily users, distinct, skewed to high ids; at most
    // half of all ids so that drawing distinct ids stays cheap.
    let pool_size = ((daily * 5.0) as usize).min(p.users as usize / 2).max(1);
    let mut seen = vec![0u64; p.users as usize / 64 + 2];
    let mut pool = Vec::with_capacity(pool_size);
    while pool.len() < pool_size {
        let id = rng.skewed_id(p.users);
        let (w, b) = (id as usize / 64, id % 64);
        if seen[w] & (1 << b) == 0 {
            seen[w] |= 1 << b;
            pool.push(id);
        }
    }
    let dates: Vec<Date> = (0..p.days as i64)
        .map(|i| Date::from_days(START.to_days() + i))
        .collect();
    let mut keys = Vec::new();
    let mut groups: Vec<(KeyKind, String, Vec<usize>)> = Vec::new();
    for (i, &d) in dates.iter().enumerate() {
        let factor = 0.7 + 0.6 * rng.f64();
        let n = ((daily * factor) as usize).clamp(1, pool.len());
        // Partial Fisher–Yates: the first n of the pool are the day's users.
        for j in 0..n {
            let k = j + rng.below((pool.len() - j) as u64) as usize;
            pool.swap(j, k);
        }
        let mut ids = pool[..n].to_vec();
        ids.sort_unstable();
        keys.push(KeyData {
            name: day_key(&name, d),
            kind: KeyKind::Day,
            ids,
        });
        for (kind, k) in [
            (KeyKind::Month, month_key(&name, d)),
            (KeyKind::Week, week_key(&name, d)),
        ] {
            match groups.iter_mut().find(|(_, g, _)| *g == k) {
                Some((_, _, members)) => members.push(i),
                None => groups.push((kind, k, vec![i])),
            }
        }
    }
    // Week and month keys are the unions of their days.
    let mut unions = Vec::new();
    for (kind, gname, members) in groups {
        seen.iter_mut().for_each(|w| *w = 0);
        for &i in &members {
            for &id in &keys[i].ids {
                seen[id as usize / 64] |= 1 << (id % 64);
            }
        }
        let mut ids = Vec::new();
        for (w, &word) in seen.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let b = bits.trailing_zeros();
                ids.push((w * 64) as u32 + b);
                bits &= bits - 1;
            }
        }
        unions.push(KeyData {
            name: gname,
            kind,
            ids,
        });
    }
    unions.extend(keys);
    unions
}

/// How a dataset load went.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LoadStats {
    pub keys: u64,
    pub bits: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Loads every key with SET (exact bytes), keeping up to 8 in flight.
pub fn load_with_set(client: &mut Client, ds: &Dataset) -> Result<LoadStats> {
    let t0 = Instant::now();
    let mut value = Vec::new();
    let mut in_flight = 0usize;
    let mut bytes = 0u64;
    for k in &ds.keys {
        k.bytes_into(&mut value);
        bytes += value.len() as u64;
        {
            let w = client.writer();
            crate::resp::write_set_header(w, k.name.as_bytes(), value.len())
                .and_then(|_| w.write_all(&value))
                .and_then(|_| w.write_all(b"\r\n"))
                .with_context(|| format!("sending SET {}", k.name))?;
        }
        in_flight += 1;
        if in_flight >= 8 {
            expect_ok(client, "SET")?;
            in_flight -= 1;
        }
    }
    for _ in 0..in_flight {
        expect_ok(client, "SET")?;
    }
    Ok(LoadStats {
        keys: ds.keys.len() as u64,
        bits: ds.total_bits(),
        bytes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn expect_ok(client: &mut Client, what: &str) -> Result<()> {
    if let Some(e) = client.skip_reply()? {
        bail!("{what} failed: {e}");
    }
    Ok(())
}

/// Loads every key with pipelined `SETBIT key id 1` over `connections`
/// connections (batches of 1,000).
pub fn load_with_setbit(
    addr: std::net::SocketAddr,
    ds: &Dataset,
    connections: usize,
) -> Result<LoadStats> {
    let t0 = Instant::now();
    let connections = connections.max(1);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..connections)
            .map(|c| {
                s.spawn(move || -> Result<()> {
                    let mut client = Client::connect(addr, Duration::from_secs(120))?;
                    let mut buf = Vec::with_capacity(64 * 1024);
                    let mut pending = 0usize;
                    for k in ds.keys.iter().skip(c).step_by(connections) {
                        for &id in &k.ids {
                            crate::resp::push_array_header(&mut buf, 4);
                            crate::resp::push_bulk(&mut buf, b"SETBIT");
                            crate::resp::push_bulk(&mut buf, k.name.as_bytes());
                            crate::resp::push_bulk_u64(&mut buf, id as u64);
                            crate::resp::push_bulk(&mut buf, b"1");
                            pending += 1;
                            if pending == 1000 {
                                client.send_raw(&buf)?;
                                buf.clear();
                                for _ in 0..pending {
                                    expect_ok(&mut client, "SETBIT")?;
                                }
                                pending = 0;
                            }
                        }
                    }
                    client.send_raw(&buf)?;
                    for _ in 0..pending {
                        expect_ok(&mut client, "SETBIT")?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a loader thread panicked")))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(LoadStats {
        keys: ds.keys.len() as u64,
        bits: ds.total_bits(),
        bytes: ds.total_bytes(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Checks STRLEN and BITCOUNT of every key against the dataset.
pub fn verify(client: &mut Client, ds: &Dataset) -> Result<()> {
    let mut buf = Vec::new();
    for chunk in ds.keys.chunks(256) {
        buf.clear();
        for k in chunk {
            crate::resp::encode(&mut buf, &["STRLEN", k.name.as_str()]);
            crate::resp::encode(&mut buf, &["BITCOUNT", k.name.as_str()]);
        }
        client.send_raw(&buf)?;
        for k in chunk {
            let len = client.read_reply()?;
            let count = client.read_reply()?;
            if len.as_int() != Some(k.byte_len() as i64) {
                bail!(
                    "{}: STRLEN is {}, the dataset has {} bytes",
                    k.name,
                    len.describe(),
                    k.byte_len()
                );
            }
            if count.as_int() != Some(k.ids.len() as i64) {
                bail!(
                    "{}: BITCOUNT is {}, the dataset has {} bits",
                    k.name,
                    count.describe(),
                    k.ids.len()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_and_iso_weeks() {
        assert_eq!(
            Date {
                y: 1970,
                m: 1,
                d: 1
            }
            .to_days(),
            0
        );
        let d = Date {
            y: 2026,
            m: 1,
            d: 1,
        };
        assert_eq!(Date::from_days(d.to_days()), d);
        assert_eq!(d.weekday(), 3); // Thursday
        assert_eq!(d.iso_week(), (2026, 1));
        assert_eq!(
            Date {
                y: 2027,
                m: 1,
                d: 1
            }
            .iso_week(),
            (2026, 53)
        );
        assert_eq!(
            Date {
                y: 2024,
                m: 12,
                d: 30
            }
            .iso_week(),
            (2025, 1)
        );
        assert_eq!(
            Date::from_days(d.to_days() + 59),
            Date {
                y: 2026,
                m: 3,
                d: 1
            }
        );
        assert_eq!(month_key("active", d), "trackist_active_2026-1");
        assert_eq!(week_key("active", d), "trackist_active_W2026-1");
        assert_eq!(
            day_key(
                "active",
                Date {
                    y: 2026,
                    m: 2,
                    d: 9
                }
            ),
            "trackist_active_2026-2-9"
        );
    }

    #[test]
    fn small_dataset_is_deterministic_and_consistent() {
        let p = Params {
            users: 10_000,
            events: 3,
            days: 14,
            daily: 500,
            seed: 1,
        };
        let a = Dataset::generate(p).unwrap();
        let b = Dataset::generate(p).unwrap();
        assert_eq!(a.keys.len(), b.keys.len());
        for (x, y) in a.keys.iter().zip(&b.keys) {
            assert_eq!(x.name, y.name);
            assert_eq!(x.ids, y.ids);
        }
        // 14 days from Thursday 2026-01-01: one month, weeks W1..W3.
        assert_eq!(a.keys.len(), 3 * (14 + 3 + 1));
        let month = a.key("trackist_active_2026-1").unwrap();
        for k in a
            .keys
            .iter()
            .filter(|k| k.name.starts_with("trackist_active_") && k.kind == KeyKind::Day)
        {
            assert!(k.ids.iter().all(|id| month.ids.binary_search(id).is_ok()));
            assert!(k.ids.iter().all(|&id| (1..=10_000).contains(&id)));
        }
        let mut v = Vec::new();
        month.bytes_into(&mut v);
        assert_eq!(v.len(), month.byte_len());
        let ones: u32 = v.iter().map(|b| b.count_ones()).sum();
        assert_eq!(ones as usize, month.ids.len());
        let (week, days) = a.full_week(0);
        assert_eq!(week, "trackist_active_W2026-2");
        assert_eq!(days.len(), 7);
    }
}
