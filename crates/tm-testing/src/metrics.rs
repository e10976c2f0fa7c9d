//! Reading one value out of a Prometheus text scrape.

/// The value of one series in a Prometheus text scrape, named as it is written there:
/// `db_queries_total`, or with its labels, `circuit_breaker_state{breaker="database"}`.
/// `None` when the scrape has no such series (a labelled series appears only once it has
/// been touched).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    const SCRAPE: &str = "# HELP db_queries_total Queries.\n\
        # TYPE db_queries_total counter\n\
        db_queries_total 42\n\
        db_queries_total_extra 7\n\
        circuit_breaker_state{breaker=\"database\"} 1\n\
        db_replica_lag_seconds{replica=\"replica1\"} -1\n";

    #[test]
    fn finds_a_series_by_its_exact_name_and_labels() {
        assert_eq!(metric_value(SCRAPE, "db_queries_total"), Some(42.0));
        assert_eq!(
            metric_value(SCRAPE, r#"circuit_breaker_state{breaker="database"}"#),
            Some(1.0)
        );
        assert_eq!(
            metric_value(SCRAPE, r#"db_replica_lag_seconds{replica="replica1"}"#),
            Some(-1.0)
        );
        assert_eq!(metric_value(SCRAPE, "db_queries"), None);
        assert_eq!(metric_value(SCRAPE, "circuit_breaker_state"), None);
    }
}
