//! The memcached text protocol (memcached 1.6 `protocol.txt`): an incremental, zero-copy parser over the
//! connection's read buffer. [`parse`] looks at the front of the buffer and says what is there: a whole
//! [`Command`] borrowing its key and data from the buffer, [`Parsed::Incomplete`] (read more), a
//! [`Parsed::Reject`] (an error reply, the bytes to drop, and a data block to swallow), or
//! [`Parsed::Close`] (a line that grew past [`MAX_PLAIN_LINE`], or a `get` line past [`MAX_LINE`]: reply
//! and hang up, so a connection's memory stays bounded). It never allocates and never panics, whatever the bytes.
//!
//! The meta commands of memcached 1.6 are read here too: `mg` (meta get), `ms` (meta set), `md` (meta
//! delete), `ma` (meta arithmetic) and `mn` (no-op), with their flags in [`MetaFlags`], kept in the order the
//! client sent them because the reply prints them in that order. A key sent with `b` is base64, decoded as
//! memcached decodes it ([`decode_base64_key`]). `me` (meta debug) is `ERROR`.

/// Longest key memcached accepts.
pub const MAX_KEY_LEN: usize = 250;
/// Longest command line (without its data block), which only a `get`/`gets` line may reach (see
/// [`MAX_PLAIN_LINE`]). Past this without a newline the connection is closed.
pub const MAX_LINE: usize = 64 * 1024;
/// Relative exptimes go up to 30 days; larger values are absolute unix times.
pub const MAX_RELATIVE_EXPTIME: i64 = 60 * 60 * 24 * 30;

pub const ERROR: &[u8] = b"ERROR\r\n";
pub const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
pub const BAD_CHUNK: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";
pub const BAD_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta argument\r\n";
pub const BAD_EXPTIME: &[u8] = b"CLIENT_ERROR invalid exptime argument\r\n";
pub const STATS_DETAIL_USAGE: &[u8] = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n";
pub const BAD_DELETE: &[u8] =
    b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
pub const TOO_LARGE: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
pub const LINE_TOO_LONG: &[u8] = b"CLIENT_ERROR line too long\r\n";
pub const META_INVALID_FLAG: &[u8] = b"CLIENT_ERROR invalid flag\r\n";
pub const META_DUPLICATE_FLAG: &[u8] = b"CLIENT_ERROR duplicate flag\r\n";
/// What `md` and `ma` answer to any flag `mg` and `ms` would name more precisely, as memcached does.
pub const META_BAD_FLAG: &[u8] = b"CLIENT_ERROR invalid or duplicate flag\r\n";
pub const META_BAD_TOKEN: &[u8] = b"CLIENT_ERROR bad token in command line format\r\n";
pub const META_OPAQUE_TOO_LONG: &[u8] = b"CLIENT_ERROR opaque token too long\r\n";
/// A `b` key that is not base64 (memcached: after the other flags' immediate errors, before later bad tokens).
pub const META_BAD_BASE64: &[u8] = b"CLIENT_ERROR error decoding key\r\n";
/// Longest opaque token, its `O` included.
pub const META_MAX_OPAQUE: usize = 32;
/// Most tokens a meta command line may have, as memcached counts them (one more than the words).
const META_MAX_TOKENS: usize = 20;

/// The six storage commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
}

/// One request, borrowing from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `get`/`gets` (`cas` is true for `gets`).
    Get {
        keys: Keys<'a>,
        cas: bool,
    },
    /// `gat`/`gats`: get and touch.
    Gat {
        exptime: i64,
        keys: Keys<'a>,
        cas: bool,
    },
    /// `set`/`add`/`replace`/`append`/`prepend`/`cas`; `cas` is 0 except for `cas`.
    Store {
        op: StoreOp,
        key: &'a [u8],
        flags: u32,
        exptime: i64,
        data: &'a [u8],
        cas: u64,
        noreply: bool,
    },
    Delete {
        key: &'a [u8],
        noreply: bool,
    },
    /// `incr` (`incr` true) or `decr`.
    Arith {
        key: &'a [u8],
        delta: u64,
        incr: bool,
        noreply: bool,
    },
    Touch {
        key: &'a [u8],
        exptime: i64,
        noreply: bool,
    },
    FlushAll {
        delay: i64,
        noreply: bool,
    },
    Stats,
    /// `stats reset`: the counters memcached resets go back to zero.
    StatsReset,
    /// `stats settings`: the settings this server has, under memcached's names.
    StatsSettings,
    /// `stats items`: the whole cache as one class (nothing when it is empty).
    StatsItems,
    /// `stats slabs`: there is no slab allocator, so nothing.
    StatsSlabs,
    /// `stats trust`: the delegation runtime's counters per trustee (not in memcached).
    StatsTrust,
    Version,
    Verbosity {
        noreply: bool,
    },
    Quit,
    /// `mg <key> <flags>*`: meta get.
    MetaGet {
        key: &'a [u8],
        flags: MetaFlags<'a>,
    },
    /// `ms <key> <datalen> <flags>*`: meta set; `op` is the mode (`M`), `Cas` when a set or replace has `C`.
    MetaSet {
        op: StoreOp,
        key: &'a [u8],
        data: &'a [u8],
        flags: MetaFlags<'a>,
    },
    /// `md <key> <flags>*`: meta delete.
    MetaDelete {
        key: &'a [u8],
        flags: MetaFlags<'a>,
    },
    /// `ma <key> <flags>*`: meta arithmetic; `incr` is the mode (`MI`/`M+`, the default, or `MD`/`M-`).
    MetaArith {
        key: &'a [u8],
        incr: bool,
        flags: MetaFlags<'a>,
    },
    /// `mn`: meta no-op, answered `MN`.
    MetaNoop,
}

/// The flags of a meta command, read as memcached's `_meta_flag_preparse` reads them: one letter, then the
/// token's argument. The reply's flags are printed in the order they were asked for, so the tokens are kept
/// ([`MetaFlags::tokens`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetaFlags<'a> {
    text: &'a [u8],
    /// `q`: the nominal reply (`HD`, a `mg` miss's `EN`) is not sent; errors and other codes still are.
    pub quiet: bool,
    /// `v`: the value is returned (`VA <size>` and a data block).
    pub value: bool,
    /// `u`: the item is not bumped in the LRU.
    pub no_bump: bool,
    /// `T<ttl>`: the new exptime.
    pub ttl: Option<i64>,
    /// `N<ttl>`: `mg` and `ma` create a missing item with this exptime.
    pub vivify: Option<i64>,
    /// `N` came after `T` (memcached applies them in their order on a created item).
    pub vivify_last: bool,
    /// `R<ttl>` of `mg`: win the token of an item whose TTL is below this.
    pub recache: Option<i64>,
    /// `R` came after `T` (it sees the TTL `T` set).
    pub recache_after_ttl: bool,
    /// `I` of `md` and `ms`: invalidate (mark stale) rather than delete; store a stale value.
    pub stale: bool,
    /// `F<flags>`: client flags of `ms`.
    pub client_flags: u32,
    /// `C<cas>`: compare.
    pub cas: Option<u64>,
    /// `D<delta>` of `ma` (1 if not given).
    pub delta: u64,
    /// `J<initial>` of `ma`.
    pub initial: u64,
    /// `b`: the key on the line is base64 (decode it with [`meta_key`]; it is valid when the command parsed),
    /// and a `k` prints it base64 again, followed by ` b`.
    pub base64: bool,
}

