//! End-to-end tests of `import_synapse` on media stores made by a real Synapse
//! (tests/fixtures/synapse) and on generated Synapse-shaped stores.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use media_core::hashing::sha256_of;
use media_core::records::{MediaKey, Purpose};
use media_db::MediaIndex;
use media_tests::admin::strings;
use media_tests::{
    TestCommand, TestDatabase, media_count, report, repository_contents, walk_blobs,
};
use serde_json::Value;

fn fixture(engine: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/synapse")
        .join(engine)
}

fn expected(engine: &str) -> Value {
    let text = std::fs::read_to_string(fixture(engine).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every media of an expected.json, local then remote.
fn expected_media(expected: &Value) -> Vec<&Value> {
    let list = |k: &str| expected[k].as_array().unwrap().iter();
    list("local_media").chain(list("remote_media")).collect()
}

/// A copy of a fixture's SQLite database and media store that a test may modify.
struct FixtureCopy {
    _dir: tempfile::TempDir,
    db: PathBuf,
    media_store: PathBuf,
}

impl FixtureCopy {
    /// Runs `import_synapse` on this copy (with `--json`), in `cwd`, plus `extra` flags.
    fn import(&self, cwd: &Path, extra: &[&str]) -> Output {
        let args = [
            "--synapse-db",
            self.db.to_str().unwrap(),
            "--media-store",
            self.media_store.to_str().unwrap(),
            "--json",
        ];
        TestCommand::new("import_synapse")
            .args(args)
            .args(extra)
            .current_dir(cwd)
            .output()
    }
}

/// The failures of a report with this reason.
fn failures_with<'a>(report: &'a Value, reason: &str) -> Vec<&'a Value> {
    report["failures"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["reason"] == reason)
        .collect()
}

fn copy_sqlite_fixture() -> FixtureCopy {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("homeserver.db");
    std::fs::copy(fixture("sqlite").join("homeserver.db"), &db).unwrap();
    let media_store = dir.path().join("media_store");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(fixture("sqlite").join("media_store"))
        .arg(&media_store)
        .status()
        .unwrap();
    assert!(status.success());
    FixtureCopy {
        _dir: dir,
        db,
        media_store,
    }
}

