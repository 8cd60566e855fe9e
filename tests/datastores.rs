//! End-to-end: a repository whose blobs live in two datastores (as after a transfer moved
//! some of them). Every tool reads each blob from the datastore its row names, whichever
//! `--datastore` it was given; a recorded datastore that cannot be read fails the items
//! it holds, naming it.

use std::path::{Path, PathBuf};
use std::process::Output;

use media_core::datastore::Datastore;
use media_store::FileDatastore;
use media_tests::{TestCommand, TestDatabase, any_connection, report, walk_blobs};
use serde_json::Value;
use sqlx::{Connection, Row};

const ALICE: &str = "@alice:fixture.test";

/// A repository filled from the Synapse fixture into datastore `a`, with some of
/// alice's blobs moved to datastore `b` the way a transfer moves them: the object copied
/// to `b`, the row switched to `b`, the object deleted from `a`.
struct SplitRepository {
    db: TestDatabase,
    cwd: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    /// The URI the repository records for `b`, and its ID.
    b_uri: String,
    b_id: i64,
    /// Alice's media that are exported (not quarantined), and how many of them are in
    /// `b`.
    alice_media: u64,
    moved_media: u64,
}

impl SplitRepository {
    async fn new(db: TestDatabase) -> Self {
        let cwd = tempfile::tempdir().unwrap();
        let (a, b) = (cwd.path().join("a"), cwd.path().join("b"));
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite");
        TestCommand::new("import_synapse")
            .arg("--synapse-db")
            .arg(fixture.join("homeserver.db"))
            .arg("--media-store")
            .arg(fixture.join("media_store"))
            .args([
                "--repo-db",
                &db.url,
                "--datastore",
                a.to_str().unwrap(),
                "-q",
            ])
            .current_dir(cwd.path())
            // The fixture's never-uploaded media is a listed failure.
            .assert_exit(1);

        // Datastore b, recorded by the repository with the marker it holds.
        let store_b = FileDatastore::open(&b).await.unwrap();
        let marker = store_b
            .claim_marker("b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0")
            .await
            .unwrap();
        let b_uri = store_b.uri();
        let mut conn = any_connection(&db.url).await;
        sqlx::query("INSERT INTO datastores (uri, created_ts, identity) VALUES ($1, 0, $2)")
            .bind(&b_uri)
            .bind(&marker)
            .execute(&mut conn)
            .await
            .unwrap();
        let b_id: i64 = sqlx::query("SELECT id FROM datastores WHERE uri = $1")
            .bind(&b_uri)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);