impl<'a> MetaFlags<'a> {
    /// The flag tokens, in the order the client sent them.
    pub fn tokens(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        self.text.split(|&b| b == b' ').filter(|t| !t.is_empty())
    }
}

/// What the front of the buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole command, `len` bytes long (line and data block).
    Command { cmd: Command<'a>, len: usize },
    /// Not a whole command yet.
    Incomplete,
    /// Send `reply` (empty when the line ends with `noreply`), drop `len` bytes, then drop `swallow` more as they
    /// arrive (the data block of a storage command that is refused, so it is not read as commands). A refused `set`
    /// also removes the key's old value (`unlink`), as memcached does, so a stale value does not outlive a failed
    /// overwrite.
    Reject {
        reply: &'static [u8],
        len: usize,
        swallow: usize,
        unlink: Option<&'a [u8]>,
        /// `unlink` is a meta command's base64 key (`b`): decode it with [`meta_key`].
        unlink_base64: bool,
    },
    /// A storage command whose data block arrived but does not end in `\r\n`: send `reply` (empty with
    /// `noreply`), drop `len` bytes. memcached counts it in `cmd_set` (the block arrived), unlike a [`Reject`].
    ///
    /// [`Reject`]: Parsed::Reject
    BadChunk { reply: &'static [u8], len: usize },
    /// Send `reply` and close the connection.
    Close(&'static [u8]),
}

/// The keys of a `get`: the rest of the line, split on spaces when iterated (no allocation). When a key is
/// bad (too long, or a control character without `--lenient-keys`), only the keys before it are here and
/// [`Keys::bad_key_follows`] is true: memcached looks those up (a `gat` touches them), then answers
/// `CLIENT_ERROR bad command line format` alone, without their values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys<'a> {
    text: &'a [u8],
    bad_key_follows: bool,
}

impl<'a> Keys<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        self.text.split(|&b| b == b' ').filter(|k| !k.is_empty())
    }

    /// A bad key ends the line: the reply is `CLIENT_ERROR bad command line format` instead of the values.
    pub fn bad_key_follows(&self) -> bool {
        self.bad_key_follows
    }
}

/// What the parser accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest item (`-I`): a bigger data block is refused with `SERVER_ERROR object too large for
    /// cache` and swallowed.
    pub item_max: usize,
    /// `protocol.txt` says keys hold no control characters, and by default a key with one is refused.
    /// memcached itself does not check, and some load generators (memaslap's keys start with 8 bytes of
    /// 0x10) rely on that: `true` accepts them (keys still cannot hold spaces or newlines, which split).
    pub control_chars_in_keys: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            item_max: 1 << 20,
            control_chars_in_keys: false,
        }
    }
}

/// Longest partial line (no newline yet) memcached waits on unless it starts `get ` or `gets ` (after at
/// most [`MAX_LEADING_SPACES`] spaces): past it, the connection is closed (`try_read_command_ascii`). No
/// other command line comes near it.
pub const MAX_PLAIN_LINE: usize = 2048;
/// Leading spaces memcached allows before a `get`/`gets` line that grows past [`MAX_PLAIN_LINE`].
pub const MAX_LEADING_SPACES: usize = 100;

/// Whether a partial line may still grow past [`MAX_PLAIN_LINE`] (up to [`MAX_LINE`]): only a multi-key
/// `get`/`gets` may, as in memcached.
fn may_grow(partial: &[u8]) -> bool {
    let spaces = partial.iter().take_while(|&&b| b == b' ').count();
    let rest = &partial[spaces..];
    spaces <= MAX_LEADING_SPACES && (rest.starts_with(b"get ") || rest.starts_with(b"gets "))
}

/// Parses the command at the front of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        // memcached closes the connection without a word; the reply says why (documented).
        return if buf.len() > MAX_LINE || (buf.len() > MAX_PLAIN_LINE && !may_grow(buf)) {
            Parsed::Close(LINE_TOO_LONG)
        } else {
            Parsed::Incomplete
        };
    };
    if nl > MAX_LINE {
        return Parsed::Close(LINE_TOO_LONG);
    }
    let line_len = nl + 1;
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    // memcached's tokenizer reads the line as a C string: it ends at the first NUL byte (`get a\0b` is
    // `get a`; the bytes after it up to the newline are ignored).
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let Some(name) = tokens.next() else {
        return reject(ERROR, line_len);
    };
    // Everything after the command name, for `get`'s keys.
    let rest = {
        let start = name.as_ptr() as usize - line.as_ptr() as usize + name.len();
        &line[start..]
    };
    // memcached checks each command's token count first (too few or too many is `ERROR`), then reads its
    // arguments at fixed places: a token past them is ignored. No command reads more than 6 arguments, so 8
    // slots hold all that is read; `argc` counts them all.
    let mut args = [&[][..]; 8];
    let mut argc = 0;
    for t in tokens {
        if let Some(slot) = args.get_mut(argc) {
            *slot = t;
        }
        argc += 1;
    }
    let args = &args[..argc.min(args.len())];
    // memcached's `set_noreply_maybe`: the last token, whatever its place.
    let noreply = args.last() == Some(&&b"noreply"[..]);
    let one = |cmd| Parsed::Command { cmd, len: line_len };
    let valid_key = |key: &[u8]| valid_key(key, limits);
    let mut parsed = match (name, argc) {
        (b"get" | b"gets", 1..) => one(Command::Get {
            keys: checked_keys(rest, limits),
            cas: name == b"gets",
        }),
        // `gat <exptime>` without keys is a lookup of nothing: `END`, as in memcached.
        (b"gat" | b"gats", 1..) => {
            let (exp, keys) = split_first_token(rest).unwrap_or_default();
            let Some(exptime) = parse_i32(exp) else {
                return reject(BAD_EXPTIME, line_len);
            };
            one(Command::Gat {
                exptime: exptime.into(),
                keys: checked_keys(keys, limits),
                cas: name == b"gats",
            })
        }
        (b"set", 4..=5) => storage(StoreOp::Set, args, buf, line_len, limits),
        (b"add", 4..=5) => storage(StoreOp::Add, args, buf, line_len, limits),
        (b"replace", 4..=5) => storage(StoreOp::Replace, args, buf, line_len, limits),
        (b"append", 4..=5) => storage(StoreOp::Append, args, buf, line_len, limits),
        (b"prepend", 4..=5) => storage(StoreOp::Prepend, args, buf, line_len, limits),
        (b"cas", 5..=6) => storage(StoreOp::Cas, args, buf, line_len, limits),
        // `delete <key> 0` is an old form memcached still accepts; `delete noreply` deletes the key "noreply".
        (b"delete", 1..=3) => {
            let hold_is_zero = args.get(1) == Some(&&b"0"[..]);
            let noreply = argc > 1 && noreply;
            match (args[0], argc) {
                (_, 2) if !(hold_is_zero || noreply) => reject(BAD_DELETE, line_len),
                (_, 3) if !(hold_is_zero && noreply) => reject(BAD_DELETE, line_len),
                (key, _) if valid_key(key) => one(Command::Delete { key, noreply }),
                _ => reject(BAD_FORMAT, line_len),
            }
        }
        (b"incr" | b"decr", 2..=3) => match (args[0], parse_u64(args[1])) {
            (key, _) if !valid_key(key) => reject(BAD_FORMAT, line_len),
            (key, Some(delta)) => one(Command::Arith {
                key,
                delta,
                incr: name == b"incr",
                noreply,
            }),
            (_, None) => reject(BAD_DELTA, line_len),
        },
        (b"touch", 2..=3) => match (args[0], parse_i32(args[1])) {
            (key, _) if !valid_key(key) => reject(BAD_FORMAT, line_len),
            (key, Some(exptime)) => one(Command::Touch {
                key,
                exptime: exptime.into(),
                noreply,
            }),
            (_, None) => reject(BAD_EXPTIME, line_len),
        },
        (b"flush_all", 0..=2) => {
            let delay = if argc == usize::from(noreply) {
                Some(0)
            } else {
                parse_i32(args[0])
            };
            match delay {
                Some(delay) => one(Command::FlushAll {
                    delay: delay.into(),
                    noreply,
                }),
                None => reject(BAD_EXPTIME, line_len),
            }
        }
        (b"stats", _) => stats(args, line_len),
        (b"version", _) => one(Command::Version),
        (b"quit", _) => one(Command::Quit),
        (b"verbosity", 1..=2) => match parse_flags(args[0]) {
            Some(_) => one(Command::Verbosity { noreply }),
            None => reject(BAD_FORMAT, line_len),
        },
        (b"mn", _) => one(Command::MetaNoop),
        (b"mg" | b"ms" | b"md" | b"ma", 1..) => meta(name, rest, buf, line_len, limits),
        _ => reject(ERROR, line_len),
    };
    // A command that takes `noreply` and ends with it gets no reply at all, errors included, as in
    // memcached 1.6: a client that does not read the replies of its `noreply` commands stays in step. A
    // wrong number of tokens is the exception: memcached answers `ERROR` before it looks for `noreply`.
    if let Parsed::Reject { reply, .. } = &mut parsed
        && *reply != ERROR
        && TAKES_NOREPLY.contains(&name)
        && noreply
    {
        *reply = b"";
    }
    parsed
}

