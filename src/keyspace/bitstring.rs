//! Redis string values as bitmaps.
//!
//! This module owns the representation of a Redis string value as a set of
//! bits (a [`RoaringBitmap`]) plus its logical byte length, and all of
//! Redis 7.0's bit/string semantics on it: `SET`/`GET` round trips, `STRLEN`,
//! `GETBIT`, `SETBIT`, `BITCOUNT`, `BITPOS` and `BITOP`.
//!
//! # Bit numbering
//!
//! Bits are numbered the way Redis numbers them: bit `i` lives in byte
//! `i / 8` under the mask `0x80 >> (i % 8)`, so bit 0 is the most significant
//! bit of byte 0. The bitmap holds exactly the bit numbers whose bit is 1.
//!
//! # Invariant and limits
//!
//! Every set bit is `< len * 8`: bytes past the last set bit are zero bytes
//! that only `len` remembers (a string may end in any number of `\0` bytes,
//! or be empty). The largest bit offset is `2^32 - 1`, so a string holds at
//! most [`MAX_LEN`] = 2^29 bytes (512 MiB, Redis's own `proto-max-bulk-len`
//! default); lengths are `u64` so that `len * 8` never overflows.
//!
//! Operations never expand the bitmap to bytes except `GET` ([`BitString::write_bytes`]).

use roaring::{MultiOps, RoaringBitmap};

/// The largest byte length a [`BitString`] can have: 2^29 bytes, i.e. bit
/// offsets up to `2^32 - 1`.
pub const MAX_LEN: u64 = 1 << 29;

/// Bytes of one container in a bitmap's container vector (roaring 0.12: a
/// 16-bit key beside a 32-byte store enum).
const CONTAINER_SLOT_BYTES: usize = 40;
/// What the allocator adds to each container's own allocation (glibc: an
/// 8-byte header, sizes rounded up to 16, 32 bytes at least).
const CONTAINER_ALLOCATION_OVERHEAD: usize = 24;
/// Heap bytes the first bit set in an empty bitmap allocates: its container
/// vector, with room for four containers, and an array container with room
/// for four values (each with the allocator's header and rounding).
pub const FIRST_BIT_BYTES: usize = 4 * CONTAINER_SLOT_BYTES + 16 + 32;

/// Bytes per roaring container (65536 bits).
const CHUNK_BYTES: usize = 8192;

/// A Redis string value: its set bits plus its byte length.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BitString {
    bits: RoaringBitmap,
    len: u64,
}

/// The unit of a `BITCOUNT`/`BITPOS` range (`BYTE` is Redis's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeUnit {
    Byte,
    Bit,
}

/// A `BITOP` operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitOp {
    And,
    Or,
    Xor,
    Not,
}

impl BitString {
    /// The empty string (length 0, no bits).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a string from its set bits and its byte length.
    ///
    /// The caller must keep the invariant: every bit in `bits` is
    /// `< len * 8`, and `len <= MAX_LEN` (checked in debug builds only).
    pub fn from_parts(bits: RoaringBitmap, len: u64) -> Self {
        debug_assert!(len <= MAX_LEN, "length {len} exceeds {MAX_LEN}");
        debug_assert!(
            bits.max().is_none_or(|m| u64::from(m) < len * 8),
            "bit {:?} outside a string of {len} bytes",
            bits.max()
        );
        Self { bits, len }
    }

    /// The set bits, in Redis numbering.
    pub fn bits(&self) -> &RoaringBitmap {
        &self.bits
    }

    /// The byte length (`STRLEN`).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the string has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Splits the string into its bits and byte length.
    pub fn into_parts(self) -> (RoaringBitmap, u64) {
        (self.bits, self.len)
    }

