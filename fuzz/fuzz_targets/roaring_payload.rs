//! Payload decoding, value operations and re-encoding (src/storage/pagefile.rs).
//! The check is in ../checks.rs, shared with tests/fuzz_regressions.rs.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::roaring_payload(data));