/// `stats [<group>]`: the groups memcached has that this server can answer; any other is `ERROR`, as in
/// memcached. Arguments past the group are ignored, as memcached ignores them.
fn stats(args: &[&[u8]], line_len: usize) -> Parsed<'static> {
    let cmd = match args.first().copied() {
        None => Command::Stats,
        Some(b"reset") => Command::StatsReset,
        Some(b"settings") => Command::StatsSettings,
        Some(b"items") => Command::StatsItems,
        Some(b"slabs") => Command::StatsSlabs,
        Some(b"trust") => Command::StatsTrust,
        // Per-prefix counters are not kept (see docs/memcached.md): every form gets memcached's usage line.
        Some(b"detail") => return reject(STATS_DETAIL_USAGE, line_len),
        Some(_) => return reject(ERROR, line_len),
    };
    Parsed::Command { cmd, len: line_len }
}

/// The commands that take a trailing `noreply`.
const TAKES_NOREPLY: &[&[u8]] = &[
    b"set",
    b"add",
    b"replace",
    b"append",
    b"prepend",
    b"cas",
    b"delete",
    b"incr",
    b"decr",
    b"touch",
    b"flush_all",
    b"verbosity",
];

fn reject(reply: &'static [u8], len: usize) -> Parsed<'static> {
    Parsed::Reject {
        reply,
        len,
        swallow: 0,
        unlink: None,
        unlink_base64: false,
    }
}

/// The keys of a `get` or `gat` up to the first bad one, if any (see [`Keys`]).
fn checked_keys<'a>(rest: &'a [u8], limits: &Limits) -> Keys<'a> {
    let mut start = 0; // where the token looked at begins in `rest`
    for token in rest.split(|&b| b == b' ') {
        if !token.is_empty() && !valid_key(token, limits) {
            return Keys {
                text: &rest[..start],
                bad_key_follows: true,
            };
        }
        start += token.len() + 1;
    }
    Keys {
        text: rest,
        bad_key_follows: false,
    }
}

fn split_first_token(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = s.iter().position(|&b| b != b' ')?;
    let s = &s[start..];
    let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

/// `mg`/`ms`/`md`/`ma <key> [<datalen>] <flags>*`, checked in memcached's order: the key's length, the
/// token count, `ms`'s data length (a bad one is refused without swallowing the data block, as memcached
/// does), then the flags (a bad one is refused and `ms`'s data block swallowed). Errors are sent even with `q`.
///
/// Flags memcached accepts and ignores on a command (`v` on `ms`, `t` on `md`, `h`, `l` and `R` off `mg`,
/// ...) are accepted and ignored. With `b` the token is
/// base64: its length is checked before it is decoded (as memcached checks it), the decoded key is not.
fn meta<'a>(
    name: &[u8],
    rest: &'a [u8],
    buf: &'a [u8],
    line_len: usize,
    limits: &Limits,
) -> Parsed<'a> {
    let Some((key, rest)) = split_first_token(rest) else {
        return reject(ERROR, line_len);
    };
    if key.len() > MAX_KEY_LEN {
        return reject(BAD_FORMAT, line_len);
    }
    let set = name == b"ms";
    let (datalen, text) = match (set, split_first_token(rest)) {
        (false, _) => (None, rest),
        (true, Some((datalen, text))) => (Some(datalen), text),
        (true, None) => return reject(BAD_FORMAT, line_len),
    };
    let words = 2 + usize::from(set) + text.split(|&b| b == b' ').filter(|t| !t.is_empty()).count();
    if words + 1 > META_MAX_TOKENS {
        return reject(
            match name {
                b"mg" => b"CLIENT_ERROR options flags are too long\r\n",
                _ => b"CLIENT_ERROR options flags too long\r\n",
            },
            line_len,
        );
    }
    // `ms`: the data block's length is known from here on, so a refused line swallows it.
    let bytes = match datalen.map(parse_i32) {
        None => None,
        Some(Some(n)) if (0..=i32::MAX - 2).contains(&n) => Some(n as usize),
        Some(_) => return reject(BAD_FORMAT, line_len),
    };
    let refuse = |reply: &'static [u8]| Parsed::Reject {
        reply,
        len: line_len,
        swallow: bytes.map_or(0, |b| b + 2),
        unlink: None,
        unlink_base64: false,
    };
    let flags = match meta_flags(key, text) {
        // `md` and `ma` give one answer to every bad flag.
        Err(_) if matches!(name, b"md" | b"ma") => return refuse(META_BAD_FLAG),
        Err(reply) => return refuse(reply),
        Ok(flags) => flags,
    };
    let mode = flags.tokens().find(|t| t[0] == b'M').map(|t| t[1]);
    // memcached checks an opaque's length as it prints it: after the flags, and after `ms`'s mode.
    let opaque_too_long = flags
        .tokens()
        .any(|t| t[0] == b'O' && t.len() > META_MAX_OPAQUE);
    if !valid_key(key, limits) {
        return refuse(BAD_FORMAT);
    }
    if opaque_too_long && matches!(name, b"mg" | b"md") {
        return refuse(META_OPAQUE_TOO_LONG);
    }
    let one = |cmd| Parsed::Command { cmd, len: line_len };
    match name {
        b"mg" => one(Command::MetaGet { key, flags }),
        b"md" => one(Command::MetaDelete { key, flags }),
        b"ma" => match mode {
            Some(m) if !matches!(m, b'I' | b'+' | b'D' | b'-') => {
                refuse(b"CLIENT_ERROR invalid mode for ma M token\r\n")
            }
            _ if opaque_too_long => refuse(META_OPAQUE_TOO_LONG),
            m => one(Command::MetaArith {
                key,
                incr: !matches!(m, Some(b'D' | b'-')),
                flags,
            }),
        },
        _ => {
            let op = match mode {
                None | Some(b'S') => StoreOp::Set,
                Some(b'E') => StoreOp::Add,
                Some(b'A') => StoreOp::Append,
                Some(b'P') => StoreOp::Prepend,
                Some(b'R') => StoreOp::Replace,
                Some(_) => return refuse(b"CLIENT_ERROR invalid mode for ms M token\r\n"),
            };
            if opaque_too_long {
                return refuse(META_OPAQUE_TOO_LONG);
            }
            // A compare upgrades a set or a replace to a `cas` (an append or prepend compares by itself).
            let op = match (op, flags.cas) {
                (StoreOp::Set | StoreOp::Replace, Some(_)) => StoreOp::Cas,
                (op, _) => op,
            };
            let bytes = bytes.unwrap_or_default();
            let mut decoded = [0; MAX_KEY_LEN];
            if item_size(meta_key(key, flags.base64, &mut decoded).len(), bytes) > limits.item_max {
                return Parsed::Reject {
                    reply: TOO_LARGE,
                    len: line_len,
                    swallow: bytes + 2,
                    unlink: Some(key),
                    unlink_base64: flags.base64,
                };
            }
            let total = line_len + bytes + 2;
            if buf.len() < total {
                return Parsed::Incomplete;
            }
            if &buf[line_len + bytes..total] != b"\r\n" {
                return Parsed::BadChunk {
                    reply: BAD_CHUNK,
                    len: total,
                };
            }
            Parsed::Command {
                cmd: Command::MetaSet {
                    op,
                    key,
                    data: &buf[line_len..line_len + bytes],
                    flags,
                },
                len: total,
            }
        }
    }
}

