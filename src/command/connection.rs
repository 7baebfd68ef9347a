//! Connection commands: PING, ECHO, SELECT, QUIT, RESET, HELLO, AUTH and
//! CLIENT ID|GETNAME|SETNAME|SETINFO|LIST|INFO.

use super::args;
use super::{CmdError, CmdResult, Ctx};
use crate::config::REDIS_COMPAT_VERSION;
use crate::keyspace::DATABASES;
use crate::resp::Protocol;
use crate::server::lock;
use std::sync::atomic::Ordering::Relaxed;

pub fn ping(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    match argv.len() {
        1 => ctx.out.simple("PONG"),
        2 => ctx.out.bulk(argv[1]),
        _ => return Err(CmdError::arity("ping")),
    }
    Ok(())
}

pub fn echo(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    ctx.out.bulk(argv[1]);
    Ok(())
}

pub fn select(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let n = args::int(argv[1])?;
    if i32::try_from(n).is_err() {
        return Err(CmdError::new(
            "ERR value is out of range, value must between -2147483648 and 2147483647",
        ));
    }
    if n < 0 || n >= DATABASES as i64 {
        return Err(CmdError::new("ERR DB index is out of range"));
    }
    ctx.session.db = n as usize;
    ctx.session.client.db.store(n as usize, Relaxed);
    ctx.out.ok();
    Ok(())
}

pub fn quit(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    ctx.session.close_after_reply = true;
    ctx.out.ok();
    Ok(())
}

pub fn reset(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    ctx.session.multi = None;
    super::transaction::unwatch_all(ctx);
    ctx.session.db = 0;
    // As in Redis, RESET returns to the default user's unauthenticated state.
    ctx.session.authenticated = ctx.server.config.requirepass.is_none();
    ctx.session.client.db.store(0, Relaxed);
    lock(&ctx.session.client.name).clear();
    set_protocol(ctx, Protocol::Resp2);
    ctx.out.simple("RESET");
    Ok(())
}

fn set_protocol(ctx: &mut Ctx<'_>, protocol: Protocol) {
    ctx.out.protocol = protocol;
    let n = if protocol == Protocol::Resp3 { 3 } else { 2 };
    ctx.session.client.resp.store(n, Relaxed);
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Compares in time that depends on the lengths only, not on where the
/// bytes differ; a length mismatch does not end the loop early.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for i in 0..given.len().max(expected.len()) {
        let a = given.get(i).copied().unwrap_or(0);
        let b = expected.get(i).copied().unwrap_or(0);
        diff |= usize::from(std::hint::black_box(a ^ b));
    }
    std::hint::black_box(diff) == 0
}

/// Checks a user and password against `--requirepass` (only `default`
/// exists); on success the session is authenticated, on failure the
/// attempt is logged with the client's address.
fn authenticate(ctx: &mut Ctx<'_>, password_for: &str, user: &[u8], given: &[u8]) -> CmdResult {
    let ok = constant_time_eq(given, password_for.as_bytes()) & (user == b"default");
    if ok {
        ctx.session.authenticated = true;
        Ok(())
    } else {
        tracing::warn!(
            client = ctx.session.client.id,
            addr = %ctx.session.client.addr,
            user = %String::from_utf8_lossy(user),
            "failed authentication attempt"
        );
        Err(CmdError::new(WRONGPASS))
    }
}

pub fn auth(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    if let Some(password) = ctx.server.config.requirepass.as_deref() {
        let (user, given): (&[u8], &[u8]) = match argv.len() {
            2 => (b"default", argv[1]),
            3 => (argv[1], argv[2]),
            _ => return Err(CmdError::syntax()),
        };
        authenticate(ctx, password, user, given)?;
        ctx.out.ok();
        return Ok(());
    }
    match argv.len() {
        2 => Err(CmdError::new(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        )),
        3 => {
            // No password is configured: the default user accepts any password.
            if argv[1] == b"default" {
                ctx.out.ok();
                Ok(())
            } else {
                Err(CmdError::new(WRONGPASS))
            }
        }
        _ => Err(CmdError::syntax()),
    }
}

