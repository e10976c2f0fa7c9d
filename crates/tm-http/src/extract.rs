//! Extractors that turn unreadable input into problems instead of axum's plain-text
//! rejections: JSON bodies, query strings, route ids and `If-Match`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use tm_domain::{FieldErrors, RouteId};

use crate::wire::RequestHead;
use crate::ApiError;

/// A JSON body of type `T`. Wrong content type is a 415, broken JSON a 400, and JSON of
/// the wrong shape (wrong types, unknown fields) a 422 naming the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else if crate::serve::is_body_timeout(&rejection) {
                ApiError::BodyTimeout
            } else {
                ApiError::Malformed(format!("could not read the request body: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A body read before its handler (for `Idempotency-Key`) must be what [`ApiJson`]
/// accepts as far as form goes: JSON by its content type (415) and in its syntax (400).
pub(crate) fn check_json(headers: &HeaderMap, bytes: &[u8]) -> Result<(), ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    check_syntax(bytes)
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether `bytes` are one JSON value and nothing else: 400 if not.
fn check_syntax(bytes: &[u8]) -> Result<(), ApiError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(drop)
        .map_err(|e| ApiError::Malformed(format!("the body is not valid JSON: {e}")))
}

/// Syntax first, then shape: a broken body is a 400 whatever fields it names, since
/// serde would otherwise stop at an unknown field before it reached the break.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    check_syntax(bytes)?;
    // Every body is an object. serde would also read a struct from an array of its fields
    // in order; refuse that (and other roots) before it gets the chance.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let mut errors = FieldErrors::default();
        errors.push("body", "must be a JSON object");
        return Err(ApiError::Invalid(errors));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = field_of(&path, &inner.to_string());
                let mut errors = FieldErrors::default();
                errors.push(field, strip_position(&inner.to_string()));
                ApiError::Invalid(errors)
            }
            _ => ApiError::Malformed(format!("the body is not valid JSON: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::Malformed(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// The field a serde data error is about: its path, or for an unknown field at the root
/// the field's own name.
fn field_of(path: &str, message: &str) -> String {
    if path != "." {
        return path.to_owned();
    }
    message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .map_or_else(|| "body".to_owned(), str::to_owned)
}

/// serde_json appends "at line 1 column 7"; the field name says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// For optional body fields: absent is `None`, but an explicit `null` is refused like
/// any other value of the wrong type. Use with `#[serde(default, deserialize_with = ..)]`.
pub(crate) fn non_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// For optional integer body fields, as [`non_null`]: a JSON number without a fractional
/// part, as JSON Schema's `integer` is, so `74` and `74.0` alike. Use with
/// `#[serde(default, deserialize_with = ..)]`.
pub(crate) fn integer<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Integer;

    impl serde::de::Visitor<'_> for Integer {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
        }

        #[expect(
            clippy::cast_possible_truncation,
            reason = "only whole numbers well inside the range of i64 are converted"
        )]
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // 2^53: every whole number up to here is exact in an f64.
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if v.fract() == 0.0 && v.abs() <= EXACT {
                Ok(v as i64)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
            }
        }
    }

    deserializer.deserialize_any(Integer).map(Some)
}

/// [`integer`], with `null` read as absent: for optional fields whose `null` means
/// "the default".
pub(crate) fn nullable_integer<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(serde::Deserialize)]
    #[serde(transparent)]
    struct Whole(#[serde(deserialize_with = "integer")] Option<i64>);

    Ok(<Option<Whole> as serde::Deserialize>::deserialize(deserializer)?.and_then(|w| w.0))
}

/// A query string of type `T` (which should deny unknown fields). Anything unreadable —
/// unknown or repeated parameters, values of the wrong type — is a 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// Reads a query string as `T`, borrowing from `query` where `T` allows it.
pub fn parse_query<'a, T: serde::Deserialize<'a>>(query: &'a str) -> Result<T, ApiError> {
    serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::Malformed(format!("invalid query string: {e}")))
}

/// A route id from the path. Anything that is not a route id names no route: 404.
pub struct RouteIdPath(pub RouteId);

impl<S: Send + Sync> FromRequestParts<S> for RouteIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::NotFound)?;
        raw.parse().map(RouteIdPath).map_err(|_| ApiError::NotFound)
    }
}

/// The revisions an `If-Match` header accepts: `None` without the header or with `*`
/// (the route must merely exist). Tags are compared strongly, so a weak or unreadable tag
/// matches no revision and the write fails with 412.
pub struct IfMatch(pub Option<Vec<i64>>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let values: Vec<&str> = parts
            .headers
            .get_all(header::IF_MATCH)
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
        if values.is_empty() {
            return Ok(IfMatch(None));
        }
        let tags: Vec<&str> = values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        if tags.contains(&"*") {
            return Ok(IfMatch(None));
        }
        Ok(IfMatch(Some(
            tags.iter().filter_map(|t| revision_of_tag(t)).collect(),
        )))
    }
}

