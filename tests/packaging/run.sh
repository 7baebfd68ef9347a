#!/usr/bin/env bash
# Packaging test of bitmapist-server (tests/run_all.sh runs it as the
# `packaging` stage; run it alone as root: tests/packaging/run.sh).
#
# 1. Builds the .deb and .rpm (packaging/build-packages.sh).
# 2. Checks them from outside: contents, conffiles, dependencies, maintainer
#    scripts and rpm scriptlets (rpm -qlp, rpm -qp --scripts), versions equal
#    to Cargo.toml's, and `systemd-analyze security --offline` <= 3.0.
# 3. Boots a minimal Debian bookworm (debootstrap, cached under
#    target/packaging-test/) with systemd-nspawn (--register=no --keep-unit
#    -x -b, private network) and acts as an operator there: apt-get install
#    the .deb, systemctl start/reload/restart/stop, redis-cli, the backup
#    served by a second server, the journal's native fields, OPTIONS and
#    RUST_LOG from /etc/default/bitmapist, kill -9 and Restart=, an upgrade,
#    socket activation, remove (keeps the data) and purge (deletes it). The
#    checks are tests/packaging/in-container.sh; each is printed as it passes.
#
# Needs root, apt (installs systemd-container, debootstrap and rpm when
# missing) and, for step 3 the first time, Debian's package mirror. Exits 77
# (skipped) when not root or when systemd-nspawn cannot run containers here.
#
# Environment:
#   PACKAGING_TEST_TIMEOUT_S  hard limit on the container run (default 900)
#   DEBOOTSTRAP_MIRROR        default http://deb.debian.org/debian
#   SKIP_BUILD=1              package the binary already in target/release
#   KEEP_WORK=1               keep the work directory (logs) afterwards
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
HERE=$ROOT/tests/packaging
SKIPPED=77
TIMEOUT_S=${PACKAGING_TEST_TIMEOUT_S:-900}
MIRROR=${DEBOOTSTRAP_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# Packages of the test rootfs besides minbase. procps is deliberately absent:
# installing the .deb must pull it in (from the .debs cached at build time).
INCLUDE=systemd,systemd-sysv,dbus,redis-tools
CACHE=$ROOT/target/packaging-test
ROOTFS=$CACHE/rootfs-$SUITE
# Bump when the way the rootfs is made changes.
ROOTFS_KEY="v1 $SUITE $INCLUDE +download:procps"

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

say() { printf '[packaging] %s\n' "$*"; }
passed=0
ok() {
    passed=$((passed + 1))
    printf '[packaging] ok - %s\n' "$*"
}
die() {
    printf '[packaging] FAILED: %s\n' "$*" >&2
    exit 1
}

if [ "$(id -u)" != 0 ]; then
    say "needs root (debootstrap, systemd-nspawn, apt-get): skipped"
    exit "$SKIPPED"
fi

WORK=$(mktemp -d /tmp/bitmapist-packaging.XXXXXX)
NSPAWN_PID=
TAIL_PID=
cleanup() {
    local rc=$?
    if [ -n "$TAIL_PID" ]; then
        kill "$TAIL_PID" 2>/dev/null || true
    fi
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        say "stopping the container"
        kill -TERM "$NSPAWN_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$NSPAWN_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$NSPAWN_PID" 2>/dev/null || true
        wait "$NSPAWN_PID" 2>/dev/null || true
    fi
    # An ephemeral (-x) copy that nspawn could not remove after a kill.
    rm -rf "$CACHE"/.#machine.rootfs-"$SUITE"* 2>/dev/null || true
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        say "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

APT_UPDATED=0
need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$APT_UPDATED" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        APT_UPDATED=1
    fi
    say "apt-get install $2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" </dev/null >/dev/null
    command -v "$1" >/dev/null 2>&1 || die "installing $2 did not provide $1"
}
need systemd-nspawn systemd-container
need debootstrap debootstrap
need rpm rpm
need strip binutils

# ---------------------------------------------------------------- build

packaging/build-packages.sh
VERSION=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "bitmapist-server"))')
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
ARCH=$(dpkg --print-architecture)
DEB=$TARGET_DIR/debian/bitmapist-server_${VERSION}_${ARCH}.deb
RPM=$(ls "$TARGET_DIR"/generate-rpm/bitmapist-server-"$VERSION"-*.rpm 2>/dev/null | head -n1)
[ -f "$DEB" ] || die "cargo deb did not make $DEB"
[ -n "$RPM" ] && [ -f "$RPM" ] || die "cargo generate-rpm did not make bitmapist-server-$VERSION-*.rpm"
ok "built $(basename "$DEB") and $(basename "$RPM") (version $VERSION from Cargo.toml)"

