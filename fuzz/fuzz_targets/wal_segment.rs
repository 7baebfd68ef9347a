//! WAL segment reading, recovery and record replay (src/storage/wal.rs, src/command/mod.rs).
//! The check is in ../checks.rs, shared with tests/fuzz_regressions.rs.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::wal_segment(data));
