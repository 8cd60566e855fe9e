//! Copying the write-ahead log of our SQLite repository into the database beside the
//! writer, not in its way.
//!
//! SQLite's own checkpoint runs on the connection that commits, after the commit that
//! grew the log past its limit: the writer stops writing while it copies. At a million
//! media, a purge's writer spent a quarter of its time there. A [`Checkpointer`] runs
//! `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own, a few times a second,
//! so the copying overlaps the writer's next transactions on another core. A passive
//! checkpoint takes no lock a writer or a reader waits for. The writer's own limit
//! (`SQLITE_WAL_BACKSTOP_PAGES` in `connect`) stays as a backstop: the log can only
//! start over from its beginning once every frame is copied, and a writer that never
//! pauses gives the checkpointer no such moment.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::DbError;
use crate::location::DatabaseLocation;

/// How long the checkpointer waits when the log held nothing new to copy.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// How long it waits after copying: long enough for the writer to add a few
/// transactions' pages, so each checkpoint's `fsync` covers many of them.
const BUSY_WAIT: Duration = Duration::from_millis(20);

/// A task that keeps copying the write-ahead log of one SQLite file into the database,
/// until [`Checkpointer::stop`] or until it is dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Frames copied into the database so far.
    copied: Arc<AtomicU64>,
}

impl Checkpointer {
    /// Opens a connection of its own to the SQLite file at `location` (already created
    /// and in WAL mode) and starts copying.
    pub(crate) async fn start(location: &DatabaseLocation) -> Result<Self, DbError> {
        let url = location.connection_url();
        let connection = url
            .parse::<SqliteConnectOptions>()
            .map_err(|e| DbError::InvalidUrl {
                url: location.to_string(),
                reason: e.to_string(),
            })?
            .busy_timeout(Duration::ZERO)
            // A checkpoint of a long log is slow on purpose: not a statement to warn of.
            .disable_statement_logging()
            .connect()
            .await
            .map_err(|source| DbError::Connect {
                url: location.to_string(),
                hint: "Check that the folder exists and is readable.",
                source,
            })?;
        let (stop, stopped) = watch::channel(false);
        let copied = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(copy_until_stopped(connection, stopped, copied.clone()));
        Ok(Checkpointer {
            stop,
            task: std::sync::Mutex::new(Some(task)),
            copied,
        })
    }

    /// Stops copying and closes the connection.
    pub(crate) async fn stop(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(task) = task {
            let _ = task.await;
        }
        tracing::debug!(
            frames = self.copied.load(Ordering::Relaxed),
            "the checkpointer stopped"
        );
    }

    /// Frames of the log copied into the database so far.
    #[cfg(test)]
    pub(crate) fn frames_copied(&self) -> u64 {
        self.copied.load(Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// The checkpointer's loop: a passive checkpoint, then another after [`BUSY_WAIT`] when
/// it copied something (the writer is busy), or after [`IDLE_WAIT`] when it did not. A failed
/// checkpoint (another process's checkpoint holding the lock) is tried again later; it
/// never stops the job, whose writer still checkpoints on its own.
async fn copy_until_stopped(
    mut connection: SqliteConnection,
    mut stopped: watch::Receiver<bool>,
    copied: Arc<AtomicU64>,
) {
    let mut done_before: i64 = 0;
    while !*stopped.borrow() {
        let outcome: Result<(i64, i64, i64), sqlx::Error> =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut connection)
                .await;
        let copied_now = match outcome {
            // Frames in the log, and of them those now in the database. The log starts
            // over once everything is copied, and its count with it.
            Ok((_, log, done)) if log >= 0 && done >= 0 => {
                let new = if done >= done_before {
                    done - done_before
                } else {
                    done
                };
                done_before = done;
                new
            }
            Ok(_) => 0,
            Err(e) => {
                tracing::debug!(error = %e, "a background checkpoint failed; trying again later");
                0
            }
        };
        copied.fetch_add(u64::try_from(copied_now).unwrap_or(0), Ordering::Relaxed);
        let wait = if copied_now == 0 {
            IDLE_WAIT
        } else {
            BUSY_WAIT
        };
        tokio::select! {
            _ = stopped.changed() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    let _ = connection.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Executor;

    fn wal_of(path: &std::path::Path) -> std::path::PathBuf {
        path.with_extension("db-wal")
    }

    #[tokio::test]
    async fn the_log_is_copied_while_its_writer_never_checkpoints() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("repo.db");
        let mut writer = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .pragma("wal_autocheckpoint", "0")
            .connect()
            .await
            .unwrap();
        writer
            .execute("CREATE TABLE filler (n INTEGER, text TEXT)")
            .await
            .unwrap();
        let location: DatabaseLocation = format!("sqlite://{}", path.display()).parse().unwrap();
        let checkpointer = Checkpointer::start(&location).await.unwrap();
        for batch in 0..20 {
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) \
                 INSERT INTO filler SELECT i + $1, printf('%.200c', 'x') FROM n",
            )
            .bind(batch * 500)
            .execute(&mut writer)
            .await
            .unwrap();
        }
        let started = std::time::Instant::now();
        while checkpointer.frames_copied() == 0 && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(checkpointer.frames_copied() > 0, "nothing was copied");
        checkpointer.stop().await;
        let copied = checkpointer.frames_copied();
        sqlx::query("INSERT INTO filler VALUES (0, 'after')")
            .execute(&mut writer)
            .await
            .unwrap();
        tokio::time::sleep(IDLE_WAIT * 3).await;
        assert_eq!(
            checkpointer.frames_copied(),
            copied,
            "copied after it stopped"
        );
        // The last connection to close removes the log: the checkpointer's is closed.
        writer.close().await.unwrap();
        assert!(!wal_of(&path).exists(), "a connection is still open");
        let mut reader = SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM filler")
            .fetch_one(&mut reader)
            .await
            .unwrap();
        assert_eq!(rows, 10_001);
    }

    #[tokio::test]
    async fn closing_a_repository_closes_its_checkpointer() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("repo.db");
        let repo = crate::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert!(wal_of(&path).exists());
        repo.close().await;
        assert!(!wal_of(&path).exists(), "a connection is still open");
    }
}