# ---------------------------------------------------------------- the .deb from outside

[ "$(dpkg-deb -f "$DEB" Version)" = "$VERSION" ] || die "deb version $(dpkg-deb -f "$DEB" Version) != $VERSION"
contents=$(dpkg-deb -c "$DEB" | awk '{ print $NF }')
for f in ./usr/bin/bitmapist-server ./usr/lib/systemd/system/bitmapist.service \
    ./usr/lib/systemd/system/bitmapist.socket ./etc/default/bitmapist \
    ./usr/share/doc/bitmapist-server/README.md ./usr/share/doc/bitmapist-server/copyright; do
    grep -qx -- "$f" <<<"$contents" || die "the .deb lacks $f"
done
dpkg-deb -c "$DEB" | grep -q -- '-rwxr-xr-x .* ./usr/bin/bitmapist-server$' || die "the binary is not mode 755 in the .deb"
dpkg-deb -I "$DEB" conffiles | grep -qx /etc/default/bitmapist || die "/etc/default/bitmapist is not a conffile"
dpkg-deb -f "$DEB" Depends | grep -qw procps || die "the .deb does not depend on procps (ExecReload's kill)"
dpkg-deb -x "$DEB" "$WORK/deb"
grep -q 'MIT License' "$WORK/deb/usr/share/doc/bitmapist-server/copyright" || die "the copyright file lacks the licence"
file_info=$(file -b "$WORK/deb/usr/bin/bitmapist-server" 2>/dev/null || true)
[[ -z $file_info || $file_info == *stripped* && $file_info != *"not stripped"* ]] || die "the packaged binary is not stripped: $file_info"
"$WORK/deb/usr/bin/bitmapist-server" --version | grep -qx "bitmapist-server $VERSION" || die "the packaged binary does not report version $VERSION"
for s in postinst prerm postrm; do
    dpkg-deb -I "$DEB" "$s" >"$WORK/$s" || die "the .deb has no $s"
    sh -n "$WORK/$s" || die "$s is not valid sh"
done
grep -q 'deb-systemd-helper enable bitmapist.service' "$WORK/postinst" || die "postinst does not enable the service"
grep -q 'deb-systemd-invoke "$action" bitmapist.service' "$WORK/postinst" || die "postinst does not start/restart the service"
grep -q 'deb-systemd-invoke stop' "$WORK/prerm" || die "prerm does not stop the service"
grep -q 'rm -rf /var/lib/private/bitmapist /var/lib/bitmapist' "$WORK/postrm" || die "postrm does not delete the data on purge"
ok "deb: binary (stripped, --version $VERSION), units, conffile /etc/default/bitmapist, README, copyright, Depends: $(dpkg-deb -f "$DEB" Depends), postinst/prerm/postrm"

# ---------------------------------------------------------------- the .rpm from outside

[ "$(rpm -qp --qf '%{VERSION}' "$RPM" 2>/dev/null)" = "$VERSION" ] || die "rpm version != $VERSION"
rpm_files=$(rpm -qlp "$RPM" 2>/dev/null)
for f in /usr/bin/bitmapist-server /usr/lib/systemd/system/bitmapist.service \
    /usr/lib/systemd/system/bitmapist.socket /etc/sysconfig/bitmapist \
    /usr/share/doc/bitmapist-server/README.md /usr/share/licenses/bitmapist-server/LICENSE; do
    grep -qx -- "$f" <<<"$rpm_files" || die "rpm -qlp: the .rpm lacks $f"
