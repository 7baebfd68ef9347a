//! Importing data from elsewhere: the Go bitmapist-server's bbolt database
//! files (`bolt`).

pub mod bolt;

use crate::keyspace::{BitString, Keyspace};
use crate::persistence::write_layer;
use crate::storage::btree::MAX_KEY_LEN;
use crate::storage::pagefile::PageFile;
use bolt::{read_go_database, BoltError, BoltFile};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub keys: u64,
    pub expired_dropped: u64,
    pub skipped_long_keys: u64,
    pub with_ttl: u64,
    pub set_bits: u64,
    pub db_bytes: u64,
    pub ms: u64,
}

/// Keys written per checkpoint while importing (bounds memory).
const KEYS_PER_CHECKPOINT: u64 = 50_000;

/// Converts the Go server's bbolt database at `from` into a new database
/// at `to`, then reopens `to` and checks every key against the source.
pub fn import_bolt(from: &Path, to: &Path) -> Result<ImportSummary, String> {
    if std::fs::metadata(to).is_ok() {
        return Err(format!(
            "{} already exists; import-bolt writes a new database (choose another --db or remove it)",
            to.display()
        ));
    }
    let result = import_into(from, to);
    if result.is_err() {
        // Leave nothing half-written behind.
        let _ = std::fs::remove_file(to);
    }
    result
}

fn import_into(from: &Path, to: &Path) -> Result<ImportSummary, String> {
    let started = Instant::now();
    let source = BoltFile::open(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let (mut file, committed) = PageFile::open(to).map_err(|e| e.to_string())?;
    let mut ks = Keyspace::new(Arc::new(committed), 64 << 20);
    let now_ms = crate::keyspace::now_ms();
    let mut summary = ImportSummary::default();
    let mut seq = 2;
    let mut since_checkpoint = 0u64;
    let checkpoint =
        |ks: &mut Keyspace, file: &mut PageFile<_>, seq: &mut u64| -> Result<(), String> {
            let frozen = ks.freeze();
            let base = ks.committed().clone();
            let done = write_layer(file, &frozen, &base, *seq)
                .map_err(|e| format!("writing {}: {e}", to.display()))?;
            ks.checkpoint_committed(done.committed, done.written);
            *seq += 1;
            Ok(())
        };
    let mut failure: Option<String> = None;
    let stats = read_go_database(&source, |entry| {
        if entry.key.len() > MAX_KEY_LEN {
            summary.skipped_long_keys += 1;
            tracing::warn!(key = %String::from_utf8_lossy(&entry.key[..64]), len = entry.key.len(), "skipping a key longer than this server stores");
            return Ok(());
        }
        let expire_at = match entry.expire_unix_nanos {
            Some(ns) if ns / 1_000_000 <= now_ms as i64 => {
                summary.expired_dropped += 1;
                return Ok(());
            }
            Some(ns) => Some((ns / 1_000_000) as u64),
            None => None,
        };
        let bits =
            roaring::RoaringBitmap::deserialize_from(entry.bitmap.as_slice()).map_err(|e| {
                BoltError::Corrupt(format!(
                    "key {:?}: not a Roaring bitmap: {e}",
                    String::from_utf8_lossy(&entry.key)
                ))
            })?;
        // The Go server keeps no length: its GET returns max_bit/8 + 1 bytes.
        let len = bits.max().map_or(0, |m| u64::from(m) / 8 + 1);
        summary.set_bits += bits.len();
        summary.with_ttl += u64::from(expire_at.is_some());
        summary.keys += 1;
        if let Err(e) = ks
            .db(0)
            .put(&entry.key, BitString::from_parts(bits, len), expire_at)
        {
            return Err(BoltError::Corrupt(e.to_string()));
        }
        since_checkpoint += 1;
        if since_checkpoint >= KEYS_PER_CHECKPOINT {
            since_checkpoint = 0;
            if let Err(e) = checkpoint(&mut ks, &mut file, &mut seq) {
                failure = Some(e.clone());
                return Err(BoltError::Corrupt(e));
            }
        }
        Ok(())
    });
    if let Some(e) = failure {
        return Err(e);
    }
    stats.map_err(|e| format!("{}: {e}", from.display()))?;
    checkpoint(&mut ks, &mut file, &mut seq)?;
    drop(ks);
    drop(file);
    verify(&source, to, &summary, now_ms)?;
    summary.db_bytes = std::fs::metadata(to).map(|m| m.len()).unwrap_or(0);
    summary.ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// Reopens the new database and checks every imported key's length, bit
/// count and expiry against the source.
fn verify(
    source: &BoltFile,
    to: &Path,
    summary: &ImportSummary,
    now_ms: u64,
) -> Result<(), String> {
    let (_file, committed) =
        PageFile::open(to).map_err(|e| format!("reopening {}: {e}", to.display()))?;
    let mut ks = Keyspace::new(Arc::new(committed), 64 << 20);
    if ks.total_keys() != summary.keys {
        return Err(format!(
            "verification: {} keys written, {} found",
            summary.keys,
            ks.total_keys()
        ));
    }
    let mut problem: Option<String> = None;
    read_go_database(source, |entry| {
        if entry.key.len() > MAX_KEY_LEN
            || entry
                .expire_unix_nanos
                .is_some_and(|ns| ns / 1_000_000 <= now_ms as i64)
        {
            return Ok(());
        }
        let bits = roaring::RoaringBitmap::deserialize_from(entry.bitmap.as_slice())
            .map_err(|e| BoltError::Corrupt(e.to_string()))?;
        let ok = match ks.db(0).value(&entry.key, now_ms) {
            Ok(Some(v)) => {
                *v.bits() == bits && v.len() == bits.max().map_or(0, |m| u64::from(m) / 8 + 1)
            }
            _ => false,
        };
        if !ok && problem.is_none() {
            problem = Some(format!(
                "verification: key {:?} differs",
                String::from_utf8_lossy(&entry.key)
            ));
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    problem.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/go-bitmapist-server/bitmapist.db")
    }

    #[test]
    fn imports_the_go_fixture() {
        let dir = tempfile::tempdir().expect("temp dir");
        let to = dir.path().join("new.db");
        let s = import_bolt(&fixture(), &to).expect("import");
        assert_eq!(s.keys, 306);
        assert_eq!(s.with_ttl, 1);
        // A second import onto the same file is refused.
        assert!(import_bolt(&fixture(), &to).is_err());
    }

    #[test]
    fn truncated_or_corrupt_sources_fail_cleanly() {
        let bytes = std::fs::read(fixture()).expect("fixture");
        let dir = tempfile::tempdir().expect("temp dir");
        // The fixture's committed state spans 62 pages: any shorter copy is incomplete.
        for (i, cut) in [0usize, 100, 4096, 8192, bytes.len() / 2, 62 * 4096 - 1]
            .into_iter()
            .enumerate()
        {
            let from = dir.path().join(format!("cut{i}.db"));
            std::fs::write(&from, &bytes[..cut]).expect("write");
            let to = dir.path().join(format!("out{i}.db"));
            assert!(
                import_bolt(&from, &to).is_err(),
                "a file cut at {cut} must not import"
            );
            assert!(!to.exists(), "a failed import leaves no file behind");
        }
    }
}
