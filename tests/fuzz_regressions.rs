//! Replays every committed fuzz input — the seed corpus in `fuzz/corpus/<target>/`
//! and the minimal reproducers of past findings in `fuzz/regressions/<target>/`
//! — through the same checks the cargo-fuzz targets run (`fuzz/checks.rs`), so
//! that findings stay tested by a plain `cargo test` on stable Rust, without
//! libFuzzer. Fuzzing itself: `tests/fuzz.sh`.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

/// The input files of one target under `fuzz/<kind>/<target>/` (README files
/// excluded), sorted.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && !name.ends_with(".md")
        })
        .collect();
    files.sort();
    files
}

/// Runs `target`'s check on every input of `kind`; returns how many ran.
fn replay(kind: &str) -> usize {
    let mut ran = 0;
    for &(target, check) in checks::TARGETS {
        for path in inputs(kind, target) {
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "fuzz check `{target}` failed on {}",
                path.display()
            );
            ran += 1;
        }
    }
    ran
}

#[test]
fn corpus_inputs_pass_their_checks() {
    let ran = replay("corpus");
    // Every target has a committed seed corpus.
    for &(target, _) in checks::TARGETS {
        assert!(
            !inputs("corpus", target).is_empty(),
            "fuzz/corpus/{target} is empty"
        );
    }
    assert!(ran > 0);
}

#[test]
fn regression_inputs_pass_their_checks() {
    replay("regressions");
}

#[test]
fn every_target_has_its_fuzz_target_file() {
    for &(target, _) in checks::TARGETS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{target}.rs"));
        assert!(path.is_file(), "{} is missing", path.display());
    }
}

/// Found by the `page_directory` target's design review and reproduced by
/// fuzz/regressions/page_directory/dag-shared-children-exponential-walk: a
/// database file whose branch pages share children (checksums valid) was
/// walked once per path by `btree::visit_from` and `btree::pages_of` (3
/// levels of 371 children: 51 million page reads; 4 levels hung KEYS, SCAN
/// and backups). Walks now refuse a page reached twice.
#[test]
fn directory_walk_reads_each_page_once() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions/page_directory/dag-shared-children-exponential-walk");
    let data = std::fs::read(&path).expect("the reproducer");
    let pages = (data.len() as u64 - 1).div_ceil(4096);
    let reads = checks::directory_walk_reads(&data, 100_000);
    assert!(
        reads <= 4 * pages,
        "visit_from read {reads} pages (capped at 100000) of a {pages}-page file"
    );
}
