#!/bin/bash
# The operator's checks of the bitmapist-server .deb, run inside a booted
# Debian container (systemd as PID 1) by tests/packaging/run.sh, through a
# oneshot unit that powers the container off afterwards.
#
# /mnt/in   (read-only): the .deb
# /mnt/out  (writable):  progress (one line per check, read live by the
#                        host), result (PASS or FAIL: reason), diagnostics
#
# Each check is written fully; the first failure stops the run.
set -uo pipefail

OUT=/mnt/out
IN=/mnt/in
export DEBIAN_FRONTEND=noninteractive
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DATA=/var/lib/bitmapist
DEFAULTS=/etc/default/bitmapist
n=0

log() { printf '%s\n' "$*" >>"$OUT/progress"; }
pass() {
    n=$((n + 1))
    log "ok $n - $*"
}
diagnostics() {
    {
        echo "--- systemctl status bitmapist.service bitmapist.socket"
        systemctl status --no-pager -l bitmapist.service bitmapist.socket
        echo "--- journalctl -u bitmapist (last 80)"
        journalctl --no-pager -u bitmapist.service -u bitmapist.socket -n 80 -o short-precise
        echo "--- ls -la /var/lib /var/lib/private $DATA/"
        ls -la /var/lib /var/lib/private "$DATA/"
    } >>"$OUT/diagnostics" 2>&1
}
fail() {
    log "not ok $((n + 1)) - $*"
    diagnostics
    printf 'FAIL: %s\n' "$*" >"$OUT/result"
    exit 1
}

# A command whose failure fails the run with its output.
must() {
    local what=$1
    shift
    local output
    if ! output=$("$@" 2>&1); then
        log "$output"
        fail "$what: \`$*\` failed"
    fi
}

# wait_until SECONDS COMMAND...: polls COMMAND every 0.2 s.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

rcli() {
    local port=$1
    shift
    timeout 10 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>&1
}
pong() { [ "$(rcli "$1" PING)" = PONG ]; }
# port_free PORT: no TCP socket listens on it (state 0A in /proc/net/tcp*).
port_free() {
    ! awk -v port="$(printf ':%04X' "$1")" '$4 == "0A" && substr($2, length($2) - 4) == port { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6
}

# expect_reply PORT EXPECTED COMMAND...
expect_reply() {
    local port=$1 want=$2 got
    shift 2
    got=$(rcli "$port" "$@")
    [ "$got" = "$want" ] || fail "\`redis-cli -p $port $*\` answered '$got', expected '$want'"
}

main_pid() { systemctl show -p MainPID --value bitmapist.service; }
# These checks start the service far more often than an operator would;
# systemd's start rate limit (5 starts in 10 s) would refuse the later
# ones, so each step that (re)starts the service resets the counter first.
reset_start_limit() { systemctl reset-failed bitmapist.service bitmapist.socket 2>/dev/null || true; }
prop() { systemctl show -p "$2" --value "$1"; }
# restarted OLD_PID: active again with another main process.
restarted() {
    local pid
    pid=$(main_pid)
    [ "$(systemctl is-active bitmapist.service)" = active ] && [ "$pid" != 0 ] && [ "$pid" != "$1" ]
}

# journal_entry MESSAGE: the fields of the newest journal entry of the
# service whose MESSAGE is exactly this, one FIELD=value per line.
journal_entry() {
    journalctl --no-pager _SYSTEMD_UNIT=bitmapist.service -o export |
        awk -v want="MESSAGE=$1" '
            /^$/ { if (hit) { last = cur } cur = ""; hit = 0; next }
            { cur = cur $0 "\n"; if ($0 == want) hit = 1 }
            END { if (hit) { last = cur } printf "%s", last }'
}
count_entries() {
    journalctl --no-pager _SYSTEMD_UNIT=bitmapist.service -o export | grep -cx "MESSAGE=$1"
}
# more_entries MESSAGE N: more than N entries with this MESSAGE.
more_entries() { [ "$(count_entries "$1")" -gt "$2" ]; }
has_entry() { [ -n "$(journal_entry "$1")" ]; }
# has_fields MESSAGE FIELD=REGEX...: the newest such entry has every field.
has_fields() {
    local message=$1 entry field
    shift
    entry=$(journal_entry "$message")
    [ -n "$entry" ] || fail "no journal entry '$message' from bitmapist.service"
    for field in "$@"; do
        grep -Eqx -- "$field" <<<"$entry" ||
            fail "journal entry '$message' lacks $field; it has: $(tr '\n' ' ' <<<"$entry" | cut -c1-600)"
    done
}

