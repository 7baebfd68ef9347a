//! Bitmap commands: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP — argument
//! parsing and error precedence as Redis 7.0; the bit semantics live in
//! `keyspace::bitstring`.

use super::args::{self, parse_i64};
use super::{CmdError, CmdResult, Ctx};
use crate::keyspace::{BitOp, RangeUnit};

/// The largest bit offset: Redis's 512 MiB string limit, in bits, minus one.
pub const MAX_BIT_OFFSET: u64 = (512 * 1024 * 1024 * 8) - 1;

fn bit_offset(arg: &[u8]) -> Result<u32, CmdError> {
    parse_i64(arg)
        .filter(|&n| n >= 0 && (n as u64) <= MAX_BIT_OFFSET)
        .map(|n| n as u32)
        .ok_or_else(|| CmdError::new("ERR bit offset is not an integer or out of range"))
}

pub fn setbit(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let offset = bit_offset(argv[2])?;
    let value = match parse_i64(argv[3]) {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(CmdError::new("ERR bit is not an integer or out of range")),
    };
    let now = ctx.now;
    let old = ctx.db().set_bit(argv[1], now, offset, value)?;
    ctx.out.int(i64::from(old));
    Ok(())
}

pub fn getbit(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let offset = bit_offset(argv[2])?;
    let now = ctx.now;
    let bit = ctx
        .db()
        .value(argv[1], now)?
        .is_some_and(|v| v.get_bit(u64::from(offset)));
    ctx.out.int(i64::from(bit));
    Ok(())
}

fn unit(arg: &[u8]) -> Result<RangeUnit, CmdError> {
    if args::is(arg, "byte") {
        Ok(RangeUnit::Byte)
    } else if args::is(arg, "bit") {
        Ok(RangeUnit::Bit)
    } else {
        Err(CmdError::syntax())
    }
}

pub fn bitcount(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let now = ctx.now;
    // Redis looks the key up first: a missing key answers 0 whatever follows.
    let Some(meta) = ctx.db().meta(argv[1], now)? else {
        ctx.out.int(0);
        return Ok(());
    };
    let count = match argv.len() {
        // The directory keeps the cardinality: no bitmap is decoded.
        2 => meta.cardinality,
        4 | 5 => {
            let start = args::int(argv[2])?;
            let end = args::int(argv[3])?;
            let unit = match argv.get(4) {
                Some(u) => unit(u)?,
                None => RangeUnit::Byte,
            };
            match ctx.db().value(argv[1], now)? {
                Some(v) => v.count_range(start, end, unit),
                None => 0,
            }
        }
        _ => return Err(CmdError::syntax()),
    };
    ctx.out.int(count as i64);
    Ok(())
}

pub fn bitpos(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let bit = match args::int(argv[2])? {
        0 => false,
        1 => true,
        _ => return Err(CmdError::new("ERR The bit argument must be 1 or 0.")),
    };
    let now = ctx.now;
    let Some(value) = ctx.db().value(argv[1], now)? else {
        // A missing key is an empty string: no set bit, and the first clear bit is 0.
        ctx.out.int(if bit { -1 } else { 0 });
        return Ok(());
    };
    if argv.len() > 6 {
        return Err(CmdError::syntax());
    }
    // Redis checks the unit before the range.
    let unit = match argv.get(5) {
        Some(u) => unit(u)?,
        None => RangeUnit::Byte,
    };
    let start = argv.get(3).map(|a| args::int(a)).transpose()?;
    let end = argv.get(4).map(|a| args::int(a)).transpose()?;
    let pos = value.position(bit, start, end, unit);
    ctx.out.int(pos);
    Ok(())
}

pub fn bitop(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let op = match argv[1] {
        o if args::is(o, "and") => BitOp::And,
        o if args::is(o, "or") => BitOp::Or,
        o if args::is(o, "xor") => BitOp::Xor,
        o if args::is(o, "not") => BitOp::Not,
        _ => return Err(CmdError::syntax()),
    };
    let sources = &argv[3..];
    if op == BitOp::Not && sources.len() != 1 {
        return Err(CmdError::new(
            "ERR BITOP NOT must be called with a single source key.",
        ));
    }
    let now = ctx.now;
    let done = ctx.db().bitop(op, argv[2], sources, now)?;
    ctx.unchanged = done.from_memo;
    ctx.out.int(done.len as i64);
    Ok(())
}
