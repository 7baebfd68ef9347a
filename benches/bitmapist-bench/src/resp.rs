//! RESP2: encoding commands and parsing replies.
//!
//! The load generator only needs to know where a reply ends and whether it
//! is (or contains) an error ([`skip_reply`]); control connections want the
//! value ([`parse_reply`]).

use std::io::Write;

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(Some(b)) => Some(b),
            Reply::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// A short description for error messages (never the whole of a large bulk).
    pub fn describe(&self) -> String {
        match self {
            Reply::Simple(s) => format!("+{s}"),
            Reply::Error(s) => format!("-{s}"),
            Reply::Int(n) => format!(":{n}"),
            Reply::Bulk(None) => "(nil)".into(),
            Reply::Bulk(Some(b)) if b.len() > 64 => format!("bulk of {} bytes", b.len()),
            Reply::Bulk(Some(b)) => format!("{:?}", String::from_utf8_lossy(b)),
            Reply::Array(None) => "(nil array)".into(),
            Reply::Array(Some(a)) => format!("array of {}", a.len()),
        }
    }
}

/// The reply stream does not follow RESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Appends `args` as a RESP array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(buf: &mut Vec<u8>, args: &[A]) {
    push_len(buf, b'*', args.len());
    for a in args {
        let a = a.as_ref();
        push_len(buf, b'$', a.len());
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
}

/// Appends the header of an array of `n` elements.
pub fn push_array_header(buf: &mut Vec<u8>, n: usize) {
    push_len(buf, b'*', n);
}

/// Appends one bulk string.
pub fn push_bulk(buf: &mut Vec<u8>, a: &[u8]) {
    push_len(buf, b'$', a.len());
    buf.extend_from_slice(a);
    buf.extend_from_slice(b"\r\n");
}

/// Appends one bulk string holding the decimal form of `n`.
pub fn push_bulk_u64(buf: &mut Vec<u8>, n: u64) {
    let mut tmp = [0u8; 20];
    let digits = fmt_u64(n, &mut tmp);
    push_bulk(buf, digits);
}

fn push_len(buf: &mut Vec<u8>, prefix: u8, n: usize) {
    buf.push(prefix);
    let mut tmp = [0u8; 20];
    buf.extend_from_slice(fmt_u64(n as u64, &mut tmp));
    buf.extend_from_slice(b"\r\n");
}

fn fmt_u64(mut n: u64, tmp: &mut [u8; 20]) -> &[u8] {
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &tmp[i..]
}

/// Writes a `SET key <len bytes>` header; the caller writes the value and `\r\n`.
pub fn write_set_header(w: &mut impl Write, key: &[u8], value_len: usize) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(key.len() + 40);
    push_array_header(&mut buf, 3);
    push_bulk(&mut buf, b"SET");
    push_bulk(&mut buf, key);
    push_len(&mut buf, b'$', value_len);
    w.write_all(&buf)
}

/// Finds `\r\n` from `from`; returns the index of `\r`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        match memchr_cr(&buf[i..]) {
            Some(off) => {
                let at = i + off;
                if at + 1 < buf.len() {
                    if buf[at + 1] == b'\n' {
                        return Some(at);
                    }
                    i = at + 1;
                } else {
                    return None;
                }
            }
            None => return None,
        }
    }
    None
}

fn memchr_cr(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\r')
}

fn parse_int(s: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| ProtocolError(format!("bad integer {:?}", String::from_utf8_lossy(s))))
}

/// Where one reply starting at `buf[0]` ends, and whether it is or
/// contains an error. `Ok(None)` means more bytes are needed.
pub fn skip_reply(buf: &[u8]) -> Result<Option<(usize, bool)>, ProtocolError> {
    skip_at(buf, 0, 0)
}