# ---------------------------------------------------------------- the checks

[ "$(cat /proc/1/comm)" = systemd ] || fail "PID 1 is not systemd"
# (The boot cannot finish before this unit does: it is a job of the boot.)
[ "$(systemctl is-active multi-user.target)" = active ] || fail "multi-user.target is not active"
failed_units=$(systemctl --failed --no-legend --plain | awk '{ print $1 }' | tr '\n' ' ')
[ -z "$failed_units" ] || log "# failed units at boot (not ours): $failed_units"
pass "Debian $(cat /etc/debian_version) booted to multi-user.target with $(systemctl --version | head -n1) as PID 1"

deb=$(ls "$IN"/bitmapist-server_*.deb)
dpkg -s procps >/dev/null 2>&1 && fail "procps is already installed in the test rootfs; the dependency check would prove nothing"
must "apt-get install" apt-get install -y -q -o Acquire::Retries=0 "$deb"
dpkg -s procps >/dev/null 2>&1 || fail "installing the .deb did not pull in procps (ExecReload's kill)"
pass "apt-get install ./$(basename "$deb") (pulled in procps for ExecReload's kill: $(type -P kill))"

[ "$(systemctl is-enabled bitmapist.service)" = enabled ] || fail "bitmapist.service is not enabled after installation"
[ "$(systemctl is-active bitmapist.service)" = active ] || fail "bitmapist.service is not active after installation"
[ "$(systemctl is-enabled bitmapist.socket 2>&1)" = disabled ] || fail "bitmapist.socket should not be enabled by default"
[ "$(prop bitmapist.service Type)" = notify ] || fail "the unit is not Type=notify"
status=$(prop bitmapist.service StatusText)
[[ $status == "listening on 127.0.0.1:6379"* ]] || fail "no READY status from the server (StatusText='$status')"
pass "the package enabled and started bitmapist.service; READY=1 came with STATUS='$status'"

pid=$(main_pid)
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
[ -n "$uid" ] && [ "$uid" -ne 0 ] || fail "the server runs as uid '$uid', not an unprivileged user"
[ -L "$DATA" ] && [ -d "/var/lib/private/bitmapist" ] || fail "StateDirectory with DynamicUser did not make $DATA -> /var/lib/private/bitmapist"
pass "the server (pid $pid) runs as dynamic user uid $uid; state in $DATA -> /var/lib/private/bitmapist"

must "systemctl start" systemctl start bitmapist.service
wait_until 10 pong 6379 || fail "no PONG on 127.0.0.1:6379"
pass "systemctl start bitmapist: active, answering PING on 127.0.0.1:6379"

expect_reply 6379 0 SETBIT pkg:events 7 1
expect_reply 6379 0 SETBIT pkg:events 100000 1
expect_reply 6379 OK SET pkg:text hello
expect_reply 6379 2 BITCOUNT pkg:events
pass "wrote with redis-cli (SETBIT, SET) and read it back"

[ -e "$DATA/bitmapist.bak" ] && fail "a backup exists before any reload"
must "systemctl reload" systemctl reload bitmapist.service
wait_until 60 test -s "$DATA/bitmapist.bak" || fail "systemctl reload (SIGUSR1) did not produce $DATA/bitmapist.bak"
pass "systemctl reload wrote the backup $DATA/bitmapist.bak ($(stat -c %s "$DATA/bitmapist.bak") bytes)"

mkdir -p /root/copy
cp "$DATA/bitmapist.bak" /root/copy/bitmapist.db
/usr/bin/bitmapist-server -addr 127.0.0.1:6390 -db /root/copy/bitmapist.db --threads 1 >/root/copy/server.log 2>&1 &
second=$!
wait_until 30 pong 6390 || {
    log "$(cat /root/copy/server.log)"
    fail "a second server on a copy of the backup did not start"
}
expect_reply 6390 2 BITCOUNT pkg:events
expect_reply 6390 1 GETBIT pkg:events 100000
expect_reply 6390 hello GET pkg:text
kill -TERM "$second"
wait "$second" || fail "the second server did not exit cleanly on SIGTERM (status $?)"
pass "a second server started on a copy of the backup serves the write"

