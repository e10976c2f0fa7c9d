//! Backups of the PostgreSQL store: every table written with `COPY … TO STDOUT` in
//! primary-key order, in one repeatable-read transaction (a consistent snapshot), over a
//! session of its own on PostgreSQL itself; checked by copying it into temporary tables
//! in a transaction that is rolled back; restored with `COPY … FROM STDIN` in one
//! transaction that commits only when the restored tables equal the backup.

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::PostgresStore;
use crate::backup::{
    column_list, quoted, restored_equal, BackupRun, Export, RowDigest, SequenceValue, TableSummary,
};
use crate::{BackupStore, StoreError};

const BACKEND: &str = "postgres";

/// Bytes sent to `COPY … FROM STDIN` at a time.
const CHUNK: usize = 1 << 20;

#[async_trait]
impl BackupStore for PostgresStore {
    async fn export(&self, dir: &Path) -> Result<Export, StoreError> {
        let mut conn = self.session().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        unbounded(&mut tx).await?;
        let mut files = Vec::new();
        let mut tables = Vec::new();
        for table in tables_of(&mut tx).await? {
            let columns = columns_of(&mut tx, &table).await?;
            let file = format!("{table}.copy");
            // COPY sends a message per row: written through a buffer, not a write each.
            let mut out = tokio::io::BufWriter::with_capacity(
                CHUNK,
                tokio::fs::File::create(dir.join(&file)).await.map_err(io)?,
            );
            let select = select_in_key_order(&mut tx, &table, &columns, "").await?;
            let mut digest = RowDigest::new();
            let mut stream = tx
                .copy_out_raw(&format!("COPY ({select}) TO STDOUT"))
                .await?;
            while let Some(chunk) = stream.try_next().await? {
                digest.feed(&chunk, rows_in(&chunk));
                out.write_all(&chunk).await.map_err(io)?;
            }
            drop(stream);
            out.flush().await.map_err(io)?;
            out.get_ref().sync_all().await.map_err(io)?;
            tables.push(digest.finish(&table, columns));
            files.push(file);
        }
        let sequences = sequences_of(&mut tx).await?;
        let schema_version = schema_version(&mut tx).await?;
        tx.commit().await?;
        conn.close().await?;
        Ok(Export {
            backend: BACKEND.into(),
            schema_version,
            files,
            tables,
            sequences,
        })
    }

    async fn restore_scratch(
        &self,
        dir: &Path,
        export: &Export,
    ) -> Result<Vec<TableSummary>, StoreError> {
        same_backend(export)?;
        let mut conn = self.session().await?;
        let mut tx = conn.begin().await?;
        unbounded(&mut tx).await?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&mut *tx)
            .await?;
        let mut restored = Vec::new();
        for table in &export.tables {
            let scratch = format!("pg_temp.{}", quoted(&table.name));
            sqlx::query(&format!(
                "CREATE TEMPORARY TABLE {} (LIKE {}.{}) ON COMMIT DROP",
                quoted(&table.name),
                quoted(&schema),
                quoted(&table.name)
            ))
            .execute(&mut *tx)
            .await?;
            copy_in(&mut tx, dir, &table.name, &scratch, &table.columns).await?;
            let select =
                select_in_key_order(&mut tx, &table.name, &table.columns, "pg_temp.").await?;
            restored.push(summarise(&mut tx, &table.name, &table.columns, &select).await?);
        }
        // Rolled back: nothing of the scratch tables is left.
        tx.rollback().await?;
        conn.close().await?;
        Ok(restored)
    }

    async fn restore(&self, dir: &Path, export: &Export, force: bool) -> Result<(), StoreError> {
        same_backend(export)?;
        let mut conn = self.session().await?;
        let mut tx = conn.begin().await?;
        unbounded(&mut tx).await?;
        check_restorable(&mut tx, export, force).await?;
        replace_tables(&mut tx, dir, export).await?;
        let mut restored = Vec::new();
        for table in &export.tables {
            let select = select_in_key_order(&mut tx, &table.name, &table.columns, "").await?;
            restored.push(summarise(&mut tx, &table.name, &table.columns, &select).await?);
        }
        restored_equal(&export.tables, &restored)?;
        tx.commit().await?;
        conn.close().await?;
        Ok(())
    }

    async fn record_backup(&self, run: &BackupRun) -> Result<(), StoreError> {
        crate::sql::record_backup(self, run).await
    }

    async fn backup_state(&self) -> Result<tm_telemetry::BackupState, StoreError> {
        crate::sql::backup_state(self).await
    }
}

