//! String commands: GET, SET (with every Redis 7.0 option), STRLEN, MGET.
//! Values of any bytes round-trip exactly: a string is kept as its set bits
//! and its byte length.

use super::args;
use super::{CmdError, CmdResult, Ctx};
use crate::keyspace::BitString;
use crate::resp::ReplyBuf;

fn reply_value(out: &mut ReplyBuf, value: Option<&BitString>) {
    match value {
        Some(v) => out.bulk_with(v.len() as usize, |buf| v.write_bytes(buf)),
        None => out.null(),
    }
}

pub fn get(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let now = ctx.now;
    let (mut db, out) = ctx.db_and_out();
    reply_value(out, db.value(argv[1], now)?.as_deref());
    Ok(())
}

pub fn mget(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let now = ctx.now;
    let (mut db, out) = ctx.db_and_out();
    let values: Vec<_> = argv[1..]
        .iter()
        .map(|k| db.value(k, now))
        .collect::<Result<_, _>>()?;
    out.array(values.len());
    for v in &values {
        reply_value(out, v.as_deref());
    }
    Ok(())
}

pub fn strlen(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let now = ctx.now;
    let len = ctx.db().meta(argv[1], now)?.map_or(0, |m| m.len);
    ctx.out.int(len as i64);
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Condition {
    Always,
    IfMissing,
    IfExists,
}

enum Expiry {
    /// Remove any expiry (plain SET).
    Clear,
    /// KEEPTTL.
    Keep,
    /// Absolute Unix milliseconds.
    At(i64),
}

pub fn set(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let mut condition = Condition::Always;
    let mut get = false;
    let mut keep_ttl = false;
    // (unit in ms, absolute?, argument)
    let mut expire: Option<(i64, bool, &[u8])> = None;
    let mut i = 3;
    while i < argv.len() {
        let a = argv[i];
        let next = argv.get(i + 1);
        if args::is(a, "nx") && condition != Condition::IfExists {
            condition = Condition::IfMissing;
        } else if args::is(a, "xx") && condition != Condition::IfMissing {
            condition = Condition::IfExists;
        } else if args::is(a, "get") {
            get = true;
        } else if args::is(a, "keepttl") && expire.is_none() {
            keep_ttl = true;
        } else if let (Some(&value), false) = (next, keep_ttl) {
            let form = if args::is(a, "ex") {
                (1000, false)
            } else if args::is(a, "px") {
                (1, false)
            } else if args::is(a, "exat") {
                (1000, true)
            } else if args::is(a, "pxat") {
                (1, true)
            } else {
                return Err(CmdError::syntax());
            };
            // The same option may repeat (the last wins); two kinds may not.
            if expire.is_some_and(|(unit, absolute, _)| (unit, absolute) != form) {
                return Err(CmdError::syntax());
            }
            expire = Some((form.0, form.1, value));
            i += 1;
        } else {
            return Err(CmdError::syntax());
        }
        i += 1;
    }
    let expiry = match expire {
        None if keep_ttl => Expiry::Keep,
        None => Expiry::Clear,
        Some((unit, absolute, arg)) => {
            let invalid = || CmdError::new("ERR invalid expire time in 'set' command");
            let n = args::int(arg)?;
            if n <= 0 || (unit == 1000 && n > i64::MAX / 1000) {
                return Err(invalid());
            }
            let ms = n * unit;
            if absolute {
                Expiry::At(ms)
            } else {
                Expiry::At(ms.checked_add(ctx.now as i64).ok_or_else(invalid)?)
            }
        }
    };

    let now = ctx.now;
    let mut db = ctx.db();
    let old = db.meta(argv[1], now)?;
    let exists = old.is_some();
    let old_value = if get { db.value(argv[1], now)? } else { None };
    let allowed = match condition {
        Condition::Always => true,
        Condition::IfMissing => !exists,
        Condition::IfExists => exists,
    };
    if allowed {
        let expire_at = match expiry {
            Expiry::Clear => None,
            Expiry::Keep => old.and_then(|m| m.expire_at).map(|t| t as i64),
            Expiry::At(ms) => Some(ms),
        };
        match expire_at {
            Some(at) if at <= now as i64 => {
                // Already in the past (EXAT/PXAT): the key is set and expires at once.
                db.remove(argv[1], now)?;
            }
            at => db.put(
                argv[1],
                BitString::from_bytes(argv[2]),
                at.map(|t| t as u64),
            )?,
        }
    }
    if get {
        reply_value(ctx.out, old_value.as_deref());
    } else if allowed {
        ctx.out.ok();
    } else {
        ctx.out.null();
    }
    Ok(())
}
