//! A string-keyed map that is cheap to copy and to change a copy of: the entries are
//! spread over a fixed number of shards, each an ordinary hash map behind an `Arc`.
//! A copy shares every shard; changing the copy clones only the shards it touches.
//!
//! Persistent tries (HAMTs) do the same with finer sharing, but at a million entries
//! their nodes cost several times the entries' own size; here the overhead is that of
//! a plain hash map, and a change costs one shard's copy (about a thousandth of the map).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;

const SHARDS: usize = 1024;

/// Keys are short strings, hashed on every resolve: foldhash (hashbrown's own default)
/// does that in a few nanoseconds, with a seed of this process's choosing.
type Shard<V> = HashMap<Box<str>, V, RandomState>;

#[derive(Debug)]
pub(crate) struct SharedIndex<V> {
    shards: Arc<Vec<Arc<Shard<V>>>>,
    /// The shards' hasher, which also picks a key's shard.
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
        let hasher = RandomState::default();
        let empty = Arc::new(Shard::with_hasher(hasher.clone()));
        Self {
            shards: Arc::new(vec![empty; SHARDS]),
            hasher,
        }
    }
}

impl<V: Clone> SharedIndex<V> {
    fn shard_of(&self, key: &str) -> usize {
        // The shard's own table uses the low bits for the slot and the top seven as a
        // tag; the shard comes from bits in between, so keys of one shard keep distinct tags.
        (self.hasher.hash_one(key) >> 32) as usize % SHARDS
    }

    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.shards[self.shard_of(key)].get(key)
    }

    /// The shard holding `key`, made private to this copy.
    fn shard_mut(&mut self, key: &str) -> &mut Shard<V> {
        let index = self.shard_of(key);
        Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[index])
    }

    pub(crate) fn insert(&mut self, key: Box<str>, value: V) -> Option<V> {
        self.shard_mut(&key).insert(key, value)
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        // An absent key leaves the shard shared.
        self.get(key)?;
        self.shard_mut(key).remove(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_unaffected_by_changes_to_the_original_and_back() {
        let mut a = SharedIndex::default();
        for i in 0..5000 {
            a.insert(format!("k{i}").into(), i);
        }
        let mut b = a.clone();
        b.insert("k1".into(), -1);
        b.insert("new".into(), 7);
        assert_eq!(b.remove("k2"), Some(2));
        assert_eq!(b.remove("absent"), None);
        assert_eq!(
            (a.get("k1"), a.get("k2"), a.get("new")),
            (Some(&1), Some(&2), None)
        );
        assert_eq!(
            (b.get("k1"), b.get("k2"), b.get("new")),
            (Some(&-1), None, Some(&7))
        );
        a.insert("k3".into(), 33);
        assert_eq!(b.get("k3"), Some(&3));
    }
}
