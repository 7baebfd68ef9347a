//! When io_uring cannot be used, the server says why in one line and exits
//! non-zero, without a panic. The test blocks io_uring_setup for the child
//! process with a seccomp filter (as Docker's default profile does).

use nix::libc;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Installs a seccomp filter that fails io_uring_setup with `errno`.
fn deny_io_uring(cmd: &mut Command, errno: u32) {
    // SAFETY: pre_exec runs in the forked child; prctl is async-signal-safe
    // and the filter program outlives the call.
    unsafe {
        cmd.pre_exec(move || {
            let filter = [
                // Load the syscall number.
                libc::sock_filter {
                    code: 0x20,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                // io_uring_setup (425 on every architecture's unified table)?
                libc::sock_filter {
                    code: 0x15,
                    jt: 0,
                    jf: 1,
                    k: 425,
                },
                libc::sock_filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: 0x0005_0000 | errno,
                },
                libc::sock_filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: 0x7fff_0000,
                },
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const _,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn run_denied(errno: u32) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bitmapist-server"));
    cmd.args(["--addr", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("bitmapist.db"))
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    deny_io_uring(&mut cmd, errno);
    let out = cmd.output().expect("run the server");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Everything the server printed: it must be one `bitmapist-server: ...` line.
fn error_lines(stderr: &str) -> Vec<&str> {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().all(|l| l.starts_with("bitmapist-server: ")),
        "unexpected output: {stderr}"
    );
    lines
}

#[test]
fn seccomp_eperm_is_named_in_one_line() {
    let (code, stderr) = run_denied(libc::EPERM as u32);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(
        lines[0].contains("io_uring") && lines[0].contains("seccomp"),
        "stderr: {stderr}"
    );
}

#[test]
fn missing_kernel_support_is_named_in_one_line() {
    let (code, stderr) = run_denied(libc::ENOSYS as u32);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(lines[0].contains("ENOSYS"), "stderr: {stderr}");
}
