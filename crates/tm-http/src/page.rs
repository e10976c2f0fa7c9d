//! Pagination shared by the listings: page sizes, and the opaque cursors that continue
//! a listing after the last id of a page.

use std::fmt::Display;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tm_domain::FieldErrors;

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

/// The cursor that continues a listing after `id`. `prefix` names the listing (and the
/// cursor's version), so that one listing's cursor is refused by another.
pub(crate) fn encode_cursor(prefix: &str, id: impl Display) -> String {
    URL_SAFE_NO_PAD.encode(format!("{prefix}{id}"))
}

/// The id a cursor of [`encode_cursor`] continues after; anything else is a 400.
pub(crate) fn decode_cursor<T: FromStr>(prefix: &str, raw: &str) -> Result<T, ApiError> {
    let unreadable = || ApiError::Malformed("the cursor is not one this server issued".into());
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| unreadable())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| unreadable())?;
    text.strip_prefix(prefix)
        .and_then(|id| id.parse().ok())
        .ok_or_else(unreadable)
}