    /// Builds the value stored by `SET`: any bytes round-trip exactly
    /// through [`BitString::write_bytes`].
    ///
    /// Zero-filled 8 KiB blocks are skipped; every other block becomes one
    /// roaring container in one step.
    ///
    /// # Panics
    ///
    /// If `bytes.len() > MAX_LEN` (512 MiB): callers must reject longer
    /// values first, as Redis does.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        assert!(
            bytes.len() as u64 <= MAX_LEN,
            "string of {} bytes exceeds the {MAX_LEN}-byte limit",
            bytes.len()
        );
        let mut bits = RoaringBitmap::new();
        let mut buf = [0u8; CHUNK_BYTES];
        for (index, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
            if is_all_zero(chunk) {
                continue;
            }
            // roaring numbers bits LSB-first inside a byte, Redis MSB-first.
            let reversed = &mut buf[..chunk.len()];
            for (dst, &src) in reversed.iter_mut().zip(chunk) {
                *dst = src.reverse_bits();
            }
            // index < 2^16 because bytes.len() <= 2^29.
            let offset = (index as u32) << 16;
            bits |= RoaringBitmap::from_lsb0_bytes(offset, reversed);
        }
        bits.optimize();
        Self {
            bits,
            len: bytes.len() as u64,
        }
    }

    /// Appends the value's bytes (`GET`) to `out`: exactly `len` bytes,
    /// trailing zero bytes included.
    ///
    /// Works a group of containers at a time through roaring's portable
    /// serialization, so that dense (bitmap) containers are copied a word at
    /// a time instead of bit by bit, with a transient buffer of at most
    /// about 512 KiB (64 containers) at a time.
    pub fn write_bytes(&self, out: &mut Vec<u8>) {
        let base = out.len();
        out.resize(base + self.len as usize, 0);
        let buf = &mut out[base..];
        let (Some(min), Some(max)) = (self.bits.min(), self.bits.max()) else {
            return;
        };
        let mut scratch = Vec::new();
        let mut group = u64::from(min) / GROUP_BITS;
        let last_group = u64::from(max) / GROUP_BITS;
        while group <= last_group {
            let lo = (group * GROUP_BITS) as u32;
            let hi = ((group + 1) * GROUP_BITS - 1) as u32;
            group += 1;
            let windowed;
            let part = if u64::from(min) / GROUP_BITS == last_group {
                &self.bits
            } else if self.bits.range(lo..=hi).next().is_none() {
                continue;
            } else {
                let mut window = RoaringBitmap::new();
                window.insert_range(lo..=hi);
                windowed = &self.bits & &window;
                &windowed
            };
            scratch.clear();
            let written = part
                .serialize_into(&mut scratch)
                .ok()
                .and_then(|()| write_serialized(&scratch, buf));
            if written.is_none() {
                // Not reached: roaring wrote a format we do not read.
                debug_assert!(false, "unexpected roaring serialization");
                buf.fill(0);
                self.write_runs(buf);
                return;
            }
        }
    }

    /// The slow but simple `GET` path: one run of consecutive bits at a time.
    fn write_runs(&self, buf: &mut [u8]) {
        let limit = buf.len() as u64 * 8;
        let mut runs = self.bits.iter();
        while let Some(run) = runs.next_range() {
            let start = u64::from(*run.start());
            if start >= limit {
                break;
            }
            let end = (u64::from(*run.end()) + 1).min(limit);
            fill_run(buf, start, end);
        }
    }

    /// The value's bytes (`GET`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len as usize);
        self.write_bytes(&mut out);
        out
    }

    /// `GETBIT`: the bit at `offset`; bits beyond the string are 0.
    pub fn get_bit(&self, offset: u64) -> bool {
        offset < self.len * 8 && u32::try_from(offset).is_ok_and(|o| self.bits.contains(o))
    }

    /// `SETBIT`: sets the bit at `offset` to `value` and returns the old bit.
    ///
    /// Like Redis, the string grows to `offset / 8 + 1` bytes if it is
    /// shorter, even when `value` is 0.
    pub fn set_bit(&mut self, offset: u32, value: bool) -> bool {
        let old = if value {
            !self.bits.insert(offset)
        } else {
            self.bits.remove(offset)
        };
        self.len = self.len.max(u64::from(offset) / 8 + 1);
        old
    }

    /// `BITCOUNT key`: the number of 1 bits in the whole string.
    pub fn count(&self) -> u64 {
        self.bits.len()
    }

    /// `BITCOUNT key start end [BYTE|BIT]`: the number of 1 bits in the
    /// inclusive range `[start, end]`, counted in bytes or in bits.
    ///
    /// Negative indexes count from the end (`-1` is the last byte, or the
    /// last bit for [`RangeUnit::Bit`]); both ends are clamped into the
    /// string. An empty range counts 0, and so does a range whose ends are
    /// both negative with `start > end` (Redis checks that before clamping).
    pub fn count_range(&self, start: i64, end: i64, unit: RangeUnit) -> u64 {
        if start < 0 && end < 0 && start > end {
            return 0;
        }
        match self.bit_range(start, end, unit) {
            Some((first, last)) => self.bits.range_cardinality(first..=last),
            None => 0,
        }
    }

    /// `BITPOS key bit [start [end [BYTE|BIT]]]` on an existing key: the
    /// absolute position of the first bit equal to `bit` in the range, or -1.
    ///
    /// `start` and `end` are normalised as in [`BitString::count_range`]
    /// (without its both-negative shortcut; `start` defaults to 0 and `end`
    /// to the last byte or bit). An empty range gives -1, including for an
    /// empty string. When looking for a 0 bit and none is in the range:
    /// without an explicit `end` the string counts as padded with zeros on
    /// the right, so the reply is the first bit past the range, `len * 8`;
    /// with an explicit `end` the reply is -1. Not finding a 1 bit gives -1.
    ///
    /// A missing key is the caller's business: Redis replies -1 when looking
    /// for a 1 bit and 0 when looking for a 0 bit, whatever the range.
    pub fn position(
        &self,
        bit: bool,
        start: Option<i64>,
        end: Option<i64>,
        unit: RangeUnit,
    ) -> i64 {
        let end_given = end.is_some();
        let total = self.total(unit);
        let Some((first, last)) =
            self.bit_range(start.unwrap_or(0), end.unwrap_or(total - 1), unit)
        else {
            return -1;
        };
        let found = if bit {
            self.bits.range(first..=last).next()
        } else {
            self.first_zero(first, last)
        };
        match found {
            Some(pos) => i64::from(pos),
            None if !bit && !end_given => i64::from(last) + 1,
            None => -1,
        }
    }

    /// `BITOP op destkey key...`: the value to store in the destination.
    ///
    /// `None` stands for a missing key, which acts as an empty string. The
    /// result is as long as the longest source; a shorter source acts as if
    /// padded with zero bytes, so `AND` gives zeros past it. `NOT` takes
    /// exactly one source (Redis rejects other counts before getting here;
    /// extra sources are ignored) and flips every bit of `[0, len * 8)`.
    /// An empty `sources` gives the empty string. When the result's length
    /// is 0 the caller deletes the destination key, as Redis does.
    pub fn bitop(op: BitOp, sources: &[Option<&BitString>]) -> BitString {
        let len = sources
            .iter()
            .map(|s| s.map_or(0, |s| s.len))
            .max()
            .unwrap_or(0);
        let present = || sources.iter().flatten().map(|s| &s.bits);
        let bits = match op {
            BitOp::And if sources.iter().any(Option::is_none) => RoaringBitmap::new(),
            BitOp::And => {
                // Start from the sparsest source: it bounds the result.
                let mut sorted: Vec<&RoaringBitmap> = present().collect();
                sorted.sort_by_key(|b| b.len());
                sorted.into_iter().intersection()
            }
            // Two sources: merged container by container into a copy of the
            // larger. roaring's many-way operations turn every container
            // into a bitmap and back, which costs twice as much for two
            // sparse keys (callgrind, two month keys) but pays off from
            // about seven (a week of day keys: 20% fewer instructions).
            BitOp::Or if sources.len() <= 2 => fold_largest(present(), |acc, b| *acc |= b),
            BitOp::Xor if sources.len() <= 2 => fold_largest(present(), |acc, b| *acc ^= b),
            BitOp::Or => present().union(),
            BitOp::Xor => present().symmetric_difference(),
            BitOp::Not => {
                debug_assert_eq!(sources.len(), 1, "BITOP NOT takes one source");
                let source = sources.first().copied().flatten();
                let len = source.map_or(0, |s| s.len);
                let mut all = RoaringBitmap::new();
                if len > 0 {
                    // len <= 2^29, so the last bit fits in a u32.
                    all.insert_range(0..=((len * 8 - 1) as u32));
                }
                if let Some(source) = source {
                    all -= &source.bits;
                }
                return BitString { bits: all, len };
            }
        };
        BitString { bits, len }
    }

    /// Heap memory used by the value, for the cache's budget: each
    /// container's slot in the bitmap's container vector and its own
    /// allocation, plus the stored values. The serialized size, used before,
    /// counts 8 bytes per container where memory holds about 64: for the
    /// sparse keys of an analytics dataset (a few users in each of 300
    /// containers) a decoded value takes four to six times its serialized
    /// size, and a cache of such values outgrew `--cache-size` by a quarter.
    /// `tests/heap_accounting.rs` checks the estimate against what glibc
    /// allocates. An array container grown by SETBIT may hold spare
    /// capacity, which is not counted; a decoded one holds none.
    pub fn heap_bytes(&self) -> usize {
        let stats = self.bits.statistics();
        stats.n_containers as usize * (CONTAINER_SLOT_BYTES + CONTAINER_ALLOCATION_OVERHEAD)
            + stats.n_values_array_containers as usize * 2
            + stats.n_bitset_containers as usize * CHUNK_BYTES
            + stats.n_bytes_run_containers as usize
    }

    /// The number of indexable units: bytes or bits.
    fn total(&self, unit: RangeUnit) -> i64 {
        // len <= 2^29, so len * 8 fits easily in an i64.
        match unit {
            RangeUnit::Byte => self.len as i64,
            RangeUnit::Bit => (self.len * 8) as i64,
        }
    }

    /// Redis's range normalisation: turns `[start, end]` in `unit`s
    /// (negative = from the end) into an inclusive range of bit numbers
    /// inside the string, or `None` when it is empty.
    fn bit_range(&self, start: i64, end: i64, unit: RangeUnit) -> Option<(u32, u32)> {
        let total = self.total(unit);
        let start = if start < 0 { total + start } else { start }.max(0);
        let end = if end < 0 { total + end } else { end }
            .max(0)
            .min(total - 1);
        if start > end {
            return None;
        }
        // 0 <= start <= end < total <= 2^32.
        let (first, last) = match unit {
            RangeUnit::Byte => (start * 8, end * 8 + 7),
            RangeUnit::Bit => (start, end),
        };
        Some((first as u32, last as u32))
    }

    /// The first 0 bit in the inclusive bit range `[first, last]`.
    fn first_zero(&self, first: u32, last: u32) -> Option<u32> {
        let mut candidate = u64::from(first);
        let mut runs = self.bits.range(first..=last);
        while let Some(run) = runs.next_range() {
            if u64::from(*run.start()) > candidate {
                break;
            }
            candidate = u64::from(*run.end()) + 1;
        }
        // candidate <= last < 2^32 when it converts.
        (candidate <= u64::from(last)).then_some(candidate as u32)
    }
}

