//! bitmapist-server: a Redis-compatible server for the bitmapist analytics
//! library. Requests flow `net → resp/command → keyspace`; see
//! `../shared/DESIGN.md` and each module's own documentation.

pub mod background;
pub mod command;
pub mod config;
pub mod import;
pub mod keyspace;
pub mod logging;
pub mod memory;
pub mod net;
pub mod notify;
pub mod persistence;
pub mod resp;
pub mod server;
pub mod signals;
pub mod storage;
