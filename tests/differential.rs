//! Differential tests: every command is sent to a stock redis-server 7.0 and
//! to the server under test, and the raw reply bytes must be identical.
//!
//! Each test starts its own pair of servers (see `common::Pair`), so tests
//! are independent and run in parallel. Needs redis-server 7.0 on PATH
//! (Debian bookworm's `redis-server` package).
//!
//! Replies whose order Redis leaves unspecified (KEYS, SCAN batches and
//! cursors) are compared as sets; everything else byte for byte.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Builds a command (`Vec<Vec<u8>>`) from anything byte-like: `&str`,
/// `b"..."`, `String`, `Vec<u8>`.
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        vec![$(AsRef::<[u8]>::as_ref(&$a).to_vec()),*]
    };
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Values used by the bit tests, including the empty string.
const BIT_VALUES: &[&[u8]] = &[
    b"\xff\xf0\x00",
    b"\x00\x00\xff",
    b"",
    b"\xff\xff",
    b"\x01\x80\x00\x55\xaa\x00\x10",
    b"\x00",
    b"\xff",
];

/// Strings that are not valid integers for Redis (or are at its limits).
const BAD_INTS: &[&str] = &[
    "abc",
    "",
    "1.0",
    "1.5",
    " 1",
    "1 ",
    "+1",
    "0x10",
    "1e3",
    "-0",
    "00",
    "01",
    "9223372036854775808",
    "-9223372036854775809",
    "99999999999999999999999",
];

// ---------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------

#[test]
fn harness_reply_framing() {
    let complete: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR x\r\n",
        b":-12\r\n",
        b"$-1\r\n",
        b"$0\r\n\r\n",
        b"$4\r\na\r\nb\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
        b"_\r\n",
        b",1.5\r\n",
        b"#t\r\n",
        b"(12345678901234567890\r\n",
        b"=7\r\ntxt:abc\r\n",
        b"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n_\r\n",
        b"~2\r\n:1\r\n:2\r\n",
        b">2\r\n+message\r\n$1\r\nx\r\n",
        b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
    ];
    for reply in complete {
        assert_eq!(reply_len(reply), Ok(Some(reply.len())), "{}", esc(reply));
        // Every strict prefix is incomplete.
        for cut in 0..reply.len() {
            assert_eq!(
                reply_len(&reply[..cut]),
                Ok(None),
                "prefix {cut} of {}",
                esc(reply)
            );
        }
        // Followed by more data, only the first reply is taken.
        let two = [*reply, b"+NEXT\r\n"].concat();
        assert_eq!(reply_len(&two), Ok(Some(reply.len())));
    }
    for bad in [&b"?x\r\n"[..], b"$2\r\nabcd\r\n", b"$x\r\n", b"*-2\r\n"] {
        assert!(reply_len(bad).is_err(), "{} should be malformed", esc(bad));
    }
    assert_eq!(
        resp_encode(&[b"SET", b"k", b""]),
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
    );
    assert_eq!(
        parse_reply(b"*3\r\n$1\r\na\r\n$-1\r\n:7\r\n"),
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"a".to_vec())),
            Reply::Bulk(None),
            Reply::Integer(7)
        ]))
    );
}

/// The comparison can fail: a key written to one side only must be noticed.
#[test]
fn harness_detects_a_difference() {
    let mut p = Pair::new();
    let mut ours = p.ours.connect();
    assert_reply(&ours.cmd(&[b"SET", b"only-ours", b"1"]), b"+OK\r\n", "SET");
    let err = p
        .compare(&["GET", "only-ours"], None)
        .expect_err("different replies must be reported");
    assert!(err.contains("redis: \"$-1\\r\\n\""), "{err}");
    assert!(err.contains("ours:  \"$1\\r\\n1\\r\\n\""), "{err}");
    // And equal replies are accepted.
    assert_reply(&p.cmd(&["GET", "nothing"]), b"$-1\r\n", "GET");
    p.check(&[
        &[b"PING"],
        &[b"ECHO", b"\x00hi"],
        &[b"GETBIT", b"only-ours", b"0"],
    ]);
}

// ---------------------------------------------------------------------------
// Connection commands
// ---------------------------------------------------------------------------

#[test]
fn ping_and_echo() {
    let mut p = Pair::new();
    p.expect(&["PING"], b"+PONG\r\n");
    p.check_lines(&[
        "ping",
        "PiNg",
        "PING hello",
        "PING a b",
        "PING a b c",
        "ECHO hello",
        "echo HeLLo",
        "ECHO",
        "ECHO a b",
    ]);
    p.cmd(&["PING", ""]);
    p.cmd(&["ECHO", ""]);
    p.cmd(&[&b"ECHO"[..], b"\x00\r\n\xff bin"]);
    p.cmd(&[&b"PING"[..], b"\r\n"]);
    let big = vec![b'x'; 100_000];
    p.cmd(&[&b"ECHO"[..], &big]);
}

#[test]
fn select_keyspaces() {
    let mut p = Pair::new();
    for db in 0..16 {
        let db = db.to_string();
        p.expect(&["SELECT", &db], b"+OK\r\n");
        p.cmd(&["GET", "k"]);
        p.cmd(&["SET", "k", &format!("value-{db}")]);
        p.cmd(&["SETBIT", &format!("bits{db}"), &db, "1"]);
        p.cmd(&["DBSIZE"]);
    }
    for db in (0..16).rev() {
        p.cmd(&["SELECT", &db.to_string()]);
        p.cmd(&["GET", "k"]);
        p.cmd(&["EXISTS", "bits0", "bits1", "bits15"]);
        p.check_unordered(&["KEYS", "*"]);
    }
    // Errors leave the selected database unchanged (still 0).
    for bad in [
        "16",
        "-1",
        "100",
        "abc",
        "",
        "1.0",
        " 1",
        "+1",
        "01",
        "99999999999999999999",
    ] {
        p.cmd(&["SELECT", bad]);
        p.cmd(&["GET", "k"]);
    }
    p.check_lines(&["SELECT", "SELECT 1 2", "select 3", "GET k"]);
    // A second connection starts in database 0.
    let mut other = p.connect();
    other.cmd(&["GET", "k"]);
    p.cmd(&["GET", "k"]);
}

// ---------------------------------------------------------------------------
// Bit commands
// ---------------------------------------------------------------------------

#[test]
fn setbit_getbit() {
    let mut p = Pair::new();
    p.check_lines(&[
        "GETBIT k 0",
        "SETBIT k 0 1",
        "SETBIT k 0 1",
        "GETBIT k 0",
        "GET k",
        "SETBIT k 7 1",
        "GET k",
        "SETBIT k 8 1",
        "GET k",
        "STRLEN k",
        "GETBIT k 7",
        "GETBIT k 8",
        "GETBIT k 9",
        "GETBIT k 1000",
        "SETBIT k 0 0",
        "SETBIT k 0 0",
        "GET k",
        "setbit k 100 1",
        "STRLEN k",
        "getbit k 100",
        "GETBIT k 4294967295",
        // Setting a 0 bit on a missing key still creates the key.
        "SETBIT zero 20 0",
        "EXISTS zero",
        "STRLEN zero",
        "GET zero",
        "TYPE zero",
    ]);
    // Errors: offset checked first, then the value; nothing is created.
    let mut cmds = Vec::new();
    for key in ["k", "missing"] {
        for offset in [
            "4294967296",
            "-1",
            "abc",
            "",
            "1.5",
            " 1",
            "#1",
            "18446744073709551616",
        ] {
            cmds.push(args!["SETBIT", key, offset, "1"]);
            cmds.push(args!["SETBIT", key, offset, "2"]);
            cmds.push(args!["GETBIT", key, offset]);
        }
        for value in ["2", "-1", "abc", "", "1.0", " 1", "01", "10", "+1"] {
            cmds.push(args!["SETBIT", key, "3", value]);
        }
        cmds.push(args!["EXISTS", key]);
        cmds.push(args!["GET", key]);
    }
    p.check_many(&cmds);
    p.check_lines(&[
        "SETBIT k 0",
        "SETBIT k",
        "SETBIT",
        "SETBIT k 0 1 2",
        "GETBIT k",
        "GETBIT",
        "GETBIT k 0 1",
    ]);
    // Every single bit of a few bytes, then the resulting string.
    let mut cmds = Vec::new();
    for i in 0..40u32 {
        if i % 3 == 0 || i % 7 == 0 {
            cmds.push(args!["SETBIT", "pattern", i.to_string(), "1"]);
        }
    }
    for i in 0..48u32 {
        cmds.push(args!["GETBIT", "pattern", i.to_string()]);
    }
    cmds.push(args!["GET", "pattern"]);
    p.check_many(&cmds);
}

