//! [`DigestNames`]: the name each digest was first written under, in bounded memory.
//!
//! A job that writes each distinct blob once (an export packs each blob into one archive
//! entry, and every other media with the same bytes names that entry) must remember,
//! for every digest it wrote, under which name. Kept in a map, that memory grows with
//! the job: about 200 bytes per distinct blob, 185 MiB at 800,000. [`DigestNames`] keeps
//! the latest names in memory and moves them, once there are enough, into a temporary
//! SQLite file, looked up a batch of digests at a time.
//!
//! The file is created in a folder the caller names (beside the job's output, never in a
//! `/tmp` that may be memory) and unlinked at once: it is gone when the job ends, even
//! when the job is killed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use media_core::ids::Sha256Hex;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row, SqliteConnection};

use crate::DbError;
use crate::error::QueryContext;

/// Names kept in memory before they move to the temporary file, by default: about
/// 6 MiB of digests and names.
pub const NAMES_IN_MEMORY: usize = 32_768;

/// Rows of one `INSERT` or one lookup (two bound values per row inserted).
const ROWS_PER_STATEMENT: usize = 500;

/// SQLite's page cache of the temporary file, in KiB.
const CACHE_KIB: u32 = 4_096;

/// The name each digest was first written under: the latest in memory, the older ones in
/// a temporary SQLite file. Look a batch of digests up with [`DigestNames::load`] before
/// asking [`DigestNames::get`] about them; end each batch with
/// [`DigestNames::end_batch`], which moves the names to the file once there are more
/// than the memory holds.
pub struct DigestNames {
    /// Names recorded since the last move to the file.
    recent: HashMap<Sha256Hex, String>,
    /// Names of the current batch's digests found in the file.
    loaded: HashMap<Sha256Hex, String>,
    /// How many names `recent` holds before they move.
    in_memory: usize,
    /// Where the file is created.
    folder: PathBuf,
    /// The file, once names have moved there.
    file: Option<SqliteConnection>,
}

impl DigestNames {
    /// An empty map that keeps up to `in_memory` names in memory (at least one) and
    /// creates its file in `folder` when it needs one.
    pub fn new(folder: &Path, in_memory: usize) -> Self {
        Self {
            recent: HashMap::new(),
            loaded: HashMap::new(),
            in_memory: in_memory.max(1),
            folder: folder.to_owned(),
            file: None,
        }
    }

    /// Reads the names of `digests` that moved to the file, for [`DigestNames::get`]
    /// until the next call. Digests known in memory are not looked up.
    pub async fn load<'a>(
        &mut self,
        digests: impl IntoIterator<Item = &'a Sha256Hex>,
    ) -> Result<(), DbError> {
        self.loaded.clear();
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut wanted: Vec<&Sha256Hex> = digests
            .into_iter()
            .filter(|digest| !self.recent.contains_key(*digest))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        for chunk in wanted.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::new("SELECT sha256, name FROM names WHERE sha256 IN (");
            let mut list = query.separated(", ");
            for digest in chunk {
                list.push_bind(digest.to_bytes().to_vec());
            }
            query.push(")");
            let rows = query
                .build()
                .fetch_all(&mut *file)
                .await
                .during("look up the digests already written")?;
            for row in rows {
                let digest: Vec<u8> = row.get(0);
                let digest = Sha256Hex::from_bytes(&digest).map_err(|e| DbError::InvalidRow {
                    table: "names (temporary)",
                    key: format!("{digest:02x?}"),
                    reason: e.to_string(),
                })?;
                self.loaded.insert(digest, row.get(1));
            }
        }
        Ok(())
    }

    /// The name `digest` was written under: recorded since the last move, or loaded by
    /// the last [`DigestNames::load`].
    pub fn get(&self, digest: &Sha256Hex) -> Option<&str> {
        self.recent
            .get(digest)
            .or_else(|| self.loaded.get(digest))
            .map(String::as_str)
    }

    /// Records that `digest` was written under `name` (the first name stays).
    pub fn insert(&mut self, digest: Sha256Hex, name: String) {
        if !self.loaded.contains_key(&digest) {
            self.recent.entry(digest).or_insert(name);
        }
    }

    /// A batch of one: records `name` for `digest` unless `digest` has a name already;
    /// whether it was new.
    pub async fn insert_if_new(&mut self, digest: &Sha256Hex, name: &str) -> Result<bool, DbError> {
        self.load([digest]).await?;
        let new = self.get(digest).is_none();
        if new {
            self.insert(digest.clone(), name.to_owned());
        }
        self.end_batch().await?;
        Ok(new)
    }

    /// Ends a batch: once memory holds more names than it should, moves them all to the
    /// file (created in the folder the first time).
    pub async fn end_batch(&mut self) -> Result<(), DbError> {
        self.loaded.clear();
        if self.recent.len() < self.in_memory {
            return Ok(());
        }
        let file = match self.file.as_mut() {
            Some(file) => file,
            None => self.file.insert(create_file(&self.folder).await?),
        };
        let mut names: Vec<_> = self.recent.drain().collect();
        // In digest order, the rows of one statement land in few pages.
        names.sort_unstable();
        let mut transaction = file
            .begin()
            .await
            .during("move the digests already written to a file")?;
        for chunk in names.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::new("INSERT OR IGNORE INTO names (sha256, name) ");
            query.push_values(chunk, |mut row, (digest, name)| {
                row.push_bind(digest.to_bytes().to_vec()).push_bind(name);
            });
            query
                .build()
                .execute(&mut *transaction)
                .await
                .during("move the digests already written to a file")?;
        }
        transaction
            .commit()
            .await
            .during("move the digests already written to a file")?;
        self.recent.shrink_to(self.in_memory);
        Ok(())
    }
}