pub fn hello(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let mut protocol = None;
    let mut i = 1;
    if argv.len() >= 2 {
        let v = args::parse_i64(argv[1]).ok_or_else(|| {
            CmdError::new("ERR Protocol version is not an integer or out of range")
        })?;
        protocol = match v {
            2 => Some(Protocol::Resp2),
            3 => Some(Protocol::Resp3),
            _ => return Err(CmdError::new("NOPROTO unsupported protocol version")),
        };
        i = 2;
    }
    let mut name = None;
    while i < argv.len() {
        let left = argv.len() - i - 1;
        if args::is(argv[i], "auth") && left >= 2 {
            match ctx.server.config.requirepass.as_deref() {
                Some(password) => authenticate(ctx, password, argv[i + 1], argv[i + 2])?,
                None if argv[i + 1] != b"default" => return Err(CmdError::new(WRONGPASS)),
                None => {}
            }
            i += 3;
        } else if args::is(argv[i], "setname") && left >= 1 {
            name = Some(argv[i + 1]);
            i += 2;
        } else {
            return Err(CmdError::new(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(argv[i])
            )));
        }
    }
    if !ctx.session.authenticated {
        return Err(CmdError::new(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO AUTH <user> <pass> option can be used to authenticate the client and select \
             the RESP protocol version at the same time",
        ));
    }
    if let Some(name) = name {
        set_name(ctx, name)?;
    }
    if let Some(p) = protocol {
        set_protocol(ctx, p);
    }
    let proto = if ctx.out.protocol == Protocol::Resp3 {
        3
    } else {
        2
    };
    let out = &mut *ctx.out;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(REDIS_COMPAT_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(proto);
    out.bulk(b"id");
    out.int(ctx.session.client.id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
    Ok(())
}

fn set_name(ctx: &mut Ctx<'_>, name: &[u8]) -> CmdResult {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(CmdError::new(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    *lock(&ctx.session.client.name) = name.to_vec();
    Ok(())
}

pub fn client_id(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    ctx.out.int(ctx.session.client.id as i64);
    Ok(())
}

pub fn client_getname(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    let name = lock(&ctx.session.client.name).clone();
    if name.is_empty() {
        ctx.out.null();
    } else {
        ctx.out.bulk(&name);
    }
    Ok(())
}

pub fn client_setname(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    set_name(ctx, argv[2])?;
    ctx.out.ok();
    Ok(())
}

pub fn client_setinfo(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let value = argv[3];
    if value.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(CmdError::new(format!(
            "ERR {} cannot contain spaces, newlines or special characters.",
            String::from_utf8_lossy(argv[2])
        )));
    }
    let client = &ctx.session.client;
    if args::is(argv[2], "lib-name") {
        *lock(&client.lib_name) = value.to_vec();
    } else if args::is(argv[2], "lib-ver") {
        *lock(&client.lib_ver) = value.to_vec();
    } else {
        return Err(CmdError::new(format!(
            "ERR Unrecognized option '{}'",
            String::from_utf8_lossy(argv[2])
        )));
    }
    ctx.out.ok();
    Ok(())
}

pub fn client_list(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let mut ids: Option<Vec<u64>> = None;
    let mut i = 2;
    while i < argv.len() {
        if args::is(argv[i], "type") && i + 1 < argv.len() {
            let t = argv[i + 1];
            if !["normal", "master", "replica", "pubsub"]
                .iter()
                .any(|n| args::is(t, n))
            {
                return Err(CmdError::new(format!(
                    "ERR Unknown client type '{}'",
                    String::from_utf8_lossy(t)
                )));
            }
            if !args::is(t, "normal") {
                ids = Some(Vec::new());
            }
            i += 2;
        } else if args::is(argv[i], "id") && i + 1 < argv.len() {
            let mut list = Vec::new();
            for a in &argv[i + 1..] {
                match args::parse_i64(a) {
                    Some(n) if n > 0 => list.push(n as u64),
                    _ => return Err(CmdError::new("ERR Invalid client ID")),
                }
            }
            ids = Some(list);
            i = argv.len();
        } else {
            return Err(CmdError::syntax());
        }
    }
    let now = ctx.now;
    let mut text = String::new();
    for c in ctx.server.clients() {
        if ids.as_ref().is_none_or(|l| l.contains(&c.id)) {
            text.push_str(&c.describe(now));
            text.push('\n');
        }
    }
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

pub fn client_info(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    let mut text = ctx.session.client.describe(ctx.now);
    text.push('\n');
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}