done
rpm -qp --configfiles "$RPM" 2>/dev/null | grep -qx /etc/sysconfig/bitmapist || die "/etc/sysconfig/bitmapist is not a config file in the .rpm"
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" 2>/dev/null | grep -qx 'cn /etc/sysconfig/bitmapist' ||
    die "/etc/sysconfig/bitmapist is not %config(noreplace)"
rpm -qpR "$RPM" 2>/dev/null | grep -qx /usr/bin/kill || die "the .rpm does not require /usr/bin/kill (ExecReload)"
scripts=$(rpm -qp --scripts "$RPM" 2>/dev/null)
for want in 'postinstall scriptlet' 'systemctl enable --now bitmapist.service' \
    'preuninstall scriptlet' 'disable --now bitmapist.socket bitmapist.service' \
    'postuninstall scriptlet' 'systemctl try-restart bitmapist.service'; do
    grep -qF -- "$want" <<<"$scripts" || die "rpm -qp --scripts lacks '$want'"
done
# The packaged files are the ones in the tree (digests from the rpm header).
digests=$(rpm -qp --qf '[%{FILEDIGESTS} %{FILENAMES}\n]' "$RPM" 2>/dev/null)
for pair in "systemd/bitmapist.service /usr/lib/systemd/system/bitmapist.service" \
    "systemd/bitmapist.socket /usr/lib/systemd/system/bitmapist.socket" \
    "packaging/bitmapist.default /etc/sysconfig/bitmapist" \
    "$TARGET_DIR/release/bitmapist-server.stripped /usr/bin/bitmapist-server"; do
    set -- $pair
    grep -qx "$(sha256sum "$1" | cut -d' ' -f1) $2" <<<"$digests" || die "the rpm's $2 is not $1"
done
cmp -s "$WORK/deb/usr/lib/systemd/system/bitmapist.service" systemd/bitmapist.service || die "the deb's unit differs from systemd/bitmapist.service"
cmp -s "$WORK/deb/etc/default/bitmapist" packaging/bitmapist.default || die "the deb's /etc/default/bitmapist differs from packaging/bitmapist.default"
ok "rpm: rpm -qlp lists binary, units, %config(noreplace) /etc/sysconfig/bitmapist, README, LICENSE; rpm -qp --scripts has %post/%preun/%postun; Requires /usr/bin/kill"

if command -v systemd-analyze >/dev/null 2>&1; then
    report=$(systemd-analyze security --offline=yes --no-pager systemd/bitmapist.service 2>&1 || true)
    score=$(sed -n 's/.*Overall exposure level for bitmapist.service: \([0-9.]*\).*/\1/p' <<<"$report")
    [ -n "$score" ] || die "systemd-analyze security --offline printed no score: $report"
    awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }' || die "systemd-analyze security rates the unit $score (> 3.0)"
    ok "systemd-analyze security --offline systemd/bitmapist.service: exposure $score (<= 3.0)"
fi

# ---------------------------------------------------------------- the rootfs

if [ ! -f "$ROOTFS/.bitmapist-rootfs" ] || [ "$(cat "$ROOTFS/.bitmapist-rootfs")" != "$ROOTFS_KEY" ]; then
    say "debootstrap $SUITE ($INCLUDE) into $ROOTFS (cached for later runs)"
    mkdir -p "$CACHE"
    rm -rf "$ROOTFS" "$ROOTFS.new"
    if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS.new" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 30 "$WORK/debootstrap.log" >&2
        rm -rf "$ROOTFS.new"
        die "debootstrap $SUITE from $MIRROR failed"
    fi
    # Keep procps (and what it needs) in apt's cache, with the package lists
    # debootstrap left, so that `apt-get install ./the.deb` can resolve the
    # package's dependency offline inside the container.
    chroot "$ROOTFS.new" apt-get clean
    if ! chroot "$ROOTFS.new" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --download-only procps >"$WORK/download.log" 2>&1; then
        tail -n 20 "$WORK/download.log" >&2
        rm -rf "$ROOTFS.new"
        die "downloading procps into the rootfs failed"
    fi
    # Containers started from this image get their own identity.
    : >"$ROOTFS.new/etc/machine-id"
    echo "$ROOTFS_KEY" >"$ROOTFS.new/.bitmapist-rootfs"
    mv "$ROOTFS.new" "$ROOTFS"
    ok "debootstrapped $SUITE into $ROOTFS"
