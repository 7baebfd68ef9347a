//! The command table: every command's name, arity, flags, key positions and
//! handler, in the shape COMMAND INFO reports; lookup by name with Redis's
//! unknown-command, unknown-subcommand and arity errors.

use super::{
    bits, connection, expire, keys, migrate, server, strings, transaction, CmdError, CmdResult, Ctx,
};
use std::collections::HashMap;
use std::sync::OnceLock;

pub type Handler = fn(&mut Ctx<'_>, &[&[u8]]) -> CmdResult;

pub struct CommandSpec {
    /// Lowercase name; `parent|sub` for subcommands.
    pub name: &'static str,
    /// Redis arity: N = exactly N arguments (name included), -N = at least N.
    pub arity: i32,
    pub flags: &'static [&'static str],
    /// First key, last key, step (COMMAND INFO).
    pub keys: (i32, i32, i32),
    /// Documentation group (COMMAND DOCS) and ACL categories.
    pub group: &'static str,
    pub summary: &'static str,
    pub handler: Handler,
    pub subcommands: &'static [CommandSpec],
}

impl CommandSpec {
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let arity = i64::from(self.arity);
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }

    pub fn is_write(&self) -> bool {
        self.flags.contains(&"write")
    }

    /// Commands a client may run before it authenticates (Redis's
    /// `no-auth` flag, plus QUIT and RESET).
    pub fn no_auth(&self) -> bool {
        matches!(self.name, "auth" | "hello" | "quit" | "reset")
    }

    /// MULTI/EXEC/DISCARD and connection-level commands run at once inside
    /// MULTI instead of being queued.
    pub fn runs_inside_multi(&self) -> bool {
        matches!(
            self.name,
            "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
        )
    }
}

macro_rules! cmd {
    ($name:literal, $arity:expr, [$($flag:literal),*], ($f:expr, $l:expr, $s:expr), $group:literal, $summary:literal, $handler:expr) => {
        CommandSpec { name: $name, arity: $arity, flags: &[$($flag),*], keys: ($f, $l, $s), group: $group, summary: $summary, handler: $handler, subcommands: &[] }
    };
    ($name:literal, $arity:expr, [$($flag:literal),*], ($f:expr, $l:expr, $s:expr), $group:literal, $summary:literal, $handler:expr, $subs:expr) => {
        CommandSpec { name: $name, arity: $arity, flags: &[$($flag),*], keys: ($f, $l, $s), group: $group, summary: $summary, handler: $handler, subcommands: $subs }
    };
}

/// Container commands have no handler of their own: their subcommand runs.
fn container(_: &mut Ctx<'_>, _: &[&[u8]]) -> CmdResult {
    Err(CmdError::syntax())
}