/// The flags of a meta command, or the error memcached gives for them: a repeated letter or an unknown one
/// ends the reading at once; a bad argument is noted and the reading goes on (a later error's words win).
/// `b` decodes `key` where it stands, as memcached does, so a key that is not base64 is such a noted error.
fn meta_flags<'a>(key: &[u8], text: &'a [u8]) -> Result<MetaFlags<'a>, &'static [u8]> {
    let mut flags = MetaFlags {
        text,
        delta: 1,
        ..MetaFlags::default()
    };
    let mut seen = [false; 128];
    let mut error = None;
    let mut bad = |words: Option<&'static [u8]>| error = words.or(error).or(Some(BAD_FORMAT));
    for token in text.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
        let (letter, arg) = (token[0], &token[1..]);
        if letter >= 127 || std::mem::replace(&mut seen[letter as usize], true) {
            return Err(META_DUPLICATE_FLAG);
        }
        match letter {
            b'T' | b'N' | b'R' => match parse_i32(arg) {
                Some(ttl) if letter == b'T' => flags.ttl = Some(ttl.into()),
                Some(ttl) if letter == b'N' => {
                    flags.vivify = Some(ttl.into());
                    flags.vivify_last = true;
                }
                Some(ttl) => {
                    flags.recache = Some(ttl.into());
                    flags.recache_after_ttl = flags.ttl.is_some();
                }
                None => bad(Some(META_BAD_TOKEN)),
            },
            b'C' => match parse_u64(arg) {
                Some(cas) => flags.cas = Some(cas),
                None => bad(Some(META_BAD_TOKEN)),
            },
            b'F' => match parse_flags(arg) {
                Some(f) => flags.client_flags = f,
                None => bad(None),
            },
            b'M' if token.len() != 2 => bad(Some(b"CLIENT_ERROR incorrect length for M token\r\n")),
            b'J' => match parse_u64(arg) {
                Some(n) => flags.initial = n,
                None => bad(Some(b"CLIENT_ERROR invalid numeric initial value\r\n")),
            },
            b'D' => match parse_u64(arg) {
                Some(n) => flags.delta = n,
                None => bad(Some(b"CLIENT_ERROR invalid numeric delta value\r\n")),
            },
            b'b' => {
                flags.base64 = true;
                if decode_base64_key(key, &mut [0; MAX_KEY_LEN]).is_none() {
                    bad(Some(META_BAD_BASE64));
                }
            }
            b'q' => flags.quiet = true,
            b'v' => flags.value = true,
            b'u' => flags.no_bump = true,
            b'I' => flags.stale = true,
            b'M' | b'O' | b'h' | b'l' | b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' => {}
            _ => return Err(META_INVALID_FLAG),
        }
        if letter == b'T' {
            flags.vivify_last = false;
        }
    }
    match error {
        Some(words) => Err(words),
        None => Ok(flags),
    }
}

/// `<key> <flags> <exptime> <bytes> [<cas unique>] [noreply]\r\n<data>\r\n`
fn storage<'a>(
    op: StoreOp,
    args: &[&'a [u8]],
    buf: &'a [u8],
    line_len: usize,
    limits: &Limits,
) -> Parsed<'a> {
    // The caller checked the token count; a token past the last field is ignored (unless it is `noreply`).
    let noreply = args.last() == Some(&&b"noreply"[..]);
    let Some(bytes) = parse_i32(args[3]).and_then(|b| usize::try_from(b).ok()) else {
        return reject(BAD_FORMAT, line_len);
    };
    if bytes > i32::MAX as usize - 2 {
        return reject(BAD_FORMAT, line_len);
    }
    let key = args[0];
    let fields = (parse_flags(args[1]), parse_i32(args[2]).map(i64::from));
    let cas = if op == StoreOp::Cas {
        parse_u64(args[4])
    } else {
        Some(0)
    };
    let (Some(flags), Some(exptime), Some(cas)) = (fields.0, fields.1, cas) else {
        // The length is known, so the data block is swallowed rather than read as commands.
        return Parsed::Reject {
            reply: BAD_FORMAT,
            len: line_len,
            swallow: bytes + 2,
            unlink: None,
            unlink_base64: false,
        };
    };
    if !valid_key(key, limits) {
        return Parsed::Reject {
            reply: BAD_FORMAT,
            len: line_len,
            swallow: bytes + 2,
            unlink: None,
            unlink_base64: false,
        };
    }
    if item_size(key.len(), bytes) > limits.item_max {
        return Parsed::Reject {
            reply: if noreply { b"" } else { TOO_LARGE },
            len: line_len,
            swallow: bytes + 2,
            unlink: (op == StoreOp::Set).then_some(key),
            unlink_base64: false,
        };
    }
    let total = line_len + bytes + 2;
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    if &buf[line_len + bytes..total] != b"\r\n" {
        return Parsed::BadChunk {
            reply: if noreply { b"" } else { BAD_CHUNK },
            len: total,
        };
    }
    let data = &buf[line_len..line_len + bytes];
    Parsed::Command {
        cmd: Command::Store {
            op,
            key,
            flags,
            exptime,
            data,
            cas,
            noreply,
        },
        len: total,
    }
}

