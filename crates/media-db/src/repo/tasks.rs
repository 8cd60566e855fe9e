//! The task log: one row per run of a tool, for audit and resume.

use async_trait::async_trait;
use media_core::now_ms;

use super::Repository;
use crate::connect::on_pool;
use crate::error::{DbError, QueryContext};
use crate::model::{TaskId, TaskKind};
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
}
