//! Record ids: opaque, time-ordered (UUID v7), written in canonical hyphenated form.
//! One generic type serves routes and keys; the kind keeps them apart.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::DomainError;

/// What an id names; only used to tell id types apart.
pub trait IdKind {
    /// Used in messages: "is not a route id".
    const NAME: &'static str;
}

#[derive(Debug)]
pub enum RouteKind {}
#[derive(Debug)]
pub enum KeyKind {}
#[derive(Debug)]
pub enum EventKind {}
#[derive(Debug)]
pub enum JobKind {}
#[derive(Debug)]
pub enum WebhookKind {}

impl IdKind for RouteKind {
    const NAME: &'static str = "route";
}
impl IdKind for KeyKind {
    const NAME: &'static str = "key";
}
impl IdKind for EventKind {
    const NAME: &'static str = "event";
}
impl IdKind for JobKind {
    const NAME: &'static str = "job";
}
impl IdKind for WebhookKind {
    const NAME: &'static str = "webhook";
}

/// An id of a `K`.
pub struct Id<K: IdKind> {
    uuid: Uuid,
    kind: PhantomData<fn() -> K>,
}

/// A route's identity, assigned at creation.
pub type RouteId = Id<RouteKind>;
/// The public half of an API key: names its record, proves nothing.
pub type KeyId = Id<KeyKind>;
/// A change event's identity, assigned when the change is made.
pub type EventId = Id<EventKind>;
/// A background job's identity.
pub type JobId = Id<JobKind>;
/// A webhook subscription's identity.
pub type WebhookId = Id<WebhookKind>;

impl<K: IdKind> Id<K> {
    /// A fresh id; ids created later sort later.
    pub fn generate() -> Self {
        Self::from_uuid(Uuid::now_v7())
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        Self {
            uuid,
            kind: PhantomData,
        }
    }

    pub fn as_uuid(&self) -> Uuid {
        self.uuid
    }
}

impl<K: IdKind> FromStr for Id<K> {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let not_an_id = || DomainError::invalid(format!("is not a {} id", K::NAME));
        // Only the canonical hyphenated form names a record; other spellings are not ids.
        if s.len() != 36 {
            return Err(not_an_id());
        }
        Uuid::parse_str(s)
            .map(Self::from_uuid)
            .map_err(|_| not_an_id())
    }
}

impl<K: IdKind> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.uuid.hyphenated().fmt(f)
    }
}

impl<K: IdKind> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}Id({})", K::NAME, self.uuid.hyphenated())
    }
}

impl<K: IdKind> Serialize for Id<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.uuid.serialize(serializer)
    }
}

impl<'de, K: IdKind> Deserialize<'de> for Id<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Uuid::deserialize(deserializer).map(Self::from_uuid)
    }
}

// Derives would demand the same traits of `K`; these only look at the uuid.
impl<K: IdKind> Clone for Id<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K: IdKind> Copy for Id<K> {}
impl<K: IdKind> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.uuid == other.uuid
    }
}
impl<K: IdKind> Eq for Id<K> {}
impl<K: IdKind> Hash for Id<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.uuid.hash(state);
    }
}
impl<K: IdKind> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: IdKind> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.uuid.cmp(&other.uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_only_in_canonical_form() {
        let id = RouteId::generate();
        assert_eq!(id.to_string().parse::<RouteId>().expect("canonical"), id);
        let simple = id.as_uuid().simple().to_string();
        assert!(simple.parse::<RouteId>().is_err());
        let err = "not-an-id".parse::<KeyId>().expect_err("invalid");
        assert_eq!(err.to_string(), "is not a key id");
    }

    #[test]
    fn later_ids_sort_later_and_serialize_as_strings() {
        let a = KeyId::generate();
        let b = KeyId::generate();
        assert!(a < b);
        assert_eq!(serde_json::to_string(&a).expect("json"), format!("\"{a}\""));
    }
}
