//! RESP, the Redis serialization protocol: parsing client requests out of a
//! connection buffer (`parser`) and encoding replies into an output buffer
//! (`reply`). Knows nothing about commands or the keyspace.

pub mod parser;
pub mod reply;

pub use parser::{parse, skim, Limits, Parsed, ProtocolError, Skimmed};
pub use reply::{Protocol, ReplyBuf};