has_fields "bitmapist-server starting" "_TRANSPORT=journal" "PRIORITY=6" "SYSLOG_IDENTIFIER=bitmapist-server" \
    "ADDRESS=127\.0\.0\.1:6379" "VERSION=[0-9]+\.[0-9]+\.[0-9]+.*" "THREADS=[0-9]+" "DATABASE=$DATA/bitmapist\.db" "CODE_FILE=.*"
has_fields "database open" "_TRANSPORT=journal" "KEYS=[0-9]+" "TXID=[0-9]+"
# The unit lets the server lower its checkpoint thread (setpriority and
# sched_setscheduler pass the seccomp filter), and, where the machine lets
# systemd raise RLIMIT_NICE to LimitNICE=+10, run it at idle priority.
nice_limit=$(awk '/^Max nice priority/ { print $4 }' "/proc/$(main_pid)/limits")
if [ "${nice_limit:-0}" -ge 10 ]; then
    has_fields "checkpoints and backups run at idle priority (SCHED_IDLE, nice 10 after 2 s)" "BACKGROUND=idle"
    background="idle priority (RLIMIT_NICE $nice_limit)"
else
    # (Inside systemd-nspawn the container's own limit of 0 caps it.)
    has_fields "checkpoints and backups run at nice priority" "BACKGROUND=nice" \
        "WHY_NOT_IDLE=back from SCHED_IDLE to nice 10: Operation not permitted.*"
    background="nice 10 (RLIMIT_NICE is $nice_limit here, LimitNICE=+10 could not raise it)"
fi
wait_until 10 has_entry "backup written" || fail "no 'backup written' in the journal"
has_fields "backup written" "_TRANSPORT=journal" "PRIORITY=6" "PATH=$DATA/bitmapist\.bak" "BYTES=[0-9]+"
if journalctl --no-pager _SYSTEMD_UNIT=bitmapist.service _TRANSPORT=stdout | grep -q "bitmapist-server starting"; then
    fail "the server's lines also reached the journal as plain stderr text"
fi
pass "journalctl -u bitmapist: native entries (_TRANSPORT=journal) with PRIORITY and fields ADDRESS, VERSION, KEYS, PATH, BYTES ...; checkpoints run at $background"

reset_start_limit
before=$(main_pid)
must "systemctl restart" systemctl restart bitmapist.service
[ "$(main_pid)" != "$before" ] || fail "systemctl restart did not start a new process"
wait_until 10 pong 6379 || fail "no PONG after restart"
expect_reply 6379 2 BITCOUNT pkg:events
expect_reply 6379 hello GET pkg:text
has_fields "final checkpoint written" "_TRANSPORT=journal"
pass "systemctl restart keeps the data (final checkpoint written, new pid $(main_pid))"

reset_start_limit
cp "$DEFAULTS" /root/defaults.orig
sed -i 's/^OPTIONS=.*/OPTIONS="-addr 127.0.0.1:6381 --log-level debug"/' "$DEFAULTS"
connected=$(count_entries "client connected")
must "systemctl restart" systemctl restart bitmapist.service
wait_until 10 pong 6381 || fail "OPTIONS=\"-addr 127.0.0.1:6381\" in $DEFAULTS did not move the server to port 6381"
pong 6379 && fail "the server still answers on 6379 although OPTIONS moved it"
expect_reply 6381 2 BITCOUNT pkg:events
wait_until 10 more_entries "client connected" "$connected" || fail "--log-level debug in OPTIONS did not log 'client connected'"
has_fields "client connected" "_TRANSPORT=journal" "PRIORITY=7" "PEER=127\.0\.0\.1:[0-9]+" "CLIENT=[0-9]+"
pass "OPTIONS in $DEFAULTS override -addr and set --log-level debug (client address in the journal as PEER=)"

reset_start_limit
cp /root/defaults.orig "$DEFAULTS"
echo 'RUST_LOG=debug' >>"$DEFAULTS"
connected=$(count_entries "client connected")
must "systemctl restart" systemctl restart bitmapist.service
wait_until 10 pong 6379 || fail "no PONG on 6379 after restoring $DEFAULTS"
wait_until 10 more_entries "client connected" "$connected" || fail "RUST_LOG=debug in $DEFAULTS did not enable debug lines"
cp /root/defaults.orig "$DEFAULTS"
must "systemctl restart" systemctl restart bitmapist.service
wait_until 10 pong 6379 || fail "no PONG on 6379 after restoring $DEFAULTS"
pass "RUST_LOG from the environment file sets the log filter; defaults restored"

