//! Incremental parsing of client requests (RESP2 multibulk and inline) out of
//! a connection's read buffer, with Redis 7.0's limits and protocol-error texts.
//!
//! [`parse`] looks at the start of the unconsumed buffer and returns one
//! complete request, a run of bytes to drop ([`Parsed::Skip`]), a request that
//! is not complete yet ([`Parsed::Incomplete`], with the buffer length worth
//! waiting for), or a [`ProtocolError`]. It keeps no state: the caller
//! consumes what a result says, and calls again on the rest. Requests are
//! returned one at a time, so valid commands pipelined before a malformed one
//! run first, as in Redis; after an error the caller replies
//! `-ERR <text>\r\n` and closes the connection once that reply is written.
//!
//! Multibulk arguments borrow the buffer (a bulk is never copied); inline
//! arguments are unescaped into owned bytes when they contain quotes, and
//! borrowed otherwise.
//!
//! # Redis 7.0.15 behaviour reproduced (each point checked on a real server)
//!
//! * A request starting with `*` is multibulk; anything else is inline.
//! * Inline: the line ends at the first `\n` (a `\r` right before it is
//!   dropped) and is split like `sdssplitargs`: blanks are `isspace` bytes;
//!   `"..."` knows `\xHH \n \r \t \b \a` and `\<any>`; `'...'` knows only `\'`;
//!   a quote may open mid-argument (`a"b c"` is `ab c`); a closing quote must be
//!   followed by a blank or the end of the line, else "unbalanced quotes".
//!   Empty quoted arguments are kept (`ECHO ""` echoes an empty string); a line
//!   of blanks only is skipped.
//! * Redis finds line ends with `strchr`, which stops at a NUL byte: a NUL in
//!   an inline line, a `*` count line or a `$` length line before its
//!   terminator makes Redis wait until the line is too big (then it answers the
//!   "too big" error). Bulk *data* may contain anything.
//! * Count and length lines end at the first `\r`; the byte after it is
//!   skipped unchecked (`*1\rX$4\r\nPING\r\n` runs PING), as are the two bytes
//!   after bulk data (`$4\r\nPINGxx` runs PING). A line ended by `\n` alone
//!   runs on to the next `\r` and so fails to parse as a number.
//! * Numbers parse as Redis's `string2ll`: no `+`, no leading zeros, no `-0`.
//! * `*0`, `*-1`, `*-5`: skipped without running anything.
//! * Multibulk count above `i32::MAX` (Redis 7.0 uses `INT_MAX`, not 1 Mi):
//!   "invalid multibulk length". Bulk length negative (`$-1` too) or above
//!   `proto-max-bulk-len`: "invalid bulk length".
//! * A bulk length line not starting with `$`: "expected '$', got 'X'", where
//!   `X` is the raw byte (`\r` and `\n` show as a space); this is only decided
//!   once the line's `\r` has arrived.
//! * A line still without its terminator past 64 KiB: "too big inline
//!   request", "too big mbulk count string" or "too big bulk count string".
//!   (Redis decides this on whatever it has buffered, so a longer line whose
//!   `\n` is already in the buffer is accepted; so it is here.)
//!
//! * Before authentication (`Limits::unauthenticated`), Redis's stricter
//!   limits: more than 10 arguments is "unauthenticated multibulk length",
//!   a bulk above 16384 bytes "unauthenticated bulk length".
//!
//! Not handled here: the waiving of `proto-max-bulk-len` for a master link.

use std::borrow::Cow;
use std::fmt;

/// Size limits applied while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk argument (Redis `proto-max-bulk-len`, 512 MiB).
    pub max_bulk_len: usize,
    /// Largest multibulk argument count (Redis 7.0: `INT_MAX`).
    pub max_multibulk_len: usize,
    /// Longest inline line, or count/length line, still waiting for its
    /// terminator (Redis `PROTO_INLINE_MAX_SIZE`, 64 KiB).
    pub max_inline_len: usize,
    /// The client has not authenticated yet (a password is required):
    /// Redis's limits of 10 arguments and 16384-byte bulks apply.
    pub unauthenticated: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as usize,
            max_inline_len: 64 * 1024,
            unauthenticated: false,
        }
    }
}

/// The outcome of one [`parse`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// One complete request: its arguments (non-empty) and how many buffer
    /// bytes it used.
    Request {
        args: Vec<Cow<'a, [u8]>>,
        consumed: usize,
    },
    /// Bytes Redis consumes without running anything (an empty or blank
    /// inline line, `*0\r\n`, `*-1\r\n`...).
    Skip { consumed: usize },
    /// No complete request yet. `need` is the buffer length at which a new
    /// attempt can make progress (a lower bound, at least `buf.len() + 1`):
    /// a bulk still arriving is not re-scanned on every read.
    Incomplete { need: usize },
}

/// A protocol error: the text Redis puts after `-ERR `, as bytes (the
/// "expected '$'" text carries the offending raw byte, which need not be
/// UTF-8). Redis closes the connection after sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub Cow<'static, [u8]>);

impl ProtocolError {
    pub const TOO_BIG_INLINE: &'static [u8] = b"Protocol error: too big inline request";
    pub const UNBALANCED_QUOTES: &'static [u8] = b"Protocol error: unbalanced quotes in request";
    pub const INVALID_MULTIBULK_LENGTH: &'static [u8] = b"Protocol error: invalid multibulk length";
    pub const TOO_BIG_MBULK_COUNT: &'static [u8] = b"Protocol error: too big mbulk count string";
    pub const INVALID_BULK_LENGTH: &'static [u8] = b"Protocol error: invalid bulk length";
    pub const TOO_BIG_BULK_COUNT: &'static [u8] = b"Protocol error: too big bulk count string";
    pub const UNAUTHENTICATED_MULTIBULK_LENGTH: &'static [u8] =
        b"Protocol error: unauthenticated multibulk length";
    pub const UNAUTHENTICATED_BULK_LENGTH: &'static [u8] =
        b"Protocol error: unauthenticated bulk length";