impl PostgresStore {
    /// A session of its own on PostgreSQL itself, for as long as a backup takes.
    async fn session(&self) -> Result<PgConnection, StoreError> {
        Ok(self.direct.connect().await?)
    }
}

fn same_backend(export: &Export) -> Result<(), StoreError> {
    if export.backend == BACKEND {
        Ok(())
    } else {
        Err(StoreError::Refused(format!(
            "the backup is of a {} store; this store is PostgreSQL",
            export.backend
        )))
    }
}

fn io(err: std::io::Error) -> StoreError {
    StoreError::Other(sqlx::Error::Io(err))
}

/// A backup takes as long as it takes: no statement or idle time-out in its transaction.
async fn unbounded(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *conn)
        .await?;
    sqlx::query("SET LOCAL idle_in_transaction_session_timeout = 0")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Rows in a chunk of `COPY` text output: one per newline (newlines in values are
/// written as `\n`).
fn rows_in(chunk: &[u8]) -> u64 {
    chunk.iter().filter(|b| **b == b'\n').count() as u64
}

/// The tables of the current schema, but the migrations' own, by name.
async fn tables_of(conn: &mut PgConnection) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind = 'r' \
           AND c.relname <> '_sqlx_migrations' \
         ORDER BY c.relname",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// A table's stored columns (not generated ones), in order.
async fn columns_of(conn: &mut PgConnection, table: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute \
         WHERE attrelid = (quote_ident(current_schema()) || '.' || quote_ident($1))::regclass \
           AND attnum > 0 AND NOT attisdropped \
           AND attgenerated = '' \
         ORDER BY attnum",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?)
}

/// `SELECT` of `columns` of `table` (read from `prefix`, e.g. `pg_temp.`) in the order
/// of the stored table's primary key.
async fn select_in_key_order(
    conn: &mut PgConnection,
    table: &str,
    columns: &[String],
    prefix: &str,
) -> Result<String, StoreError> {
    let key: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
         WHERE i.indrelid = (quote_ident(current_schema()) || '.' || quote_ident($1))::regclass \
           AND i.indisprimary \
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    let order = if key.is_empty() { columns } else { &key };
    Ok(format!(
        "SELECT {} FROM {prefix}{} ORDER BY {}",
        column_list(columns),
        quoted(table),
        column_list(order)
    ))
}

async fn summarise(
    conn: &mut PgConnection,
    table: &str,
    columns: &[String],
    select: &str,
) -> Result<TableSummary, StoreError> {
    let mut digest = RowDigest::new();
    let mut stream = conn
        .copy_out_raw(&format!("COPY ({select}) TO STDOUT"))
        .await?;
    while let Some(chunk) = stream.try_next().await? {
        digest.feed(&chunk, rows_in(&chunk));
    }
    drop(stream);
    Ok(digest.finish(table, columns.to_vec()))
}

/// Sends the export's file of `table` into `target`.
async fn copy_in(
    conn: &mut PgConnection,
    dir: &Path,
    table: &str,
    target: &str,
    columns: &[String],
) -> Result<(), StoreError> {
    let mut file = tokio::fs::File::open(dir.join(format!("{table}.copy")))
        .await
        .map_err(io)?;
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {target} ({}) FROM STDIN",
            column_list(columns)
        ))
        .await?;
    let mut buffer = vec![0; CHUNK];
    loop {
        let read = match file.read(&mut buffer).await {
            Ok(read) => read,
            Err(e) => {
                copy.abort("the backup file could not be read").await?;
                return Err(io(e));
            }
        };
        if read == 0 {
            break;
        }
        copy.send(&buffer[..read]).await?;
    }
    copy.finish().await?;
    Ok(())
}

