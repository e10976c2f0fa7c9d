//! Behind a transaction-pooling proxy (PgBouncer with `pool_mode = transaction`): the
//! session settings a URL carries as startup options, applied per transaction instead.

use crate::StoreError;

/// `url` without its `options` parameter, and the `-c name=value` settings that were in
/// it (a pooling proxy refuses startup options; they are applied per transaction).
pub(super) fn split_startup_options(
    url: &str,
) -> Result<(String, Vec<(String, String)>), StoreError> {
    let bad = |why: &str| StoreError::Corrupt(format!("database URL: {why}"));
    let mut parsed = url::Url::parse(url).map_err(|_| bad("not a URL"))?;
    let mut settings = Vec::new();
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        if key != "options" {
            kept.push((key.into_owned(), value.into_owned()));
            continue;
        }
        let mut words = value.split_whitespace();
        while let Some(word) = words.next() {
            let setting = match word.strip_prefix("-c") {
                Some("") => words.next().unwrap_or_default(),
                Some(inline) => inline,
                None => return Err(bad("options may only hold -c name=value settings")),
            };
            let (name, value) = setting
                .split_once('=')
                .ok_or_else(|| bad("an option without a value"))?;
            settings.push((name.to_owned(), value.to_owned()));
        }
    }
    parsed.set_query(None);
    if !kept.is_empty() {
        parsed.query_pairs_mut().extend_pairs(kept);
    }
    Ok((parsed.to_string(), settings))
}

/// `BEGIN` and the settings for the rest of the transaction, as one round trip.
pub(super) fn begin_with_settings(settings: &[(String, String)]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let calls: Vec<String> = settings
        .iter()
        .map(|(name, value)| format!("set_config({}, {}, true)", quote(name), quote(value)))
        .collect();
    format!("BEGIN; SELECT {}", calls.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_options_become_transaction_settings() {
        let (url, settings) = split_startup_options(
            "postgres://u:p@127.0.0.1:6432/db?sslmode=disable&options=-c%20search_path%3Dtest_1%20-cwork_mem%3D4MB",
        )
        .expect("valid");
        assert_eq!(url, "postgres://u:p@127.0.0.1:6432/db?sslmode=disable");
        assert_eq!(
            settings,
            [
                ("search_path".to_owned(), "test_1".to_owned()),
                ("work_mem".to_owned(), "4MB".to_owned())
            ]
        );
        assert!(split_startup_options("postgres://h/db?options=--search_path%3Dx").is_err());
        assert_eq!(
            begin_with_settings(&[("search_path".into(), "it's".into())]),
            "BEGIN; SELECT set_config('search_path', 'it''s', true)"
        );
    }
}
