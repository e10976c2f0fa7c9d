//! The database a test application runs on: a SQLite file in its data directory, a
//! PostgreSQL schema of its own (dropped with it), or a server it was given, and the
//! test's own connections to it, bypassing the application.

use std::path::{Path, PathBuf};

use sqlx::Connection;

/// The backend under test: `"postgres"` when `TM_TEST_DATABASE_URL` is set.
pub fn backend() -> &'static str {
    if std::env::var_os("TM_TEST_DATABASE_URL").is_some() {
        "postgres"
    } else {
        "sqlite"
    }
}

/// A PostgreSQL database as an application reaches it.
#[derive(Clone, Debug)]
pub(crate) struct PgTarget {
    /// PostgreSQL itself: migrations, `LISTEN` and the test's own connections.
    pub direct_url: String,
    /// What the application is given: `direct_url`, or the same through a PgBouncer in
    /// transaction pooling mode.
    pub app_url: String,
}

impl PgTarget {
    /// A server reached directly.
    pub fn direct(url: &str) -> Self {
        Self {
            direct_url: url.to_owned(),
            app_url: url.to_owned(),
        }
    }

    /// Whether the application goes through a PgBouncer.
    pub fn pooled(&self) -> bool {
        self.app_url != self.direct_url
    }
}

/// Where one test application's data lives, and what is dropped with it.
pub(crate) enum Database {
    /// `traffic-manager.db` in this directory.
    Sqlite(PathBuf),
    /// A schema the application owns, or a database it shares with others.
    Postgres {
        target: PgTarget,
        owned: Option<PgSchema>,
    },
}

impl Database {
    /// The PostgreSQL database, if that is the backend.
    pub fn postgres(&self) -> Option<&PgTarget> {
        match self {
            Database::Sqlite(_) => None,
            Database::Postgres { target, .. } => Some(target),
        }
    }

    /// Runs `sql` directly against the database, bypassing the application.
    pub async fn execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            Database::Postgres { target, .. } => {
                let mut conn = sqlx::PgConnection::connect(&target.direct_url).await?;
                sqlx::raw_sql(sql).execute(&mut conn).await?;
            }
            Database::Sqlite(dir) => {
                let mut conn = sqlite_connection(dir).await?;
                sqlx::raw_sql(sql).execute(&mut conn).await?;
            }
        }
        Ok(())
    }

    /// Takes the write lock on `routes` from a connection of the test's own, held until
    /// the returned connection is dropped.
    pub async fn lock_routes(&self) -> Box<dyn std::any::Any + Send> {
        match self {
            Database::Postgres { target, .. } => {
                let mut conn = sqlx::PgConnection::connect(&target.direct_url)
                    .await
                    .expect("connect");
                sqlx::raw_sql("BEGIN; LOCK TABLE routes IN ACCESS EXCLUSIVE MODE")
                    .execute(&mut conn)
                    .await
                    .expect("lock");
                Box::new(conn)
            }
            Database::Sqlite(dir) => {
                let mut conn = sqlite_connection(dir).await.expect("connect");
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .expect("lock");
                Box::new(conn)
            }
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Database::Postgres {
            owned: Some(schema),
            ..
        } = self
        {
            schema.drop_blocking();
        }
    }
}

async fn sqlite_connection(dir: &Path) -> Result<sqlx::SqliteConnection, sqlx::Error> {
    let path = dir.join("traffic-manager.db");
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await
}

/// A PostgreSQL schema of one test's own.
pub(crate) struct PgSchema {
    admin_url: String,
    name: String,
}

impl PgSchema {
    /// Creates a schema on the server of `TM_TEST_DATABASE_URL` (through
    /// `TM_TEST_DATABASE_DIRECT_URL` when that is set: then the first is a PgBouncer),
    /// and the target that puts an application in it.
    pub async fn create(pooled_url: &str) -> (Self, PgTarget) {
        let direct = std::env::var("TM_TEST_DATABASE_DIRECT_URL").ok();
        let admin_url = direct.as_deref().unwrap_or(pooled_url);
        let name = format!("test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("TM_TEST_DATABASE_URL reachable");
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .expect("create schema");
        let _ = conn.close().await;
        let in_schema = |url: &str| {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}options=-c%20search_path%3D{name}")
        };
        let target = PgTarget {
            direct_url: in_schema(admin_url),
            app_url: in_schema(pooled_url),
        };
        let schema = Self {
            admin_url: admin_url.to_owned(),
            name,
        };
        (schema, target)
    }

    /// Drops the schema from a thread of its own: `Drop` cannot await.
    ///
    /// The application may still hold a transaction on the schema's tables: one it was
    /// in the middle of when it was dropped, whose rollback it cannot send while this
    /// waits on its test's thread. Such a transaction would hold the drop (and, by its
    /// transaction id, every reader of any test that waits for older transactions) until
    /// PostgreSQL's idle-in-transaction time-out; the sessions holding locks on the
    /// schema are ended instead, as the application is gone anyway.
    fn drop_blocking(&self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await else {
                    return;
                };
                let _ = sqlx::query("SET lock_timeout = '250ms'")
                    .execute(&mut conn)
                    .await;
                for _ in 0..20 {
                    let dropped = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .execute(&mut conn)
                        .await;
                    if dropped.is_ok() {
                        break;
                    }
                    let _ = sqlx::query(
                        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                         JOIN pg_class c ON c.oid = l.relation \
                         JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                    )
                    .bind(&name)
                    .execute(&mut conn)
                    .await;
                }
                let _ = conn.close().await;
            });
        })
        .join();
    }
}

/// A PostgreSQL schema of a test's own on `TM_TEST_DATABASE_URL`, for processes the
/// test starts itself (the binary): dropped with this.
pub struct OwnSchema {
    schema: PgSchema,
    /// The URL that puts a connection in the schema, as `TM_DATABASE_URL`.
    pub url: String,
}

impl OwnSchema {
    /// A new schema; `None` when `TM_TEST_DATABASE_URL` is not set (the suite runs on
    /// SQLite).
    pub async fn create() -> Option<OwnSchema> {
        let url = std::env::var("TM_TEST_DATABASE_URL").ok()?;
        let (schema, target) = PgSchema::create(&url).await;
        Some(OwnSchema {
            schema,
            url: target.direct_url,
        })
    }
}

impl Drop for OwnSchema {
    fn drop(&mut self) {
        self.schema.drop_blocking();
    }
}