/// Checks a repository against an expected.json: every media with its exact bytes and
/// metadata, every thumbnail, avatars pinned, quarantine carried, dedup exact.
async fn assert_repository_matches(repo_url: &str, datastore: &Path, expected: &Value) {
    let repo = media_db::connect(repo_url).await.unwrap();
    let mut distinct = BTreeSet::new();
    for media in expected_media(expected) {
        let label = media["label"].as_str().unwrap();
        let key = MediaKey::new(
            media["origin"].as_str().unwrap().parse().unwrap(),
            media["media_id"].as_str().unwrap().parse().unwrap(),
        );
        let stored = repo.get_media(&key).await.unwrap();
        if media["never_uploaded"].as_bool().unwrap() {
            assert!(
                stored.is_none(),
                "{label} has no bytes and must not be imported"
            );
            continue;
        }
        let stored = stored.unwrap_or_else(|| panic!("{label} was not imported"));
        let sha = media["file_sha256"].as_str().unwrap();
        assert_eq!(stored.sha256.as_str(), sha, "{label}");
        assert_eq!(
            stored.size_bytes,
            media["file_size"].as_u64().unwrap(),
            "{label}"
        );
        let bytes = std::fs::read(datastore.join(&sha[0..2]).join(&sha[2..4]).join(sha)).unwrap();
        assert_eq!(sha256_of(&bytes).as_str(), sha, "{label}: stored bytes");
        distinct.insert(sha.to_owned());
        assert_eq!(
            stored.upload_name.as_deref(),
            media["upload_name"].as_str(),
            "{label}"
        );
        assert_eq!(
            stored.content_type.as_deref(),
            media["content_type"].as_str(),
            "{label}"
        );
        assert_eq!(
            stored.uploader.as_ref().map(|u| u.as_str()),
            media["uploader"].as_str(),
            "{label}"
        );
        assert_eq!(
            stored.created_ts,
            media["created_ts"].as_i64().unwrap(),
            "{label}"
        );
        assert_eq!(
            stored.last_access_ts,
            media["last_access_ts"].as_i64(),
            "{label}"
        );
        assert_eq!(
            stored.quarantined,
            media["quarantined"].as_bool().unwrap(),
            "{label}"
        );
        assert_eq!(
            stored.quarantined_by.as_deref(),
            media["quarantined_by"].as_str(),
            "{label}"
        );
        let pinned = media["is_avatar"].as_bool().unwrap();
        assert_eq!(stored.purpose == Purpose::Pinned, pinned, "{label}: pinned");

        let thumbnails = repo.thumbnails_of(&key).await.unwrap();
        let want: BTreeMap<(u64, u64, String, String), String> = media["thumbnails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    (
                        t["width"].as_u64().unwrap(),
                        t["height"].as_u64().unwrap(),
                        t["method"].as_str().unwrap().to_owned(),
                        t["type"].as_str().unwrap().to_owned(),
                    ),
                    t["file_sha256"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let got: BTreeMap<(u64, u64, String, String), String> = thumbnails
            .iter()
            .map(|t| {
                (
                    (
                        u64::from(t.width),
                        u64::from(t.height),
                        t.method.as_str().to_owned(),
                        t.content_type.clone(),
                    ),
                    t.sha256.to_string(),
                )
            })
            .collect();
        assert_eq!(got, want, "{label}: thumbnails");
        distinct.extend(want.into_values());
    }
    // Dedup: exactly one blob per distinct content.
    let stored_blobs = walk_blobs(datastore);
    assert_eq!(stored_blobs, distinct);
    repo.close().await;
}

fn never_uploaded(expected: &Value) -> Vec<String> {
    expected_media(expected)
        .into_iter()
        .filter(|m| m["never_uploaded"].as_bool().unwrap())
        .map(|m| m["mxc"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_readme_command_imports_the_sqlite_fixture_exactly() {
    let cwd = tempfile::tempdir().unwrap();
    let db = fixture("sqlite").join("homeserver.db");
    let store = fixture("sqlite").join("media_store");
    // The README's command, on the embedded defaults (repository and datastore in cwd).
    let args = [
        "--synapse-db",
        db.to_str().unwrap(),
        "--media-store",
        store.to_str().unwrap(),
    ];
    let out = TestCommand::new("import_synapse")
        .args(args)
        .arg("--json")
        .current_dir(cwd.path())
        .assert_exit(1);
    let first = report(&out);
    let expected = expected("sqlite");
    assert_eq!(first["media_imported"], 18);
    assert_eq!(first["media_failed"], 1);
    assert_eq!(first["thumbnails_imported"], 37);
    assert_eq!(first["thumbnails_failed"], 0);
    let failures = first["failures"]["listed"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["reason"], "never_uploaded");
    assert_eq!(
        vec![failures[0]["item"].as_str().unwrap().to_owned()],
        never_uploaded(&expected)
    );
    assert_eq!(first["avatars_pinned"], 5);

    let repo_url = format!("sqlite://{}", cwd.path().join("media-repo.db").display());
    let datastore = cwd.path().join("media-store");
    assert_repository_matches(&repo_url, &datastore, &expected).await;
    assert_eq!(
        first["blobs_written"].as_u64().unwrap(),
        walk_blobs(&datastore).len() as u64
    );

    // A second run over a finished import writes nothing.
    let out = TestCommand::new("import_synapse")
        .args(args)
        .arg("--json")
        .current_dir(cwd.path())
        .output();
    let second = report(&out);
    assert_eq!(second["media_imported"], 0);
    assert_eq!(second["media_already_present"], 18);
    assert_eq!(second["blobs_written"], 0);
    assert_eq!(second["bytes_written"], 0);
    assert_eq!(second["avatars_pinned"], 0);
    assert_eq!(second["thumbnails_already_present"], 37);
    assert_eq!(second["avatars_already_pinned"], 5);

    // The human summary names what happened.
    let out = TestCommand::new("import_synapse")
        .args(args)
        .current_dir(cwd.path())
        .output();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("18 already present"), "{text}");
    assert!(text.contains("[never_uploaded]"), "{text}");
}

#[tokio::test]
async fn imports_the_postgres_fixture_into_postgres() {
    let synapse = TestDatabase::postgres().await;
    let status = std::process::Command::new("psql")
        .args([
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-o",
            "/dev/null",
            "-d",
            &synapse.url,
            "-f",
        ])
        .arg(fixture("postgres").join("synapse.sql"))
        .status()
        .expect("psql (PostgreSQL's client) must be installed to restore the fixture");
    assert!(status.success(), "restoring the Synapse dump failed");
    let repo = TestDatabase::postgres().await;
    let cwd = tempfile::tempdir().unwrap();
    let store = cwd.path().join("store");
    let media_store = fixture("postgres").join("media_store");
    let out = TestCommand::new("import_synapse")
        .args([
            "--synapse-db",
            &synapse.url,
            "--media-store",
            media_store.to_str().unwrap(),
            "--db",
            &repo.url,
            "--datastore",
            store.to_str().unwrap(),
            "--workers",
            "3",
            "--json",
        ])
        .current_dir(cwd.path())
        .assert_exit(1);
    let first = report(&out);
    assert_eq!(first["media_imported"], 18);
    assert_eq!(first["thumbnails_imported"], 37);
    assert_eq!(first["avatars_pinned"], 5);
    assert_repository_matches(&repo.url, &store, &expected("postgres")).await;
}

/// A re-run skipped the thumbnails of every media already recorded: those an earlier run
/// left out (`--include local,remote`) were never imported, and the report said
/// "thumbnails: 0 imported, 0 already present" although the repository held 37.
#[tokio::test]
async fn thumbnails_left_out_by_an_earlier_run_are_imported_by_the_next() {
    let postgres = TestDatabase::postgres().await;
    let cwd = tempfile::tempdir().unwrap();
    let db = fixture("sqlite").join("homeserver.db");
    let media_store = fixture("sqlite").join("media_store");
    let sqlite = format!("sqlite://{}", cwd.path().join("repo.db").display());
    for (i, repo_url) in [sqlite.as_str(), postgres.url.as_str()]
        .into_iter()
        .enumerate()
    {
        let datastore = cwd.path().join(format!("store-{i}"));
        let args = [
            "--synapse-db",
            db.to_str().unwrap(),
            "--media-store",
            media_store.to_str().unwrap(),
            "--repo-db",
            repo_url,
            "--datastore",
            datastore.to_str().unwrap(),
            "--json",
        ];
        let import = |extra: &[&str]| {
            report(
                &TestCommand::new("import_synapse")
                    .args(args)
                    .args(extra)
                    .current_dir(cwd.path())
                    .assert_exit(1),
            )
        };
        let first = import(&["--include", "local,remote"]);
        assert_eq!(first["thumbnails_imported"], 0, "{repo_url}");
        let predicted = import(&["--dry-run"]);
        let second = import(&[]);
        assert_eq!(second["media_already_present"], 18, "{repo_url}");
        assert_eq!(second["thumbnails_imported"], 37, "{repo_url}: {second}");
        assert_eq!(predicted["thumbnails_imported"], 37, "{repo_url}");
        let third = import(&[]);
        assert_eq!(third["thumbnails_imported"], 0, "{repo_url}");
        assert_eq!(third["thumbnails_already_present"], 37, "{repo_url}");
        assert_repository_matches(repo_url, &datastore, &expected("sqlite")).await;
    }
}

/// Issue 19 item 11: two imports at once each reported only their share ("9 imported, 9
/// already present") without saying that the other run recorded the rest while they
/// ran. Each media is recorded once, by one of them, and each report counts what the
/// other recorded meanwhile (`*_recorded_by_another_run`, within "already present").
#[tokio::test]
async fn two_imports_at_once_record_each_media_once_and_count_what_the_other_did() {
    let postgres = TestDatabase::postgres().await;
    let cwd = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", cwd.path().join("repo.db").display());
    for (i, repo_url) in [sqlite.as_str(), postgres.url.as_str()]
        .into_iter()
        .enumerate()
    {
        let datastore = cwd.path().join(format!("store-{i}"));
        let runs: Vec<_> = (0..2)
            .map(|_| spawn_import(repo_url, &datastore, cwd.path(), &[]))
            .collect();
        let reports: Vec<Value> = runs.into_iter().map(finished_report).collect();
        let sum = |field: &str| -> u64 { reports.iter().map(|r| r[field].as_u64().unwrap()).sum() };
        assert_eq!(sum("media_imported"), 18, "{repo_url}: {reports:?}");
        assert_eq!(sum("thumbnails_imported"), 37, "{repo_url}: {reports:?}");
        for (r, other) in [(&reports[0], &reports[1]), (&reports[1], &reports[0])] {
            // What one run found recorded by another, the other recorded.
            for kind in ["media", "thumbnails"] {
                let by_other = r[format!("{kind}_recorded_by_another_run")]
                    .as_u64()
                    .unwrap();
                let other_imported = other[format!("{kind}_imported")].as_u64().unwrap();
                assert!(by_other <= other_imported, "{kind}: {r} / {other}");
            }
            let count = |field: &str| r[field].as_u64().unwrap();
            assert_eq!(
                count("media_imported") + count("media_already_present"),
                18,
                "{r}"
            );
            assert!(count("media_recorded_by_another_run") <= count("media_already_present"));
            assert!(
                count("thumbnails_recorded_by_another_run") <= count("thumbnails_already_present")
            );
        }
        assert_repository_matches(repo_url, &datastore, &expected("sqlite")).await;
    }
}

#[tokio::test]
async fn one_worker_and_sixteen_workers_give_identical_repositories() {
    let db = fixture("sqlite").join("homeserver.db");
    let store = fixture("sqlite").join("media_store");
    let mut contents = Vec::new();
    for workers in ["1", "16"] {
        let cwd = tempfile::tempdir().unwrap();
        TestCommand::new("import_synapse")
            .args([
                "--synapse-db",
                db.to_str().unwrap(),
                "--media-store",
                store.to_str().unwrap(),
                "--workers",
                workers,
                "-q",
            ])
            .current_dir(cwd.path())
            .assert_exit(1);
        let url = format!("sqlite://{}", cwd.path().join("media-repo.db").display());
        contents.push((
            repository_contents(&url).await,
            walk_blobs(&cwd.path().join("media-store")),
        ));
    }
    assert!(contents[0].0.len() > 60);
    assert_eq!(contents[0], contents[1]);
}

#[tokio::test]
async fn a_dry_run_writes_nothing_and_predicts_the_real_run() {
    let cwd = tempfile::tempdir().unwrap();
    let db = fixture("sqlite").join("homeserver.db");
    let store = fixture("sqlite").join("media_store");
    let args = [
        "--synapse-db",
        db.to_str().unwrap(),
        "--media-store",
        store.to_str().unwrap(),
        "--json",
    ];
    let dry = report(
        &TestCommand::new("import_synapse")
            .args(args)
            .arg("--dry-run")
            .current_dir(cwd.path())
            .output(),
    );
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "nothing may be created"
    );
    assert_eq!(dry["dry_run"], true);
    let real = report(
        &TestCommand::new("import_synapse")
            .args(args)
            .current_dir(cwd.path())
            .output(),
    );
    for field in [
        "media_total",
        "media_imported",
        "media_failed",
        "thumbnails_imported",
        "blobs_written",
        "bytes_read",
        "bytes_written",
        "bytes_deduplicated",
    ] {
        assert_eq!(dry[field], real[field], "{field}");
    }
    // Over a finished import, a dry run predicts that nothing is left to do.
    let again = report(
        &TestCommand::new("import_synapse")
            .args(args)
            .arg("--dry-run")
            .current_dir(cwd.path())
            .output(),
    );
    assert_eq!(again["media_imported"], 0);
    assert_eq!(again["media_already_present"], 18);
}

#[tokio::test]
async fn a_corrupted_file_is_reported_and_not_imported() {
    let copy = copy_sqlite_fixture();
    let expected = expected("sqlite");
    let victim = expected["local_media"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["label"] == "bob_notes")
        .unwrap();
    let path = copy.media_store.join(victim["path"].as_str().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0x20; // one flipped bit: bit rot
    std::fs::write(&path, &bytes).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let out = copy.import(cwd.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let report = report(&out);
    let corrupt = failures_with(&report, "corrupt");
    assert_eq!(corrupt.len(), 1, "{report}");
    assert_eq!(corrupt[0]["item"], victim["mxc"]);
    assert!(
        corrupt[0]["detail"]
            .as_str()
            .unwrap()
            .contains(victim["sha256"].as_str().unwrap())
    );
    assert_eq!(report["media_imported"], 17);
    let repo = media_db::connect(&format!(
        "sqlite://{}",
        cwd.path().join("media-repo.db").display()
    ))
    .await
    .unwrap();
    let key = MediaKey::new(
        "fixture.test".parse().unwrap(),
        victim["media_id"].as_str().unwrap().parse().unwrap(),
    );
    assert!(repo.get_media(&key).await.unwrap().is_none());
    let corrupted = sha256_of(&bytes).to_string();
    assert!(!walk_blobs(&cwd.path().join("media-store")).contains(&corrupted));
    repo.close().await;
}

/// The workers put the small files of several media in one go, each media's thumbnails
/// only once its own bytes are stored: a media whose bytes are bad leaves none of its
/// thumbnails' bytes behind, and every object in the datastore has a row.
#[tokio::test]
async fn a_rejected_media_leaves_no_thumbnail_bytes_in_the_datastore() {
    let copy = copy_sqlite_fixture();
    let expected = expected("sqlite");
    let media = expected_media(&expected);
    let victim = media.iter().find(|m| m["label"] == "remote_image").unwrap();
    let path = copy.media_store.join(victim["path"].as_str().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    // Its thumbnails' digests that no other media or thumbnail has.
    let elsewhere: BTreeSet<&str> = media
        .iter()
        .filter(|m| m["label"] != "remote_image")
        .flat_map(|m| {
            let thumbnails = m["thumbnails"].as_array().unwrap().iter();
            std::iter::once(&m["file_sha256"]).chain(thumbnails.map(|t| &t["file_sha256"]))
        })
        .filter_map(Value::as_str)
        .collect();
    let own: BTreeSet<String> = victim["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["file_sha256"].as_str())
        .filter(|sha256| !elsewhere.contains(sha256))
        .map(str::to_owned)
        .collect();
    assert!(!own.is_empty(), "the victim's thumbnails are its own");

    let cwd = tempfile::tempdir().unwrap();
    let out = copy.import(cwd.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let report = report(&out);
    assert_eq!(failures_with(&report, "corrupt").len(), 1, "{report}");
    let stored = walk_blobs(&cwd.path().join("media-store"));
    assert!(own.is_disjoint(&stored), "{own:?} in {stored:?}");
    let repo = format!("sqlite://{}", cwd.path().join("media-repo.db").display());
    let recorded = strings(
        &repo,
        "SELECT sha256 FROM media UNION SELECT sha256 FROM thumbnails",
    )
    .await;
    assert_eq!(
        stored, recorded,
        "every object has a row, and every row its object"
    );
}

#[tokio::test]
async fn malicious_rows_are_refused_without_touching_anything_outside_the_store() {
    use sqlx::Connection;
    let copy = copy_sqlite_fixture();
    // Bait outside the media store, where the traversals below would lead.
    let outside = copy.media_store.parent().unwrap().join("secret");
    std::fs::write(&outside, b"do not import me").unwrap();
    let url = format!("sqlite://{}", copy.db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let a_local = expected("sqlite")["local_media"][0]["media_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for sql in [
        "INSERT INTO local_media_repository (media_id, media_type, media_length, created_ts, \
         user_id) VALUES ('../../secret', 'text/plain', 16, 1, '@alice:fixture.test')",
        "INSERT INTO local_media_repository (media_id, media_type, media_length, created_ts, \
         user_id) VALUES ('lo/../../../secret', 'text/plain', 16, 1, '@alice:fixture.test')",
        "INSERT INTO remote_media_cache (media_origin, media_id, media_type, media_length, \
         created_ts, filesystem_id) VALUES ('../..', 'abcdefgh', 'text/plain', 16, 1, 'abcdefgh')",
        "INSERT INTO remote_media_cache (media_origin, media_id, media_type, media_length, \
         created_ts, filesystem_id) VALUES ('evil.example', 'abcdefgh', 'text/plain', 16, 1, \
         '../../../secret')",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO local_media_repository_thumbnails (media_id, thumbnail_width, \
         thumbnail_height, thumbnail_type, thumbnail_method, thumbnail_length) \
         VALUES ($1, 1, 1, '../../../../secret', 'crop', 16)",
    )
    .bind(&a_local)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let cwd = tempfile::tempdir().unwrap();
    let out = copy.import(cwd.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let report = report(&out);
    let refused: Vec<&str> = failures_with(&report, "invalid_identifier")
        .into_iter()
        .map(|f| f["item"].as_str().unwrap())
        .collect();
    assert_eq!(refused.len(), 5, "{report}");
    assert!(
        refused
            .iter()
            .any(|i| i.contains("thumbnail") && i.contains(&a_local))
    );
    assert_eq!(report["media_imported"], 18, "the good media still come in");
    let secret = sha256_of(b"do not import me").to_string();
    assert!(!walk_blobs(&cwd.path().join("media-store")).contains(&secret));
    assert_eq!(std::fs::read(&outside).unwrap(), b"do not import me");
}

#[test]
fn configuration_errors_say_what_to_fix_and_exit_2() {
    let cwd = tempfile::tempdir().unwrap();
    let db = fixture("sqlite").join("homeserver.db");
    let store = fixture("sqlite").join("media_store");
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "--synapse-db",
                "/nonexistent/homeserver.db",
                "--media-store",
                store.to_str().unwrap(),
            ],
            "no such file",
        ),
        (
            &[
                "--synapse-db",
                db.to_str().unwrap(),
                "--media-store",
                "/nonexistent",
            ],
            "is not a folder",
        ),
        (
            &[
                "--synapse-db",
                db.to_str().unwrap(),
                "--media-store",
                store.to_str().unwrap(),
                "--server-name",
                "other.example",
            ],
            "does not match the users",
        ),
        (
            &[
                "--synapse-db",
                db.to_str().unwrap(),
                "--media-store",
                store.to_str().unwrap(),
                "--db",
                "mysql://x",
            ],
            "sqlite://",
        ),
    ];
    for (args, message) in cases {
        let out = TestCommand::new("import_synapse")
            .args(args)
            .current_dir(cwd.path())
            .assert_exit(2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    assert!(
        !cwd.path().join("media-store").exists()
            || walk_blobs(&cwd.path().join("media-store")).is_empty()
    );
}

#[test]
fn matrix_media_repo_flags_are_accepted() {
    let cwd = tempfile::tempdir().unwrap();
    let db = fixture("sqlite").join("homeserver.db");
    let store = fixture("sqlite").join("media_store");
    let out = TestCommand::new("import_synapse")
        .args([
            "--synapse-db",
            db.to_str().unwrap(),
            "--media-store",
            store.to_str().unwrap(),
            "-serverName=fixture.test",
            "-workers",
            "2",
            "--json",
        ])
        .current_dir(cwd.path())
        .assert_exit(1);
    assert_eq!(report(&out)["media_imported"], 18);
}

#[tokio::test]
async fn a_killed_import_resumes_to_the_state_of_an_uninterrupted_run_and_leaves_no_temporary_files()
 {
    use media_tests::synthetic_synapse::{SyntheticSpec, write_synapse_sqlite};
    let source = tempfile::tempdir().unwrap();
    let store = write_synapse_sqlite(source.path(), &SyntheticSpec::small_media(3_000)).await;
    let args = [
        "--synapse-db",
        store.sqlite_path.to_str().unwrap(),
        "--media-store",
        store.media_store.to_str().unwrap(),
        "--workers",
        "4",
        "-q",
    ];

    let reference = tempfile::tempdir().unwrap();
    TestCommand::new("import_synapse")
        .args(args)
        .current_dir(reference.path())
        .assert_exit(0);
    let reference_url = format!(
        "sqlite://{}",
        reference.path().join("media-repo.db").display()
    );

    let resumed = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        resumed.path().join("media-repo.db").display()
    );
    let mut interrupted_at = Vec::new();
    for _ in 0..2 {
        let mut child = std::process::Command::new(media_tests::binary("import_synapse"))
            .args(args)
            .current_dir(resumed.path())
            .spawn()
            .unwrap();
        let before = media_count(&url).await;
        // Kill -9 as soon as this run has recorded something.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while media_count(&url).await <= before && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        interrupted_at.push(media_count(&url).await);
    }
    assert!(
        interrupted_at[0] > 0 && interrupted_at[1] < store.media as i64,
        "the runs were not interrupted mid-way: {interrupted_at:?}"
    );
    // The killed run had set the repository's secondary indexes aside for its load.
    let schema = "SELECT name || ': ' || COALESCE(sql, '') FROM sqlite_master \
                  WHERE type = 'index' ORDER BY name";
    let set_aside = strings(&url, "SELECT name FROM deferred_indexes").await;
    assert!(!set_aside.is_empty(), "no index was set aside");
    let out = TestCommand::new("import_synapse")
        .args(args)
        .arg("--json")
        .current_dir(resumed.path())
        .assert_exit(0);
    let last = report(&out);
    assert_eq!(
        last["media_already_present"].as_i64().unwrap() + last["media_imported"].as_i64().unwrap(),
        store.media as i64
    );
    assert_eq!(
        repository_contents(&url).await,
        repository_contents(&reference_url).await,
        "killed at {interrupted_at:?}"
    );
    assert_eq!(
        walk_blobs(&resumed.path().join("media-store")),
        walk_blobs(&reference.path().join("media-store"))
    );
    // And built them again exactly as they were.
    assert_eq!(
        strings(&url, schema).await,
        strings(&reference_url, schema).await
    );
    assert!(
        strings(&url, "SELECT name FROM deferred_indexes")
            .await
            .is_empty()
    );
    // The store converged: exactly one file per blob row, nothing left of the killed
    // runs' writes in progress.
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let blob_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let files = all_files(&resumed.path().join("media-store"));
    assert_eq!(
        files.len() as i64,
        blob_rows,
        "stray files: {:?}",
        files
            .iter()
            .filter(|f| f.contains(".tmp"))
            .take(5)
            .collect::<Vec<_>>()
    );
}

/// Every file below `root`, at any depth, as paths relative to it (but a datastore's
/// identity marker).
fn all_files(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut folders = vec![root.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path != root.join(".datastore-id") {
                files.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    files
}

/// A real Synapse serving a copy of the SQLite fixture (tests/fixtures/synapse/serve.py),
/// stopped when dropped. Needs `SYNAPSE_PYTHON` (scripts/test provides it).
struct LiveSynapse {
    child: std::process::Child,
    url: String,
    admin_token: String,
    _dir: tempfile::TempDir,
}

impl LiveSynapse {
    fn start() -> Self {
        use std::io::BufRead;
        let python = std::env::var("SYNAPSE_PYTHON").unwrap_or_else(|_| {
            panic!(
                "SYNAPSE_PYTHON is not set: run the tests with ./scripts/test, which provides a \
                 Python with matrix-synapse, or point SYNAPSE_PYTHON at one"
            )
        });
        let copy = copy_sqlite_fixture();
        let dir = tempfile::tempdir().unwrap();
        std::fs::rename(&copy.db, dir.path().join("homeserver.db")).unwrap();
        std::fs::rename(&copy.media_store, dir.path().join("media_store")).unwrap();
        let mut child = std::process::Command::new(python)
            .arg(fixture("").join("serve.py"))
            .arg(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start serve.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("serve.py did not start Synapse ({e}): {line:?}"));
        Self {
            child,
            url: info["url"].as_str().unwrap().to_owned(),
            admin_token: info["admin_token"].as_str().unwrap().to_owned(),
            _dir: dir,
        }
    }
}

impl Drop for LiveSynapse {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // serve.py stops Synapse when its stdin closes
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn media_missing_on_disk_are_downloaded_from_a_live_synapse() {
    let synapse = LiveSynapse::start();
    let expected = expected("sqlite");
    // The importer's media store lost some files: a local media, the quarantined one
    // (needs the admin bypass), a remote media and a thumbnail.
    let copy = copy_sqlite_fixture();
    let by_label = |label: &str| {
        expected_media(&expected)
            .into_iter()
            .find(|m| m["label"] == label)
            .unwrap()
            .clone()
    };
    for label in ["bob_notes", "alice_quarantined", "remote_image"] {
        let media = by_label(label);
        std::fs::remove_file(copy.media_store.join(media["path"].as_str().unwrap())).unwrap();
    }
    let avatar = by_label("alice_avatar");
    std::fs::remove_file(
        copy.media_store
            .join(avatar["thumbnails"][0]["path"].as_str().unwrap()),
    )
    .unwrap();

    let cwd = tempfile::tempdir().unwrap();
    let out = copy.import(
        cwd.path(),
        &[
            "--homeserver-url",
            &synapse.url,
            "--access-token",
            &synapse.admin_token,
        ],
    );
    let report = report(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let reasons: Vec<&str> = report["failures"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["never_uploaded"], "{report}");
    let repo_url = format!("sqlite://{}", cwd.path().join("media-repo.db").display());
    assert_repository_matches(&repo_url, &cwd.path().join("media-store"), &expected).await;
}

#[tokio::test]
async fn source_http_imports_everything_from_the_homeserver() {
    let synapse = LiveSynapse::start();
    let cwd = tempfile::tempdir().unwrap();
    let db = fixture("sqlite").join("homeserver.db");
    let out = TestCommand::new("import_synapse")
        .args([
            "--synapse-db",
            db.to_str().unwrap(),
            "--source",
            "http",
            "--homeserver-url",
            &synapse.url,
            "--access-token",
            &synapse.admin_token,
            "--json",
        ])
        .current_dir(cwd.path())
        .output();
    let report = report(&out);
    assert_eq!(report["media_imported"], 18, "{report}");
    assert_eq!(
        report["media_failed"], 1,
        "only the never-uploaded media: {report}"
    );
    // Synapse's thumbnail endpoint ignores the admin bypass: the thumbnails of the
    // quarantined media cannot come over HTTP, and are listed (not silently dropped).
    let quarantined = expected("sqlite")["local_media"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["label"] == "alice_quarantined")
        .unwrap()["mxc"]
        .as_str()
        .unwrap()
        .to_owned();
    let thumbnail_failures: Vec<&Value> = report["failures"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["item"].as_str().unwrap().contains(" thumbnail "))
        .collect();
    assert_eq!(thumbnail_failures.len(), 3, "{report}");
    for failure in thumbnail_failures {
        assert!(failure["item"].as_str().unwrap().starts_with(&quarantined));
        assert_eq!(failure["reason"], "file_missing");
        assert!(failure["detail"].as_str().unwrap().contains("404"));
    }
    assert_eq!(report["thumbnails_imported"], 34, "{report}");
    let repo_url = format!("sqlite://{}", cwd.path().join("media-repo.db").display());
    let repo = media_db::connect(&repo_url).await.unwrap();
    for media in expected_media(&expected("sqlite")) {
        if media["never_uploaded"].as_bool().unwrap() {
            continue;
        }
        let key = MediaKey::new(
            media["origin"].as_str().unwrap().parse().unwrap(),
            media["media_id"].as_str().unwrap().parse().unwrap(),
        );
        let stored = repo.get_media(&key).await.unwrap().unwrap();
        assert_eq!(
            stored.sha256.as_str(),
            media["file_sha256"].as_str().unwrap()
        );
    }
    repo.close().await;

    // A token the homeserver rejects stops the run before anything is read.
    let out = TestCommand::new("import_synapse")
        .args([
            "--synapse-db",
            db.to_str().unwrap(),
            "--source",
            "http",
            "--homeserver-url",
            &synapse.url,
            "--access-token",
            "not-a-token",
        ])
        .current_dir(cwd.path())
        .assert_exit(2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("rejected the access token"));
}

#[tokio::test]
async fn a_large_file_whose_bytes_are_already_stored_is_not_read_again() {
    use sqlx::Connection;
    let copy = copy_sqlite_fixture();
    // Two media with the same 2 MiB of bytes and their sha256 recorded (Synapse ≥ 1.128):
    // the second one's file is gone.
    let bytes: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let sha = sha256_of(&bytes).to_string();
    let present = "aaaaLargeOriginalMedia01";
    let vanished = "bbbbLargeDuplicateMedia2";
    let path = copy
        .media_store
        .join("local_content/aa/aa/LargeOriginalMedia01");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", copy.db.display()))
        .await
        .unwrap();
    for id in [present, vanished] {
        sqlx::query(
            "INSERT INTO local_media_repository (media_id, media_type, media_length, \
             created_ts, user_id, sha256) VALUES ($1, 'video/mp4', $2, 1, '@bob:fixture.test', $3)",
        )
        .bind(id)
        .bind(bytes.len() as i64)
        .bind(&sha)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let first = report(&copy.import(cwd.path(), &[]));
    let missing = failures_with(&first, "file_missing");
    assert!(
        missing.len() <= 1,
        "at most the duplicate is missing in a first run (workers may race): {first}"
    );
    // The next run references the stored copy without needing the lost file.
    let second = report(&copy.import(cwd.path(), &[]));
    let repo = media_db::connect(&format!(
        "sqlite://{}",
        cwd.path().join("media-repo.db").display()
    ))
    .await
    .unwrap();
    for id in [present, vanished] {
        let key = MediaKey::new("fixture.test".parse().unwrap(), id.parse().unwrap());
        let stored = repo
            .get_media(&key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id}: {second}"));
        assert_eq!(stored.sha256.as_str(), sha);
    }
    assert_eq!(second["bytes_written"], 0);
    repo.close().await;
}

/// A tmpfs of `size` mounted on a fresh folder, unmounted when dropped; `None` (with a
/// message saying why the test is skipped) where mounting is not permitted.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "SKIPPED: mounting a {size} tmpfs is not permitted here ({}); the full-disk \
                 test needs root (the failing-datastore test in media-import covers the \
                 mechanism)",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Runs a command, killing it (and failing the test) when it is still running after
/// `limit`: a hang fails instead of hanging the suite.
fn run_bounded(mut command: std::process::Command, limit: std::time::Duration) -> Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn a_full_datastore_filesystem_ends_the_run_with_exit_3_instead_of_hanging() {
    use media_tests::synthetic_synapse::{SyntheticSpec, write_synapse_sqlite};
    let Some(full) = Tmpfs::mount("1m") else {
        return;
    };
    let source = tempfile::tempdir().unwrap();
    // 319 media of 4–64 KiB (the issue's count with default workers): far more than 1 MiB.
    let store = write_synapse_sqlite(source.path(), &SyntheticSpec::small_media(319)).await;
    let cwd = tempfile::tempdir().unwrap();
    for workers in ["2", "8"] {
        let mut command = std::process::Command::new(media_tests::binary("import_synapse"));
        command
            .args(["--synapse-db", store.sqlite_path.to_str().unwrap()])
            .args(["--media-store", store.media_store.to_str().unwrap()])
            .args(["--datastore", full.path().to_str().unwrap()])
            .args(["--workers", workers, "-q"])
            .current_dir(cwd.path());
        let out = run_bounded(command, std::time::Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("No space left on device"), "{stderr}");
    }
    // Each run's task row is finished and says what failed.
    use sqlx::Connection;
    let url = format!("sqlite://{}", cwd.path().join("media-repo.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let tasks: Vec<(Option<i64>, Option<String>)> =
        sqlx::query_as("SELECT finished_ts, error FROM tasks ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    for (finished, error) in tasks {
        assert!(finished.is_some());
        assert!(error.unwrap().contains("No space left on device"));
    }
    conn.close().await.unwrap();
}

impl FixtureCopy {
    /// The `import_synapse` command [`FixtureCopy::import`] runs, to run it bounded.
    fn command(&self, cwd: &Path, extra: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(media_tests::binary("import_synapse"));
        command
            .args(["--synapse-db", self.db.to_str().unwrap()])
            .args([
                "--media-store",
                self.media_store.to_str().unwrap(),
                "--json",
            ])
            .args(extra)
            .current_dir(cwd);
        command
    }

    /// The expected.json entry of the fixture media labelled `label`.
    fn media(label: &str) -> Value {
        expected_media(&expected("sqlite"))
            .into_iter()
            .find(|m| m["label"] == label)
            .unwrap_or_else(|| panic!("no fixture media {label}"))
            .clone()
    }
}

/// The failures of a report about `mxc` (the media or its thumbnails).
fn failures_of<'a>(report: &'a Value, mxc: &str) -> Vec<&'a Value> {
    report["failures"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["item"].as_str().unwrap().starts_with(mxc))
        .collect()
}

#[tokio::test]
async fn links_inside_the_media_store_are_not_followed_out_of_it() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let copy = copy_sqlite_fixture();
    let outside = copy.media_store.parent().unwrap().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let secret = outside.join("secret");
    std::fs::write(&secret, b"root only: never import me").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let replace_with_link = |relative: &str, target: &Path| {
        let path = copy.media_store.join(relative);
        std::fs::remove_file(&path).unwrap();
        symlink(target, &path).unwrap();
    };
    // A media file and a thumbnail file that are links to the secret; a media whose
    // last folder is a link to a folder outside; a media that is a link to /dev/zero.
    let photo = FixtureCopy::media("alice_photo_1");
    replace_with_link(photo["path"].as_str().unwrap(), &secret);
    let avatar = FixtureCopy::media("alice_avatar");
    replace_with_link(avatar["thumbnails"][0]["path"].as_str().unwrap(), &secret);
    let shared = FixtureCopy::media("alice_shared");
    let shared_path = copy.media_store.join(shared["path"].as_str().unwrap());
    let folder = shared_path.parent().unwrap();
    std::fs::remove_dir_all(folder).unwrap();
    std::fs::copy(&secret, outside.join(shared_path.file_name().unwrap())).unwrap();
    symlink(&outside, folder).unwrap();
    let zero = FixtureCopy::media("bob_noname");
    replace_with_link(zero["path"].as_str().unwrap(), Path::new("/dev/zero"));

    let cwd = tempfile::tempdir().unwrap();
    for dry_run in [true, false] {
        let extra: &[&str] = if dry_run { &["--dry-run"] } else { &[] };
        let out = run_bounded(
            copy.command(cwd.path(), extra),
            std::time::Duration::from_secs(60),
        );
        let report = report(&out);
        assert_eq!(out.status.code(), Some(1), "{report}");
        for media in [&photo, &shared, &zero] {
            let failures = failures_of(&report, media["mxc"].as_str().unwrap());
            assert_eq!(failures.len(), 1, "{}: {report}", media["label"]);
            assert_eq!(failures[0]["reason"], "unreadable");
            let detail = failures[0]["detail"].as_str().unwrap();
            assert!(detail.contains("never followed"), "{detail}");
        }
        let thumbnail = failures_of(&report, avatar["mxc"].as_str().unwrap());
        assert_eq!(thumbnail.len(), 1, "{report}");
        assert!(
            thumbnail[0]["item"]
                .as_str()
                .unwrap()
                .contains(" thumbnail ")
        );
        assert_eq!(thumbnail[0]["reason"], "unreadable");
    }
    let secret_sha = sha256_of(b"root only: never import me").to_string();
    assert!(!walk_blobs(&cwd.path().join("media-store")).contains(&secret_sha));
    let repo = media_db::connect(&format!(
        "sqlite://{}",
        cwd.path().join("media-repo.db").display()
    ))
    .await
    .unwrap();
    for media in [&photo, &shared, &zero] {
        let key = MediaKey::new(
            "fixture.test".parse().unwrap(),
            media["media_id"].as_str().unwrap().parse().unwrap(),
        );
        assert!(repo.get_media(&key).await.unwrap().is_none());
    }
    repo.close().await;
}

#[tokio::test]
async fn a_fifo_in_place_of_a_media_file_is_refused_without_hanging() {
    let copy = copy_sqlite_fixture();
    let notes = FixtureCopy::media("bob_notes");
    let path = copy.media_store.join(notes["path"].as_str().unwrap());
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let cwd = tempfile::tempdir().unwrap();
    for extra in [&["--dry-run"][..], &[]] {
        let out = run_bounded(
            copy.command(cwd.path(), extra),
            std::time::Duration::from_secs(60),
        );
        let report = report(&out);
        assert_eq!(out.status.code(), Some(1), "{report}");
        let failures = failures_of(&report, notes["mxc"].as_str().unwrap());
        assert_eq!(failures.len(), 1, "{report}");
        assert_eq!(failures[0]["reason"], "unreadable");
        assert!(
            failures[0]["detail"]
                .as_str()
                .unwrap()
                .contains("a FIFO, not a regular file"),
            "{report}"
        );
        assert_eq!(report["media_imported"], 17, "{report}");
    }
}

#[tokio::test]
async fn a_file_longer_than_recorded_is_read_only_one_byte_past_its_length() {
    let copy = copy_sqlite_fixture();
    let blob = FixtureCopy::media("carol_blob");
    // A 1 TiB file (sparse: it takes no space) where Synapse recorded 4096 bytes.
    std::fs::OpenOptions::new()
        .write(true)
        .open(copy.media_store.join(blob["path"].as_str().unwrap()))
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    // Without the cap the copy would fill any disk: a small tmpfs where permitted.
    let tmpfs = Tmpfs::mount("64m");
    let cwd = tempfile::tempdir().unwrap();
    let datastore = tmpfs
        .as_ref()
        .map_or(cwd.path().join("media-store"), |t| t.path().to_owned());
    for dry_run in [true, false] {
        let mut extra = vec!["--datastore", datastore.to_str().unwrap()];
        if dry_run {
            extra.push("--dry-run");
        }
        let out = run_bounded(
            copy.command(cwd.path(), &extra),
            std::time::Duration::from_secs(60),
        );
        let report = report(&out);
        assert_eq!(out.status.code(), Some(1), "{report}");
        let failures = failures_of(&report, blob["mxc"].as_str().unwrap());
        assert_eq!(failures.len(), 1, "{report}");
        assert_eq!(failures[0]["reason"], "size_mismatch", "{report}");
        assert!(
            failures[0]["detail"]
                .as_str()
                .unwrap()
                .contains("Synapse recorded 4096 bytes"),
            "{report}"
        );
        assert!(report["bytes_read"].as_u64().unwrap() < 1 << 20, "{report}");
    }
}

/// Reads one HTTP request from `stream`; answers Synapse's `whoami` itself (`None`),
/// and hands any other request's stream back to be answered (`Some`).
fn answer_whoami(stream: std::net::TcpStream) -> Option<std::net::TcpStream> {
    use std::io::{BufRead, Write};
    let mut reader = std::io::BufReader::new(stream.try_clone().ok()?);
    let mut request = String::new();
    reader.read_line(&mut request).ok()?;
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let mut stream = stream;
    if request.contains("/whoami") {
        let body = r#"{"user_id":"@admin:fixture.test"}"#;
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return None;
    }
    Some(stream)
}

/// An HTTP server on 127.0.0.1 that answers `whoami` and answers every other request
/// with a body that does not end (until `limit` bytes, so that it stops by itself);
/// counts the body bytes it managed to send.
struct EndlessServer {
    url: String,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl EndlessServer {
    fn start(limit: u64) -> Self {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (counter, stopped) = (sent.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while !stopped.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                let counter = counter.clone();
                std::thread::spawn(move || {
                    stream.set_nonblocking(false).unwrap();
                    let Some(mut stream) = answer_whoami(stream) else {
                        return;
                    };
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                          Connection: close\r\n\r\n",
                    );
                    let chunk = [b'x'; 64 * 1024];
                    while counter.load(Ordering::SeqCst) < limit {
                        if stream.write_all(&chunk).is_err() {
                            return;
                        }
                        counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    }
                });
            }
        });
        Self { url, sent, stop }
    }

    fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for EndlessServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_http_body_that_never_ends_is_cut_one_byte_past_the_recorded_length() {
    let copy = copy_sqlite_fixture();
    let noname = FixtureCopy::media("bob_noname");
    assert_eq!(noname["file_size"], 58);
    std::fs::remove_file(copy.media_store.join(noname["path"].as_str().unwrap())).unwrap();
    const LIMIT: u64 = 1 << 30;
    let cwd = tempfile::tempdir().unwrap();
    for dry_run in [true, false] {
        let server = EndlessServer::start(LIMIT);
        let mut extra = vec!["--homeserver-url", &server.url, "--access-token", "token"];
        if dry_run {
            extra.push("--dry-run");
        }
        let out = run_bounded(
            copy.command(cwd.path(), &extra),
            std::time::Duration::from_secs(60),
        );
        let report = report(&out);
        assert_eq!(out.status.code(), Some(1), "{report}");
        let failures = failures_of(&report, noname["mxc"].as_str().unwrap());
        assert_eq!(failures.len(), 1, "{report}");
        assert_eq!(failures[0]["reason"], "size_mismatch", "{report}");
        // The importer stopped reading at byte 59: the server could only fill the
        // socket buffers, nowhere near its limit.
        assert!(
            server.sent() < LIMIT / 4,
            "the server sent {} bytes",
            server.sent()
        );
    }
}

/// A PostgreSQL database holding the Synapse fixture's dump.
async fn restore_postgres_fixture() -> TestDatabase {
    let synapse = TestDatabase::postgres().await;
    let status = std::process::Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", "-d"])
        .arg(&synapse.url)
        .arg("-f")
        .arg(fixture("postgres").join("synapse.sql"))
        .status()
        .expect("psql (PostgreSQL's client) must be installed to restore the fixture");
    assert!(status.success(), "restoring the Synapse dump failed");
    synapse
}

/// The media IDs of the fixture media with these labels, local ones first.
fn media_ids(labels: &[&str]) -> Vec<String> {
    labels
        .iter()
        .map(|l| {
            FixtureCopy::media(l)["media_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_bad_row_is_a_listed_failure_and_the_import_goes_on() {
    use sqlx::Connection;
    let copy = copy_sqlite_fixture();
    let labels = [
        "alice_photo_1",
        "alice_shared",
        "bob_room_avatar",
        "carol_blob",
        "bob_notes",
        "remote_text",
    ];
    let ids = media_ids(&labels);
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", copy.db.display()))
        .await
        .unwrap();
    for (sql, id) in [
        // Text that is not UTF-8, in upload_name and media_type.
        "UPDATE local_media_repository SET upload_name = CAST(X'FF6E616D65' AS TEXT) WHERE media_id = $1",
        "UPDATE local_media_repository SET media_type = CAST(X'C328' AS TEXT) WHERE media_id = $1",
        // Text in the timestamp columns.
        "UPDATE local_media_repository SET created_ts = 'yesterday' WHERE media_id = $1",
        "UPDATE local_media_repository SET last_access_ts = 'soon' WHERE media_id = $1",
        // A negative length (never "unknown", never 0).
        "UPDATE local_media_repository SET media_length = -1 WHERE media_id = $1",
        "UPDATE remote_media_cache SET upload_name = CAST(X'FF' AS TEXT) WHERE media_id = $1",
    ]
    .into_iter()
    .zip(&ids)
    {
        sqlx::query(sql).bind(id).execute(&mut conn).await.unwrap();
    }
    // A thumbnail row whose type is not UTF-8: its media still comes in.
    let with_thumbnails = FixtureCopy::media("bob_shared");
    sqlx::query(
        "UPDATE local_media_repository_thumbnails SET thumbnail_type = CAST(X'FF' AS TEXT) \
         WHERE media_id = $1 AND thumbnail_width = $2",
    )
    .bind(with_thumbnails["media_id"].as_str().unwrap())
    .bind(with_thumbnails["thumbnails"][0]["width"].as_i64().unwrap())
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let out = copy.import(cwd.path(), &[]);
    let report = report(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let mut bad = failures_with(&report, "bad_row");
    let thumbnail = format!("{} thumbnail", with_thumbnails["mxc"].as_str().unwrap());
    let bad_thumbnails: Vec<_> = bad
        .extract_if(.., |f| f["item"] == thumbnail.as_str())
        .collect();
    assert!(!bad_thumbnails.is_empty(), "{report}");
    assert_eq!(
        report["thumbnails_failed"],
        bad_thumbnails.len(),
        "{report}"
    );
    assert_eq!(bad.len(), labels.len(), "{report}");
    for label in labels {
        let mxc = FixtureCopy::media(label)["mxc"]
            .as_str()
            .unwrap()
            .to_owned();
        let failure = bad.iter().find(|f| f["item"] == mxc.as_str());
        let failure = failure.unwrap_or_else(|| panic!("{label} is not listed: {report}"));
        assert!(
            failure["detail"]
                .as_str()
                .unwrap()
                .contains("Synapse's database"),
            "{failure}"
        );
    }
    assert_eq!(report["media_imported"], 18 - labels.len(), "{report}");
}

#[tokio::test]
async fn a_negative_length_in_postgres_is_a_listed_failure_not_size_zero() {
    // PostgreSQL refuses text in a BIGINT column and text that is not UTF-8 (Synapse
    // needs a UTF8 database) on its own: a negative length is the bad value its types
    // let through.
    use sqlx::Connection;
    let synapse = restore_postgres_fixture().await;
    let expected = expected("postgres");
    let find = |label: &str| {
        expected_media(&expected)
            .into_iter()
            .find(|m| m["label"] == label)
            .unwrap()
            .clone()
    };
    let (local, remote) = (find("carol_blob"), find("remote_image"));
    let mut conn = sqlx::PgConnection::connect(&synapse.url).await.unwrap();
    sqlx::query("UPDATE local_media_repository SET media_length = -4096 WHERE media_id = $1")
        .bind(local["media_id"].as_str().unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE remote_media_cache_thumbnails SET thumbnail_length = -1 WHERE media_id = $1",
    )
    .bind(remote["media_id"].as_str().unwrap())
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let media_store = fixture("postgres").join("media_store");
    let out = TestCommand::new("import_synapse")
        .args([
            "--synapse-db",
            &synapse.url,
            "--media-store",
            media_store.to_str().unwrap(),
            "--json",
        ])
        .current_dir(cwd.path())
        .assert_exit(1);
    let report = report(&out);
    let bad = failures_with(&report, "bad_row");
    let thumbnails = remote["thumbnails"].as_array().unwrap().len();
    assert_eq!(bad.len(), 1 + thumbnails, "{report}");
    assert!(bad.iter().any(|f| {
        f["item"] == local["mxc"]
            && f["detail"]
                .as_str()
                .unwrap()
                .contains("media_length is -4096")
    }));
    assert_eq!(report["media_imported"], 17, "{report}");
}

#[tokio::test]
async fn a_changed_synapse_file_is_a_conflict_not_already_present() {
    // SQLite: the fixture copy with its own repository; PostgreSQL: the fixture's dump
    // into a PostgreSQL repository.
    let copy = copy_sqlite_fixture();
    let pg_synapse = restore_postgres_fixture().await;
    let pg_repo = TestDatabase::postgres().await;
    let pg_media_store = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(fixture("postgres").join("media_store"))
        .arg(pg_media_store.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let pg_media_store = pg_media_store.path().join("media_store");
    let sqlite_cwd = tempfile::tempdir().unwrap();
    let sqlite_repo = format!("sqlite://{}", sqlite_cwd.path().join("repo.db").display());
    let sqlite_db = copy.db.to_str().unwrap().to_owned();
    for (synapse_db, media_store, repo_url, engine) in [
        (&sqlite_db, &copy.media_store, &sqlite_repo, "sqlite"),
        (&pg_synapse.url, &pg_media_store, &pg_repo.url, "postgres"),
    ] {
        let cwd = tempfile::tempdir().unwrap();
        let datastore = cwd.path().join("store");
        let import = |extra: &[&str]| {
            let args = [
                "--synapse-db",
                synapse_db,
                "--media-store",
                media_store.to_str().unwrap(),
                "--db",
                repo_url,
                "--datastore",
                datastore.to_str().unwrap(),
                "--json",
            ];
            TestCommand::new("import_synapse")
                .args(args)
                .args(extra)
                .current_dir(cwd.path())
                .output()
        };
        let first = import(&[]);
        assert_eq!(report(&first)["media_imported"], 18, "{engine}");
        let notes = expected_media(&expected(engine))
            .into_iter()
            .find(|m| m["label"] == "bob_notes")
            .unwrap()
            .clone();
        let path = media_store.join(notes["path"].as_str().unwrap());
        let original = std::fs::read(&path).unwrap();
        let mut changed = original.clone();
        changed[0] ^= 0x01;
        std::fs::write(&path, &changed).unwrap();
        let (original, changed) = (sha256_of(&original), sha256_of(&changed));
        for extra in [&["--dry-run"][..], &[]] {
            let out = import(extra);
            let again = report(&out);
            assert_eq!(out.status.code(), Some(1), "{engine}: {again}");
            let conflicts = failures_with(&again, "conflict");
            assert_eq!(conflicts.len(), 1, "{engine}: {again}");
            assert_eq!(conflicts[0]["item"], notes["mxc"]);
            let detail = conflicts[0]["detail"].as_str().unwrap();
            assert!(detail.contains(original.as_str()), "{detail}");
            assert!(detail.contains(changed.as_str()), "{detail}");
            assert_eq!(again["media_already_present"], 17, "{engine}: {again}");
            assert_eq!(again["media_imported"], 0, "{engine}: {again}");
        }
        // Never overwritten: the repository keeps the bytes it had.
        let repo = media_db::connect(repo_url).await.unwrap();
        let key = MediaKey::new(
            notes["origin"].as_str().unwrap().parse().unwrap(),
            notes["media_id"].as_str().unwrap().parse().unwrap(),
        );
        assert_eq!(
            repo.get_media(&key).await.unwrap().unwrap().sha256,
            original
        );
        repo.close().await;
        assert!(!walk_blobs(&datastore).contains(changed.as_str()));
    }
}

/// gdpr_export --synapse-db reads Synapse's media store too: it must refuse links and
/// FIFOs as import_synapse does. Its reading code lives in media-gdpr, which must open
/// files with `media_import::synapse_files::open_in_media_store` (and read at most
/// `synapse_files::read_limit` bytes) for this to pass.
#[tokio::test]
async fn gdpr_export_from_synapse_follows_no_link_and_opens_no_fifo() {
    use std::os::unix::fs::symlink;
    let copy = copy_sqlite_fixture();
    let secret = copy.media_store.parent().unwrap().join("secret");
    std::fs::write(&secret, b"root only: never export me").unwrap();
    let photo = FixtureCopy::media("alice_photo_1");
    let photo_path = copy.media_store.join(photo["path"].as_str().unwrap());
    std::fs::remove_file(&photo_path).unwrap();
    symlink(&secret, &photo_path).unwrap();
    let fifo = FixtureCopy::media("alice_photo_2");
    let fifo_path = copy.media_store.join(fifo["path"].as_str().unwrap());
    std::fs::remove_file(&fifo_path).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo_path)
            .status()
            .unwrap()
            .success()
    );
    let cwd = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(media_tests::binary("gdpr_export"));
    command
        .args(["--synapse-db", copy.db.to_str().unwrap()])
        .args(["--media-store", copy.media_store.to_str().unwrap()])
        .args(["--entity", "@alice:fixture.test", "--json"])
        .arg("--destination")
        .arg(cwd.path().join("alice"))
        .current_dir(cwd.path());
    let out = run_bounded(command, std::time::Duration::from_secs(60));
    let report = report(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let listed = report["failures"]["listed"].as_array().unwrap();
    for media in [&photo, &fifo] {
        assert!(
            listed.iter().any(|f| f["item"] == media["mxc"]),
            "{} was exported: {report}",
            media["label"]
        );
    }
}

#[tokio::test]
async fn a_bad_avatar_row_is_listed_and_the_other_avatars_are_still_pinned() {
    use sqlx::Connection;
    let copy = copy_sqlite_fixture();
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", copy.db.display()))
        .await
        .unwrap();
    // carol's profile avatar: "mxc://" then bytes that are not UTF-8.
    sqlx::query(
        "UPDATE profiles SET avatar_url = CAST(X'6D78633A2F2F66697874757265FF' AS TEXT) \
         WHERE user_id = 'carol'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // The room's avatar: an MXC URI whose server name is not valid.
    sqlx::query("UPDATE room_stats_state SET avatar = 'mxc://bad host/x'")
        .execute(&mut conn)
        .await
        .unwrap();
    // carol's member event: JSON that does not parse.
    let carol_event: String = sqlx::query_scalar(
        "SELECT c.event_id FROM current_state_events AS c \
         WHERE c.type = 'm.room.member' AND c.state_key LIKE '@carol:%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    sqlx::query("UPDATE event_json SET json = '{\"content\": {' WHERE event_id = $1")
        .bind(&carol_event)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let cwd = tempfile::tempdir().unwrap();
    let out = copy.import(cwd.path(), &[]);
    let report = report(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    // alice's and bob's avatars (profile and member event) are still pinned.
    assert_eq!(report["avatars_pinned"], 2, "{report}");
    assert_eq!(report["avatars_failed"], 3, "{report}");
    assert_eq!(report["media_imported"], 18, "{report}");
    let bad_rows = failures_with(&report, "bad_row");
    let named = |needle: &str| {
        bad_rows
            .iter()
            .any(|f| f["item"].as_str().unwrap().contains(needle))
    };
    assert!(named("carol in profiles"), "{report}");
    assert!(named(&format!("{carol_event} in event_json")), "{report}");
    let invalid = failures_with(&report, "invalid_identifier");
    assert_eq!(invalid.len(), 1, "{report}");
    assert!(
        invalid[0]["detail"]
            .as_str()
            .unwrap()
            .contains("room_stats_state"),
        "{report}"
    );
}

/// An HTTP server on 127.0.0.1 that answers `whoami`, and answers every other request
/// with its headers and a few body bytes, then sends nothing more (for at most `stall`,
/// then closes: it stops by itself).
fn stalling_server(stall: std::time::Duration) -> String {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        // Two connections at most are expected (whoami, the download); a bounded loop.
        for stream in listener.incoming().take(8) {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let Some(mut stream) = answer_whoami(stream) else {
                    return;
                };
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                      Content-Length: 58\r\nConnection: close\r\n\r\nfirst bytes",
                );
                let _ = stream.flush();
                std::thread::sleep(stall);
            });
        }
    });
    url
}

#[tokio::test]
async fn a_homeserver_that_stalls_after_its_headers_is_a_listed_timeout_not_a_hang() {
    let copy = copy_sqlite_fixture();
    let noname = FixtureCopy::media("bob_noname");
    std::fs::remove_file(copy.media_store.join(noname["path"].as_str().unwrap())).unwrap();
    // The server stalls far longer than the timeout, but not forever.
    let url = stalling_server(std::time::Duration::from_secs(60));
    let cwd = tempfile::tempdir().unwrap();
    let extra = [
        "--homeserver-url",
        &url,
        "--access-token",
        "token",
        "--http-timeout",
        "1",
    ];
    let out = run_bounded(
        copy.command(cwd.path(), &extra),
        std::time::Duration::from_secs(45),
    );
    let report = report(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let failures = failures_of(&report, noname["mxc"].as_str().unwrap());
    assert_eq!(failures.len(), 1, "{report}");
    assert_eq!(failures[0]["reason"], "unreadable", "{report}");
    let detail = failures[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("sent nothing for 1 s") && detail.contains("--http-timeout"),
        "{detail}"
    );
    // Every other media came from the media store.
    assert_eq!(report["media_imported"], 17, "{report}");

    // The timeout is also taken from the environment; 0 is a usage error.
    let mut command = copy.command(
        cwd.path(),
        &["--homeserver-url", &url, "--access-token", "t"],
    );
    command.env("IMPORT_HTTP_TIMEOUT", "0");
    let out = run_bounded(command, std::time::Duration::from_secs(45));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue #19: a second run with another `--datastore` said "0 imported, 18 already
/// present" and left the folder empty (a later export failed with a bare "No such file
/// or directory"), and `memory://` was accepted for a repository on disk. The repository
/// now recognises the datastore it was filled into by its identity marker, whatever URI
/// names it, and import_synapse, gdpr_export and gdpr_import refuse any other one.
#[tokio::test]
async fn a_repository_refuses_a_datastore_it_was_not_filled_into() {
    for repo in TestDatabase::both().await {
        let cwd = tempfile::tempdir().unwrap();
        let synapse_db = fixture("sqlite").join("homeserver.db");
        let media_store = fixture("sqlite").join("media_store");
        let import = |datastore: &Path, extra: &[&str]| {
            let args = [
                "--synapse-db",
                synapse_db.to_str().unwrap(),
                "--media-store",
                media_store.to_str().unwrap(),
                "--db",
                &repo.url,
                "--datastore",
                datastore.to_str().unwrap(),
                "--json",
            ];
            TestCommand::new("import_synapse")
                .args(args)
                .args(extra)
                .current_dir(cwd.path())
                .output()
        };
        let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

        // memory:// would lose the bytes the repository records: refused.
        let out = import(Path::new("memory://"), &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: {}",
            repo.label,
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("file://media-store"),
            "{}",
            stderr(&out)
        );
        assert_eq!(media_count(&repo.url).await, 0);

        // Filled through a relative URI; its absolute form is the same datastore.
        let out = import(Path::new("file://media-store"), &[]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(report(&out)["media_imported"], 18);
        let filled = cwd.path().join("media-store");
        let out = import(&filled, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(report(&out)["media_already_present"], 18);

        // Another folder is refused, naming both, and stays without blobs.
        let other = cwd.path().join("other-store");
        let out = import(&other, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let message = stderr(&out);
        for needle in [
            format!("file://{}", filled.display()),
            format!("file://{}", other.display()),
            "--datastore-moved".to_owned(),
        ] {
            assert!(message.contains(&needle), "{needle} not in {message}");
        }
        assert!(!other.exists() || walk_blobs(&other).is_empty());
        // So do the GDPR tools: no archive from the wrong datastore, no import into it.
        let common = ["--db", &repo.url, "--datastore", other.to_str().unwrap()];
        let archive = cwd.path().join("archive");
        let out = TestCommand::new("gdpr_export")
            .args(
                [
                    &common[..],
                    &["--entity", "@alice:fixture.test", "--destination"],
                    &[archive.to_str().unwrap()],
                ]
                .concat(),
            )
            .current_dir(cwd.path())
            .assert_exit(2);
        assert!(
            stderr(&out).contains("--datastore-moved"),
            "{}",
            stderr(&out)
        );
        assert!(!archive.exists() || std::fs::read_dir(&archive).unwrap().count() == 0);
        let good = ["--db", &repo.url, "--datastore", filled.to_str().unwrap()];
        TestCommand::new("gdpr_export")
            .args(
                [
                    &good[..],
                    &["--entity", "@alice:fixture.test", "--destination"],
                    &[archive.to_str().unwrap()],
                ]
                .concat(),
            )
            .current_dir(cwd.path())
            .assert_exit(0);
        TestCommand::new("gdpr_import")
            .args([&common[..], &["--directory", archive.to_str().unwrap()]].concat())
            .current_dir(cwd.path())
            .assert_exit(2);
        assert!(!other.exists() || walk_blobs(&other).is_empty());

        // The data moved: refused until the operator says so; a folder that does not
        // hold the sampled blobs is refused even then.
        let moved = cwd.path().join("moved-store");
        std::fs::rename(&filled, &moved).unwrap();
        std::fs::remove_file(moved.join(".datastore-id")).unwrap();
        assert_eq!(import(&moved, &[]).status.code(), Some(2));
        let out = import(&other, &["--datastore-moved"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
        let out = import(&moved, &["--datastore-moved"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(report(&out)["media_already_present"], 18);
        // Recorded: the next runs need no flag, and the old location is now unknown.
        let out = import(&moved, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        TestCommand::new("gdpr_import")
            .args(
                [
                    &["--db", &repo.url, "--datastore", moved.to_str().unwrap()][..],
                    &["--directory", archive.to_str().unwrap()],
                ]
                .concat(),
            )
            .current_dir(cwd.path())
            .assert_exit(0);
    }
}

/// Issue #19: a wrong `--media-store` (an empty folder) created the repository and
/// listed one `file_missing` per media — millions on a real server. The media store's
/// shape and a sample of its files are checked before anything is created.
#[tokio::test]
async fn a_wrong_media_store_is_refused_before_the_repository_is_created() {
    let synapse_db = fixture("sqlite").join("homeserver.db");
    for repo in TestDatabase::both().await {
        let cwd = tempfile::tempdir().unwrap();
        let empty = cwd.path().join("empty");
        // Synapse's folders, but another server's (or no) files in them.
        let lookalike = cwd.path().join("lookalike");
        std::fs::create_dir(&empty).unwrap();
        for folder in ["local_content/ab/cd", "remote_content", "local_thumbnails"] {
            std::fs::create_dir_all(lookalike.join(folder)).unwrap();
        }
        for (store, expected) in [(&empty, "no local_content/"), (&lookalike, "looks wrong")] {
            let out = TestCommand::new("import_synapse")
                .args([
                    "--synapse-db",
                    synapse_db.to_str().unwrap(),
                    "--media-store",
                    store.to_str().unwrap(),
                    "--db",
                    &repo.url,
                    "--datastore",
                    cwd.path().join("media-store").to_str().unwrap(),
                    "--json",
                ])
                .current_dir(cwd.path())
                .assert_exit(2);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(expected), "{stderr}");
            assert!(!stderr.contains("file_missing"), "{stderr}");
        }
        // Nothing was created: no datastore folder, no repository.
        assert!(!cwd.path().join("media-store").exists());
        assert!(
            repo.is_untouched().await,
            "{}: the repository was created",
            repo.label
        );
    }
}

/// `import_synapse` on the SQLite fixture into `repo_url` and `datastore`, with `extra`
/// flags, started (not waited for).
fn spawn_import(
    repo_url: &str,
    datastore: &Path,
    cwd: &Path,
    extra: &[&str],
) -> std::process::Child {
    let db = fixture("sqlite").join("homeserver.db");
    let media_store = fixture("sqlite").join("media_store");
    std::process::Command::new(media_tests::binary("import_synapse"))
        .args(["--synapse-db", db.to_str().unwrap()])
        .args(["--media-store", media_store.to_str().unwrap()])
        .args(["--repo-db", repo_url, "--json", "--workers", "2"])
        .args(["--datastore", datastore.to_str().unwrap()])
        .args(extra)
        .current_dir(cwd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The JSON report of a finished import that did its work (exit 0, or 1 for the
/// fixture's listed failures).
fn finished_report(run: std::process::Child) -> Value {
    let out = run.wait_with_output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    report(&out)
}

/// Issue 14 item 4: an import spread over several machines. Three `--shard k/3`
/// processes at once, into one repository and one datastore, give the repository (rows,
/// pins, blobs) of one process without `--shard`; each media is read and imported by
/// exactly one shard (none finds another's media recorded: none even tried it), and the
/// shards' counters add up to the whole run's. On PostgreSQL, and on SQLite (one file:
/// its writer lock serializes the three).
#[tokio::test]
async fn three_shards_at_once_import_exactly_what_one_run_imports() {
    let postgres = TestDatabase::postgres().await;
    let whole_postgres = TestDatabase::postgres().await;
    let cwd = tempfile::tempdir().unwrap();
    let sqlite = |name: &str| format!("sqlite://{}", cwd.path().join(name).display());
    let cases = [
        (sqlite("sharded.db"), sqlite("whole.db")),
        (postgres.url.clone(), whole_postgres.url.clone()),
    ];
    for (i, (sharded_url, whole_url)) in cases.iter().enumerate() {
        let sharded_store = cwd.path().join(format!("sharded-store-{i}"));
        let whole_store = cwd.path().join(format!("whole-store-{i}"));
        let whole = finished_report(spawn_import(whole_url, &whole_store, cwd.path(), &[]));
        assert_eq!(whole["shard"], "1/1");
        assert_eq!(whole["media_imported"], 18, "{whole}");

        let shards: Vec<String> = (1..=3).map(|k| format!("{k}/3")).collect();
        let runs: Vec<_> = shards
            .iter()
            .map(|shard| spawn_import(sharded_url, &sharded_store, cwd.path(), &["--shard", shard]))
            .collect();
        let reports: Vec<Value> = runs.into_iter().map(finished_report).collect();

        let count = |r: &Value, field: &str| r[field].as_u64().unwrap();
        for (shard, r) in shards.iter().zip(&reports) {
            assert_eq!(r["shard"], shard.as_str());
            for field in ["media_already_present", "thumbnails_already_present"] {
                assert_eq!(count(r, field), 0, "{sharded_url} shard {shard}: {r}");
            }
        }
        // Which media fall to which shard (the hash is pinned by media_import's unit
        // test): every shard has a share.
        let imported: Vec<u64> = reports.iter().map(|r| count(r, "media_imported")).collect();
        assert_eq!(imported, [6, 5, 7], "{sharded_url}: {reports:?}");
        for field in [
            "media_total",
            "media_imported",
            "media_failed",
            "thumbnails_imported",
            "thumbnails_failed",
            "avatars_pinned",
            "avatars_not_in_repository",
            "avatars_failed",
        ] {
            let sum: u64 = reports.iter().map(|r| count(r, field)).sum();
            assert_eq!(
                sum,
                count(&whole, field),
                "{sharded_url} {field}: {reports:?}"
            );
        }
        // The same content in media of two shards may be written by both at once (each
        // put is atomic and idempotent, and counts as written): never fewer blobs.
        let blobs: u64 = reports.iter().map(|r| count(r, "blobs_written")).sum();
        assert!(blobs >= count(&whole, "blobs_written"), "{reports:?}");
        let listed = |r: &Value| -> Vec<String> {
            let items = r["failures"]["listed"].as_array().unwrap().iter();
            items
                .map(|f| f["item"].as_str().unwrap().to_owned())
                .collect()
        };
        let mut listed_by_shards: Vec<String> = reports.iter().flat_map(listed).collect();
        let mut listed_by_whole = listed(&whole);
        listed_by_shards.sort();
        listed_by_whole.sort();
        assert_eq!(listed_by_shards, listed_by_whole);

        assert_eq!(
            repository_contents(sharded_url).await,
            repository_contents(whole_url).await,
            "{sharded_url}"
        );
        assert_eq!(walk_blobs(&sharded_store), walk_blobs(&whole_store));
        assert_repository_matches(sharded_url, &sharded_store, &expected("sqlite")).await;

        // The task log says which share each run took.
        let mut conn = media_tests::any_connection(sharded_url).await;
        let params: Vec<String> = sqlx::query_scalar("SELECT params FROM tasks ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let mut logged: Vec<String> = params
            .iter()
            .map(|p| serde_json::from_str::<Value>(p).unwrap()["shard"].to_string())
            .collect();
        logged.sort();
        assert_eq!(logged, [r#""1/3""#, r#""2/3""#, r#""3/3""#]);
    }
}

/// A shard that does not exist is a usage error (exit 2) that says how to write one,
/// before anything is created.
#[test]
fn a_shard_outside_k_of_n_is_a_usage_error() {
    let cwd = tempfile::tempdir().unwrap();
    let db = fixture("sqlite").join("homeserver.db");
    let store = fixture("sqlite").join("media_store");
    for (shard, message) in [
        ("0/0", "at least 1"),
        ("3/2", "K goes from 1 to N"),
        ("0/3", "K goes from 1 to N"),
        ("x", "write K/N"),
    ] {
        let out = TestCommand::new("import_synapse")
            .args(["--synapse-db", db.to_str().unwrap()])
            .args(["--media-store", store.to_str().unwrap(), "--shard", shard])
            .current_dir(cwd.path())
            .assert_exit(2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{shard}: {stderr}");
    }
    let out = TestCommand::new("import_synapse")
        .args(["--synapse-db", db.to_str().unwrap()])
        .args(["--media-store", store.to_str().unwrap()])
        .env("IMPORT_SHARD", "4/3")
        .current_dir(cwd.path())
        .assert_exit(2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("4/3"));
    assert!(!cwd.path().join("media-repo.db").exists());
    assert!(!cwd.path().join("media-store").exists());
}
