//! `media_admin tasks list|show`: the runs the task log records (imports, exports,
//! transfers, purges, quarantines), with their parameters, counters, error and times.

use std::fmt;

use media_core::moment::Moment;
use media_core::run::{Report, RunMode};
use media_db::{Repository, TaskFilter, TaskId, TaskLog, TaskRecord};
use serde::Serialize;

use crate::error::AdminError;

/// One recorded run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskEntry {
    /// Its ID.
    pub id: i64,
    /// The tool that ran.
    pub kind: String,
    /// Its parameters.
    pub params: serde_json::Value,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it finished (RFC 3339); none while it runs or when it was stopped.
    pub finished: Option<String>,
    /// Whether it finished.
    pub is_finished: bool,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Its counters.
    pub counters: serde_json::Value,
}

impl From<TaskRecord> for TaskEntry {
    fn from(task: TaskRecord) -> Self {
        let json = |text: &str| {
            serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.into()))
        };
        let at = |ms: i64| Moment::from_unix_ms(ms).to_string();
        Self {
            id: task.id.0,
            kind: task.kind,
            params: json(&task.params),
            started: at(task.started_ts),
            finished: task.finished_ts.map(at),
            is_finished: task.finished_ts.is_some(),
            error: task.error,
            counters: task
                .counters
                .as_deref()
                .map_or(serde_json::Value::Null, json),
        }
    }
}

impl fmt::Display for TaskEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  #{} {}: started {}, {}",
            self.id,
            self.kind,
            self.started,
            match &self.finished {
                Some(at) => format!("finished {at}"),
                None => "not finished (running, or stopped)".to_owned(),
            }
        )?;
        writeln!(f, "      params {}", self.params)?;
        if !self.counters.is_null() {
            writeln!(f, "      counters {}", self.counters)?;
        }
        if let Some(error) = &self.error {
            writeln!(f, "      error: {error}")?;
        }
        Ok(())
    }
}

/// What `media_admin tasks list` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TasksReport {
    /// The runs, oldest first.
    pub tasks: Vec<TaskEntry>,
}

impl fmt::Display for TasksReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "media_admin tasks: {} run(s)", self.tasks.len())?;
        self.tasks.iter().try_for_each(|task| task.fmt(f))
    }
}

impl Report for TasksReport {
    fn mode(&self) -> RunMode {
        RunMode::DryRun
    }

    fn has_failures(&self) -> bool {
        false
    }
}

impl Report for TaskEntry {
    fn mode(&self) -> RunMode {
        RunMode::DryRun
    }

    fn has_failures(&self) -> bool {
        false
    }
}

/// The recorded runs `filter` selects.
pub async fn list(repo: &Repository, filter: TaskFilter) -> Result<TasksReport, AdminError> {
    let tasks = repo.tasks(filter).await?;
    Ok(TasksReport {
        tasks: tasks.into_iter().map(TaskEntry::from).collect(),
    })
}

/// One recorded run, or [`AdminError::UnknownTask`].
pub async fn show(repo: &Repository, id: i64) -> Result<TaskEntry, AdminError> {
    repo.task(TaskId(id))
        .await?
        .map(TaskEntry::from)
        .ok_or(AdminError::UnknownTask { id })
}
