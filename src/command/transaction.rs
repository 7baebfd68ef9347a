//! MULTI, EXEC, DISCARD, WATCH and UNWATCH with Redis's rules: queued
//! commands run atomically (under one keyspace lock); a queue-time error
//! aborts EXEC with EXECABORT; a run-time error is one item of EXEC's reply;
//! EXEC after a watched key changed (or expired) runs nothing and replies
//! with a null array.

use super::{table, CmdError, CmdResult, Ctx, Transaction};

pub fn multi(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    if ctx.session.multi.is_some() {
        return Err(CmdError::new("ERR MULTI calls can not be nested"));
    }
    ctx.session.multi = Some(Transaction::new());
    ctx.out.ok();
    Ok(())
}

pub fn discard(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    if ctx.session.multi.take().is_none() {
        return Err(CmdError::new("ERR DISCARD without MULTI"));
    }
    unwatch_all(ctx);
    ctx.out.ok();
    Ok(())
}

pub fn watch(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    if ctx.session.multi.is_some() {
        return Err(CmdError::new("ERR WATCH inside MULTI is not allowed"));
    }
    let (db, client, now) = (ctx.session.db, ctx.session.client.id, ctx.now);
    let ks = ctx.keyspace();
    let added: Vec<_> = argv[1..]
        .iter()
        .filter_map(|key| ks.watch(db, key, client, now))
        .collect();
    ctx.session.watched.extend(added);
    ctx.out.ok();
    Ok(())
}

pub fn unwatch(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    unwatch_all(ctx);
    ctx.out.ok();
    Ok(())
}

/// Forgets the session's watched keys (EXEC, DISCARD, UNWATCH, RESET).
pub fn unwatch_all(ctx: &mut Ctx<'_>) {
    if ctx.session.watched.is_empty() {
        return;
    }
    let watched = std::mem::take(&mut ctx.session.watched);
    let client = ctx.session.client.id;
    ctx.keyspace().watches.unwatch(client, &watched);
}

pub fn exec(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    let Some(tx) = ctx.session.multi.take() else {
        return Err(CmdError::new("ERR EXEC without MULTI"));
    };
    if tx.failed {
        unwatch_all(ctx);
        return Err(CmdError::new(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
    }
    // Take the lock before the first command so the block runs atomically.
    let (client, now) = (ctx.session.client.id, ctx.now);
    let watched = std::mem::take(&mut ctx.session.watched);
    let ks = ctx.keyspace();
    let broken = !watched.is_empty() && ks.watch_broken(client, &watched, now);
    if !watched.is_empty() {
        ks.watches.unwatch(client, &watched);
    }
    if broken {
        ctx.out.null_array();
        return Ok(());
    }
    ctx.out.array(tx.len());
    let mut argv = Vec::new();
    for i in 0..tx.len() {
        let index = tx.command(i, &mut argv);
        match table::lookup(&argv) {
            table::Lookup::Found(_, spec) => super::run(ctx, index, spec, &argv),
            table::Lookup::Error(err) => ctx.out.error_bytes(&err.0),
        }
        ctx.now = crate::keyspace::now_ms();
    }
    tx.recycle();
    Ok(())
}
