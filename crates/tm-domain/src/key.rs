//! API keys: roles, the shape of a key, and how one is checked.
//!
//! A key reads `tm_<id>_<secret>`: `id` (32 hex digits) names the key's record, and
//! `secret` (43 characters of base64url, 256 random bits) is what proves possession.
//! Only the SHA-256 of the secret is stored; with that much entropy a fast hash is
//! enough, and comparison is in constant time.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::{DomainError, KeyId, TenantId};

const PREFIX: &str = "tm_";
const SECRET_LEN: usize = 43;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, in every tenant.
    Admin,
    /// Route reads and writes in its tenant; manages its tenant's reader keys.
    TenantAdmin,
    /// Resolve, list and get routes in its tenant.
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::TenantAdmin => "tenant_admin",
            Role::Reader => "reader",
        }
    }
}

impl FromStr for Role {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "tenant_admin" => Ok(Role::TenantAdmin),
            "reader" => Ok(Role::Reader),
            _ => Err(DomainError::invalid(
                "must be admin, tenant_admin or reader",
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a key belongs to: admins to no tenant, everyone else to exactly one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Grant {
    Admin,
    TenantAdmin(TenantId),
    Reader(TenantId),
}

impl Grant {
    /// Combines a role and an optional tenant, refusing the combinations that make no sense.
    pub fn new(role: Role, tenant: Option<TenantId>) -> Result<Self, DomainError> {
        match (role, tenant) {
            (Role::Admin, None) => Ok(Grant::Admin),
            (Role::Admin, Some(_)) => {
                Err(DomainError::invalid("admin keys are not bound to a tenant"))
            }
            (Role::TenantAdmin, Some(t)) => Ok(Grant::TenantAdmin(t)),
            (Role::Reader, Some(t)) => Ok(Grant::Reader(t)),
            (_, None) => Err(DomainError::invalid(
                "tenant_admin and reader keys need a tenant",
            )),
        }
    }

    pub fn role(&self) -> Role {
        match self {
            Grant::Admin => Role::Admin,
            Grant::TenantAdmin(_) => Role::TenantAdmin,
            Grant::Reader(_) => Role::Reader,
        }
    }

    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Grant::Admin => None,
            Grant::TenantAdmin(t) | Grant::Reader(t) => Some(t),
        }
    }
}

/// SHA-256 of a key's secret: what is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    pub fn of(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality.
    pub fn matches(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// A full key, as handed to its owner once. Never logged: `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    id: KeyId,
    secret: String,
}

impl ApiKey {
    /// A new key for `id` whose secret is made from `random` (which must come from a
    /// cryptographically secure source).
    pub fn new(id: KeyId, random: [u8; 32]) -> Self {
        Self {
            id,
            secret: URL_SAFE_NO_PAD.encode(random),
        }
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn secret_hash(&self) -> SecretHash {
        SecretHash::of(self.secret.as_bytes())
    }

    /// The key as its owner types it: `tm_<id>_<secret>`.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}_{}", self.id.as_uuid().simple(), self.secret)
    }

    /// The id and the hash of the secret of a presented key, without copying it.
    /// `None` for anything not shaped like one of ours.
    pub fn inspect(presented: &str) -> Option<(KeyId, SecretHash)> {
        let (id, secret) = split(presented)?;
        Some((id, SecretHash::of(secret.as_bytes())))
    }

    /// Reads a presented key. `None` for anything not shaped like one of ours.
    pub fn parse(presented: &str) -> Option<Self> {
        let (id, secret) = split(presented)?;
        Some(Self {
            id,
            secret: secret.to_owned(),
        })
    }
}

/// `tm_<id>_<secret>` -> (id, secret), checking the shape.
fn split(presented: &str) -> Option<(KeyId, &str)> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32
        || secret.len() != SECRET_LEN
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let id = Uuid::try_parse(id).ok()?;
    Some((KeyId::from_uuid(id), secret))
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("secret", &"..")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_through_its_text_form() {
        let key = ApiKey::new(KeyId::generate(), [7; 32]);
        let text = key.expose();
        assert!(text.starts_with("tm_"));
        assert_eq!(text.len(), 3 + 32 + 1 + 43);
        let parsed = ApiKey::parse(&text).expect("our own key");
        assert_eq!(parsed, key);
        assert!(parsed.secret_hash().matches(&key.secret_hash()));
    }

    #[test]
    fn different_secrets_do_not_match() {
        let id = KeyId::generate();
        let a = ApiKey::new(id, [1; 32]);
        let b = ApiKey::new(id, [2; 32]);
        assert!(!a.secret_hash().matches(&b.secret_hash()));
    }

    #[test]
    fn malformed_keys_are_not_keys() {
        let good = ApiKey::new(KeyId::generate(), [9; 32]).expose();
        for bad in [
            "",
            "tm_",
            "Bearer x",
            &good[..good.len() - 1],
            &format!("{good}x"),
            &good.replacen("tm_", "tk_", 1),
            &good.replacen('_', "-", 2),
            &format!("{}!", &good[..good.len() - 1]),
        ] {
            assert!(ApiKey::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = ApiKey::new(KeyId::generate(), [3; 32]);
        let secret = key.expose().rsplit('_').next().expect("secret").to_owned();
        assert!(!format!("{key:?}").contains(&secret));
    }

    #[test]
    fn grants_bind_roles_to_tenants() {
        let acme = TenantId::parse("acme").expect("valid");
        assert!(Grant::new(Role::Admin, None).is_ok());
        assert!(Grant::new(Role::Admin, Some(acme.clone())).is_err());
        assert!(Grant::new(Role::Reader, None).is_err());
        assert_eq!(
            Grant::new(Role::TenantAdmin, Some(acme.clone()))
                .expect("valid")
                .tenant(),
            Some(&acme)
        );
    }
}
