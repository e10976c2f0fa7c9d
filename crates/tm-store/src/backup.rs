//! Backups as the store sees them: a consistent export of every table into a
//! directory, its restore into a scratch store to check it, and its restore into this
//! store.
//!
//! An [`Export`] describes what was exported: for each table its columns, its row count
//! and a SHA-256 of its rows in primary-key order, taken the same way from the export
//! and from every restore of it, so that what a restore holds can be compared with what
//! was exported, table by table.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What an export holds (the store's part of a backup's manifest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    /// `"sqlite"` or `"postgres"`: an export restores into a store of the same backend.
    pub backend: String,
    /// The last migration applied to the exported store.
    pub schema_version: i64,
    /// The files the export wrote into its directory.
    pub files: Vec<String>,
    /// Every table of the store but the migrations' own, by name.
    pub tables: Vec<TableSummary>,
    /// Where each sequence stood (PostgreSQL's identity columns), so that a restored
    /// store hands out no number twice: one handed out before may have been purged,
    /// and still be remembered by a consumer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<SequenceValue>,
}

impl Export {
    /// The rows of `table`, if the export holds it.
    pub fn rows(&self, table: &str) -> Option<u64> {
        self.tables.iter().find(|t| t.name == table).map(|t| t.rows)
    }
}

/// One table of an export, or of a restore of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSummary {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: u64,
    /// SHA-256 (hex) of the table's rows in primary-key order, one per line, as the
    /// backend writes them.
    pub sha256: String,
}

/// Where the sequence of a table's column stood.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceValue {
    pub table: String,
    pub column: String,
    /// The number it hands out next.
    pub next_value: i64,
}

/// The digest of one table's rows, fed as they are read.
pub(crate) struct RowDigest {
    hasher: Sha256,
    rows: u64,
}

impl RowDigest {
    pub(crate) fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            rows: 0,
        }
    }

    /// `bytes` holding `rows` whole rows (or part of one, with `rows` 0).
    pub(crate) fn feed(&mut self, bytes: &[u8], rows: u64) {
        self.hasher.update(bytes);
        self.rows += rows;
    }

    pub(crate) fn finish(self, name: &str, columns: Vec<String>) -> TableSummary {
        TableSummary {
            name: name.to_owned(),
            columns,
            rows: self.rows,
            sha256: hex(&self.hasher.finalize()),
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// How `found` differs from `expected`, one line per difference; empty when every table
/// is there with the same columns, rows and digest.
pub fn compare(expected: &[TableSummary], found: &[TableSummary]) -> Vec<String> {
    let mut differences = Vec::new();
    for want in expected {
        match found.iter().find(|t| t.name == want.name) {
            None => differences.push(format!("table {} is missing", want.name)),
            Some(got) if got.columns != want.columns => differences.push(format!(
                "table {}: columns {:?}, not {:?}",
                want.name, got.columns, want.columns
            )),
            Some(got) if got.rows != want.rows => differences.push(format!(
                "table {}: {} rows, not {}",
                want.name, got.rows, want.rows
            )),
            Some(got) if got.sha256 != want.sha256 => differences.push(format!(
                "table {}: its rows differ (digest {}, not {})",
                want.name, got.sha256, want.sha256
            )),
            Some(_) => {}
        }
    }
    for got in found {
        if !expected.iter().any(|t| t.name == got.name) {
            differences.push(format!("table {} was not in the backup", got.name));
        }
    }
    differences
}

/// The tables whose rows make a store "not empty" to a restore: what its users made.
pub(crate) const USER_TABLES: [&str; 4] = ["routes", "api_keys", "audit_log", "webhooks"];

/// Fails a restore (before it commits) whose tables differ from what it restored.
pub(crate) fn restored_equal(
    expected: &[TableSummary],
    restored: &[TableSummary],
) -> Result<(), crate::StoreError> {
    let differences = compare(expected, restored);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(crate::StoreError::Refused(format!(
            "the restored tables differ from the backup, nothing was changed: {}",
            differences.join("; ")
        )))
    }
}

/// Refuses a restore over a store that holds what its users made (`holding`: e.g.
/// "3 rows in routes"), if it holds anything.
pub(crate) fn not_empty(holding: &[String]) -> Result<(), crate::StoreError> {
    if holding.is_empty() {
        Ok(())
    } else {
        Err(crate::StoreError::Refused(format!(
            "the store is not empty ({}); restoring would replace it: use --force to do so",
            holding.join(", ")
        )))
    }
}

/// An SQL identifier, quoted.
pub(crate) fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Columns, quoted, comma-separated.
pub(crate) fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quoted(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a backup run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupOutcome {
    /// Written, then restored into a scratch store and found equal to the export.
    Verified,
    /// Written, but its check failed: not to be relied on.
    Unverified,
    /// Not written.
    Failed,
}

impl BackupOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupOutcome::Verified => "verified",
            BackupOutcome::Unverified => "unverified",
            BackupOutcome::Failed => "failed",
        }
    }
}

/// One backup run, as recorded in the store.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupRun {
    pub id: Uuid,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: BackupOutcome,
    /// Where the backup went (its target and name), with no credentials.
    pub location: String,
    /// Bytes written to the target.
    pub bytes: u64,
    pub duration_seconds: f64,
    /// Why it failed, or what it held.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, rows: u64, sha: &str) -> TableSummary {
        TableSummary {
            name: name.into(),
            columns: vec!["id".into()],
            rows,
            sha256: sha.into(),
        }
    }

    #[test]
    fn equal_summaries_have_no_differences() {
        let tables = [table("routes", 2, "aa"), table("api_keys", 1, "bb")];
        assert!(compare(&tables, &tables).is_empty());
    }

    #[test]
    fn every_kind_of_difference_is_named() {
        let expected = [
            table("routes", 2, "aa"),
            table("api_keys", 1, "bb"),
            table("audit_log", 3, "cc"),
        ];
        let mut other_columns = table("api_keys", 1, "bb");
        other_columns.columns.push("name".into());
        let found = [
            table("routes", 2, "ab"),
            other_columns,
            table("jobs", 0, "dd"),
        ];
        let differences = compare(&expected, &found);
        assert_eq!(differences.len(), 4, "{differences:?}");
        assert!(differences[0].starts_with("table routes: its rows differ"));
        assert!(differences[1].starts_with("table api_keys: columns"));
        assert_eq!(differences[2], "table audit_log is missing");
        assert_eq!(differences[3], "table jobs was not in the backup");
    }

    #[test]
    fn a_digest_depends_on_every_byte_and_counts_rows() {
        let mut a = RowDigest::new();
        a.feed(b"1\tx\n", 1);
        a.feed(b"2\ty\n", 1);
        let mut b = RowDigest::new();
        b.feed(b"1\tx\n2\ty\n", 2);
        let mut c = RowDigest::new();
        c.feed(b"1\tx\n2\tz\n", 2);
        let (a, b, c) = (
            a.finish("t", vec![]),
            b.finish("t", vec![]),
            c.finish("t", vec![]),
        );
        assert_eq!(a, b);
        assert_eq!(a.rows, 2);
        assert_ne!(a.sha256, c.sha256);
    }
}