else
    say "reusing the cached rootfs $ROOTFS"
fi

# ---------------------------------------------------------------- nspawn

NSPAWN=(systemd-nspawn --register=no --keep-unit --private-network --quiet)
if ! probe=$("${NSPAWN[@]}" --read-only -D "$ROOTFS" /bin/true 2>&1); then
    say "systemd-nspawn cannot run a container here: $probe"
    say "the checks under systemd are skipped (the package checks above passed: $passed)"
    exit "$SKIPPED"
fi

mkdir -p "$WORK/in" "$WORK/out"
cp "$DEB" "$HERE/in-container.sh" "$WORK/in/"
: >"$WORK/out/progress"
cat >"$WORK/in/bitmapist-checks.service" <<'EOF'
[Unit]
Description=bitmapist-server packaging checks
# Outside the boot transaction's ordering, so that the checks can wait for
# the boot to finish; the container powers off when they end.
DefaultDependencies=no
Requires=sysinit.target
After=sysinit.target basic.target multi-user.target
Conflicts=shutdown.target
Before=shutdown.target
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart=/bin/bash /mnt/in/in-container.sh
TimeoutStartSec=30min
StandardOutput=journal+console
StandardError=journal+console
EOF

say "booting $SUITE with systemd-nspawn (limit ${TIMEOUT_S}s); the checks inside:"
timeout --kill-after=30 "$TIMEOUT_S" "${NSPAWN[@]}" -x -b -D "$ROOTFS" --console=read-only \
    --bind-ro="$WORK/in:/mnt/in" --bind="$WORK/out:/mnt/out" \
    --bind-ro="$WORK/in/bitmapist-checks.service:/etc/systemd/system/bitmapist-checks.service" \
    -- systemd.wants=bitmapist-checks.service systemd.show_status=false \
    </dev/null >"$WORK/console.log" 2>&1 &
NSPAWN_PID=$!
# Print each check as it passes (in the background, so that a signal to
# this script interrupts `wait` and the cleanup stops the container).
tail -n +1 -F -s 0.5 "$WORK/out/progress" 2>/dev/null > >(sed -u 's/^/[packaging]   /') &
TAIL_PID=$!
set +e
wait "$NSPAWN_PID"
rc=$?
set -e
NSPAWN_PID=
sleep 1
kill "$TAIL_PID" 2>/dev/null || true
wait "$TAIL_PID" 2>/dev/null || true
TAIL_PID=

result=$(cat "$WORK/out/result" 2>/dev/null || true)
if [[ $result != PASS* ]]; then
    if [ -s "$WORK/out/diagnostics" ]; then
        say "diagnostics from inside the container:"
        sed 's/^/    /' "$WORK/out/diagnostics" >&2
    fi
    say "last lines of the container console:"
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/console.log" | tail -n 40 | sed 's/^/    /' >&2
    case $rc in
        124 | 137) die "the container did not finish within ${TIMEOUT_S}s${result:+ ($result)}" ;;
        *) die "${result:-the checks inside the container did not report a result (systemd-nspawn exited with $rc)}" ;;
    esac
fi
checks=${result#PASS: }
checks=${checks%% *}
passed=$((passed + checks))
say "$result under systemd in the container"
echo "packaging: $passed passed, 0 failed"
