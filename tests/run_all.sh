#!/usr/bin/env bash
# THE command that runs every test of bitmapist-server, on a fresh Debian
# machine that has only Rust and Python (CI runs it through .ci/run).
#
#   tests/run_all.sh                 # every stage
#   tests/run_all.sh e2e             # a subset, in the order given
#   tests/run_all.sh --list          # the stage names
#
# Stages (each a function stage_<name> below; add new ones to ALL_STAGES):
#   unit_and_integration  cargo test --locked (the integration tests start
#                         redis-server themselves)
#   e2e                   cargo build --release --locked, then pytest on
#                         tests/e2e with the real Python bitmapist library,
#                         once per redis-py major in E2E_REDIS_PY_MAJORS
#   fuzz                  tests/fuzz.sh: builds the cargo-fuzz targets in fuzz/
#                         and runs each for a short time (FUZZ_SECONDS)
#   bench_smoke           benches/smoke.sh: builds the benchmark tooling and runs
#                         the comparison driver on a tiny dataset
#   packaging             tests/packaging/run.sh when it exists (skipped until then)
#
# It installs what is missing: redis-server + redis-tools (apt, only when
# redis-server is not on PATH), python3-venv (only when venv/ensurepip do not
# work), and the virtualenvs target/test-venv (redis-py 5) and
# target/test-venv-redis4 (redis-py 4), reused while the requirements hash in
# their marker file matches.
#
# Environment:
#   BITMAPIST_SERVER_BIN  use this server binary for e2e instead of building
#                         target/release/bitmapist-server
#   E2E_REDIS_PY_MAJORS   redis-py majors to run e2e with (default "5 4")
#   E2E_PYTEST_ARGS       extra pytest arguments (e.g. "-k cohort -x")
#   E2E_COMMAND_LOG       write the commands the tests sent to the reference
#                         redis-server (via MONITOR) to this file (suffixed
#                         with the redis-py major)
#   PYTHON                the interpreter for the virtualenvs (default python3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ALL_STAGES=(unit_and_integration e2e fuzz bench_smoke packaging)
SKIPPED=77 # a stage returns this when it has nothing to run

PYTHON=${PYTHON:-python3}
E2E_REDIS_PY_MAJORS=${E2E_REDIS_PY_MAJORS:-"5 4"}
E2E_TIMEOUT_S=${E2E_TIMEOUT_S:-900}

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

say() { printf '[run_all] %s\n' "$*"; }
header() { printf '\n==================== stage: %s ====================\n' "$1"; }

# ---------------------------------------------------------------- installs

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        say "need root (or sudo) to run: $*" >&2
        return 1
    fi
}

APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        say "apt-get not available; install by hand: $*" >&2
        return 1
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold "$@" </dev/null
}

ensure_redis() {
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server redis-tools
    fi
    say "using $(command -v redis-server): $(redis-server --version | head -n1)"
}

ensure_python_venv() {
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        apt_install python3
    fi
    # Debian's python3 without python3-venv has `venv` but no ensurepip.
    if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        local ver
        ver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        apt_install python3-venv || apt_install "python${ver}-venv"
    fi
}