        // Every other blob of alice's media moves to b.
        let blobs = sqlx::query(
            "SELECT DISTINCT b.sha256, b.location FROM blobs b \
             JOIN media m ON m.sha256 = b.sha256 WHERE m.user_id = $1 ORDER BY b.sha256",
        )
        .bind(ALICE)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(blobs.len() >= 2, "alice's media need two blobs to be split");
        for row in blobs.iter().step_by(2) {
            let (sha256, location): (String, String) = (row.get(0), row.get(1));
            let target = b.join(&location);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(a.join(&location), &target).unwrap();
            sqlx::query("UPDATE blobs SET datastore_id = $1 WHERE sha256 = $2")
                .bind(b_id)
                .bind(&sha256)
                .execute(&mut conn)
                .await
                .unwrap();
            std::fs::remove_file(a.join(&location)).unwrap();
        }
        let count = |sql: &'static str| {
            let mut query = sqlx::query(sql).bind(ALICE);
            if sql.contains("$2") {
                query = query.bind(b_id);
            }
            query
        };
        let alice_media: i64 =
            count("SELECT COUNT(*) FROM media WHERE user_id = $1 AND NOT quarantined")
                .fetch_one(&mut conn)
                .await
                .unwrap()
                .get(0);
        let moved_media: i64 = count(
            "SELECT COUNT(*) FROM media m JOIN blobs b ON b.sha256 = m.sha256 \
             WHERE m.user_id = $1 AND NOT m.quarantined AND b.datastore_id = $2",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
        conn.close().await.ok();
        assert!(moved_media > 0 && moved_media < alice_media);
        Self {
            db,
            cwd,
            a,
            b,
            b_uri,
            b_id,
            alice_media: alice_media as u64,
            moved_media: moved_media as u64,
        }
    }

    /// Runs `tool` on the repository with `--datastore` `datastore`.
    fn run(&self, tool: &str, datastore: &Path, args: &[&str]) -> TestCommand {
        let mut command = TestCommand::new(tool);
        command
            .args(["--repo-db", &self.db.url, "--json", "--datastore"])
            .arg(datastore)
            .args(args)
            .current_dir(self.cwd.path());
        command
    }

    /// `gdpr_export` of alice's media into `name`, given datastore `a`.
    fn export_alice(&self, name: &str, exit: i32) -> (PathBuf, Value) {
        let archive = self.cwd.path().join(name);
        let out = self
            .run(
                "gdpr_export",
                &self.a,
                &["--entity", ALICE, "--destination"],
            )
            .arg(&archive)
            .assert_exit(exit);
        (archive, report(&out))
    }

    /// `gdpr_import` of `archive`, with `extra` flags, given `datastore`.
    fn import(&self, archive: &Path, datastore: &Path, extra: &[&str]) -> TestCommand {
        let mut command = self.run("gdpr_import", datastore, extra);
        command.arg("--directory").arg(archive);
        command
    }

    /// The failures a report lists as `reason`, each checked to name datastore b.
    fn failures_naming_b(&self, report: &Value, reason: &str) -> u64 {
        let listed = report["failures"]["listed"].as_array().unwrap();
        let named = format!("datastore #{} ({})", self.b_id, self.b_uri);
        let mut count = 0;
        for failure in listed {
            assert_eq!(failure["reason"], reason, "{report}");
            let detail = failure["detail"].as_str().unwrap();
            assert!(detail.contains(&named), "{detail} does not name {named}");
            count += 1;
        }
        count
    }
}

