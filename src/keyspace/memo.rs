//! Remembered BITOP results. Reports run the same BITOP over the same keys
//! again and again (bitmapist's cohorts, a dashboard refreshing), most of
//! them over past days and months that no longer change. When every source
//! and the destination still hold exactly the values of the last identical
//! BITOP, the destination already holds its result: nothing is computed,
//! and the reply is the result's length, as before.
//!
//! A value is recognised by identity: the memo holds `Weak` references to
//! the sources' values and to the result stored in the destination. A value
//! changed in place (`Arc::make_mut`) is moved away from its weak
//! references, and a replaced or dropped value no longer matches by
//! pointer, so a match means the very same, unchanged bits. Weak references
//! keep no bitmap alive (only its `Arc` header), and they never make a
//! later write copy a value (`make_mut` copies only for other strong
//! references).

use super::{BitOp, BitString};
use foldhash::fast::RandomState;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Weak};

/// How many BITOPs are remembered (the least recently used are forgotten).
const REMEMBERED: usize = 256;

/// What one BITOP read and wrote.
struct Remembered {
    /// Per source, its value (`None`: the key was missing, an empty string).
    sources: Vec<Option<Weak<BitString>>>,
    /// The result, as stored in the destination (without an expiry).
    result: Weak<BitString>,
}

pub struct BitopMemo {
    entries: LruCache<Vec<u8>, Remembered, RandomState>,
    /// BITOPs answered from the memo (`INFO memory`).
    pub hits: u64,
}

impl Default for BitopMemo {
    fn default() -> Self {
        BitopMemo {
            entries: LruCache::with_hasher(
                NonZeroUsize::new(REMEMBERED).unwrap_or(NonZeroUsize::MIN),
                RandomState::default(),
            ),
            hits: 0,
        }
    }
}

/// One BITOP as the memo names it.
#[derive(Clone, Copy, Debug)]
pub struct BitopCall<'a> {
    pub db: usize,
    pub op: BitOp,
    pub dest: &'a [u8],
    pub sources: &'a [&'a [u8]],
}

/// The memo's key: database, operation, destination and sources, each
/// name prefixed with its length.
fn memo_key(call: BitopCall<'_>) -> Vec<u8> {
    let BitopCall {
        db,
        op,
        dest,
        sources,
    } = call;
    let mut key = Vec::with_capacity(
        2 + 4 * (sources.len() + 1) + dest.len() + sources.iter().map(|s| s.len()).sum::<usize>(),
    );
    key.push(db as u8);
    key.push(match op {
        BitOp::And => 0,
        BitOp::Or => 1,
        BitOp::Xor => 2,
        BitOp::Not => 3,
    });
    for name in std::iter::once(&dest).chain(sources) {
        key.extend_from_slice(&(name.len() as u32).to_le_bytes());
        key.extend_from_slice(name);
    }
    key
}

fn same(remembered: &Option<Weak<BitString>>, now: &Option<Arc<BitString>>) -> bool {
    match (remembered, now) {
        (None, None) => true,
        (Some(weak), Some(arc)) => weak.upgrade().is_some_and(|then| Arc::ptr_eq(&then, arc)),
        _ => false,
    }
}

impl BitopMemo {
    /// The result's length if the destination still holds the result of
    /// this very BITOP over these very source values. `sources` are the
    /// sources' values now; `dest` is the destination's value now if it is
    /// in memory and has no expiry (else no match is possible).
    pub fn result_len(
        &mut self,
        call: BitopCall<'_>,
        sources: &[Option<Arc<BitString>>],
        dest: Option<&Arc<BitString>>,
    ) -> Option<u64> {
        let dest = dest?;
        let remembered = self.entries.get(&memo_key(call))?;
        let result = remembered.result.upgrade()?;
        let matches = Arc::ptr_eq(&result, dest)
            && remembered.sources.len() == sources.len()
            && remembered
                .sources
                .iter()
                .zip(sources)
                .all(|(then, now)| same(then, now));
        if !matches {
            return None;
        }
        self.hits += 1;
        Some(result.len())
    }