/// The largest offset allocates a 512 MB string in Redis.
#[test]
fn setbit_max_offset() {
    let mut p = Pair::new();
    p.check_lines(&[
        "GETBIT big 4294967295",
        "EXISTS big",
        "SETBIT big 4294967295 1",
        "GETBIT big 4294967295",
        "GETBIT big 4294967294",
        "STRLEN big",
        "SETBIT big 4294967295 0",
        "SETBIT big 4294967295 1",
        "SETBIT big 0 1",
        "BITCOUNT big",
        "BITCOUNT big -1 -1",
        "BITCOUNT big 4294967290 4294967295 BIT",
        "BITPOS big 1 1",
        "BITPOS big 1 -1",
        "BITPOS big 0 -1",
        "BITPOS big 1 4294967288 -1 BIT",
        "SETBIT big 4294967296 1",
        "DEL big",
        "EXISTS big",
    ]);
}

#[test]
fn setbit_and_set_interplay() {
    let mut p = Pair::new();
    p.check_lines(&[
        // SETBIT on a key written by SET modifies its bytes.
        "SET s abc",
        "SETBIT s 1 0",
        "SETBIT s 6 1",
        "GET s",
        "SETBIT s 100 1",
        "GET s",
        "STRLEN s",
        "BITCOUNT s",
        // SET on a key made by SETBIT replaces it.
        "SETBIT b 30 1",
        "SET b xy",
        "GET b",
        "STRLEN b",
        "GETBIT b 30",
        "BITCOUNT b",
        // SETBIT inside the string does not change its length.
        "SETBIT s 3 1",
        "STRLEN s",
        // STRLEN after SETBIT: rounded up to whole bytes.
        "SETBIT len 0 1",
        "STRLEN len",
        "SETBIT len 15 1",
        "STRLEN len",
        "SETBIT len 16 0",
        "STRLEN len",
        "SETBIT len 2 0",
        "STRLEN len",
        "GET len",
    ]);
    // Strings with trailing (and only) zero bytes keep their length.
    p.cmd(&[&b"SET"[..], b"z", b"a\x00\x00"]);
    p.check_lines(&["GET z", "STRLEN z", "BITCOUNT z", "SETBIT z 23 0", "GET z"]);
    p.cmd(&[&b"SET"[..], b"zz", b"\x00\x00\x00\x00"]);
    p.check_lines(&[
        "GET zz",
        "STRLEN zz",
        "BITCOUNT zz",
        "BITPOS zz 1",
        "BITPOS zz 0",
    ]);
    p.cmd(&[&b"SET"[..], b"zbit", b"\x00\x00"]);
    p.check_lines(&[
        "SETBIT zbit 15 1",
        "SETBIT zbit 15 0",
        "GET zbit",
        "STRLEN zbit",
    ]);
    // The empty string exists and is distinct from a missing key.
    p.cmd(&["SET", "empty", ""]);
    p.check_lines(&[
        "GET empty",
        "STRLEN empty",
        "EXISTS empty",
        "TYPE empty",
        "BITCOUNT empty",
        "BITPOS empty 0",
        "BITPOS empty 1",
        "BITPOS missing 0",
        "BITPOS missing 1",
        "GETBIT empty 0",
        "SETBIT empty 9 1",
        "GET empty",
    ]);
    // Binary values, bit by bit.
    p.cmd(&[&b"SET"[..], b"bin", b"\xff\x00\r\n\x80"]);
    let mut cmds = Vec::new();
    for i in 0..48u32 {
        cmds.push(args!["GETBIT", "bin", i.to_string()]);
    }
    cmds.push(args!["SETBIT", "bin", "39", "1"]);
    cmds.push(args!["GET", "bin"]);
    p.check_many(&cmds);
}

fn range_commands(cmd: &str, key: &str, prefix: &[&str]) -> Vec<Vec<Vec<u8>>> {
    let mut cmds = Vec::new();
    let base = |extra: Vec<String>| {
        let mut c = args![cmd, key];
        c.extend(prefix.iter().map(|s| s.as_bytes().to_vec()));
        c.extend(extra.into_iter().map(String::into_bytes));
        c
    };
    cmds.push(base(vec![]));
    for start in -20..20i64 {
        cmds.push(base(vec![start.to_string()]));
        for end in -20..20i64 {
            cmds.push(base(vec![start.to_string(), end.to_string()]));
            for unit in ["BYTE", "BIT"] {
                cmds.push(base(vec![start.to_string(), end.to_string(), unit.into()]));
            }
        }
    }
    for (s, e) in [
        ("0", "9223372036854775807"),
        ("-9223372036854775808", "-1"),
        ("-9223372036854775808", "9223372036854775807"),
        ("9223372036854775807", "9223372036854775807"),
        ("-9223372036854775808", "-9223372036854775808"),
        ("0", "-9223372036854775808"),
        ("-100", "100"),
        ("100", "-100"),
    ] {
        for unit in ["", "BYTE", "BIT", "bit", "Byte"] {
            let mut v = vec![s.to_string(), e.to_string()];
            if !unit.is_empty() {
                v.push(unit.into());
            }
            cmds.push(base(v));
        }
    }
    cmds
}

#[test]
fn bitcount_ranges() {
    let mut p = Pair::new();
    for value in BIT_VALUES {
        p.cmd(&[&b"SET"[..], b"v", value]);
        p.check_many(&range_commands("BITCOUNT", "v", &[]));
    }
    p.check_many(&range_commands("BITCOUNT", "missing", &[]));
}

#[test]
fn bitcount_errors() {
    let mut p = Pair::new();
    p.cmd(&["SET", "v", "foobar"]);
    let mut cmds = Vec::new();
    for key in ["v", "missing"] {
        for extra in [
            &["0"][..],
            &["0", "1", "FOO"],
            &["0", "1", "BIT", "x"],
            &["0", "1", "BITS"],
            &["0", "1", ""],
            &["a", "1"],
            &["0", "b"],
            &["a", "b", "BIT"],
            &["0", "1", "2"],
            &["0", "1", "BYTE", "BYTE"],
        ] {
            let mut c = args!["BITCOUNT", key];
            c.extend(extra.iter().map(|s| s.as_bytes().to_vec()));
            cmds.push(c);
        }
        for bad in BAD_INTS {
            cmds.push(args!["BITCOUNT", key, bad, "1"]);
            cmds.push(args!["BITCOUNT", key, "0", bad]);
            cmds.push(args!["BITCOUNT", key, "0", bad, "BIT"]);
        }
    }
    cmds.push(args!["BITCOUNT"]);
    p.check_many(&cmds);
}

#[test]
fn bitpos_ranges() {
    let mut p = Pair::new();
    let mut values: Vec<&[u8]> = BIT_VALUES.to_vec();
    values.extend_from_slice(&[b"\x00\x00\x00", b"\xff\xff\xff", b"\x00\xff\x00", b"\xfe"]);
    for value in values {
        p.cmd(&[&b"SET"[..], b"v", value]);
        for bit in ["0", "1"] {
            p.check_many(&range_commands("BITPOS", "v", &[bit]));
        }
    }
    for bit in ["0", "1"] {
        p.check_many(&range_commands("BITPOS", "missing", &[bit]));
    }
}

#[test]
fn bitpos_errors() {
    let mut p = Pair::new();
    p.cmd(&[&b"SET"[..], b"v", b"\xff\xf0\x00"]);
    let mut cmds = Vec::new();
    for key in ["v", "missing"] {
        for extra in [
            &["2"][..],
            &["-1"],
            &["abc"],
            &[""],
            &["01"],
            &["1", "a"],
            &["1", "0", "a"],
            &["1", "a", "b"],
            &["1", "0", "1", "FOO"],
            &["1", "0", "1", "BIT", "x"],
            &["1", "0", "1", "BYTE", "BIT"],
            &["2", "a"],
            &["2", "0", "1", "FOO"],
            &["0", "0", "1", ""],
        ] {
            let mut c = args!["BITPOS", key];
            c.extend(extra.iter().map(|s| s.as_bytes().to_vec()));
            cmds.push(c);
        }
        for bad in BAD_INTS {
            cmds.push(args!["BITPOS", key, bad]);
            cmds.push(args!["BITPOS", key, "1", bad]);
            cmds.push(args!["BITPOS", key, "0", "0", bad]);
            cmds.push(args!["BITPOS", key, "1", "0", bad, "BIT"]);
        }
    }
    cmds.push(args!["BITPOS", "v"]);
    cmds.push(args!["BITPOS"]);
    p.check_many(&cmds);
}