fn exit_code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[tokio::test(flavor = "multi_thread")]
async fn media_split_across_two_datastores_export_whole_and_verify() {
    for db in TestDatabase::both().await {
        let label = db.label;
        let split = SplitRepository::new(db).await;
        let (archive, exported) = split.export_alice("alice", 0);
        assert_eq!(
            exported["records"], split.alice_media,
            "{label}: {exported}"
        );
        assert_eq!(exported["failures"]["count"], 0, "{label}: {exported}");

        // The archive's bytes are the repository's: verified against the blobs where
        // their rows say they are, given either datastore.
        for given in [&split.a, &split.b] {
            let out = split.import(&archive, given, &["--verify"]).assert_exit(0);
            let verified = report(&out);
            assert_eq!(
                verified["verified"], split.alice_media,
                "{label}: {verified}"
            );
        }

        // Importing it again finds every media present, and puts no moved blob back
        // into a: the repository already holds it in b.
        let a_before = walk_blobs(&split.a);
        let out = split.import(&archive, &split.a, &[]).assert_exit(0);
        let imported = report(&out);
        assert_eq!(
            imported["already_present"], split.alice_media,
            "{label}: {imported}"
        );
        assert_eq!(imported["blobs_written"], 0, "{label}: {imported}");
        assert_eq!(walk_blobs(&split.a), a_before, "{label}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_record_of_bytes_held_in_another_datastore_is_recorded_without_a_stray_copy() {
    for db in TestDatabase::both().await {
        let label = db.label;
        let split = SplitRepository::new(db).await;
        let (archive, _) = split.export_alice("alice", 0);
        // The same archive into a repository that lost alice's media rows (but keeps
        // their blobs, some in b): the media are recorded again against those blobs.
        let mut conn = any_connection(&split.db.url).await;
        for sql in [
            "DELETE FROM thumbnails WHERE media_id IN (SELECT media_id FROM media WHERE user_id = $1)",
            "DELETE FROM media WHERE user_id = $1",
        ] {
            sqlx::query(sql)
                .bind(ALICE)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.ok();
        let a_before = walk_blobs(&split.a);
        let out = split.import(&archive, &split.a, &[]).assert_exit(0);
        let imported = report(&out);
        assert_eq!(
            imported["imported"], split.alice_media,
            "{label}: {imported}"
        );
        assert_eq!(
            walk_blobs(&split.a),
            a_before,
            "{label}: no copy put into a"
        );
        split
            .import(&archive, &split.a, &["--verify"])
            .assert_exit(0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_datastore_that_is_missing_fails_its_items_naming_it() {
    for db in TestDatabase::both().await {
        let label = db.label;
        let split = SplitRepository::new(db).await;
        let (archive, _) = split.export_alice("alice", 0);
        // b is unmounted: its folder is gone.
        std::fs::rename(&split.b, split.cwd.path().join("b-elsewhere")).unwrap();

        let (_, exported) = split.export_alice("alice-again", 1);
        let failed = split.failures_naming_b(&exported, "datastore_unavailable");
        assert_eq!(failed, split.moved_media, "{label}: {exported}");
        assert_eq!(
            exported["records"].as_u64().unwrap(),
            split.alice_media - split.moved_media,
            "{label}: {exported}"
        );

        let out = split.import(&archive, &split.a, &["--verify"]).output();
        assert_eq!(exit_code(&out), Some(1), "{label}");
        let verified = report(&out);
        let failed = split.failures_naming_b(&verified, "datastore_unavailable");
        assert_eq!(failed, split.moved_media, "{label}: {verified}");
        assert_eq!(
            verified["verified"].as_u64().unwrap(),
            split.alice_media - split.moved_media,
            "{label}: {verified}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_datastore_holding_another_marker_is_refused_for_its_items() {
    for db in TestDatabase::both().await {
        let label = db.label;
        let split = SplitRepository::new(db).await;
        // Another datastore is mounted where b was recorded.
        FileDatastore::open(&split.b)
            .await
            .unwrap()
            .replace_marker("0ther0ther0ther0ther0ther0ther00")
            .await
            .unwrap();
        let (_, exported) = split.export_alice("alice", 1);
        let failed = split.failures_naming_b(&exported, "datastore_unavailable");
        assert_eq!(failed, split.moved_media, "{label}: {exported}");
        let detail = exported["failures"]["listed"][0]["detail"]
            .as_str()
            .unwrap();
        assert!(detail.contains("identity marker"), "{label}: {detail}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_deletes_no_object_while_one_of_its_datastores_cannot_be_opened() {
    for db in TestDatabase::both().await {
        let label = db.label;
        let split = SplitRepository::new(db).await;
        let b = FileDatastore::open(&split.b).await.unwrap();
        let recorded = b.read_marker().await.unwrap().unwrap();
        b.replace_marker("0ther0ther0ther0ther0ther0ther00")
            .await
            .unwrap();
        let files = |store: &Path| walk_blobs(store).len();
        let (in_a, in_b) = (files(&split.a), files(&split.b));
        let args = [
            "purge",
            "old",
            "--unaccessed-since",
            "2100-01-01",
            "--include-local",
        ];

        // Alice's rows go and their objects are queued, but b cannot be opened: no
        // object is deleted from either datastore, and the run says why.
        let purge = || media_tests::admin::admin(split.cwd.path(), &split.db.url, &args);
        let out = purge().output();
        assert_ne!(
            exit_code(&out),
            Some(0),
            "{label}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("identity marker"), "{label}: {stderr}");
        assert_eq!((files(&split.a), files(&split.b)), (in_a, in_b), "{label}");

        // Once b is back, the next run deletes what was queued, in both.
        b.replace_marker(&recorded).await.unwrap();
        purge().assert_exit(0);
        let mut conn = any_connection(&split.db.url).await;
        let queued: i64 = sqlx::query("SELECT COUNT(*) FROM pending_deletions")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        let blobs: i64 = sqlx::query("SELECT COUNT(*) FROM blobs")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        conn.close().await.ok();
        assert_eq!(queued, 0, "{label}");
        assert!(files(&split.a) < in_a && files(&split.b) < in_b, "{label}");
        assert_eq!(files(&split.a) + files(&split.b), blobs as usize, "{label}");
    }
}
