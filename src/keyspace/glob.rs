//! TEMPORARY STUB (replaced by the real matcher).
pub fn matches(pattern: &[u8], subject: &[u8]) -> bool {
    pattern == b"*" || pattern == subject
}
pub fn literal_prefix(_pattern: &[u8]) -> Vec<u8> {
    Vec::new()
}
