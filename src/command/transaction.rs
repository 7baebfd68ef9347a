//! MULTI, EXEC, DISCARD with Redis's rules: queued commands run atomically
//! (under one keyspace lock); a queue-time error aborts EXEC with
//! EXECABORT; a run-time error is one item of EXEC's reply.

use super::{table, CmdError, CmdResult, Ctx, Transaction};

pub fn multi(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    if ctx.session.multi.is_some() {
        return Err(CmdError::new("ERR MULTI calls can not be nested"));
    }
    ctx.session.multi = Some(Transaction::default());
    ctx.out.ok();
    Ok(())
}

pub fn discard(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    if ctx.session.multi.take().is_none() {
        return Err(CmdError::new("ERR DISCARD without MULTI"));
    }
    ctx.out.ok();
    Ok(())
}

pub fn exec(ctx: &mut Ctx<'_>, _argv: &[&[u8]]) -> CmdResult {
    let Some(tx) = ctx.session.multi.take() else {
        return Err(CmdError::new("ERR EXEC without MULTI"));
    };
    if tx.failed {
        return Err(CmdError::new(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
    }
    // Take the lock before the first command so the block runs atomically.
    ctx.keyspace();
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
    Ok(())
}
