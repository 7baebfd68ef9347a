//! Argument parsing shared by commands: Redis's strict integer syntax
//! (`string2ll`), case-insensitive keywords, and the error texts that go
//! with them.

use super::CmdError;

/// Parses an integer exactly as Redis's `string2ll`: optional `-`, no `+`,
/// no leading zeros (except "0"), no spaces, within i64.
pub fn parse_i64(arg: &[u8]) -> Option<i64> {
    let (negative, digits) = match arg {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, arg),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if value > i64::MAX as u64 + 1 {
            None
        } else {
            Some((value as i64).wrapping_neg())
        }
    } else {
        i64::try_from(value).ok()
    }
}

/// An integer argument, or Redis's "value is not an integer" error.
pub fn int(arg: &[u8]) -> Result<i64, CmdError> {
    parse_i64(arg).ok_or_else(CmdError::not_integer)
}

/// A SCAN cursor as Redis reads it (`strtoul`: leading spaces, a sign, and
/// wrap-around for negative numbers are accepted; trailing garbage is not).
pub fn scan_cursor(arg: &[u8]) -> Result<u64, CmdError> {
    let invalid = || CmdError::new("ERR invalid cursor");
    // Redis rejects leading white space (which strtoul alone would skip).
    if arg
        .first()
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
    {
        return Err(invalid());
    }
    let mut i = 0;
    let mut negative = false;
    if i < arg.len() && (arg[i] == b'+' || arg[i] == b'-') {
        negative = arg[i] == b'-';
        i += 1;
    }
    let digits = &arg[i..];
    let digit_count = digits.iter().take_while(|d| d.is_ascii_digit()).count();
    if digit_count == 0 {
        // strtoul converted nothing: the end pointer is the start of the string.
        return if arg.is_empty() {
            Ok(0)
        } else {
            Err(invalid())
        };
    }
    if digit_count != digits.len() {
        return Err(invalid());
    }
    let mut value: u64 = 0;
    for &d in digits {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or_else(invalid)?;
    }
    Ok(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

/// Case-insensitive keyword comparison.
pub fn is(arg: &[u8], keyword: &str) -> bool {
    arg.eq_ignore_ascii_case(keyword.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_integers() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"01",
            b"-0",
            b"+1",
            b" 1",
            b"1 ",
            b"1x",
            b"9223372036854775808",
            b"-9223372036854775809",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", bad.escape_ascii().to_string());
        }
    }

    #[test]
    fn cursors_like_strtoul() {
        assert_eq!(scan_cursor(b"0").ok(), Some(0));
        assert_eq!(scan_cursor(b"").ok(), Some(0));
        assert_eq!(scan_cursor(b"-1").ok(), Some(u64::MAX));
        assert_eq!(scan_cursor(b"+7").ok(), Some(7));
        assert!(scan_cursor(b" 7").is_err());
        assert_eq!(scan_cursor(b"18446744073709551615").ok(), Some(u64::MAX));
        assert!(scan_cursor(b"18446744073709551616").is_err());
        assert!(scan_cursor(b"x").is_err());
        assert!(scan_cursor(b"1x").is_err());
        assert!(scan_cursor(b" ").is_err());
    }
}
