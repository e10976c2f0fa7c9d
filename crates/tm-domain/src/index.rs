//! A string-keyed map that is cheap to copy and to change a copy of: the entries are
//! spread over a fixed number of shards, each an ordinary hash map behind an `Arc`.
//! A copy shares every shard; changing the copy clones only the shards it touches.
//!
//! Persistent tries (HAMTs) do the same with finer sharing, but at a million entries
//! their nodes cost several times the entries' own size; here the overhead is that of
//! a plain hash map, and a change costs one shard's copy (about a thousandth of the map).

use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

const SHARDS: usize = 1024;

/// What the index keeps: values that can tell whether they are a key's, so that the
/// index need not keep the keys themselves (at a million entries, the keys would cost
/// more than the table, and comparing one would be one more cache miss per lookup).
pub(crate) trait Keyed {
    fn has_key(&self, key: &str) -> bool;
}

/// Each entry with its key's hash: a probe compares the hash before the value, and a
/// shard grows without asking the value for its key.
type Shard<V> = HashTable<(u64, V)>;

#[derive(Debug)]
pub(crate) struct SharedIndex<V> {
    shards: Arc<Vec<Arc<Shard<V>>>>,
    /// Keys are short strings, hashed once on every resolve: foldhash (hashbrown's own
    /// default) does that in a few nanoseconds, with a seed of this process's choosing.
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
        let empty = Arc::new(Shard::new());
        Self {
            shards: Arc::new(vec![empty; SHARDS]),
            hasher: RandomState::default(),
        }
    }
}

/// The shard of a key with hash `hash`. A shard's table takes the low bits for the slot
/// and the top seven as a tag; the shard comes from bits in between, so that the keys of
/// one shard keep distinct tags.
fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

impl<V: Clone + Keyed> SharedIndex<V> {
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        let hash = self.hasher.hash_one(key);
        self.shards[shard_of(hash)]
            .find(hash, |(h, v)| *h == hash && v.has_key(key))
            .map(|(_, v)| v)
    }

    /// The shard for `hash`, made private to this copy.
    fn shard_mut(&mut self, hash: u64) -> &mut Shard<V> {
        Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[shard_of(hash)])
    }

    /// Keeps `value` under `key` (which `value` must have); the value it replaces, if any.
    pub(crate) fn insert(&mut self, key: &str, value: V) -> Option<V> {
        debug_assert!(value.has_key(key));
        let hash = self.hasher.hash_one(key);
        let shard = self.shard_mut(hash);
        match shard.find_mut(hash, |(h, v)| *h == hash && v.has_key(key)) {
            Some((_, kept)) => Some(std::mem::replace(kept, value)),
            None => {
                shard.insert_unique(hash, (hash, value), |(h, _)| *h);
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        let hash = self.hasher.hash_one(key);
        let found = |(h, v): &(u64, V)| *h == hash && v.has_key(key);
        // An absent key leaves the shard shared.
        self.shards[shard_of(hash)].find(hash, found)?;
        let entry = self.shard_mut(hash).find_entry(hash, found).ok()?;
        Some(entry.remove().0 .1)
    }
}

#[cfg(test)]
mod tests {
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
}
