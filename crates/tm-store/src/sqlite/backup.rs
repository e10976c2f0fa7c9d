//! Backups of the SQLite store: `VACUUM INTO` a file of its own (a consistent copy,
//! taken on a read-only connection beside the writer), checked by opening that file as
//! a scratch database, and restored by copying every table from it, attached, in one
//! transaction that commits only when the copies equal the backup.

use std::path::Path;

use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};

use super::SqliteStore;
use crate::backup::{
    column_list, quoted, restored_equal, BackupRun, Export, RowDigest, TableSummary,
};
use crate::{BackupStore, StoreError};

/// The one file of a SQLite export.
const FILE: &str = "store.sqlite";

const BACKEND: &str = "sqlite";

#[async_trait]
impl BackupStore for SqliteStore {
    async fn export(&self, dir: &Path) -> Result<Export, StoreError> {
        let file = dir.join(FILE);
        let mut conn = self.options.clone().read_only(true).connect().await?;
        sqlx::query("VACUUM INTO ?")
            .bind(path_text(&file)?)
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let mut copy = open(&file, true).await?;
        let tables = summarise(&mut copy, "main").await?;
        let schema_version = schema_version(&mut copy, "main").await?;
        copy.close().await?;
        Ok(Export {
            backend: BACKEND.into(),
            schema_version,
            files: vec![FILE.into()],
            tables,
            sequences: Vec::new(),
        })
    }

    async fn restore_scratch(
        &self,
        dir: &Path,
        export: &Export,
    ) -> Result<Vec<TableSummary>, StoreError> {
        same_backend(export)?;
        let mut copy = open(&dir.join(FILE), true).await?;
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut copy)
            .await?;
        if integrity != "ok" {
            return Err(StoreError::Refused(format!(
                "the backup's database is damaged: {integrity}"
            )));
        }
        let tables = summarise(&mut copy, "main").await?;
        copy.close().await?;
        Ok(tables)
    }

    async fn restore(&self, dir: &Path, export: &Export, force: bool) -> Result<(), StoreError> {
        same_backend(export)?;
        let file = dir.join(FILE);
        let expected = upgrade(&file, export).await?;
        let mut conn = self.options.clone().connect().await?;
        sqlx::query("ATTACH DATABASE ? AS backup")
            .bind(path_text(&file)?)
            .execute(&mut conn)
            .await?;
        let copied = copy_tables(&mut conn, &expected, force).await;
        // Detached whatever happened (outside the transaction, which has ended).
        sqlx::query("DETACH DATABASE backup")
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        copied
    }

    async fn record_backup(&self, run: &BackupRun) -> Result<(), StoreError> {
        crate::sql::record_backup(self, run).await
    }

    async fn backup_state(&self) -> Result<tm_telemetry::BackupState, StoreError> {
        crate::sql::backup_state(self).await
    }
}

fn same_backend(export: &Export) -> Result<(), StoreError> {
    if export.backend == BACKEND {
        Ok(())
    } else {
        Err(StoreError::Refused(format!(
            "the backup is of a {} store; this store is SQLite",
            export.backend
        )))
    }
}

fn path_text(path: &Path) -> Result<&str, StoreError> {
    path.to_str()
        .ok_or_else(|| StoreError::Refused(format!("{} is not a UTF-8 path", path.display())))
}

async fn open(file: &Path, read_only: bool) -> Result<SqliteConnection, StoreError> {
    Ok(SqliteConnectOptions::new()
        .filename(file)
        .read_only(read_only)
        .connect()
        .await?)
}

/// Brings the backup's database to this build's schema (a backup made by an earlier
/// version restores into a later one) and summarises it: what the restore must equal.
async fn upgrade(file: &Path, export: &Export) -> Result<Vec<TableSummary>, StoreError> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(file))
        .await?;
    let migrator = sqlx::migrate!("./migrations/sqlite");
    let latest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    if export.schema_version > latest {
        pool.close().await;
        return Err(StoreError::Refused(format!(
            "the backup's schema (version {}) is newer than this build's ({latest}): restore \
             it with the version that made it",
            export.schema_version
        )));
    }
    migrator.run(&pool).await?;
    let mut conn = pool.acquire().await?;
    let tables = summarise(&mut conn, "main").await?;
    drop(conn);
    pool.close().await;
    Ok(tables)
}