#[test]
fn bitop() {
    let mut p = Pair::new();
    p.cmd(&[&b"SET"[..], b"a", b"\xff\x0f"]);
    p.cmd(&[&b"SET"[..], b"b", b"\x0f"]);
    p.cmd(&[&b"SET"[..], b"c", b"\x00\xff\x01"]);
    p.cmd(&[&b"SET"[..], b"e", b""]);
    p.cmd(&[&b"SET"[..], b"z", b"\x00\x00\x00\x00"]);
    let sources: &[&[&str]] = &[
        &["a"],
        &["b"],
        &["e"],
        &["z"],
        &["missing"],
        &["a", "b"],
        &["b", "a"],
        &["a", "c"],
        &["a", "b", "c"],
        &["a", "missing"],
        &["missing", "a"],
        &["missing", "missing2"],
        &["a", "e"],
        &["e", "e"],
        &["a", "a", "a"],
        &["c", "z", "b", "a", "missing"],
    ];
    let mut cmds = Vec::new();
    for op in ["AND", "OR", "XOR", "NOT", "and", "Or", "xor", "not"] {
        for srcs in sources {
            // The destination exists (with a TTL) before each BITOP.
            cmds.push(args!["SET", "dest", "previous", "EX", "100"]);
            let mut c = args!["BITOP", op, "dest"];
            c.extend(srcs.iter().map(|s| s.as_bytes().to_vec()));
            cmds.push(c);
            cmds.push(args!["EXISTS", "dest"]);
            cmds.push(args!["GET", "dest"]);
            cmds.push(args!["STRLEN", "dest"]);
            cmds.push(args!["TTL", "dest"]);
        }
    }
    p.check_many(&cmds);
    p.check_lines(&[
        // The destination may be one of the sources.
        "BITOP NOT a a",
        "GET a",
        "BITOP AND a a c",
        "GET a",
        // Errors.
        "BITOP NOT dest a b",
        "BITOP NOT dest",
        "BITOP FOO dest a",
        "BITOP ANDX dest a",
        "BITOP dest a",
        "BITOP AND dest",
        "BITOP AND",
        "BITOP",
        "EXISTS dest",
    ]);
    // Longer and binary operands, all byte positions.
    p.cmd(&[&b"SET"[..], b"l1", &(0..=255u8).collect::<Vec<u8>>()]);
    p.cmd(&[
        &b"SET"[..],
        b"l2",
        &(0..=255u8).rev().cycle().take(700).collect::<Vec<u8>>(),
    ]);
    p.check_lines(&[
        "BITOP AND r l1 l2",
        "GET r",
        "BITOP OR r l1 l2",
        "GET r",
        "BITOP XOR r l1 l2 l1",
        "GET r",
        "BITOP NOT r l2",
        "GET r",
        "BITCOUNT r",
    ]);
}

/// The same BITOP again and again, with every kind of change to its
/// sources and destination in between (this server answers a repeat over
/// unchanged values without computing it: `keyspace::memo`).
#[test]
fn bitop_repeated_over_changes() {
    let mut p = Pair::new();
    p.check_lines(&[
        "SETBIT a 3 1",
        "SETBIT a 900 1",
        "SETBIT b 70000 1",
        "SETBIT b 3 1",
    ]);
    let again = [
        "BITOP OR d a b",
        "GET d",
        "TTL d",
        "BITOP AND e a b",
        "GET e",
    ];
    let changes: &[&[&str]] = &[
        &[],
        &[],
        &["SETBIT a 100 1"],
        &["SETBIT a 100 0"],
        &["SETBIT b 5 1"],
        &["SETBIT d 2 1"],
        &["SETBIT e 3 0"],
        &["EXPIRE d 100"],
        &["EXPIRE a 100"],
        &["PERSIST a"],
        &["SET b x"],
        &["DEL b"],
        &["SETBIT b 3 1"],
        &["RENAME a tmp", "RENAME tmp a"],
        &["RENAME d d2"],
        &["RENAME d2 d"],
        // The result lives on under another name; the destination holds
        // something else.
        &["RENAME d d2", "SET d x"],
        &["SET a q"],
        &["SET a q"],
        &["SET a q GET"],
        &["SET d something"],
        &["DEL d"],
        &["BITOP OR d b a"],
        &["SELECT 1", "SETBIT a 1 1", "BITOP OR d a b", "SELECT 0"],
        &["FLUSHDB", "SETBIT a 3 1", "SETBIT b 3 1"],
        &["SAVE"],
    ];
    for change in changes {
        p.check_lines(change);
        p.check_lines(&again);
        p.check_lines(&again);
    }
    // The repeats with nothing changed in between were answered from the
    // memo (at least the second OR after each change).
    let info = String::from_utf8_lossy(&p.ours.connect().call(&["INFO", "memory"])).into_owned();
    let hits: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("bitop_memo_hits:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bitop_memo_hits in INFO memory:\n{info}"));
    assert!(
        hits >= changes.len(),
        "{hits} BITOPs answered from the memo, expected at least {}",
        changes.len()
    );
    // The destination among the sources: each XOR changes it again.
    p.check_lines(&["SET x ab", "SET y cd"]);
    for _ in 0..4 {
        p.check_lines(&["BITOP XOR x x y", "GET x", "BITOP NOT y y", "GET y"]);
    }
    // An empty result deletes the destination, every time.
    p.check_lines(&["SET z1 \x00", "BITOP AND z2 z1 missing", "EXISTS z2"]);
    p.check_lines(&["SET z2 v", "BITOP AND z2 z1 missing", "EXISTS z2"]);
}

// ---------------------------------------------------------------------------
// String commands
// ---------------------------------------------------------------------------

#[test]
fn get_set_strlen() {
    let mut p = Pair::new();
    p.check_lines(&[
        "GET k",
        "SET k v",
        "GET k",
        "get k",
        "STRLEN k",
        "SET k longer-value",
        "GET k",
        "STRLEN k",
        "STRLEN missing",
        "SET k v extra",
        "SET k",
        "SET",
        "GET",
        "GET a b",
        "STRLEN",
        "STRLEN a b",
        "SETBIT bits 9 1",
        "MGET k",
        "MGET k missing bits k",
        "MGET missing",
        "MGET",
    ]);
    p.cmd(&["SET", "", "empty key"]);
    p.cmd(&[&b"SET"[..], b"\x00\r\n", b"\xff\x00"]);
    p.cmd(&[&b"MGET"[..], b"", b"\x00\r\n", b"k", b"\x00"]);
    p.cmd(&["GET", ""]);
    p.cmd(&["SET", "k", ""]);
    p.cmd(&["GET", "k"]);
    p.cmd(&["STRLEN", "k"]);
    // Values around and above the 32 KB "big argument" threshold of Redis.
    for len in [16 * 1024 - 1, 32 * 1024, 32 * 1024 + 1, 100_000, 1_000_000] {
        let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        p.cmd(&[&b"SET"[..], b"big", &value]);
        p.cmd(&["STRLEN", "big"]);
        p.cmd(&["GET", "big"]);
        p.cmd(&["BITCOUNT", "big"]);
    }
}

#[test]
fn set_options() {
    let mut p = Pair::new();
    p.check_lines(&[
        "SET k v NX",
        "SET k v2 NX",
        "GET k",
        "SET k v3 XX",
        "GET k",
        "SET missing v XX",
        "EXISTS missing",
        "SET k v4 GET",
        "SET new v GET",
        "GET new",
        "SET k v5 NX GET",
        "GET k",
        "SET other v NX GET",
        "GET other",
        "SET k v6 XX GET",
        "SET missing v XX GET",
        "EXISTS missing",
        "set k v7 nx",
        "set k v8 xx get",
        // Expiry options.
        "SET t v EX 100",
        "TTL t",
        "SET t v PX 100000",
        "TTL t",
        "SET t v ex 100 GET",
        "TTL t",
        "SET t v2 KEEPTTL",
        "TTL t",
        "GET t",
        "SET t v3 keepttl GET",
        "TTL t",
        "SET t v4",
        "TTL t",
        "SET t v EX 100 NX",
        "SET t v EX 200 XX",
        "TTL t",
        // Repeated options: the last value wins.
        "SET t v EX 10 EX 300",
        "TTL t",
        "SET t v NX NX",
        "SET t v XX XX GET GET",
        "TTL t",
        // Conflicts and malformed options.
        "SET k v NX XX",
        "SET k v XX NX",
        "SET k v EX 10 PX 10000",
        "SET k v PX 10000 EX 10",
        "SET k v EX 10 EXAT 9999999999",
        "SET k v PX 10 PXAT 9999999999999",
        "SET k v EXAT 9999999999 PXAT 9999999999999",
        "SET k v EX 10 KEEPTTL",
        "SET k v KEEPTTL EX 10",
        "SET k v KEEPTTL PXAT 9999999999999",
        "SET k v EX",
        "SET k v PX",
        "SET k v EXAT",
        "SET k v PXAT",
        "SET k v EX 10 FOO",
        "SET k v FOO",
        "SET k v GETX",
        "SET k v EX 0",
        "SET k v EX -5",
        "SET k v PX 0",
        "SET k v PX -1",
        "SET k v EXAT 0",
        "SET k v PXAT 0",
        "SET k v EXAT -1",
        "SET k v EX 9223372036854775807",
        "SET k v EX 9223372036854775",
        "SET k v EX 9223372036854776",
        "SET k v PX 9223372036854775807",
        "SET k v PX 9223372036854775000",
        "SET k v PXAT 9223372036854775807",
        "SET k v EXAT 9223372036854775808",
        "SET k v NX EX 0",
        "SET k v EX 0 NX XX",
        "GET k",
        "TTL k",
    ]);
    for bad in BAD_INTS {
        for opt in ["EX", "PX", "EXAT", "PXAT"] {
            p.cmd(&["SET", "k", "v", opt, bad]);
        }
    }
    p.check_lines(&["GET k"]);
    // Absolute expiry times: EXPIRETIME is exact.
    let at = now_secs() + 1000;
    p.cmd(&["SET", "a", "v", "EXAT", &at.to_string()]);
    p.check_lines(&["EXPIRETIME a"]);
    p.check_int_approx(&["TTL", "a"], 1);
    p.cmd(&["SET", "a", "v", "PXAT", &(at * 1000 + 250).to_string()]);
    p.check_lines(&["EXPIRETIME a"]);
    p.check_int_approx(&["PTTL", "a"], 1000);
    p.cmd(&["SET", "a", "v", "EXAT", "9223372036854775"]);
    p.check_lines(&["EXPIRETIME a"]);
    // An absolute time in the past: OK (or the old value) and the key is gone.
    p.check_lines(&[
        "SET past v EXAT 1",
        "EXISTS past",
        "SET past v",
        "SET past v2 PXAT 1 GET",
        "EXISTS past",
        "GET past",
        "SET past v EXAT 1 NX",
        "EXISTS past",
    ]);
    p.cmd(&["SET", "past", "v"]);
    p.cmd(&[
        "SET",
        "past",
        "v2",
        "EXAT",
        &(now_secs() - 10).to_string(),
        "GET",
    ]);
    p.check_lines(&["EXISTS past"]);
}