pub static COMMANDS: &[CommandSpec] = &[
    // bitmap
    cmd!(
        "setbit",
        4,
        ["write", "denyoom"],
        (1, 1, 1),
        "bitmap",
        "Sets or clears the bit at offset of the string value.",
        bits::setbit
    ),
    cmd!(
        "getbit",
        3,
        ["readonly", "fast"],
        (1, 1, 1),
        "bitmap",
        "Returns a bit value by offset.",
        bits::getbit
    ),
    cmd!(
        "bitcount",
        -2,
        ["readonly"],
        (1, 1, 1),
        "bitmap",
        "Counts the number of set bits in a string.",
        bits::bitcount
    ),
    cmd!(
        "bitpos",
        -3,
        ["readonly"],
        (1, 1, 1),
        "bitmap",
        "Finds the first set or clear bit in a string.",
        bits::bitpos
    ),
    cmd!(
        "bitop",
        -4,
        ["write", "denyoom"],
        (2, -1, 1),
        "bitmap",
        "Performs bitwise operations on strings and stores the result.",
        bits::bitop
    ),
    // string
    cmd!(
        "get",
        2,
        ["readonly", "fast"],
        (1, 1, 1),
        "string",
        "Returns the string value of a key.",
        strings::get
    ),
    cmd!(
        "set",
        -3,
        ["write", "denyoom"],
        (1, 1, 1),
        "string",
        "Sets the string value of a key.",
        strings::set
    ),
    cmd!(
        "strlen",
        2,
        ["readonly", "fast"],
        (1, 1, 1),
        "string",
        "Returns the length of a string value.",
        strings::strlen
    ),
    cmd!(
        "mget",
        -2,
        ["readonly", "fast"],
        (1, -1, 1),
        "string",
        "Returns the string values of one or more keys.",
        strings::mget
    ),
    // generic
    cmd!(
        "del",
        -2,
        ["write"],
        (1, -1, 1),
        "generic",
        "Deletes one or more keys.",
        keys::del
    ),
    cmd!(
        "unlink",
        -2,
        ["write", "fast"],
        (1, -1, 1),
        "generic",
        "Deletes one or more keys.",
        keys::del
    ),
    cmd!(
        "exists",
        -2,
        ["readonly", "fast"],
        (1, -1, 1),
        "generic",
        "Determines whether one or more keys exist.",
        keys::exists
    ),
    cmd!(
        "type",
        2,
        ["readonly", "fast"],
        (1, 1, 1),
        "generic",
        "Determines the type of value stored at a key.",
        keys::type_
    ),
    cmd!(
        "keys",
        2,
        ["readonly"],
        (0, 0, 0),
        "generic",
        "Returns all key names that match a pattern.",
        keys::keys
    ),
    cmd!(
        "scan",
        -2,
        ["readonly"],
        (0, 0, 0),
        "generic",
        "Iterates over the key names in the database.",
        keys::scan
    ),
    cmd!(
        "rename",
        3,
        ["write"],
        (1, 2, 1),
        "generic",
        "Renames a key and overwrites the destination.",
        keys::rename
    ),
    cmd!(
        "renamenx",
        3,
        ["write", "fast"],
        (1, 2, 1),
        "generic",
        "Renames a key only when the target key name doesn't exist.",
        keys::renamenx
    ),
    cmd!(
        "expire",
        -3,
        ["write", "fast"],
        (1, 1, 1),
        "generic",
        "Sets the expiration time of a key in seconds.",
        expire::expire
    ),
    cmd!(
        "pexpire",
        -3,
        ["write", "fast"],
        (1, 1, 1),
        "generic",
        "Sets the expiration time of a key in milliseconds.",
        expire::pexpire
    ),
    cmd!(
        "expireat",
        -3,
        ["write", "fast"],
        (1, 1, 1),
        "generic",
        "Sets the expiration time of a key to a Unix timestamp.",
        expire::expireat
    ),
    cmd!(
        "pexpireat",
        -3,
        ["write", "fast"],
        (1, 1, 1),
        "generic",
        "Sets the expiration time of a key to a Unix milliseconds timestamp.",
        expire::pexpireat
    ),
    cmd!(
        "ttl",
        2,
        ["readonly", "fast"],
        (1, 1, 1),
        "generic",
        "Returns the expiration time in seconds of a key.",
        expire::ttl
    ),
    cmd!(
        "pttl",
        2,
        ["readonly", "fast"],
        (1, 1, 1),
        "generic",
        "Returns the expiration time in milliseconds of a key.",
        expire::pttl
    ),
    cmd!(
        "expiretime",
        2,
        ["readonly", "fast"],
        (1, 1, 1),
        "generic",
        "Returns the expiration time of a key as a Unix timestamp.",
        expire::expiretime
    ),
    cmd!(
        "pexpiretime",
        2,
        ["readonly", "fast"],
        (1, 1, 1),
        "generic",
        "Returns the expiration time of a key as a Unix milliseconds timestamp.",
        expire::pexpiretime
    ),
    cmd!(
        "persist",
        2,
        ["write", "fast"],
        (1, 1, 1),
        "generic",
        "Removes the expiration time of a key.",
        expire::persist
    ),
    cmd!(
        "dbsize",
        1,
        ["readonly", "fast"],
        (0, 0, 0),
        "server",
        "Returns the number of keys in the database.",
        server::dbsize
    ),
    cmd!(
        "flushdb",
        -1,
        ["write"],
        (0, 0, 0),
        "server",
        "Removes all keys from the current database.",
        server::flushdb
    ),
    cmd!(
        "flushall",
        -1,
        ["write"],
        (0, 0, 0),
        "server",
        "Removes all keys from all databases.",
        server::flushall
    ),
    // transactions
    cmd!(
        "multi",
        1,
        ["noscript", "loading", "stale", "fast"],
        (0, 0, 0),
        "transactions",
        "Starts a transaction.",
        transaction::multi
    ),
    cmd!(
        "exec",
        1,
        ["noscript", "loading", "stale"],
        (0, 0, 0),
        "transactions",
        "Executes all commands in a transaction.",
        transaction::exec
    ),
    cmd!(
        "discard",
        1,
        ["noscript", "loading", "stale", "fast"],
        (0, 0, 0),
        "transactions",
        "Discards a transaction.",
        transaction::discard
    ),
    cmd!(
        "watch",
        -2,
        ["noscript", "loading", "stale", "fast"],
        (1, -1, 1),
        "transactions",
        "Monitors changes to keys to determine the execution of a transaction.",
        transaction::watch
    ),
    cmd!(
        "unwatch",
        1,
        ["noscript", "loading", "stale", "fast"],
        (0, 0, 0),
        "transactions",
        "Forgets about watched keys of a transaction.",
        transaction::unwatch
    ),
    // connection
    cmd!(
        "ping",
        -1,
        ["fast"],
        (0, 0, 0),
        "connection",
        "Returns the server's liveliness response.",
        connection::ping
    ),
    cmd!(
        "echo",
        2,
        ["fast"],
        (0, 0, 0),
        "connection",
        "Returns the given string.",
        connection::echo
    ),
    cmd!(
        "select",
        2,
        ["loading", "stale", "fast"],
        (0, 0, 0),
        "connection",
        "Changes the selected database.",
        connection::select
    ),
    cmd!(
        "quit",
        -1,
        ["noscript", "loading", "stale", "fast", "no_auth"],
        (0, 0, 0),
        "connection",
        "Closes the connection.",
        connection::quit
    ),
    cmd!(
        "reset",
        1,
        ["noscript", "loading", "stale", "fast", "no_auth"],
        (0, 0, 0),
        "connection",
        "Resets the connection.",
        connection::reset
    ),
    cmd!(
        "hello",
        -1,
        ["noscript", "loading", "stale", "fast", "no_auth"],
        (0, 0, 0),
        "connection",
        "Handshakes with the Redis server.",
        connection::hello
    ),
    cmd!(
        "auth",
        -2,
        ["noscript", "loading", "stale", "fast", "no_auth"],
        (0, 0, 0),
        "connection",
        "Authenticates the connection.",
        connection::auth
    ),
    cmd!(
        "client",
        -2,
        [],
        (0, 0, 0),
        "connection",
        "A container for client connection commands.",
        container,
        CLIENT_SUBCOMMANDS
    ),
    // server
    cmd!(
        "info",
        -1,
        ["loading", "stale"],
        (0, 0, 0),
        "server",
        "Returns information and statistics about the server.",
        server::info
    ),
    cmd!(
        "save",
        1,
        ["admin", "noscript", "no_async_loading", "no_multi"],
        (0, 0, 0),
        "server",
        "Synchronously saves the database to disk (a checkpoint).",
        server::save
    ),
    cmd!(
        "bgsave",
        -1,
        ["admin", "noscript", "no_async_loading"],
        (0, 0, 0),
        "server",
        "Asynchronously saves the database to disk (a checkpoint).",
        server::bgsave
    ),
    cmd!(
        "lastsave",
        1,
        ["loading", "stale", "fast"],
        (0, 0, 0),
        "server",
        "Returns the Unix timestamp of the last successful checkpoint.",
        server::lastsave
    ),
    cmd!(
        "time",
        1,
        ["loading", "stale", "fast"],
        (0, 0, 0),
        "server",
        "Returns the server time.",
        server::time
    ),
    cmd!(
        "shutdown",
        -1,
        ["admin", "noscript", "loading", "stale"],
        (0, 0, 0),
        "server",
        "Synchronously saves the database(s) to disk and shuts down the server.",
        server::shutdown
    ),
    cmd!(
        "slurp",
        -2,
        ["admin", "noscript"],
        (0, 0, 0),
        "server",
        "Imports the string keys of a running Redis or Go bitmapist-server in the background.",
        migrate::slurp
    ),
    cmd!(
        "command",
        -1,
        ["loading", "stale"],
        (0, 0, 0),
        "server",
        "Returns detailed information about all commands.",
        server::command
    ),
    cmd!(
        "config",
        -2,
        [],
        (0, 0, 0),
        "server",
        "A container for server configuration commands.",
        container,
        CONFIG_SUBCOMMANDS
    ),
];

