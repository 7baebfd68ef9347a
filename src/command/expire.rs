//! Expiry commands: EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT (NX/XX/GT/LT),
//! TTL, PTTL, EXPIRETIME, PEXPIRETIME, PERSIST — with Redis 7.0's overflow
//! checks, rounding and option errors.

use super::args;
use super::{CmdError, CmdResult, Ctx};

#[derive(Default)]
struct Conditions {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

fn conditions(options: &[&[u8]]) -> Result<Conditions, CmdError> {
    let mut c = Conditions::default();
    for opt in options {
        if args::is(opt, "nx") {
            c.nx = true;
        } else if args::is(opt, "xx") {
            c.xx = true;
        } else if args::is(opt, "gt") {
            c.gt = true;
        } else if args::is(opt, "lt") {
            c.lt = true;
        } else {
            return Err(CmdError::new(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    if c.nx && (c.xx || c.gt || c.lt) {
        return Err(CmdError::new(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if c.gt && c.lt {
        return Err(CmdError::new(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    Ok(c)
}

/// The EXPIRE family: `unit_ms` is 1000 for seconds; `relative` adds now.
fn expire_generic(
    ctx: &mut Ctx<'_>,
    argv: &[&[u8]],
    name: &str,
    unit_ms: i64,
    relative: bool,
) -> CmdResult {
    let cond = conditions(&argv[3..])?;
    let mut when = args::int(argv[2])?;
    let invalid = || CmdError::new(format!("ERR invalid expire time in '{name}' command"));
    if unit_ms == 1000 {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return Err(invalid());
        }
        when *= 1000;
    }
    if relative {
        when = when.checked_add(ctx.now as i64).ok_or_else(invalid)?;
    }
    let now = ctx.now;
    let mut db = ctx.db();
    let Some(meta) = db.meta(argv[1], now)? else {
        ctx.out.int(0);
        return Ok(());
    };
    let current = meta.expire_at.map(|t| t as i64);
    let refused = (cond.nx && current.is_some())
        || (cond.xx && current.is_none())
        || (cond.gt && current.is_none_or(|c| when <= c))
        || (cond.lt && current.is_some_and(|c| when >= c));
    if refused {
        ctx.out.int(0);
        return Ok(());
    }
    if when <= now as i64 {
        db.remove(argv[1], now)?;
    } else {
        db.set_expire(argv[1], Some(when as u64), now)?;
    }
    ctx.out.int(1);
    Ok(())
}

pub fn expire(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    expire_generic(ctx, argv, "expire", 1000, true)
}

pub fn pexpire(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    expire_generic(ctx, argv, "pexpire", 1, true)
}

pub fn expireat(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    expire_generic(ctx, argv, "expireat", 1000, false)
}

pub fn pexpireat(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    expire_generic(ctx, argv, "pexpireat", 1, false)
}

/// TTL family: `ms` for milliseconds, `absolute` for the *TIME variants.
fn ttl_generic(ctx: &mut Ctx<'_>, argv: &[&[u8]], ms: bool, absolute: bool) -> CmdResult {
    let now = ctx.now;
    let reply = match ctx.db().meta(argv[1], now)? {
        None => -2,
        Some(m) => match m.expire_at {
            None => -1,
            Some(at) => {
                let t = if absolute { at } else { at.saturating_sub(now) };
                // Unsigned, as Redis's arithmetic ends up for the largest expiries.
                (if ms { t } else { t.saturating_add(500) / 1000 }) as i64
            }
        },
    };
    ctx.out.int(reply);
    Ok(())
}

pub fn ttl(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    ttl_generic(ctx, argv, false, false)
}

pub fn pttl(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    ttl_generic(ctx, argv, true, false)
}

pub fn expiretime(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    ttl_generic(ctx, argv, false, true)
}

pub fn pexpiretime(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    ttl_generic(ctx, argv, true, true)
}

pub fn persist(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let now = ctx.now;
    let mut db = ctx.db();
    let had_ttl = db
        .meta(argv[1], now)?
        .is_some_and(|m| m.expire_at.is_some());
    if had_ttl {
        db.set_expire(argv[1], None, now)?;
    }
    ctx.out.int(i64::from(had_ttl));
    Ok(())
}