#[test]
fn del_unlink_exists_type() {
    let mut p = Pair::new();
    p.check_lines(&[
        "SET a 1",
        "SET b 2",
        "SETBIT c 5 1",
        "EXISTS a",
        "EXISTS a b c",
        "EXISTS a a a missing",
        "EXISTS missing",
        "TYPE a",
        "TYPE c",
        "TYPE missing",
        "type a",
        "DEL a a",
        "EXISTS a",
        "DEL missing",
        "DEL b c missing b",
        "DBSIZE",
        "SET a 1",
        "SET b 2",
        "UNLINK a b a missing",
        "UNLINK a",
        "DBSIZE",
        "SET x 1",
        "SELECT 1",
        "DEL x",
        "EXISTS x",
        "SELECT 0",
        "EXISTS x",
        "DEL",
        "UNLINK",
        "EXISTS",
        "TYPE",
        "TYPE a b",
    ]);
    // Many keys at once.
    let mut set = Vec::new();
    let mut del = args!["DEL"];
    let mut exists = args!["EXISTS"];
    for i in 0..200 {
        let key = format!("key:{i}");
        set.push(args!["SET", &key, "v"]);
        if i % 3 == 0 {
            del.push(key.clone().into_bytes());
        }
        exists.push(key.into_bytes());
    }
    p.check_many(&set);
    p.cmd(&exists);
    p.cmd(&del);
    p.cmd(&exists);
    p.cmd(&["DBSIZE"]);
}

#[test]
fn keys_glob_patterns() {
    let mut p = Pair::new();
    let keys: &[&[u8]] = &[
        b"a",
        b"b",
        b"ab",
        b"abc",
        b"a/b",
        b"a/b/c",
        b"/",
        b"hello",
        b"hallo",
        b"hxllo",
        b"hllo",
        b"heeeello",
        b"h\nllo",
        b"x*y",
        b"x?y",
        b"x[y",
        b"x]y",
        b"x\\y",
        b"xay",
        b"[",
        b"]",
        b"-",
        b"^",
        b"\\",
        b"",
        b"\x00",
        b"a\x00b",
        b"\xff",
        b"\xfe\xff",
        b"a\r\nb",
        b"user:1",
        b"user:22",
        b"user:333",
        b"User:4",
    ];
    for key in keys {
        p.cmd(&[&b"SET"[..], key, b"v"]);
    }
    let patterns: &[&[u8]] = &[
        b"*",
        b"**",
        b"a*",
        b"*b",
        b"*b*",
        b"a?",
        b"?",
        b"??",
        b"???",
        b"h?llo",
        b"h*llo",
        b"h[ae]llo",
        b"h[^e]llo",
        b"h[a-b]llo",
        b"h[b-a]llo",
        b"h[a-z]llo",
        b"h[^a-z]llo",
        b"h[a-]llo",
        b"h[-a]llo",
        b"h[!e]llo",
        b"x\\*y",
        b"x\\?y",
        b"x\\[y",
        b"x[\\[]y",
        b"x[\\]]y",
        b"x[]]y",
        b"x\\\\y",
        b"x\\ay",
        b"x[*]y",
        b"x[?]y",
        b"[",
        b"[[]",
        b"[]",
        b"[]]",
        b"[^]",
        b"[^",
        b"[a",
        b"[ab",
        b"a[",
        b"h[a-z",
        b"h[a-",
        b"\\",
        b"*\\",
        b"a\\",
        b"a/*",
        b"*/*",
        b"*/c",
        b"*/",
        b"user:?",
        b"user:*",
        b"user:[0-9]",
        b"user:[0-9]*",
        b"user:[0-9][0-9]",
        b"[uU]ser:*",
        b"*:*",
        b"*a*b*",
        b"*a*b*c*",
        b"",
        b"\x00",
        b"*\x00*",
        b"\xff",
        b"*\xff",
        b"[\xfe-\xff]*",
        b"*\r\n*",
        b"a?b",
        b"h\nllo",
        b"nomatch*",
        b"-",
        b"[-]",
        b"^",
        b"[\\^]",
    ];
    for pattern in patterns {
        p.check_unordered(&[&b"KEYS"[..], pattern]);
    }
    p.check_lines(&[
        "KEYS",
        "KEYS a b",
        "SELECT 2",
        "KEYS *",
        "SET only2 v",
        "KEYS *",
    ]);
}