reset_start_limit
# The README's recipe for listening beyond loopback: a password file handed
# to the sandboxed service as a credential (protected mode refuses without).
mkdir -p /etc/bitmapist /etc/systemd/system/bitmapist.service.d
(umask 077 && echo 'pkg-test-password' >/etc/bitmapist/requirepass)
printf '[Service]\nLoadCredential=requirepass:/etc/bitmapist/requirepass\n' >/etc/systemd/system/bitmapist.service.d/password.conf
sed -i 's|^OPTIONS=.*|OPTIONS="-addr 0.0.0.0:6382 --requirepass-file /run/credentials/bitmapist.service/requirepass"|' "$DEFAULTS"
must "daemon-reload" systemctl daemon-reload
must "systemctl restart (password)" systemctl restart bitmapist.service
wait_until 10 test "$(rcli 6382 PING)" = "NOAUTH Authentication required." || fail "on 0.0.0.0:6382 with a credential password, PING answered '$(rcli 6382 PING)'"
expect_reply 6382 2 --no-auth-warning -a pkg-test-password BITCOUNT pkg:events
rm -r /etc/systemd/system/bitmapist.service.d /etc/bitmapist
cp /root/defaults.orig "$DEFAULTS"
must "daemon-reload" systemctl daemon-reload
reset_start_limit
must "systemctl restart" systemctl restart bitmapist.service
wait_until 10 pong 6379 || fail "no PONG on 6379 after removing the password drop-in"
pass "-addr 0.0.0.0 with --requirepass-file from LoadCredential= (README recipe): NOAUTH without, served with the password"

reset_start_limit
expect_reply 6379 0 SETBIT pkg:events 5 1
before=$(main_pid)
must "systemctl kill" systemctl kill --kill-who=main -s SIGKILL bitmapist.service
wait_until 30 restarted "$before" || fail "no restart after SIGKILL"
wait_until 30 pong 6379 || fail "Restart=on-failure did not bring the server back after SIGKILL"
[ "$(prop bitmapist.service NRestarts)" -ge 1 ] || fail "NRestarts did not count the restart"
expect_reply 6379 3 BITCOUNT pkg:events
pass "kill -9: Restart=on-failure brought it back and the acknowledged write survived"

reset_start_limit
backups=$(count_entries "backup written")
must "systemctl reload" systemctl reload bitmapist.service
wait_until 60 more_entries "backup written" "$backups" || fail "the second reload wrote no backup"
expect_reply 6379 0 SETBIT pkg:events 9 1
expect_reply 6379 4 BITCOUNT pkg:events
# The README's restore, word for word.
must "restore" sh -ec '
    systemctl stop bitmapist
    cd /var/lib/bitmapist
    mkdir -p replaced && mv bitmapist.db bitmapist.db-wal.* replaced/
    cp -p bitmapist.bak bitmapist.db
    systemctl start bitmapist'
wait_until 10 pong 6379 || fail "no PONG after restoring the backup"
expect_reply 6379 3 BITCOUNT pkg:events
expect_reply 6379 hello GET pkg:text
rm -r "$DATA/replaced"
pass "restoring the backup as the README says: the server serves the backup's state (the later write is gone)"

reset_start_limit
before=$(main_pid)
must "dpkg -i (upgrade)" dpkg -i "$deb"
[ "$(systemctl is-active bitmapist.service)" = active ] || fail "not active after an upgrade"
[ "$(main_pid)" != "$before" ] || fail "an upgrade did not restart the service"
wait_until 10 pong 6379 || fail "no PONG after an upgrade"
expect_reply 6379 3 BITCOUNT pkg:events
pass "an upgrade (dpkg -i over the installed version) restarted the service; data kept"

