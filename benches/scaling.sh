#!/usr/bin/env bash
# Thread scaling of bitmapist-server: requests/s with --threads 1, 2, 4, 8
# (the server pinned to as many cores), next to redis-server (one core), on
# W2's point operations. The load generator runs on the other cores.
# Needs at least 16 cores to mean anything (2 × the largest thread count).
#
#   benches/scaling.sh [BIN_DIR] [OUT_DIR]
#
# BIN_DIR holds bitmapist-server, bitmapist-bench and redis-server (default:
# target/release and redis-server on PATH); a lib/ folder in it is added to
# LD_LIBRARY_PATH (for a copied redis-server). Writes scaling.md to OUT_DIR
# (default: the current directory). SECONDS_PER_RUN (default 4) sets the
# length of each run, THREADS (default "1 2 4 8") the thread counts.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/target/release}
OUT=${2:-.}
SECS=${SECONDS_PER_RUN:-4}
THREADS=${THREADS:-"1 2 4 8"}
[ -d "$BIN/lib" ] && export LD_LIBRARY_PATH="$BIN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
REDIS=$BIN/redis-server
[ -x "$REDIS" ] || REDIS=$(command -v redis-server)
CORES=$(nproc)
CLIENT_CORES="$((CORES / 2))-$((CORES - 1))"
CLIENT_THREADS=$((CORES / 2))
WORK=$(mktemp -d)
trap 'pkill -f "$WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT

WORKLOADS=("setbit 16 200" "getbit 16 200" "setbit 1 200" "getbit 1 200")

# load PORT WORKLOAD PIPELINE CONNECTIONS -> ops/s
load() {
    taskset -c "$CLIENT_CORES" "$BIN/bitmapist-bench" load --addr "127.0.0.1:$1" \
        --workload "$2" --pipeline "$3" --connections "$4" --threads "$CLIENT_THREADS" \
        --duration "$SECS" 2>&1 | tail -n 1 | awk '{printf "%.0f", $1 / $4}'
}

wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "server on port $1 did not start" >&2
    return 1
}

declare -A RESULT
port=7400
for t in $THREADS; do
    port=$((port + 1))
    mkdir -p "$WORK/t$t"
    taskset -c "0-$((t - 1))" "$BIN/bitmapist-server" --addr "127.0.0.1:$port" \
        --db "$WORK/t$t/bitmapist.db" --threads "$t" --log-level warn &
    pid=$!
    wait_port "$port"
    for w in "${WORKLOADS[@]}"; do
        set -- $w
        RESULT["$t/$w"]=$(load "$port" "$1" "$2" "$3")
        echo "threads $t, $1 pipeline $2: ${RESULT["$t/$w"]} req/s" >&2
    done
    kill "$pid"; wait "$pid" || true
done
port=$((port + 1))
taskset -c 0 "$REDIS" --port "$port" --save "" --appendonly no --dir "$WORK" \
    --loglevel warning >/dev/null &
rpid=$!
wait_port "$port"
for w in "${WORKLOADS[@]}"; do
    set -- $w
    RESULT["redis/$w"]=$(load "$port" "$1" "$2" "$3")
    echo "redis-server, $1 pipeline $2: ${RESULT["redis/$w"]} req/s" >&2
done
kill "$rpid"; wait "$rpid" || true

{
    echo "| workload | redis-server (1 core) |$(for t in $THREADS; do printf ' --threads %s |' "$t"; done)"
    echo "|---|--:|$(for t in $THREADS; do printf -- '--:|'; done)"
    for w in "${WORKLOADS[@]}"; do
        set -- $w
        base=${RESULT["$(echo $THREADS | cut -d' ' -f1)/$w"]}
        printf '| %s, pipeline %s, %s conns | %s |' "$1" "$2" "$3" "${RESULT["redis/$w"]}"
        for t in $THREADS; do
            printf ' %s (%s×) |' "${RESULT["$t/$w"]}" \
                "$(awk -v a="${RESULT["$t/$w"]}" -v b="$base" 'BEGIN { printf "%.2f", a / b }')"
        done
        echo
    done
    echo
    echo "$CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); server on cores 0..N-1, load generator ($CLIENT_THREADS threads) on cores $CLIENT_CORES; $SECS s per run."
} | tee "$OUT/scaling.md"
