//! A string-keyed map that is cheap to copy and to change a copy of: the entries are
//! spread over a fixed number of shards, each a hash table behind an `Arc`. A copy
//! shares every shard; changing the copy clones only the shards it touches.
//!
//! Persistent tries (HAMTs) do the same with finer sharing, but at a million entries
//! their nodes cost several times the entries' own size; here the overhead is that of
//! a plain hash table, and a change costs one shard's copy (about a thousandth of the map).

use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;

const SHARDS: usize = 1024;

/// What the index keeps: values that can tell whether they are a key's, so that the
/// index need not keep the keys themselves (at a million entries, the keys would cost
/// more than the table, and comparing one would be one more cache miss per lookup).
pub(crate) trait Keyed {
    fn has_key(&self, key: &str) -> bool;
}

/// One shard: open addressing with linear probing, each slot holding its entry's hash
/// beside the value. A lookup reads the slots from the hash's home onwards, usually
/// within one cache line, then the value it finds: two cache misses where a table with
/// separate control bytes (hashbrown's) takes three, which is most of a lookup's cost
/// once the index outgrows the CPU caches.
#[derive(Clone, Debug)]
struct Shard<V> {
    /// A power of two of them, or none; never more than three quarters full, so a probe
    /// always ends at an empty slot.
    slots: Box<[Option<(u64, V)>]>,
    len: usize,
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Self {
            slots: Box::new([]),
            len: 0,
        }
    }
}

