//! An augmented treap of borrows: the ordered map behind [`IntervalRwLock`](super::IntervalRwLock).
//!
//! One tree type serves two orders. Keyed by `(start, ticket)` it answers "how many borrows start before
//! `x`" and enumerates the *waiting* borrows that overlap a range (and, more slowly, all of them); keyed by `(end, ticket)` it answers "how
//! many borrows end at or before `x`". Together the two counts give the number of borrows overlapping any
//! range in two descents (see `State::conflicts`).
//!
//! A treap (Seidel and Aragon, 1996) is a binary search tree by key and a heap by a random priority, so
//! its expected depth is O(log n) whatever order the keys arrive in; it needs no rotations, only split and
//! merge, which keeps the augmentation (per-subtree counts and maximum ends) easy to get right. Nodes live
//! in an arena (`Vec<Node>` with a free list) linked by `u32` indices: no `unsafe`, no allocation per
//! borrow once the arena has grown.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// The empty subtree: index 0 of the arena holds a sentinel node whose summary is all zeros, so that
/// reading a child's summary needs no branch. The sentinel is never linked, split or merged.
const NIL: u32 = 0;

/// One borrow, held or waiting: the half-open range `start..end` (never empty), its FIFO ticket (unique,
/// never reused) and its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) ticket: u64,
    pub(super) write: bool,
    /// Still queued. Only the start-ordered tree reads this flag.
    pub(super) waiting: bool,
    /// Where the borrow was requested: the stack pointer of the requesting call, hence a point on the
    /// stack that call ran on (a thread's, a fiber's, a `may` coroutine's). Free to take (no thread-local
    /// read); only a delegated closure that must wait looks at it (`State::waits_for`).
    pub(super) origin: usize,
}

/// The tree ordered by `(start, ticket)`: counts, and finds the waiting entries overlapping a range.
pub(super) type ByStart = Treap<false>;
/// The tree ordered by `(end, ticket)`: counts only.
pub(super) type ByEnd = Treap<true>;

/// Aggregates over a subtree. A maximum of 0 means "none": every entry has `end > start >= 0`.
#[derive(Clone, Copy, Debug, Default)]
struct Summary {
    all: usize,
    writes: usize,
    max_end_waiting: usize,
    max_end_waiting_write: usize,
}

impl Summary {
    fn of(e: &Entry) -> Self {
        Summary {
            all: 1,
            writes: usize::from(e.write),
            max_end_waiting: if e.waiting { e.end } else { 0 },
            max_end_waiting_write: if e.waiting && e.write { e.end } else { 0 },
        }
    }

    fn add(&mut self, other: &Summary) {
        self.all += other.all;
        self.writes += other.writes;
        self.max_end_waiting = self.max_end_waiting.max(other.max_end_waiting);
        self.max_end_waiting_write = self.max_end_waiting_write.max(other.max_end_waiting_write);
    }

    fn count(&self, writes_only: bool) -> usize {
        if writes_only { self.writes } else { self.all }
    }
}

#[derive(Debug)]
struct Node {
    entry: Entry,
    priority: u64,
    left: u32,
    right: u32,
    sum: Summary,
}

/// A set of [`Entry`]s ordered by `(end, ticket)` if `BY_END`, else by `(start, ticket)` (tickets make
/// keys unique), with per-subtree counts and maximum waiting ends. The order is a const parameter so
/// that every key comparison compiles to one field access.
///
/// Every operation is one or two root-to-leaf descents: expected O(log n) for n entries, except
/// [`Treap::for_each_waiting_overlapping`], which is O((1 + k) log n) for k reported entries.
#[derive(Debug)]
pub(super) struct Treap<const BY_END: bool> {
    nodes: Vec<Node>,
    free: Vec<u32>,
    root: u32,
    /// xorshift64 state for node priorities; seeded from the process's random hasher keys so that no
    /// input order can be chosen to unbalance the tree.
    rng: u64,
}

type Key = (usize, u64);

