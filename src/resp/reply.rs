//! Reply encoding: owns the bytes a connection will write back, in RESP2 or
//! RESP3 as the client chose with HELLO. Replies of a pipelined batch are
//! appended to one buffer and leave in one write.

/// The reply protocol a client speaks (HELLO 2 / HELLO 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// An output buffer with RESP encoders.
#[derive(Debug, Default)]
pub struct ReplyBuf {
    pub buf: Vec<u8>,
    pub protocol: Protocol,
}

impl ReplyBuf {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    fn int_line(&mut self, prefix: u8, n: i64) {
        self.buf.push(prefix);
        self.push_decimal(n);
        self.buf.extend_from_slice(b"\r\n");
    }

    fn push_decimal(&mut self, n: i64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        let mut v = n.unsigned_abs();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if n < 0 {
            self.buf.push(b'-');
        }
        self.buf.extend_from_slice(&tmp[i..]);
    }

    /// `+text` — the text must not contain CR or LF.
    pub fn simple(&mut self, text: &str) {
        self.buf.push(b'+');
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// `-text`: the whole error line including its code (`ERR ...`,
    /// `WRONGTYPE ...`). CR and LF are replaced by spaces, as Redis does.
    pub fn error(&mut self, text: &str) {
        self.error_bytes(text.as_bytes());
    }

    /// An error line of raw bytes (Redis quotes client bytes verbatim).
    pub fn error_bytes(&mut self, text: &[u8]) {
        self.buf.push(b'-');
        let clean = |&b: &u8| if b == b'\r' || b == b'\n' { b' ' } else { b };
        self.buf.extend(text.iter().map(clean));
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.int_line(b':', n);
    }

    pub fn bulk(&mut self, data: &[u8]) {
        self.int_line(b'$', data.len() as i64);
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A bulk string whose body the caller writes itself (e.g. straight from a
    /// bitmap, without an intermediate copy): `write` must append exactly `len` bytes.
    pub fn bulk_with(&mut self, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        self.int_line(b'$', len as i64);
        let start = self.buf.len();
        write(&mut self.buf);
        debug_assert_eq!(self.buf.len() - start, len);
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn bulk_int(&mut self, n: i64) {
        self.bulk(n.to_string().as_bytes());
    }

    /// Null bulk string: `$-1` (RESP2) or `_` (RESP3).
    pub fn null(&mut self) {
        match self.protocol {
            Protocol::Resp2 => self.buf.extend_from_slice(b"$-1\r\n"),
            Protocol::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }

    /// Null array: `*-1` (RESP2) or `_` (RESP3).
    pub fn null_array(&mut self) {
        match self.protocol {
            Protocol::Resp2 => self.buf.extend_from_slice(b"*-1\r\n"),
            Protocol::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }

    pub fn array(&mut self, len: usize) {
        self.int_line(b'*', len as i64);
    }

    /// Puts an array header for `len` items at byte `at`, before items
    /// already written (for replies whose length is known only at the end).
    pub fn insert_array_header(&mut self, at: usize, len: usize) {
        let header = format!("*{len}\r\n");
        let at = at.min(self.buf.len());
        self.buf.splice(at..at, header.bytes());
    }

    /// A map header: `%n` in RESP3, an array of 2n items in RESP2.
    pub fn map(&mut self, pairs: usize) {
        match self.protocol {
            Protocol::Resp2 => self.int_line(b'*', (pairs * 2) as i64),
            Protocol::Resp3 => self.int_line(b'%', pairs as i64),
        }
    }

    /// A set header: `~n` in RESP3, an array in RESP2.
    pub fn set(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.int_line(b'*', len as i64),
            Protocol::Resp3 => self.int_line(b'~', len as i64),
        }
    }

    /// Verbatim text (INFO, CLIENT LIST): `=` with `txt:` in RESP3, bulk in RESP2.
    pub fn verbatim(&mut self, text: &[u8]) {
        match self.protocol {
            Protocol::Resp2 => self.bulk(text),
            Protocol::Resp3 => {
                self.int_line(b'=', text.len() as i64 + 4);
                self.buf.extend_from_slice(b"txt:");
                self.buf.extend_from_slice(text);
                self.buf.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Double: `,` in RESP3, bulk string in RESP2.
    pub fn double(&mut self, text: &str) {
        match self.protocol {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                self.buf.push(b',');
                self.buf.extend_from_slice(text.as_bytes());
                self.buf.extend_from_slice(b"\r\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_resp2_and_resp3() {
        let mut r = ReplyBuf::new();
        r.int(-42);
        r.int(0);
        r.int(i64::MIN);
        r.bulk(b"a\r\nb");
        r.null();
        r.null_array();
        r.map(1);
        r.error("ERR bad\r\nthing");
        assert_eq!(
            r.buf,
            b":-42\r\n:0\r\n:-9223372036854775808\r\n$4\r\na\r\nb\r\n$-1\r\n*-1\r\n*2\r\n-ERR bad  thing\r\n"
        );
        let mut r = ReplyBuf {
            protocol: Protocol::Resp3,
            ..ReplyBuf::default()
        };
        r.null();
        r.map(2);
        r.verbatim(b"x");
        assert_eq!(r.buf, b"_\r\n%2\r\n=5\r\ntxt:x\r\n");
    }

    #[test]
    fn bulk_with_writes_body_in_place() {
        let mut r = ReplyBuf::new();
        r.bulk_with(3, |out| out.extend_from_slice(b"xyz"));
        r.bulk_int(-7);
        assert_eq!(r.buf, b"$3\r\nxyz\r\n$2\r\n-7\r\n");
    }
}
