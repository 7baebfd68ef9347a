//! The bbolt reader for Go server databases (src/import/bolt.rs).
//! The check is in ../checks.rs, shared with tests/fuzz_regressions.rs.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::bolt_reader(data));