static CLIENT_SUBCOMMANDS: &[CommandSpec] = &[
    cmd!(
        "client|id",
        2,
        ["noscript", "loading", "stale"],
        (0, 0, 0),
        "connection",
        "Returns the unique client ID of the connection.",
        connection::client_id
    ),
    cmd!(
        "client|getname",
        2,
        ["noscript", "loading", "stale"],
        (0, 0, 0),
        "connection",
        "Returns the name of the connection.",
        connection::client_getname
    ),
    cmd!(
        "client|setname",
        3,
        ["noscript", "loading", "stale"],
        (0, 0, 0),
        "connection",
        "Sets the connection name.",
        connection::client_setname
    ),
    cmd!(
        "client|setinfo",
        4,
        ["noscript", "loading", "stale"],
        (0, 0, 0),
        "connection",
        "Sets information specific to the client or connection.",
        connection::client_setinfo
    ),
    cmd!(
        "client|list",
        -2,
        ["admin", "noscript", "loading", "stale"],
        (0, 0, 0),
        "connection",
        "Lists open connections.",
        connection::client_list
    ),
    cmd!(
        "client|info",
        2,
        ["noscript", "loading", "stale"],
        (0, 0, 0),
        "connection",
        "Returns information about the connection.",
        connection::client_info
    ),
];

