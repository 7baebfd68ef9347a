//! Criterion micro-benchmarks of the server library's hot paths: the RESP
//! parser, the glob matcher, bit-string operations on bitmapist-shaped
//! bitmaps, and WAL record framing.
//!
//!     cargo bench --bench micro                # all
//!     cargo bench --bench micro -- bitstring   # a group
//!
//! The load generator and the comparison with redis-server are in
//! `benches/bitmapist-bench` (see benches/README.md).

use bitmapist_server::keyspace::{glob, BitOp, BitString, RangeUnit};
use bitmapist_server::resp::{self, Limits, Parsed};
use bitmapist_server::storage::wal;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;

/// A deterministic stream of ids (SplitMix64), skewed to high ids like the
/// analytics dataset: `floor(u · V^(1/3))`.
fn skewed_ids(n: usize, u: u32, seed: u64) -> Vec<u32> {
    let mut s = seed;
    let mut ids: Vec<u32> = (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let v = (z >> 11) as f64 / (1u64 << 53) as f64;
            ((u as f64 * v.cbrt()) as u32).min(u - 1)
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn bitstring(ids: &[u32]) -> BitString {
    let mut b = BitString::new();
    for &id in ids {
        b.set_bit(id, true);
    }
    b
}

fn resp_parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("resp_parse");
    // 16 pipelined SETBITs, as W2 sends them.
    let mut buf = Vec::new();
    for i in 0..16u32 {
        let key = format!("w2:{}", i * 6151 % 100_000);
        let off = (i * 40_503 % 65_536).to_string();
        buf.extend_from_slice(
            format!(
                "*4\r\n$6\r\nSETBIT\r\n${}\r\n{key}\r\n${}\r\n{off}\r\n$1\r\n1\r\n",
                key.len(),
                off.len()
            )
            .as_bytes(),
        );
    }
    g.throughput(Throughput::Elements(16));
    g.bench_function("16 pipelined SETBIT", |b| {
        b.iter(|| {
            let mut at = 0;
            let mut n = 0;
            while at < buf.len() {
                match resp::parse(black_box(&buf[at..]), &limits) {
                    Ok(Parsed::Request { args, consumed }) => {
                        n += args.len();
                        at += consumed;
                    }
                    Ok(Parsed::Skip { consumed }) => at += consumed,
                    _ => break,
                }
            }
            n
        })
    });
    // One SET of a 256 KiB value (a bulk payload).
    let value = vec![0x5au8; 256 * 1024];
    let mut big = format!("*3\r\n$3\r\nSET\r\n$4\r\nkey1\r\n${}\r\n", value.len()).into_bytes();
    big.extend_from_slice(&value);
    big.extend_from_slice(b"\r\n");
    // The parser borrows bulk arguments from the buffer: this is the cost of
    // finding the argument boundaries, not of copying 256 KiB.
    g.throughput(Throughput::Elements(1));
    g.bench_function("SET of 256 KiB", |b| {
        b.iter(|| resp::parse(black_box(&big), &limits).is_ok())
    });
    g.finish();
}

fn glob_match(c: &mut Criterion) {
    let mut g = c.benchmark_group("glob");
    let keys: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "trackist_event_{}_2026-{}-{}",
                i % 20,
                i % 12 + 1,
                i % 28 + 1
            )
        })
        .collect();
    g.throughput(Throughput::Elements(keys.len() as u64));
    for pattern in [
        "trackist_*",
        "trackist_event_1?_2026-*-1*",
        "*[0-9]-1[0-2]-*",
    ] {
        g.bench_function(pattern, |b| {
            b.iter(|| {
                keys.iter()
                    .filter(|k| glob::matches(black_box(pattern.as_bytes()), k.as_bytes()))
                    .count()
            })
        });
    }
    g.finish();
}

fn bitstring_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("bitstring");
    // A day key of the busiest event (300k users of 20M) and a month key
    // (1.5M users), as in the full analytics dataset.
    let day_ids = skewed_ids(300_000, 20_000_000, 1);
    let month_ids = skewed_ids(1_600_000, 20_000_000, 2);
    let day = bitstring(&day_ids);
    let month = bitstring(&month_ids);
    let month_bytes = month.to_bytes();
    let days: Vec<BitString> = (0..7)
        .map(|d| bitstring(&skewed_ids(300_000, 20_000_000, 10 + d)))
        .collect();

    g.throughput(Throughput::Bytes(month_bytes.len() as u64));
    g.bench_function("from_bytes (month key, 2.5 MB string)", |b| {
        b.iter(|| BitString::from_bytes(black_box(&month_bytes)))
    });
    g.bench_function("to_bytes (month key)", |b| {
        b.iter(|| black_box(&month).to_bytes())
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("count_range 0 -1 (month key)", |b| {
        b.iter(|| black_box(&month).count_range(0, -1, RangeUnit::Byte))
    });
    g.bench_function("get_bit (day key)", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 7919) % 20_000_000;
            black_box(&day).get_bit(i)
        })
    });
    g.bench_function("set_bit (day key)", |b| {
        b.iter_batched_ref(
            || day.clone(),
            |d| {
                for i in 0..1000u32 {
                    d.set_bit(i * 19_997, true);
                }
            },
            BatchSize::LargeInput,
        )
    });
    let sources: Vec<Option<&BitString>> = days.iter().map(Some).collect();
    g.bench_function("BITOP OR of 7 day keys", |b| {
        b.iter(|| BitString::bitop(BitOp::Or, black_box(&sources)))
    });
    g.bench_function("BITOP AND of 7 day keys", |b| {
        b.iter(|| BitString::bitop(BitOp::And, black_box(&sources)))
    });
    g.bench_function("BITOP AND of month and day", |b| {
        b.iter(|| BitString::bitop(BitOp::And, black_box(&[Some(&month), Some(&day)])))
    });
    g.finish();
}

fn wal_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_frame");
    for size in [32usize, 4096, 256 * 1024] {
        let payload = vec![0xa5u8; size];
        let mut out = Vec::with_capacity(wal::framed_len(size) * 64);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("{size} B record"), |b| {
            b.iter(|| {
                out.clear();
                wal::frame(&mut out, black_box(&payload)).is_ok()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, resp_parse, glob_match, bitstring_ops, wal_frame);
criterion_main!(benches);
