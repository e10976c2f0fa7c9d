//! API key records as stored, their audit trail, and the in-memory [`KeyRing`] that
//! authenticates requests without a database round trip.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tm_domain::{ApiKey, Grant, KeyId, Role, SecretHash, TenantId};

use crate::{Actor, Store, StoreError};

/// A key as stored: everything but the secret itself.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyRecord {
    pub id: KeyId,
    pub name: String,
    pub grant: Grant,
    pub secret_hash: SecretHash,
    pub created_at: DateTime<Utc>,
}

impl KeyRecord {
    /// A record for a freshly generated `key`.
    pub fn new(key: &ApiKey, name: String, grant: Grant) -> Self {
        Self {
            id: key.id(),
            name,
            grant,
            secret_hash: key.secret_hash(),
            created_at: tm_domain::now(),
        }
    }

    /// The public view: `{"id","name","role","tenant","created_at"}`.
    pub fn view(&self) -> KeyView<'_> {
        KeyView {
            id: self.id,
            name: &self.name,
            role: self.grant.role(),
            tenant: self.grant.tenant(),
            created_at: self.created_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct KeyView<'a> {
    pub id: KeyId,
    pub name: &'a str,
    pub role: Role,
    pub tenant: Option<&'a TenantId>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// A page of a key listing ordered by id: at most `limit` keys with ids after `after`.
#[derive(Clone, Copy, Debug)]
pub struct KeyPage {
    pub after: Option<KeyId>,
    pub limit: u32,
}

/// What was done to a key, as its audit trail records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAuditAction {
    Create,
    Revoke,
}

impl KeyAuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Revoke => "revoke",
        }
    }
}

/// One row of a key's audit trail: who created or revoked it, and what it was. Never
/// the secret nor its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyAuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The key id of the caller (see [`Principal::actor`]).
    pub actor: String,
    pub action: KeyAuditAction,
    pub key_id: KeyId,
    pub role: Role,
    pub tenant: Option<TenantId>,
}

/// Who is calling: the key that authenticated the request and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `None` for the key given in `TM_BOOTSTRAP_ADMIN_KEY`, which has no record.
    pub key_id: Option<KeyId>,
    pub grant: Grant,
}

impl Principal {
    /// How this caller is named in the audit log and in logs: the key id, never the key.
    pub fn actor(&self) -> crate::Actor {
        crate::Actor::new(match self.key_id {
            Some(id) => id.to_string(),
            None => "bootstrap".to_owned(),
        })
    }
}

/// Every live key, in memory. Authentication is a hash and a map lookup.
///
/// Creations, revocations and reloads are serialized by one async mutex, so a reload
/// that read the store before a revocation committed cannot bring the key back.
pub struct KeyRing {
    keys: ArcSwap<HashMap<KeyId, Arc<KeyRecord>>>,
    changes: tokio::sync::Mutex<()>,
    /// The length and hash of `TM_BOOTSTRAP_ADMIN_KEY`, if set.
    configured_admin: Option<(usize, SecretHash)>,
    store: Arc<dyn Store>,
}

impl KeyRing {
    pub async fn load(
        store: Arc<dyn Store>,
        configured_admin: Option<&str>,
    ) -> Result<Self, StoreError> {
        let ring = Self {
            keys: ArcSwap::from_pointee(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
            configured_admin: configured_admin.map(|k| (k.len(), SecretHash::of(k.as_bytes()))),
            store,
        };
        ring.reload().await?;
        Ok(ring)
    }

    /// A ring holding `keys` (as a cold-start file kept them), for a store that cannot be
    /// read yet; [`Self::reload`] replaces them once it can.
    pub fn from_records(
        store: Arc<dyn Store>,
        configured_admin: Option<&str>,
        keys: Vec<KeyRecord>,
    ) -> Self {
        Self {
            keys: ArcSwap::from_pointee(keys.into_iter().map(|k| (k.id, Arc::new(k))).collect()),
            changes: tokio::sync::Mutex::new(()),
            configured_admin: configured_admin.map(|k| (k.len(), SecretHash::of(k.as_bytes()))),
            store,
        }
    }

    /// Every live key in memory: what a cold-start file keeps.
    pub fn records(&self) -> Vec<KeyRecord> {
        self.keys.load().values().map(|k| (**k).clone()).collect()
    }

    /// Replaces the in-memory keys with the live ones in the store.
    pub async fn reload(&self) -> Result<usize, StoreError> {
        let _serial = self.changes.lock().await;
        let keys = self.store.active_keys().await?;
        let count = keys.len();
        self.keys.store(Arc::new(
            keys.into_iter().map(|k| (k.id, Arc::new(k))).collect(),
        ));
        Ok(count)
    }

    /// Whether no live key is loaded (`TM_BOOTSTRAP_ADMIN_KEY` aside).
    pub fn is_empty(&self) -> bool {
        self.keys.load().is_empty()
    }

    /// The principal a presented key stands for, if it is a live key.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        if let Some((len, admin)) = &self.configured_admin {
            // Only a key of the configured key's length is worth hashing: the length is
            // no secret worth a hash on every request made with a stored key.
            if presented.len() == *len && admin.matches(&SecretHash::of(presented.as_bytes())) {
                return Some(Principal {
                    key_id: None,
                    grant: Grant::Admin,
                });
            }
        }
        let (id, hash) = ApiKey::inspect(presented)?;
        let keys = self.keys.load();
        let record = keys.get(&id)?;
        record.secret_hash.matches(&hash).then(|| Principal {
            key_id: Some(record.id),
            grant: record.grant.clone(),
        })
    }

    /// Stores a new key on behalf of `actor` (see
    /// [`KeyStore::create_key`](crate::KeyStore::create_key) for `max_per_tenant`) and
    /// makes it usable on this instance at once.
    pub async fn create(
        &self,
        record: KeyRecord,
        actor: &Actor,
        max_per_tenant: Option<u32>,
    ) -> Result<(), StoreError> {
        let _serial = self.changes.lock().await;
        self.store
            .create_key(&record, actor, max_per_tenant)
            .await?;
        self.admit(record);
        Ok(())
    }

    /// Stores `record` only if the store never had a key (see
    /// [`KeyStore::create_first_key`](crate::KeyStore::create_first_key)) and, if it did,
    /// makes it usable on this instance at once; says whether it did.
    pub async fn create_first(&self, record: KeyRecord) -> Result<bool, StoreError> {
        let _serial = self.changes.lock().await;
        let created = self.store.create_first_key(&record).await?;
        if created {
            self.admit(record);
        }
        Ok(created)
    }

    fn admit(&self, record: KeyRecord) {
        let record = Arc::new(record);
        self.keys.rcu(|keys| {
            let mut keys = HashMap::clone(keys);
            keys.insert(record.id, record.clone());
            keys
        });
    }

    /// Revokes a key in the store on behalf of `actor` and stops it on this instance at
    /// once.
    pub async fn revoke(&self, id: KeyId, actor: &Actor) -> Result<(), StoreError> {
        let _serial = self.changes.lock().await;
        self.store.revoke_key(id, actor).await?;
        self.keys.rcu(|keys| {
            let mut keys = HashMap::clone(keys);
            keys.remove(&id);
            keys
        });
        Ok(())
    }
}
