//! Pagination shared by the listings: page sizes, and the opaque cursors that continue
//! a listing after the last id of a page.
//!
//! A cursor is the URL-safe base64 (unpadded) of a three-byte tag naming the listing and
//! the cursor's version, followed by the 16 bytes of the id. Every string of that form
//! is readable, so the form is stated exactly in the OpenAPI document (one pattern per
//! listing) and everything else, including another listing's cursor, is a 400.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tm_domain::{FieldErrors, Id, IdKind};
use uuid::Uuid;

use crate::ApiError;

/// Items per page when `limit` is not given.
pub(crate) const DEFAULT_PAGE: u32 = 100;
/// The largest `limit` accepted.
pub(crate) const MAX_PAGE: u32 = 1000;

/// The page size asked for, or the default; out of range is recorded in `errors`.
pub(crate) fn limit(asked: Option<u32>, errors: &mut FieldErrors) -> u32 {
    let limit = asked.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        errors.push("limit", format!("must be from 1 to {MAX_PAGE}"));
    }
    limit
}

/// The cursors of one listing.
pub(crate) struct Cursors {
    /// Names the listing and the cursor's version: three bytes, so that it is four
    /// base64 characters of its own.
    tag: &'static [u8; 3],
}

/// Cursors of the route listing.
pub(crate) const ROUTE_CURSORS: Cursors = Cursors { tag: b"r1:" };
/// Cursors of the key listing.
pub(crate) const KEY_CURSORS: Cursors = Cursors { tag: b"k1:" };
/// Cursors of the dead-letter queue's listing.
pub(crate) const DEAD_JOB_CURSORS: Cursors = Cursors { tag: b"d1:" };
/// Cursors of the webhook listing.
pub(crate) const WEBHOOK_CURSORS: Cursors = Cursors { tag: b"w1:" };

impl Cursors {
    /// The cursor that continues the listing after `id`.
    pub(crate) fn encode<K: IdKind>(&self, id: Id<K>) -> String {
        let mut bytes = [0u8; 19];
        bytes[..3].copy_from_slice(self.tag);
        bytes[3..].copy_from_slice(id.as_uuid().as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The id a cursor of [`Cursors::encode`] continues after; anything else is a 400.
    pub(crate) fn decode<K: IdKind>(&self, raw: &str) -> Result<Id<K>, ApiError> {
        let unreadable = || ApiError::Malformed("the cursor is not one this server issued".into());
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| unreadable())?;
        let id = bytes
            .strip_prefix(self.tag.as_slice())
            .and_then(|id| <[u8; 16]>::try_from(id).ok())
            .ok_or_else(unreadable)?;
        Ok(Id::from_uuid(Uuid::from_bytes(id)))
    }

    /// The regular expression of exactly the cursors [`Cursors::decode`] reads: the tag's
    /// four characters, then 16 bytes in 22 characters, the last of which carries four
    /// zero bits.
    #[cfg(test)]
    pub(crate) fn pattern(&self) -> String {
        format!(
            "^{}[A-Za-z0-9_-]{{21}}[AQgw]$",
            URL_SAFE_NO_PAD.encode(self.tag)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tm_domain::{KeyId, KeyKind, RouteId, RouteKind};

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = RouteId::generate();
        let cursor = ROUTE_CURSORS.encode(id);
        assert_eq!(
            ROUTE_CURSORS
                .decode::<RouteKind>(&cursor)
                .expect("readable"),
            id
        );
        assert!(cursor.starts_with("cjE6") && cursor.len() == 26, "{cursor}");
        for bad in [
            "",
            "!!",
            "abc",
            &URL_SAFE_NO_PAD.encode("r1:nope"),
            &URL_SAFE_NO_PAD.encode(id.to_string()),
            &KEY_CURSORS.encode(KeyId::generate()),
            &format!("{cursor}="),
            &format!("{}B", &cursor[..25]),
        ] {
            assert!(ROUTE_CURSORS.decode::<RouteKind>(bad).is_err(), "{bad}");
        }
    }

    /// The patterns say exactly which cursors are readable: any string of that form is,
    /// and no other.
    #[test]
    fn the_patterns_are_the_readable_cursors() {
        assert_eq!(ROUTE_CURSORS.pattern(), "^cjE6[A-Za-z0-9_-]{21}[AQgw]$");
        assert_eq!(KEY_CURSORS.pattern(), "^azE6[A-Za-z0-9_-]{21}[AQgw]$");
        let routes = regex_automata::meta::Regex::new(&ROUTE_CURSORS.pattern()).expect("compiles");
        let random = |len: usize| -> String {
            (0..len)
                .map(|_| char::from(ALPHABET[usize::from(rand::random::<u8>() % 64)]))
                .collect()
        };
        for _ in 0..5000 {
            // Of the stated form: readable.
            let last = ["A", "Q", "g", "w"][usize::from(rand::random::<u8>() % 4)];
            let route = format!("cjE6{}{last}", random(21));
            assert!(routes.is_match(&route));
            assert!(ROUTE_CURSORS.decode::<RouteKind>(&route).is_ok(), "{route}");
            let key = format!("azE6{}{last}", random(21));
            assert!(KEY_CURSORS.decode::<KeyKind>(&key).is_ok(), "{key}");
            // Near misses: readable exactly when of the stated form.
            let near = format!("cjE6{}", random(usize::from(rand::random::<u8>() % 4) + 20));
            assert_eq!(
                routes.is_match(&near),
                ROUTE_CURSORS.decode::<RouteKind>(&near).is_ok(),
                "{near}"
            );
        }
    }
}
