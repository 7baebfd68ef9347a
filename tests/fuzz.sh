#!/usr/bin/env bash
# Builds the cargo-fuzz (libFuzzer) targets in fuzz/ and runs each for a short
# time against a copy of its committed seed corpus (fuzz/corpus/<target>/).
# Fails, naming the input that crashed and showing libFuzzer's output, on any
# crash, timeout, out-of-memory or leak. Called by the `fuzz` stage of
# tests/run_all.sh.
#
#   tests/fuzz.sh                                   # every target, 30 s each
#   FUZZ_SECONDS=300 tests/fuzz.sh                  # longer
#   FUZZ_TARGETS="glob resp_parser" tests/fuzz.sh   # some targets
#
# Works on the stable toolchain: cargo-fuzz needs nightly-only compiler flags
# (-Zsanitizer, sanitizer coverage), which RUSTC_BOOTSTRAP=1 unlocks on stable.
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when it is missing.
#
# Environment:
#   FUZZ_SECONDS         seconds per target (default 30)
#   FUZZ_TARGETS         space-separated targets (default: all, see TARGETS)
#   FUZZ_SANITIZER       address (default) or none; when the toolchain has no
#                        address-sanitizer runtime, the build is retried without
#   FUZZ_TOOLCHAIN       rustup toolchain for cargo (default stable, when rustup
#                        is installed)
#   FUZZ_JOBS            targets fuzzed at once (default 1)
#   FUZZ_ARTIFACTS       where failing inputs are kept (default fuzz/artifacts)
#
# A failing input is kept in $FUZZ_ARTIFACTS/<target>/. Reproduce it with
#   cargo test --test fuzz_regressions   (after copying it into
#   fuzz/regressions/<target>/), or by running
#   fuzz/target/<triple>/release/<target> <input>.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

# target name -> libFuzzer -max_len (bytes). The file formats need room for
# whole pages: a database of 15 pages, a bbolt file of 62 pages of 4 KiB.
declare -A MAX_LEN=(
    [resp_parser]=4096
    [glob]=4096
    [wal_segment]=16384
    [page_directory]=65537
    [bolt_reader]=262145
    [roaring_payload]=20000
)
TARGETS=(resp_parser glob wal_segment page_directory bolt_reader roaring_payload)

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
FUZZ_JOBS=${FUZZ_JOBS:-1}
FUZZ_ARTIFACTS=${FUZZ_ARTIFACTS:-$ROOT/fuzz/artifacts}
read -r -a SELECTED <<<"${FUZZ_TARGETS:-${TARGETS[*]}}"

say() { printf '[fuzz] %s\n' "$*"; }

for t in "${SELECTED[@]}"; do
    if [ -z "${MAX_LEN[$t]:-}" ]; then
        say "unknown target '$t' (known: ${TARGETS[*]})" >&2
        exit 2
    fi
done

CARGO=(cargo)
if command -v rustup >/dev/null 2>&1; then
    CARGO=(cargo "+${FUZZ_TOOLCHAIN:-stable}")
fi
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    "${CARGO[@]}" install cargo-fuzz --locked
fi
say "$(cargo fuzz --version), $("${CARGO[@]}" --version), $(rustc --version)"

# cargo fuzz has no --locked; fetching with it fails when fuzz/Cargo.lock is
# out of date, so the build below uses exactly the committed versions.
if ! "${CARGO[@]}" fetch --locked --manifest-path fuzz/Cargo.toml; then
    say "fuzz/Cargo.lock is out of date (did the root crate's dependencies change?);" >&2
    say "update it with: cargo fetch --manifest-path fuzz/Cargo.toml, and commit it" >&2
    exit 1
fi

