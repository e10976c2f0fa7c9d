//! Standard Webhooks signatures: the secret format and the `webhook-signature` header.
//!
//! Receivers check our deliveries with any Standard Webhooks library
//! (<https://www.standardwebhooks.com>), so the format here is exactly the standard's:
//! a secret is `whsec_` followed by the standard base64 of its bytes, and a signature is
//! `v1,` followed by the standard base64 of HMAC-SHA256, keyed with the secret's bytes,
//! over `{id}.{timestamp}.{body}`. Keeping to the standard means tenants need no code of
//! ours to trust what we send.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the message id, the same on every attempt of one message.
pub const HEADER_ID: &str = "webhook-id";
/// The header carrying the time of the attempt, in unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the signature, `v1,<base64>`.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The prefix that marks a Standard Webhooks secret.
const SECRET_PREFIX: &str = "whsec_";
/// The number of random bytes in a secret made by [`new_secret`].
const SECRET_LEN: usize = 32;
/// The shortest secret the standard allows, in bytes.
const SECRET_MIN: usize = 24;
/// The longest secret the standard allows, in bytes.
const SECRET_MAX: usize = 64;

/// Why a secret string could not be turned into key bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The string does not start with `whsec_`.
    #[error("the secret must start with \"whsec_\"")]
    MissingPrefix,
    /// What follows the prefix is not standard base64.
    #[error("the secret must be base64 after \"whsec_\"")]
    NotBase64,
    /// The decoded key is shorter or longer than the standard allows.
    #[error("the secret must decode to between 24 and 64 bytes, not {0}")]
    Length(usize),
}

/// Makes a new secret: `whsec_` and the base64 of 32 random bytes.
///
/// The bytes come from the thread-local generator of `rand`, a cryptographically secure
/// generator seeded by the operating system.
#[must_use]
pub fn new_secret() -> String {
    let bytes: [u8; SECRET_LEN] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The key bytes of a secret: strips `whsec_` and decodes the base64 that follows.
///
/// # Errors
///
/// When the prefix is missing, the rest is not standard base64, or the key is not
/// between 24 and 64 bytes long (the standard's bounds).
pub fn secret_bytes(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SecretError::MissingPrefix)?;
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| SecretError::NotBase64)?;
    if (SECRET_MIN..=SECRET_MAX).contains(&bytes.len()) {
        Ok(bytes)
    } else {
        Err(SecretError::Length(bytes.len()))
    }
}

/// Signs one attempt: returns the value of the `webhook-signature` header, `v1,<base64>`.
///
/// The signed content is `{id}.{timestamp}.{body}`, with the body as sent, byte for byte.
#[must_use]
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};
    use standardwebhooks::Webhook;
    use std::time::{SystemTime, UNIX_EPOCH};

    const BODY: &[u8] = br#"{"event":"route.updated","tenant":"acme"}"#;
    const ID: &str = "msg_2b7f0c1e";

    fn now() -> i64 {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        i64::try_from(secs).expect("seconds fit in i64")
    }

    fn headers(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_ID, HeaderValue::from_str(id).expect("id"));
        headers.insert(HEADER_TIMESTAMP, HeaderValue::from(timestamp));
        headers.insert(
            HEADER_SIGNATURE,
            HeaderValue::from_str(signature).expect("signature"),
        );
        headers
    }

    #[test]
    fn new_secret_is_whsec_and_32_bytes() {
        let secret = new_secret();
        assert!(secret.starts_with("whsec_"), "{secret}");
        assert_eq!(secret_bytes(&secret).expect("decodes").len(), 32);
        assert_ne!(secret, new_secret(), "two secrets are different");
    }

    #[test]
    fn secret_bytes_refuses_malformed_secrets() {
        assert_eq!(
            secret_bytes("C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
            Err(SecretError::MissingPrefix)
        );
        assert_eq!(
            secret_bytes("whsec_not base64!"),
            Err(SecretError::NotBase64)
        );
        assert_eq!(secret_bytes("whsec_AAAA"), Err(SecretError::Length(3)));
        assert_eq!(secret_bytes("whsec_"), Err(SecretError::Length(0)));
    }

    #[test]
    fn sign_matches_the_reference_vector() {
        // The known answer from the reference library's own tests.
        let key = secret_bytes("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").expect("secret");
        let signature = sign(
            &key,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn signatures_verify_with_the_reference_library() {
        let secret = new_secret();
        let key = secret_bytes(&secret).expect("secret");
        let timestamp = now();
        let signature = sign(&key, ID, timestamp, BODY);
        Webhook::new(&secret)
            .expect("reference accepts the secret")
            .verify(BODY, &headers(ID, timestamp, &signature))
            .expect("reference verifies the signature");
    }

    #[test]
    fn tampered_body_fails_reference_verification() {
        let secret = new_secret();
        let key = secret_bytes(&secret).expect("secret");
        let timestamp = now();
        let signature = sign(&key, ID, timestamp, BODY);
        let tampered = br#"{"event":"route.deleted","tenant":"acme"}"#;
        let result = Webhook::new(&secret)
            .expect("secret")
            .verify(tampered, &headers(ID, timestamp, &signature));
        assert!(result.is_err());
    }

    #[test]
    fn other_secret_fails_reference_verification() {
        let key = secret_bytes(&new_secret()).expect("secret");
        let timestamp = now();
        let signature = sign(&key, ID, timestamp, BODY);
        let result = Webhook::new(&new_secret())
            .expect("secret")
            .verify(BODY, &headers(ID, timestamp, &signature));
        assert!(result.is_err());
    }

    #[test]
    fn other_id_fails_reference_verification() {
        let secret = new_secret();
        let key = secret_bytes(&secret).expect("secret");
        let timestamp = now();
        let signature = sign(&key, ID, timestamp, BODY);
        let result = Webhook::new(&secret)
            .expect("secret")
            .verify(BODY, &headers("msg_other", timestamp, &signature));
        assert!(result.is_err());
    }

    #[test]
    fn old_timestamp_fails_reference_verification() {
        let secret = new_secret();
        let key = secret_bytes(&secret).expect("secret");
        // The reference tolerates five minutes; ten is too old even though the signature
        // itself is right for this timestamp.
        let timestamp = now() - 600;
        let signature = sign(&key, ID, timestamp, BODY);
        let result = Webhook::new(&secret)
            .expect("secret")
            .verify(BODY, &headers(ID, timestamp, &signature));
        assert!(result.is_err());
    }
}