# ensure_venv DIR REDIS_SPEC: create or reuse a virtualenv with
# tests/e2e/requirements.txt plus redis-py REDIS_SPEC.
ensure_venv() {
    local dir=$1 redis_spec=$2 want have
    want=$({
        cat tests/e2e/requirements.txt
        printf 'redis%s\n' "$redis_spec"
        "$PYTHON" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1)
    have=$(cat "$dir/.requirements.sha256" 2>/dev/null || true)
    if [ -x "$dir/bin/python" ] && [ "$want" = "$have" ]; then
        say "reusing $dir"
        return 0
    fi
    say "creating $dir (redis$redis_spec)"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --disable-pip-version-check \
        -r tests/e2e/requirements.txt "redis$redis_spec"
    echo "$want" >"$dir/.requirements.sha256"
}

# ---------------------------------------------------------------- stages

stage_unit_and_integration() {
    ensure_redis
    cargo test --locked
}

stage_e2e() {
    ensure_redis
    ensure_python_venv

    local bin=${BITMAPIST_SERVER_BIN:-}
    if [ -z "$bin" ]; then
        cargo build --release --locked
        bin="$ROOT/target/release/bitmapist-server"
    else
        say "BITMAPIST_SERVER_BIN is set: not building, testing $bin"
    fi
    bin=$(readlink -f "$bin")
    [ -x "$bin" ] || { say "server binary $bin missing or not executable" >&2; return 1; }

    local major venv rc failed=0 ran=0
    for major in $E2E_REDIS_PY_MAJORS; do
        case $major in
            5) venv=target/test-venv ;;
            *) venv=target/test-venv-redis$major ;;
        esac
        ensure_venv "$venv" ">=$major,<$((major + 1))"
        say "e2e with $("$venv/bin/python" -c 'import redis, bitmapist, importlib.metadata as m; print("redis-py", redis.__version__, "bitmapist", m.version("bitmapist"))')"
        set +e
        # shellcheck disable=SC2086
        BITMAPIST_SERVER_BIN="$bin" PYTHONDONTWRITEBYTECODE=1 \
            E2E_COMMAND_LOG="${E2E_COMMAND_LOG:+$E2E_COMMAND_LOG.redis$major}" \
            timeout --kill-after=30 "$E2E_TIMEOUT_S" \
            "$venv/bin/python" -m pytest tests/e2e -p no:cacheprovider -q -ra \
            --junitxml="target/e2e-redis-py$major.xml" ${E2E_PYTEST_ARGS:-}
        rc=$?
        set -e
        ran=$((ran + 1))
        case $rc in
            0) say "e2e (redis-py $major): passed" ;;
            5) say "e2e (redis-py $major): pytest collected no tests: failing" >&2; failed=1 ;;
            124|137) say "e2e (redis-py $major): timed out after ${E2E_TIMEOUT_S}s" >&2; failed=1 ;;
            *) say "e2e (redis-py $major): failed (pytest status $rc)" >&2; failed=1 ;;
        esac
    done
    [ "$ran" -gt 0 ] || { say "E2E_REDIS_PY_MAJORS is empty" >&2; return 1; }
    return "$failed"
}

stage_fuzz() {
    tests/fuzz.sh
}

stage_bench_smoke() {
    ensure_redis
    benches/smoke.sh
}

stage_packaging() {
    if [ -x tests/packaging/run.sh ]; then
        tests/packaging/run.sh
    else
        say "no packaging tests yet (tests/packaging/run.sh): skipped"
        return "$SKIPPED"
    fi
}

# ---------------------------------------------------------------- main

usage() {
    echo "usage: $0 [--list] [STAGE...]   stages: ${ALL_STAGES[*]}"
}

stages=()
for arg in "$@"; do
    case $arg in
        -h|--help) usage; exit 0 ;;
        --list) printf '%s\n' "${ALL_STAGES[@]}"; exit 0 ;;
        *)
            if [[ " ${ALL_STAGES[*]} " != *" $arg "* ]]; then
                usage >&2
                say "unknown stage: $arg" >&2
                exit 2
            fi
            stages+=("$arg")
            ;;
    esac
done
[ "${#stages[@]}" -gt 0 ] || stages=("${ALL_STAGES[@]}")

passed=() failed=() skipped=()
start_all=$SECONDS
for stage in "${stages[@]}"; do
    header "$stage"
    t0=$SECONDS
    set +e
    # In a subshell and outside any `if`/`||`, so `set -e` holds inside the stage.
    (set -e; "stage_$stage")
    rc=$?
    set -e
    dt=$((SECONDS - t0))
    if [ "$rc" = 0 ]; then
        passed+=("$stage"); say "stage $stage passed (${dt}s)"
    elif [ "$rc" = "$SKIPPED" ]; then
        skipped+=("$stage"); say "stage $stage skipped (${dt}s)"
    else
        failed+=("$stage"); say "stage $stage FAILED with status $rc (${dt}s)"
    fi
done

echo
say "passed: ${passed[*]:-none}; failed: ${failed[*]:-none}; skipped: ${skipped[*]:-none} ($((SECONDS - start_all))s)"
echo "stages: ${#passed[@]} passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
[ "${#failed[@]}" -eq 0 ]
