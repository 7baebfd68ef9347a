//! Keys as the keyspace's maps hold them (the overlay's slots and the
//! cache): up to `INLINE` bytes are kept inside the map's own slot, so that
//! comparing a key during a lookup reads no other memory (point lookups
//! are bound by memory latency: with the key in its own allocation, every
//! hit followed one more pointer); longer keys live in one shared
//! allocation, which the ordered set beside a map shares.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Bytes kept inline: 30, so the key takes 32 bytes and bitmapist's
/// day keys (`trackist_active_2026-11-27`, 26 bytes) fit with room to spare.
pub const INLINE: usize = 30;

/// What a shared key's allocation costs besides its bytes: the reference
/// counts, the allocator's header and its rounding.
const SHARED_OVERHEAD: usize = 32;

#[derive(Clone)]
pub enum KeyBytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<[u8]>),
}

impl KeyBytes {
    pub fn new(key: &[u8]) -> KeyBytes {
        if key.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..key.len()].copy_from_slice(key);
            KeyBytes::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            KeyBytes::Shared(Arc::from(key))
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            KeyBytes::Shared(b) => b,
        }
    }

    /// Heap bytes a key of `len` bytes takes besides its place in a map.
    pub fn heap_bytes_of(len: usize) -> usize {
        if len <= INLINE {
            0
        } else {
            SHARED_OVERHEAD + len
        }
    }
}

impl Borrow<[u8]> for KeyBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

// Hashing, equality and order are the byte slice's, as `Borrow` requires.
impl Hash for KeyBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl PartialEq for KeyBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for KeyBytes {}

impl PartialOrd for KeyBytes {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyBytes {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice().escape_ascii().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};
    use std::ops::Bound;

    #[test]
    fn inline_and_shared_keys_look_up_and_order_as_their_bytes() {
        let long = [b'x'; INLINE + 1];
        let keys: Vec<&[u8]> = vec![b"", b"a", b"ab", &long[..INLINE], &long, b"b"];
        assert!(matches!(
            KeyBytes::new(&long[..INLINE]),
            KeyBytes::Inline { .. }
        ));
        assert!(matches!(KeyBytes::new(&long), KeyBytes::Shared(_)));
        let mut map = HashMap::new();
        let mut set = BTreeSet::new();
        for (i, k) in keys.iter().enumerate() {
            map.insert(KeyBytes::new(k), i);
            set.insert(KeyBytes::new(k));
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(map.get(*k), Some(&i), "{k:?}");
            assert_eq!(KeyBytes::new(k).as_slice(), *k);
        }
        let mut sorted = keys.clone();
        sorted.sort();
        let in_order: Vec<&[u8]> = set.iter().map(KeyBytes::as_slice).collect();
        assert_eq!(in_order, sorted);
        let after_a: Vec<&[u8]> = set
            .range::<[u8], _>((Bound::Excluded(&b"a"[..]), Bound::Unbounded))
            .map(KeyBytes::as_slice)
            .collect();
        assert_eq!(after_a, sorted[2..].to_vec());
        assert_eq!(KeyBytes::heap_bytes_of(INLINE), 0);
        assert!(KeyBytes::heap_bytes_of(INLINE + 1) > INLINE + 1);
    }
}