impl<const BY_END: bool> Treap<BY_END> {
    pub(super) fn new() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u8(u8::from(BY_END));
        let sentinel = Node {
            entry: Entry {
                start: 0,
                end: 0,
                ticket: 0,
                write: false,
                waiting: false,
                origin: 0,
            },
            priority: 0,
            left: NIL,
            right: NIL,
            sum: Summary::default(),
        };
        Treap {
            nodes: vec![sentinel],
            free: Vec::new(),
            root: NIL,
            // xorshift must not start at 0.
            rng: hasher.finish() | 1,
        }
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.sum(self.root).all
    }

    fn key_of(&self, e: &Entry) -> Key {
        if BY_END {
            (e.end, e.ticket)
        } else {
            (e.start, e.ticket)
        }
    }

    fn key(&self, t: u32) -> Key {
        self.key_of(&self.nodes[t as usize].entry)
    }

    fn sum(&self, t: u32) -> Summary {
        if t == NIL {
            Summary::default()
        } else {
            self.nodes[t as usize].sum
        }
    }

    /// Recomputes `t`'s summary from its entry and its children's summaries.
    fn pull(&mut self, t: u32) {
        let node = &self.nodes[t as usize];
        let mut sum = Summary::of(&node.entry);
        sum.add(&self.sum(node.left));
        sum.add(&self.sum(node.right));
        self.nodes[t as usize].sum = sum;
    }

    fn next_priority(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Splits `t` into the entries with keys `< key` and those `>= key`.
    fn split(&mut self, t: u32, key: Key) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.key(t) < key {
            let (l, r) = self.split(self.nodes[t as usize].right, key);
            self.nodes[t as usize].right = l;
            self.pull(t);
            (t, r)
        } else {
            let (l, r) = self.split(self.nodes[t as usize].left, key);
            self.nodes[t as usize].left = r;
            self.pull(t);
            (l, t)
        }
    }

    /// Joins two treaps where every key of `a` is below every key of `b`.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].priority > self.nodes[b as usize].priority {
            let right = self.merge(self.nodes[a as usize].right, b);
            self.nodes[a as usize].right = right;
            self.pull(a);
            a
        } else {
            let left = self.merge(a, self.nodes[b as usize].left);
            self.nodes[b as usize].left = left;
            self.pull(b);
            b
        }
    }

    /// Adds an entry; its key must not be present (tickets are unique).
    pub(super) fn insert(&mut self, entry: Entry) {
        let node = Node {
            entry,
            priority: self.next_priority(),
            left: NIL,
            right: NIL,
            sum: Summary::of(&entry),
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.nodes[index as usize] = node;
                index
            }
            None => {
                let index = u32::try_from(self.nodes.len())
                    .expect("IntervalRwLock: more than u32::MAX - 1 live borrows");
                self.nodes.push(node);
                index
            }
        };
        self.insert_node(index);
    }

    /// Links node `n`: walk down while the nodes' priorities are higher than `n`'s (adding `n` to each
    /// of their summaries on the way, since `n` lands in their subtrees), then split the subtree found
    /// there around `n`'s key and hang the halves under `n`.
    fn insert_node(&mut self, n: u32) {
        let key = self.key(n);
        let (priority, added) = (self.nodes[n as usize].priority, self.nodes[n as usize].sum);
        let (mut parent, mut left_of_parent) = (NIL, false);
        let mut t = self.root;
        while t != NIL && self.nodes[t as usize].priority >= priority {
            self.nodes[t as usize].sum.add(&added);
            parent = t;
            left_of_parent = key < self.key(t);
            let node = &self.nodes[t as usize];
            t = if left_of_parent {
                node.left
            } else {
                node.right
            };
        }
        let (l, r) = self.split(t, key);
        let node = &mut self.nodes[n as usize];
        node.left = l;
        node.right = r;
        self.pull(n);
        self.link(parent, left_of_parent, n);
    }

    /// Makes `child` the left or right child of `parent`, or the root if `parent` is `NIL`.
    fn link(&mut self, parent: u32, left: bool, child: u32) {
        if parent == NIL {
            self.root = child;
        } else if left {
            self.nodes[parent as usize].left = child;
        } else {
            self.nodes[parent as usize].right = child;
        }
    }

    /// Removes the entry with the key of `entry`. Panics if it is absent (a bug in the caller).
    ///
    /// An entry that is not waiting adds nothing to the maximum ends, so its ancestors only lose one
    /// from their counts, on the way down; a waiting one needs the summaries recomputed bottom-up.
    pub(super) fn remove(&mut self, entry: &Entry) {
        let key = self.key_of(entry);
        if entry.waiting {
            self.root = self.remove_at(self.root, key);
            return;
        }
        let removed = Summary::of(entry);
        let (mut parent, mut left_of_parent) = (NIL, false);
        let mut t = self.root;
        loop {
            assert!(
                t != NIL,
                "IntervalRwLock bug: removing a borrow that is not recorded"
            );
            let here = self.key(t);
            if key == here {
                break;
            }
            let node = &mut self.nodes[t as usize];
            node.sum.all -= removed.all;
            node.sum.writes -= removed.writes;
            parent = t;
            left_of_parent = key < here;
            t = if left_of_parent {
                node.left
            } else {
                node.right
            };
        }
        let node = &self.nodes[t as usize];
        debug_assert!(
            !node.entry.waiting,
            "removing a waiting entry as if it were held"
        );
        let merged = self.merge(node.left, node.right);
        self.free.push(t);
        self.link(parent, left_of_parent, merged);
    }

    fn remove_at(&mut self, t: u32, key: Key) -> u32 {
        assert!(
            t != NIL,
            "IntervalRwLock bug: removing a borrow that is not recorded"
        );
        let here = self.key(t);
        let node = &self.nodes[t as usize];
        let (left, right) = (node.left, node.right);
        if key == here {
            self.free.push(t);
            return self.merge(left, right);
        }
        if key < here {
            let left = self.remove_at(left, key);
            self.nodes[t as usize].left = left;
        } else {
            let right = self.remove_at(right, key);
            self.nodes[t as usize].right = right;
        }
        self.pull(t);
        t
    }

    /// Clears the `waiting` flag of the entry with the key of `entry` (it was granted).
    pub(super) fn mark_granted(&mut self, entry: &Entry) {
        let key = self.key_of(entry);
        self.mark_granted_at(self.root, key);
    }

    fn mark_granted_at(&mut self, t: u32, key: Key) {
        assert!(
            t != NIL,
            "IntervalRwLock bug: granting a borrow that is not recorded"
        );
        let here = self.key(t);
        let node = &mut self.nodes[t as usize];
        if key == here {
            node.entry.waiting = false;
        } else if key < here {
            let left = node.left;
            self.mark_granted_at(left, key);
        } else {
            let right = node.right;
            self.mark_granted_at(right, key);
        }
        self.pull(t);
    }

    /// Number of entries (of writes only, if `writes_only`) whose ordering coordinate is `< x`.
    pub(super) fn count_below(&self, x: usize, writes_only: bool) -> usize {
        let mut count = 0;
        let mut t = self.root;
        while t != NIL {
            let node = &self.nodes[t as usize];
            if self.key_of(&node.entry).0 < x {
                // This node and its whole left subtree are below `x`.
                count += self.sum(node.left).count(writes_only);
                count += usize::from(!writes_only || node.entry.write);
                t = node.right;
            } else {
                t = node.left;
            }
        }
        count
    }

    /// Calls `f` on every waiting entry (every waiting write, if `writes_only`) that overlaps `a..b`.
    ///
    /// Subtrees whose largest waiting end is `<= a` hold nothing that reaches into `a..b` and are skipped;
    /// once a node starts at or after `b`, so does its whole right subtree. This is the interval-tree
    /// enumeration of Cormen et al. (exercise 14.3-4): O((1 + k) log n) for k reported entries.
    pub(super) fn for_each_waiting_overlapping(
        &self,
        a: usize,
        b: usize,
        writes_only: bool,
        f: &mut impl FnMut(&Entry),
    ) {
        debug_assert!(!BY_END, "only the start-ordered tree tracks waiters");
        self.visit(self.root, a, b, writes_only, f);
    }

    fn visit(&self, t: u32, a: usize, b: usize, writes_only: bool, f: &mut impl FnMut(&Entry)) {
        if t == NIL {
            return;
        }
        let node = &self.nodes[t as usize];
        let max_end = if writes_only {
            node.sum.max_end_waiting_write
        } else {
            node.sum.max_end_waiting
        };
        if max_end <= a {
            return;
        }
        self.visit(node.left, a, b, writes_only, f);
        let e = &node.entry;
        if e.start >= b {
            return;
        }
        if e.waiting && (!writes_only || e.write) && e.end > a {
            f(e);
        }
        self.visit(node.right, a, b, writes_only, f);
    }

    /// Calls `f` on every entry (every write, if `writes_only`) that overlaps `a..b`, held or waiting.
    ///
    /// Nothing bounds the ends of *held* entries in a subtree (keeping that maximum would make every
    /// release recompute summaries bottom-up), so this visits every entry that starts before `b`, less the
    /// subtrees without a write when `writes_only`: O(n) in the worst case. Only a delegated closure that
    /// must wait calls it (`State::waits_for`); no grant or release does.
    pub(super) fn for_each_overlapping(
        &self,
        a: usize,
        b: usize,
        writes_only: bool,
        f: &mut impl FnMut(&Entry),
    ) {
        debug_assert!(!BY_END, "the end-ordered tree may be stale on `waiting`");
        self.visit_all(self.root, a, b, writes_only, f);
    }

    fn visit_all(&self, t: u32, a: usize, b: usize, writes_only: bool, f: &mut impl FnMut(&Entry)) {
        if t == NIL {
            return;
        }
        let node = &self.nodes[t as usize];
        if node.sum.count(writes_only) == 0 {
            return;
        }
        self.visit_all(node.left, a, b, writes_only, f);
        let e = &node.entry;
        if e.start >= b {
            return;
        }
        if (!writes_only || e.write) && e.end > a {
            f(e);
        }
        self.visit_all(node.right, a, b, writes_only, f);
    }

    /// Every entry in key order (tests and `Debug` only).
    #[cfg(test)]
    pub(super) fn entries(&self) -> Vec<Entry> {
        fn walk<const E: bool>(tree: &Treap<E>, t: u32, out: &mut Vec<Entry>) {
            if t != NIL {
                let node = &tree.nodes[t as usize];
                walk(tree, node.left, out);
                out.push(node.entry);
                walk(tree, node.right, out);
            }
        }
        let mut out = Vec::new();
        walk(self, self.root, &mut out);
        out
    }

    /// Checks the search-tree order, the heap order and every summary (tests only).
    #[cfg(test)]
    pub(super) fn check(&self) {
        fn walk<const E: bool>(
            tree: &Treap<E>,
            t: u32,
            lo: Option<Key>,
            hi: Option<Key>,
        ) -> Summary {
            if t == NIL {
                return Summary::default();
            }
            let node = &tree.nodes[t as usize];
            let key = tree.key(t);
            assert!(lo.is_none_or(|lo| lo < key) && hi.is_none_or(|hi| key < hi));
            for child in [node.left, node.right] {
                if child != NIL {
                    assert!(tree.nodes[child as usize].priority <= node.priority);
                }
            }
            let mut sum = Summary::of(&node.entry);
            sum.add(&walk(tree, node.left, lo, Some(key)));
            sum.add(&walk(tree, node.right, Some(key), hi));
            assert_eq!(
                (
                    sum.all,
                    sum.writes,
                    sum.max_end_waiting,
                    sum.max_end_waiting_write
                ),
                (
                    node.sum.all,
                    node.sum.writes,
                    node.sum.max_end_waiting,
                    node.sum.max_end_waiting_write
                )
            );
            sum
        }
        walk(self, self.root, None, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator for the tests.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Random inserts, removals and grants against a plain `Vec`, every query compared exactly.
    #[test]
    fn matches_a_brute_force_model() {
        let steps = if cfg!(miri) { 300 } else { 5_000 };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut by_start = ByStart::new();
        let mut by_end = ByEnd::new();
        let mut model: Vec<Entry> = Vec::new();
        for ticket in 1..=steps {
            match rng.below(4) {
                0 | 1 => {
                    let start = rng.below(64) as usize;
                    let end = start + 1 + rng.below(16) as usize;
                    let e = Entry {
                        start,
                        end,
                        ticket,
                        write: rng.below(2) == 0,
                        waiting: rng.below(2) == 0,
                        origin: ticket as usize,
                    };
                    by_start.insert(e);
                    // As `State` does: the end-ordered tree never tracks waiting.
                    by_end.insert(Entry {
                        waiting: false,
                        ..e
                    });
                    model.push(e);
                }
                2 if !model.is_empty() => {
                    let e = model.swap_remove(rng.below(model.len() as u64) as usize);
                    by_start.remove(&e);
                    by_end.remove(&Entry {
                        waiting: false,
                        ..e
                    });
                }
                3 if !model.is_empty() => {
                    let i = rng.below(model.len() as u64) as usize;
                    model[i].waiting = false;
                    by_start.mark_granted(&model[i]);
                }
                _ => {}
            }
            by_start.check();
            by_end.check();
            assert_eq!(by_start.len(), model.len());
            let x = rng.below(90) as usize;
            let b = x + 1 + rng.below(20) as usize;
            for writes_only in [false, true] {
                let kind = |e: &&Entry| !writes_only || e.write;
                let below_start = model.iter().filter(kind).filter(|e| e.start < x).count();
                let below_end = model.iter().filter(kind).filter(|e| e.end < x).count();
                assert_eq!(by_start.count_below(x, writes_only), below_start);
                assert_eq!(by_end.count_below(x, writes_only), below_end);
                let mut expected: Vec<u64> = model
                    .iter()
                    .filter(kind)
                    .filter(|e| e.waiting && e.start < b && e.end > x)
                    .map(|e| e.ticket)
                    .collect();
                let mut found = Vec::new();
                by_start
                    .for_each_waiting_overlapping(x, b, writes_only, &mut |e| found.push(e.ticket));
                expected.sort_unstable();
                found.sort_unstable();
                assert_eq!(found, expected);
                let mut expected: Vec<(u64, usize)> = model
                    .iter()
                    .filter(kind)
                    .filter(|e| e.start < b && e.end > x)
                    .map(|e| (e.ticket, e.origin))
                    .collect();
                let mut found = Vec::new();
                by_start.for_each_overlapping(x, b, writes_only, &mut |e| {
                    found.push((e.ticket, e.origin))
                });
                expected.sort_unstable();
                found.sort_unstable();
                assert_eq!(found, expected);
            }
        }
        let mut sorted = model.clone();
        sorted.sort_by_key(|e| (e.start, e.ticket));
        assert_eq!(by_start.entries(), sorted);
    }
}
