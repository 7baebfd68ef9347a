//! Redis's glob pattern language, as used by `KEYS` and `SCAN ... MATCH`.
//!
//! This module owns matching a key against a pattern exactly as Redis 7.0's
//! `stringmatchlen(pattern, key, nocase = 0)` does, and deriving the literal
//! prefix every match must start with (so a caller can restrict a scan of an
//! ordered keyspace to one range).
//!
//! # The language
//!
//! * `*` matches any run of bytes, `/` included; consecutive `*` act as one.
//! * `?` matches any one byte.
//! * `[...]` matches one byte from a class: single bytes, ranges `a-z`, escapes
//!   `\x` (the byte `x`), and a leading `^` negates the class.
//! * `\x` outside a class matches the byte `x`.
//! * Every other byte (NUL and bytes from 0x80 up included) matches itself.
//!
//! # Redis's quirks, all reproduced (each was checked against redis-server 7.0.15)
//!
//! * An empty subject matches only the empty pattern: `**`, `*` and `[^` do not
//!   match the empty key. (`KEYS *` and `SCAN` without `MATCH *` still list the
//!   empty key because Redis skips matching when the pattern is exactly `*`;
//!   callers must do the same, see [`matches_everything`].)
//! * A class missing its `]` runs to the end of the pattern: `[abc` is `[abc]`.
//!   `[` alone matches nothing and `[^` alone matches any one byte.
//! * `[]` is an empty class and matches nothing; `[^]` matches any byte.
//! * A range is `x-y` wherever a byte is followed by `-` and one more byte,
//!   and that third byte is taken literally even if it is `]` or `\`:
//!   `[a-]` is the range `]`..=`a`, and the class then goes on to the next `]`.
//! * Reversed ranges are swapped: `[z-a]` is `[a-z]`.
//! * Range bounds are compared as C `char`, which is signed on x86-64: bytes
//!   from 0x80 up sort *below* 0x00, so `[a-\xff]` matches `\x00..=a` and
//!   `\xff` but not `b` or `\x80`.
//! * `\` as the last byte of a pattern (or of a class) is a literal backslash.
//! * A `-` at either edge of a class (`[-a]`, `[a-]` at the end of the
//!   pattern) is only literal where no byte follows to make a range.
//! * Redis stops recursing past 1000 nested `*`: a pattern with more than 1000
//!   groups of `*` followed by something that is not `*` matches nothing.
//!
//! # Cost
//!
//! A pattern is compiled into tokens where every token other than `*` matches
//! exactly one byte; matching then uses the backtrack-to-the-last-star loop,
//! which is exact for such tokens and takes O(pattern × subject) time in the
//! worst case (never exponential, unlike Redis's own recursion).

/// Redis gives up on a pattern that would recurse deeper than this many `*`.
const MAX_STAR_NESTING: usize = 1000;

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// One or more consecutive `*`.
    Star,
    /// `?`: any one byte.
    Any,
    /// A literal byte (possibly from an escape).
    Byte(u8),
    /// A class, already negated if it had `^`: bit `b` set means byte `b` matches.
    Class(Box<[u64; 4]>),
}

impl Token {
    #[inline]
    fn matches_byte(&self, b: u8) -> bool {
        match self {
            Token::Star => false,
            Token::Any => true,
            Token::Byte(x) => *x == b,
            Token::Class(set) => set[usize::from(b >> 6)] & (1u64 << (b & 63)) != 0,
        }
    }
}

/// A compiled pattern, for matching many subjects against one pattern
/// (e.g. every key in a `KEYS` or `SCAN MATCH` run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
    /// The pattern was empty (it then matches only the empty subject).
    empty: bool,
    /// More than [`MAX_STAR_NESTING`] star groups precede the last non-star
    /// token, so Redis would never report a match.
    too_deep: bool,
}

fn set_bit(set: &mut [u64; 4], b: u8) {
    set[usize::from(b >> 6)] |= 1u64 << (b & 63);
}

