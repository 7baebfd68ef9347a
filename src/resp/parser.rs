//! TEMPORARY STUB (replaced by the real parser).
use std::borrow::Cow;
pub struct Limits {
    pub max_bulk_len: usize,
    pub max_multibulk_len: usize,
    pub max_inline_len: usize,
}
impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 << 20,
            max_multibulk_len: 1 << 20,
            max_inline_len: 64 << 10,
        }
    }
}
pub enum Parsed<'a> {
    Request {
        args: Vec<Cow<'a, [u8]>>,
        consumed: usize,
    },
    Skip {
        consumed: usize,
    },
    Incomplete {
        need: usize,
    },
}
pub struct ProtocolError(pub &'static str);
pub fn parse<'a>(buf: &'a [u8], _l: &Limits) -> Result<Parsed<'a>, ProtocolError> {
    Ok(Parsed::Incomplete {
        need: buf.len() + 1,
    })
}
