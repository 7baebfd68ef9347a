//! WATCH's bookkeeping: which clients watch which keys, and which of those
//! clients saw a watched key change since (their next EXEC fails). Owned by
//! the keyspace and guarded by its lock: every change to a key goes through
//! the keyspace, which calls [`Watches::touch`].

use std::collections::{HashMap, HashSet};

/// A watched key as its client remembers it, to unwatch it later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedKey {
    pub db: usize,
    pub key: Vec<u8>,
}

/// A client watching a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Watcher {
    db: usize,
    client: u64,
    /// The key had expired (not yet deleted) when the client watched it: its
    /// deletion as expired is no change (Redis 7.0's rule).
    expired: bool,
}

#[derive(Debug, Default)]
pub struct Watches {
    /// Watched key → the clients that watch it.
    by_key: HashMap<Box<[u8]>, Vec<Watcher>>,
    /// Clients one of whose watched keys changed since they watched it.
    touched: HashSet<u64>,
}

impl Watches {
    /// Starts watching `key` of `db` for `client` (`expired`: the key had
    /// expired, not yet deleted); false when it already did.
    pub fn watch(&mut self, db: usize, key: &[u8], client: u64, expired: bool) -> bool {
        let watchers = self.by_key.entry(key.into()).or_default();
        if watchers.iter().any(|w| w.db == db && w.client == client) {
            return false;
        }
        watchers.push(Watcher {
            db,
            client,
            expired,
        });
        true
    }

    /// Forgets every watch of `client` (`keys`: the keys it watched) and
    /// whether one of them changed.
    pub fn unwatch(&mut self, client: u64, keys: &[WatchedKey]) {
        for watched in keys {
            let key = watched.key.as_slice();
            if let Some(watchers) = self.by_key.get_mut(key) {
                watchers.retain(|w| !(w.db == watched.db && w.client == client));
                if watchers.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
        self.touched.remove(&client);
    }

    /// A key of `db` changed: the clients watching it will fail their EXEC.
    #[inline]
    pub fn touch(&mut self, db: usize, key: &[u8]) {
        if self.by_key.is_empty() {
            return;
        }
        if let Some(watchers) = self.by_key.get(key) {
            for w in watchers {
                if w.db == db {
                    self.touched.insert(w.client);
                }
            }
        }
    }

    /// An expired key of `db` was deleted: a change for the clients that
    /// watched it while it was live; for those that watched it already
    /// expired, no change (and from now on, they watch a missing key).
    pub fn touch_expired(&mut self, db: usize, key: &[u8]) {
        if self.by_key.is_empty() {
            return;
        }
        if let Some(watchers) = self.by_key.get_mut(key) {
            for w in watchers.iter_mut().filter(|w| w.db == db) {
                if w.expired {
                    w.expired = false;
                } else {
                    self.touched.insert(w.client);
                }
            }
        }
    }

    /// The watched keys of `db` (of every database with `None`), for FLUSHDB
    /// and FLUSHALL to touch those that exist.
    pub fn watched_in(&self, db: Option<usize>) -> Vec<(usize, Vec<u8>)> {
        let mut keys = Vec::new();
        for (key, watchers) in &self.by_key {
            let mut dbs: Vec<usize> = watchers
                .iter()
                .map(|w| w.db)
                .filter(|&d| db.is_none_or(|db| db == d))
                .collect();
            dbs.sort_unstable();
            dbs.dedup();
            keys.extend(dbs.into_iter().map(|d| (d, key.to_vec())));
        }
        keys
    }

    /// Whether `client` watched `key` of `db` while it was live (or
    /// missing), rather than already expired: only then does its expiry
    /// before EXEC count as a change (Redis 7.0's rule).
    pub fn watched_live(&self, db: usize, key: &[u8], client: u64) -> bool {
        self.by_key.get(key).is_some_and(|watchers| {
            watchers
                .iter()
                .any(|w| w.db == db && w.client == client && !w.expired)
        })
    }

    /// Whether a key `client` watches changed since it watched it.
    pub fn is_touched(&self, client: u64) -> bool {
        self.touched.contains(&client)
    }

    /// Keys watched by at least one client.
    pub fn watched_keys(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(db: usize, key: &[u8]) -> WatchedKey {
        WatchedKey {
            db,
            key: key.to_vec(),
        }
    }

    #[test]
    fn a_touch_marks_the_watchers_of_that_key_in_that_database() {
        let mut w = Watches::default();
        assert!(w.watch(0, b"k", 1, false));
        assert!(!w.watch(0, b"k", 1, false));
        assert!(w.watch(1, b"k", 2, false));
        assert!(w.watch(0, b"other", 3, false));
        w.touch(0, b"k");
        assert!(w.is_touched(1));
        assert!(!w.is_touched(2), "another database's key of the same name");
        assert!(!w.is_touched(3));
        w.touch(0, b"unwatched");
        assert!(!w.is_touched(3));
    }

    #[test]
    fn unwatch_forgets_the_keys_and_the_touch() {
        let mut w = Watches::default();
        w.watch(0, b"k", 1, false);
        w.watch(0, b"k", 2, false);
        w.touch(0, b"k");
        w.unwatch(1, &[watched(0, b"k")]);
        assert!(!w.is_touched(1));
        assert!(w.is_touched(2));
        assert_eq!(w.watched_keys(), 1);
        w.unwatch(2, &[watched(0, b"k")]);
        assert_eq!(w.watched_keys(), 0);
        // Nothing watched: a touch marks no one.
        w.touch(0, b"k");
        assert!(!w.is_touched(1) && !w.is_touched(2));
    }

    #[test]
    fn deleting_a_key_that_had_expired_when_watched_is_no_change() {
        let mut w = Watches::default();
        w.watch(0, b"k", 1, true);
        w.watch(0, b"k", 2, false);
        assert!(!w.watched_live(0, b"k", 1));
        assert!(w.watched_live(0, b"k", 2));
        w.touch_expired(0, b"k");
        assert!(!w.is_touched(1));
        assert!(w.is_touched(2));
        assert!(w.watched_live(0, b"k", 1), "watches a missing key now");
        // Watched as missing from now on: a new value is a change.
        w.touch(0, b"k");
        assert!(w.is_touched(1));
    }

    #[test]
    fn watched_in_lists_each_database_once() {
        let mut w = Watches::default();
        w.watch(0, b"a", 1, false);
        w.watch(0, b"a", 2, false);
        w.watch(3, b"a", 2, false);
        w.watch(3, b"b", 1, false);
        let mut all = w.watched_in(None);
        all.sort();
        assert_eq!(
            all,
            vec![(0, b"a".to_vec()), (3, b"a".to_vec()), (3, b"b".to_vec())]
        );
        let mut three = w.watched_in(Some(3));
        three.sort();
        assert_eq!(three, vec![(3, b"a".to_vec()), (3, b"b".to_vec())]);
    }
}