impl<V: Keyed> Shard<V> {
    /// The slot holding the entry of `key` (hashed to `hash`).
    fn find(&self, hash: u64, key: &str) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut at = hash as usize & mask;
        loop {
            match &self.slots[at] {
                None => return None,
                Some((h, value)) if *h == hash && value.has_key(key) => return Some(at),
                Some(_) => at = (at + 1) & mask,
            }
        }
    }

    /// Places an entry known to be absent at the first empty slot from its home.
    fn place(slots: &mut [Option<(u64, V)>], hash: u64, value: V) {
        let mask = slots.len() - 1;
        let mut at = hash as usize & mask;
        while slots[at].is_some() {
            at = (at + 1) & mask;
        }
        slots[at] = Some((hash, value));
    }

    fn insert(&mut self, hash: u64, key: &str, value: V) -> Option<V> {
        if let Some(at) = self.find(hash, key) {
            let (_, kept) = self.slots[at].as_mut().expect("found in this slot");
            return Some(std::mem::replace(kept, value));
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            let capacity = (self.slots.len() * 2).max(8);
            let old = std::mem::replace(
                &mut self.slots,
                std::iter::repeat_with(|| None).take(capacity).collect(),
            );
            for (h, v) in old.into_vec().into_iter().flatten() {
                Self::place(&mut self.slots, h, v);
            }
        }
        Self::place(&mut self.slots, hash, value);
        self.len += 1;
        None
    }

    /// Takes out the entry in slot `hole`, then moves back each entry after it that
    /// the hole would cut off from its home (backward-shift deletion: no tombstones, so
    /// probes stay as short as they were before the entry came).
    fn remove_at(&mut self, mut hole: usize) -> V {
        let mask = self.slots.len() - 1;
        let (_, removed) = self.slots[hole].take().expect("an entry in this slot");
        self.len -= 1;
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let Some((hash, _)) = &self.slots[at] else {
                return removed;
            };
            let home = *hash as usize & mask;
            // The entry may move to the hole if the hole lies on its probe path, from its
            // home to where it is now.
            if at.wrapping_sub(home) & mask >= at.wrapping_sub(hole) & mask {
                self.slots[hole] = self.slots[at].take();
                hole = at;
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct SharedIndex<V> {
    shards: Arc<Vec<Arc<Shard<V>>>>,
    /// Keys are short strings, hashed once on every resolve: foldhash does that in a few
    /// nanoseconds, with a seed of this process's choosing.
    hasher: RandomState,
}

impl<V> Clone for SharedIndex<V> {
    fn clone(&self) -> Self {
        Self {
            shards: self.shards.clone(),
            hasher: self.hasher.clone(),
        }
    }
}

impl<V: Clone> Default for SharedIndex<V> {
    fn default() -> Self {
        let empty = Arc::new(Shard::default());
        Self {
            shards: Arc::new(vec![empty; SHARDS]),
            hasher: RandomState::default(),
        }
    }
}

/// The shard of a key with hash `hash`. A shard's slot comes from the hash's low bits,
/// the shard from bits above any a shard's table uses, so that the keys of one shard
/// keep distinct homes.
fn shard_of(hash: u64) -> usize {
    (hash >> 40) as usize % SHARDS
}

impl<V: Clone + Keyed> SharedIndex<V> {
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[shard_of(hash)];
        let at = shard.find(hash, key)?;
        shard.slots[at].as_ref().map(|(_, value)| value)
    }

    /// The shard for `hash`, made private to this copy.
    fn shard_mut(&mut self, hash: u64) -> &mut Shard<V> {
        Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[shard_of(hash)])
    }

    /// Keeps `value` under `key` (which `value` must have); the value it replaces, if any.
    pub(crate) fn insert(&mut self, key: &str, value: V) -> Option<V> {
        debug_assert!(value.has_key(key));
        let hash = self.hasher.hash_one(key);
        self.shard_mut(hash).insert(hash, key, value)
    }

    /// Every value, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.shards
            .iter()
            .flat_map(|shard| shard.slots.iter().flatten().map(|(_, value)| value))
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        let hash = self.hasher.hash_one(key);
        // An absent key leaves the shard shared.
        let at = self.shards[shard_of(hash)].find(hash, key)?;
        Some(self.shard_mut(hash).remove_at(at))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A value that carries its key, as the snapshot's groups do.
    #[derive(Clone, Debug, PartialEq)]
    struct Entry(String, i32);

    impl Keyed for Entry {
        fn has_key(&self, key: &str) -> bool {
            self.0 == key
        }
    }

    fn entry(key: &str, n: i32) -> Entry {
        Entry(key.to_owned(), n)
    }

    fn value<'a>(index: &'a SharedIndex<Entry>, key: &str) -> Option<&'a i32> {
        index.get(key).map(|e| &e.1)
    }

    #[test]
    fn a_copy_is_unaffected_by_changes_to_the_original_and_back() {
        let mut a = SharedIndex::default();
        for i in 0..5000 {
            let key = format!("k{i}");
            assert_eq!(a.insert(&key, entry(&key, i)), None);
        }
        let mut b = a.clone();
        assert_eq!(b.insert("k1", entry("k1", -1)), Some(entry("k1", 1)));
        b.insert("new", entry("new", 7));
        assert_eq!(b.remove("k2"), Some(entry("k2", 2)));
        assert_eq!(b.remove("absent"), None);
        assert_eq!(
            (value(&a, "k1"), value(&a, "k2"), value(&a, "new")),
            (Some(&1), Some(&2), None)
        );
        assert_eq!(
            (value(&b, "k1"), value(&b, "k2"), value(&b, "new")),
            (Some(&-1), None, Some(&7))
        );
        a.insert("k3", entry("k3", 33));
        assert_eq!(value(&b, "k3"), Some(&3));
        assert!((0..5000).all(|i| value(&b, &format!("k{i}")).is_some() != (i == 2)));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, i32),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..48, any::<i32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (0u8..48).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// A shard agrees with a `HashMap` after any inserts and removals, with hashes
        /// chosen to collide: few distinct homes, some of them in the last slots, so
        /// probes wrap around and removals shift entries back across the end.
        #[test]
        fn a_shard_behaves_as_a_map(ops in proptest::collection::vec(op(), 0..300)) {
            let hash = |k: u8| u64::from(k % 5) * 0x9e37 + u64::from(k % 3) * 7 + u64::MAX / 2;
            let mut shard = Shard::default();
            let mut model = std::collections::HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let key = format!("k{k}");
                        let replaced = shard.insert(hash(k), &key, entry(&key, v)).map(|e| e.1);
                        prop_assert_eq!(replaced, model.insert(k, v));
                    }
                    Op::Remove(k) => {
                        let key = format!("k{k}");
                        let removed = shard.find(hash(k), &key).map(|at| shard.remove_at(at).1);
                        prop_assert_eq!(removed, model.remove(&k));
                    }
                }
                prop_assert_eq!(shard.len, model.len());
                prop_assert!(shard.len * 4 <= shard.slots.len() * 3);
                for k in 0..48u8 {
                    let key = format!("k{k}");
                    let found = shard.find(hash(k), &key).and_then(|at| shard.slots[at].as_ref()).map(|(_, e)| e.1);
                    prop_assert_eq!(found, model.get(&k).copied());
                }
            }
        }
    }
}