/// Where each identity or serial column's sequence stands.
async fn sequences_of(conn: &mut PgConnection) -> Result<Vec<SequenceValue>, StoreError> {
    // Schema-qualified: the planner may ask about columns of other schemas' tables too.
    let owned = sqlx::query(
        "SELECT * FROM ( \
             SELECT c.relname::text AS table_name, a.attname::text AS column_name, \
                    pg_get_serial_sequence( \
                        quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname \
                    ) AS sequence \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'r' AND a.attnum > 0 \
               AND NOT a.attisdropped \
         ) owned WHERE sequence IS NOT NULL \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut sequences = Vec::new();
    for row in owned {
        let sequence: String = row.try_get(2)?;
        let state = sqlx::query(&format!("SELECT last_value, is_called FROM {sequence}"))
            .fetch_one(&mut *conn)
            .await?;
        let last: i64 = state.try_get(0)?;
        let called: bool = state.try_get(1)?;
        sequences.push(SequenceValue {
            table: row.try_get(0)?,
            column: row.try_get(1)?,
            next_value: if called { last + 1 } else { last },
        });
    }
    Ok(sequences)
}

/// The export's tables, each after the tables its foreign keys reference.
async fn referenced_first(
    conn: &mut PgConnection,
    tables: &[TableSummary],
) -> Result<Vec<String>, StoreError> {
    let edges: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c \
         JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE c.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(&mut *conn)
    .await?;
    let unquote = |name: &str| name.trim_matches('"').to_owned();
    let mut left: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
    let mut ordered = Vec::new();
    while !left.is_empty() {
        let ready = left.iter().position(|table| {
            edges.iter().all(|(from, to)| {
                unquote(from) != *table || unquote(to) == *table || ordered.contains(&unquote(to))
            })
        });
        // A cycle of foreign keys (none in this schema) is copied in name order.
        let next = ready.unwrap_or(0);
        ordered.push(left.remove(next));
    }
    Ok(ordered)
}

/// Refuses an export of another schema or other tables, and (unless `force`) a store
/// that holds what its users made.
async fn check_restorable(
    conn: &mut PgConnection,
    export: &Export,
    force: bool,
) -> Result<(), StoreError> {
    let ours = schema_version(conn).await?;
    if export.schema_version != ours {
        return Err(StoreError::Refused(format!(
            "the backup's schema is version {}, this store's is {ours}: restore it with the \
             version that made it, then upgrade",
            export.schema_version
        )));
    }
    let present: BTreeSet<String> = tables_of(conn).await?.into_iter().collect();
    let backed_up: BTreeSet<String> = export.tables.iter().map(|t| t.name.clone()).collect();
    if present != backed_up {
        return Err(StoreError::Refused(format!(
            "the backup's tables {backed_up:?} are not this store's {present:?}"
        )));
    }
    if !force {
        crate::sql::refuse_if_in_use::<PostgresStore>(conn).await?;
    }
    Ok(())
}

/// Empties every table and copies the export's rows in, then sets each sequence where
/// the export's stood.
async fn replace_tables(
    conn: &mut PgConnection,
    dir: &Path,
    export: &Export,
) -> Result<(), StoreError> {
    let all = export
        .tables
        .iter()
        .map(|t| quoted(&t.name))
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::query(&format!("TRUNCATE {all}"))
        .execute(&mut *conn)
        .await?;
    // The change notifications' triggers stay quiet: a restore is not a change made by
    // a user, and instances reload their snapshots afterwards.
    for table in &export.tables {
        sqlx::query(&format!(
            "ALTER TABLE {} DISABLE TRIGGER USER",
            quoted(&table.name)
        ))
        .execute(&mut *conn)
        .await?;
    }
    for name in referenced_first(conn, &export.tables).await? {
        let table = export
            .tables
            .iter()
            .find(|t| t.name == name)
            .expect("ordered from the export's own tables");
        copy_in(conn, dir, &table.name, &quoted(&table.name), &table.columns).await?;
    }
    for table in &export.tables {
        sqlx::query(&format!(
            "ALTER TABLE {} ENABLE TRIGGER USER",
            quoted(&table.name)
        ))
        .execute(&mut *conn)
        .await?;
    }
    for sequence in &export.sequences {
        sqlx::query("SELECT setval(pg_get_serial_sequence($1, $2), $3, false)")
            .bind(quoted(&sequence.table))
            .bind(&sequence.column)
            .bind(sequence.next_value)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn schema_version(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await?,
    )
}