fn skip_at(buf: &[u8], pos: usize, depth: u32) -> Result<Option<(usize, bool)>, ProtocolError> {
    if depth > 8 {
        return Err(ProtocolError("arrays nested too deeply".into()));
    }
    if pos >= buf.len() {
        return Ok(None);
    }
    let Some(eol) = find_crlf(buf, pos + 1) else {
        return Ok(None);
    };
    let line = &buf[pos + 1..eol];
    let next = eol + 2;
    match buf[pos] {
        b'+' | b':' => Ok(Some((next, false))),
        b'-' => Ok(Some((next, true))),
        b'$' => {
            let n = parse_int(line)?;
            if n < 0 {
                return Ok(Some((next, false)));
            }
            let end = next + n as usize + 2;
            if buf.len() < end {
                Ok(None)
            } else {
                Ok(Some((end, false)))
            }
        }
        b'*' => {
            let n = parse_int(line)?;
            let mut at = next;
            let mut err = false;
            for _ in 0..n.max(0) {
                match skip_at(buf, at, depth + 1)? {
                    Some((end, e)) => {
                        at = end;
                        err |= e;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((at, err)))
        }
        other => Err(ProtocolError(format!(
            "unexpected reply type byte {:?}",
            other as char
        ))),
    }
}

/// Parses one reply starting at `buf[0]`: the reply and the bytes it used,
/// or `Ok(None)` when more bytes are needed.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], pos: usize, depth: u32) -> Result<Option<(Reply, usize)>, ProtocolError> {
    if depth > 8 {
        return Err(ProtocolError("arrays nested too deeply".into()));
    }
    if pos >= buf.len() {
        return Ok(None);
    }
    let Some(eol) = find_crlf(buf, pos + 1) else {
        return Ok(None);
    };
    let line = &buf[pos + 1..eol];
    let next = eol + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    match buf[pos] {
        b'+' => Ok(Some((Reply::Simple(text()), next))),
        b'-' => Ok(Some((Reply::Error(text()), next))),
        b':' => Ok(Some((Reply::Int(parse_int(line)?), next))),
        b'$' => {
            let n = parse_int(line)?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            let end = next + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Ok(Some((Reply::Bulk(Some(buf[next..end].to_vec())), end + 2)))
        }
        b'*' => {
            let n = parse_int(line)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), next)));
            }
            let mut items = Vec::with_capacity((n as usize).min(1 << 16));
            let mut at = next;
            for _ in 0..n {
                match parse_at(buf, at, depth + 1)? {
                    Some((r, end)) => {
                        items.push(r);
                        at = end;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        other => Err(ProtocolError(format!(
            "unexpected reply type byte {:?}",
            other as char
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        let mut b = Vec::new();
        encode(&mut b, &["SETBIT", "k", "7", "1"]);
        assert_eq!(
            b,
            b"*4\r\n$6\r\nSETBIT\r\n$1\r\nk\r\n$1\r\n7\r\n$1\r\n1\r\n"
        );
        let mut b = Vec::new();
        push_bulk_u64(&mut b, 1234567890);
        assert_eq!(b, b"$10\r\n1234567890\r\n");
        push_bulk_u64(&mut b, 0);
        assert_eq!(&b[17..], b"$1\r\n0\r\n");
    }

    #[test]
    fn skips_and_parses_every_type() {
        let stream: &[u8] =
            b"+OK\r\n:12\r\n$3\r\nabc\r\n$-1\r\n-ERR x\r\n*3\r\n:1\r\n-ERR y\r\n$0\r\n\r\n*-1\r\n";
        let mut at = 0;
        let mut errs = vec![];
        while at < stream.len() {
            let (end, e) = skip_reply(&stream[at..]).unwrap().unwrap();
            let (_, end2) = parse_reply(&stream[at..]).unwrap().unwrap();
            assert_eq!(end, end2);
            errs.push(e);
            at += end;
        }
        assert_eq!(errs, [false, false, false, false, true, true, false]);
        let (r, _) = parse_reply(b"*2\r\n:1\r\n$2\r\nhi\r\n").unwrap().unwrap();
        assert_eq!(
            r,
            Reply::Array(Some(vec![Reply::Int(1), Reply::Bulk(Some(b"hi".to_vec()))]))
        );
    }

    #[test]
    fn incomplete_replies_ask_for_more() {
        let full: &[u8] = b"*2\r\n$5\r\nhello\r\n:42\r\n";
        for cut in 0..full.len() {
            assert_eq!(skip_reply(&full[..cut]).unwrap(), None, "cut {cut}");
            assert_eq!(parse_reply(&full[..cut]).unwrap(), None, "cut {cut}");
        }
        assert!(skip_reply(full).unwrap().is_some());
        assert!(skip_reply(b"?x\r\n").is_err());
    }
}
