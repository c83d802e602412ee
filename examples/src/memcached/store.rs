//! One shard of the cache: the `#[entrust]` type each worker's trustee owns. Every protocol command is one
//! stub call on the shard its key hashes to, so the shard is only ever touched by its trustee's thread and
//! needs no lock. Inside: a hash table of slot numbers of an index-based LRU list (no pointers, no `unsafe`;
//! the key is kept once, in the item's buffer, and compared through the slot), memory accounting against the
//! shard's share of `--memory-mb`, exptime, cas uniques and the shard's part of `stats`.
//!
//! Time is passed in (`now`, unix seconds) by the caller, which reads the clock once per batch of requests;
//! that also lets the tests below drive the clock.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::ops::AddAssign;

use hashbrown::HashTable;

use trust_core::entrust;

use super::protocol::{MAX_KEY_LEN, MAX_RELATIVE_EXPTIME, StoreOp, item_size, push_u64};

const NIL: u32 = u32::MAX;

/// Free slots, at least this many and this many times the live ones, make a shard renumber its items (see
/// `Shard::compact_if_sparse`).
const COMPACT_MIN: usize = 1024;
const COMPACT_RATIO: usize = 2;

/// Where an item's life ends: 0 is never; `None` is "already over" (a negative exptime, or an absolute time
/// in the past), as in memcached.
pub fn expiry(exptime: i64, now: u64) -> Option<u64> {
    match exptime {
        0 => Some(0),
        ..0 => None,
        1..=MAX_RELATIVE_EXPTIME => Some(now + exptime as u64),
        abs if abs as u64 > now => Some(abs as u64),
        _ => None,
    }
}

/// A storage request: key and value travel in one buffer, which becomes the item's storage as it is.
#[derive(Debug)]
pub struct StoreRequest {
    pub op: StoreOp,
    /// The key followed by the value.
    pub data: Vec<u8>,
    pub key_len: usize,
    pub flags: u32,
    pub exptime: i64,
    /// The client's cas unique (`cas` only).
    pub cas: u64,
    /// The key came base64 (`ms` with `b`): the item says so (`mg`'s `k` prints it base64), as memcached's
    /// does. An append or prepend makes a new item without the mark, as memcached's does.
    pub binary_key: bool,
    /// `ms ... I` (invalidate) with a compare: a cas unique other than 0 and below the item's stores the
    /// value as a stale item (memcached's `set_stale`), which keeps the old item's exptime and sent token.
    pub stale: bool,
}

impl StoreRequest {
    /// The request to store `data` under `key`, both copied into one buffer.
    pub fn new(
        op: StoreOp,
        key: &[u8],
        data: &[u8],
        flags: u32,
        exptime: i64,
        cas: u64,
    ) -> StoreRequest {
        let mut bytes = Vec::with_capacity(key.len() + data.len());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(data);
        StoreRequest {
            op,
            data: bytes,
            key_len: key.len(),
            flags,
            exptime,
            cas,
            binary_key: false,
            stale: false,
        }
    }
}

/// The reply of a storage command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    NotStored,
    Exists,
    NotFound,
    /// Larger than the shard's whole memory.
    OutOfMemory,
}

/// The reply of `incr`/`decr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOutcome {
    Value(u64),
    NotFound,
    NonNumeric,
}

/// The reply of `md`: `Exists` when its `C` did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    Exists,
}

/// What `mg` or `ma` found or made: what its reply flags print. `expires_before`: the item's exptime (unix
/// seconds, 0 = never) before the command's `T` (or `ma`'s `N` on an item it created); the reply derives what
/// a `t` after those flags prints from them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetaItem {
    /// The value (`mg` with `v`; `ma`'s new number in decimal); empty otherwise.
    pub value: Vec<u8>,
    /// The value's length, for `mg`'s `s`.
    pub size: usize,
    pub flags: u32,
    pub cas: u64,
    pub expires_before: u64,
    /// `ma` created it (`N`).
    pub created: bool,
    /// `mg`'s `h`: the item had been fetched before this command (memcached's `ITEM_FETCHED`).
    pub fetched: bool,
    /// `mg`'s `l`: seconds since the item's last access, as it was before this command.
    pub idle: u64,
    /// The item was stored under a base64 key (`ms ... b`): `mg`'s `k` prints its key base64, then ` b`.
    pub binary_key: bool,
    /// `mg`: the item had sent its win token before this command (`Z`).
    pub token_sent: bool,
    /// `mg`: the item is stale (`X`: `md ... I`, `ms ... I`).
    pub stale: bool,
    /// `mg`: this command won the item's token (`W`): it created the item (`N`), its TTL was below `R`'s,
    /// or it is stale; the token is then sent, and later commands see `Z` until the item is replaced.
    pub won: bool,
}

/// `mg`'s request beyond its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetaGet {
    /// `v`: the value is returned.
    pub value: bool,
    /// `T`: the new exptime.
    pub ttl: Option<i64>,
    /// Not `u`: a fetch (the LRU, `h`, `l`).
    pub bump: bool,
    /// `N`: a missing item is created, empty, with this exptime, and the command wins its token.
    pub vivify: Option<i64>,
    /// `N` came after `T`: on a created item its exptime wins.
    pub vivify_last: bool,
    /// `R`: the command wins the token of an item whose TTL is below this (unless it was sent already).
    pub recache: Option<i64>,
    /// `R` came after `T`: it sees the TTL `T` set.
    pub recache_after_ttl: bool,
}

/// `ma`'s request beyond its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaArith {
    pub delta: u64,
    pub incr: bool,
    /// `C`: applied only if the item's cas unique is this (0 compares nothing, as in memcached).
    pub cas: Option<u64>,
    /// `T`: the new exptime on success.
    pub ttl: Option<i64>,
    /// `N` and `J`: create a missing item with this exptime and value.
    pub vivify: Option<(i64, u64)>,
    /// `N` came after `T`: on a created item its exptime wins.
    pub vivify_last: bool,
}

/// The reply of `ma`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaArithOutcome {
    Value(MetaItem),
    NotFound,
    Exists,
    NonNumeric,
}

/// One shard's counters; the server adds them up over all shards for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub curr_items: u64,
    pub total_items: u64,
    pub bytes: u64,
    pub limit_maxbytes: u64,
    /// Keys asked for by `get`/`gets` (memcached counts `gat` keys under `cmd_touch` only).
    pub cmd_get: u64,
    /// Storage commands whose data block arrived (all six, stored or not).
    pub cmd_set: u64,
    /// `touch` commands and `gat`/`gats` keys.
    pub cmd_touch: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    pub touch_hits: u64,
    pub touch_misses: u64,
    pub delete_hits: u64,
    pub delete_misses: u64,
    pub incr_hits: u64,
    pub incr_misses: u64,
    pub decr_hits: u64,
    pub decr_misses: u64,
    pub cas_hits: u64,
    pub cas_misses: u64,
    pub cas_badval: u64,
    /// Live items dropped to make room.
    pub evictions: u64,
    /// Expired items removed (on access or to make room).
    pub reclaimed: u64,
    /// Expired items removed by the crawler's pass before `stats` (memcached's LRU crawler).
    pub crawler_reclaimed: u64,
}

impl AddAssign for ShardStats {
    fn add_assign(&mut self, o: Self) {
        let fields = [
            (&mut self.curr_items, o.curr_items),
            (&mut self.total_items, o.total_items),
            (&mut self.bytes, o.bytes),
            (&mut self.limit_maxbytes, o.limit_maxbytes),
            (&mut self.cmd_get, o.cmd_get),
            (&mut self.cmd_set, o.cmd_set),
            (&mut self.cmd_touch, o.cmd_touch),
            (&mut self.get_hits, o.get_hits),
            (&mut self.get_misses, o.get_misses),
            (&mut self.touch_hits, o.touch_hits),
            (&mut self.touch_misses, o.touch_misses),
            (&mut self.delete_hits, o.delete_hits),
            (&mut self.delete_misses, o.delete_misses),
            (&mut self.incr_hits, o.incr_hits),
            (&mut self.incr_misses, o.incr_misses),
            (&mut self.decr_hits, o.decr_hits),
            (&mut self.decr_misses, o.decr_misses),
            (&mut self.cas_hits, o.cas_hits),
            (&mut self.cas_misses, o.cas_misses),
            (&mut self.cas_badval, o.cas_badval),
            (&mut self.evictions, o.evictions),
            (&mut self.reclaimed, o.reclaimed),
            (&mut self.crawler_reclaimed, o.crawler_reclaimed),
        ];
        for (mine, theirs) in fields {
            *mine += theirs;
        }
    }
}