    fn fixed(text: &'static [u8]) -> ProtocolError {
        ProtocolError(Cow::Borrowed(text))
    }

    /// "Protocol error: expected '$', got 'X'", with `X` as Redis prints it.
    fn expected_dollar(got: u8) -> ProtocolError {
        let mut text = b"Protocol error: expected '$', got '".to_vec();
        // Redis's error replies turn CR and LF into spaces.
        text.push(if got == b'\r' || got == b'\n' {
            b' '
        } else {
            got
        });
        text.push(b'\'');
        ProtocolError(Cow::Owned(text))
    }

    /// The error text (without `-ERR ` and `\r\n`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl std::error::Error for ProtocolError {}

/// Parses the request at the start of `buf` (the unconsumed part of a
/// connection's read buffer).
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Result<Parsed<'a>, ProtocolError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete { need: 1 }),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

/// Where a C `strchr(buf + from, target)` would stop.
enum Scan {
    /// The target byte, at this index.
    Found(usize),
    /// A NUL byte came first: Redis sees no line end, however much follows.
    Nul,
    /// Neither yet.
    End,
}

fn scan(buf: &[u8], from: usize, target: u8) -> Scan {
    match buf
        .get(from..)
        .and_then(|rest| rest.iter().position(|&b| b == target || b == 0))
    {
        Some(i) if buf[from + i] == target => Scan::Found(from + i),
        Some(_) => Scan::Nul,
        None => Scan::End,
    }
}

/// The outcome for a line starting at `start` whose terminator has not been
/// seen: an error once more than `max_inline_len` bytes wait, otherwise
/// the buffer length at which to look again.
fn unterminated(
    buf: &[u8],
    start: usize,
    blocked_by_nul: bool,
    limits: &Limits,
    too_big: &'static [u8],
) -> Result<Parsed<'static>, ProtocolError> {
    let waiting = buf.len() - start;
    if waiting > limits.max_inline_len {
        return Err(ProtocolError::fixed(too_big));
    }
    let need = if blocked_by_nul {
        // Nothing but the size limit can change the outcome now.
        start
            .saturating_add(limits.max_inline_len)
            .saturating_add(1)
    } else {
        buf.len() + 1
    };
    Ok(Parsed::Incomplete { need })
}

fn parse_inline<'a>(buf: &'a [u8], limits: &Limits) -> Result<Parsed<'a>, ProtocolError> {
    let newline = match scan(buf, 0, b'\n') {
        Scan::Found(i) => i,
        Scan::Nul => return unterminated(buf, 0, true, limits, ProtocolError::TOO_BIG_INLINE),
        Scan::End => return unterminated(buf, 0, false, limits, ProtocolError::TOO_BIG_INLINE),
    };
    let consumed = newline + 1;
    let line = if newline > 0 && buf[newline - 1] == b'\r' {
        &buf[..newline - 1]
    } else {
        &buf[..newline]
    };
    let args = split_args(line).ok_or(ProtocolError::fixed(ProtocolError::UNBALANCED_QUOTES))?;
    if args.is_empty() {
        Ok(Parsed::Skip { consumed })
    } else {
        Ok(Parsed::Request { args, consumed })
    }
}

/// C `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits an inline line as Redis's `sdssplitargs`; `None` for unbalanced
/// quotes. The line holds no NUL (the line search stops at one).
fn split_args(line: &[u8]) -> Option<Vec<Cow<'_, [u8]>>> {
    let at = |i: usize| line.get(i).copied();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while at(i).is_some_and(is_space) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let start = i;
        // Bytes of the argument, once a quote has made it differ from the line.
        let mut owned: Option<Vec<u8>> = None;
        loop {
            match at(i) {
                // Unquoted text ends at these (not at \v or \f).
                None | Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                Some(q @ (b'"' | b'\'')) => {
                    let cur = owned.get_or_insert_with(|| line[start..i].to_vec());
                    i = if q == b'"' {
                        read_double_quoted(line, i + 1, cur)?
                    } else {
                        read_single_quoted(line, i + 1, cur)?
                    };
                    // `i` is just past the closing quote, at a blank or the end.
                    break;
                }
                Some(b) => {
                    if let Some(cur) = owned.as_mut() {
                        cur.push(b);
                    }
                    i += 1;
                }
            }
        }
        args.push(match owned {
            Some(v) => Cow::Owned(v),
            None => Cow::Borrowed(&line[start..i]),
        });
    }
}