reset_start_limit
must "systemctl stop" systemctl stop bitmapist.service
# The kernel lets go of the server's listening sockets a moment after the
# process exits (io_uring tears down its pending accepts asynchronously).
wait_until 10 port_free 6379 || fail "127.0.0.1:6379 is still bound 10 s after the service stopped"
must "systemctl start bitmapist.socket" systemctl start bitmapist.socket
[ "$(systemctl is-active bitmapist.service)" = inactive ] || fail "bitmapist.service started before any connection"
expect_reply 6379 3 BITCOUNT pkg:events
[ "$(systemctl is-active bitmapist.service)" = active ] || fail "a connection to bitmapist.socket did not start bitmapist.service"
has_fields "using the sockets passed by systemd; -addr is not used" "_TRANSPORT=journal" "SOCKETS=127\.0\.0\.1:6379"
must "systemctl stop (socket activation)" systemctl stop bitmapist.socket bitmapist.service
must "systemctl start" systemctl start bitmapist.service
wait_until 10 pong 6379 || fail "no PONG after going back from socket activation"
pass "socket activation: bitmapist.socket starts the service on the first connection, which serves on the passed socket"

if command -v systemd-analyze >/dev/null 2>&1; then
    report=$(systemd-analyze security --no-pager bitmapist.service 2>&1)
    score=$(sed -n 's/.*Overall exposure level for bitmapist.service: \([0-9.]*\).*/\1/p' <<<"$report")
    [ -n "$score" ] || fail "systemd-analyze security printed no score: $report"
    awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }' || fail "systemd-analyze security rates bitmapist.service $score (> 3.0)"
    pass "systemd-analyze security bitmapist: exposure $score (<= 3.0)"
fi

reset_start_limit
stops=$(count_entries "final checkpoint written")
must "systemctl stop" systemctl stop bitmapist.service
[ "$(prop bitmapist.service Result)" = success ] || fail "stop result is '$(prop bitmapist.service Result)', not success"
[ "$(prop bitmapist.service ExecMainStatus)" = 0 ] || fail "the server exited with status $(prop bitmapist.service ExecMainStatus) on stop"
[ "$(count_entries "final checkpoint written")" -gt "$stops" ] || fail "no 'final checkpoint written' on stop"
pass "systemctl stop is clean: final checkpoint written, exit status 0, result success"

must "systemctl start" systemctl start bitmapist.service
wait_until 10 pong 6379 || fail "no PONG before removal"
stops=$(count_entries "final checkpoint written")
must "apt-get remove" apt-get remove -y -q bitmapist-server
[ "$(systemctl is-active bitmapist.service)" != active ] || fail "the service still runs after apt-get remove"
[ "$(count_entries "final checkpoint written")" -gt "$stops" ] || fail "removal did not stop the server cleanly"
pong 6379 && fail "something still answers on 6379 after removal"
[ ! -e /usr/bin/bitmapist-server ] || fail "/usr/bin/bitmapist-server is still there after removal"
[ -s "$DATA/bitmapist.db" ] || fail "apt-get remove deleted $DATA/bitmapist.db"
[ -f "$DEFAULTS" ] || fail "apt-get remove deleted the conffile $DEFAULTS"
dpkg -s bitmapist-server 2>/dev/null | grep -qx 'Status: deinstall ok config-files' || fail "package state after remove is not config-files"
pass "apt-get remove stops the service and keeps $DATA and $DEFAULTS"

reset_start_limit
must "apt-get install (again)" apt-get install -y -q -o Acquire::Retries=0 "$deb"
wait_until 10 pong 6379 || fail "no PONG after reinstalling"
expect_reply 6379 3 BITCOUNT pkg:events
expect_reply 6379 hello GET pkg:text
pass "reinstalling after remove serves the kept data"

must "apt-get purge" apt-get purge -y -q bitmapist-server
[ "$(systemctl is-active bitmapist.service)" != active ] || fail "the service still runs after purge"
[ ! -e "$DATA" ] && [ ! -L "$DATA" ] || fail "purge left $DATA"
[ ! -e /var/lib/private/bitmapist ] || fail "purge left /var/lib/private/bitmapist"
[ ! -e "$DEFAULTS" ] || fail "purge left $DEFAULTS"
links=$(find /etc/systemd/system \( -name bitmapist.service -o -name bitmapist.socket \) 2>/dev/null)
[ -z "$links" ] || fail "purge left unit links: $links"
dpkg -s bitmapist-server >/dev/null 2>&1 && fail "the package is still known to dpkg after purge"
pass "apt-get purge removes $DATA (/var/lib/private/bitmapist), $DEFAULTS and the unit links"

echo "PASS: $n checks" >"$OUT/result"