/// One slot of the LRU list. A free slot has empty `data` and sits on the free list. 64 bytes on a 64-bit
/// target, the per-item overhead counted against the limit ([`item_size`]): `key_len` is a byte (keys are at
/// most 250 bytes), which makes room for `accessed` and `marks` in what was padding.
#[derive(Debug)]
struct Entry {
    /// Key then value: one allocation per item.
    data: Vec<u8>,
    /// Unix seconds, 0 = never.
    expires: u64,
    cas: u64,
    flags: u32,
    /// Towards the most recently used end.
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
    /// memcached's `it->time`, for `mg`'s `l` (unix seconds, saturated at `u32::MAX`): set when the item is
    /// stored, by an access that updates it (see [`Shard::fetched`] and [`Shard::updated`]).
    accessed: u32,
    key_len: u8,
    /// [`FETCHED`] and [`BINARY_KEY`].
    marks: u8,
}

/// The item has been fetched (`get`, `gets`, `gat`, `touch`, `mg` without `u`): `mg`'s `h`.
const FETCHED: u8 = 1;
/// The item was stored under a base64 key (`ms ... b`).
const BINARY_KEY: u8 = 2;
/// An `mg` won the item's token (memcached's `ITEM_TOKEN_SENT`): later ones see `Z`.
const TOKEN_SENT: u8 = 4;
/// The item is stale (`md ... I`, `ms ... I`; memcached's `ITEM_STALE`): `mg` sees `X`.
const STALE: u8 = 8;

const _: () = assert!(std::mem::size_of::<Entry>() <= 64);

/// Whether `ms ... I` stores `req` over `old` as a stale item: its compare is not 0 and below the item's.
fn stale_store(req: &StoreRequest, old: &Entry) -> bool {
    req.stale && req.cas != 0 && req.cas < old.cas
}

/// `now` as an entry keeps it.
fn clock32(now: u64) -> u32 {
    u32::try_from(now).unwrap_or(u32::MAX)
}

impl Entry {
    fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }
    fn value(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }
    fn size(&self) -> usize {
        item_size(
            self.key_len as usize,
            self.data.len() - self.key_len as usize,
        )
    }
    fn expired(&self, now: u64) -> bool {
        self.expires != 0 && self.expires <= now
    }
}

/// One shard of the cache. Build it with [`Shard::new`], entrust it to a trustee, call its stubs.
#[entrust]
#[derive(Debug)]
pub struct Shard {
    /// Slot numbers, hashed by their item's key (`hasher`): the key itself lives only in the slot's buffer.
    index: HashTable<u32>,
    /// Randomly keyed SipHash, as `HashMap`'s: clients choose the keys.
    hasher: RandomState,
    slots: Vec<Entry>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used: evicted first.
    tail: u32,
    used: usize,
    limit: usize,
    item_max: usize,
    next_cas: u64,
    cas_step: u64,
    /// A delayed `flush_all`: at this unix time everything stored before it goes (0 = none pending).
    flush_at: u64,
    /// The unix second of the crawler's last pass (see [`Shard::crawl`]).
    crawled_at: u64,
    stats: ShardStats,
}

#[entrust]
impl Shard {
    /// Shard `index` of `shards`, holding at most `limit` bytes (key + value + overhead per item) and items of
    /// at most `item_max` bytes. Cas uniques are `index + 1 + k * shards`: unique across the whole server.
    pub fn new(index: usize, shards: usize, limit: usize, item_max: usize) -> Shard {
        Shard {
            index: HashTable::new(),
            hasher: RandomState::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            used: 0,
            limit,
            item_max,
            next_cas: index as u64 + 1,
            cas_step: shards.max(1) as u64,
            flush_at: 0,
            crawled_at: 0,
            stats: ShardStats {
                limit_maxbytes: limit as u64,
                ..ShardStats::default()
            },
        }
    }