#[test]
fn scan_key_sets() {
    let mut p = Pair::new();
    // On an empty database the reply is fully deterministic.
    p.expect(&["SCAN", "0"], b"*2\r\n$1\r\n0\r\n*0\r\n");
    let mut cmds = Vec::new();
    for i in 0..300 {
        cmds.push(args!["SET", format!("key:{i}"), "v"]);
    }
    for i in 0..20 {
        cmds.push(args!["SETBIT", format!("bits:{i}"), i.to_string(), "1"]);
    }
    cmds.push(args!["SET", b"bin\x00\xff\r\n", "v"]);
    cmds.push(args!["SELECT", "1"]);
    cmds.push(args!["SET", "db1-only", "v"]);
    cmds.push(args!["SELECT", "0"]);
    p.check_many(&cmds);
    let all = p.check_scan(&[]);
    assert_eq!(all.len(), 321);
    p.check_scan(&[b"COUNT", b"1"]);
    p.check_scan(&[b"COUNT", b"7"]);
    p.check_scan(&[b"COUNT", b"1000"]);
    p.check_scan(&[b"count", b"2"]);
    let matched = p.check_scan(&[b"MATCH", b"key:1*"]);
    assert_eq!(matched.len(), 111);
    p.check_scan(&[b"MATCH", b"key:1*", b"COUNT", b"3"]);
    p.check_scan(&[b"COUNT", b"3", b"MATCH", b"bits:?"]);
    p.check_scan(&[b"MATCH", b"*"]);
    p.check_scan(&[b"MATCH", b"nothing*"]);
    p.check_scan(&[b"MATCH", b"bin*"]);
    p.check_scan(&[b"MATCH", b"a", b"MATCH", b"key:2?"]);
    p.check_scan(&[b"TYPE", b"string"]);
    p.check_scan(&[b"TYPE", b"STRING"]);
    p.check_scan(&[b"TYPE", b"hash"]);
    p.check_scan(&[b"TYPE", b"list"]);
    p.check_scan(&[b"TYPE", b"set"]);
    p.check_scan(&[b"TYPE", b"zset"]);
    p.check_scan(&[b"TYPE", b"foo"]);
    p.check_scan(&[b"MATCH", b"bits:*", b"TYPE", b"string", b"COUNT", b"5"]);
    p.check_scan(&[b"type", b"string", b"match", b"key:2*"]);
    p.cmd(&["SELECT", "1"]);
    p.check_scan(&[]);
    p.cmd(&["SELECT", "5"]);
    p.check_scan(&[]);
    p.cmd(&["SELECT", "0"]);
    // Errors (the cursor is checked first).
    p.check_lines(&[
        "SCAN",
        "SCAN abc",
        "SCAN abc COUNT 0",
        "SCAN 0 COUNT 0",
        "SCAN 0 COUNT -1",
        "SCAN 0 COUNT abc",
        "SCAN 0 COUNT 1.5",
        "SCAN 0 COUNT",
        "SCAN 0 MATCH",
        "SCAN 0 TYPE",
        "SCAN 0 FOO",
        "SCAN 0 FOO bar",
        "SCAN 0 COUNT 10 FOO",
        "SCAN 0x10",
        "SCAN 1.5",
        "SCAN 18446744073709551616",
        "SCAN 99999999999999999999999",
    ]);
    p.cmd(&["SCAN", " 0"]);
    p.cmd(&["SCAN", "0 "]);
    p.cmd(&["SCAN", "\t1"]);
    // Odd but accepted cursors (strtoul): only the shape of the reply can be
    // compared, as cursor values legitimately differ.
    for cursor in ["", "-1", "+0", "+5", "18446744073709551615", "007"] {
        let (redis, ours) = p.both(&["SCAN", cursor, "COUNT", "5"]);
        let shape = |raw: &[u8]| match parse_reply(raw) {
            Reply::Array(Some(items)) if items.len() == 2 => "array of 2".to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(
            shape(&redis),
            shape(&ours),
            "SCAN {cursor:?} COUNT 5: redis \"{}\" ours \"{}\"",
            esc(&redis),
            esc(&ours)
        );
    }
}

#[test]
fn dbsize_flushdb_flushall() {
    let mut p = Pair::new();
    p.check_lines(&[
        "DBSIZE",
        "SET a 1",
        "SET b 1",
        "SETBIT c 1 1",
        "DBSIZE",
        "SELECT 3",
        "DBSIZE",
        "SET a 1",
        "DBSIZE",
        "FLUSHDB",
        "DBSIZE",
        "SELECT 0",
        "DBSIZE",
        "SELECT 3",
        "SET a 1",
        "FLUSHALL",
        "DBSIZE",
        "SELECT 0",
        "DBSIZE",
        "GET a",
        "SET a 1",
        "FLUSHDB ASYNC",
        "DBSIZE",
        "SET a 1",
        "FLUSHDB sync",
        "SET a 1",
        "FLUSHALL ASYNC",
        "SET a 1",
        "FLUSHALL SYNC",
        "DBSIZE",
        "SET a 1",
        "FLUSHDB FOO",
        "FLUSHALL FOO",
        "FLUSHDB ASYNC SYNC",
        "FLUSHALL ASYNC x",
        "DBSIZE",
        "DBSIZE x",
        "dbsize",
        "flushdb",
        "DBSIZE",
    ]);
}

// ---------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------

/// EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT x NX/XX/GT/LT x key state x time.
#[test]
fn expire_options_matrix() {
    let mut p = Pair::new();
    let now = now_secs();
    let flag_sets: &[&[&str]] = &[
        &[],
        &["NX"],
        &["XX"],
        &["GT"],
        &["LT"],
        &["nx"],
        &["XX", "GT"],
        &["XX", "LT"],
        &["GT", "XX"],
        &["NX", "NX"],
        &["LT", "LT"],
    ];
    for &(cmd, scale, absolute) in &[
        ("EXPIRE", 1, false),
        ("PEXPIRE", 1000, false),
        ("EXPIREAT", 1, true),
        ("PEXPIREAT", 1000, true),
    ] {
        for flags in flag_sets {
            for state in ["missing", "persistent", "ttl100"] {
                for secs in [50i64, 100, 200, 0, -1] {
                    p.cmd(&["DEL", "k"]);
                    match state {
                        "persistent" => {
                            p.cmd(&["SET", "k", "v"]);
                        }
                        "ttl100" => {
                            p.cmd(&["SET", "k", "v", "EXAT", &(now + 100).to_string()]);
                        }
                        _ => {}
                    }
                    let t = if absolute {
                        if secs <= 0 {
                            (now - 10 + secs) * scale
                        } else {
                            (now + secs) * scale
                        }
                    } else {
                        secs * scale
                    };
                    let mut c = args![cmd, "k", t.to_string()];
                    c.extend(flags.iter().map(|f| f.as_bytes().to_vec()));
                    p.cmd(&c);
                    p.cmd(&["EXISTS", "k"]);
                    if absolute {
                        p.cmd(&["EXPIRETIME", "k"]);
                        p.cmd(&["PEXPIRETIME", "k"]);
                    } else {
                        p.check_int_approx(&["TTL", "k"], 1);
                    }
                }
            }
        }
    }
}

#[test]
fn expire_errors() {
    let mut p = Pair::new();
    p.cmd(&["SET", "k", "v"]);
    let mut cmds = Vec::new();
    for cmd in ["EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT"] {
        for key in ["k", "missing"] {
            for extra in [
                &["10", "NX", "XX"][..],
                &["10", "XX", "NX"],
                &["10", "NX", "GT"],
                &["10", "LT", "NX"],
                &["10", "GT", "LT"],
                &["10", "LT", "GT"],
                &["10", "NX", "XX", "GT", "LT"],
                &["10", "FOO"],
                &["10", "NX", "foo"],
                &["10", ""],
                &["abc", "FOO"],
                &["abc", "NX", "XX"],
                &["abc"],
                &["9223372036854775807"],
                &["-9223372036854775808"],
                &["9223372036854775"],
                &["9223372036854776"],
                &["-9223372036854776"],
                &["9223372036854775808"],
            ] {
                let mut c = args![cmd, key];
                c.extend(extra.iter().map(|s| s.as_bytes().to_vec()));
                cmds.push(c);
                cmds.push(args!["EXISTS", key]);
                cmds.push(args!["EXPIRETIME", key]);
            }
            for bad in BAD_INTS {
                cmds.push(args![cmd, key, bad]);
            }
        }
        cmds.push(args![cmd, "k"]);
        cmds.push(args![cmd]);
    }
    p.check_many(&cmds);
}

#[test]
fn ttl_pttl_expiretime_persist() {
    let mut p = Pair::new();
    p.check_lines(&[
        "TTL missing",
        "PTTL missing",
        "EXPIRETIME missing",
        "PEXPIRETIME missing",
        "SET k v",
        "PEXPIRETIME k",
        "TTL k",
        "PTTL k",
        "EXPIRETIME k",
        "EXPIRE k 100",
        "TTL k",
        "PERSIST k",
        "PERSIST k",
        "PERSIST missing",
        "TTL k",
        "EXPIRETIME k",
        "EXPIRE k 100",
        "SET k v2",
        "TTL k",
        "EXPIRE k 5000",
        "SETBIT k 3 1",
        "TTL k",
        "PEXPIRE k 100000",
        "TTL k",
        "TTL",
        "TTL a b",
        "PTTL",
        "PTTL a b",
        "EXPIRETIME",
        "EXPIRETIME a b",
        "PEXPIRETIME",
        "PEXPIRETIME a b",
        "PERSIST",
        "PERSIST a b",
    ]);
    p.check_int_approx(&["PTTL", "k"], 1000);
    // EXPIRETIME rounds milliseconds to the nearest second.
    let at = now_secs() + 1000;
    for ms in [0, 1, 499, 500, 501, 999] {
        p.cmd(&["PEXPIREAT", "k", &(at * 1000 + ms).to_string()]);
        p.cmd(&["EXPIRETIME", "k"]);
        p.cmd(&["PEXPIRETIME", "k"]);
        p.check_int_approx(&["TTL", "k"], 1);
        p.check_int_approx(&["PTTL", "k"], 1000);
    }
    p.cmd(&["PEXPIREAT", "k", "9223372036854775807"]);
    p.cmd(&["EXPIRETIME", "k"]);
    p.cmd(&["PEXPIRETIME", "k"]);
    p.check_int_approx(&["TTL", "k"], 1);
    p.cmd(&["PERSIST", "k"]);
    p.cmd(&["TTL", "k"]);
}

/// Keys really expire (the timing is the point of this test).
#[test]
fn keys_expire() {
    let mut p = Pair::new();
    p.check_lines(&[
        "SET a v PX 100",
        "SET b v",
        "PEXPIRE b 100",
        "SETBIT c 9 1",
        "PEXPIRE c 100",
        "SET d v EX 1000",
        "EXISTS a b c d",
    ]);
    std::thread::sleep(Duration::from_millis(250));
    p.check_lines(&[
        "GET a",
        "EXISTS a b c d",
        "TTL b",
        "PTTL c",
        "GETBIT c 9",
        "STRLEN c",
        "BITCOUNT c",
        "TYPE a",
        "PERSIST b",
        "RENAME a z",
        "SETBIT c 0 1",
        "TTL c",
        "GET c",
    ]);
    p.check_unordered(&["KEYS", "*"]);
    p.check_scan(&[]);
}

#[test]
fn rename_renamenx() {
    let mut p = Pair::new();
    p.check_lines(&[
        "RENAME missing x",
        "RENAMENX missing x",
        "RENAME missing missing",
        "RENAMENX missing missing",
        "SET a 1",
        "RENAME a a",
        "RENAMENX a a",
        "GET a",
        "RENAME a b",
        "EXISTS a b",
        "GET b",
        "SET a 2",
        "RENAMENX a b",
        "GET b",
        "RENAMENX a c",
        "EXISTS a c",
        "GET c",
        // RENAME keeps the source's TTL and drops the destination's.
        "SET t v EX 100",
        "RENAME t t2",
        "TTL t2",
        "SET u v EX 500",
        "SET w v",
        "RENAME w u",
        "TTL u",
        "RENAME t2 u",
        "TTL u",
        "RENAMENX u n",
        "TTL n",
        "SETBIT bits 17 1",
        "RENAME bits b2",
        "GETBIT b2 17",
        "STRLEN b2",
        // Other databases are untouched.
        "SELECT 1",
        "RENAME n x",
        "SET n db1",
        "SELECT 0",
        "GET n",
        "RENAME",
        "RENAME a",
        "RENAME a b c",
        "RENAMENX",
        "RENAMENX a",
        "RENAMENX a b c",
    ]);
    p.cmd(&[&b"SET"[..], b"\x00\xff", b"bin"]);
    p.cmd(&[&b"RENAME"[..], b"\x00\xff", b"\r\n"]);
    p.cmd(&[&b"GET"[..], b"\r\n"]);
    p.cmd(&[&b"RENAMENX"[..], b"\r\n", b""]);
    p.cmd(&[&b"GET"[..], b""]);
}

// ---------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------

#[test]
fn multi_exec_discard() {
    let mut p = Pair::new();
    p.check_lines(&[
        "EXEC",
        "DISCARD",
        "MULTI",
        "EXEC",
        "MULTI",
        "SET a 1",
        "SETBIT b 3 1",
        "GET a",
        "PING",
        "ECHO hi",
        "BITCOUNT b",
        "EXEC",
        "GET a",
        // Runtime errors become items of the EXEC reply.
        "MULTI",
        "SET a 2",
        "SETBIT a 4294967296 1",
        "SET a 3 EX 0",
        "SELECT 99",
        "RENAME nothing x",
        "GET a",
        "EXEC",
        // Queue-time errors abort the transaction.
        "MULTI",
        "SET a 4",
        "GET",
        "SET a 5",
        "EXEC",
        "GET a",
        "MULTI",
        "foo bar",
        "EXEC",
        "EXEC",
        // Nested MULTI is an error that does not abort the transaction.
        "MULTI",
        "MULTI",
        "SET a 6",
        "EXEC",
        "GET a",
        // DISCARD.
        "MULTI",
        "SET a 7",
        "DISCARD",
        "GET a",
        "DISCARD",
        "EXEC",
        // Arity of the transaction commands themselves.
        "MULTI x",
        "EXEC x",
        "DISCARD x",
        "MULTI",
        "EXEC x",
        "DISCARD x",
        "EXEC",
        "MULTI",
        "DISCARD x",
        "EXEC",
        // SELECT inside a transaction changes the connection's database.
        "MULTI",
        "SELECT 1",
        "SET x in1",
        "EXEC",
        "GET x",
        "SELECT 0",
        "GET x",
        "multi",
        "set y 1",
        "flushall",
        "dbsize",
        "exec",
    ]);
    // Transactions are per connection.
    let mut other = p.connect();
    p.check_lines(&["MULTI", "SET shared 1"]);
    other.check_lines(&["GET shared", "EXEC", "MULTI", "SET shared 2"]);
    p.check_lines(&["EXEC"]);
    other.check_lines(&["EXEC", "GET shared"]);
    // Binary data through EXEC.
    p.cmd(&["MULTI"]);
    p.cmd(&[&b"SET"[..], b"\x00k", b"\r\n\xff"]);
    p.cmd(&[&b"GET"[..], b"\x00k"]);
    p.cmd(&[&b"EXISTS"[..], b"\x00k", b"shared", b"k"]);
    p.cmd(&["DBSIZE"]);
    p.cmd(&["EXEC"]);
}

#[test]
fn watch_unwatch() {
    let mut p = Pair::new();
    let mut other = p.connect();
    // The commands themselves: arity, WATCH inside MULTI (an error that does
    // not abort the transaction), UNWATCH queued inside MULTI.
    p.check_lines(&[
        "WATCH",
        "UNWATCH x",
        "UNWATCH",
        "MULTI",
        "WATCH a",
        "UNWATCH",
        "EXEC",
        "WATCH a b",
        "WATCH a",
        "EXEC",
        "UNWATCH",
    ]);
    // Which changes by another client fail the watcher's EXEC: (set-up,
    // the other client's commands).
    let cases: &[(&[&str], &[&str])] = &[
        (&["SETBIT k 5 1"], &["SETBIT k 5 1"]),
        (&["SETBIT k 5 1"], &["SETBIT k 6 1"]),
        (&["SETBIT k 5 1"], &["SETBIT k 5 0"]),
        (&["SETBIT k 5 1"], &["SETBIT k 100 0"]),
        (&[], &["SETBIT k 6 0"]),
        (&[], &["DEL k"]),
        (&["SET k x"], &["DEL k"]),
        (&["SET k x"], &["UNLINK k nothing"]),
        (&[], &["FLUSHDB"]),
        (&["SET k x"], &["FLUSHDB"]),
        (&["SET other x"], &["FLUSHDB"]),
        (&["SET k x"], &["FLUSHALL"]),
        (&["SET k x"], &["EXPIRE k 100"]),
        (&["SET k x"], &["EXPIRE k 0"]),
        (&["SET k x"], &["EXPIRE k 100 XX"]),
        (&["SET k x"], &["PERSIST k"]),
        (&["SET k x EX 100"], &["PERSIST k"]),
        (&[], &["BITOP OR k z"]),
        (&["SET z a"], &["BITOP OR k z"]),
        // The same BITOP again: nothing changes, but it counts as a write.
        (&["SET z a", "BITOP OR k z"], &["BITOP OR k z"]),
        (&["SET k x"], &["SET k x"]),
        (&["SET k x"], &["SET k y NX"]),
        (&["SET k x"], &["SET k y XX"]),
        (&["SET k x"], &["GET k", "BITCOUNT k", "EXISTS k", "TTL k"]),
        (&["SET k x"], &["SELECT 1", "SET k y", "SELECT 0"]),
        (&["SET j x"], &["RENAME j k"]),
        (&["SET k x"], &["RENAME k j"]),
        (&["SET k x"], &["RENAME k k"]),
        (&["SET k x", "SET j y"], &["RENAMENX j k"]),
    ];
    for (setup, action) in cases {
        p.check_lines(&["FLUSHALL"]);
        p.check_lines(setup);
        p.check_lines(&["WATCH k"]);
        other.check_lines(action);
        p.check_lines(&["MULTI", "GET k", "SET k done", "EXEC", "GET k"]);
    }
    // Pinned: a change fails EXEC with a null array and runs nothing.
    p.check_lines(&["SET k 1", "WATCH k"]);
    other.check_lines(&["SET k 2"]);
    p.check_lines(&["MULTI", "SET k 3"]);
    p.expect(&["EXEC"], b"*-1\r\n");
    p.expect(&["GET", "k"], b"$1\r\n2\r\n");
    // The watcher's own change counts too; the watch ends with EXEC.
    p.check_lines(&[
        "WATCH k", "SET k 4", "MULTI", "GET k", "EXEC", "MULTI", "GET k", "EXEC",
    ]);
    // UNWATCH, DISCARD and RESET forget the watched keys.
    for forget in [&["UNWATCH"][..], &["MULTI", "DISCARD"], &["RESET"]] {
        p.check_lines(&["WATCH k"]);
        other.check_lines(&["SET k 5"]);
        p.check_lines(forget);
        p.check_lines(&["MULTI", "GET k", "EXEC"]);
    }
    // A queue-time error wins over a changed key (EXECABORT), and ends the
    // watch as well.
    p.check_lines(&["WATCH k"]);
    other.check_lines(&["SET k 6"]);
    p.check_lines(&["MULTI", "GET", "EXEC", "MULTI", "GET k", "EXEC"]);
    // One changed key among several watched, in another database.
    p.check_lines(&["SELECT 2", "WATCH a b c", "SELECT 0"]);
    other.check_lines(&["SELECT 2", "SETBIT b 1 1", "SELECT 0"]);
    p.check_lines(&["MULTI", "PING", "EXEC"]);
    // A key that expires between WATCH and EXEC counts as changed.
    p.check_lines(&["SET t x PX 60", "WATCH t"]);
    std::thread::sleep(std::time::Duration::from_millis(150));
    p.check_lines(&["MULTI", "PING", "EXEC"]);
    // A key that had expired when it was watched: deleting it as expired
    // (by a read, or by DEL) is no change; a new value is.
    for touch in [&["GET t"][..], &["DEL t"], &["SET t y"]] {
        p.check_lines(&["SET t x PX 20"]);
        std::thread::sleep(std::time::Duration::from_millis(80));
        p.check_lines(&["WATCH t"]);
        other.check_lines(touch);
        p.check_lines(&["MULTI", "GET t", "EXEC"]);
    }
    // RESP3: the failed EXEC is a null. (HELLO's reply holds the client
    // id, which differs between the servers.)
    p.both(&["HELLO", "3"]);
    p.check_lines(&["WATCH k"]);
    other.check_lines(&["SET k 8"]);
    p.check_lines(&["MULTI", "GET k", "EXEC"]);
}

// ---------------------------------------------------------------------------
// Errors common to all commands
// ---------------------------------------------------------------------------

#[test]
fn unknown_commands() {
    let mut p = Pair::new();
    p.check_lines(&[
        "foo",
        "FOO",
        "foo a",
        "foo a b c",
        "fOo 'x' \"y\"",
        "SETBITS k 0 1",
        "GET_ k",
    ]);
    let long = "x".repeat(200);
    p.cmd(&["foo", &long]);
    p.cmd(&[long.as_str()]);
    p.cmd(&[long.as_str(), "a"]);
    p.cmd(&["foo", &"y".repeat(100), &"z".repeat(100)]);
    p.cmd(&["foo", &"y".repeat(120), "abcdefghijkl"]);
    p.cmd(&["foo", &"y".repeat(125), "abc"]);
    let many: Vec<String> = (0..60).map(|i| format!("arg{i}")).collect();
    let mut c = vec!["foo".to_string()];
    c.extend(many);
    p.cmd(&c);
    p.cmd(&["foo", ""]);
    p.cmd(&["foo", "", "", ""]);
    p.cmd(&[""]);
    p.cmd(&["", "x"]);
    p.cmd(&["foo bar", "x"]);
    p.cmd(&[&b"foo"[..], b"a\r\nb", b"c\nd"]);
    p.cmd(&[&b"fo\r\no"[..], b"x"]);
    p.cmd(&[&b"foo"[..], b"a\x00b", b"c"]);
    p.cmd(&[&b"fo\x00o"[..], b"x"]);
    p.cmd(&[&b"foo"[..], b"\xff\xfe"]);
    p.cmd(&[&b"\xff"[..]]);
    p.cmd(&["foo", "'quoted'", "%s%n"]);
}

#[test]
fn arity_errors() {
    let mut p = Pair::new();
    p.check_lines(&[
        "PING a b",
        "ECHO",
        "ECHO a b",
        "SELECT",
        "SELECT 1 2",
        "SETBIT k 1",
        "SETBIT k 1 1 1",
        "GETBIT k",
        "GETBIT k 1 1",
        "BITCOUNT",
        "BITPOS k",
        "BITPOS",
        "BITOP AND d",
        "BITOP AND",
        "BITOP",
        "GET",
        "GET a b",
        "SET k",
        "SET",
        "STRLEN",
        "STRLEN a b",
        "DEL",
        "UNLINK",
        "EXISTS",
        "TYPE",
        "TYPE a b",
        "KEYS",
        "KEYS a b",
        "SCAN",
        "DBSIZE x",
        "EXPIRE k",
        "EXPIRE",
        "PEXPIRE k",
        "EXPIREAT k",
        "PEXPIREAT k",
        "TTL",
        "TTL a b",
        "PTTL",
        "PTTL a b",
        "EXPIRETIME",
        "EXPIRETIME a b",
        "PEXPIRETIME",
        "PEXPIRETIME a b",
        "PERSIST",
        "PERSIST a b",
        "MGET",
        "RENAME a",
        "RENAME a b c",
        "RENAMENX a",
        "RENAMENX a b c",
        "MULTI x",
        "EXEC x",
        "DISCARD x",
        // Names are matched case-insensitively; the error uses lower case.
        "get",
        "GeT",
        "sEtBiT k",
        "Expire k",
    ]);
}

/// Integer arguments accept only canonical decimal integers.
#[test]
fn integer_parsing() {
    let mut p = Pair::new();
    p.cmd(&["SET", "k", "value"]);
    let mut cmds = Vec::new();
    let mut odd: Vec<&str> = BAD_INTS.to_vec();
    odd.extend([
        "0",
        "-1",
        "1",
        "9223372036854775807",
        "-9223372036854775808",
    ]);
    for n in odd {
        cmds.push(args!["SELECT", n]);
        cmds.push(args!["SELECT", "0"]);
        cmds.push(args!["GETBIT", "k", n]);
        cmds.push(args!["SETBIT", "x", n, "0"]);
        cmds.push(args!["SETBIT", "x", "1", n]);
        cmds.push(args!["BITCOUNT", "k", n, n]);
        cmds.push(args!["BITPOS", "k", "1", n, n]);
        cmds.push(args!["BITPOS", "k", n]);
        cmds.push(args!["EXPIRE", "k", n, "GT"]);
        cmds.push(args!["TTL", "k"]);
        cmds.push(args!["SET", "k", "value"]);
        cmds.push(args!["SET", "y", "v", "PX", n]);
        // In an empty database SCAN's reply is deterministic.
        cmds.push(args!["SELECT", "9"]);
        cmds.push(args!["SCAN", "0", "COUNT", n]);
        cmds.push(args!["SELECT", "0"]);
    }
    p.check_many(&cmds);
}

#[test]
fn binary_safe_keys_and_values() {
    let mut p = Pair::new();
    let nasty: &[&[u8]] = &[
        b"\x00",
        b"a\x00b",
        b"\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"\xff\xfe\xfd",
        b" ",
        b"\"quoted\"",
        b"$-1",
        b"",
    ];
    for (i, key) in nasty.iter().enumerate() {
        let value = [nasty[(i + 1) % nasty.len()], b"\x00\r\n\xff", key].concat();
        p.cmd(&[&b"SET"[..], key, &value]);
        p.cmd(&[&b"GET"[..], key]);
        p.cmd(&[&b"STRLEN"[..], key]);
        p.cmd(&[&b"EXISTS"[..], key]);
        p.cmd(&[&b"TYPE"[..], key]);
        p.cmd(&[&b"BITCOUNT"[..], key]);
        p.cmd(&[&b"SETBIT"[..], key, b"1", b"1"]);
        p.cmd(&[&b"GETBIT"[..], key, b"1"]);
        p.cmd(&[&b"GET"[..], key]);
    }
    p.check_unordered(&["KEYS", "*"]);
    p.check_scan(&[]);
    p.cmd(&[
        &b"BITOP"[..],
        b"OR",
        b"\x00\r\n",
        b"\x00",
        b"\r\n",
        b"\xff\xfe\xfd",
    ]);
    p.cmd(&[&b"GET"[..], b"\x00\r\n"]);
    p.cmd(&[&b"EXPIRE"[..], b"a\x00b", b"100"]);
    p.cmd(&[&b"TTL"[..], b"a\x00b"]);
    p.cmd(&[&b"TTL"[..], b"a"]);
    p.cmd(&[&b"DEL"[..], b"a\x00b", b"a", b"\x00"]);
    p.cmd(&["DBSIZE"]);
}

// ---------------------------------------------------------------------------
// Protocol level (raw bytes)
// ---------------------------------------------------------------------------

#[test]
fn protocol_pipelining() {
    let p = Pair::new();
    let mut input = Vec::new();
    for i in 0..50 {
        let cmd = match i % 10 {
            0 => args!["SET", format!("k{i}"), format!("v{i}")],
            1 => args!["GET", format!("k{}", i - 1)],
            2 => args!["SETBIT", "bits", i.to_string(), "1"],
            3 => args!["BITCOUNT", "bits"],
            4 => args!["EXISTS", "k0", "k10", "k20", "nope"],
            5 => args!["foo", "bar"],
            6 => args!["GET"],
            7 => args!["PING"],
            8 => args!["SETBIT", "bits", "-1", "1"],
            _ => args!["DBSIZE"],
        };
        input.extend(encode(&cmd));
    }
    let out = p.check_raw(&input);
    assert!(out.starts_with(b"+OK\r\n$2\r\nv0\r\n:0\r\n:1\r\n"));
    // Inline and multibulk commands mixed in one write.
    p.check_raw(b"PING\r\n*1\r\n$4\r\nPING\r\nECHO x\r\n*2\r\n$4\r\nECHO\r\n$1\r\ny\r\nDBSIZE\n");
    // Transactions across one write.
    p.check_raw(b"MULTI\r\nSET t 1\r\nGET t\r\nEXEC\r\nGET t\r\n");
    // A longer pipeline.
    let mut input = Vec::new();
    for i in 0..2000 {
        input.extend(encode(&["SETBIT", "many", &(i * 7).to_string(), "1"]));
    }
    input.extend(encode(&["BITCOUNT", "many"]));
    input.extend(encode(&["STRLEN", "many"]));
    p.check_raw(&input);
}

#[test]
fn protocol_inline_commands() {
    let p = Pair::new();
    for input in [
        &b"PING\r\n"[..],
        b"PING\n",
        b"ping hello\r\n",
        b"  PING   \r\n",
        b"PING   a   b\r\n",
        b"\tPING\t\r\n",
        b"set a \"x y\"\r\nGET a\r\n",
        b"SET b 'single quoted'\r\nGET b\r\n",
        b"ECHO 'it\\'s'\r\n",
        b"ECHO \"\\x41\\x4a\\x7e\"\r\n",
        b"ECHO \"\\x4\"\r\n",
        b"ECHO \"\\xZZ\"\r\n",
        b"ECHO \"a\\nb\\tc\\\\d\\\"e\\rf\\bg\\ah\\qi\"\r\n",
        b"ECHO 'a\\nb\\\\c'\r\n",
        b"ECHO \"\"\r\n",
        b"ECHO ''\r\n",
        b"ECHO \"a\" 'b'\r\n",
        b"ECHO a\"b\"\r\n",
        b"ECHO a'b'\r\n",
        b"\r\n\r\nPING\r\n",
        b"\n\n\nPING\n",
        b"    \r\nPING\r\n",
        b"PI\rNG\r\n",
        b"ECHO a\rb\r\n",
        b"ECHO \"\xff\x01\"\r\n",
        b"GET\r\n",
        b"foo bar\r\n",
        b"SETBIT k 0 1\r\nGETBIT k 0\r\nGET k\r\n",
        b"SET \"\\x00\\xff\" \"\\r\\n\"\r\nGET \"\\x00\\xff\"\r\n",
        b"MULTI\r\nSET m 1\r\nEXEC\r\n",
    ] {
        p.check_raw(input);
    }
    // Unbalanced quotes: an error, then the connection is closed.
    for input in [
        &b"ECHO 'it''s'\r\n"[..],
        b"ECHO \"unbalanced\r\n",
        b"ECHO 'x\r\n",
        b"ECHO \"a\"b\r\n",
        b"ECHO 'a'b\r\n",
        b"PING\r\nECHO \"x\r\nPING\r\n",
        b"SET k \"v\r\nGET k\r\n",
    ] {
        let out = p.check_raw_close(input);
        assert!(
            out.ends_with(b"-ERR Protocol error: unbalanced quotes in request\r\n"),
            "{}",
            esc(&out)
        );
    }
}

#[test]
fn protocol_multibulk_edge_cases() {
    let p = Pair::new();
    for input in [
        &b"*0\r\n"[..],
        b"*-1\r\n",
        b"*-10\r\n",
        b"*0\r\n*0\r\nPING\r\n",
        b"*1\r\n$0\r\n\r\n",
        b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
        b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$0\r\n\r\n*2\r\n$3\r\nGET\r\n$0\r\n\r\n",
        b"*1\r\n$4\r\nping\r\n",
        b"*2\r\n$4\r\nECHO\r\n$6\r\na\r\nb\x00c\r\n",
    ] {
        p.check_raw(input);
    }
}

#[test]
fn protocol_errors_close_connection() {
    let p = Pair::new();
    let cases: Vec<Vec<u8>> = vec![
        b"*1\r\n$999999999999\r\n".to_vec(),
        b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$-1\r\n".to_vec(),
        b"*1\r\n:5\r\n".to_vec(),
        b"*2\r\n$4\r\nECHO\r\n+x\r\n".to_vec(),
        b"*abc\r\n".to_vec(),
        b"*1x\r\n".to_vec(),
        b"*99999999999999\r\n".to_vec(),
        b"*2147483648\r\n".to_vec(),
        b"*1\r\n$abc\r\n".to_vec(),
        b"*1\r\n$-5\r\n".to_vec(),
        b"*1\r\n$\r\n".to_vec(),
        b"*\r\n".to_vec(),
        b"*1\r\n$536870913\r\n".to_vec(),
        // Multibulk lines must end in \r\n.
        b"*1\r\n$4\nPING\r\n".to_vec(),
        b"PING\r\n*1\r\n:5\r\nPING\r\n".to_vec(),
        b"SET a 1\r\n*1\r\n$x\r\nGET a\r\n".to_vec(),
        // Too big inline request: 70 KB without a newline.
        vec![b'a'; 70 * 1024],
        [&b"PING\r\n"[..], &vec![b'b'; 70 * 1024]].concat(),
        // Too big multibulk / bulk count strings.
        [&b"*1"[..], &vec![b'1'; 70 * 1024]].concat(),
        [&b"*1\r\n$"[..], &vec![b'1'; 70 * 1024]].concat(),
    ];
    for input in cases {
        let out = p.check_raw_close(&input);
        assert!(
            out.contains(&b'-'),
            "no error for {}: {}",
            esc(&input),
            esc(&out)
        );
    }
    // An inline request just under the limit is fine.
    let mut input = b"ECHO ".to_vec();
    input.extend(vec![b'c'; 60 * 1024]);
    input.extend_from_slice(b"\r\n");
    p.check_raw(&input);
}

/// QUIT replies +OK and closes; nothing after it is executed.
#[test]
fn quit_closes_connection() {
    let p = Pair::new();
    let out = p.check_raw_close(b"QUIT\r\n");
    assert_reply(&out, b"+OK\r\n", "QUIT");
    p.check_raw_close(b"PING\r\nSET q 1\r\nquit\r\nSET q 2\r\nPING\r\n");
    p.check_raw_close(&encode(&["QUIT"]));
    // No arity check: extra arguments are ignored.
    p.check_raw_close(b"QUIT a b\r\n");
    // Inside MULTI, QUIT is not queued.
    p.check_raw_close(b"MULTI\r\nSET q 3\r\nQUIT\r\n");
    let mut c = p.connect();
    c.check_lines(&["GET q"]);
}

/// Commands split across several writes (timing is the point here).
#[test]
fn protocol_split_writes() {
    let p = Pair::new();
    let pause = Duration::from_millis(2);
    let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    p.check_raw_chunks(&bytes, pause, Until::Sentinel);
    let inline = b"SETBIT s 7 1\r\nGETBIT s 7\r\nECHO \"split quoted\"\r\n";
    let bytes: Vec<&[u8]> = inline.chunks(3).collect();
    p.check_raw_chunks(&bytes, pause, Until::Sentinel);
    // A big bulk argument in pieces.
    let value = vec![b'v'; 100_000];
    let mut big = encode(&[&b"SET"[..], b"big", &value]);
    big.extend(encode(&["STRLEN", "big"]));
    let pieces: Vec<&[u8]> = big.chunks(9_000).collect();
    p.check_raw_chunks(&pieces, pause, Until::Sentinel);
    // Split right after "\r" of a line ending.
    p.check_raw_chunks(
        &[b"*1\r\n$4\r", b"\nPING\r", b"\n"],
        pause,
        Until::Replies(1),
    );
    // An incomplete command leaves no reply: the next write completes it.
    p.check_raw_chunks(
        &[b"*2\r\n$4\r\nECHO\r\n$3\r\nab", b"c\r\nPING\r\n"],
        pause,
        Until::Replies(2),
    );
}

// ---------------------------------------------------------------------------
// Not differential: SCAN guarantees under concurrent writes
// ---------------------------------------------------------------------------

/// Every key present for the whole iteration must be returned, while
/// another connection adds and deletes other keys.
#[test]
fn scan_complete_under_concurrent_writes() {
    let server = ServerProcess::bitmapist(&[]);
    let mut client = server.connect();
    assert_reply(&client.cmd(&[b"FLUSHALL"]), b"+OK\r\n", "FLUSHALL");
    let mut load = Vec::new();
    for i in 0..5000 {
        load.extend(encode(&["SET", &format!("stable:{i}"), "v"]));
    }
    client.send(&load);
    for i in 0..5000 {
        let reply = client.read_reply();
        assert!(
            reply == b"+OK\r\n",
            "reply {} of 5000 pipelined SETs: \"{}\"",
            i + 1,
            esc(&reply)
        );
    }
    assert_reply(&client.cmd(&[b"DBSIZE"]), b":5000\r\n", "DBSIZE");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        let mut writer = server.connect();
        std::thread::spawn(move || {
            let mut ops = 0u64;
            // Bounded: stops when told or after 1,000,000 operations.
            while !stop.load(Ordering::Relaxed) && ops < 1_000_000 {
                let key = format!("churn:{}", ops % 3000);
                // 3000 SETs, then 3000 DELs of the same keys, and so on.
                let args: &[&[u8]] = if (ops / 3000) & 1 == 0 {
                    &[b"SET", key.as_bytes(), b"x"]
                } else {
                    &[b"DEL", key.as_bytes()]
                };
                // A failure here (the server went away) is reported by the
                // main thread; stop quietly.
                let Ok(reply) = writer
                    .try_send(&resp_encode(args))
                    .and_then(|()| writer.try_read_reply())
                else {
                    break;
                };
                assert!(!reply.starts_with(b"-"), "{}", esc(&reply));
                ops += 1;
                done.store(ops, Ordering::Relaxed);
            }
        })
    };
    while done.load(Ordering::Relaxed) < 100 && !writer.is_finished() {
        std::thread::yield_now();
    }
    // Repeat the iteration until the writer made progress during one (the
    // first, almost always).
    let mut seen = BTreeSet::new();
    let mut overlapped = 0;
    for _ in 0..5 {
        let before = done.load(Ordering::Relaxed);
        let keys = scan_keys(&mut client, &[b"COUNT", b"10"]);
        overlapped = done.load(Ordering::Relaxed) - before;
        seen = keys.expect("SCAN iteration").into_iter().collect();
        let missing: Vec<String> = (0..5000)
            .map(|i| format!("stable:{i}"))
            .filter(|k| !seen.contains(k.as_bytes()))
            .collect();
        assert!(
            missing.is_empty(),
            "{} stable keys not returned by SCAN ({overlapped} concurrent writes): {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        if overlapped > 0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");
    assert!(
        overlapped > 0,
        "no write happened during any SCAN iteration"
    );
    // Nothing that never existed is returned.
    for key in &seen {
        assert!(
            key.starts_with(b"stable:") || key.starts_with(b"churn:"),
            "unexpected key {}",
            esc(key)
        );
    }
}