/// Bits per `GET` group: 64 roaring containers, 512 KiB of output.
const GROUP_BITS: u64 = 64 << 16;

/// Reads 16- and 32-bit little-endian fields from a byte slice.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// ORs the bits of a bitmap in roaring's portable serialized form
/// (<https://github.com/RoaringBitmap/RoaringFormatSpec>) into `buf`, in
/// Redis numbering. Bits at or past `buf.len() * 8` are dropped. `None` when
/// the input is not in that format.
fn write_serialized(data: &[u8], buf: &mut [u8]) -> Option<()> {
    const COOKIE: u32 = 12347;
    const COOKIE_NO_RUNS: u32 = 12346;
    let limit = buf.len() as u64 * 8;
    let mut cur = Cursor(data);
    let cookie = cur.u32()?;
    let (size, run_flags) = if cookie & 0xFFFF == COOKIE {
        let size = (cookie >> 16) as usize + 1;
        (size, Some(cur.take(size.div_ceil(8))?))
    } else if cookie == COOKIE_NO_RUNS {
        (cur.u32()? as usize, None)
    } else {
        return None;
    };
    let mut headers = Cursor(cur.take(size.checked_mul(4)?)?);
    if run_flags.is_none() || size >= 4 {
        // Container offsets: containers follow each other anyway.
        cur.take(size * 4)?;
    }
    for i in 0..size {
        let key = u64::from(headers.u16()?);
        let card = usize::from(headers.u16()?) + 1;
        let base = key << 16;
        let is_run = run_flags.is_some_and(|flags| flags[i / 8] & (1 << (i % 8)) != 0);
        if is_run {
            for _ in 0..cur.u16()? {
                let start = base + u64::from(cur.u16()?);
                let end = (start + u64::from(cur.u16()?) + 1).min(limit);
                if start < end {
                    fill_run(buf, start, end);
                }
            }
        } else if card <= 4096 {
            for _ in 0..card {
                let bit = base + u64::from(cur.u16()?);
                if bit < limit {
                    buf[(bit / 8) as usize] |= 0x80 >> (bit % 8);
                }
            }
        } else {
            // 1024 little-endian u64 words: LSB-first bytes.
            let words = cur.take(CHUNK_BYTES)?;
            let first = (key as usize) * CHUNK_BYTES;
            if let Some(dst) = buf.get_mut(first..) {
                for (d, &s) in dst.iter_mut().zip(words) {
                    *d |= s.reverse_bits();
                }
            }
        }
    }
    Some(())
}

