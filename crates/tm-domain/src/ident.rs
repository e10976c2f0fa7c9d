//! Route identifiers: tenant, service, env and version names.
//!
//! All four share one shape — 1 to 63 characters of `a-z 0-9 . _ -`, starting with a letter
//! or digit — but are distinct types, so a service name can never be passed as a tenant.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use crate::DomainError;

/// Longest identifier accepted, in bytes (all accepted characters are ASCII).
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// What an identifier names; only used to tell identifier types apart.
pub trait IdentifierKind {
    /// The field name used in error messages.
    const FIELD: &'static str;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tenant {}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Env {}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VersionKind {}

impl IdentifierKind for Tenant {
    const FIELD: &'static str = "tenant";
}
impl IdentifierKind for Service {
    const FIELD: &'static str = "service";
}
impl IdentifierKind for Env {
    const FIELD: &'static str = "env";
}
impl IdentifierKind for VersionKind {
    const FIELD: &'static str = "version";
}

/// A validated identifier. `parse` is the only way in; the field is private.
///
/// Most identifiers are short: up to 23 bytes are kept inline, so parsing one from a
/// request and copying it allocate nothing (longer ones share one allocation).
#[derive(Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identifier<K: IdentifierKind> {
    value: SmolStr,
    #[serde(skip)]
    kind: PhantomData<K>,
}

/// Owner of routes; the unit of isolation.
pub type TenantId = Identifier<Tenant>;
/// A service of a tenant, e.g. `billing`.
pub type ServiceName = Identifier<Service>;
/// An environment, e.g. `prod`.
pub type EnvName = Identifier<Env>;
/// A deployable version of a service, e.g. `v2` or `2024.06.1`.
pub type Version = Identifier<VersionKind>;

impl<K: IdentifierKind> Identifier<K> {
    /// Accepts `raw` exactly as given, or says why not. Never trims or lowercases.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        check_identifier(raw)?;
        Ok(Self {
            value: SmolStr::new(raw),
            kind: PhantomData,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The field name this identifier is reported under.
    pub fn field() -> &'static str {
        K::FIELD
    }
}

/// Checks the shared identifier shape without allocating.
pub fn check_identifier(raw: &str) -> Result<(), DomainError> {
    if raw.is_empty() {
        return Err(DomainError::invalid("must not be empty"));
    }
    if raw.len() > MAX_IDENTIFIER_LEN {
        return Err(DomainError::invalid(format!(
            "must be at most {MAX_IDENTIFIER_LEN} characters"
        )));
    }
    let bytes = raw.as_bytes();
    if !(bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit()) {
        return Err(DomainError::invalid(
            "must start with a lowercase letter or a digit",
        ));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(DomainError::invalid(format!(
            "must contain only a-z, 0-9, '.', '_' and '-' (found {bad:?})"
        )));
    }
    Ok(())
}

impl<K: IdentifierKind> TryFrom<String> for Identifier<K> {
    type Error = DomainError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        check_identifier(&value)?;
        Ok(Self {
            value: SmolStr::from(value),
            kind: PhantomData,
        })
    }
}

impl<K: IdentifierKind> From<Identifier<K>> for String {
    fn from(id: Identifier<K>) -> Self {
        id.value.into()
    }
}

impl<K: IdentifierKind> AsRef<str> for Identifier<K> {
    fn as_ref(&self) -> &str {
        &self.value
    }
}

impl<K: IdentifierKind> fmt::Display for Identifier<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl<K: IdentifierKind> fmt::Debug for Identifier<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:?})", K::FIELD, self.value)
    }
}

// Derives would demand the bounds on `K` too; these impls only look at the value.
impl<K: IdentifierKind> Clone for Identifier<K> {
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
            kind: PhantomData,
        }
    }
}
impl<K: IdentifierKind> PartialEq for Identifier<K> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl<K: IdentifierKind> Eq for Identifier<K> {}
impl<K: IdentifierKind> Hash for Identifier<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.as_str().hash(state);
    }
}
impl<K: IdentifierKind> PartialOrd for Identifier<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: IdentifierKind> Ord for Identifier<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value.cmp(&other.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_contract_shape() {
        for ok in [
            "a",
            "0",
            "acme",
            "billing-api",
            "v1.2.3",
            "eu_west.1",
            "9lives",
            &"a".repeat(63),
        ] {
            assert!(TenantId::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn rejects_everything_else_without_rewriting() {
        let long = "a".repeat(64);
        for bad in [
            "",
            " acme",
            "acme ",
            "Acme",
            "ACME",
            "-acme",
            ".acme",
            "_acme",
            "ac me",
            "ac/me",
            "ac:me",
            "ac\u{e9}me",
            "ac\nme",
            "a+b",
            "a%20b",
            long.as_str(),
            "\u{0}",
            "é",
        ] {
            assert!(
                ServiceName::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn serde_goes_through_parse() {
        let ok: EnvName = serde_json::from_str("\"prod\"").expect("valid");
        assert_eq!(ok.as_str(), "prod");
        assert!(serde_json::from_str::<EnvName>("\"Prod\"").is_err());
        assert_eq!(serde_json::to_string(&ok).expect("serialize"), "\"prod\"");
    }

    proptest! {
        #[test]
        fn every_valid_identifier_round_trips(raw in "[a-z0-9][a-z0-9._-]{0,62}") {
            let id = Version::parse(&raw).expect("valid by construction");
            prop_assert_eq!(id.as_str(), raw.as_str());
            let json = serde_json::to_string(&id).expect("serialize");
            let back: Version = serde_json::from_str(&json).expect("deserialize");
            prop_assert_eq!(back, id);
        }

        #[test]
        fn nothing_invalid_gets_in(raw in "\\PC{0,80}") {
            let shape_ok = !raw.is_empty()
                && raw.len() <= 63
                && raw.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
            prop_assert_eq!(TenantId::parse(&raw).is_ok(), shape_ok);
        }

        #[test]
        fn a_bad_character_anywhere_is_rejected(
            prefix in "[a-z0-9]{1,20}",
            bad in "[^a-z0-9._-]",
            suffix in "[a-z0-9]{0,20}",
        ) {
            let raw = format!("{prefix}{bad}{suffix}");
            prop_assert!(TenantId::parse(&raw).is_err());
        }
    }
}
