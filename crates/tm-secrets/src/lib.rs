//! Secrets kept encrypted at rest (webhook signing secrets first), under a ring of named
//! AES-256-GCM keys.
//!
//! # Key ring
//!
//! The operator configures the ring as `id:base64key[,id:base64key...]`: each id is 1-32
//! characters of `a-z`, `0-9`, `_` and `-`, each key 32 bytes in standard base64. The first
//! key seals; every key opens. When no key is configured the service writes a fresh one-key
//! spec from [`SecretKeys::generate_spec`] to its key file on first start.
//!
//! # Sealed text
//!
//! [`SecretKeys::seal`] produces one line of ASCII, safe to store in a text column:
//!
//! ```text
//! v1:<key id>:<base64url, no padding, of nonce (12 bytes) || ciphertext || tag (16 bytes)>
//! ```
//!
//! The nonce is random and fresh for every seal. The caller's `context` (for example the id of
//! the row that owns the secret) is bound as associated data: it is not stored, and the text
//! opens only with the same context, so a ciphertext copied to another row does not open there.
//! The key id is stored in clear so that opening picks the right key, and so that a rotation
//! can tell which texts still need re-sealing ([`SecretKeys::is_current`]).
//!
//! # Rotation
//!
//! 1. Start with `a:KEY_A`.
//! 2. Configure `b:KEY_B,a:KEY_A` (the new key first): new secrets are sealed with `b`, old
//!    ones still open with `a`.
//! 3. The service re-seals every text that is not current (open, then seal).
//! 4. The operator drops `a`. A text still sealed with `a` then fails to open with
//!    [`OpenError::UnknownKey`] naming `a`, rather than as a generic failure.

use std::fmt;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, AeadCore, AeadInPlace, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::alphabet;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE_NO_PAD,
};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use secrecy::zeroize::Zeroizing;

/// The version tag in front of every sealed text; a new format would get a new tag.
const VERSION: &str = "v1";
/// The AES-GCM nonce length (96 bits).
const NONCE_LEN: usize = 12;
/// The AES-GCM authentication tag length (128 bits).
const TAG_LEN: usize = 16;
/// The AES-256 key length.
const KEY_LEN: usize = 32;
/// The longest key id.
const MAX_ID_LEN: usize = 32;

/// Standard base64 for keys in a spec; the padding may be there or not, as operators paste it.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A ring of named AES-256-GCM keys: the first seals, any of them opens.
///
/// `Debug` shows the key ids only, never key material.
pub struct SecretKeys {
    /// The key that seals (the first of the spec).
    current: RingKey,
    /// The other keys, in spec order; they only open.
    older: Vec<RingKey>,
}

/// One key of the ring: its id and the cipher keyed with it.
struct RingKey {
    id: String,
    cipher: Aes256Gcm,
}

/// Why a key spec was rejected. Items are numbered from 1 in the order of the comma-separated
/// spec; no message repeats key material.
#[derive(Debug, thiserror::Error)]
pub enum KeySpecError {
    /// The spec has no `id:key` item at all.
    #[error("no secret key configured: expected `id:base64key[,id:base64key...]`")]
    Empty,
    /// An item has no `:` between id and key.
    #[error("item {item} of the secret key spec is not `id:base64key` (no `:`)")]
    MissingSeparator { item: usize },
    /// An id is empty, too long or has a character outside `[a-z0-9_-]`.
    #[error("item {item} of the secret key spec: the key id must be 1-32 characters of a-z, 0-9, `_` and `-`")]
    BadId { item: usize },
    /// Two items have the same id, so a sealed text would not say which key it needs.
    #[error("item {item} of the secret key spec repeats the key id `{id}`")]
    DuplicateId { item: usize, id: String },
    /// A key is not standard base64.
    #[error("secret key `{id}` (item {item}) is not standard base64")]
    NotBase64 { item: usize, id: String },
    /// A key does not decode to 32 bytes.
    #[error("secret key `{id}` (item {item}) is {len} bytes; AES-256 needs exactly 32")]
    WrongLength { item: usize, id: String, len: usize },
}

/// Why a sealed text did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// The text is not of the form `v1:<key id>:<base64url payload>`, or its payload is too
    /// short to hold a nonce and a tag.
    #[error("not a sealed secret: expected `v1:<key id>:<base64url payload>`")]
    Malformed,
    /// The text was sealed with a key that is not in the ring: most likely the operator removed
    /// a key before every secret sealed with it was re-sealed.
    #[error("the secret is sealed with key `{0}`, which is not configured (was it removed before re-sealing?)")]
    UnknownKey(String),
    /// Authentication failed: the text was tampered with, or it belongs to another context
    /// (another row), or the key under this id is not the one that sealed it.
    #[error(
        "the sealed secret does not open: tampered with, or sealed for another context or key"
    )]
    Failed,
}

