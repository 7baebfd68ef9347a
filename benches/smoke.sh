#!/usr/bin/env bash
# Smoke test of the benchmark tooling, for CI: builds bitmapist-server and
# bitmapist-bench (--locked), runs `bitmapist-bench compare --quick` (tiny
# dataset, every workload W1-W6 and the storage figures, against
# bitmapist-server and redis-server on loopback ports) into a temporary
# directory, and checks that results.json has every workload with numbers
# and that the plots were drawn. Exits non-zero otherwise.
#
#   benches/smoke.sh            # about 30 s after the build
#   KEEP=1 benches/smoke.sh     # keep the output directory and print its path
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "smoke: installing redis-server (apt)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
        # The package starts a service on 6379; the benchmark never uses it.
    else
        echo "smoke: redis-server is not installed (apt-get install redis-server)" >&2
        exit 1
    fi
fi

cargo build --release --locked -p bitmapist-server --bin bitmapist-server
cargo build --release --locked -p bitmapist-bench

OUT=$(mktemp -d "${TMPDIR:-/tmp}/bitmapist-smoke.XXXXXX")
if [ -z "${KEEP:-}" ]; then
    trap 'rm -rf "$OUT"' EXIT
fi
start=$(date +%s)
if ! timeout 300 "$TARGET/release/bitmapist-bench" compare --quick \
    --server "$TARGET/release/bitmapist-server" --out "$OUT" \
    >"$OUT/stdout.txt" 2>"$OUT/stderr.txt"; then
    echo "smoke: compare --quick failed; last lines of its log:" >&2
    tail -40 "$OUT/stderr.txt" >&2
    echo "smoke: 0 passed, 1 failed"
    exit 1
fi
if ! "$TARGET/release/bitmapist-bench" check "$OUT/results.json"; then
    echo "smoke: 0 passed, 1 failed"
    exit 1
fi
for f in results.md latency-w1-w2.png latency-w6.png queries-w3-w4.png memory.png; do
    if [ ! -s "$OUT/$f" ]; then
        echo "smoke: $f is missing or empty" >&2
        echo "smoke: 0 passed, 1 failed"
        exit 1
    fi
done
echo "smoke: compare --quick took $(($(date +%s) - start)) s${KEEP:+; results in $OUT}"
echo "smoke: 1 passed, 0 failed"
