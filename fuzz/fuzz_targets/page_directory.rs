//! Meta/node pages, directory B+tree and PageFile::open_io (src/storage/).
//! The check is in ../checks.rs, shared with tests/fuzz_regressions.rs.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::page_directory(data));
