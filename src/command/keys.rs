//! Generic key commands: DEL, UNLINK, EXISTS, TYPE, KEYS, SCAN, RENAME,
//! RENAMENX.

use super::args;
use super::{CmdError, CmdResult, Ctx};
use std::ops::ControlFlow;

pub fn del(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let now = ctx.now;
    let mut db = ctx.db();
    let mut deleted = 0;
    for k in &argv[1..] {
        deleted += usize::from(db.remove(k, now)?);
    }
    ctx.out.int(deleted as i64);
    Ok(())
}

pub fn exists(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let now = ctx.now;
    let mut db = ctx.db();
    let mut found = 0;
    for k in &argv[1..] {
        found += usize::from(db.contains(k, now)?);
    }
    ctx.out.int(found as i64);
    Ok(())
}

pub fn type_(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let now = ctx.now;
    let exists = ctx.db().contains(argv[1], now)?;
    ctx.out.simple(if exists { "string" } else { "none" });
    Ok(())
}

/// KEYS writes each match straight into the reply (no list of keys is
/// built) and stops once the reply passes `--client-output-buffer-limit`:
/// the connection then closes the client instead of sending it, so a huge
/// KEYS costs at most the limit in memory.
pub fn keys(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let now = ctx.now;
    let limit = ctx.server.config.output_buffer_limit();
    let (db, out) = ctx.db_and_out();
    let start = out.len();
    let mut count = 0usize;
    db.visit_keys(argv[1], now, &mut |k| {
        out.bulk(k);
        count += 1;
        if out.len() > limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    out.insert_array_header(start, count);
    Ok(())
}

pub fn scan(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let cursor = args::scan_cursor(argv[1])?;
    let mut count = 10usize;
    let mut pattern: Option<&[u8]> = None;
    let mut strings_only_excluded = false;
    let mut i = 2;
    while i < argv.len() {
        let has_value = argv.len() - i >= 2;
        let a = argv[i];
        if args::is(a, "count") && has_value {
            let n = args::int(argv[i + 1])?;
            if n < 1 {
                return Err(CmdError::syntax());
            }
            count = usize::try_from(n).unwrap_or(usize::MAX);
        } else if args::is(a, "match") && has_value {
            pattern = Some(argv[i + 1]).filter(|p| *p != b"*");
        } else if args::is(a, "type") && has_value {
            // Every key here is a string: any other type matches nothing.
            strings_only_excluded = !args::is(argv[i + 1], "string");
        } else {
            return Err(CmdError::syntax());
        }
        i += 2;
    }
    let (next, keys) = if strings_only_excluded {
        (0, Vec::new())
    } else {
        let now = ctx.now;
        let db = ctx.session.db;
        ctx.keyspace().scan(db, cursor, count, pattern, now)?
    };
    ctx.out.array(2);
    ctx.out.bulk(next.to_string().as_bytes());
    ctx.out.array(keys.len());
    for k in &keys {
        ctx.out.bulk(k);
    }
    Ok(())
}

/// RENAME and RENAMENX. Returns whether the rename happened.
fn rename_generic(ctx: &mut Ctx<'_>, argv: &[&[u8]], nx: bool) -> Result<bool, CmdError> {
    let (src, dst) = (argv[1], argv[2]);
    let now = ctx.now;
    let mut db = ctx.db();
    if !db.contains(src, now)? {
        return Err(CmdError::new("ERR no such key"));
    }
    if src == dst {
        return Ok(!nx);
    }
    if nx && db.contains(dst, now)? {
        return Ok(false);
    }
    db.rename(src, dst, now)?;
    Ok(true)
}

pub fn rename(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    rename_generic(ctx, argv, false)?;
    ctx.out.ok();
    Ok(())
}

pub fn renamenx(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    let renamed = rename_generic(ctx, argv, true)?;
    ctx.out.int(i64::from(renamed));
    Ok(())
}