started=$(date +%s)
build_bins() {
    # One `cargo fuzz build` builds every target; several --bin are not
    # accepted by every cargo-fuzz version, so build all when all are asked.
    if [ "${#SELECTED[@]}" -eq "${#TARGETS[@]}" ]; then
        "${CARGO[@]}" fuzz build -a -s "$1"
    else
        local t
        for t in "${SELECTED[@]}"; do
            "${CARGO[@]}" fuzz build -a -s "$1" "$t" || return 1
        done
    fi
}
BUILD_LOG=$(mktemp "${TMPDIR:-/tmp}/bitmapist-fuzz-build.XXXXXX")
if ! build_bins "$FUZZ_SANITIZER" 2>&1 | tee "$BUILD_LOG"; then
    # Fall back only when the sanitizer itself is the problem (a toolchain
    # without its runtime), not on an ordinary compile error.
    if [ "$FUZZ_SANITIZER" = none ] || ! grep -qiE '^error.*sanitizer|sanitizer.*(not supported|unsupported|runtime)' "$BUILD_LOG"; then
        rm -f "$BUILD_LOG"
        say "build failed" >&2
        exit 1
    fi
    say "the $FUZZ_SANITIZER sanitizer is unavailable; building without one" >&2
    FUZZ_SANITIZER=none
    build_bins none
fi
rm -f "$BUILD_LOG"
say "built in $(($(date +%s) - started)) s (sanitizer: $FUZZ_SANITIZER)"

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BIN_DIR="$ROOT/fuzz/target/$TRIPLE/release"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bitmapist-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Runs one target; writes its summary line to $WORK/<target>.summary and
# returns non-zero on any finding.
run_target() {
    local t=$1
    local dir="$WORK/$t"
    mkdir -p "$dir/corpus" "$dir/artifacts"
    cp -R "fuzz/corpus/$t/." "$dir/corpus/" 2>/dev/null || true
    local log="$dir/log"
    local rc=0
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0} \
        "$BIN_DIR/$t" "$dir/corpus" \
        -max_total_time="$FUZZ_SECONDS" \
        -max_len="${MAX_LEN[$t]}" \
        -rss_limit_mb=2048 \
        -timeout=10 \
        -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/" \
        >"$log" 2>&1 || rc=$?
    local execs secs
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    local found
    found=$(find "$dir/artifacts" -type f | head -1)
    if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
        mkdir -p "$FUZZ_ARTIFACTS/$t"
        local kept=""
        if [ -n "$found" ]; then
            cp "$dir/artifacts/"* "$FUZZ_ARTIFACTS/$t/"
            kept="$FUZZ_ARTIFACTS/$t/$(basename "$found")"
        fi
        cp "$log" "$FUZZ_ARTIFACTS/$t/libfuzzer.log"
        {
            echo "---- $t: libFuzzer exited with $rc; failing input: ${kept:-none written}"
            tail -n 60 "$log"
            echo "---- end of $t"
        } >"$dir/failure"
        printf '%-16s FAILED  execs=%s seconds=%s input=%s\n' \
            "$t" "${execs:-?}" "${secs:-?}" "${kept:-none}" >"$WORK/$t.summary"
        return 1
    fi
    printf '%-16s ok      execs=%s seconds=%s corpus=%s\n' \
        "$t" "${execs:-?}" "${secs:-?}" "$(find "$dir/corpus" -type f | wc -l)" >"$WORK/$t.summary"
}

passed=0
failed=0
running=0
for t in "${SELECTED[@]}"; do
    say "fuzzing $t for ${FUZZ_SECONDS} s (max_len ${MAX_LEN[$t]})"
    run_target "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$FUZZ_JOBS" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true

for t in "${SELECTED[@]}"; do
    if [ -f "$WORK/$t/failure" ]; then
        cat "$WORK/$t/failure" >&2
    fi
done
for t in "${SELECTED[@]}"; do
    line=$(cat "$WORK/$t.summary" 2>/dev/null || printf '%-16s FAILED  (no summary)' "$t")
    say "$line"
    case "$line" in
    *" ok "*) passed=$((passed + 1)) ;;
    *) failed=$((failed + 1)) ;;
    esac
done
say "total $(($(date +%s) - started)) s including the build"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