    /// `get`/`gets`/`gat`/`gats` of one key: appends `VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n` to
    /// `out` on a hit and returns `out` (the connection's output buffer travels here and back, so a hit costs
    /// no allocation). `touch` is the exptime of a `gat`.
    pub fn fetch(
        &mut self,
        key: &[u8],
        with_cas: bool,
        touch: Option<i64>,
        now: u64,
        mut out: Vec<u8>,
    ) -> Vec<u8> {
        self.tick(now);
        match touch {
            Some(_) => self.stats.cmd_touch += 1,
            None => self.stats.cmd_get += 1,
        }
        let Some(i) = self.find(key, now) else {
            match touch {
                Some(_) => self.stats.touch_misses += 1,
                None => self.stats.get_misses += 1,
            }
            return out;
        };
        match touch {
            Some(_) => self.stats.touch_hits += 1,
            None => self.stats.get_hits += 1,
        }
        self.fetched(i, now);
        let e = &self.slots[i as usize];
        out.extend_from_slice(b"VALUE ");
        out.extend_from_slice(e.key());
        out.push(b' ');
        push_u64(&mut out, e.flags as u64);
        out.push(b' ');
        push_u64(&mut out, e.value().len() as u64);
        if with_cas {
            out.push(b' ');
            push_u64(&mut out, e.cas);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(e.value());
        out.extend_from_slice(b"\r\n");
        if let Some(exptime) = touch {
            // The value is returned even when the new exptime ends its life at once, as memcached does.
            match expiry(exptime, now) {
                Some(expires) => self.slots[i as usize].expires = expires,
                None => self.remove(i),
            }
        }
        out
    }

    /// `set`/`add`/`replace`/`append`/`prepend`/`cas`.
    pub fn store(&mut self, req: StoreRequest, now: u64) -> StoreOutcome {
        self.store_cas(req, now).0
    }

    /// [`Shard::store`], also returning the stored item's cas unique (0 if nothing was stored), for `ms`'s
    /// `c`. An append or prepend with a cas unique other than 0 stores only if it matches (`ms` with `MA C`).
    pub fn store_cas(&mut self, req: StoreRequest, now: u64) -> (StoreOutcome, u64) {
        self.tick(now);
        self.stats.cmd_set += 1;
        let op = req.op;
        let key = &req.data[..req.key_len];
        let old = self.find(key, now);
        match (req.op, old) {
            (StoreOp::Add, Some(i)) => {
                // memcached bumps the item an `add` failed on, and its last access with it (not `h`).
                self.updated(i, now);
                return (StoreOutcome::NotStored, 0);
            }
            (StoreOp::Replace | StoreOp::Append | StoreOp::Prepend, None) => {
                return (StoreOutcome::NotStored, 0);
            }
            (StoreOp::Cas, None) => {
                self.stats.cas_misses += 1;
                return (StoreOutcome::NotFound, 0);
            }
            (StoreOp::Cas, Some(i)) if stale_store(&req, &self.slots[i as usize]) => {}
            (StoreOp::Cas, Some(i)) if self.slots[i as usize].cas != req.cas => {
                self.stats.cas_badval += 1;
                return (StoreOutcome::Exists, 0);
            }
            (StoreOp::Append | StoreOp::Prepend, Some(i))
                if req.cas != 0 && self.slots[i as usize].cas != req.cas =>
            {
                return (StoreOutcome::Exists, 0);
            }
            _ => {}
        }
        // An `ms ... I` whose compare is below the item's: the value goes in as a stale item, with the old
        // item's exptime and sent token (memcached's `set_stale`).
        let stale =
            old.filter(|&i| op == StoreOp::Cas && stale_store(&req, &self.slots[i as usize]));
        let (data, flags, expires) = match (req.op, old) {
            (StoreOp::Append | StoreOp::Prepend, Some(i)) => {
                let e = &self.slots[i as usize];
                let added = &req.data[req.key_len..];
                if item_size(e.key().len(), e.value().len() + added.len()) > self.item_max {
                    return (StoreOutcome::NotStored, 0);
                }
                let mut data = Vec::with_capacity(e.data.len() + added.len());
                data.extend_from_slice(e.key());
                if req.op == StoreOp::Append {
                    data.extend_from_slice(e.value());
                    data.extend_from_slice(added);
                } else {
                    data.extend_from_slice(added);
                    data.extend_from_slice(e.value());
                }
                (data, e.flags, Some(e.expires))
            }
            _ => match stale {
                Some(i) => (req.data, req.flags, Some(self.slots[i as usize].expires)),
                None => (req.data, req.flags, expiry(req.exptime, now)),
            },
        };
        // A new item: an append or prepend makes one without the base64 mark, as memcached's does.
        let mut marks = match req.binary_key && !matches!(op, StoreOp::Append | StoreOp::Prepend) {
            true => BINARY_KEY,
            false => 0,
        };
        if let Some(i) = stale {
            marks |= STALE | self.slots[i as usize].marks & TOKEN_SENT;
        }
        let fits = item_size(req.key_len, data.len() - req.key_len) <= self.limit;
        if let Some(i) = old.filter(|_| fits || op == StoreOp::Set) {
            // A `set` that cannot be stored still drops the old value, as memcached does: a stale value
            // must not outlive a failed overwrite.
            self.remove(i);
        }
        if !fits {
            return (StoreOutcome::OutOfMemory, 0);
        }
        if op == StoreOp::Cas {
            self.stats.cas_hits += 1;
        }
        self.stats.total_items += 1;
        // `None`: stored and expired in the same instant, nothing to keep; it still takes a cas unique, as
        // memcached's item does (`ms k 1 T-1 c` says `HD c<n>`, not `c0`).
        let cas = match expires {
            Some(expires) => self.insert(data, req.key_len, flags, expires, marks, now),
            None => self.take_cas(),
        };
        (StoreOutcome::Stored, cas)
    }

    /// `delete`: true if the key was there.
    pub fn delete(&mut self, key: &[u8], now: u64) -> bool {
        self.delete_cas(key, None, now) == DeleteOutcome::Deleted
    }

    /// `md`: deletes the key, only if its cas unique is `cas` when one is given (0 included, as in
    /// memcached). A mismatch counts as a delete miss, as memcached counts it.
    pub fn delete_cas(&mut self, key: &[u8], cas: Option<u64>, now: u64) -> DeleteOutcome {
        self.meta_delete(key, cas, false, None, now)
    }

    /// `md` with its `I` (`stale`) and `T` (`ttl`, with `I` only): [`Shard::delete_cas`], except that with
    /// `I` the item stays, marked stale, its token no longer sent (the next `mg` wins it), a new cas unique,
    /// and `T`'s exptime if given; memcached counts that as neither a delete hit nor a miss.
    pub fn meta_delete(
        &mut self,
        key: &[u8],
        cas: Option<u64>,
        stale: bool,
        ttl: Option<i64>,
        now: u64,
    ) -> DeleteOutcome {
        self.tick(now);
        match self.find(key, now) {
            Some(i) if cas.is_some_and(|cas| cas != self.slots[i as usize].cas) => {
                self.stats.delete_misses += 1;
                DeleteOutcome::Exists
            }
            Some(i) if stale => {
                let cas = self.take_cas();
                let e = &mut self.slots[i as usize];
                e.marks = (e.marks | STALE) & !TOKEN_SENT;
                e.cas = cas;
                if let Some(exptime) = ttl {
                    self.retime(i, exptime, now);
                }
                DeleteOutcome::Deleted
            }
            Some(i) => {
                self.remove(i);
                self.stats.delete_hits += 1;
                DeleteOutcome::Deleted
            }
            None => {
                self.stats.delete_misses += 1;
                DeleteOutcome::NotFound
            }
        }
    }

    /// `mg`: the item's metadata, its value too if `value`; `ttl` (`T`) sets a new exptime, as `gat` does
    /// (the item is returned even when that ends its life). memcached counts a hit with `T` as a touch
    /// (`cmd_touch`, `touch_hits`), any other hit and every miss as a get. `bump` false (`u`) leaves the
    /// LRU order, the fetched mark and the last access as they are; otherwise this is a fetch
    /// ([`Shard::fetched`]), and `h` and `l` show the item as it was before it, as memcached's do.
    pub fn meta_get(
        &mut self,
        key: &[u8],
        value: bool,
        ttl: Option<i64>,
        bump: bool,
        now: u64,
    ) -> Option<MetaItem> {
        let req = MetaGet {
            value,
            ttl,
            bump,
            ..MetaGet::default()
        };
        self.meta_get_with(key, req, now)
    }

    /// [`Shard::meta_get`] with the win tokens: `N` creates a missing item (empty, flags 0, the exptime of
    /// the last of `T` and `N`; counted as a hit, and as an item), `R` wins the token of an item whose TTL is
    /// below it, and a stale item's token goes to the first `mg` after it became stale (memcached
    /// 1.6.18's `mg`). A won token is sent: `W` now, `Z` for every `mg` after it until the item is replaced.
    pub fn meta_get_with(&mut self, key: &[u8], req: MetaGet, now: u64) -> Option<MetaItem> {
        let MetaGet {
            value, ttl, bump, ..
        } = req;
        self.tick(now);
        let Some(i) = self.find(key, now) else {
            return self.vivify(key, req, now);
        };
        self.count_meta_hit(ttl.is_some());
        let e = &self.slots[i as usize];
        let item = MetaItem {
            value: if value {
                e.value().to_vec()
            } else {
                Vec::new()
            },
            size: e.value().len(),
            flags: e.flags,
            cas: e.cas,
            expires_before: e.expires,
            created: false,
            fetched: e.marks & FETCHED != 0,
            idle: now.saturating_sub(e.accessed.into()),
            binary_key: e.marks & BINARY_KEY != 0,
            token_sent: e.marks & TOKEN_SENT != 0,
            stale: e.marks & STALE != 0,
            won: false,
        };
        // `R` sees the exptime as a `T` before it left it.
        let expires = match (req.recache_after_ttl, ttl) {
            (true, Some(ttl)) => expiry(ttl, now).unwrap_or(now),
            _ => e.expires,
        };
        let recache = req
            .recache
            .and_then(|r| expiry(r, now))
            .is_some_and(|r| expires != 0 && expires < r);
        let item = MetaItem {
            won: !item.token_sent && (recache || item.stale),
            ..item
        };
        if item.won {
            self.slots[i as usize].marks |= TOKEN_SENT;
        }
        if bump {
            self.fetched(i, now);
        }
        if let Some(exptime) = ttl {
            self.retime(i, exptime, now);
        }
        Some(item)
    }

    /// An `mg` hit (or an item it created): a touch with `T`, else a get, as memcached counts it.
    fn count_meta_hit(&mut self, touch: bool) {
        if touch {
            self.stats.cmd_touch += 1;
            self.stats.touch_hits += 1;
        } else {
            self.stats.cmd_get += 1;
            self.stats.get_hits += 1;
        }
    }

    /// `mg ... N` on a missing key: the item it creates, counted as a hit (a touch with `T`) and an item, its
    /// token won; `None` (a miss) without `N`.
    fn vivify(&mut self, key: &[u8], req: MetaGet, now: u64) -> Option<MetaItem> {
        let Some(vivify_ttl) = req.vivify else {
            self.stats.cmd_get += 1;
            self.stats.get_misses += 1;
            return None;
        };
        self.count_meta_hit(req.ttl.is_some());
        self.stats.total_items += 1;
        let exptime = match req.ttl {
            Some(ttl) if !req.vivify_last => ttl,
            _ => vivify_ttl,
        };
        let cas = match expiry(exptime, now) {
            Some(expires) => {
                let cas = self.insert(key.to_vec(), key.len(), 0, expires, TOKEN_SENT, now);
                if req.bump
                    && let Some(i) = self.find(key, now)
                {
                    self.fetched(i, now);
                }
                cas
            }
            None => self.take_cas(),
        };
        Some(MetaItem {
            cas,
            created: true,
            won: true,
            ..MetaItem::default()
        })
    }

    /// Drops the key's value without counting a command: a `set` refused as too large must not leave a stale
    /// value behind.
    pub fn unlink(&mut self, key: &[u8], now: u64) {
        if let Some(i) = self.find(key, now) {
            self.remove(i);
        }
    }

    /// `incr` (wraps at 2^64) or `decr` (stops at 0). The value must be a decimal `u64`.
    pub fn arith(&mut self, key: &[u8], delta: u64, incr: bool, now: u64) -> ArithOutcome {
        self.tick(now);
        let Some(i) = self.find(key, now) else {
            self.count_arith_miss(incr);
            return ArithOutcome::NotFound;
        };
        match self.add_delta(i, delta, incr, now) {
            Some((value, _)) => ArithOutcome::Value(value),
            None => ArithOutcome::NonNumeric,
        }
    }

    /// `ma`: [`Shard::arith`] with a compare (`C`), a new exptime (`T`), and a missing item created with
    /// the initial value (`N`, `J`; counted in `total_items`, not as a miss). As in memcached, an empty value
    /// is non-numeric before the compare, any other after it; a mismatch counts nothing.
    pub fn meta_arith(&mut self, key: &[u8], req: MetaArith, now: u64) -> MetaArithOutcome {
        self.tick(now);
        let Some(i) = self.find(key, now) else {
            let Some((vivify_ttl, initial)) = req.vivify else {
                self.count_arith_miss(req.incr);
                return MetaArithOutcome::NotFound;
            };
            let exptime = match req.ttl {
                Some(ttl) if !req.vivify_last => ttl,
                _ => vivify_ttl,
            };
            let mut data = key.to_vec();
            push_u64(&mut data, initial);
            let value = data[key.len()..].to_vec();
            self.stats.total_items += 1;
            let expires = expiry(exptime, now);
            // memcached's created item has no base64 mark, even when the `ma` had `b`.
            let cas = match expires {
                Some(expires) => self.insert(data, key.len(), 0, expires, 0, now),
                None => self.take_cas(),
            };
            return MetaArithOutcome::Value(MetaItem {
                size: value.len(),
                value,
                cas,
                created: true,
                ..MetaItem::default()
            });
        };
        let e = &self.slots[i as usize];
        if e.value().is_empty() {
            return MetaArithOutcome::NonNumeric;
        }
        if req.cas.is_some_and(|cas| cas != 0 && cas != e.cas) {
            return MetaArithOutcome::Exists;
        }
        let expires_before = e.expires;
        let Some((value, cas)) = self.add_delta(i, req.delta, req.incr, now) else {
            return MetaArithOutcome::NonNumeric;
        };
        if let Some(exptime) = req.ttl {
            self.retime(i, exptime, now);
        }
        let mut digits = Vec::with_capacity(20);
        push_u64(&mut digits, value);
        MetaArithOutcome::Value(MetaItem {
            size: digits.len(),
            value: digits,
            cas,
            expires_before,
            ..MetaItem::default()
        })
    }

    /// A meta command's `T` on item `i`: its new exptime, or its end if that is already past.
    fn retime(&mut self, i: u32, exptime: i64, now: u64) {
        match expiry(exptime, now) {
            Some(expires) => self.slots[i as usize].expires = expires,
            None => self.remove(i),
        }
    }

    /// `touch`: true if the key was there.
    pub fn touch(&mut self, key: &[u8], exptime: i64, now: u64) -> bool {
        self.tick(now);
        self.stats.cmd_touch += 1;
        let Some(i) = self.find(key, now) else {
            self.stats.touch_misses += 1;
            return false;
        };
        self.stats.touch_hits += 1;
        match expiry(exptime, now) {
            Some(expires) => {
                self.slots[i as usize].expires = expires;
                self.fetched(i, now);
            }
            None => self.remove(i),
        }
        true
    }

    /// `flush_all [delay]`, as memcached 1.6.18 does it: without a delay (0, negative, or an absolute time
    /// already past) everything stored up to now is gone. With one, memcached's `oldest_live` is
    /// `realtime(delay) - 1`: from the start of unix second `now + delay - 1` on, everything stored up to the
    /// end of that second is gone. So `flush_all 1` empties the shard at once, and what is stored in the rest
    /// of that second goes too; from second `now + delay` on, what is stored stays.
    pub fn flush_all(&mut self, delay: i64, now: u64) {
        match expiry(delay, now) {
            Some(at) if at > 0 => {
                self.flush_at = at;
                self.tick(now);
            }
            _ => {
                self.flush_at = 0;
                self.clear();
            }
        }
    }

    /// Drops a pending delayed `flush_all` without flushing anything: memcached's `flush_all` with an
    /// absolute time from before the server started (no item is that old).
    pub fn cancel_flush(&mut self) {
        self.flush_at = 0;
    }

    /// This shard's counters.
    pub fn stats(&self) -> ShardStats {
        self.stats
    }

    /// This shard's counters for `stats`, after a pass of the crawler: the expired items go first, so that
    /// `curr_items` and `bytes` count only live ones (memcached's LRU crawler drops them within a second or
    /// so; otherwise they would be counted until touched). A pass visits every slot, so it runs at most once
    /// per second per shard: `stats` polled in a loop costs a shard one scan a second.
    pub fn crawl(&mut self, now: u64) -> ShardStats {
        self.tick(now);
        if now != self.crawled_at {
            self.crawled_at = now;
            for i in 0..self.slots.len() as u32 {
                // A free slot's buffer is empty; a live item's holds at least its key.
                let e = &self.slots[i as usize];
                if !e.data.is_empty() && e.expired(now) {
                    self.remove(i);
                    self.stats.crawler_reclaimed += 1;
                }
            }
        }
        self.stats
    }

    /// `stats reset`: the counters go back to zero, as memcached's do (`total_items` and `evictions`
    /// included); what the shard holds (`curr_items`, `bytes`) and its limit stay.
    pub fn reset_stats(&mut self) {
        self.stats = ShardStats {
            curr_items: self.stats.curr_items,
            bytes: self.stats.bytes,
            limit_maxbytes: self.stats.limit_maxbytes,
            ..ShardStats::default()
        };
    }
}

impl Shard {
    /// A delayed flush whose time has come runs before anything else: in the last second before `flush_at`,
    /// every call empties the shard first (what was stored in that second goes, as in memcached, where an
    /// item stored in second `oldest_live` is flushed); from `flush_at` on, once more, then never. Items stored
    /// from `flush_at` on come through a later call, which runs this first, so they survive.
    /// Also where a shard compacts (see `compact_if_sparse`): at the start of a call, when it holds no slot
    /// number.
    fn tick(&mut self, now: u64) {
        if self.flush_at != 0 && now + 1 >= self.flush_at {
            if now >= self.flush_at {
                self.flush_at = 0;
            }
            self.clear();
        }
        self.compact_if_sparse();
    }