/// Replaces every table of `main` with the attached `backup`'s, in one transaction.
async fn copy_tables(
    conn: &mut SqliteConnection,
    expected: &[TableSummary],
    force: bool,
) -> Result<(), StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    if !force {
        crate::sql::refuse_if_in_use::<SqliteStore>(&mut tx).await?;
    }
    // Foreign keys are checked at commit, once every table is back.
    sqlx::query("PRAGMA defer_foreign_keys = ON")
        .execute(&mut *tx)
        .await?;
    let present = tables(&mut tx, "main").await?;
    for table in &present {
        sqlx::query(&format!("DELETE FROM main.{}", quoted(table)))
            .execute(&mut *tx)
            .await?;
    }
    for table in expected {
        let columns = column_list(&table.columns);
        sqlx::query(&format!(
            "INSERT INTO main.{t} ({columns}) SELECT {columns} FROM backup.{t}",
            t = quoted(&table.name)
        ))
        .execute(&mut *tx)
        .await?;
    }
    // Where each AUTOINCREMENT column stood, so no number is handed out twice.
    sqlx::query("DELETE FROM main.sqlite_sequence")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO main.sqlite_sequence (name, seq) SELECT name, seq FROM backup.sqlite_sequence",
    )
    .execute(&mut *tx)
    .await?;
    let restored = summarise(&mut tx, "main").await?;
    restored_equal(expected, &restored)?;
    tx.commit().await?;
    Ok(())
}

/// The tables of `schema`, in creation order, but SQLite's and the migrations' own.
async fn tables(conn: &mut SqliteConnection, schema: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT name FROM {schema}.sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_sqlx_migrations' \
         ORDER BY rowid"
    ))
    .fetch_all(&mut *conn)
    .await?)
}

/// Each table's columns, rows and digest: every row's values as SQL literals
/// (`quote()`), comma-separated, one row per line, in primary-key order.
async fn summarise(
    conn: &mut SqliteConnection,
    schema: &str,
) -> Result<Vec<TableSummary>, StoreError> {
    let mut summaries = Vec::new();
    for table in tables(conn, schema).await? {
        let info = sqlx::query("SELECT name, pk FROM pragma_table_info(?, ?) ORDER BY cid")
            .bind(&table)
            .bind(schema)
            .fetch_all(&mut *conn)
            .await?;
        let mut columns = Vec::new();
        let mut key: Vec<(i64, String)> = Vec::new();
        for row in info {
            let name: String = row.try_get(0)?;
            let pk: i64 = row.try_get(1)?;
            if pk > 0 {
                key.push((pk, name.clone()));
            }
            columns.push(name);
        }
        key.sort();
        let order = if key.is_empty() {
            "rowid".to_owned()
        } else {
            column_list(&key.into_iter().map(|(_, c)| c).collect::<Vec<_>>())
        };
        let line = columns
            .iter()
            .map(|c| format!("quote({})", quoted(c)))
            .collect::<Vec<_>>()
            .join(" || ',' || ");
        let statement = format!(
            "SELECT {line} FROM {schema}.{} ORDER BY {order}",
            quoted(&table)
        );
        let mut digest = RowDigest::new();
        let mut rows = sqlx::query_scalar::<_, String>(&statement).fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            digest.feed(row.as_bytes(), 0);
            digest.feed(b"\n", 1);
        }
        drop(rows);
        summaries.push(digest.finish(&table, columns));
    }
    Ok(summaries)
}

async fn schema_version(conn: &mut SqliteConnection, schema: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT coalesce(max(version), 0) FROM {schema}._sqlx_migrations WHERE success"
    ))
    .fetch_one(&mut *conn)
    .await?)
}
