//! redis-benchmark (Debian's redis-tools) runs pipelined SETBIT and GETBIT
//! from 50 clients against the server without a single error reply, and the
//! data it wrote is there afterwards. Throughput is measured in benches/,
//! not asserted here.

mod common;

use common::ServerProcess;
use std::process::Command;

#[test]
fn redis_benchmark_setbit_getbit_pipelined_without_errors() {
    let server = ServerProcess::bitmapist(&[]);
    let port = server.port().to_string();
    for args in [
        &["setbit", "bench:__rand_int__", "4242", "1"][..],
        &["getbit", "bench:__rand_int__", "4242"][..],
    ] {
        let out = Command::new("redis-benchmark")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-c",
                "50",
                "-P",
                "16",
                "-n",
                "200000",
            ])
            .args(["-r", "1000", "-q"])
            .args(args)
            .output()
            .expect("redis-benchmark is installed by tests/run_all.sh (redis-tools)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
        assert!(
            !stderr.contains("Error") && !stdout.contains("Error"),
            "{args:?}: {stdout}\n{stderr}"
        );
        assert!(stdout.contains("requests per second"), "{args:?}: {stdout}");
    }
    // 1,000 random keys were each given bit 4242.
    let mut client = server.connect();
    let keys = common::parse_reply(&client.call(&["KEYS", "bench:*"]));
    assert!(
        keys.as_array().len() > 900,
        "keys written: {}",
        keys.as_array().len()
    );
    for key in keys.as_array().iter().take(50) {
        let bit = client.call(&[b"GETBIT".as_slice(), key.as_bulk(), b"4242"]);
        assert_eq!(bit, b":1\r\n");
    }
}