/// Reads the inside of `"..."` from `i` (just past the opening quote) into
/// `out`; returns the index just past the closing quote.
fn read_double_quoted(line: &[u8], mut i: usize, out: &mut Vec<u8>) -> Option<usize> {
    let at = |i: usize| line.get(i).copied();
    loop {
        match at(i)? {
            b'\\' => {
                let hex = at(i + 1) == Some(b'x');
                match (
                    hex,
                    at(i + 2).and_then(hex_value),
                    at(i + 3).and_then(hex_value),
                ) {
                    (true, Some(hi), Some(lo)) => {
                        out.push(hi * 16 + lo);
                        i += 4;
                    }
                    _ => {
                        // A backslash ending the line leaves the quote open.
                        let c = at(i + 1)?;
                        out.push(match c {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => b'\x08',
                            b'a' => b'\x07',
                            c => c,
                        });
                        i += 2;
                    }
                }
            }
            b'"' => return closing_quote(line, i),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// Reads the inside of `'...'` from `i` (just past the opening quote) into
/// `out`; returns the index just past the closing quote.
fn read_single_quoted(line: &[u8], mut i: usize, out: &mut Vec<u8>) -> Option<usize> {
    let at = |i: usize| line.get(i).copied();
    loop {
        match at(i)? {
            b'\\' if at(i + 1) == Some(b'\'') => {
                out.push(b'\'');
                i += 2;
            }
            b'\'' => return closing_quote(line, i),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// A closing quote at `i` must be followed by a blank or the end of the line.
fn closing_quote(line: &[u8], i: usize) -> Option<usize> {
    match line.get(i + 1) {
        Some(&b) if !is_space(b) => None,
        _ => Some(i + 1),
    }
}

/// Redis's `string2ll`: an optional `-`, then `0` alone or digits not starting
/// with `0`, fitting an `i64`.
fn string2ll(s: &[u8]) -> Option<i64> {
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

fn parse_multibulk<'a>(buf: &'a [u8], limits: &Limits) -> Result<Parsed<'a>, ProtocolError> {
    let len = buf.len();
    let cr = match scan(buf, 0, b'\r') {
        Scan::Found(i) => i,
        Scan::Nul => return unterminated(buf, 0, true, limits, ProtocolError::TOO_BIG_MBULK_COUNT),
        Scan::End => {
            return unterminated(buf, 0, false, limits, ProtocolError::TOO_BIG_MBULK_COUNT);
        }
    };
    // Redis wants one byte after the `\r` (it does not check that it is `\n`).
    if cr + 1 >= len {
        return Ok(Parsed::Incomplete { need: len + 1 });
    }
    let count = match string2ll(&buf[1..cr]) {
        Some(n) if n <= 0 => return Ok(Parsed::Skip { consumed: cr + 2 }),
        Some(n) if n > 10 && limits.unauthenticated && n <= i32::MAX as i64 => {
            return Err(ProtocolError::fixed(
                ProtocolError::UNAUTHENTICATED_MULTIBULK_LENGTH,
            ));
        }
        Some(n) if (n as u64) <= limits.max_multibulk_len as u64 => n as u64,
        _ => {
            return Err(ProtocolError::fixed(
                ProtocolError::INVALID_MULTIBULK_LENGTH,
            ));
        }
    };
    let mut pos = cr + 2;
    // Never trust the count for the allocation (Redis caps it the same way).
    let mut args = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let cr = match scan(buf, pos, b'\r') {
            Scan::Found(i) => i,
            Scan::Nul => {
                return unterminated(buf, pos, true, limits, ProtocolError::TOO_BIG_BULK_COUNT);
            }
            Scan::End => {
                return unterminated(buf, pos, false, limits, ProtocolError::TOO_BIG_BULK_COUNT);
            }
        };
        if cr + 1 >= len {
            return Ok(Parsed::Incomplete { need: len + 1 });
        }
        if buf[pos] != b'$' {
            return Err(ProtocolError::expected_dollar(buf[pos]));
        }
        let bulk_len = match string2ll(&buf[pos + 1..cr]) {
            Some(n) if n >= 0 && (n as u64) <= limits.max_bulk_len as u64 => n as usize,
            _ => return Err(ProtocolError::fixed(ProtocolError::INVALID_BULK_LENGTH)),
        };
        if bulk_len > 16384 && limits.unauthenticated {
            return Err(ProtocolError::fixed(
                ProtocolError::UNAUTHENTICATED_BULK_LENGTH,
            ));
        }
        let data = cr + 2;
        // The bulk and the two bytes after it (not checked to be `\r\n`).
        let end = data.saturating_add(bulk_len).saturating_add(2);
        if len < end {
            return Ok(Parsed::Incomplete { need: end });
        }
        args.push(Cow::Borrowed(&buf[data..data + bulk_len]));
        pos = end;
    }
    Ok(Parsed::Request {
        args,
        consumed: pos,
    })
}

/// The first arguments of a complete request, seen by [`skim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skimmed<'a> {
    /// The command name, as sent.
    pub name: &'a [u8],
    /// The second argument, if any (the key of a point request).
    pub key: Option<&'a [u8]>,
    /// The request's length in bytes.
    pub len: usize,
}

/// The most arguments [`skim`] looks through (a point request has at most
/// six), so that a long request still arriving is not walked again on every
/// read.
const SKIM_MAX_ARGS: usize = 8;

/// A look ahead at the complete multibulk request at the start of `buf`:
/// its first two arguments and its length. `None` for anything else (an
/// inline request, one still arriving, one that is not well formed, one of
/// more than [`SKIM_MAX_ARGS`] arguments): the caller stops looking there,
/// and [`parse`] decides what the bytes are. Allocates nothing; never reads
/// past `buf`.
pub fn skim(buf: &[u8]) -> Option<Skimmed<'_>> {
    /// A `<prefix><number>\r\n` line at `at`, its number read as parse
    /// reads it (Redis's `string2ll`): the number and where the next line
    /// starts.
    fn header(buf: &[u8], at: usize, prefix: u8) -> Option<(usize, usize)> {
        if *buf.get(at)? != prefix {
            return None;
        }
        let Scan::Found(cr) = scan(buf, at, b'\r') else {
            return None;
        };
        if buf.get(cr + 1) != Some(&b'\n') {
            return None;
        }
        let n = usize::try_from(string2ll(&buf[at + 1..cr])?).ok()?;
        Some((n, cr + 2))
    }
    let max_bulk = Limits::default().max_bulk_len;
    let (count, mut at) = header(buf, 0, b'*')?;
    if count == 0 || count > SKIM_MAX_ARGS {
        return None;
    }
    let mut first = None;
    let mut key = None;
    for i in 0..count {
        let (len, start) = header(buf, at, b'$')?;
        if len > max_bulk {
            return None;
        }
        let end = start.checked_add(len)?;
        if buf.get(end..end.checked_add(2)?)? != b"\r\n" {
            return None;
        }
        let arg = &buf[start..end];
        match i {
            0 => first = Some(arg),
            1 => key = Some(arg),
            _ => {}
        }
        at = end + 2;
    }
    Some(Skimmed {
        name: first?,
        key,
        len: at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What one call is expected to give, in owned form.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Out {
        Req(Vec<Vec<u8>>, usize),
        Skip(usize),
        Err(Vec<u8>),
    }

    fn owned(r: &Result<Parsed<'_>, ProtocolError>) -> Option<Out> {
        match r {
            Ok(Parsed::Request { args, consumed }) => Some(Out::Req(
                args.iter().map(|a| a.to_vec()).collect(),
                *consumed,
            )),
            Ok(Parsed::Skip { consumed }) => Some(Out::Skip(*consumed)),
            Ok(Parsed::Incomplete { .. }) => None,
            Err(e) => Some(Out::Err(e.0.to_vec())),
        }
    }

    fn lim() -> Limits {
        Limits::default()
    }

    fn req(args: &[&[u8]], consumed: usize) -> Out {
        Out::Req(args.iter().map(|a| a.to_vec()).collect(), consumed)
    }

    fn err(text: &[u8]) -> Out {
        Out::Err(text.to_vec())
    }

    /// Parses `input` whole, and also every prefix: each prefix shorter than
    /// the first one that decides must be Incomplete with a `need` that does
    /// not jump past that point, and every longer prefix decides the same.
    fn check(input: &[u8], want: &Out) {
        let limits = lim();
        let whole = owned(&parse(input, &limits));
        assert_eq!(whole.as_ref(), Some(want), "input {input:?}");
        let decided_at = (0..=input.len())
            .find(|&k| owned(&parse(&input[..k], &limits)).is_some())
            .unwrap_or(input.len());
        for k in 0..decided_at {
            match parse(&input[..k], &limits) {
                Ok(Parsed::Incomplete { need }) => {
                    assert!(need > k, "need {need} <= len {k} for {input:?}");
                    assert!(
                        need <= decided_at,
                        "need {need} skips {decided_at} for {input:?}"
                    );
                }
                other => panic!("prefix {k} of {input:?}: {other:?}"),
            }
        }
        for k in decided_at..=input.len() {
            assert_eq!(
                owned(&parse(&input[..k], &limits)).as_ref(),
                Some(want),
                "prefix {k} of {input:?}"
            );
        }
    }

    /// Runs a whole pipelined buffer through repeated calls.
    fn run_all(input: &[u8], limits: &Limits) -> (Vec<Out>, Option<usize>) {
        let mut outs = Vec::new();
        let mut pos = 0;
        loop {
            let r = parse(&input[pos..], limits);
            match owned(&r) {
                None => {
                    let need = match r {
                        Ok(Parsed::Incomplete { need }) => need,
                        _ => unreachable!(),
                    };
                    return (outs, Some(pos + need));
                }
                Some(o) => {
                    let step = match &o {
                        Out::Req(_, c) | Out::Skip(c) => *c,
                        Out::Err(_) => {
                            outs.push(o);
                            return (outs, None);
                        }
                    };
                    outs.push(o);
                    pos += step;
                }
            }
        }
    }

    /// Feeds `input` in the given chunk sizes, calling `parse` only when
    /// `need` says it can progress, as a connection would.
    fn run_chunked(input: &[u8], chunks: &[usize], limits: &Limits) -> Vec<Out> {
        let mut outs = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut need = 1;
        let mut chunk_iter = chunks.iter().cycle();
        loop {
            if buf.len() >= need {
                let r = parse(&buf, limits);
                match owned(&r) {
                    Some(Out::Err(e)) => {
                        outs.push(Out::Err(e));
                        return outs;
                    }
                    Some(o) => {
                        let c = match &o {
                            Out::Req(_, c) | Out::Skip(c) => *c,
                            Out::Err(_) => unreachable!(),
                        };
                        outs.push(o);
                        buf.drain(..c);
                        need = 1;
                        continue;
                    }
                    None => {
                        if let Ok(Parsed::Incomplete { need: n }) = r {
                            assert!(n > buf.len());
                            need = n;
                        }
                    }
                }
            }
            if fed == input.len() {
                return outs;
            }
            let step = (*chunk_iter.next().unwrap_or(&1)).max(1);
            let end = (fed + step).min(input.len());
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
        }
    }

    /// Requests and their results as redis-server 7.0.15 handled them.
    fn redis_verified() -> Vec<(&'static [u8], Out)> {
        use ProtocolError as E;
        vec![
            // Multibulk.
            (b"*1\r\n$4\r\nPING\r\n", req(&[b"PING"], 14)),
            (
                b"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n",
                req(&[b"ECHO", b"abc"], 23),
            ),
            (b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", req(&[b"ECHO", b""], 20)),
            (b"*1\r\n$0\r\n\r\n", req(&[b""], 10)),
            (b"*1\r\n$4\r\nPI\0G\r\n", req(&[b"PI\0G"], 14)),
            (b"*0\r\n", Out::Skip(4)),
            (b"*-1\r\n", Out::Skip(5)),
            (b"*-5\r\n", Out::Skip(5)),
            (b"*1\rX$4\r\nPING\r\n", req(&[b"PING"], 14)),
            (b"*1\r\n$4\rXPING\r\n", req(&[b"PING"], 14)),
            (b"*1\r\n$4\r\nPINGxx", req(&[b"PING"], 14)),
            (b"*2147483648\r\n", err(E::INVALID_MULTIBULK_LENGTH)),
            (
                b"*99999999999999999999\r\n",
                err(E::INVALID_MULTIBULK_LENGTH),
            ),
            (b"*\r\n", err(E::INVALID_MULTIBULK_LENGTH)),
            (b"*01\r\n", err(E::INVALID_MULTIBULK_LENGTH)),
            (b"*+1\r\n", err(E::INVALID_MULTIBULK_LENGTH)),
            (b"*-0\r\n", err(E::INVALID_MULTIBULK_LENGTH)),
            (b"*PING\r\n", err(E::INVALID_MULTIBULK_LENGTH)),
            (b"*1\n$4\r\nPING\r\n", err(E::INVALID_MULTIBULK_LENGTH)),
            (b"*1\r\n$-1\r\n", err(E::INVALID_BULK_LENGTH)),
            (b"*1\r\n$-0\r\n", err(E::INVALID_BULK_LENGTH)),
            (b"*1\r\n$x\r\n", err(E::INVALID_BULK_LENGTH)),
            (b"*1\r\n$\r\n", err(E::INVALID_BULK_LENGTH)),
            (b"*1\r\n$00\r\n", err(E::INVALID_BULK_LENGTH)),
            (b"*1\r\n$536870913\r\n", err(E::INVALID_BULK_LENGTH)),
            (
                b"*1\r\n$99999999999999999999\r\n",
                err(E::INVALID_BULK_LENGTH),
            ),
            (b"*1\r\n$4\nPING\r\n", err(E::INVALID_BULK_LENGTH)),
            (
                b"*1\r\n:4\r\n",
                err(b"Protocol error: expected '$', got ':'"),
            ),
            (
                b"*1\r\n!4\r\n",
                err(b"Protocol error: expected '$', got '!'"),
            ),
            (
                b"*1\r\n%s\r\n",
                err(b"Protocol error: expected '$', got '%'"),
            ),
            (
                b"*1\r\n\xff4\r\n",
                err(b"Protocol error: expected '$', got '\xff'"),
            ),
            (
                b"*1\r\n\t4\r\n",
                err(b"Protocol error: expected '$', got '\t'"),
            ),
            (b"*1\r\n\r\n", err(b"Protocol error: expected '$', got ' '")),
            (
                b"*1\r\n\r\r\n",
                err(b"Protocol error: expected '$', got ' '"),
            ),
            (
                b"*1\r\n\n4\r\n",
                err(b"Protocol error: expected '$', got ' '"),
            ),
            // Inline.
            (b"PING\r\n", req(&[b"PING"], 6)),
            (b"PING\n", req(&[b"PING"], 5)),
            (b"\r\n", Out::Skip(2)),
            (b"\n", Out::Skip(1)),
            (b"   \r\n", Out::Skip(5)),
            (b"\x0b\x0c\r\n", Out::Skip(4)),
            (b"\r\r\n", Out::Skip(3)),
            (b"$4\r\n", req(&[b"$4"], 4)),
            (b"  ECHO    x  \r\n", req(&[b"ECHO", b"x"], 15)),
            (b"ECHO \"\"\r\n", req(&[b"ECHO", b""], 9)),
            (b"\"\" ''\r\n", req(&[b"", b""], 7)),
            (b"ECHO a\rb\r\n", req(&[b"ECHO", b"a", b"b"], 10)),
            (b"ECHO a\r\r\n", req(&[b"ECHO", b"a"], 9)),
            (b"ECHO a\x0bb\r\n", req(&[b"ECHO", b"a\x0bb"], 10)),
            (b"ECHO a\x0cb\r\n", req(&[b"ECHO", b"a\x0cb"], 10)),
            (b"ECHO\t\"a\"\tb\r\n", req(&[b"ECHO", b"a", b"b"], 12)),
            (b"ECHO \"a\"\x0bb\r\n", req(&[b"ECHO", b"a", b"b"], 12)),
            (b"ECHO \"a\" \r\n", req(&[b"ECHO", b"a"], 11)),
            (b"ECHO \"a\"\r\r\n", req(&[b"ECHO", b"a"], 11)),
            (b"ECHO a\"b\"\r\n", req(&[b"ECHO", b"ab"], 11)),
            (b"ECHO a\"b c\"\r\n", req(&[b"ECHO", b"ab c"], 13)),
            (b"ECHO a'b c'\r\n", req(&[b"ECHO", b"ab c"], 13)),
            (b"ECHO \"x y\" \r\n", req(&[b"ECHO", b"x y"], 13)),
            (b"ECHO \"a\rb\"\r\n", req(&[b"ECHO", b"a\rb"], 12)),
            (
                b"ECHO \"\\x41\\x4a\\x4G\\n\\r\\t\\b\\a\\\\\\\"\\q\"\r\n",
                req(&[b"ECHO", b"AJx4G\n\r\t\x08\x07\\\"q"], 37),
            ),
            (b"ECHO \"\\xAg\"\r\n", req(&[b"ECHO", b"xAg"], 13)),
            (b"ECHO \"\\xff\"\r\n", req(&[b"ECHO", b"\xff"], 13)),
            (b"ECHO \"\\XAB\"\r\n", req(&[b"ECHO", b"XAB"], 13)),
            (b"ECHO 'a\\nb'\r\n", req(&[b"ECHO", b"a\\nb"], 13)),
            (b"ECHO 'it\\'s'\r\n", req(&[b"ECHO", b"it's"], 14)),
            (b"ECHO \"a\"b\r\n", err(E::UNBALANCED_QUOTES)),
            (b"ECHO 'a'b\r\n", err(E::UNBALANCED_QUOTES)),
            (b"ECHO \"a\r\n", err(E::UNBALANCED_QUOTES)),
            (b"ECHO 'a\r\n", err(E::UNBALANCED_QUOTES)),
            (b"ECHO a\"b\"c\r\n", err(E::UNBALANCED_QUOTES)),
            (b"ECHO a'b'c\r\n", err(E::UNBALANCED_QUOTES)),
            (b"ECHO '\\'\\x41\\\\'\r\n", err(E::UNBALANCED_QUOTES)),
            (b"ECHO \"abc\\\"\r\n", err(E::UNBALANCED_QUOTES)),
            (b"ECHO \"abc\\\r\n", err(E::UNBALANCED_QUOTES)),
            (b"ECHO 'abc\\\r\n", err(E::UNBALANCED_QUOTES)),
        ]
    }

    #[test]
    fn redis_verified_cases_at_every_split() {
        for (input, want) in redis_verified() {
            check(input, &want);
        }
    }

    #[test]
    fn pipelines_as_redis_ran_them() {
        use ProtocolError as E;
        let l = lim();
        // Replies from redis-server 7.0.15: +PONG +PONG then the error.
        let (outs, rest) = run_all(b"PING\r\nPING\r\n*x\r\n", &l);
        assert_eq!(
            outs,
            vec![
                req(&[b"PING"], 6),
                req(&[b"PING"], 6),
                err(E::INVALID_MULTIBULK_LENGTH)
            ]
        );
        assert_eq!(rest, None);
        // +PONG +PONG and the connection stays open waiting.
        let (outs, rest) = run_all(b"PING\r\n*1\r\n$4\r\nPING\r\n*1\r\n!", &l);
        assert_eq!(outs, vec![req(&[b"PING"], 6), req(&[b"PING"], 14)]);
        assert_eq!(rest, Some(26));
        // +PONG then expected '$'.
        let (outs, _) = run_all(b"*1\r\n$4\r\nPING\r\n*1\r\n!4\r\n", &l);
        assert_eq!(
            outs,
            vec![
                req(&[b"PING"], 14),
                err(b"Protocol error: expected '$', got '!'")
            ]
        );
        // Skips in between: +PONG +PONG.
        let (outs, _) = run_all(b"*1\r\n$4\r\nPING\r\n*0\r\n*1\r\n$4\r\nPING\r\n", &l);
        assert_eq!(
            outs,
            vec![req(&[b"PING"], 14), Out::Skip(4), req(&[b"PING"], 14)]
        );
        let (outs, _) = run_all(b"*0\r\nPING\r\n*-5\r\nPING\r\n", &l);
        assert_eq!(
            outs,
            vec![
                Out::Skip(4),
                req(&[b"PING"], 6),
                Out::Skip(5),
                req(&[b"PING"], 6)
            ]
        );
        let (outs, _) = run_all(b"\r\n\n\r\nPING\n", &l);
        assert_eq!(
            outs,
            vec![Out::Skip(2), Out::Skip(1), Out::Skip(2), req(&[b"PING"], 5)]
        );
        // Mixed multibulk and inline; a blank line after a request.
        let (outs, _) = run_all(b"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\nPING\r\n \r\n", &l);
        assert_eq!(
            outs,
            vec![
                req(&[b"ECHO", b"abc"], 23),
                req(&[b"PING"], 6),
                Out::Skip(3)
            ]
        );
        // Two whole commands inside one bulk's trailing bytes: +PONG +PONG.
        let (outs, _) = run_all(b"*1\r\n$4\r\nPINGxxPING\r\n", &l);
        assert_eq!(outs, vec![req(&[b"PING"], 14), req(&[b"PING"], 6)]);
    }

    #[test]
    fn nul_blocks_line_ends() {
        use ProtocolError as E;
        let l = lim();
        // redis-server 7.0.15 answers nothing to these and keeps waiting...
        for (input, start) in [
            (&b"PING\0\n"[..], 0usize),
            (b"ECHO a\0b\n", 0),
            (b"*1\0\r\n", 0),
            (b"*1\r\n$4\0\r\nPING\r\n", 4),
            (b"*1\r\n\x004\r\n", 4),
            (b"*1\r\n\0\r\n", 4),
        ] {
            assert_eq!(
                parse(input, &l),
                Ok(Parsed::Incomplete {
                    need: start + l.max_inline_len + 1
                }),
                "{input:?}"
            );
        }
        // ...until the line is too big.
        let mut big = b"PING\0".to_vec();
        big.resize(65_546, b'A');
        assert_eq!(owned(&parse(&big, &l)), Some(err(E::TOO_BIG_INLINE)));
        let mut big = b"*1\0".to_vec();
        big.resize(65_546, b'A');
        assert_eq!(owned(&parse(&big, &l)), Some(err(E::TOO_BIG_MBULK_COUNT)));
    }

    #[test]
    fn too_big_lines() {
        use ProtocolError as E;
        let l = lim();
        let m = 65_536;
        // Verified thresholds (redis-server 7.0.15): waits at 64 KiB, fails above.
        let inline = vec![b'A'; m];
        assert_eq!(parse(&inline, &l), Ok(Parsed::Incomplete { need: m + 1 }));
        let inline = vec![b'A'; m + 1];
        assert_eq!(owned(&parse(&inline, &l)), Some(err(E::TOO_BIG_INLINE)));
        // A longer line whose newline is already there is accepted.
        let mut line = b"ECHO ".to_vec();
        line.resize(70_005, b'A');
        line.push(b'\n');
        match parse(&line, &l) {
            Ok(Parsed::Request { args, consumed }) => {
                assert_eq!(args.len(), 2);
                assert_eq!(args[1].len(), 70_000);
                assert_eq!(consumed, line.len());
            }
            other => panic!("{other:?}"),
        }
        let mut count = b"*".to_vec();
        count.resize(m, b'1');
        assert_eq!(parse(&count, &l), Ok(Parsed::Incomplete { need: m + 1 }));
        count.push(b'1');
        assert_eq!(owned(&parse(&count, &l)), Some(err(E::TOO_BIG_MBULK_COUNT)));
        let mut bulk = b"*2\r\n$4\r\nECHO\r\n$".to_vec();
        let start = bulk.len() - 1;
        bulk.resize(start + m, b'1');
        assert_eq!(
            parse(&bulk, &l),
            Ok(Parsed::Incomplete {
                need: bulk.len() + 1
            })
        );
        bulk.push(b'1');
        assert_eq!(owned(&parse(&bulk, &l)), Some(err(E::TOO_BIG_BULK_COUNT)));
        // The size check comes before the `$` check.
        let mut x = b"*1\r\n".to_vec();
        x.resize(4 + 70_000, b'X');
        assert_eq!(owned(&parse(&x, &l)), Some(err(E::TOO_BIG_BULK_COUNT)));
    }

    #[test]
    fn limits_boundaries() {
        use ProtocolError as E;
        let l = lim();
        // Redis accepts these headers and waits for the rest.
        for input in [
            &b"*2147483647\r\n"[..],
            b"*1048577\r\n",
            b"*1\r\n$536870912\r\n",
        ] {
            assert!(
                matches!(parse(input, &l), Ok(Parsed::Incomplete { .. })),
                "{input:?}"
            );
        }
        assert_eq!(
            parse(b"*1\r\n$536870912\r\n", &l),
            Ok(Parsed::Incomplete {
                need: 16 + 536_870_912 + 2
            })
        );
        let small = Limits {
            max_bulk_len: 3,
            max_multibulk_len: 2,
            max_inline_len: 4,
            unauthenticated: false,
        };
        assert_eq!(
            owned(&parse(b"*1\r\n$3\r\nabc\r\n", &small)),
            Some(req(&[b"abc"], 13))
        );
        assert_eq!(
            owned(&parse(b"*1\r\n$4\r\n", &small)),
            Some(err(E::INVALID_BULK_LENGTH))
        );
        assert_eq!(
            owned(&parse(b"*3\r\n", &small)),
            Some(err(E::INVALID_MULTIBULK_LENGTH))
        );
        assert_eq!(owned(&parse(b"PING", &small)), None);
        assert_eq!(
            owned(&parse(b"PINGS", &small)),
            Some(err(E::TOO_BIG_INLINE))
        );
    }

    #[test]
    fn need_for_a_big_bulk_skips_ahead() {
        let l = lim();
        let mut input = b"*2\r\n$3\r\nSET\r\n$100000000\r\n".to_vec();
        let header = input.len();
        assert_eq!(
            parse(&input, &l),
            Ok(Parsed::Incomplete {
                need: header + 100_000_000 + 2
            })
        );
        input.extend_from_slice(&[b'v'; 65_536]);
        assert_eq!(
            parse(&input, &l),
            Ok(Parsed::Incomplete {
                need: header + 100_000_000 + 2
            })
        );
    }

    #[test]
    fn multibulk_args_borrow_the_buffer() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec();
        match parse(&input, &lim()) {
            Ok(Parsed::Request { args, .. }) => {
                assert!(args.iter().all(|a| matches!(a, Cow::Borrowed(_))));
                let base = input.as_ptr() as usize;
                assert_eq!(args[0].as_ptr() as usize, base + 8);
            }
            other => panic!("{other:?}"),
        }
        match parse(b"GET \"k\" k\r\n", &lim()) {
            Ok(Parsed::Request { args, .. }) => {
                assert!(matches!(args[0], Cow::Borrowed(_)));
                assert!(matches!(args[1], Cow::Owned(_)));
                assert!(matches!(args[2], Cow::Borrowed(_)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            ProtocolError::expected_dollar(b'x').to_string(),
            "Protocol error: expected '$', got 'x'"
        );
        assert_eq!(
            ProtocolError::fixed(ProtocolError::INVALID_BULK_LENGTH).as_bytes(),
            b"Protocol error: invalid bulk length"
        );
    }

    #[test]
    fn string2ll_matches_redis() {
        assert_eq!(string2ll(b"0"), Some(0));
        assert_eq!(string2ll(b"-1"), Some(-1));
        assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"18446744073709551616",
        ] {
            assert_eq!(string2ll(bad), None, "{bad:?}");
        }
    }

    fn encode_multibulk(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Inline encoding: every argument double-quoted, bytes that need it as `\xHH`.
    fn encode_inline(args: &[Vec<u8>], style: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                out.push(if style & 1 == 0 { b' ' } else { b'\t' });
            }
            out.push(b'"');
            for &b in a {
                match b {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    0x20..=0x7e => out.push(b),
                    _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                }
            }
            out.push(b'"');
        }
        out.extend_from_slice(if style < 2 { b"\r\n" } else { b"\n" });
        out
    }

    fn args_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 1..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn multibulk_round_trip(args in args_strategy()) {
            let enc = encode_multibulk(&args);
            check(&enc, &Out::Req(args.clone(), enc.len()));
        }

        /// Whatever `skim` makes of some bytes (a request, cut short, or with
        /// one byte changed), `parse` agrees: a request of the same length,
        /// name and key.
        #[test]
        fn skim_agrees_with_parse(
            args in args_strategy(),
            cut in any::<prop::sample::Index>(),
            flip in any::<Option<(prop::sample::Index, u8)>>(),
        ) {
            let mut enc = encode_multibulk(&args);
            if let Some((at, byte)) = flip {
                let i = at.index(enc.len());
                enc[i] = byte;
            }
            let enc = &enc[..cut.index(enc.len() + 1)];
            if let Some(r) = skim(enc) {
                match parse(enc, &Limits::default()) {
                    Ok(Parsed::Request { args, consumed }) => {
                        prop_assert_eq!(consumed, r.len);
                        prop_assert_eq!(&*args[0], r.name);
                        prop_assert_eq!(args.get(1).map(|a| &**a), r.key);
                    }
                    other => prop_assert!(false, "skim {:?}, parse {:?}", r, other),
                }
            }
        }

        #[test]
        fn inline_round_trip(args in args_strategy(), style in 0u8..4) {
            let enc = encode_inline(&args, style);
            check(&enc, &Out::Req(args.clone(), enc.len()));
        }

        #[test]
        fn pipelines_in_any_chunking(
            reqs in prop::collection::vec((args_strategy(), 0u8..3), 1..6),
            chunks in prop::collection::vec(1usize..40, 1..8),
        ) {
            let mut input = Vec::new();
            let mut want = Vec::new();
            for (args, kind) in &reqs {
                let enc = match kind {
                    0 => encode_multibulk(args),
                    1 => encode_inline(args, 0),
                    _ => b"*0\r\n".to_vec(),
                };
                want.push(if *kind == 2 {
                    Out::Skip(4)
                } else {
                    Out::Req(args.clone(), enc.len())
                });
                input.extend_from_slice(&enc);
            }
            let l = lim();
            let (outs, rest) = run_all(&input, &l);
            prop_assert_eq!(&outs, &want);
            prop_assert_eq!(rest, Some(input.len() + 1));
            prop_assert_eq!(&run_chunked(&input, &chunks, &l), &want);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_are_prefix_consistent(
            input in prop::collection::vec(
                prop::sample::select(b"*$\r\n0123-x\"'\\ \0".to_vec()), 0..30),
        ) {
            let l = Limits { max_bulk_len: 64, max_multibulk_len: 8, max_inline_len: 64, unauthenticated: false };
            // Whatever a prefix decides, a longer buffer decides the same
            // (no "too big" case can arise within 30 bytes), and `need`
            // never jumps past the first length that decides.
            let decided = (0..=input.len()).find(|&k| owned(&parse(&input[..k], &l)).is_some());
            for k in 0..=input.len() {
                let r = parse(&input[..k], &l);
                match decided {
                    Some(d) if k >= d => {
                        prop_assert_eq!(owned(&r), owned(&parse(&input[..d], &l)));
                    }
                    _ => match r {
                        Ok(Parsed::Incomplete { need }) => {
                            prop_assert!(need > k);
                            if let Some(d) = decided {
                                prop_assert!(need <= d);
                            }
                        }
                        other => prop_assert!(false, "{:?}", other),
                    },
                }
            }
            if let Some(Out::Req(args, _)) = owned(&parse(&input, &l)) {
                prop_assert!(!args.is_empty());
            }
        }
    }

    #[test]
    fn skim_finds_the_command_key_and_length_of_complete_multibulk_requests() {
        let two = b"*3\r\n$6\r\nGETBIT\r\n$3\r\nkey\r\n$2\r\n10\r\n*1\r\n$4\r\nPING\r\n";
        let first = skim(two).expect("first");
        assert_eq!(first.name, b"GETBIT");
        assert_eq!(first.key, Some(&b"key"[..]));
        let used = first.len;
        assert_eq!(&two[used..], b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            skim(&two[used..]),
            Some(Skimmed {
                name: b"PING",
                key: None,
                len: 14
            })
        );
        // parse agrees (and on any bytes: `skim_agrees_with_parse`).
        let limits = Limits::default();
        match parse(two, &limits) {
            Ok(Parsed::Request { consumed, .. }) => assert_eq!(consumed, used),
            other => panic!("{other:?}"),
        }
        // Anything else: None, never a panic or a read past the end.
        for bad in [
            &b""[..],
            b"PING\r\n",
            b"*",
            b"*2\r\n$3\r\nGET\r\n",
            b"*2\r\n$3\r\nGET\r\n$3\r\nke",
            b"*1\r\n$3\r\nGETX\r\n",
            b"*1\r\n$-1\r\n",
            b"*0\r\n",
            b"*1\r\n$99999999999999999999\r\n",
            b"*1\r\n$\r\n\r\n",
            // Leading zeros: parse refuses them, as Redis does.
            b"*1\r\n$04\r\nPING\r\n",
            b"*01\r\n$4\r\nPING\r\n",
            // More arguments than a point request has.
            b"*9\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n",
            b"*x\r\n",
        ] {
            assert_eq!(skim(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