    /// `incr`/`decr` on the live item in slot `i` (wraps at 2^64, stops at 0): its new value and cas unique,
    /// or `None` if its value is not a decimal `u64`.
    fn add_delta(&mut self, i: u32, delta: u64, incr: bool, now: u64) -> Option<(u64, u64)> {
        let value = super::protocol::parse_u64(self.slots[i as usize].value())?;
        let value = if incr {
            self.stats.incr_hits += 1;
            value.wrapping_add(delta)
        } else {
            self.stats.decr_hits += 1;
            value.saturating_sub(delta)
        };
        let cas = self.take_cas();
        let e = &mut self.slots[i as usize];
        let before = e.size();
        let mut digits = Vec::with_capacity(20);
        push_u64(&mut digits, value);
        if digits.len() <= e.value().len() {
            // As memcached: rewritten in place, padded with spaces to the old length (parsed back as the same
            // number), so the item's buffer stays the size it is counted at.
            let value = &mut e.data[e.key_len as usize..];
            value[..digits.len()].copy_from_slice(&digits);
            value[digits.len()..].fill(b' ');
        } else {
            // memcached stores the longer number in a new item: not fetched, no base64 mark.
            let mut data = Vec::with_capacity(e.key().len() + digits.len());
            data.extend_from_slice(e.key());
            data.extend_from_slice(&digits);
            e.data = data;
            e.marks = 0;
        }
        e.cas = cas;
        let after = e.size();
        self.used = self.used + after - before;
        self.stats.bytes = self.used as u64;
        self.updated(i, now);
        self.make_room(0, now);
        Some((value, cas))
    }

    fn count_arith_miss(&mut self, incr: bool) {
        match incr {
            true => self.stats.incr_misses += 1,
            false => self.stats.decr_misses += 1,
        }
    }

    fn clear(&mut self) {
        // Their capacity too: a flushed shard must not keep the bookkeeping of its peak item count.
        self.index = HashTable::new();
        self.slots = Vec::new();
        self.free = Vec::new();
        self.head = NIL;
        self.tail = NIL;
        self.used = 0;
        self.stats.curr_items = 0;
        self.stats.bytes = 0;
    }

    /// The live item under `key`; an expired one found on the way is removed.
    fn find(&mut self, key: &[u8], now: u64) -> Option<u32> {
        let slots = &self.slots;
        let i = *self.index.find(self.hasher.hash_one(key), |&i| {
            slots[i as usize].key() == key
        })?;
        if self.slots[i as usize].expired(now) {
            self.remove(i);
            self.stats.reclaimed += 1;
            return None;
        }
        Some(i)
    }

    fn take_cas(&mut self) -> u64 {
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(self.cas_step);
        cas
    }