/// Creates the temporary file in `folder` (exclusively, mode 0600), opens it, creates
/// its table and unlinks it: the open connection is its only name from then on. It has
/// no journal, so SQLite never needs to find it by name again.
async fn create_file(folder: &Path) -> Result<SqliteConnection, DbError> {
    let cannot = |source: sqlx::Error| DbError::Connect {
        url: folder.display().to_string(),
        hint: "A temporary index of the digests already written is kept in this folder: it \
               must be writable",
        source,
    };
    let temporary = tempfile::Builder::new()
        .prefix(".digest-names-")
        .suffix(".sqlite")
        .tempfile_in(folder)
        .map_err(|e| cannot(sqlx::Error::Io(e)))?
        .into_temp_path();
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(cannot)?
        .filename(&temporary)
        .journal_mode(SqliteJournalMode::Off)
        .synchronous(SqliteSynchronous::Off)
        .pragma("locking_mode", "EXCLUSIVE")
        .pragma("cache_size", format!("-{CACHE_KIB}"));
    let mut file = SqliteConnection::connect_with(&options)
        .await
        .map_err(cannot)?;
    sqlx::query("CREATE TABLE names (sha256 BLOB PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID")
        .execute(&mut file)
        .await
        .during("create the temporary index of the digests already written")?;
    temporary.close().map_err(|e| cannot(sqlx::Error::Io(e)))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Sha256Hex {
        Sha256Hex::from_digest(&[n; 32])
    }

    #[tokio::test]
    async fn names_moved_to_the_file_are_found_again_and_the_file_leaves_no_trace() {
        let folder = tempfile::tempdir().unwrap();
        let mut names = DigestNames::new(folder.path(), 2);
        names.load([&digest(1)]).await.unwrap();
        assert_eq!(names.get(&digest(1)), None);
        names.insert(digest(1), "one".into());
        names.insert(digest(1), "one again".into());
        assert_eq!(names.get(&digest(1)), Some("one"), "the first name stays");
        names.end_batch().await.unwrap();
        assert!(names.file.is_none(), "one name fits in memory");

        names.insert(digest(2), "two".into());
        names.end_batch().await.unwrap();
        assert!(names.file.is_some(), "two names moved to the file");
        assert_eq!(names.get(&digest(1)), None, "not loaded yet");
        assert_eq!(
            std::fs::read_dir(folder.path()).unwrap().count(),
            0,
            "the file is unlinked as soon as it is created"
        );

        // Many names, several moves and statements: each found again, none mixed up.
        for n in 3..=250 {
            names.load([&digest(n), &digest(n - 1)]).await.unwrap();
            assert_eq!(names.get(&digest(n)), None);
            names.insert(digest(n), format!("name {n}"));
            names.end_batch().await.unwrap();
        }
        let all: Vec<Sha256Hex> = (1..=255).map(digest).collect();
        names.load(&all).await.unwrap();
        for (n, digest) in (1..=255).zip(&all) {
            let expected = match n {
                1 => Some("one".to_owned()),
                2 => Some("two".to_owned()),
                251.. => None,
                n => Some(format!("name {n}")),
            };
            assert_eq!(names.get(digest).map(str::to_owned), expected, "digest {n}");
        }
        // A name loaded from the file is not recorded again in memory.
        names.insert(digest(7), "seven again".into());
        assert_eq!(names.get(&digest(7)), Some("name 7"));
        assert_eq!(std::fs::read_dir(folder.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn insert_if_new_tells_a_digest_seen_before_even_once_moved_to_the_file() {
        let folder = tempfile::tempdir().unwrap();
        let mut names = DigestNames::new(folder.path(), 1);
        for n in 1..=3 {
            assert!(
                names.insert_if_new(&digest(n), "").await.unwrap(),
                "digest {n}"
            );
        }
        assert!(names.file.is_some());
        for n in 1..=3 {
            assert!(
                !names.insert_if_new(&digest(n), "").await.unwrap(),
                "digest {n}"
            );
        }
    }

    #[tokio::test]
    async fn a_folder_that_cannot_hold_the_file_is_a_clear_error() {
        let folder = tempfile::tempdir().unwrap();
        let missing = folder.path().join("missing");
        let mut names = DigestNames::new(&missing, 1);
        names.insert(digest(1), "one".into());
        let error = names.end_batch().await.unwrap_err().to_string();
        assert!(
            error.contains("missing") && error.contains("writable"),
            "{error}"
        );
    }
}