impl Pattern {
    /// Compiles `pattern`. Any byte string is a valid pattern.
    pub fn new(pattern: &[u8]) -> Pattern {
        let p = pattern;
        let n = p.len();
        let mut tokens: Vec<Token> = Vec::new();
        let mut i = 0;
        while i < n {
            match p[i] {
                b'*' => {
                    while i < n && p[i] == b'*' {
                        i += 1;
                    }
                    tokens.push(Token::Star);
                    continue;
                }
                b'?' => tokens.push(Token::Any),
                b'[' => {
                    i += 1;
                    let negate = i < n && p[i] == b'^';
                    if negate {
                        i += 1;
                    }
                    let mut set = [0u64; 4];
                    loop {
                        if i + 1 < n && p[i] == b'\\' {
                            // Escape inside a class (needs a byte after it).
                            i += 1;
                            set_bit(&mut set, p[i]);
                        } else if i < n && p[i] == b']' {
                            break;
                        } else if i >= n {
                            // Unterminated class: it ends with the pattern.
                            // Step back so the shared `i += 1` lands on `n`.
                            i -= 1;
                            break;
                        } else if i + 2 < n && p[i + 1] == b'-' {
                            // Range, compared as signed C chars.
                            let (mut lo, mut hi) = (p[i] as i8, p[i + 2] as i8);
                            if lo > hi {
                                std::mem::swap(&mut lo, &mut hi);
                            }
                            for c in lo..=hi {
                                set_bit(&mut set, c as u8);
                            }
                            i += 2;
                        } else {
                            set_bit(&mut set, p[i]);
                        }
                        i += 1;
                    }
                    if negate {
                        for w in set.iter_mut() {
                            *w = !*w;
                        }
                    }
                    tokens.push(Token::Class(Box::new(set)));
                }
                b'\\' => {
                    // A trailing backslash is a literal backslash.
                    if i + 1 < n {
                        i += 1;
                    }
                    tokens.push(Token::Byte(p[i]));
                }
                b => tokens.push(Token::Byte(b)),
            }
            i += 1;
        }
        // Star groups that Redis enters by recursion: all but a trailing one.
        let mut stars = tokens.iter().filter(|t| **t == Token::Star).count();
        if tokens.last() == Some(&Token::Star) {
            stars -= 1;
        }
        Pattern {
            tokens,
            empty: n == 0,
            too_deep: stars > MAX_STAR_NESTING,
        }
    }

    /// Whether `subject` matches, exactly as Redis 7.0's `stringmatchlen`.
    pub fn matches(&self, subject: &[u8]) -> bool {
        if subject.is_empty() {
            // Redis's loop never runs on an empty subject: only an empty
            // pattern is left fully consumed.
            return self.empty;
        }
        if self.too_deep {
            return false;
        }
        let t = &self.tokens;
        let (mut ti, mut si) = (0usize, 0usize);
        // Token index of the last `*` seen and where its match currently ends.
        let mut star: Option<(usize, usize)> = None;
        while si < subject.len() {
            match t.get(ti) {
                Some(Token::Star) => {
                    star = Some((ti, si));
                    ti += 1;
                }
                Some(tok) if tok.matches_byte(subject[si]) => {
                    ti += 1;
                    si += 1;
                }
                _ => match star {
                    // Let the last `*` swallow one more byte and retry.
                    Some((st, ss)) => {
                        star = Some((st, ss + 1));
                        ti = st + 1;
                        si = ss + 1;
                    }
                    None => return false,
                },
            }
        }
        while t.get(ti) == Some(&Token::Star) {
            ti += 1;
        }
        ti == t.len()
    }
}

/// Whether `subject` matches `pattern`, exactly as Redis 7.0's
/// `stringmatchlen(pattern, subject, nocase = 0)`.
///
/// Note that this is false for an empty subject unless the pattern is empty,
/// as in Redis; `KEYS`/`SCAN` callers check [`matches_everything`] first.
pub fn matches(pattern: &[u8], subject: &[u8]) -> bool {
    Pattern::new(pattern).matches(subject)
}

