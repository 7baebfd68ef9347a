//! `bitmapist-server import-bolt` on the Go server's fixture database: every
//! key, bit count, length and TTL of expected.json is served by a server
//! started on the result; absent keys are absent; the Go file is not
//! modified; bad inputs fail with a clear message.

mod common;

use common::{parse_reply, ServerProcess};
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/go-bitmapist-server")
}

fn import(from: &std::path::Path, to: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bitmapist-server"))
        .arg("import-bolt")
        .arg("--from")
        .arg(from)
        .arg("--db")
        .arg(to)
        .output()
        .expect("run import-bolt")
}

#[test]
fn imported_fixture_serves_every_expected_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let go = dir.path().join("go.db");
    std::fs::copy(fixture_dir().join("bitmapist.db"), &go).expect("copy fixture");
    let original = std::fs::read(&go).expect("read");
    let new = dir.path().join("new.db");
    let out = import(&go, &new);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("imported 306 keys") && stdout.contains("verified"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(&go).expect("read"),
        original,
        "the Go database is only read"
    );

    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture_dir().join("expected.json")).expect("expected.json"),
    )
    .expect("json");
    let server = ServerProcess::bitmapist_at(&new, &[]);
    let mut c = server.connect();
    let keys = expected["keys"].as_object().expect("keys");
    assert_eq!(
        c.call(&["DBSIZE"]),
        format!(":{}\r\n", keys.len()).into_bytes()
    );
    for (key, want) in keys {
        let count = want["count"].as_u64().expect("count");
        let max = want["max"].as_u64().expect("max");
        assert_eq!(
            c.call(&["BITCOUNT", key]),
            format!(":{count}\r\n").into_bytes(),
            "{key}"
        );
        // The Go server's GET length: max_bit/8 + 1.
        assert_eq!(
            c.call(&["STRLEN", key]),
            format!(":{}\r\n", max / 8 + 1).into_bytes(),
            "{key}"
        );
        assert_eq!(
            c.call(&["BITPOS", key, "1", "-1", "-1", "BIT"]),
            if max % 8 == 7 {
                format!(":{max}\r\n")
            } else {
                ":-1\r\n".to_string()
            }
            .into_bytes(),
            "{key}: the last bit of the string"
        );
        for bit in want["bits"].as_array().expect("bits") {
            let bit = bit.as_u64().expect("bit");
            assert_eq!(
                c.call(&["GETBIT", key, &bit.to_string()]),
                b":1\r\n",
                "{key} bit {bit}"
            );
        }
        let ttl = parse_reply(&c.call(&["TTL", key])).as_int();
        if want.get("ttl").is_some() {
            // Ten years from 2026-11-23.
            assert!(
                ttl > 9 * 365 * 86400 && ttl < 11 * 365 * 86400,
                "{key}: ttl {ttl}"
            );
        } else {
            assert_eq!(ttl, -1, "{key}");
        }
    }
    // A whole value compared with the Go server's GET semantics.
    let bits: Vec<u64> = keys["trackist_active_2026-11"]["bits"]
        .as_array()
        .expect("bits")
        .iter()
        .filter_map(|b| b.as_u64())
        .filter(|&b| b < 200_000)
        .collect();
    let value = parse_reply(&c.call(&["GET", "trackist_with_ttl"]));
    assert_eq!(
        value.as_bulk(),
        &[0b0000_0111u8],
        "bits 5, 6, 7 in one byte"
    );
    assert!(bits.contains(&0) && bits.contains(&123));
    for key in expected["absent"].as_array().expect("absent") {
        let key = key.as_str().expect("key");
        assert_eq!(c.call(&["EXISTS", key]), b":0\r\n", "{key} must be absent");
    }
}

#[test]
fn bad_inputs_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The target exists already.
    let existing = dir.path().join("exists.db");
    std::fs::write(&existing, b"x").expect("write");
    let out = import(&fixture_dir().join("bitmapist.db"), &existing);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // A truncated Go file.
    let bytes = std::fs::read(fixture_dir().join("bitmapist.db")).expect("fixture");
    let cut = dir.path().join("cut.db");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).expect("write");
    let out = import(&cut, &dir.path().join("a.db"));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert!(!dir.path().join("a.db").exists());
    // Not a bbolt file at all.
    let text = dir.path().join("text.db");
    std::fs::write(&text, vec![b'z'; 20_000]).expect("write");
    let out = import(&text, &dir.path().join("b.db"));
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
}