/// `"7"` -> 7. Weak tags and anything else -> None.
fn revision_of_tag(tag: &str) -> Option<i64> {
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    inner.parse().ok()
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, as RFC 9110 asks).
pub(crate) fn if_none_match(headers: &(impl RequestHead + ?Sized), etag: &str) -> bool {
    headers
        .each(&header::IF_NONE_MATCH)
        .any(|value| tag_list_matches(value, etag))
}

fn tag_list_matches(value: &[u8], etag: &str) -> bool {
    crate::wire::text(value).is_some_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_tags_are_strong_quoted_revisions() {
        assert_eq!(revision_of_tag("\"7\""), Some(7));
        for bad in [
            "7",
            "W/\"7\"",
            "\"\"",
            "\"7a\"",
            "\"-1\"",
            "\"99999999999999999999\"",
        ] {
            assert_eq!(revision_of_tag(bad), None, "{bad}");
        }
    }

    #[test]
    fn unknown_fields_are_named() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[expect(dead_code, reason = "only the error matters")]
        struct Body {
            a: Option<String>,
        }
        let Err(ApiError::Invalid(errors)) = parse_json::<Body>(br#"{"a":"x","colour":1}"#) else {
            panic!("expected 422");
        };
        assert_eq!(errors.0[0].field, "colour");
        assert!(matches!(
            parse_json::<Body>(b"{\"a\":"),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(
            parse_json::<Body>(b"{} x"),
            Err(ApiError::Malformed(_))
        ));
        let Err(ApiError::Invalid(errors)) = parse_json::<Body>(br#"{"a":5}"#) else {
            panic!("expected 422");
        };
        assert_eq!(errors.0[0].field, "a");
        for root in [&b"[\"x\"]"[..], b"[]", b"\"x\"", b"null", b"7", b" [1]"] {
            let Err(ApiError::Invalid(errors)) = parse_json::<Body>(root) else {
                panic!("a non-object root must be a 422");
            };
            assert_eq!(errors.0[0].field, "body");
        }
        assert!(matches!(
            parse_json::<Body>(b"[1,"),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(
            parse_json::<Body>(b""),
            Err(ApiError::Malformed(_))
        ));
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct Body {
            #[serde(default, deserialize_with = "integer")]
            n: Option<i64>,
        }
        for (raw, n) in [
            (&br#"{"n":74}"#[..], 74),
            (br#"{"n":74.0}"#, 74),
            (br#"{"n":-0.0}"#, 0),
            (br#"{"n":7e1}"#, 70),
            (br#"{"n":-3}"#, -3),
        ] {
            let body: Body = parse_json(raw).expect("an integer");
            assert_eq!(body.n, Some(n), "{}", String::from_utf8_lossy(raw));
        }
        assert_eq!(parse_json::<Body>(b"{}").expect("absent").n, None);
        for raw in [
            &br#"{"n":74.5}"#[..],
            br#"{"n":1e300}"#,
            br#"{"n":99999999999999999999}"#,
            br#"{"n":"7"}"#,
            br#"{"n":null}"#,
            br#"{"n":true}"#,
        ] {
            let Err(ApiError::Invalid(errors)) = parse_json::<Body>(raw) else {
                panic!("{} must be a 422", String::from_utf8_lossy(raw));
            };
            assert_eq!(errors.0[0].field, "n");
        }
    }

    #[test]
    fn nullable_integers_read_null_as_absent_and_nothing_else() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct Body {
            #[serde(default, deserialize_with = "nullable_integer")]
            n: Option<i64>,
        }
        for (raw, n) in [
            (&br#"{"n":25}"#[..], Some(25)),
            (br#"{"n":25.0}"#, Some(25)),
            (br#"{"n":null}"#, None),
            (br#"{}"#, None),
        ] {
            let body: Body = parse_json(raw).expect("an integer or nothing");
            assert_eq!(body.n, n, "{}", String::from_utf8_lossy(raw));
        }
        for raw in [&br#"{"n":2.5}"#[..], br#"{"n":"7"}"#, br#"{"n":[]}"#] {
            let Err(ApiError::Invalid(errors)) = parse_json::<Body>(raw) else {
                panic!("{} must be a 422", String::from_utf8_lossy(raw));
            };
            assert_eq!(errors.0[0].field, "n");
        }
    }

    #[test]
    fn broken_json_is_400_whatever_fields_it_names() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[expect(dead_code, reason = "only the error matters")]
        struct Body {
            a: Option<u8>,
        }
        for broken in [
            &br#"{"colour":1,"#[..],
            br#"{"colour":1,}"#,
            br#"{"a":"x","#,
            br#"{"a":"x",}"#,
            br#"{"a":300,"b""#,
            br#"{"colour":1} {"#,
        ] {
            assert!(
                matches!(parse_json::<Body>(broken), Err(ApiError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(broken)
            );
        }
    }
}