/// Whether Redis skips matching altogether for this pattern (`KEYS` and
/// `SCAN MATCH` treat exactly `*` as "every key", the empty key included).
pub fn matches_everything(pattern: &[u8]) -> bool {
    pattern == b"*"
}

/// The unescaped literal prefix every subject matching `pattern` starts with:
/// the pattern up to its first `*`, `?` or `[`, with each `\x` giving `x`
/// (and a trailing lone `\` giving `\`).
pub fn literal_prefix(pattern: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' | b'?' | b'[' => break,
            b'\\' if i + 1 < pattern.len() => {
                out.push(pattern[i + 1]);
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference: a direct, slow, recursive reading of the semantics on the
    /// raw pattern bytes (no tokens), written from the description of Redis's
    /// behaviour rather than from the compiled form above.
    fn reference(p: &[u8], s: &[u8]) -> bool {
        if s.is_empty() {
            return p.is_empty();
        }
        ref_rec(p, s, 0)
    }

    /// Byte `i` of the pattern, with the C string terminator past the end.
    fn at(p: &[u8], i: usize) -> u8 {
        p.get(i).copied().unwrap_or(0)
    }

    /// Parses the single-byte element at `p[0]`; returns whether it accepts
    /// `c` and how many pattern bytes it spans. `p` is non-empty and does
    /// not start with `*`.
    fn ref_element(p: &[u8], c: u8) -> (bool, usize) {
        match p[0] {
            b'?' => (true, 1),
            b'\\' if p.len() >= 2 => (p[1] == c, 2),
            b'[' => {
                let mut j = 1;
                let negate = at(p, j) == b'^';
                if negate {
                    j += 1;
                }
                let mut hit = false;
                let end = loop {
                    let rest = p.len().saturating_sub(j);
                    if rest >= 2 && p[j] == b'\\' {
                        hit |= p[j + 1] == c;
                        j += 2;
                    } else if rest >= 1 && p[j] == b']' {
                        break j + 1;
                    } else if rest == 0 {
                        break p.len();
                    } else if rest >= 3 && p[j + 1] == b'-' {
                        let a = i32::from(p[j] as i8);
                        let b = i32::from(p[j + 2] as i8);
                        let x = i32::from(c as i8);
                        hit |= a.min(b) <= x && x <= a.max(b);
                        j += 3;
                    } else {
                        hit |= p[j] == c;
                        j += 1;
                    }
                };
                (hit != negate, end)
            }
            b => (b == c, 1),
        }
    }

    /// `s` is non-empty on every call; `depth` counts star recursion.
    fn ref_rec(p: &[u8], s: &[u8], depth: usize) -> bool {
        if depth > MAX_STAR_NESTING {
            return false;
        }
        if p.is_empty() {
            return false;
        }
        if p[0] == b'*' {
            let mut k = 0;
            while k < p.len() && p[k] == b'*' {
                k += 1;
            }
            let rest = &p[k..];
            if rest.is_empty() {
                return true;
            }
            return (0..s.len()).any(|i| ref_rec(rest, &s[i..], depth + 1));
        }
        let (ok, len) = ref_element(p, s[0]);
        if !ok {
            return false;
        }
        let (p, s) = (&p[len..], &s[1..]);
        if s.is_empty() {
            return p.iter().all(|&b| b == b'*');
        }
        ref_rec(p, s, depth)
    }

    /// Cases checked against redis-server 7.0.15 with `SET key 1` / `KEYS pattern`.
    const REDIS_VERIFIED: &[(&[u8], &[u8], bool)] = &[
        // The empty subject matches only the empty pattern.
        (b"", b"", true),
        (b"**", b"", false),
        (b"?", b"", false),
        (b"[^a]", b"", false),
        (b"[", b"", false),
        (b"[^", b"", false),
        (b"\\", b"", false),
        (b"**", b"a", true),
        (b"?", b"a", true),
        (b"", b"a", false),
        (b"[^a]", b"a", false),
        // Unterminated and empty classes.
        (b"[", b"a", false),
        (b"[", b"[", false),
        (b"[^", b"a", true),
        (b"[^", b"^", true),
        (b"[^", b"[", true),
        (b"[^", b"ab", false),
        (b"[]", b"]", false),
        (b"[]", b"[", false),
        (b"[]", b"a", false),
        (b"[]", b"[]", false),
        (b"[]a]", b"]", false),
        (b"[]a]", b"a]", false),
        (b"[]a]", b"a", false),
        // Backslash at the end of a class and of the pattern.
        (b"[\\", b"\\", true),
        (b"[\\", b"a", false),
        (b"[\\", b"\0", false),
        (b"[\\", b"]", false),
        (b"a\\", b"a\\", true),
        (b"a\\", b"a", false),
        (b"a\\", b"a\\\\", false),
        // `-` at the end of a class: the range runs to `]`.
        (b"[a-]", b"a", true),
        (b"[a-]", b"]", true),
        (b"[a-]", b"^", true),
        (b"[a-]", b"`", true),
        (b"[a-]", b"b", false),
        (b"[a-]", b"-", false),
        (b"[a-]x]", b"x", true),
        (b"[a-]x]", b"ax", false),
        (b"[a-]x]", b"]x", false),
        (b"[a-]x]", b"ax]", false),
        // Reversed and signed ranges.
        (b"[z-a]", b"a", true),
        (b"[z-a]", b"m", true),
        (b"[z-a]", b"z", true),
        (b"[z-a]", b"A", false),
        (b"[a-\xff]", b"a", true),
        (b"[a-\xff]", b"\xff", true),
        (b"[a-\xff]", b"\x00", true),
        (b"[a-\xff]", b"A", true),
        (b"[a-\xff]", b"b", false),
        (b"[a-\xff]", b"\x80", false),
        (b"[a-\xff]", b"~", false),
        (b"[\x80-\x90]", b"\x80", true),
        (b"[\x80-\x90]", b"\x85", true),
        (b"[\x80-\x90]", b"\x90", true),
        (b"[\x80-\x90]", b"\x91", false),
        (b"[\x80-\x90]", b"a", false),
        (b"[\x00-\x80]", b"\x00", true),
        (b"[\x00-\x80]", b"\x80", true),
        (b"[\x00-\x80]", b"\x81", true),
        (b"[\x00-\x80]", b"\xff", true),
        (b"[\x00-\x80]", b"\x7f", false),
        (b"[\x00-\x80]", b"a", false),
        // NUL bytes.
        (b"a\0*", b"a\0b", true),
        (b"a\0*", b"a\0", true),
        (b"a\0*", b"a", false),
        (b"a\0*", b"ab", false),
        (b"a?c", b"a\0c", true),
        (b"a?c", b"abc", true),
    ];

    #[test]
    fn redis_verified_cases() {
        for &(p, s, want) in REDIS_VERIFIED {
            assert_eq!(matches(p, s), want, "pattern {p:?} subject {s:?}");
            assert_eq!(
                reference(p, s),
                want,
                "reference: pattern {p:?} subject {s:?}"
            );
        }
    }

    #[test]
    fn redis_verified_random_table() {
        for &(p, s, want) in redis_table::CASES {
            assert_eq!(matches(p, s), want, "pattern {p:?} subject {s:?}");
            assert_eq!(
                reference(p, s),
                want,
                "reference: pattern {p:?} subject {s:?}"
            );
        }
    }

    #[test]
    fn star_nesting_limit() {
        // Verified on redis-server 7.0.15: 1000 `*a` groups match, 1001 do not,
        // with or without a trailing `*`.
        for n in [999usize, 1000, 1001, 1002] {
            let pat = b"*a".repeat(n);
            let mut trailing = pat.clone();
            trailing.push(b'*');
            let exact = vec![b'a'; n];
            let longer = vec![b'a'; n + 5];
            let want = n <= 1000;
            assert_eq!(matches(&pat, &exact), want, "n={n}");
            assert_eq!(matches(&pat, &longer), want, "n={n}");
            assert_eq!(matches(&trailing, &exact), want, "n={n}");
            assert_eq!(matches(&trailing, &longer), want, "n={n}");
        }
        // A trailing star group is never entered by recursion.
        let mut pat = b"a*".repeat(1000);
        pat.push(b'*');
        assert!(matches(&pat, &b"a".repeat(1000)));
        let pat = b"a*".repeat(1001);
        assert!(matches(&pat, &b"a".repeat(1001)));
    }

    #[test]
    fn basic_language() {
        assert!(matches(b"h?llo", b"hello"));
        assert!(matches(b"h*llo", b"heeeello"));
        assert!(matches(b"h*llo", b"hllo"));
        assert!(matches(b"h[ae]llo", b"hallo"));
        assert!(!matches(b"h[ae]llo", b"hillo"));
        assert!(matches(b"h[^e]llo", b"hallo"));
        assert!(!matches(b"h[^e]llo", b"hello"));
        assert!(matches(b"h[a-b]llo", b"hbllo"));
        assert!(matches(b"*", b"a/b/c"));
        assert!(matches(b"a*c", b"a/b/c"));
        assert!(matches(b"\\*", b"*"));
        assert!(!matches(b"\\*", b"a"));
        assert!(matches(b"[\\]]", b"]"));
        assert!(matches(b"[\\-a]", b"-"));
        assert!(!matches(b"[\\-a]", b"b"));
        assert!(matches(b"[-a]", b"-"));
        assert!(matches(b"[a\\", b"a"));
        assert!(matches(b"[abc", b"c"));
        assert!(!matches(b"[abc", b"d"));
        assert!(matches(b"[a-\\]", b"\\"));
        assert!(matches(b"[a-\\]", b"_"));
        assert!(!matches(b"a*?", b"a"));
        assert!(matches(b"a*?", b"ab"));
        assert!(!matches(b"abc", b"ab"));
        assert!(!matches(b"ab", b"abc"));
        assert!(matches(b"*a*b", b"xaxxb"));
        assert!(matches(b"*ab", b"aab"));
        assert!(matches_everything(b"*"));
        assert!(!matches_everything(b"**"));
    }

    #[test]
    fn pathological_pattern_is_not_exponential() {
        let subject = vec![b'a'; 10_000];
        assert!(!matches(b"*a*a*a*a*a*a*a*a*a*a*a*b", &subject));
        assert!(matches(b"*a*a*a*a*a*a*a*a*a*a*a*", &subject));
        let mut long = b"*?".repeat(500);
        long.push(b'b');
        assert!(!matches(&long, &subject));
        let pat = Pattern::new(b"*a*a*a*a*a*a*a*a*a*a*a*b");
        for len in [1usize, 100, 10_000] {
            assert!(!pat.matches(&vec![b'a'; len]));
        }
    }

    #[test]
    fn literal_prefix_cases() {
        assert_eq!(literal_prefix(b""), b"");
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"user:?x"), b"user:");
        assert_eq!(literal_prefix(b"user:[ab]"), b"user:");
        assert_eq!(literal_prefix(b"a\\*b*"), b"a*b");
        assert_eq!(literal_prefix(b"a\\[b?"), b"a[b");
        assert_eq!(literal_prefix(b"a\\\\b"), b"a\\b");
        assert_eq!(literal_prefix(b"ab\\"), b"ab\\");
        assert_eq!(literal_prefix(b"*abc"), b"");
        assert_eq!(literal_prefix(b"abc"), b"abc");
        assert_eq!(literal_prefix(b"a]b-c^"), b"a]b-c^");
        assert_eq!(literal_prefix(b"\0\xff*"), b"\0\xff");
    }

    fn pattern_byte() -> impl Strategy<Value = u8> {
        prop::sample::select(b"ab*?[]^-\\".to_vec())
    }

    fn subject_byte() -> impl Strategy<Value = u8> {
        prop::sample::select(b"ab*?[]^-\\".to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn agrees_with_reference(
            p in prop::collection::vec(pattern_byte(), 0..10),
            s in prop::collection::vec(subject_byte(), 0..10),
        ) {
            prop_assert_eq!(matches(&p, &s), reference(&p, &s));
        }

        #[test]
        fn agrees_with_reference_high_bytes(
            p in prop::collection::vec(
                prop::sample::select(b"a*?[]^-\\\x00\x7f\x80\xff".to_vec()), 0..8),
            s in prop::collection::vec(
                prop::sample::select(b"a]-\\\x00\x01\x7f\x80\x81\xfe\xff".to_vec()), 0..6),
        ) {
            prop_assert_eq!(matches(&p, &s), reference(&p, &s));
        }

        #[test]
        fn matches_start_with_literal_prefix(
            p in prop::collection::vec(pattern_byte(), 0..10),
            s in prop::collection::vec(subject_byte(), 0..10),
        ) {
            if matches(&p, &s) {
                prop_assert!(s.starts_with(&literal_prefix(&p)));
            }
        }

        #[test]
        fn literal_prefix_plus_star_matches(
            p in prop::collection::vec(pattern_byte(), 0..10),
            tail in prop::collection::vec(subject_byte(), 1..5),
        ) {
            // The prefix alone, extended by anything, matches `prefix*`
            // once the prefix is escaped back into a pattern.
            let prefix = literal_prefix(&p);
            let mut pat = Vec::new();
            for &b in &prefix {
                pat.push(b'\\');
                pat.push(b);
            }
            pat.push(b'*');
            let mut s = prefix.clone();
            s.extend_from_slice(&tail);
            prop_assert!(matches(&pat, &s));
        }
    }

    /// Random (pattern, subject) pairs whose expected answers came from
    /// redis-server 7.0.15 (`KEYS`), generated by a script during development.
    mod redis_table {
        pub const CASES: &[(&[u8], &[u8], bool)] = &[
            (b"*\x00*", b"\xff-*[", false),
            (b"?^]-^^\x80", b"*[-\x80-", false),
            (b"\x00??", b"\x00\\*", true),
            (b"*-\\-]]\\", b"\x80", false),
            (b"\x80a^a-b", b"\xff*", false),
            (b"[b^a]*", b"bcab", true),
            (b"-", b"-", true),
            (b"b*[-", b"bb^-", true),
            (b"\\\x00", b"\xff-[*\x00", false),
            (b"[\x00", b"\x00", true),
            (b"]", b"]", true),
            (b"\\", b"\\", true),
            (b"\xff\xff\x00-", b"^]]", false),
            (b"?*-\\-", b"\xff\x80--", true),
            (b"", b"\x00[c", false),
            (b"?\x80b^", b"*[[\x00?", false),
            (b"\x80[a\xff", b"\x80\xff", true),
            (b"[a", b"a", true),
            (b"*\\a\x00\\", b"bc^", false),
            (b"-", b"-", true),
            (b"", b"", true),
            (b"[ba", b"a", true),
            (b"*\\", b"\x80^", false),
            (b"a", b"a", true),
            (b"]", b"]", true),
            (b"", b"cc\\", false),
            (b"[\x80", b"\xffb*", false),
            (b"-", b"c\x00", false),
            (b"?b", b"?b-c", false),
            (b"]", b"]", true),
            (b"a?", b"a\xff", true),
            (b"**^\\\x80?", b"^\x80-", true),
            (b"**", b"*-*a", true),
            (b"^", b"^", true),
            (b"\x80-", b"\x80-", true),
            (b"[?\x00]?\xff?", b"b\x80", false),
            (b"bb?\\*^-", b"\\-[", false),
            (b"\xff[[\x00a]\\", b"\x00\xff]--", false),
            (b"\xff", b"\xff", true),
            (b"\\b^[\x80]", b"??*", false),
            (b"\x00?", b"\x00\x00", true),
            (b"\\b\x80b--", b"\x80*\xff", false),
            (b"", b"", true),
            (b"^a]", b"ca]\\^", false),
            (b"", b"", true),
            (b"[\xff\\*b-]", b"[*?", false),
            (b"*?*\\]\\", b"^[b", false),
            (b"", b"", true),
            (b"b^a[\\", b"*\x80\x00\x00-", false),
            (b"", b"", true),
            (b"*[-[", b"\\\xff\xff", false),
            (b"", b"", true),
            (b"bbbb^b\x80", b"ca?[", false),
            (b"\x80]b^b?^", b"aa", false),
            (b"", b"", true),
            (b"**", b"\x80^\\ab", true),
            (b"[b^a]*", b"\x80^\\ab", false),
            (b"[-?", b"?", true),
            (b"]\x00\x80^", b"ba\xff\\a", false),
            (b"[\x80", b"\x80", true),
            (b"**", b"", false),
            (b"-", b"^a", false),
            (b"a", b"a", true),
            (b"*]", b"]]", true),
            (b"\x80[\xff^b*a", b"[*?", false),
            (b"aa]a", b"[*", false),
            (b"]", b"*^", false),
            (b"\\\x00", b"\x00", true),
            (b"^]\xff[]", b"-\\[\\a", false),
            (b"b\xff?-a", b"b", false),
            (b"", b"", true),
            (b"", b"ca]\\^", false),
            (b"[\xff\x80\xff^", b"^", true),
            (b"\x80-", b"\x80-", true),
            (b"\x00a", b"?\xff*[*", false),
            (b"\x00^\x00^\x80", b"b\\?", false),
            (b"", b"", true),
            (b"*[[", b"-\x00", false),
            (b"\\\x00b-\\", b"??*", false),
            (b"\x80[a\xff", b"?\xff*[*", false),
            (b"\x00?^\\", b"\x80\x00-[", false),
            (b"[?\x00]?\xff?", b"\x00\x00\xff^", true),
            (b"[\xff\\*b-]", b"b", true),
            (b"\\?b?*", b"?b-c", true),
            (b"*\xff", b"a\xff", true),
            (b"?b", b"]b", true),
            (b"", b"", true),
            (b"", b"?a\x00", false),
            (b"--?-\\*", b"\\a", false),
            (b"", b"", true),
            (b"", b"", true),
            (b"\x80a[\x00[]", b"*[\\\x00^", false),
            (b"[", b"\x80\x00[-b", false),
            (b"-", b"-?^a", false),
            (b"?]b\xff]\\\xff", b"\\", false),
            (b"\x00\\\x80", b"\x00\x80", true),
            (b"\xff", b"]-\\\\]", false),
            (b"[\x00", b"\\a", false),
            (b"]\\[a[\x80", b"[*-", false),
            (b"", b"", true),
            (b"]", b"]", true),
            (b"*\x00*", b"\x80\x00-[", true),
            (b"\x00\x00ba*", b"-\\\\*a", false),
            (b"\xffb", b"\xffb", true),
            (b"a\x80*^\xff*b", b"]bc?\xff", false),
            (b"^", b"^", true),
            (b"\xff\xff\x00", b"\x00?", false),
            (b"**^\\\x80?", b"\x00\xff]--", false),
            (b"", b"^\x00\x80*?", false),
            (b"\\", b"\\", true),
            (b"-\x00*", b"-\x00", true),
            (b"]", b"\x00\x80", false),
            (b"*\xff-", b"?\xff-", true),
            (b"", b"", true),
            (b"", b"", true),
            (b"", b"", true),
            (b"*[-[", b"\xff\x80--", true),
            (b"", b"", true),
            (b"\xffb", b"[[[?", false),
            (b"", b"\x00\x00\xff^", false),
            (b"?\x00]a*", b"?c?", false),
            (b"-\x00*", b"]b", false),
            (b"", b"", true),
            (b"[^", b"\x00", true),
            (b"][", b"c[]", false),
            (b"]", b"]", true),
            (b"\xff", b"\xff", true),
            (b"*\xff-", b"\xff\x00?\x80", false),
            (b"*\\\x80", b"\x80[\x80", true),
            (b"\\a\x00b?\xff\xff", b"\xffb\x00?", false),
            (b"-\x00\x00-\xff\x00\xff", b"b?b", false),
            (b"*\\", b"a\x00\\", true),
            (b"\x00^[a\x80]?", b"]]", false),
            (b"", b"", true),
            (b"[\\^\\-", b"^", true),
            (b"*b\\\xffb", b"^a", false),
            (b"a", b"a", true),
            (b"\x00\\\x80", b"\xff-?", false),
            (b"]]\x80", b"\x80\\^\\-", false),
            (b"]", b"]", true),
            (b"\x00??", b"\x80[", false),
            (b"\\", b"\\", true),
            (b"", b"", true),
            (b"^", b"\xff-b-", false),
            (b"[*\x80\x80", b"*", true),
            (b"", b"\xffb", false),
            (b"]", b"*a[]", false),
            (b"\x00", b"\x00", true),
            (b"b\xff", b"\xff-*[", false),
            (b"-[^\\\\^*", b"-\x00", true),
            (b"]", b"]", true),
            (b"", b"?\xff-", false),
            (b"", b"", true),
            (b"*a", b"-\\\\*a", true),
            (b"\x00", b"\x00", true),
            (b"^\x00]", b"a\\^b?", false),
            (b"b*\x80\xffab", b"cc", false),
            (b"", b"", true),
            (b"\xff[-?", b"\xff?", true),
            (b"\x00\x80\x80*^\xff", b"*[[\x00?", false),
            (b"", b"", true),
            (b"\x00?\xffb\xff", b"\x80]", false),
            (b"]^*?\\", b"\\\x80[", false),
            (b"]", b"]", true),
            (b"a?^\x00", b"\x00ac\xff[", false),
            (b"^", b"^", true),
            (b"\xff]*-b", b"]bc?\xff", false),
            (b"\x80[-[?^", b"*\\", false),
            (b"*\\\xff\x00*", b"[\xff\x00]\x00", true),
            (b"b-b", b"bb\x80", false),
            (b"", b"", true),
            (b"\xff\x80\xff", b"\\b^b", false),
            (b"]", b"]", true),
            (b"\x80[\xff^b*a", b"\x80^", true),
            (b"-[\xffa", b"\xff[\x00c\\", false),
            (b"", b"]ab[*", false),
            (b"a\x00]\x80*b[", b"[b", false),
            (b"\xff^-\x00-^[", b"??", false),
            (b"-??**", b"--]*", true),
            (b"^^-", b"[\x80\x00c", false),
            (b"-]?\x80?\x00", b"\\a", false),
            (b"", b"", true),
            (b"\x80^^\xff\xff*-", b"\x00\\*", false),
            (b"\x80-", b"\x80-", true),
            (b"]", b"[aa]", false),
            (b"-", b"-", true),
            (b"[[\x80\xff\x00*", b"[", true),
            (b"*\\a\x00\\", b"a\x00\\", true),
            (b"", b"?\xff*[*", false),
            (b"\x00?", b"\x80c]", false),
            (b"\x80[-[?^", b"\x80^", true),
            (b"\x80", b"\x80", true),
            (b"]a**\x00", b"bb^-", false),
            (b"*[[", b"^?-\x00[", true),
            (b"^", b"^", true),
            (b"^\xffb-\x80-", b"\x00\xff]--", false),
            (b"", b"[?^", false),
            (b"-\\\x00^", b"*[[\x00?", false),
            (b"]\xff\x80\xff[\x00^", b"\x80]", false),
            (b"[b\xffb\x00", b"\xff", true),
        ];
    }
}
