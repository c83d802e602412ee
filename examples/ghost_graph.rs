//! A doubly linked list whose nodes are `Arc<GhostCell<Node>>`, all mutated through one `GhostToken`.
//!
//! With `RefCell` every node carries a borrow flag and every step pays for it (and a mistake is a
//! runtime panic); with `Mutex` every node is a lock, and relinking three nodes means taking three locks
//! in a safe order. Here the nodes are plain data: the token is the one permission for all of them,
//! checked at compile time. The list is then read on every core at once (sharing `&token`) and updated
//! in one sequential commit (`parallel_read_then_commit`).
//!
//! Run: `cargo run --release --example ghost_graph`

use std::sync::{Arc, Weak};

use trust_core::ghost::{GhostBorrowMut, GhostCell, GhostToken, parallel_read_then_commit};

type NodeRef<'brand> = Arc<GhostCell<'brand, Node<'brand>>>;

struct Node<'brand> {
    value: u64,
    /// Strong forward links own the nodes; weak backward links avoid a reference cycle.
    next: Option<NodeRef<'brand>>,
    prev: Option<Weak<GhostCell<'brand, Node<'brand>>>>,
}

#[derive(Default)]
struct List<'brand> {
    head: Option<NodeRef<'brand>>,
    tail: Option<NodeRef<'brand>>,
}

impl<'brand> List<'brand> {
    fn push_back(&mut self, value: u64, token: &mut GhostToken<'brand>) -> NodeRef<'brand> {
        let node = Arc::new(GhostCell::new(Node {
            value,
            next: None,
            prev: None,
        }));
        match self.tail.take() {
            Some(tail) => {
                node.borrow_mut(token).prev = Some(Arc::downgrade(&tail));
                tail.borrow_mut(token).next = Some(node.clone());
            }
            None => self.head = Some(node.clone()),
        }
        self.tail = Some(node.clone());
        node
    }

    /// Unlinks `node`: its two neighbours and itself change together, in one three-way borrow.
    fn remove(&mut self, node: &NodeRef<'brand>, token: &mut GhostToken<'brand>) -> u64 {
        let prev = node.borrow(token).prev.as_ref().and_then(Weak::upgrade);
        let next = node.borrow(token).next.clone();
        match (&prev, &next) {
            (Some(p), Some(n)) => {
                let (p, m, n) = (&**p, &**node, &**n)
                    .borrow_mut(token)
                    .expect("three distinct nodes");
                n.prev = m.prev.take();
                p.next = m.next.take();
            }
            (Some(p), None) => {
                p.borrow_mut(token).next = None;
                node.borrow_mut(token).prev = None;
                self.tail = prev.clone();
            }
            (None, Some(n)) => {
                n.borrow_mut(token).prev = None;
                self.head = node.borrow_mut(token).next.take();
            }
            (None, None) => {
                self.head = None;
                self.tail = None;
            }
        }
        node.borrow(token).value
    }

    /// Reverses the list in place: every node's two links are swapped.
    fn reverse(&mut self, token: &mut GhostToken<'brand>) {
        let mut cursor = self.head.clone();
        while let Some(node) = cursor {
            let n = node.borrow_mut(token);
            let next = n.next.take();
            n.next = n.prev.take().and_then(|weak| weak.upgrade());
            n.prev = next.as_ref().map(Arc::downgrade);
            cursor = next;
        }
        std::mem::swap(&mut self.head, &mut self.tail);
    }

    fn nodes(&self, token: &GhostToken<'brand>) -> Vec<NodeRef<'brand>> {
        let mut out = Vec::new();
        let mut cursor = self.head.clone();
        while let Some(node) = cursor {
            cursor = node.borrow(token).next.clone();
            out.push(node);
        }
        out
    }

    fn values(&self, token: &GhostToken<'brand>) -> Vec<u64> {
        self.nodes(token)
            .iter()
            .map(|n| n.borrow(token).value)
            .collect()
    }

    fn values_backward(&self, token: &GhostToken<'brand>) -> Vec<u64> {
        let mut out = Vec::new();
        let mut cursor = self.tail.clone();
        while let Some(node) = cursor {
            out.push(node.borrow(token).value);
            cursor = node.borrow(token).prev.as_ref().and_then(Weak::upgrade);
        }
        out
    }

    /// Frees the nodes one by one: dropping `head` directly would recurse once per node.
    fn clear(&mut self, token: &mut GhostToken<'brand>) {
        self.tail = None;
        let mut cursor = self.head.take();
        while let Some(node) = cursor {
            cursor = node.borrow_mut(token).next.take();
        }
    }
}

fn main() {
    GhostToken::new(|mut token| {
        let mut list = List::default();
        let nodes: Vec<_> = (1..=8).map(|v| list.push_back(v, &mut token)).collect();
        println!("built:     {:?}", list.values(&token));

        let removed = [
            list.remove(&nodes[3], &mut token),
            list.remove(&nodes[0], &mut token),
            list.remove(&nodes[7], &mut token),
        ];
        println!("removed {removed:?}: {:?}", list.values(&token));
        assert_eq!(list.values(&token), [2, 3, 5, 6, 7]);

        list.reverse(&mut token);
        println!("reversed:  {:?}", list.values(&token));
        assert_eq!(list.values(&token), [7, 6, 5, 3, 2]);
        assert_eq!(list.values_backward(&token), [2, 3, 5, 6, 7]);

        // Passing the same node twice is refused at run time, never turned into two `&mut`.
        let err = (&*nodes[1], &*nodes[2], &*nodes[1])
            .borrow_mut(&mut token)
            .err()
            .unwrap();
        println!("aliasing refused: {err}");

        // Every node becomes the sum of itself and its neighbours: read in parallel, commit once.
        let live = list.nodes(&token);
        let neighbourhood_sums = parallel_read_then_commit(
            &mut token,
            |shard, token| {
                live[shard.range(live.len())]
                    .iter()
                    .map(|node| {
                        let n = node.borrow(token);
                        let prev = n
                            .prev
                            .as_ref()
                            .and_then(Weak::upgrade)
                            .map_or(0, |p| p.borrow(token).value);
                        let next = n.next.as_ref().map_or(0, |x| x.borrow(token).value);
                        prev + n.value + next
                    })
                    .collect::<Vec<u64>>()
            },
            |per_shard, token| {
                let sums: Vec<u64> = per_shard.into_iter().flatten().collect();
                for (node, sum) in live.iter().zip(&sums) {
                    node.borrow_mut(token).value = *sum;
                }
                sums
            },
        );
        println!("smoothed:  {neighbourhood_sums:?}");
        assert_eq!(list.values(&token), [13, 18, 14, 10, 5]);

        list.clear(&mut token);
        assert!(list.values(&token).is_empty());
    });
}
