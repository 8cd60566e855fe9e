//! The task log: one row per run of a tool, for audit and resume.

use async_trait::async_trait;
use media_core::now_ms;

use super::Repository;
use crate::connect::on_pool;
use crate::error::{DbError, QueryContext};
use crate::model::{TaskFilter, TaskId, TaskKind, TaskRecord};
use crate::roles::TaskLog;

#[async_trait]
impl TaskLog for Repository {
    async fn start_task(
        &self,
        kind: TaskKind,
        params: &serde_json::Value,
    ) -> Result<TaskId, DbError> {
        let id = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(
                "INSERT INTO tasks (kind, params, started_ts) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(kind.as_str())
            .bind(params.to_string())
            .bind(now_ms())
            .fetch_one(p)
            .await
            .during("record a task")?
        });
        Ok(TaskId(id))
    }

    async fn finish_task(
        &self,
        id: TaskId,
        counters: &str,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        on_pool!(&self.pool, |p| {
            sqlx::query(
                "UPDATE tasks SET finished_ts = $2, counters = $3, error = $4 WHERE id = $1",
            )
            .bind(id.0)
            .bind(now_ms())
            .bind(counters)
            .bind(error)
            .execute(p)
            .await
            .during("finish a task")?;
        });
        Ok(())
    }

    async fn tasks(&self, filter: TaskFilter) -> Result<Vec<TaskRecord>, DbError> {
        let sql = match filter {
            TaskFilter::All => concat!(select_task!(), "ORDER BY id"),
            TaskFilter::Unfinished => {
                concat!(select_task!(), "WHERE finished_ts IS NULL ORDER BY id")
            }
        };
        let rows: Vec<TaskRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(sql)
                .fetch_all(p)
                .await
                .during("list the task log")?
        });
        Ok(rows.into_iter().map(TaskRow::into_record).collect())
    }

    async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>, DbError> {
        let row: Option<TaskRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(concat!(select_task!(), "WHERE id = $1"))
                .bind(id.0)
                .fetch_optional(p)
                .await
                .during("read a task")?
        });
        Ok(row.map(TaskRow::into_record))
    }
}

/// `SELECT <every task column> FROM tasks `, as a literal.
macro_rules! select_task {
    () => {
        "SELECT id, kind, params, started_ts, finished_ts, error, counters FROM tasks "
    };
}
use select_task;

/// A row of `tasks`, as stored.
#[derive(Debug, sqlx::FromRow)]
struct TaskRow {
    id: i64,
    kind: String,
    params: String,
    started_ts: i64,
    finished_ts: Option<i64>,
    error: Option<String>,
    counters: Option<String>,
}

impl TaskRow {
    fn into_record(self) -> TaskRecord {
        TaskRecord {
            id: TaskId(self.id),
            kind: self.kind,
            params: self.params,
            started_ts: self.started_ts,
            finished_ts: self.finished_ts,
            error: self.error,
            counters: self.counters,
        }
    }
}
