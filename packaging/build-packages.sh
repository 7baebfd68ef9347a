#!/usr/bin/env bash
# Builds the Linux packages of bitmapist-server, both versioned from Cargo.toml:
#
#   packaging/build-packages.sh
#     -> target/debian/bitmapist-server_<version>_<arch>.deb        (cargo deb)
#     -> target/generate-rpm/bitmapist-server-<version>-1.<arch>.rpm (cargo generate-rpm)
#
# It installs cargo-deb and cargo-generate-rpm (cargo install --locked) when
# they are missing, builds the release binary (cargo build --release
# --locked) and strips a copy of it for the packages.
#
# Environment: SKIP_BUILD=1 packages the binary already in target/release.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

say() { printf '[build-packages] %s\n' "$*"; }

for tool in deb generate-rpm; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        say "installing cargo-$tool (cargo install --locked)"
        cargo install --locked "cargo-$tool"
    fi
done

# The target directory (honours CARGO_TARGET_DIR and .cargo/config).
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "cargo build --release --locked"
    cargo build --release --locked --bin bitmapist-server
fi
bin="$TARGET_DIR/release/bitmapist-server"
[ -x "$bin" ] || { say "missing $bin" >&2; exit 1; }

# The release profile keeps line tables for backtraces (16 MB); the packages
# ship the stripped binary (about 2.5 MB).
strip --strip-all -o "$bin.stripped" "$bin"

say "cargo deb"
cargo deb --no-build --strip --output "$TARGET_DIR/debian/"
say "cargo generate-rpm"
cargo generate-rpm --payload-compress gzip

version=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "bitmapist-server"))')
ls -l "$TARGET_DIR"/debian/bitmapist-server_"$version"_*.deb "$TARGET_DIR"/generate-rpm/bitmapist-server-"$version"-*.rpm