    /// Links a new item in (not fetched yet, last accessed `now`, with `marks`); returns its cas unique. Keys
    /// come from the parser, at most [`MAX_KEY_LEN`] bytes; a longer one (a direct caller's) is not kept.
    fn insert(
        &mut self,
        data: Vec<u8>,
        key_len: usize,
        flags: u32,
        expires: u64,
        marks: u8,
        now: u64,
    ) -> u64 {
        let cas = self.take_cas();
        let Some(key_len) = u8::try_from(key_len)
            .ok()
            .filter(|&n| usize::from(n) <= MAX_KEY_LEN)
        else {
            return cas;
        };
        let size = item_size(key_len.into(), data.len() - usize::from(key_len));
        self.make_room(size, now);
        let hash = self.hasher.hash_one(&data[..key_len.into()]);
        let entry = Entry {
            data,
            expires,
            cas,
            flags,
            prev: NIL,
            next: NIL,
            accessed: clock32(now),
            key_len,
            marks,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = entry;
                i
            }
            None => {
                self.slots.push(entry);
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(hash, i, |&j| hasher.hash_one(slots[j as usize].key()));
        self.link_front(i);
        self.used += size;
        self.stats.curr_items += 1;
        self.stats.bytes = self.used as u64;
        cas
    }

    /// Evicts from the LRU end until `extra` more bytes fit (or nothing but the newest item is left). An
    /// expired item at the end is reclaimed, not counted as an eviction.
    fn make_room(&mut self, extra: usize, now: u64) {
        while self.used + extra > self.limit
            && self.tail != NIL
            && (extra > 0 || self.tail != self.head)
        {
            let victim = self.tail;
            let expired = self.slots[victim as usize].expired(now);
            self.remove(victim);
            match expired {
                true => self.stats.reclaimed += 1,
                false => self.stats.evictions += 1,
            }
        }
    }

    fn remove(&mut self, i: u32) {
        self.unlink_node(i);
        let hash = self.hasher.hash_one(self.slots[i as usize].key());
        if let Ok(found) = self.index.find_entry(hash, |&j| j == i) {
            found.remove();
        }
        let e = &mut self.slots[i as usize];
        let size = e.size();
        e.data = Vec::new();
        self.used -= size;
        self.stats.curr_items -= 1;
        self.stats.bytes = self.used as u64;
        self.free.push(i);
    }

    /// Renumbers the live items into a fresh slot vector and index once free slots outnumber them by
    /// [`COMPACT_RATIO`]: slots and index are not counted against the limit (only the 64 bytes of overhead per
    /// live item are), so a shard once full of small items, then of large ones, would otherwise keep the small
    /// items' bookkeeping for good. Each compaction follows at least twice as many removals as it moves items.
    fn compact_if_sparse(&mut self) {
        let live = self.slots.len() - self.free.len();
        if self.free.len() < COMPACT_MIN || self.free.len() < COMPACT_RATIO * live {
            return;
        }
        let mut slots = Vec::with_capacity(live);
        let mut index = HashTable::with_capacity(live);
        // Most recently used first, so the new numbers keep the list's order: slot k's neighbours are k - 1
        // and k + 1.
        let mut i = self.head;
        while i != NIL {
            let e = &mut self.slots[i as usize];
            i = e.next;
            let k = slots.len() as u32;
            let hash = self.hasher.hash_one(e.key());
            slots.push(Entry {
                data: std::mem::take(&mut e.data),
                prev: if k == 0 { NIL } else { k - 1 },
                next: if k + 1 == live as u32 { NIL } else { k + 1 },
                ..*e
            });
            let hasher = &self.hasher;
            index.insert_unique(hash, k, |&j| hasher.hash_one(slots[j as usize].key()));
        }
        debug_assert_eq!(slots.len(), live);
        (self.head, self.tail) = match live {
            0 => (NIL, NIL),
            n => (0, n as u32 - 1),
        };
        self.slots = slots;
        self.index = index;
        self.free = Vec::new();
    }

    /// A fetch of item `i` (`get`, `gets`, `gat`, `touch`, `mg` without `u`), as memcached's segmented LRU
    /// counts one (`do_item_bump`): the first marks the item fetched and leaves its last access as it is;
    /// each later one sets its last access to `now`. (memcached leaves it too while the item is `ACTIVE`,
    /// until its LRU maintainer thread clears that; its own comment calls that a bug. Not copied.)
    fn fetched(&mut self, i: u32, now: u64) {
        let e = &mut self.slots[i as usize];
        if e.marks & FETCHED == 0 {
            e.marks |= FETCHED;
        } else {
            e.accessed = clock32(now);
        }
        self.bump(i);
    }

    /// An update of item `i` that is not a fetch (an `add` refused on it, `incr`/`decr`/`ma` rewriting it):
    /// its last access becomes `now` and the fetched mark stays, as memcached's `do_item_update`.
    fn updated(&mut self, i: u32, now: u64) {
        self.slots[i as usize].accessed = clock32(now);
        self.bump(i);
    }

    fn bump(&mut self, i: u32) {
        if self.head != i {
            self.unlink_node(i);
            self.link_front(i);
        }
    }

    fn link_front(&mut self, i: u32) {
        let old_head = self.head;
        self.slots[i as usize].prev = NIL;
        self.slots[i as usize].next = old_head;
        match old_head {
            NIL => self.tail = i,
            h => self.slots[h as usize].prev = i,
        }
        self.head = i;
    }

    fn unlink_node(&mut self, i: u32) {
        let (prev, next) = (self.slots[i as usize].prev, self.slots[i as usize].next);
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The shard called directly, without the runtime: the stubs run exactly these methods.

    use super::*;

    const NOW: u64 = 1_700_000_000;
    const MAX: usize = 1 << 20;

    fn shard() -> Shard {
        Shard::new(0, 1, 1 << 20, MAX)
    }

    fn req(op: StoreOp, key: &str, value: &str, exptime: i64, cas: u64) -> StoreRequest {
        StoreRequest {
            op,
            data: [key.as_bytes(), value.as_bytes()].concat(),
            key_len: key.len(),
            flags: 7,
            exptime,
            cas,
            binary_key: false,
            stale: false,
        }
    }

    fn set(s: &mut Shard, key: &str, value: &str, now: u64) -> StoreOutcome {
        s.store(req(StoreOp::Set, key, value, 0, 0), now)
    }

    fn get(s: &mut Shard, key: &str, now: u64) -> Option<String> {
        let out = s.fetch(key.as_bytes(), false, None, now, Vec::new());
        if out.is_empty() {
            return None;
        }
        let text = String::from_utf8(out).unwrap();
        let (header, rest) = text.split_once("\r\n").unwrap();
        assert!(header.starts_with(&format!("VALUE {key} ")), "{header}");
        Some(rest.strip_suffix("\r\n").unwrap().to_owned())
    }

    #[test]
    fn fetch_writes_the_value_line() {
        let mut s = shard();
        assert_eq!(set(&mut s, "k", "hello", NOW), StoreOutcome::Stored);
        let out = s.fetch(b"k", true, None, NOW, b"prefix;".to_vec());
        assert_eq!(out, b"prefix;VALUE k 7 5 1\r\nhello\r\n");
        assert_eq!(s.fetch(b"nope", true, None, NOW, Vec::new()), b"");
    }

    #[test]
    fn add_replace_append_prepend() {
        let mut s = shard();
        assert_eq!(
            s.store(req(StoreOp::Replace, "k", "x", 0, 0), NOW),
            StoreOutcome::NotStored
        );
        assert_eq!(
            s.store(req(StoreOp::Append, "k", "x", 0, 0), NOW),
            StoreOutcome::NotStored
        );
        assert_eq!(
            s.store(req(StoreOp::Add, "k", "mid", 0, 0), NOW),
            StoreOutcome::Stored
        );
        assert_eq!(
            s.store(req(StoreOp::Add, "k", "other", 0, 0), NOW),
            StoreOutcome::NotStored
        );
        assert_eq!(
            s.store(req(StoreOp::Append, "k", ">", 0, 0), NOW),
            StoreOutcome::Stored
        );
        assert_eq!(
            s.store(req(StoreOp::Prepend, "k", "<", 0, 0), NOW),
            StoreOutcome::Stored
        );
        assert_eq!(get(&mut s, "k", NOW).as_deref(), Some("<mid>"));
        assert_eq!(
            s.store(req(StoreOp::Replace, "k", "new", 0, 0), NOW),
            StoreOutcome::Stored
        );
        assert_eq!(get(&mut s, "k", NOW).as_deref(), Some("new"));
        let st = s.stats();
        assert_eq!((st.cmd_set, st.total_items, st.curr_items), (7, 4, 1));
        assert_eq!(st.bytes, item_size(1, 3) as u64);
    }

    #[test]
    fn cas_hits_misses_and_conflicts() {
        let mut s = Shard::new(1, 4, 1 << 20, MAX);
        assert_eq!(
            s.store(req(StoreOp::Cas, "k", "v", 0, 2), NOW),
            StoreOutcome::NotFound
        );
        set(&mut s, "k", "v", NOW);
        // Shard 1 of 4 hands out 2, 6, 10, ...
        assert_eq!(
            s.fetch(b"k", true, None, NOW, Vec::new()),
            b"VALUE k 7 1 2\r\nv\r\n"
        );
        assert_eq!(
            s.store(req(StoreOp::Cas, "k", "w", 0, 3), NOW),
            StoreOutcome::Exists
        );
        assert_eq!(
            s.store(req(StoreOp::Cas, "k", "w", 0, 2), NOW),
            StoreOutcome::Stored
        );
        assert_eq!(
            s.store(req(StoreOp::Cas, "k", "x", 0, 2), NOW),
            StoreOutcome::Exists
        );
        assert_eq!(
            s.fetch(b"k", true, None, NOW, Vec::new()),
            b"VALUE k 7 1 6\r\nw\r\n"
        );
        let st = s.stats();
        assert_eq!((st.cas_misses, st.cas_hits, st.cas_badval), (1, 1, 2));
    }

    #[test]
    fn incr_wraps_and_decr_floors() {
        let mut s = shard();
        assert_eq!(s.arith(b"n", 1, true, NOW), ArithOutcome::NotFound);
        set(&mut s, "n", "18446744073709551614", NOW);
        assert_eq!(s.arith(b"n", 1, true, NOW), ArithOutcome::Value(u64::MAX));
        assert_eq!(s.arith(b"n", 2, true, NOW), ArithOutcome::Value(1));
        assert_eq!(s.arith(b"n", 5, false, NOW), ArithOutcome::Value(0));
        // Padded in place to the stored length, as memcached does; a longer result gets a buffer of its size.
        assert_eq!(get(&mut s, "n", NOW), Some(format!("0{}", " ".repeat(19))));
        set(&mut s, "m", "99", NOW);
        assert_eq!(s.arith(b"m", 1, true, NOW), ArithOutcome::Value(100));
        assert_eq!(get(&mut s, "m", NOW).as_deref(), Some("100"));
        set(&mut s, "t", "12abc", NOW);
        assert_eq!(s.arith(b"t", 1, true, NOW), ArithOutcome::NonNumeric);
        set(&mut s, "t", "", NOW);
        assert_eq!(s.arith(b"t", 1, false, NOW), ArithOutcome::NonNumeric);
        let st = s.stats();
        assert_eq!(
            (st.incr_hits, st.incr_misses, st.decr_hits, st.decr_misses),
            (3, 1, 1, 0)
        );
        assert_eq!(
            st.bytes,
            (item_size(1, 20) + item_size(1, 3) + item_size(1, 0)) as u64
        );
    }

    #[test]
    fn exptime_relative_absolute_negative() {
        let mut s = shard();
        s.store(req(StoreOp::Set, "rel", "v", 10, 0), NOW);
        s.store(req(StoreOp::Set, "abs", "v", (NOW + 100) as i64, 0), NOW);
        s.store(req(StoreOp::Set, "past", "v", (NOW - 1) as i64, 0), NOW);
        assert_eq!(
            s.store(req(StoreOp::Set, "neg", "v", -1, 0), NOW),
            StoreOutcome::Stored
        );
        assert_eq!(s.stats().curr_items, 2);
        assert!(get(&mut s, "rel", NOW + 9).is_some());
        assert!(get(&mut s, "rel", NOW + 10).is_none());
        assert!(get(&mut s, "abs", NOW + 99).is_some());
        assert!(get(&mut s, "abs", NOW + 100).is_none());
        assert_eq!(s.stats().curr_items, 0);
        assert_eq!(s.stats().reclaimed, 2);
    }

    #[test]
    fn the_crawler_drops_expired_items_before_stats() {
        let mut s = shard();
        // A quarter never expire; of the others, 25 expire at NOW + 10, 25 at NOW + 11, 25 at NOW + 12.
        for k in 0..100 {
            let exptime = if k % 4 == 0 { 0 } else { 10 + k % 3 };
            s.store(
                req(StoreOp::Set, &format!("k{k}"), "value", exptime, 0),
                NOW,
            );
        }
        assert_eq!(s.crawl(NOW + 9).curr_items, 100);
        let st = s.crawl(NOW + 11);
        assert_eq!(
            (st.curr_items, st.crawler_reclaimed, st.reclaimed),
            (50, 50, 0)
        );
        let st = s.crawl(NOW + 12);
        assert_eq!((st.curr_items, st.crawler_reclaimed), (25, 75));
        // The 25 that never expire: k0, k4, k8 and 22 keys of three bytes.
        let bytes = 3 * item_size(2, 5) + 22 * item_size(3, 5);
        assert_eq!(st.bytes, bytes as u64);
        assert!(get(&mut s, "k96", NOW + 12).is_some());
        assert!(get(&mut s, "k1", NOW + 12).is_none());
        // Nothing was left for a lookup to reclaim.
        assert_eq!(s.stats().reclaimed, 0);
    }

    #[test]
    fn touch_and_gat_move_the_exptime() {
        let mut s = shard();
        s.store(req(StoreOp::Set, "k", "v", 10, 0), NOW);
        assert!(s.touch(b"k", 100, NOW));
        assert!(get(&mut s, "k", NOW + 50).is_some());
        assert_eq!(
            s.fetch(b"k", false, Some(0), NOW + 50, Vec::new()),
            b"VALUE k 7 1\r\nv\r\n"
        );
        assert!(get(&mut s, "k", NOW + 1_000_000).is_some());
        assert!(!s.touch(b"missing", 1, NOW));
        // A negative exptime: gat still returns the value, then it is gone.
        assert!(!s.fetch(b"k", false, Some(-1), NOW, Vec::new()).is_empty());
        assert!(get(&mut s, "k", NOW).is_none());
        let st = s.stats();
        assert_eq!((st.cmd_touch, st.touch_hits, st.touch_misses), (4, 3, 1));
        assert_eq!((st.cmd_get, st.get_hits, st.get_misses), (3, 2, 1));
    }

    #[test]
    fn lru_eviction_keeps_recently_used_items() {
        let per_item = item_size(2, 100);
        let mut s = Shard::new(0, 1, per_item * 3, MAX);
        let v = "x".repeat(100);
        for k in ["k1", "k2", "k3"] {
            set(&mut s, k, &v, NOW);
        }
        assert!(get(&mut s, "k1", NOW).is_some()); // k2 is now the least recently used
        set(&mut s, "k4", &v, NOW);
        assert!(get(&mut s, "k2", NOW).is_none());
        for k in ["k1", "k3", "k4"] {
            assert!(get(&mut s, k, NOW).is_some(), "{k}");
        }
        let st = s.stats();
        assert_eq!(
            (st.evictions, st.curr_items, st.bytes),
            (1, 3, 3 * per_item as u64)
        );
        // An item bigger than the whole shard is refused, the others stay; a `set` of it drops the old value.
        let huge = "x".repeat(per_item * 3);
        assert_eq!(set(&mut s, "k5", &huge, NOW), StoreOutcome::OutOfMemory);
        assert_eq!(s.stats().curr_items, 3);
        assert_eq!(set(&mut s, "k1", &huge, NOW), StoreOutcome::OutOfMemory);
        assert_eq!(s.stats().curr_items, 2);
        assert!(get(&mut s, "k1", NOW).is_none());
        assert_eq!(
            s.store(req(StoreOp::Replace, "k3", &huge, 0, 0), NOW),
            StoreOutcome::OutOfMemory
        );
        assert!(get(&mut s, "k3", NOW).is_some());
    }

    #[test]
    fn expired_items_are_reclaimed_before_live_ones_are_evicted() {
        let per_item = item_size(2, 10);
        let mut s = Shard::new(0, 1, per_item * 2, MAX);
        s.store(req(StoreOp::Set, "k1", "0123456789", 5, 0), NOW);
        set(&mut s, "k2", "0123456789", NOW);
        set(&mut s, "k3", "0123456789", NOW + 10);
        let st = s.stats();
        assert_eq!((st.evictions, st.reclaimed, st.curr_items), (0, 1, 2));
    }

    #[test]
    fn flush_all_now_and_later() {
        let mut s = shard();
        set(&mut s, "a", "1", NOW);
        s.flush_all(0, NOW);
        assert!(get(&mut s, "a", NOW).is_none());
        set(&mut s, "b", "1", NOW);
        s.flush_all(10, NOW);
        assert!(get(&mut s, "b", NOW + 8).is_some());
        // memcached's `oldest_live` is NOW + 9: from then on, what was stored up to the end of that second
        // is gone (an item stored in it too); from NOW + 10 on, what is stored stays.
        assert!(get(&mut s, "b", NOW + 9).is_none());
        set(&mut s, "x", "1", NOW + 9);
        assert!(get(&mut s, "x", NOW + 9).is_none());
        assert!(get(&mut s, "b", NOW + 10).is_none());
        set(&mut s, "c", "1", NOW + 11);
        assert!(get(&mut s, "c", NOW + 12).is_some());
        // `flush_all 1` empties at once.
        s.flush_all(1, NOW + 12);
        assert!(get(&mut s, "c", NOW + 12).is_none());
        set(&mut s, "c", "1", NOW + 13);
        assert!(get(&mut s, "c", NOW + 13).is_some());
        let st = s.stats();
        assert_eq!((st.curr_items, st.bytes), (1, item_size(1, 1) as u64));
    }

    #[test]
    fn delete_and_unlink() {
        let mut s = shard();
        set(&mut s, "a", "1", NOW);
        assert!(s.delete(b"a", NOW));
        assert!(!s.delete(b"a", NOW));
        set(&mut s, "b", "1", NOW);
        s.unlink(b"b", NOW);
        assert!(get(&mut s, "b", NOW).is_none());
        let st = s.stats();
        assert_eq!(
            (st.delete_hits, st.delete_misses, st.curr_items, st.bytes),
            (1, 1, 0, 0)
        );
    }

    /// The index keeps slot numbers only and compares keys through the slots: after removals, evictions and
    /// slot reuse every key still finds its own item, and a removed one none.
    #[test]
    fn the_index_finds_each_key_through_its_slot() {
        let mut s = Shard::new(0, 1, item_size(6, 6) * 3000, MAX);
        for i in 0..5000 {
            let k = format!("k{i:05}");
            assert_eq!(
                set(&mut s, &k, &format!("v{i:05}"), NOW),
                StoreOutcome::Stored
            );
            if i % 3 == 0 {
                assert!(s.delete(k.as_bytes(), NOW));
            }
        }
        // 3333 live items were stored, 3000 fit: the 333 oldest live ones were evicted.
        let st = s.stats();
        assert_eq!((st.curr_items, st.evictions), (3000, 333));
        for i in 0..5000 {
            let k = format!("k{i:05}");
            let want = (i % 3 != 0 && i >= 500).then(|| format!("v{i:05}"));
            assert_eq!(get(&mut s, &k, NOW), want, "{k}");
        }
    }

    /// Deleting most items makes the shard renumber the rest (`compact_if_sparse`): every key is still found,
    /// the LRU order holds (the oldest live item is evicted first), and the slot vector shrank to the live items.
    #[test]
    fn a_sparse_shard_compacts_and_keeps_its_order() {
        let mut s = Shard::new(0, 1, item_size(6, 6) * 3000, MAX);
        for i in 0..3000 {
            set(&mut s, &format!("k{i:05}"), &format!("v{i:05}"), NOW);
        }
        for i in (0..3000).filter(|i| i % 10 != 0) {
            assert!(s.delete(format!("k{i:05}").as_bytes(), NOW));
        }
        // The call after the 2,000th delete found 2,000 free slots for 1,000 live items and compacted to 1,000;
        // the 700 deletes since leave too few free slots for another.
        assert_eq!((s.slots.len(), s.free.len()), (1000, 700));
        for i in (0..3000).step_by(10) {
            assert_eq!(
                get(&mut s, &format!("k{i:05}"), NOW),
                Some(format!("v{i:05}"))
            );
        }
        // Every key was just read in order, so k00000 is the least recently used: the first to go.
        for i in 0..2700 {
            set(&mut s, &format!("n{i:05}"), "x", NOW);
        }
        // 300 items of 76 bytes and 2,700 of 71 leave 13,500 of the 228,000: an item of 13,510 needs one
        // eviction.
        assert_eq!(s.stats().bytes, 300 * 76 + 2700 * 71);
        let big = "y".repeat(13_510 - item_size(3, 0));
        assert_eq!(set(&mut s, "big", &big, NOW), StoreOutcome::Stored);
        assert_eq!(s.stats().evictions, 1);
        assert_eq!(get(&mut s, "k00000", NOW), None);
        assert_eq!(get(&mut s, "k00010", NOW).as_deref(), Some("v00010"));
        assert_eq!(s.stats().curr_items, 3000);
    }

    /// The meta commands' shard calls: `mg`'s counters (a hit with `T` is a touch, a miss with `T` a get
    /// miss), `md`'s compare, `ma`'s compare, vivify and TTL, and an append that compares.
    #[test]
    fn meta_get_delete_and_arith() {
        let mut s = shard();
        set(&mut s, "k", "v", NOW);
        let hit = s.meta_get(b"k", true, Some(100), false, NOW).unwrap();
        assert_eq!((hit.value, hit.flags, hit.cas), (b"v".to_vec(), 7, 1));
        assert_eq!(hit.expires_before, 0);
        assert!(s.meta_get(b"nope", false, Some(100), true, NOW).is_none());
        let st = s.stats();
        assert_eq!(
            (st.cmd_get, st.get_misses, st.cmd_touch, st.touch_hits),
            (1, 1, 1, 1)
        );
        let again = s.meta_get(b"k", false, None, false, NOW).unwrap();
        assert_eq!(again.expires_before, NOW + 100);
        assert_eq!(s.delete_cas(b"k", Some(9), NOW), DeleteOutcome::Exists);
        assert_eq!(s.delete_cas(b"k", Some(1), NOW), DeleteOutcome::Deleted);
        assert_eq!(s.delete_cas(b"k", None, NOW), DeleteOutcome::NotFound);
        assert_eq!((s.stats().delete_hits, s.stats().delete_misses), (1, 2));
        let ma = |delta, cas, ttl, vivify| MetaArith {
            delta,
            incr: true,
            cas,
            ttl,
            vivify,
            vivify_last: true,
        };
        assert_eq!(
            s.meta_arith(b"n", ma(1, None, None, None), NOW),
            MetaArithOutcome::NotFound
        );
        let MetaArithOutcome::Value(made) =
            s.meta_arith(b"n", ma(1, None, None, Some((50, 7))), NOW)
        else {
            panic!()
        };
        assert_eq!(
            (made.value, made.created, made.expires_before),
            (b"7".to_vec(), true, 0)
        );
        assert_eq!(
            s.meta_arith(b"n", ma(1, Some(1), None, None), NOW),
            MetaArithOutcome::Exists
        );
        let MetaArithOutcome::Value(next) =
            s.meta_arith(b"n", ma(2, Some(made.cas), Some(0), None), NOW)
        else {
            panic!()
        };
        assert_eq!((next.value, next.expires_before), (b"9".to_vec(), NOW + 50));
        let kept = s.meta_get(b"n", false, None, false, NOW).unwrap();
        assert_eq!(kept.expires_before, 0);
        let st = s.stats();
        assert_eq!((st.incr_hits, st.incr_misses, st.total_items), (1, 1, 2));
        let append = |cas| StoreRequest {
            cas,
            ..req(StoreOp::Append, "n", "0", 0, 0)
        };
        assert_eq!(s.store_cas(append(1), NOW), (StoreOutcome::Exists, 0));
        let (outcome, cas) = s.store_cas(append(next.cas), NOW);
        assert_eq!(outcome, StoreOutcome::Stored);
        assert!(cas > next.cas);
        assert_eq!(get(&mut s, "n", NOW).as_deref(), Some("90"));
    }

    /// `mg`'s `h` and `l` as memcached 1.6.18 keeps them (each step checked against it): a fetch (`get`,
    /// `gat`, `touch`, `mg` without `u`) marks the item fetched, and only a later fetch moves its last
    /// access; an `add` refused on it and an in-place `incr` move the last access and keep the mark; a new
    /// item (`set`, `append`, an `incr` that outgrows its item) starts unfetched, accessed when stored; `mg`
    /// reports the state before its own fetch, and with `u` changes nothing.
    #[test]
    fn fetched_mark_and_last_access() {
        let mut s = shard();
        let state = |s: &mut Shard, key: &[u8], now| {
            let item = s.meta_get(key, false, None, false, now).unwrap();
            (item.fetched, item.idle)
        };
        set(&mut s, "k", "1", NOW);
        assert_eq!(state(&mut s, b"k", NOW + 3), (false, 3));
        // The first fetch marks it and leaves the last access; the next one moves it.
        assert!(
            !s.meta_get(b"k", false, None, true, NOW + 3)
                .unwrap()
                .fetched
        );
        assert_eq!(state(&mut s, b"k", NOW + 3), (true, 3));
        let item = s.meta_get(b"k", false, None, true, NOW + 4).unwrap();
        assert_eq!((item.fetched, item.idle), (true, 4));
        assert_eq!(state(&mut s, b"k", NOW + 6), (true, 2));
        get(&mut s, "k", NOW + 7);
        assert_eq!(state(&mut s, b"k", NOW + 7), (true, 0));
        assert!(s.touch(b"k", 0, NOW + 9));
        assert_eq!(state(&mut s, b"k", NOW + 9), (true, 0));
        // A new item starts over.
        set(&mut s, "k", "5", NOW + 10);
        assert_eq!(state(&mut s, b"k", NOW + 12), (false, 2));
        // `incr` in place: the last access moves, the mark stays (none here); a refused `add` likewise.
        assert_eq!(s.arith(b"k", 1, true, NOW + 12), ArithOutcome::Value(6));
        assert_eq!(state(&mut s, b"k", NOW + 13), (false, 1));
        s.fetch(b"k", false, Some(0), NOW + 13, Vec::new());
        assert_eq!(
            s.store(req(StoreOp::Add, "k", "x", 0, 0), NOW + 15),
            StoreOutcome::NotStored
        );
        assert_eq!(state(&mut s, b"k", NOW + 15), (true, 0));
        // In place it keeps the mark; outgrowing its item it is a new one (as in memcached).
        assert_eq!(s.arith(b"k", 1, true, NOW + 16), ArithOutcome::Value(7));
        assert_eq!(state(&mut s, b"k", NOW + 16), (true, 0));
        assert_eq!(s.arith(b"k", 3, true, NOW + 17), ArithOutcome::Value(10));
        assert_eq!(state(&mut s, b"k", NOW + 18), (false, 1));
        get(&mut s, "k", NOW + 18);
        assert_eq!(
            s.store(req(StoreOp::Append, "k", "0", 0, 0), NOW + 19),
            StoreOutcome::Stored
        );
        assert_eq!(state(&mut s, b"k", NOW + 19), (false, 0));
        // A refused `cas` is no access.
        get(&mut s, "k", NOW + 19);
        assert_eq!(
            s.store(req(StoreOp::Cas, "k", "x", 0, 999), NOW + 21),
            StoreOutcome::Exists
        );
        assert_eq!(state(&mut s, b"k", NOW + 21), (true, 2));
        // The state survives a compaction (every field of an entry is carried over).
        for i in 0..3000 {
            set(&mut s, &format!("x{i}"), "v", NOW + 21);
        }
        for i in 0..3000 {
            s.delete(format!("x{i}").as_bytes(), NOW + 21);
        }
        set(&mut s, "y", "v", NOW + 21);
        assert!(s.slots.len() < 3000, "compacted");
        assert_eq!(state(&mut s, b"k", NOW + 22), (true, 3));
    }

    /// An item stored under a base64 key (`ms ... b`) carries the mark `mg`'s `k` prints; a `set` of the
    /// same key without `b` and an append or prepend make an item without it; an `incr` in place keeps it,
    /// one that outgrows its item drops it; an item `ma` creates never has it (each as in memcached).
    #[test]
    fn the_base64_mark() {
        let mut s = shard();
        let binary = |s: &mut Shard, key: &[u8]| {
            s.meta_get(key, false, None, false, NOW).unwrap().binary_key
        };
        let b64 = |op, value: &str| StoreRequest {
            binary_key: true,
            ..req(op, "k", value, 0, 0)
        };
        assert_eq!(s.store(b64(StoreOp::Set, "5"), NOW), StoreOutcome::Stored);
        assert!(binary(&mut s, b"k"));
        assert_eq!(s.arith(b"k", 1, true, NOW), ArithOutcome::Value(6));
        assert!(binary(&mut s, b"k"));
        assert_eq!(s.arith(b"k", 4, true, NOW), ArithOutcome::Value(10));
        assert!(!binary(&mut s, b"k"));
        assert_eq!(
            s.store(b64(StoreOp::Replace, "x"), NOW),
            StoreOutcome::Stored
        );
        assert!(binary(&mut s, b"k"));
        assert_eq!(
            s.store(b64(StoreOp::Append, "y"), NOW),
            StoreOutcome::Stored
        );
        assert!(!binary(&mut s, b"k"));
        assert_eq!(s.store(b64(StoreOp::Set, "x"), NOW), StoreOutcome::Stored);
        set(&mut s, "k", "x", NOW);
        assert!(!binary(&mut s, b"k"));
        let vivify = MetaArith {
            delta: 1,
            incr: true,
            cas: None,
            ttl: None,
            vivify: Some((0, 1)),
            vivify_last: true,
        };
        assert!(matches!(
            s.meta_arith(b"n", vivify, NOW),
            MetaArithOutcome::Value(_)
        ));
        assert!(!binary(&mut s, b"n"));
    }

    /// The win tokens of `mg` (`N`, `R`, a stale item) and the stale items of `md ... I` and `ms ... I`, as
    /// memcached 1.6.18 keeps them (each step checked against it): one winner per item until it is replaced
    /// or made stale again; `md ... I` keeps the item with a new cas unique; `ms ... I` below the item's cas
    /// stores a stale item with the old exptime and sent token.
    #[test]
    fn win_tokens_and_stale_items() {
        let mut s = shard();
        let mg = |s: &mut Shard, key: &[u8], req: MetaGet| {
            s.meta_get_with(key, req, NOW)
                .map(|i| (i.token_sent, i.stale, i.won))
        };
        let plain = MetaGet {
            bump: true,
            ..MetaGet::default()
        };
        let vivify = MetaGet {
            vivify: Some(30),
            ..plain
        };
        let recache = |r| MetaGet {
            recache: Some(r),
            ..plain
        };
        // `N`: created, won, counted as a hit and an item; then `Z`.
        assert_eq!(mg(&mut s, b"v", vivify), Some((false, false, true)));
        assert_eq!(mg(&mut s, b"v", vivify), Some((true, false, false)));
        let v = s.meta_get(b"v", true, None, false, NOW).unwrap();
        assert_eq!((v.value, v.size, v.expires_before), (vec![], 0, NOW + 30));
        let st = s.stats();
        assert_eq!((st.get_hits, st.get_misses, st.total_items), (3, 0, 1));
        assert_eq!(mg(&mut s, b"nope", plain), None);
        // `R`: a TTL below it wins once; none without a TTL, at `R0`, or when a `T` before it moved the TTL up.
        s.store(req(StoreOp::Set, "r", "1", 100, 0), NOW);
        assert_eq!(mg(&mut s, b"r", recache(100)), Some((false, false, false)));
        assert_eq!(mg(&mut s, b"r", recache(0)), Some((false, false, false)));
        let raised = MetaGet {
            ttl: Some(300),
            recache_after_ttl: true,
            ..recache(200)
        };
        assert_eq!(mg(&mut s, b"r", raised), Some((false, false, false)));
        s.store(req(StoreOp::Set, "r", "1", 100, 0), NOW);
        assert_eq!(mg(&mut s, b"r", recache(101)), Some((false, false, true)));
        assert_eq!(mg(&mut s, b"r", recache(101)), Some((true, false, false)));
        set(&mut s, "n", "1", NOW);
        assert_eq!(mg(&mut s, b"n", recache(200)), Some((false, false, false)));
        // A refused `add` keeps the token; a new item drops it.
        s.store(req(StoreOp::Add, "r", "2", 0, 0), NOW);
        assert_eq!(mg(&mut s, b"r", plain), Some((true, false, false)));
        set(&mut s, "r", "2", NOW);
        assert_eq!(mg(&mut s, b"r", plain), Some((false, false, false)));
        // `md ... I`: kept, stale, a new cas unique, its token back for the next `mg`; not a delete hit.
        let cas = s.meta_get(b"r", false, None, false, NOW).unwrap().cas;
        assert_eq!(
            s.meta_delete(b"r", Some(cas), true, Some(50), NOW),
            DeleteOutcome::Deleted
        );
        let r = s.meta_get(b"r", false, None, false, NOW).unwrap();
        assert!(r.cas != cas && r.expires_before == NOW + 50);
        assert_eq!((r.stale, r.won, r.token_sent), (true, true, false));
        assert_eq!(mg(&mut s, b"r", plain), Some((true, true, false)));
        assert_eq!(s.stats().delete_hits, 0);
        assert_eq!(
            s.meta_delete(b"gone", None, true, None, NOW),
            DeleteOutcome::NotFound
        );
        // `ms ... I`: a compare below the item's stores a stale item with the old TTL and sent token; at or
        // above it, or 0, is `EX`.
        let item_cas = s.meta_get(b"r", false, None, false, NOW).unwrap().cas;
        let stale = |cas| StoreRequest {
            stale: true,
            ..req(StoreOp::Cas, "r", "3", 5, cas)
        };
        assert_eq!(s.store(stale(0), NOW), StoreOutcome::Exists);
        assert_eq!(s.store(stale(item_cas + 1), NOW), StoreOutcome::Exists);
        assert_eq!(s.store(stale(item_cas - 1), NOW), StoreOutcome::Stored);
        let r = s.meta_get(b"r", true, None, false, NOW).unwrap();
        assert_eq!((r.value, r.expires_before), (b"3".to_vec(), NOW + 50));
        assert_eq!((r.stale, r.token_sent, r.won), (true, true, false));
        // An append makes a new item: not stale.
        s.store(req(StoreOp::Append, "r", "4", 0, 0), NOW);
        assert_eq!(mg(&mut s, b"r", plain), Some((false, false, false)));
    }

    #[test]
    fn append_past_the_item_limit_is_not_stored() {
        let mut s = Shard::new(0, 1, 1 << 20, item_size(1, 10));
        set(&mut s, "k", "0123456789", NOW);
        assert_eq!(
            s.store(req(StoreOp::Append, "k", "x", 0, 0), NOW),
            StoreOutcome::NotStored
        );
        assert_eq!(get(&mut s, "k", NOW).as_deref(), Some("0123456789"));
    }
}
