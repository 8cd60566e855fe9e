//! Checking that a database holds matrix-media-repo's schema, at least the tables and
//! columns the tools read and write. The check only reads `information_schema`: these
//! tools never create, alter or migrate MMR's schema (MMR's own migrations do, when it
//! starts).

use sqlx::PgPool;

use media_db::error::QueryContext;

use crate::error::MmrError;

/// The tables the tools use, each with the columns they need (MMR's migrations up to 29
/// create them all; `datastore_id` came with migration 7, `held_ts` with 24, `error` with
/// 28).
pub const REQUIRED: &[(&str, &[&str])] = &[
    (
        "media",
        &[
            "origin",
            "media_id",
            "upload_name",
            "content_type",
            "user_id",
            "sha256_hash",
            "size_bytes",
            "datastore_id",
            "location",
            "creation_ts",
            "quarantined",
        ],
    ),
    (
        "thumbnails",
        &[
            "origin",
            "media_id",
            "width",
            "height",
            "method",
            "animated",
            "content_type",
            "size_bytes",
            "sha256_hash",
            "datastore_id",
            "location",
            "creation_ts",
        ],
    ),
    ("last_access", &["sha256_hash", "last_access_ts"]),
    ("media_attributes", &["origin", "media_id", "purpose"]),
    ("reserved_media", &["origin", "media_id", "reason"]),
    (
        "media_id_hold",
        &["origin", "media_id", "reason", "held_ts"],
    ),
    (
        "background_tasks",
        &["id", "task", "params", "start_ts", "end_ts", "error"],
    ),
];

/// Fails with [`MmrError::SchemaMissing`], naming every missing table and column, unless
/// the database behind `pool` (shown as `database`) holds all of [`REQUIRED`] in a schema
/// on its search path.
pub async fn check(pool: &PgPool, database: &str) -> Result<(), MmrError> {
    let tables: Vec<&str> = REQUIRED.iter().map(|(table, _)| *table).collect();
    let present: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = ANY (current_schemas(false)) AND table_name = ANY ($1)",
    )
    .bind(&tables)
    .fetch_all(pool)
    .await
    .during("read matrix-media-repo's tables from information_schema")?;
    let has = |table: &str, column: Option<&str>| {
        present
            .iter()
            .any(|(t, c)| t == table && column.is_none_or(|column| c == column))
    };
    let mut missing = Vec::new();
    for (table, columns) in REQUIRED {
        if !has(table, None) {
            missing.push(format!("table {table}"));
            continue;
        }
        missing.extend(
            columns
                .iter()
                .filter(|column| !has(table, Some(column)))
                .map(|column| format!("column {table}.{column}")),
        );
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MmrError::SchemaMissing {
            database: database.to_owned(),
            missing,
        })
    }
}
