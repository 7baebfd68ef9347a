//! Giving freed heap memory back to the system. glibc keeps memory freed
//! inside its per-thread arenas: after the value cache evicts bitmaps decoded
//! on one network thread while another thread decodes new ones, each arena
//! can hold a cache's worth of free pages, and RSS doubles although the
//! cache stays within `--cache-size`. `malloc_trim` hands the free pages of
//! every arena back (MADV_DONTNEED); it runs from the housekeeping thread,
//! outside the keyspace lock, once enough memory was released to be worth it
//! and no checkpoint is running.

use std::time::{Duration, Instant};

/// Trim when at least this much was released since the last trim...
const RELEASED_BYTES_TRIGGER: u64 = 8 << 20;
/// ...and the last trim is at least this old. A trim holds each arena's lock
/// while it hands pages back, and pages handed back and needed again cost a
/// page fault each: under churn (a checkpoint every few hundred milliseconds
/// that replaces 100 MB of cached bitmaps) trimming at every 8 MB took a
/// quarter of a core and stalled the network threads' allocations.
const MIN_TRIM_INTERVAL: Duration = Duration::from_secs(1);
/// Otherwise trim anything released after this long.
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(10);

/// Decides when to trim, from a running total of bytes released.
pub struct Trimmer {
    released_at_last_trim: u64,
    last_trim: Instant,
}

impl Default for Trimmer {
    fn default() -> Self {
        Trimmer {
            released_at_last_trim: 0,
            last_trim: Instant::now(),
        }
    }
}

impl Trimmer {
    /// Whether to trim now, given the total bytes released so far and
    /// whether a checkpoint is running. Never during a checkpoint: it
    /// releases the previous version of every value it writes while clients
    /// allocate the next ones in the same arenas, so a trim then hands back
    /// pages that are needed again at once, and holds each arena's lock
    /// (which the network threads' allocations wait for) the whole time.
    /// Under checkpoints of every W6 dataset key back to back, a trim took
    /// 21 ms on average and up to 94 ms, and the p99 of point operations
    /// was about 5.8 ms with trims against 3.5 ms with none (two runs each).
    /// The trim comes when the checkpoint is over.
    pub fn due(&mut self, released_total: u64, checkpoint_running: bool) -> bool {
        if checkpoint_running {
            return false;
        }
        let released = released_total.saturating_sub(self.released_at_last_trim);
        let since = self.last_trim.elapsed();
        let due = (released >= RELEASED_BYTES_TRIGGER && since >= MIN_TRIM_INTERVAL)
            || (released > 0 && since >= IDLE_TRIM_AFTER);
        if due {
            self.released_at_last_trim = released_total;
            self.last_trim = Instant::now();
        }
        due
    }
}

/// Allocations of at least this size get their own mapping (see
/// `configure_allocator`).
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Fixes glibc's mmap threshold at 256 KiB. By default it rises to the size
/// of the largest block freed so far, so after the first multi-megabyte
/// buffer (a payload being read, a reply to GET of a large bitmap) every
/// later one comes from the arenas, where it leaves a hole between decoded
/// containers once freed. Measured with `--cache-size 64MiB` after reading
/// every payload of a 1,440-key dataset: 3 MB less RSS; cold decoding of
/// large payloads takes about a tenth longer (fresh pages for each buffer).
pub fn configure_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns the free pages of every malloc arena to the system.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is
    // thread-safe (it takes each arena's lock).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_enough_release_and_not_again_without_more() {
        let mut t = Trimmer::default();
        assert!(!t.due(0, false));
        assert!(
            !t.due(RELEASED_BYTES_TRIGGER, false),
            "trimmed just now (at start)"
        );
        t.last_trim -= MIN_TRIM_INTERVAL;
        assert!(!t.due(RELEASED_BYTES_TRIGGER - 1, false));
        assert!(t.due(RELEASED_BYTES_TRIGGER, false));
        assert!(!t.due(RELEASED_BYTES_TRIGGER, false));
        t.last_trim -= MIN_TRIM_INTERVAL;
        assert!(
            !t.due(2 * RELEASED_BYTES_TRIGGER - 1, false),
            "not enough since"
        );
        assert!(t.due(2 * RELEASED_BYTES_TRIGGER, false));
        assert!(
            !t.due(3 * RELEASED_BYTES_TRIGGER, false),
            "too soon after the last trim"
        );
        t.last_trim -= IDLE_TRIM_AFTER;
        assert!(
            !t.due(2 * RELEASED_BYTES_TRIGGER, false),
            "nothing new released"
        );
        assert!(
            t.due(2 * RELEASED_BYTES_TRIGGER + 1, false),
            "a little, but long ago"
        );
        // Not while a checkpoint runs; right after it.
        t.last_trim -= MIN_TRIM_INTERVAL;
        assert!(!t.due(4 * RELEASED_BYTES_TRIGGER, true));
        assert!(t.due(4 * RELEASED_BYTES_TRIGGER, false));
        trim();
    }
}
