//! The record of backup runs, the same on both backends (the exports and restores
//! themselves are each backend's own).

use chrono::{DateTime, Utc};

use super::{fetch_optional, Backend, Conn, Value};
use crate::backup::{not_empty, USER_TABLES};
use crate::{BackupRun, ReadFrom, StoreError};

/// What the backup metrics show, read from the record of runs: when the last verified
/// backup finished, how long the last run took, and the runs that failed and that could
/// not be verified.
const STATE: &str = "\
    SELECT (SELECT max(finished_at) FROM backup_runs WHERE outcome = 'verified'), \
           (SELECT duration_ms FROM backup_runs ORDER BY finished_at DESC LIMIT 1), \
           (SELECT count(*) FROM backup_runs WHERE outcome = 'failed'), \
           (SELECT count(*) FROM backup_runs WHERE outcome = 'unverified')";

/// The last verified backup's end, the last run's milliseconds, failed and unverified
/// runs.
type StateRow = (Option<DateTime<Utc>>, Option<i64>, i64, i64);

pub(crate) async fn record_backup<B: Backend>(
    store: &B,
    run: &BackupRun,
) -> Result<(), StoreError> {
    let millis = (run.duration_seconds * 1000.0).round() as i64;
    store
        .writer()
        .write(async |conn: &mut Conn<B>| {
            let values = vec![
                Value::id(run.id),
                Value::Time(run.started_at),
                Value::Time(run.finished_at),
                Value::Text(run.outcome.as_str()),
                Value::Text(&run.location),
                Value::Int(i64::try_from(run.bytes).unwrap_or(i64::MAX)),
                Value::Int(millis.max(0)),
                Value::Text(&run.detail),
            ];
            B::execute(conn, &B::sql().insert_backup_run, values).await?;
            Ok(())
        })
        .await
}

pub(crate) async fn backup_state<B: Backend>(
    store: &B,
) -> Result<tm_telemetry::BackupState, StoreError> {
    let mut conn = store.reader(ReadFrom::Primary).0.acquire().await?;
    let row: Option<StateRow> = fetch_optional::<B, _>(&mut conn, STATE, Vec::new()).await?;
    let (last_success, last_millis, failures, verify_failures) = row.unwrap_or((None, None, 0, 0));
    Ok(tm_telemetry::BackupState {
        // Milliseconds are plenty for an alert measured in hours.
        last_success_unix: last_success.map(|t| t.timestamp_millis() as f64 / 1000.0),
        last_duration_seconds: last_millis.unwrap_or(0) as f64 / 1000.0,
        failures: u64::try_from(failures).unwrap_or(0),
        verify_failures: u64::try_from(verify_failures).unwrap_or(0),
    })
}

/// Refuses a restore over a store that holds any of its users' data (routes, keys,
/// audit rows, webhooks), saying what it holds.
pub(crate) async fn refuse_if_in_use<B: Backend>(conn: &mut Conn<B>) -> Result<(), StoreError> {
    let mut holding = Vec::new();
    for table in USER_TABLES {
        let sql = format!("SELECT count(*) FROM {table}");
        let (rows,): (i64,) = fetch_optional::<B, _>(conn, &sql, Vec::new())
            .await?
            .unwrap_or((0,));
        if rows > 0 {
            holding.push(format!("{rows} rows in {table}"));
        }
    }
    not_empty(&holding)
}