/// Whether every byte is zero (word at a time).
fn is_all_zero(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    let words_zero = words
        .by_ref()
        .all(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0);
    words_zero && words.remainder().iter().all(|&b| b == 0)
}

/// Sets bits `[start, end)` (Redis numbering) in `buf`; `start < end`.
fn fill_run(buf: &mut [u8], start: u64, end: u64) {
    let first_byte = (start / 8) as usize;
    let last_byte = ((end - 1) / 8) as usize;
    let head = 0xFFu8 >> (start % 8);
    let tail = 0xFFu8 << (7 - (end - 1) % 8);
    if first_byte == last_byte {
        buf[first_byte] |= head & tail;
    } else {
        buf[first_byte] |= head;
        buf[first_byte + 1..last_byte].fill(0xFF);
        buf[last_byte] |= tail;
    }
}

/// Combines bitmaps pairwise into a copy of the one with the most
/// containers (the others merge into it container by container).
fn fold_largest<'a>(
    sources: impl Iterator<Item = &'a RoaringBitmap>,
    mut combine: impl FnMut(&mut RoaringBitmap, &RoaringBitmap),
) -> RoaringBitmap {
    let mut all: Vec<&RoaringBitmap> = sources.collect();
    let Some(largest) = (0..all.len()).max_by_key(|&i| all[i].serialized_size()) else {
        return RoaringBitmap::new();
    };
    let mut acc = all.swap_remove(largest).clone();
    for b in all {
        combine(&mut acc, b);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A naive model of Redis strings over plain bytes, written from Redis's
    /// documented semantics, one bit at a time.
    mod model {
        use super::super::{BitOp, RangeUnit};

        pub fn bit(bytes: &[u8], i: u64) -> bool {
            let byte = (i / 8) as usize;
            byte < bytes.len() && bytes[byte] & (0x80 >> (i % 8)) != 0
        }

        pub fn set_bit(bytes: &mut Vec<u8>, i: u32, value: bool) -> bool {
            let byte = (i / 8) as usize;
            if bytes.len() <= byte {
                bytes.resize(byte + 1, 0);
            }
            let mask = 0x80u8 >> (i % 8);
            let old = bytes[byte] & mask != 0;
            if value {
                bytes[byte] |= mask;
            } else {
                bytes[byte] &= !mask;
            }
            old
        }

        /// Normalises `[start, end]` as Redis does; `None` when empty.
        /// Returns bit numbers `[first, last]`.
        fn range(len: usize, start: i64, end: i64, unit: RangeUnit) -> Option<(u64, u64)> {
            let total = match unit {
                RangeUnit::Byte => len as i128,
                RangeUnit::Bit => len as i128 * 8,
            };
            let mut s = start as i128;
            let mut e = end as i128;
            if s < 0 {
                s += total;
            }
            if e < 0 {
                e += total;
            }
            s = s.max(0);
            e = e.max(0);
            if e >= total {
                e = total - 1;
            }
            if s > e {
                return None;
            }
            Some(match unit {
                RangeUnit::Byte => (s as u64 * 8, e as u64 * 8 + 7),
                RangeUnit::Bit => (s as u64, e as u64),
            })
        }

        pub fn count_range(bytes: &[u8], start: i64, end: i64, unit: RangeUnit) -> u64 {
            if start < 0 && end < 0 && start > end {
                return 0;
            }
            match range(bytes.len(), start, end, unit) {
                Some((s, e)) => (s..=e).filter(|&i| bit(bytes, i)).count() as u64,
                None => 0,
            }
        }

        pub fn position(
            bytes: &[u8],
            want: bool,
            start: Option<i64>,
            end: Option<i64>,
            unit: RangeUnit,
        ) -> i64 {
            let total = match unit {
                RangeUnit::Byte => bytes.len() as i64,
                RangeUnit::Bit => bytes.len() as i64 * 8,
            };
            let Some((s, e)) = range(
                bytes.len(),
                start.unwrap_or(0),
                end.unwrap_or(total - 1),
                unit,
            ) else {
                return -1;
            };
            for i in s..=e {
                if bit(bytes, i) == want {
                    return i as i64;
                }
            }
            if !want && end.is_none() {
                bytes.len() as i64 * 8
            } else {
                -1
            }
        }

        pub fn bitop(op: BitOp, sources: &[Option<&[u8]>]) -> Vec<u8> {
            let len = sources
                .iter()
                .map(|s| s.map_or(0, |s| s.len()))
                .max()
                .unwrap_or(0);
            let byte = |s: &Option<&[u8]>, j: usize| s.and_then(|s| s.get(j).copied()).unwrap_or(0);
            (0..len)
                .map(|j| match op {
                    BitOp::Not => !byte(&sources[0], j),
                    BitOp::And => sources.iter().fold(0xFF, |acc, s| acc & byte(s, j)),
                    BitOp::Or => sources.iter().fold(0, |acc, s| acc | byte(s, j)),
                    BitOp::Xor => sources.iter().fold(0, |acc, s| acc ^ byte(s, j)),
                })
                .collect()
        }
    }

    // ---------------------------------------------------------------
    // Strategies

    fn byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            3 => Just(0u8),
            3 => Just(0xFFu8),
            1 => Just(0x80u8),
            1 => Just(0x01u8),
            4 => any::<u8>(),
        ]
    }

    /// Short strings with many 0x00/0xFF bytes.
    fn short_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(byte(), 0..40)
    }

    /// Strings made of runs, long enough to span several roaring
    /// containers (8192 bytes each).
    fn run_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec((byte(), 1usize..6000), 0..8).prop_map(|runs| {
            runs.into_iter()
                .flat_map(|(b, n)| std::iter::repeat_n(b, n))
                .collect()
        })
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![3 => short_bytes(), 1 => run_bytes()]
    }

    fn index() -> impl Strategy<Value = i64> {
        prop_oneof![
            6 => -60i64..60,
            2 => -400i64..400,
            1 => -200_000i64..200_000,
            1 => Just(i64::MIN),
            1 => Just(i64::MAX),
            1 => Just(0i64),
            1 => Just(-1i64),
        ]
    }

    fn unit() -> impl Strategy<Value = RangeUnit> {
        prop_oneof![Just(RangeUnit::Byte), Just(RangeUnit::Bit)]
    }

    fn op() -> impl Strategy<Value = BitOp> {
        prop_oneof![Just(BitOp::And), Just(BitOp::Or), Just(BitOp::Xor)]
    }

    fn check_invariant(s: &BitString) {
        if let Some(max) = s.bits().max() {
            assert!(u64::from(max) < s.len() * 8);
        }
    }

    // ---------------------------------------------------------------
    // Properties against the model

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn round_trip(b in bytes()) {
            let s = BitString::from_bytes(&b);
            check_invariant(&s);
            prop_assert_eq!(s.len(), b.len() as u64);
            prop_assert_eq!(s.is_empty(), b.is_empty());
            prop_assert_eq!(s.to_bytes(), b.clone());
            let mut out = vec![7u8, 8];
            s.write_bytes(&mut out);
            prop_assert_eq!(&out[..2], &[7u8, 8][..]);
            prop_assert_eq!(&out[2..], &b[..]);
            let mut slow = vec![0u8; b.len()];
            s.write_runs(&mut slow);
            prop_assert_eq!(slow, b.clone());
            let (bits, len) = s.clone().into_parts();
            prop_assert_eq!(BitString::from_parts(bits, len), s);
        }

        #[test]
        fn get_bit_and_count(b in bytes(), probes in prop::collection::vec(0u64..200_000, 0..20)) {
            let s = BitString::from_bytes(&b);
            let bits = b.len() as u64 * 8;
            for i in probes.into_iter().chain([0, bits.saturating_sub(1), bits, u64::MAX]) {
                prop_assert_eq!(s.get_bit(i), model::bit(&b, i), "bit {}", i);
            }
            let ones: u64 = b.iter().map(|x| u64::from(x.count_ones())).sum();
            prop_assert_eq!(s.count(), ones);
        }

        #[test]
        fn set_bit_matches(
            b in bytes(),
            ops in prop::collection::vec(
                (prop_oneof![0u32..500, 0u32..200_000, Just(u32::MAX)], any::<bool>()),
                0..30,
            ),
        ) {
            let mut s = BitString::from_bytes(&b);
            let mut m = b.clone();
            for (offset, value) in ops {
                if offset == u32::MAX {
                    // Checked without a 512 MiB model below.
                    continue;
                }
                prop_assert_eq!(s.set_bit(offset, value), model::set_bit(&mut m, offset, value));
                prop_assert_eq!(s.len(), m.len() as u64);
            }
            check_invariant(&s);
            prop_assert_eq!(s.to_bytes(), m);
        }

        #[test]
        fn count_range_matches(b in bytes(), start in index(), end in index(), unit in unit()) {
            let s = BitString::from_bytes(&b);
            prop_assert_eq!(
                s.count_range(start, end, unit),
                model::count_range(&b, start, end, unit)
            );
        }

        #[test]
        fn position_matches(
            b in bytes(),
            bit in any::<bool>(),
            start in index(),
            end in index(),
            unit in unit(),
            shape in 0u8..3,
        ) {
            let s = BitString::from_bytes(&b);
            let (start, end, unit) = match shape {
                0 => (None, None, RangeUnit::Byte),
                1 => (Some(start), None, RangeUnit::Byte),
                _ => (Some(start), Some(end), unit),
            };
            prop_assert_eq!(
                s.position(bit, start, end, unit),
                model::position(&b, bit, start, end, unit)
            );
        }

        #[test]
        fn bitop_matches(
            op in op(),
            srcs in prop::collection::vec(prop::option::weighted(0.85, bytes()), 1..5),
        ) {
            let strings: Vec<Option<BitString>> =
                srcs.iter().map(|s| s.as_deref().map(BitString::from_bytes)).collect();
            let refs: Vec<Option<&BitString>> = strings.iter().map(Option::as_ref).collect();
            let model_srcs: Vec<Option<&[u8]>> = srcs.iter().map(|s| s.as_deref()).collect();
            let result = BitString::bitop(op, &refs);
            check_invariant(&result);
            prop_assert_eq!(result.to_bytes(), model::bitop(op, &model_srcs));
        }

        #[test]
        fn bitop_not_matches(src in prop::option::weighted(0.85, bytes())) {
            let string = src.as_deref().map(BitString::from_bytes);
            let result = BitString::bitop(BitOp::Not, &[string.as_ref()]);
            check_invariant(&result);
            prop_assert_eq!(result.to_bytes(), model::bitop(BitOp::Not, &[src.as_deref()]));
            prop_assert_eq!(
                result.count(),
                src.as_ref().map_or(0, |b| b.len() as u64 * 8) - string.map_or(0, |s| s.count())
            );
        }
    }

    // ---------------------------------------------------------------
    // Cases checked against redis-server 7.0.15

    /// `SET k "\xff\xf0\x00"`.
    fn k() -> BitString {
        BitString::from_bytes(b"\xff\xf0\x00")
    }

    use RangeUnit::{Bit, Byte};

    #[test]
    fn redis_bitcount() {
        let k = k();
        assert_eq!(k.len(), 3); // STRLEN k
        assert_eq!(k.count(), 12); // BITCOUNT k
        assert_eq!(k.count_range(-2, -1, Byte), 4); // BITCOUNT k -2 -1
        assert_eq!(k.count_range(5, 30, Bit), 7); // BITCOUNT k 5 30 BIT
        assert_eq!(k.count_range(-10, -20, Byte), 0); // BITCOUNT k -10 -20
        assert_eq!(k.count_range(-20, -10, Byte), 8); // BITCOUNT k -20 -10
        assert_eq!(k.count_range(-20, -10, Bit), 8); // BITCOUNT k -20 -10 BIT
        assert_eq!(k.count_range(1, -30, Byte), 0); // BITCOUNT k 1 -30
        assert_eq!(k.count_range(0, 100, Byte), 12); // BITCOUNT k 0 100
        assert_eq!(k.count_range(0, -1, Bit), 12); // BITCOUNT k 0 -1 BIT
        assert_eq!(k.count_range(-5, -3, Bit), 0); // BITCOUNT k -5 -3 BIT
        assert_eq!(k.count_range(10, 11, Bit), 2); // BITCOUNT k 10 11 BIT
        assert_eq!(k.count_range(11, 12, Bit), 1); // BITCOUNT k 11 12 BIT
        assert_eq!(k.count_range(3, 3, Byte), 0); // BITCOUNT k 3 3
        assert_eq!(k.count_range(-1, -3, Bit), 0); // BITCOUNT k -1 -3 BIT
    }

    #[test]
    fn redis_bitpos() {
        let k = k();
        assert_eq!(k.position(false, None, None, Byte), 12); // BITPOS k 0
        assert_eq!(k.position(true, None, None, Byte), 0); // BITPOS k 1
        assert_eq!(k.position(true, Some(2), None, Byte), -1); // BITPOS k 1 2
        assert_eq!(k.position(false, Some(0), Some(-1), Bit), 12); // BITPOS k 0 0 -1 BIT
        assert_eq!(k.position(false, Some(0), Some(-1), Byte), 12); // BITPOS k 0 0 -1
        assert_eq!(k.position(false, Some(0), None, Byte), 12); // BITPOS k 0 0
        assert_eq!(k.position(true, Some(-10), Some(-20), Byte), 0); // BITPOS k 1 -10 -20
        assert_eq!(k.position(false, Some(-10), Some(-20), Byte), -1); // BITPOS k 0 -10 -20
        assert_eq!(k.position(true, Some(5), Some(3), Byte), -1); // BITPOS k 1 5 3
        assert_eq!(k.position(false, Some(0), Some(1), Byte), 12); // BITPOS k 0 0 1
        assert_eq!(k.position(false, Some(0), Some(11), Bit), -1); // BITPOS k 0 0 11 BIT
        assert_eq!(k.position(false, Some(0), Some(12), Bit), 12); // BITPOS k 0 0 12 BIT
        assert_eq!(k.position(false, Some(3), None, Byte), -1); // BITPOS k 0 3
        assert_eq!(k.position(false, Some(2), None, Byte), 16); // BITPOS k 0 2
        assert_eq!(k.position(true, Some(9), Some(20), Bit), 9); // BITPOS k 1 9 20 BIT
        assert_eq!(k.position(true, Some(12), Some(-1), Bit), -1); // BITPOS k 1 12 -1 BIT
        assert_eq!(k.position(false, Some(-3), Some(-1), Bit), 21); // BITPOS k 0 -3 -1 BIT
    }

    #[test]
    fn redis_bitpos_all_ones() {
        // SET f "\xff\xff"
        let f = BitString::from_bytes(b"\xff\xff");
        assert_eq!(f.position(false, None, None, Byte), 16); // BITPOS f 0
        assert_eq!(f.position(false, Some(1), None, Byte), 16); // BITPOS f 0 1
        assert_eq!(f.position(false, Some(0), Some(-1), Byte), -1); // BITPOS f 0 0 -1
        assert_eq!(f.position(false, Some(3), Some(9), Bit), -1); // BITPOS f 0 3 9 BIT
        assert_eq!(f.position(false, Some(0), Some(-1), Bit), -1); // BITPOS f 0 0 -1 BIT
        assert_eq!(f.position(true, Some(7), Some(7), Bit), 7); // BITPOS f 1 7 7 BIT
    }

    #[test]
    fn redis_empty_string() {
        // SET e ""
        let e = BitString::from_bytes(b"");
        assert!(e.is_empty());
        assert_eq!(e.position(false, None, None, Byte), -1); // BITPOS e 0
        assert_eq!(e.position(true, None, None, Byte), -1); // BITPOS e 1
        assert_eq!(e.position(false, Some(0), None, Byte), -1); // BITPOS e 0 0
        assert_eq!(e.count(), 0); // BITCOUNT e
        assert_eq!(e.count_range(0, -1, Byte), 0); // BITCOUNT e 0 -1
                                                   // BITOP NOT d e -> 0 (and d is deleted)
        assert_eq!(BitString::bitop(BitOp::Not, &[Some(&e)]).len(), 0);
    }

    #[test]
    fn redis_setbit_and_bitop() {
        let k = k();
        // SETBIT s 20 0 -> 0; STRLEN s -> 3; GET s -> "\x00\x00\x00"
        let mut s = BitString::new();
        assert!(!s.set_bit(20, false));
        assert_eq!(s.len(), 3);
        assert_eq!(s.to_bytes(), b"\x00\x00\x00");
        // SETBIT s 7 1 -> 0, SETBIT s 7 1 -> 1, SETBIT s 7 0 -> 1
        assert!(!s.set_bit(7, true));
        assert!(s.set_bit(7, true));
        assert!(s.set_bit(7, false));
        assert_eq!(s.len(), 3);
        // SETBIT s 4294967295 1 -> 0; STRLEN s -> 536870912; GETBIT s 4294967295 -> 1
        assert!(!s.set_bit(u32::MAX, true));
        assert_eq!(s.len(), MAX_LEN);
        assert!(s.get_bit(u64::from(u32::MAX)));
        assert_eq!(s.count_range(-1, -1, Bit), 1); // BITCOUNT s -1 -1 BIT
        assert_eq!(s.position(true, None, None, Byte), 4294967295); // BITPOS s 1
        assert_eq!(s.position(false, Some(-1), None, Byte), 4294967288); // BITPOS s 0 -1

        let s = BitString::from_bytes(b"\x00\x00\x00");
        // BITOP AND d k s -> 3, GET d -> "\x00\x00\x00"
        let d = BitString::bitop(BitOp::And, &[Some(&k), Some(&s)]);
        assert_eq!((d.len(), d.to_bytes()), (3, b"\x00\x00\x00".to_vec()));
        // BITOP NOT d k -> 3, GET d -> "\x00\x0f\xff"
        let d = BitString::bitop(BitOp::Not, &[Some(&k)]);
        assert_eq!((d.len(), d.to_bytes()), (3, b"\x00\x0f\xff".to_vec()));
        // BITOP OR d k missing -> 3, GET d -> "\xff\xf0\x00"
        let d = BitString::bitop(BitOp::Or, &[Some(&k), None]);
        assert_eq!((d.len(), d.to_bytes()), (3, b"\xff\xf0\x00".to_vec()));
        // BITOP AND d k missing -> 3, GET d -> "\x00\x00\x00"
        let d = BitString::bitop(BitOp::And, &[Some(&k), None]);
        assert_eq!((d.len(), d.to_bytes()), (3, b"\x00\x00\x00".to_vec()));
        // SET a "\x0f" ; BITOP XOR d k a -> 3, GET d -> "\xf0\xf0\x00"
        let a = BitString::from_bytes(b"\x0f");
        let d = BitString::bitop(BitOp::Xor, &[Some(&k), Some(&a)]);
        assert_eq!((d.len(), d.to_bytes()), (3, b"\xf0\xf0\x00".to_vec()));
        // BITOP AND d k a -> 3, GET d -> "\x0f\x00\x00"
        let d = BitString::bitop(BitOp::And, &[Some(&k), Some(&a)]);
        assert_eq!((d.len(), d.to_bytes()), (3, b"\x0f\x00\x00".to_vec()));
        // BITOP OR d missing missing2 -> 0 (d deleted)
        assert_eq!(BitString::bitop(BitOp::Or, &[None, None]).len(), 0);
    }

    // ---------------------------------------------------------------
    // Other edge cases

    #[test]
    fn big_offsets_do_not_overflow() {
        let mut s = BitString::new();
        s.set_bit(u32::MAX, true);
        for unit in [Byte, Bit] {
            for (a, b) in [
                (i64::MIN, i64::MAX),
                (0, i64::MAX),
                (i64::MIN, -1),
                (-1, -1),
            ] {
                assert_eq!(s.count_range(a, b, unit), 1);
                assert_eq!(s.position(true, Some(a), Some(b), unit), 4294967295);
            }
            assert_eq!(s.position(false, Some(i64::MAX), None, unit), -1);
        }
        assert_eq!(s.position(false, Some(-1), Some(-1), Bit), -1);
        assert_eq!(s.position(false, None, None, Byte), 0);
        let not = BitString::bitop(BitOp::Not, &[Some(&s)]);
        assert_eq!(not.len(), MAX_LEN);
        assert_eq!(not.count(), (1u64 << 32) - 1);
        assert_eq!(not.position(false, None, None, Byte), 4294967295);
        assert_eq!(not.position(true, Some(-1), None, Bit), -1);
        assert_eq!(not.position(true, Some(-8), None, Bit), 4294967288);
        assert_eq!(
            BitString::bitop(BitOp::And, &[Some(&s), Some(&not)]).count(),
            0
        );
        assert_eq!(
            BitString::bitop(BitOp::Xor, &[Some(&s), Some(&not)]).count(),
            1u64 << 32
        );
    }

    #[test]
    fn trailing_zero_bytes_and_defaults() {
        let s = BitString::from_bytes(&[0, 0, 0x40, 0, 0]);
        assert_eq!(s.len(), 5);
        assert_eq!(s.bits().iter().collect::<Vec<_>>(), vec![17]);
        assert_eq!(s.to_bytes(), vec![0, 0, 0x40, 0, 0]);
        assert_eq!(BitString::new(), BitString::default());
        assert_eq!(BitString::new().to_bytes(), Vec::<u8>::new());
        assert!(BitString::bitop(BitOp::Xor, &[]).is_empty());
        assert!(s.heap_bytes() > 0);
    }

    #[test]
    fn write_bytes_across_groups() {
        // ~2.3 groups of 64 containers, mixing array, bitmap and run
        // containers, with and without any run container at all.
        let group_bytes = (GROUP_BITS / 8) as usize;
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut b = vec![0u8; 2 * group_bytes + 300_000];
        for (i, byte) in b.iter_mut().enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = match (i / CHUNK_BYTES) % 5 {
                0 => 0,
                1 => x as u8,
                2 => 0xFF,
                3 if x.is_multiple_of(50) => 0x10,
                3 => 0,
                _ => 0xF0,
            };
        }
        for len in [b.len(), group_bytes + 5, 9 * CHUNK_BYTES] {
            let b = &b[..len];
            let mut s = BitString::from_bytes(b);
            assert_eq!(s.to_bytes(), b);
            // Without run containers (the other serialization header).
            let (mut bits, n) = s.clone().into_parts();
            bits.remove_run_compression();
            assert_eq!(BitString::from_parts(bits, n).to_bytes(), b);
            // Mutated, then checked against the model.
            let mut m = b.to_vec();
            for off in [0u32, 77, 65_535, 65_536, 4_194_303, 4_194_304, 9_000_001] {
                for v in [true, false, true] {
                    assert_eq!(s.set_bit(off, v), model::set_bit(&mut m, off, v));
                }
            }
            assert_eq!(s.to_bytes(), m);
            let mut slow = vec![0u8; m.len()];
            s.write_runs(&mut slow);
            assert_eq!(slow, m);
        }
    }

    #[test]
    fn dense_containers_round_trip() {
        // Full, alternating and random-ish 64 KiB blocks across containers.
        let mut b = vec![0xFFu8; 3 * CHUNK_BYTES + 17];
        b[CHUNK_BYTES..2 * CHUNK_BYTES].fill(0xAA);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for byte in &mut b[2 * CHUNK_BYTES..] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
        let s = BitString::from_bytes(&b);
        assert_eq!(s.to_bytes(), b);
        let ones: u64 = b.iter().map(|x| u64::from(x.count_ones())).sum();
        assert_eq!(s.count(), ones);
        assert_eq!(
            s.position(false, None, None, Byte),
            model::position(&b, false, None, None, Byte)
        );
    }
}