static CONFIG_SUBCOMMANDS: &[CommandSpec] = &[
    cmd!(
        "config|get",
        -3,
        ["admin", "noscript", "loading", "stale"],
        (0, 0, 0),
        "server",
        "Returns the effective values of configuration parameters.",
        server::config_get
    ),
    cmd!(
        "config|set",
        -4,
        ["admin", "noscript", "loading", "stale"],
        (0, 0, 0),
        "server",
        "Sets configuration parameters in-flight.",
        server::config_set
    ),
    cmd!(
        "config|resetstat",
        2,
        ["admin", "noscript", "loading", "stale"],
        (0, 0, 0),
        "server",
        "Resets the server's statistics.",
        server::config_resetstat
    ),
];

type Index = HashMap<&'static [u8], usize, foldhash::fast::RandomState>;

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        COMMANDS
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_bytes(), i))
            .collect()
    })
}

/// Finds a top-level command by name, case-insensitively.
pub fn find(name: &[u8]) -> Option<(usize, &'static CommandSpec)> {
    let mut lower = [0u8; 32];
    if name.len() > lower.len() {
        return None;
    }
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    index()
        .get(&lower[..name.len()])
        .map(|&i| (i, &COMMANDS[i]))
}

pub enum Lookup {
    /// The top-level index (for statistics) and the spec to run.
    Found(usize, &'static CommandSpec),
    Error(CmdError),
}

/// Resolves a request to the command (or subcommand) to run, or to the
/// error Redis gives for an unknown command or a wrong number of arguments.
pub fn lookup(argv: &[&[u8]]) -> Lookup {
    let Some(&name) = argv.first() else {
        return Lookup::Error(CmdError::syntax());
    };
    let Some((index, spec)) = find(name) else {
        return Lookup::Error(unknown_command(argv));
    };
    if !spec.arity_ok(argv.len()) {
        return Lookup::Error(CmdError::arity(spec.name));
    }
    if spec.subcommands.is_empty() {
        return Lookup::Found(index, spec);
    }
    let sub_name = argv[1];
    let sub = spec.subcommands.iter().find(|s| {
        s.name
            .split_once('|')
            .is_some_and(|(_, n)| n.as_bytes().eq_ignore_ascii_case(sub_name))
    });
    match sub {
        None => {
            let mut line = b"ERR unknown subcommand '".to_vec();
            line.extend_from_slice(c_str_prefix(sub_name, 128));
            let tail = format!("'. Try {} HELP.", spec.name.to_ascii_uppercase());
            line.extend_from_slice(tail.as_bytes());
            Lookup::Error(CmdError::from_bytes(line))
        }
        Some(sub) if !sub.arity_ok(argv.len()) => Lookup::Error(CmdError::arity(sub.name)),
        Some(sub) => Lookup::Found(index, sub),
    }
}

/// What C's `%.Ns` prints of a byte string: up to the first NUL, at most
/// `max` bytes.
fn c_str_prefix(s: &[u8], max: usize) -> &[u8] {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len()).min(max);
    &s[..end]
}