/// The value of a base64 character in memcached's decoder (`=` is 0); `None` for a byte it skips.
fn base64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        b'=' => Some(0),
        _ => None,
    }
}

/// A meta command's base64 key (`b`), decoded into `out` as memcached 1.6.18 decodes it (its `base64.c`):
/// bytes outside the alphabet are skipped (`Zm9v!` is `foo`); the rest must come in whole groups of four
/// (`Zm8` and `Zm9v=` are refused); a group with one or two `=` ends the key there (`Zm8=Zm8=` is `fo`), wherever
/// in the group they stand (`=AAA` is two zero bytes), and three or four refuse it. Returns the decoded length
/// (1 or more), `None` for memcached's `CLIENT_ERROR error decoding key`. A token of at most 250 bytes (the
/// parser refuses a longer one first, as memcached does) decodes to at most 187 bytes.
pub fn decode_base64_key(token: &[u8], out: &mut [u8; MAX_KEY_LEN]) -> Option<usize> {
    let count = token.iter().filter(|&&c| base64_value(c).is_some()).count();
    if count == 0 || count % 4 != 0 || count / 4 * 3 > out.len() {
        return None;
    }
    let (mut block, mut n, mut pad, mut len) = ([0u8; 4], 0, 0, 0);
    for &c in token {
        let Some(v) = base64_value(c) else {
            continue;
        };
        pad += usize::from(c == b'=');
        block[n] = v;
        n += 1;
        if n == 4 {
            out[len] = block[0] << 2 | block[1] >> 4;
            out[len + 1] = block[1] << 4 | block[2] >> 2;
            out[len + 2] = block[2] << 6 | block[3];
            len += 3;
            n = 0;
            match pad {
                0 => {}
                1 | 2 => return Some(len - pad),
                _ => return None,
            }
        }
    }
    Some(len)
}

/// `bytes` in base64 with `=` padding and no line breaks, as memcached prints a `b` key for `k`.
pub fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> shift & 63) as usize]
            } else {
                b'='
            });
        }
    }
}

/// The key a meta command names: `token` itself, or with `b` (`base64`) the bytes it decodes to in `buf`.
/// The parser has checked a `b` key, so it decodes; should it not, the token is the key.
pub fn meta_key<'b>(token: &'b [u8], base64: bool, buf: &'b mut [u8; MAX_KEY_LEN]) -> &'b [u8] {
    match base64.then(|| decode_base64_key(token, buf)).flatten() {
        Some(len) => &buf[..len],
        None => token,
    }
}

/// What an item costs against `-I` and the memory limit: key, value and a fixed overhead (the entry, its
/// hash-map slot and LRU links), as memcached counts its item header.
pub const fn item_size(key_len: usize, value_len: usize) -> usize {
    key_len + value_len + ITEM_OVERHEAD
}

/// Per-item bookkeeping counted against the limits.
pub const ITEM_OVERHEAD: usize = 64;

/// 1 to 250 bytes, no control characters unless `limits` allow them (spaces cannot occur: they split tokens).
pub fn valid_key(key: &[u8], limits: &Limits) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && (limits.control_chars_in_keys || key.iter().all(|&b| b > b' ' && b != 0x7f))
}

/// A number as libc's `strtoull`/`strtol` read it, which is how memcached reads every numeric field: leading
/// white space, an optional sign, decimal digits, then the end of the token, white space or a NUL (anything
/// else refuses the token). Returns whether it was negative and the magnitude; `None` also when the magnitude
/// overflows a `u64` (`ERANGE`).
fn c_number(s: &[u8]) -> Option<(bool, u64)> {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let s = &s[s.iter().take_while(|b| is_space(b)).count()..];
    let (negative, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || s.get(digits).is_some_and(|b| !is_space(b) && *b != 0) {
        return None;
    }
    let magnitude = s[..digits].iter().try_fold(0u64, |n, &b| {
        n.checked_mul(10)?.checked_add((b - b'0') as u64)
    })?;
    Some((negative, magnitude))
}

/// memcached's `safe_strtoull` (deltas, cas uniques, counter values): `strtoull`, whose `-n` is `2^64 - n`,
/// refused only when that looks negative as a signed number. So `+1`, `007`, `-0` are numbers, `-1` is not, and
/// `-18446744073709551615` is 1, as in memcached.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let (negative, magnitude) = c_number(s)?;
    let n = if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    };
    (!negative || (n as i64) >= 0).then_some(n)
}

/// Flags, as memcached 1.6 reads them: `safe_strtoul` (on 64-bit Linux the same as [`parse_u64`]) stored
/// into 32 bits, so `4294967296` is 0 and `18446744073709551615` is 4294967295.
pub fn parse_flags(s: &[u8]) -> Option<u32> {
    parse_u64(s).map(|n| n as u32)
}

/// memcached's `safe_strtol` (exptimes, `bytes`): a `long` (`i64`) that must not overflow, stored into an
/// `int32_t`, so `4294967396` is 100 and `2147483648` is -2147483648.
pub fn parse_i32(s: &[u8]) -> Option<i32> {
    let (negative, magnitude) = c_number(s)?;
    let n = if negative {
        0i64.checked_sub_unsigned(magnitude)?
    } else {
        i64::try_from(magnitude).ok()?
    };
    Some(n as i32)
}