impl SecretKeys {
    /// Parses `id:base64key[,id:base64key...]` (whitespace around items trimmed, empty items
    /// skipped). Ids: 1-32 chars of `[a-z0-9_-]`, unique. Keys: standard base64 (padding
    /// optional) of exactly 32 bytes. At least one key; the first one seals.
    ///
    /// # Errors
    ///
    /// [`KeySpecError`] naming the offending item (and its id once the id is valid), never
    /// the key material.
    pub fn parse(spec: &str) -> Result<SecretKeys, KeySpecError> {
        let mut keys: Vec<RingKey> = Vec::new();
        for (index, item) in spec.split(',').enumerate() {
            let item_no = index + 1;
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (id, key) = item
                .split_once(':')
                .ok_or(KeySpecError::MissingSeparator { item: item_no })?;
            if !is_valid_id(id) {
                return Err(KeySpecError::BadId { item: item_no });
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeySpecError::DuplicateId {
                    item: item_no,
                    id: id.to_owned(),
                });
            }
            let cipher = cipher_from_base64(key).map_err(|len| match len {
                None => KeySpecError::NotBase64 {
                    item: item_no,
                    id: id.to_owned(),
                },
                Some(len) => KeySpecError::WrongLength {
                    item: item_no,
                    id: id.to_owned(),
                    len,
                },
            })?;
            keys.push(RingKey {
                id: id.to_owned(),
                cipher,
            });
        }
        let mut keys = keys.into_iter();
        let current = keys.next().ok_or(KeySpecError::Empty)?;
        Ok(SecretKeys {
            current,
            older: keys.collect(),
        })
    }

    /// A fresh one-key spec with a random key: `k<8 random lowercase hex>:<base64 of 32 random
    /// bytes>`, for the key file the service writes on first start when no key is configured.
    #[must_use]
    pub fn generate_spec() -> String {
        let mut key = Zeroizing::new([0_u8; KEY_LEN]);
        OsRng.fill_bytes(key.as_mut_slice());
        format!(
            "k{:08x}:{}",
            OsRng.next_u32(),
            STANDARD.encode(key.as_slice())
        )
    }

    /// The id of the key that seals.
    #[must_use]
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Encrypts `plaintext` under the current key with a fresh random 96-bit nonce, binding
    /// `context` as associated data (e.g. the owning row's id, so a ciphertext copied to
    /// another row does not open). Output: `v1:<key id>:<base64url-no-pad(nonce || ciphertext+tag)>`.
    ///
    /// # Panics
    ///
    /// Only if `plaintext` exceeds AES-GCM's limit of about 64 GiB.
    #[must_use]
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> String {
        let nonce = Aes256Gcm::generate_nonce(OsRng);
        // Exactly sized, so encrypting in place leaves no copy of the plaintext behind.
        let mut payload = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(plaintext);
        let tag = self
            .current
            .cipher
            .encrypt_in_place_detached(&nonce, context, &mut payload[NONCE_LEN..])
            .expect("AES-GCM encrypts any plaintext under 64 GiB");
        payload.extend_from_slice(&tag);
        format!(
            "{VERSION}:{}:{}",
            self.current.id,
            URL_SAFE_NO_PAD.encode(&payload)
        )
    }

    /// Decrypts what [`seal`](Self::seal) made, with whichever key of the ring sealed it and
    /// the same `context`. Never panics, whatever the input.
    ///
    /// # Errors
    ///
    /// [`OpenError::Malformed`] if the text is not a sealed secret, [`OpenError::UnknownKey`]
    /// (with the id) if its key is not in the ring, [`OpenError::Failed`] if authentication
    /// fails (wrong context, tampered text, or another key under the same id).
    pub fn open(&self, sealed: &str, context: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (id, payload) = split_sealed(sealed).ok_or(OpenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| OpenError::Malformed)?;
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = payload
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(OpenError::Malformed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.id == id)
            .ok_or_else(|| OpenError::UnknownKey(id.to_owned()))?;
        key.cipher
            .decrypt(
                &Nonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| OpenError::Failed)
    }

    /// Whether `sealed` is sealed under the current key (false: re-seal it during a rotation).
    /// Only the form and the key id are looked at; whether the text opens is not checked.
    #[must_use]
    pub fn is_current(&self, sealed: &str) -> bool {
        split_sealed(sealed).is_some_and(|(id, _)| id == self.current.id)
    }
}

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = std::iter::once(&self.current)
            .chain(&self.older)
            .map(|k| k.id.as_str())
            .collect();
        f.debug_struct("SecretKeys")
            .field("ids", &ids)
            .finish_non_exhaustive()
    }
}

/// Whether `id` is 1-32 characters of `[a-z0-9_-]`.
fn is_valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Decodes a base64 key into a cipher. `Err(None)`: not base64; `Err(Some(len))`: decoded to
/// `len` bytes instead of 32. The decoded bytes are wiped when done, whatever the outcome.
fn cipher_from_base64(key: &str) -> Result<Aes256Gcm, Option<usize>> {
    // Room for base64's own estimate of the decoded length (at most the text's length + 2),
    // so that running out of room never passes for invalid base64.
    let mut bytes = Zeroizing::new(vec![0_u8; key.len() + 3]);
    let len = KEY_BASE64.decode_slice(key, &mut bytes).map_err(|_| None)?;
    let key = bytes.get(..len).ok_or(None)?;
    Aes256Gcm::new_from_slice(key).map_err(|_| Some(len))
}

/// Splits `v1:<id>:<payload>` into a well-formed id and the payload text.
fn split_sealed(sealed: &str) -> Option<(&str, &str)> {
    let rest = sealed.strip_prefix(VERSION)?.strip_prefix(':')?;
    let (id, payload) = rest.split_once(':')?;
    is_valid_id(id).then_some((id, payload))
}

#[cfg(test)]
mod tests;