    /// Remembers a BITOP whose (non-empty) result was just stored in the
    /// destination without an expiry.
    pub fn remember(
        &mut self,
        call: BitopCall<'_>,
        sources: &[Option<Arc<BitString>>],
        result: &Arc<BitString>,
    ) {
        self.entries.put(
            memo_key(call),
            Remembered {
                sources: sources
                    .iter()
                    .map(|s| s.as_ref().map(Arc::downgrade))
                    .collect(),
                result: Arc::downgrade(result),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bits: &[u32]) -> Arc<BitString> {
        let mut v = BitString::new();
        for &b in bits {
            v.set_bit(b, true);
        }
        Arc::new(v)
    }

    #[test]
    fn a_remembered_bitop_matches_only_the_same_unchanged_values() {
        let mut memo = BitopMemo::default();
        let a = value(&[1, 9]);
        let b = value(&[2]);
        let sources = vec![Some(a.clone()), Some(b.clone()), None];
        const NAMES: [&[u8]; 3] = [b"a", b"b", b"missing"];
        const OR_D: BitopCall<'static> = BitopCall {
            db: 0,
            op: BitOp::Or,
            dest: b"d",
            sources: &NAMES,
        };
        let result = value(&[1, 2, 9]);
        memo.remember(OR_D, &sources, &result);
        fn hit(
            memo: &mut BitopMemo,
            sources: &[Option<Arc<BitString>>],
            dest: Option<&Arc<BitString>>,
        ) -> Option<u64> {
            memo.result_len(OR_D, sources, dest)
        }
        assert_eq!(hit(&mut memo, &sources, Some(&result)), Some(2));
        // Another operation, database, destination or source list: no match.
        for other in [
            BitopCall {
                op: BitOp::And,
                ..OR_D
            },
            BitopCall { db: 1, ..OR_D },
            BitopCall { dest: b"e", ..OR_D },
        ] {
            assert_eq!(memo.result_len(other, &sources, Some(&result)), None);
        }
        let fewer = BitopCall {
            sources: &NAMES[..2],
            ..OR_D
        };
        assert_eq!(memo.result_len(fewer, &sources[..2], Some(&result)), None);
        // The destination not in memory (or with an expiry): no match.
        assert_eq!(hit(&mut memo, &sources, None), None);
        // A missing source that now exists, or a source now missing.
        let now_present = vec![Some(a.clone()), Some(b.clone()), Some(value(&[]))];
        assert_eq!(hit(&mut memo, &now_present, Some(&result)), None);
        let now_missing = vec![Some(a.clone()), None, None];
        assert_eq!(hit(&mut memo, &now_missing, Some(&result)), None);
        // Equal bits in another value are not the same value.
        let copy = vec![Some(Arc::new((*a).clone())), Some(b.clone()), None];
        assert_eq!(hit(&mut memo, &copy, Some(&result)), None);
        let equal_result = Arc::new((*result).clone());
        assert_eq!(hit(&mut memo, &sources, Some(&equal_result)), None);
        assert_eq!(memo.hits, 1);

        // A source changed in place: its value moves away from the memo's
        // weak reference, without a copy of its bits.
        drop(sources);
        let mut a = a;
        let before = Arc::as_ptr(&a);
        Arc::make_mut(&mut a).set_bit(40, true);
        assert_ne!(Arc::as_ptr(&a), before, "moved to a new allocation");
        assert_eq!(a.count(), 3);
        let changed = vec![Some(a.clone()), Some(b.clone()), None];
        assert_eq!(hit(&mut memo, &changed, Some(&result)), None);

        // The destination changed in place: no match either.
        let fresh = vec![Some(a.clone()), Some(b.clone()), None];
        let mut result = value(&[1, 2, 9, 40]);
        memo.remember(OR_D, &fresh, &result);
        assert_eq!(hit(&mut memo, &fresh, Some(&result)), Some(6));
        Arc::make_mut(&mut result).set_bit(7, true);
        assert_eq!(hit(&mut memo, &fresh, Some(&result)), None);
    }
}