/// Appends `n` in decimal (no formatting machinery on the hot path).
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: &Limits = &Limits {
        item_max: 1 << 20,
        control_chars_in_keys: false,
    };

    fn cmd(buf: &[u8]) -> Command<'_> {
        match parse(buf, MAX) {
            Parsed::Command { cmd, len } => {
                assert_eq!(len, buf.len(), "whole buffer is one command");
                cmd
            }
            other => panic!("expected a command, got {other:?}"),
        }
    }

    fn rejected(buf: &[u8]) -> (&'static [u8], usize, usize) {
        match parse(buf, MAX) {
            Parsed::Reject {
                reply,
                len,
                swallow,
                ..
            } => (reply, len, swallow),
            Parsed::BadChunk { reply, len } => (reply, len, 0),
            other => panic!("expected a reject, got {other:?}"),
        }
    }

    #[test]
    fn get_with_many_keys_borrows_them() {
        let Command::Get { keys, cas: false } = cmd(b"get a  bb ccc\r\n") else {
            panic!()
        };
        assert_eq!(keys.iter().collect::<Vec<_>>(), [&b"a"[..], b"bb", b"ccc"]);
        let Command::Gat {
            exptime: -5,
            keys,
            cas: true,
        } = cmd(b"gats -5 k1 k2\n")
        else {
            panic!()
        };
        assert_eq!(keys.iter().count(), 2);
    }

    #[test]
    fn storage_commands_wait_for_their_data_block() {
        let full = b"set k 5 100 3\r\nabc\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut], MAX), Parsed::Incomplete, "cut at {cut}");
        }
        assert_eq!(
            cmd(full),
            Command::Store {
                op: StoreOp::Set,
                key: b"k",
                flags: 5,
                exptime: 100,
                data: b"abc",
                cas: 0,
                noreply: false
            }
        );
        let Command::Store {
            op: StoreOp::Cas,
            cas: 77,
            noreply: true,
            data: b"",
            ..
        } = cmd(b"cas k 0 0 0 77 noreply\r\n\r\n")
        else {
            panic!()
        };
    }

    #[test]
    fn pipelined_commands_come_one_at_a_time() {
        let buf = b"incr a 1\r\ndecr b 2 noreply\r\nget x";
        let Parsed::Command { cmd, len } = parse(buf, MAX) else {
            panic!()
        };
        assert_eq!(
            cmd,
            Command::Arith {
                key: b"a",
                delta: 1,
                incr: true,
                noreply: false
            }
        );
        let Parsed::Command { cmd, len: len2 } = parse(&buf[len..], MAX) else {
            panic!()
        };
        assert_eq!(
            cmd,
            Command::Arith {
                key: b"b",
                delta: 2,
                incr: false,
                noreply: true
            }
        );
        assert_eq!(parse(&buf[len + len2..], MAX), Parsed::Incomplete);
    }

    #[test]
    fn bad_input_gets_memcached_replies() {
        assert_eq!(rejected(b"bogus\r\n"), (ERROR, 7, 0));
        assert_eq!(rejected(b"\r\n"), (ERROR, 2, 0));
        assert_eq!(rejected(b"get\r\n"), (ERROR, 5, 0));
        assert_eq!(rejected(b"set k 0 0\r\n"), (ERROR, 11, 0));
        assert_eq!(rejected(b"set k 0 0 -1\r\n"), (BAD_FORMAT, 14, 0));
        // Bad flags with a good length: the data block is swallowed.
        assert_eq!(rejected(b"set k x 0 3\r\n"), (BAD_FORMAT, 13, 5));
        assert_eq!(
            rejected(b"set k 18446744073709551616 0 3\r\n"),
            (BAD_FORMAT, 32, 5)
        );
        // Too few or too many tokens is `ERROR`, and the data block is read as commands, as in memcached.
        assert_eq!(rejected(b"set k 0 0 1 a b c d e f g\r\n"), (ERROR, 27, 0));
        assert_eq!(rejected(b"incr k 1 2 3 4 5 6 7 8 9\r\n").0, ERROR);
        assert_eq!(rejected(b"delete\r\n").0, ERROR);
        assert_eq!(cmd(b"version 1 2 3 4 5 6 7 8 9\r\n"), Command::Version);
        assert_eq!(cmd(b"stats slabs\r\n"), Command::StatsSlabs);
        assert_eq!(rejected(b"stats sizes\r\n").0, ERROR);
        assert_eq!(rejected(b"stats detail on\r\n").0, STATS_DETAIL_USAGE);
        assert_eq!(cmd(b"stats trust\r\n"), Command::StatsTrust);
        assert_eq!(rejected(b"set k 0 0 3\r\nabcd\r\n"), (BAD_CHUNK, 18, 0));
        assert_eq!(rejected(b"incr k x\r\n").0, BAD_DELTA);
        assert_eq!(rejected(b"incr k -1\r\n").0, BAD_DELTA);
        assert_eq!(rejected(b"verbosity x\r\n").0, BAD_FORMAT);
        assert_eq!(rejected(b"incr k 18446744073709551616\r\n").0, BAD_DELTA);
        assert_eq!(rejected(b"touch k x\r\n").0, BAD_EXPTIME);
        assert_eq!(rejected(b"delete k 5\r\n").0, BAD_DELETE);
        assert_eq!(rejected(b"flush_all x\r\n").0, BAD_EXPTIME);
        let long = [b'k'; 251];
        let line = [&b"get "[..], &long, b"\r\n"].concat();
        // A bad key in a `get` ends its keys: those before it are looked up, and the reply is the error.
        assert_eq!(bad_get(&line), Vec::<&[u8]>::new());
        assert_eq!(bad_get(b"get ok bad\x01key more\r\n"), [&b"ok"[..]]);
        assert_eq!(rejected(b"GET k\r\n").0, ERROR);
        let lenient = Limits {
            control_chars_in_keys: true,
            ..*MAX
        };
        let Parsed::Command {
            cmd: Command::Get { keys, .. },
            ..
        } = parse(b"get ok bad\x01key\r\n", &lenient)
        else {
            panic!()
        };
        assert!(!keys.bad_key_follows());
        assert_eq!(keys.iter().count(), 2);
        let Parsed::Command {
            cmd: Command::Get { keys, .. },
            ..
        } = parse(&line, &lenient)
        else {
            panic!()
        };
        assert!(keys.bad_key_follows());
    }

    /// The keys of a `get`/`gat` line with a bad key: those before it.
    fn bad_get(buf: &[u8]) -> Vec<&[u8]> {
        match cmd(buf) {
            Command::Get { keys, .. } | Command::Gat { keys, .. } => {
                assert!(keys.bad_key_follows());
                keys.iter().collect()
            }
            other => panic!("expected a get, got {other:?}"),
        }
    }

    /// memcached reads a command line as a C string: it ends at the first NUL byte.
    #[test]
    fn a_nul_byte_ends_the_line() {
        assert_eq!(cmd(b"version\0junk\r\n"), Command::Version);
        let Command::Get { keys, .. } = cmd(b"get a\0b c\r\n") else {
            panic!()
        };
        assert_eq!(keys.iter().collect::<Vec<_>>(), [&b"a"[..]]);
        assert_eq!(rejected(b"get \0a\r\n"), (ERROR, 8, 0));
        assert_eq!(rejected(b"\0get a\r\n"), (ERROR, 8, 0));
        let Parsed::Command {
            cmd:
                Command::Store {
                    key: b"k",
                    data: b"a",
                    ..
                },
            len: 21,
        } = parse(b"set k 0 0 1\0junk\r\na\r\n", MAX)
        else {
            panic!()
        };
    }

    /// A line that ends with `noreply` gets no reply, even an error (as in memcached 1.6); the bytes to drop
    /// and to swallow are the same as without it. Commands without `noreply` still answer.
    #[test]
    fn noreply_silences_errors_too() {
        for (line, swallow) in [
            (&b"incr k x noreply\r\n"[..], 0),
            (b"touch k soon noreply\r\n", 0),
            (b"flush_all later noreply\r\n", 0),
            (b"delete k 5 noreply\r\n", 0),
            (b"verbosity noreply\r\n", 0),
            (b"set k 0 0 noreply\r\n", 0),
            (b"set k x 0 3 noreply\r\n", 5),
            (b"cas k 0 0 3 noreply\r\n", 5),
            (b"append bad\x01key 0 0 3 noreply\r\n", 5),
        ] {
            let line_len = line.iter().position(|&b| b == b'\n').unwrap() + 1;
            assert_eq!(
                rejected(line),
                (&b""[..], line_len, swallow),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(bad_get(b"get k noreply\x01\r\n"), [&b"k"[..]]);
        assert_eq!(rejected(b"stats noreply\r\n").0, ERROR);
        assert_eq!(rejected(b"bogus noreply\r\n").0, ERROR);
        assert_eq!(rejected(b"gat x k noreply\r\n").0, BAD_EXPTIME);
        assert_eq!(rejected(b"incr k x noreply extra\r\n").0, ERROR);
        // A wrong number of tokens is `ERROR` before memcached looks for `noreply`.
        for line in [
            &b"decr k 1 2 noreply\r\n"[..],
            b"set k 0 0 1 a b c d e f g noreply\r\n",
            b"incr k 1 2 3 4 5 6 7 8 9 noreply\r\n",
            b"flush_all 1 2 noreply\r\n",
        ] {
            assert_eq!(rejected(line).0, ERROR, "{}", String::from_utf8_lossy(line));
        }
        // `delete noreply` deletes the key "noreply".
        assert_eq!(
            cmd(b"delete noreply\r\n"),
            Command::Delete {
                key: b"noreply",
                noreply: false
            }
        );
    }

    /// The meta commands: flags kept in their order, `ms`'s data block read (or swallowed when the line is
    /// refused after its length parsed, and not when the length is bad), errors worded as memcached's.
    #[test]
    fn meta_commands() {
        let Command::MetaGet { key: b"k", flags } = cmd(b"mg k v O12 T-1 q t\r\n") else {
            panic!()
        };
        assert!(flags.value && flags.quiet && !flags.no_bump);
        assert_eq!(flags.ttl, Some(-1));
        assert_eq!(
            flags.tokens().collect::<Vec<_>>(),
            [&b"v"[..], b"O12", b"T-1", b"q", b"t"]
        );
        let full = b"ms k 3 MA C5 F9 T0\r\nabc\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut], MAX), Parsed::Incomplete, "cut at {cut}");
        }
        let Command::MetaSet {
            op: StoreOp::Append,
            key: b"k",
            data: b"abc",
            flags,
        } = cmd(full)
        else {
            panic!()
        };
        assert_eq!(
            (flags.cas, flags.client_flags, flags.ttl),
            (Some(5), 9, Some(0))
        );
        // A compare makes a set or a replace a `cas`.
        let Command::MetaSet {
            op: StoreOp::Cas, ..
        } = cmd(b"ms k 0 MR C1\r\n\r\n")
        else {
            panic!()
        };
        let Command::MetaArith {
            incr: false, flags, ..
        } = cmd(b"ma k M- N0 J7 D3\r\n")
        else {
            panic!()
        };
        assert_eq!((flags.vivify, flags.initial, flags.delta), (Some(0), 7, 3));
        assert!(flags.vivify_last);
        assert_eq!(cmd(b"mn whatever\r\n"), Command::MetaNoop);
        assert_eq!(rejected(b"ms k x\r\nab\r\n"), (BAD_FORMAT, 8, 0));
        assert_eq!(rejected(b"ms k 2 Z\r\nab\r\n"), (META_INVALID_FLAG, 10, 4));
        assert_eq!(rejected(b"ms k 2 q q\r\n").0, META_DUPLICATE_FLAG);
        assert_eq!(rejected(b"md k q q\r\n").0, META_BAD_FLAG);
        assert_eq!(rejected(b"mg k Tx\r\n").0, META_BAD_TOKEN);
        assert_eq!(rejected(b"ms k 2 Fx\r\n").0, BAD_FORMAT);
        assert_eq!(rejected(b"mg\r\n").0, ERROR);
        // `N` and `R` of `mg`, `I` of `ms` and `md`: kept for the shard, in their order against `T`.
        let Command::MetaGet { flags, .. } = cmd(b"mg k R5 T9 N30\r\n") else {
            panic!()
        };
        assert_eq!((flags.recache, flags.recache_after_ttl), (Some(5), false));
        assert_eq!(
            (flags.ttl, flags.vivify, flags.vivify_last),
            (Some(9), Some(30), true)
        );
        let Command::MetaGet { flags, .. } = cmd(b"mg k T9 R5\r\n") else {
            panic!()
        };
        assert!(flags.recache_after_ttl && !flags.stale);
        let Command::MetaDelete { flags, .. } = cmd(b"md k I T30\r\n") else {
            panic!()
        };
        assert!(flags.stale);
        assert_eq!(rejected(b"mg k Rx\r\n").0, META_BAD_TOKEN);
        assert_eq!(rejected(b"ms k 1 MX\r\n").1, 11);
        // `h` and `l` are `mg` flags printed from the item; the parser only keeps them in their place.
        let Command::MetaGet { flags, .. } = cmd(b"mg k h l v\r\n") else {
            panic!()
        };
        assert_eq!(flags.tokens().collect::<Vec<_>>(), [&b"h"[..], b"l", b"v"]);
    }

    fn decoded(token: &[u8]) -> Option<Vec<u8>> {
        let mut buf = [0; MAX_KEY_LEN];
        decode_base64_key(token, &mut buf).map(|len| buf[..len].to_vec())
    }

    /// memcached 1.6.18's base64 decoder, each case checked against it (`mg <token> b k` prints the key it
    /// decoded, encoded again): bytes outside the alphabet are skipped, groups of four, padding ends the key
    /// wherever it stands in its group, three `=` refuse it.
    #[test]
    fn base64_keys_decode_as_memcached_decodes_them() {
        assert_eq!(decoded(b"Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(decoded(b"Zm8=").as_deref(), Some(&b"fo"[..]));
        assert_eq!(decoded(b"Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(decoded(b"AAEC/w==").as_deref(), Some(&[0, 1, 2, 255][..]));
        assert_eq!(decoded(b"Zm9v!").as_deref(), Some(&b"foo"[..]));
        assert_eq!(decoded(b"Zm!9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(decoded(b"Zm8=Zm8=").as_deref(), Some(&b"fo"[..]));
        assert_eq!(decoded(b"Zm9=").as_deref(), Some(&b"fo"[..]));
        assert_eq!(decoded(b"=AAA").as_deref(), Some(&[0, 0][..]));
        for bad in [
            &b"Zm9"[..],
            b"Zm9vv",
            b"Zm9v=",
            b"Zm9=v",
            b"!!!!",
            b"A===",
            b"====",
            b"",
            b"AAEC_w==",
        ] {
            assert_eq!(decoded(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        // Back to base64 for `k`: canonical, padded, no line breaks.
        for (bytes, text) in [
            (&b"foo"[..], &b"Zm9v"[..]),
            (b"fo", b"Zm8="),
            (b"f", b"Zg=="),
            (&[0, 0], b"AAA="),
            (&[0, 1, 2, 255], b"AAEC/w=="),
        ] {
            let mut out = Vec::new();
            push_base64(&mut out, bytes);
            assert_eq!(out, text);
        }
        let key: Vec<u8> = (0..=185).rev().collect();
        let mut text = Vec::new();
        push_base64(&mut text, &key);
        assert_eq!(text.len(), 248);
        assert_eq!(decoded(&text), Some(key));
    }

    /// `b` on the meta commands: the token is checked where `b` stands among the flags (a bad token after it
    /// wins, before it loses, as in memcached), `md`/`ma` word it their way, the token's length is what
    /// counts against 250 bytes, and a refused `ms` swallows its data block and unlinks the decoded key.
    #[test]
    fn base64_meta_keys() {
        let Command::MetaGet { key, flags } = cmd(b"mg Zm9v b k v\r\n") else {
            panic!()
        };
        assert!(flags.base64);
        let mut buf = [0; MAX_KEY_LEN];
        assert_eq!(meta_key(key, flags.base64, &mut buf), b"foo");
        assert_eq!(meta_key(b"Zm9v", false, &mut buf), b"Zm9v");
        assert_eq!(rejected(b"mg Zm9 b k\r\n").0, META_BAD_BASE64);
        assert_eq!(rejected(b"mg Zm9 b Tx\r\n").0, META_BAD_TOKEN);
        assert_eq!(rejected(b"mg Zm9 Tx b\r\n").0, META_BAD_BASE64);
        assert_eq!(rejected(b"mg Zm9 b x\r\n").0, META_INVALID_FLAG);
        assert_eq!(rejected(b"mg Zm9v b b\r\n").0, META_DUPLICATE_FLAG);
        assert_eq!(rejected(b"md Zm9 b\r\n").0, META_BAD_FLAG);
        assert_eq!(rejected(b"ma Zm9 b\r\n").0, META_BAD_FLAG);
        assert_eq!(rejected(b"ms Zm9 2 b\r\nab\r\n"), (META_BAD_BASE64, 12, 4));
        let long = [b"mg ".to_vec(), b"Zm9v".repeat(63), b" b\r\n".to_vec()].concat();
        assert_eq!(rejected(&long).0, BAD_FORMAT);
        let limits = Limits {
            item_max: item_size(3, 10),
            ..Limits::default()
        };
        // 13 bytes: too large with the 4-byte token, not with the 3-byte key it decodes to.
        assert!(matches!(
            parse(b"ms Zm9v 11 b\r\n", &limits),
            Parsed::Reject {
                reply: TOO_LARGE,
                unlink: Some(b"Zm9v"),
                unlink_base64: true,
                ..
            }
        ));
        assert!(matches!(
            parse(b"ms Zm9v 10 b\r\n0123456789\r\n", &limits),
            Parsed::Command { .. }
        ));
    }

    #[test]
    fn a_key_of_250_bytes_is_fine() {
        let key = [b'k'; 250];
        let line = [&b"delete "[..], &key, b"\r\n"].concat();
        assert_eq!(
            cmd(&line),
            Command::Delete {
                key: &key,
                noreply: false
            }
        );
    }

    #[test]
    fn too_large_items_are_swallowed_and_unlink_on_set() {
        match parse(b"set big 0 0 2000000 noreply\r\n", MAX) {
            Parsed::Reject {
                reply: b"",
                len: 29,
                swallow: 2_000_002,
                unlink: Some(b"big"),
                unlink_base64: false,
            } => {}
            other => panic!("{other:?}"),
        }
        match parse(b"add big 0 0 2000000\r\n", MAX) {
            Parsed::Reject {
                reply: TOO_LARGE,
                swallow: 2_000_002,
                unlink: None,
                unlink_base64: false,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lines_past_the_limit_close_the_connection() {
        let mut long = b"get ".to_vec();
        long.resize(MAX_LINE + 1, b'a');
        assert_eq!(parse(&long, MAX), Parsed::Close(LINE_TOO_LONG));
        assert_eq!(parse(&long[..MAX_LINE], MAX), Parsed::Incomplete);
        // Any other line may not grow past 2048 bytes without its newline (memcached closes it).
        let mut set = b"set ".to_vec();
        set.resize(MAX_PLAIN_LINE + 1, b'k');
        assert_eq!(parse(&set, MAX), Parsed::Close(LINE_TOO_LONG));
        assert_eq!(parse(&set[..MAX_PLAIN_LINE], MAX), Parsed::Incomplete);
        let mut gets = vec![b' '; MAX_LEADING_SPACES];
        gets.extend_from_slice(b"gets ");
        gets.resize(MAX_PLAIN_LINE + 1, b'k');
        assert_eq!(parse(&gets, MAX), Parsed::Incomplete);
        gets.insert(0, b' ');
        assert_eq!(parse(&gets, MAX), Parsed::Close(LINE_TOO_LONG));
        // With its newline, a long line is read as any other.
        set.extend_from_slice(b" 0 0 1\r\n");
        assert_eq!(rejected(&set).0, BAD_FORMAT);
    }

    /// The numbers of memcached 1.6.18 (each checked against it): `strtoull`/`strtol` read a token.
    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"+1"), Some(1));
        assert_eq!(parse_u64(b"-0"), Some(0));
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"-18446744073709551615"), Some(1));
        assert_eq!(parse_u64(b"\t1"), Some(1));
        assert_eq!(parse_u64(b"000000000000000000000000042"), Some(42));
        for bad in [&b""[..], b"+", b"-", b"0x10", b"1a", b"+-1", b"1 "] {
            // "1 " cannot be a token (spaces split), but "1\t" can, and is 1, as `strtoull` stops at space.
            let want = (bad == b"1 ").then_some(1);
            assert_eq!(parse_u64(bad), want, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_flags(b"4294967296"), Some(0));
        assert_eq!(parse_flags(b"18446744073709551615"), Some(u32::MAX));
        assert_eq!(parse_flags(b"-4294967295"), None);
        assert_eq!(parse_i32(b"-9223372036854775808"), Some(0));
        assert_eq!(parse_i32(b"-9223372036854775809"), None);
        assert_eq!(parse_i32(b"9223372036854775807"), Some(-1));
        assert_eq!(parse_i32(b"4294967396"), Some(100));
        assert_eq!(parse_i32(b"2147483648"), Some(i32::MIN));
        assert_eq!(parse_i32(b"+100"), Some(100));
        assert_eq!(parse_i32(b"-"), None);
        let mut out = Vec::new();
        for n in [0, 7, 10, u64::MAX] {
            out.clear();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    /// Random bytes built from protocol fragments: every parse either needs more input or consumes at least
    /// one byte and no more than it has (or, past the line limit, closes); never a panic.
    #[test]
    fn random_input_never_panics_and_always_progresses() {
        const PIECES: &[&[u8]] = &[
            b"get ",
            b"gets ",
            b"gat ",
            b"set ",
            b"add ",
            b"cas ",
            b"append ",
            b"incr ",
            b"decr ",
            b"touch ",
            b"delete ",
            b"flush_all",
            b"stats",
            b"version",
            b"verbosity ",
            b"quit",
            b"noreply",
            b"mg ",
            b"ms ",
            b"md ",
            b"ma ",
            b"mn",
            b" q",
            b" v",
            b" O1",
            b" T5",
            b" MA",
            b" C",
            b"k",
            b"key ",
            b" ",
            b"  ",
            b"\r\n",
            b"\n",
            b"\r",
            b"0",
            b"1",
            b"5 ",
            b"-1 ",
            b"99999999999999999999",
            b"abc",
            b"\x00",
            b"\x7f",
            b"\xff",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let limits = Limits {
            item_max: 200,
            control_chars_in_keys: false,
        };
        for _ in 0..20_000 {
            let mut buf = Vec::new();
            for _ in 0..next() % 40 {
                buf.extend_from_slice(PIECES[next() as usize % PIECES.len()]);
            }
            let mut pos = 0;
            while pos < buf.len() {
                let rest = &buf[pos..];
                match parse(rest, &limits) {
                    Parsed::Command { len, .. }
                    | Parsed::Reject { len, .. }
                    | Parsed::BadChunk { len, .. } => {
                        assert!(len > 0 && len <= rest.len(), "{len} of {}", rest.len());
                        pos += len;
                    }
                    Parsed::Incomplete | Parsed::Close(_) => break,
                }
            }
        }
    }
}