/// Redis's "unknown command" error, arguments quoted up to 128 bytes in all.
pub fn unknown_command(argv: &[&[u8]]) -> CmdError {
    let mut listed: Vec<u8> = Vec::new();
    for arg in &argv[1..] {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push(b'\'');
        listed.extend_from_slice(c_str_prefix(arg, room));
        listed.extend_from_slice(b"' ");
    }
    let mut line = b"ERR unknown command '".to_vec();
    line.extend_from_slice(c_str_prefix(argv[0], 128));
    line.extend_from_slice(b"', with args beginning with: ");
    line.extend_from_slice(&listed);
    CmdError::from_bytes(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_commands_case_insensitively() {
        assert!(matches!(find(b"SeTbIt"), Some((_, s)) if s.name == "setbit"));
        assert!(find(b"nope").is_none());
        assert!(find(&[b'a'; 100]).is_none());
    }

    #[test]
    fn arity_and_subcommand_errors() {
        let err = |argv: &[&[u8]]| match lookup(argv) {
            Lookup::Error(e) => String::from_utf8_lossy(&e.0).into_owned(),
            Lookup::Found(_, s) => format!("found {}", s.name),
        };
        assert_eq!(
            err(&[b"get"]),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            err(&[b"config", b"get"]),
            "ERR wrong number of arguments for 'config|get' command"
        );
        assert_eq!(
            err(&[b"config", b"nope"]),
            "ERR unknown subcommand 'nope'. Try CONFIG HELP."
        );
        assert_eq!(err(&[b"CLIENT", b"ID"]), "found client|id");
        assert_eq!(
            err(&[b"foo", b"a", b"b"]),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            err(&[b"foo"]),
            "ERR unknown command 'foo', with args beginning with: "
        );
    }

    #[test]
    fn every_command_name_is_unique_and_lowercase() {
        let mut names = std::collections::HashSet::new();
        for c in COMMANDS {
            assert!(names.insert(c.name), "{} twice", c.name);
            assert_eq!(c.name, c.name.to_ascii_lowercase());
        }
    }
}
