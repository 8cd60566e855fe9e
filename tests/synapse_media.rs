//! End-to-end tests of `synapse_media` on media stores made by a real Synapse
//! (tests/fixtures/synapse, SQLite and PostgreSQL) and on generated Synapse-shaped stores.
//!
//! What each purge should delete is computed here independently: every row is read and
//! judged in Rust by Synapse's rules, and the files it owns are found in the store's file
//! list; the tool's SQL is never reused.

use std::collections::BTreeSet;
use std::path::Path;

use media_tests::live_synapse::LiveSynapse;
use media_tests::synapse_store::{
    ENGINES, Engine, Expected, JOURNAL, SERVER, Store, assert_purged, copy_fixture, fan_out,
    files_of, fixture, fixture_media, media_id, now_ms, opt_i64, quarantined,
};
use media_tests::synthetic_synapse::{SyntheticSpec, copy_into_postgres, write_synapse_sqlite};
use media_tests::{TestCommand, TestDatabase, any_connection, report};
use serde_json::Value;
use sqlx::{Connection, Row};

/// Synapse's purge_media_cache, judged row by row: a remote media goes when it was last
/// accessed before `before` (never when it was never accessed) and is not quarantined.
async fn expected_remote_purge(store: &Store, before: i64) -> Expected {
    let mut conn = any_connection(&store.db_url).await;
    let rows = sqlx::query(
        "SELECT media_origin, media_id, filesystem_id, last_access_ts, quarantined_by \
         FROM remote_media_cache",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.ok();
    let files = store.files();
    let mut expected = Expected::default();
    for row in rows {
        let origin: String = row.get("media_origin");
        let quarantined: Option<String> = row.get("quarantined_by");
        let old = opt_i64(&row, "last_access_ts").is_some_and(|ts| ts < before);
        if !old || quarantined.is_some() {
            continue;
        }
        let fid: String = row.get("filesystem_id");
        expected
            .media
            .insert(format!("{origin}/{}", row.get::<String, _>("media_id")));
        let owned = files_of(
            &files,
            &format!("remote_content/{origin}/{}", fan_out(&fid)),
            &format!("remote_thumbnail/{origin}/{}", fan_out(&fid)),
        );
        expected.bytes += owned.iter().map(|f| files[f]).sum::<u64>();
        expected.files.extend(owned);
    }
    expected
}

/// Synapse's "delete local media by date" with keep_profiles, judged row by row: last
/// access (else creation) before `before`, length above `size_gt`, not quarantined, not
/// protected, and its full MXC in no avatar column.
async fn expected_local_purge(store: &Store, before: i64, size_gt: i64) -> Expected {
    let mut conn = any_connection(&store.db_url).await;
    let rows = sqlx::query(
        "SELECT media_id, last_access_ts, created_ts, CAST(media_length AS BIGINT) AS media_length, \
         quarantined_by, url_cache, \
         CAST(CASE WHEN safe_from_quarantine THEN 1 ELSE 0 END AS BIGINT) AS protected \
         FROM local_media_repository",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut avatars = BTreeSet::new();
    for sql in [
        "SELECT avatar_url FROM profiles WHERE avatar_url IS NOT NULL",
        "SELECT avatar_url FROM room_memberships WHERE avatar_url IS NOT NULL",
        "SELECT avatar_url FROM user_directory WHERE avatar_url IS NOT NULL",
        "SELECT avatar FROM room_stats_state WHERE avatar IS NOT NULL",
    ] {
        for row in sqlx::query(sql).fetch_all(&mut conn).await.unwrap() {
            avatars.insert(row.get::<String, _>(0));
        }
    }
    conn.close().await.ok();
    let files = store.files();
    let mut expected = Expected::default();
    for row in rows {
        let media_id: String = row.get("media_id");
        let age = opt_i64(&row, "last_access_ts").or(opt_i64(&row, "created_ts"));
        let quarantined: Option<String> = row.get("quarantined_by");
        let url_cache: Option<String> = row.get("url_cache");
        let goes = age.is_some_and(|ts| ts < before)
            && opt_i64(&row, "media_length").is_some_and(|len| len > size_gt)
            && quarantined.is_none()
            && opt_i64(&row, "protected") == Some(0)
            && !avatars.contains(&format!("mxc://{SERVER}/{media_id}"));
        if !goes {
            continue;
        }
        let (content, thumbnails) = match url_cache {
            Some(_) => {
                let (date, rest) = media_id.split_once('_').unwrap();
                (
                    format!("url_cache/{date}/{rest}"),
                    format!("url_cache_thumbnails/{date}/{rest}"),
                )
            }
            None => (
                format!("local_content/{}", fan_out(&media_id)),
                format!("local_thumbnails/{}", fan_out(&media_id)),
            ),
        };
        let owned = files_of(&files, &content, &thumbnails);
        expected.bytes += owned.iter().map(|f| files[f]).sum::<u64>();
        expected.files.extend(owned);
        expected.media.insert(format!("{SERVER}/{media_id}"));
    }
    expected
}

#[tokio::test]
async fn purge_remote_deletes_what_purge_media_cache_selects_and_leaves_no_empty_folder() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        let recent = media_id(engine, "remote_text");
        let never_accessed = media_id(engine, "remote_shared_copy");
        store
            .execute(&format!(
                "UPDATE remote_media_cache SET last_access_ts = {} WHERE media_id = '{recent}'; \
                 UPDATE remote_media_cache SET last_access_ts = NULL \
                 WHERE media_id = '{never_accessed}'",
                now_ms()
            ))
            .await;
        let before = now_ms() - 86_400_000;
        let expected = expected_remote_purge(&store, before).await;
        // remote_image and remote_avatar (remote avatars are not kept, as in Synapse).
        assert_eq!(expected.media.len(), 2, "{engine:?}: {expected:?}");
        assert_purged(
            &store,
            &["purge", "remote", "--before", &before.to_string()],
            &expected,
        )
        .await;
        let quarantined = media_id(engine, "remote_quarantined");
        let left = store.lines("SELECT media_id FROM remote_media_cache").await;
        assert_eq!(
            left,
            BTreeSet::from([recent, never_accessed, quarantined]),
            "{engine:?}"
        );
        let again = report(
            &store
                .command(&["purge", "remote", "--before", &before.to_string()])
                .assert_exit(0),
        );
        assert_eq!(
            (
                again["media_deleted"].as_u64(),
                again["kept"]["quarantined"].as_u64()
            ),
            (Some(0), Some(1))
        );
    }
}

/// Two remote rows naming one file (the same origin and filesystem ID): purging one
/// leaves the file for the other, purging the other then removes it, and purging both in
/// one run removes it once.
#[tokio::test]
async fn a_remote_file_two_rows_name_goes_only_with_the_last_of_them() {
    for engine in ENGINES {
        for both_at_once in [false, true] {
            let store = copy_fixture(engine).await;
            let image = media_id(engine, "remote_image");
            let copy = media_id(engine, "remote_shared_copy");
            let named = |media: &str| {
                format!(
                    "SELECT media_origin || ' ' || filesystem_id FROM remote_media_cache WHERE media_id = '{media}'"
                )
            };
            let file = store.lines(&named(&image)).await.pop_first().unwrap();
            let (origin, fid) = file.split_once(' ').unwrap();
            let path = store
                .media_store
                .join(format!("remote_content/{origin}/{}", fan_out(fid)));
            let copy_access = if both_at_once { 1_000 } else { now_ms() };
            store
                .execute(&format!(
                    "UPDATE remote_media_cache SET filesystem_id = '{fid}', \
                     last_access_ts = {copy_access} WHERE media_id = '{copy}'"
                ))
                .await;
            let before = (now_ms() - 86_400_000).to_string();
            let purge = || {
                report(
                    &store
                        .command(&["purge", "remote", "--before", &before])
                        .assert_exit(0),
                )
            };
            let first = purge();
            let rows = store.lines("SELECT media_id FROM remote_media_cache").await;
            assert!(!rows.contains(&image), "{engine:?}: {rows:?}");
            if both_at_once {
                assert!(!rows.contains(&copy), "{engine:?}");
                assert!(!path.exists(), "{engine:?}: no row names it any more");
                assert_eq!(first["kept"]["files_shared"], 0, "{first:#}");
                continue;
            }
            assert!(rows.contains(&copy), "{engine:?}");
            assert!(
                path.is_file(),
                "{engine:?}: {} is still named",
                path.display()
            );
            assert_eq!(first["kept"]["files_shared"], 1, "{first:#}");
            store
                .execute(&format!(
                    "UPDATE remote_media_cache SET last_access_ts = 1000 WHERE media_id = '{copy}'"
                ))
                .await;
            let second = purge();
            assert_eq!(second["media_deleted"], 1, "{second:#}");
            assert!(!path.exists(), "{engine:?}: the last row naming it went");
        }
    }
}

#[tokio::test]
async fn purge_local_keeps_avatars_quarantined_protected_recent_and_small_media() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        let protected = media_id(engine, "carol_blob");
        let recent = media_id(engine, "bob_notes");
        store
            .execute(&format!(
                "UPDATE local_media_repository SET safe_from_quarantine = TRUE \
                 WHERE media_id = '{protected}'; \
                 UPDATE local_media_repository SET last_access_ts = {now} \
                 WHERE media_id = '{recent}'; \
                 INSERT INTO local_media_repository (media_id, media_type, media_length, \
                 created_ts, url_cache, safe_from_quarantine, authenticated) VALUES \
                 ('2026-01-01_PreviewImage01', 'image/png', 64, 1000, 'https://example.org/', \
                 FALSE, FALSE); \
                 INSERT INTO local_media_repository_url_cache (url, response_code, expires_ts, \
                 media_id, download_ts) VALUES ('https://example.org/', 200, 2000, \
                 '2026-01-01_PreviewImage01', 1000);",
                now = now_ms()
            ))
            .await;
        let preview = store
            .media_store
            .join("url_cache/2026-01-01/PreviewImage01");
        let preview_thumbnail = store
            .media_store
            .join("url_cache_thumbnails/2026-01-01/PreviewImage01/32-32-image-png-crop");
        for file in [&preview, &preview_thumbnail] {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, b"12345").unwrap();
        }
        let before = now_ms() - 60_000;
        let expected = expected_local_purge(&store, before, 30).await;
        assert_purged(
            &store,
            &[
                "purge",
                "local",
                "--before",
                &before.to_string(),
                "--size-gt",
                "30",
            ],
            &expected,
        )
        .await;
        let left = store
            .lines("SELECT media_id FROM local_media_repository")
            .await;
        let mut kept: BTreeSet<String> = [
            "alice_avatar",
            "bob_room_avatar",
            "carol_profile_avatar",
            "carol_member_avatar",
            "alice_quarantined",
            "alice_never_uploaded",
            // 23 bytes: not larger than --size-gt 30.
            "carol_unicode_name",
        ]
        .iter()
        .map(|label| media_id(engine, label))
        .collect();
        kept.extend([protected, recent]);
        assert_eq!(left, kept, "{engine:?}");
        assert!(!preview.exists() && !preview_thumbnail.exists());
        assert!(
            store
                .lines("SELECT media_id FROM local_media_repository_url_cache")
                .await
                .is_empty(),
            "the URL-cache row of a purged preview goes with it"
        );
    }
}

#[tokio::test]
async fn purge_local_without_keep_avatars_deletes_avatars_too() {
    let store = copy_fixture(Engine::Sqlite).await;
    let before = now_ms();
    let out = store
        .command(&[
            "purge",
            "local",
            "--before",
            &before.to_string(),
            "--keep-avatars=false",
        ])
        .assert_exit(0);
    let report = report(&out);
    assert_eq!(report["kept"]["avatar"], 0);
    let left = store
        .lines("SELECT media_id FROM local_media_repository")
        .await;
    let avatar = media_id(Engine::Sqlite, "alice_avatar");
    assert!(!left.contains(&avatar), "{left:?}");
    assert!(left.contains(&media_id(Engine::Sqlite, "alice_quarantined")));
}

#[tokio::test]
async fn a_journal_left_by_a_killed_run_is_finished_by_the_next_and_checked_against_the_rows() {
    for engine in ENGINES {
        finishes_a_journal_against_the_rows(engine).await;
    }
}

/// The journal test on one engine.
async fn finishes_a_journal_against_the_rows(engine: Engine) {
    let store = copy_fixture(engine).await;
    let text = std::fs::read_to_string(fixture(engine).join("expected.json")).unwrap();
    let fixture_json: Value = serde_json::from_str(&text).unwrap();
    let remote = |label: &str| {
        fixture_json["remote_media"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["label"] == label)
            .unwrap()
            .clone()
    };
    let (committed, uncommitted) = (remote("remote_image"), remote("remote_text"));
    let origin = committed["origin"].as_str().unwrap();
    // The killed run had committed remote_image's deletion, not remote_text's.
    store
        .execute(&format!(
            "DELETE FROM remote_media_cache WHERE media_id = '{id}'; \
             DELETE FROM remote_media_cache_thumbnails WHERE media_id = '{id}'",
            id = committed["media_id"].as_str().unwrap()
        ))
        .await;
    let line = |m: &Value| {
        format!(
            "remote\t{origin}\t{}\t{}\n",
            m["media_id"].as_str().unwrap(),
            m["filesystem_id"].as_str().unwrap()
        )
    };
    std::fs::write(
        store.media_store.join(JOURNAL),
        format!(
            "{}{}remote\t{origin}\t../../etc\tpasswd\n",
            line(&committed),
            line(&uncommitted)
        ),
    )
    .unwrap();
    let files_before = store.files();
    // A cutoff that selects nothing: only the journal is acted on.
    let out = store
        .command(&["purge", "remote", "--before", "1000"])
        .assert_exit(1);
    let report = report(&out);
    assert_eq!(report["recovered"]["media"], 1, "{report:#}");
    assert_eq!(
        report["failures"]["by_reason"]["unreadable_journal_entry"], 1,
        "{report:#}"
    );
    let files_after = store.files();
    let gone: Vec<&String> = files_before
        .keys()
        .filter(|f| *f != JOURNAL && !files_after.contains_key(*f))
        .collect();
    let committed_path = committed["path"].as_str().unwrap();
    let committed_thumbnails = committed_path.replace("remote_content", "remote_thumbnail");
    assert!(!gone.is_empty());
    assert!(
        gone.iter()
            .all(|f| *f == committed_path || f.starts_with(&committed_thumbnails)),
        "{gone:?}"
    );
    assert_eq!(
        report["recovered"]["files"].as_u64().unwrap(),
        gone.len() as u64
    );
    assert!(
        store
            .media_store
            .join(uncommitted["path"].as_str().unwrap())
            .exists()
    );
    assert_eq!(store.empty_folders(), Vec::<String>::new());
    assert!(!store.media_store.join(JOURNAL).exists());
}

#[tokio::test]
async fn a_second_purge_of_the_same_store_is_refused_while_one_runs() {
    let store = copy_fixture(Engine::Sqlite).await;
    let journal = std::fs::File::create(store.media_store.join(JOURNAL)).unwrap();
    rustix::fs::flock(&journal, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let rows = store.media_rows().await;
    let out = store
        .command(&["purge", "remote", "--before", &now_ms().to_string()])
        .assert_exit(2);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("another synapse_media run"), "{text}");
    assert_eq!(store.media_rows().await, rows);
}

/// A generated store with `media` media, half of them remote, small files.
async fn synthetic(dir: &Path, media: usize) -> media_tests::synthetic_synapse::SyntheticStore {
    let spec = SyntheticSpec {
        min_size: 256,
        max_size: 1024,
        remote_ratio: 0.5,
        ..SyntheticSpec::small_media(media)
    };
    write_synapse_sqlite(dir, &spec).await
}

#[tokio::test]
async fn a_killed_purge_converges_on_the_next_run_to_the_uninterrupted_end_state() {
    const MEDIA: usize = 3_000;
    let before = now_ms().to_string();
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = synthetic(reference_dir.path(), MEDIA).await;
    let reference = Store {
        db_url: format!("sqlite://{}", reference.sqlite_path.display()),
        media_store: reference.media_store.clone(),
        dir: reference_dir,
        postgres: None,
    };
    reference
        .command(&["purge", "remote", "--before", &before])
        .assert_exit(0);
    let reference_rows = reference.media_rows().await;
    let reference_files = reference.files();
    assert!(reference_rows.iter().all(|r| r.starts_with("local")));

    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let generated = synthetic(dir.path(), MEDIA).await;
        let (db_url, postgres) = match engine {
            Engine::Sqlite => (
                format!("sqlite://{}", generated.sqlite_path.display()),
                None,
            ),
            Engine::Postgres => {
                let database = TestDatabase::postgres().await;
                copy_into_postgres(&generated, &database.url).await;
                (database.url.clone(), Some(database))
            }
        };
        let store = Store {
            db_url,
            media_store: generated.media_store.clone(),
            dir,
            postgres,
        };
        let count = "SELECT CAST(COUNT(*) AS TEXT) FROM remote_media_cache";
        let remote_rows =
            |lines: BTreeSet<String>| -> i64 { lines.into_iter().next().unwrap().parse().unwrap() };
        let total = remote_rows(store.lines(count).await);
        let mut interrupted_at = Vec::new();
        for _ in 0..2 {
            let left = remote_rows(store.lines(count).await);
            let mut child = std::process::Command::new(media_tests::binary("synapse_media"))
                .args(["--synapse-db", &store.db_url, "--media-store"])
                .arg(&store.media_store)
                .args(["purge", "remote", "--before", &before, "-q"])
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            // SIGKILL as soon as this run has committed a batch.
            while remote_rows(store.lines(count).await) >= left
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            child.kill().unwrap();
            child.wait().unwrap();
            interrupted_at.push(remote_rows(store.lines(count).await));
        }
        assert!(
            interrupted_at[0] > 0 && interrupted_at[0] < total,
            "{engine:?}: the first run was not interrupted mid-way: {interrupted_at:?} of {total}"
        );
        let last = report(
            &store
                .command(&["purge", "remote", "--before", &before])
                .assert_exit(0),
        );
        assert_eq!(store.media_rows().await, reference_rows, "{engine:?}");
        assert_eq!(
            store.files(),
            reference_files,
            "{engine:?}: killed at {interrupted_at:?}, then {last:#}"
        );
        assert_eq!(store.empty_folders(), Vec::<String>::new(), "{engine:?}");
        assert!(!store.media_store.join(JOURNAL).exists());
    }
}

#[tokio::test]
async fn a_link_where_a_purged_media_keeps_its_thumbnails_is_listed_and_not_followed() {
    let engine = Engine::Sqlite;
    let store = copy_fixture(engine).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("32-32-image-png-crop"),
        b"not Synapse's",
    )
    .unwrap();
    let text = std::fs::read_to_string(fixture(engine).join("expected.json")).unwrap();
    let fixture_json: Value = serde_json::from_str(&text).unwrap();
    let image = fixture_json["remote_media"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["label"] == "remote_image")
        .unwrap()
        .clone();
    let thumbnails = store.media_store.join(
        image["path"]
            .as_str()
            .unwrap()
            .replace("remote_content", "remote_thumbnail"),
    );
    std::fs::remove_dir_all(&thumbnails).unwrap();
    std::os::unix::fs::symlink(outside.path(), &thumbnails).unwrap();
    let out = store
        .command(&["purge", "remote", "--before", &now_ms().to_string()])
        .assert_exit(1);
    let report = report(&out);
    let listed = &report["failures"]["listed"][0];
    assert_eq!(listed["reason"], "file_not_removed", "{report:#}");
    assert_eq!(listed["item"], image["mxc"]);
    assert!(outside.path().join("32-32-image-png-crop").exists());
    // The other media went.
    assert_eq!(report["media_deleted"], 4, "{report:#}");
}

#[tokio::test]
async fn the_same_rows_and_files_go_as_with_synapses_own_admin_api_and_no_empty_folder_stays() {
    let ours = copy_fixture(Engine::Sqlite).await;
    let theirs = copy_fixture(Engine::Sqlite).await;
    let before = (now_ms() - 86_400_000).to_string();

    let synapse = LiveSynapse::serve(theirs.dir.path(), None);
    let remote = synapse.admin(
        "POST",
        &format!("/_synapse/admin/v1/purge_media_cache?before_ts={before}"),
        &serde_json::json!({}),
    );
    let local = synapse.admin(
        "POST",
        &format!("/_synapse/admin/v1/media/delete?before_ts={before}&keep_profiles=true"),
        &serde_json::json!({}),
    );
    drop(synapse);

    let remote_report = report(
        &ours
            .command(&["purge", "remote", "--before", &before])
            .assert_exit(0),
    );
    let local_report = report(
        &ours
            .command(&["purge", "local", "--before", &before])
            .assert_exit(0),
    );
    assert_eq!(remote_report["media_deleted"], remote["deleted"]);
    assert_eq!(local_report["media_deleted"], local["total"]);
    assert_eq!(ours.media_rows().await, theirs.media_rows().await);
    assert_eq!(ours.files(), theirs.files(), "the same files go");
    assert_eq!(ours.empty_folders(), Vec::<String>::new());
    assert!(
        !theirs.empty_folders().is_empty(),
        "Synapse leaves the emptied folders (issues #7690, #16229): this test would not tell"
    );
}

#[test]
fn the_tool_answers_help_and_version_and_refuses_what_it_cannot_use_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let help = TestCommand::new("synapse_media")
        .args(["purge", "remote", "--help"])
        .current_dir(dir.path())
        .assert_exit(0);
    let text = String::from_utf8(help.stdout).unwrap();
    for wanted in [
        "--before",
        "--older-than",
        "--dry-run",
        "--json",
        "--synapse-db",
    ] {
        assert!(text.contains(wanted), "no {wanted} in\n{text}");
    }
    let version = TestCommand::new("synapse_media")
        .arg("--version")
        .current_dir(dir.path())
        .assert_exit(0);
    assert!(
        String::from_utf8(version.stdout)
            .unwrap()
            .starts_with("synapse_media")
    );
    let missing = dir.path().join("missing.db");
    for (args, says) in [
        (vec!["purge", "remote"], "--before"),
        (
            vec!["purge", "remote", "--before", "yesterday"],
            "not a point in time",
        ),
        (
            vec!["purge", "remote", "--before", "1d", "--json"],
            "--synapse-db",
        ),
        (
            vec![
                "--synapse-db",
                missing.to_str().unwrap(),
                "--media-store",
                dir.path().to_str().unwrap(),
                "purge",
                "local",
                "--before",
                "1d",
            ],
            "no such file",
        ),
    ] {
        let out = TestCommand::new("synapse_media")
            .args(&args)
            .current_dir(dir.path())
            .assert_exit(2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// The categories of a check report that are problems, with their findings.
const CHECK_CATEGORIES: [&str; 6] = [
    "orphan_files",
    "orphan_thumbnails",
    "stray_files",
    "empty_folders",
    "rows_without_files",
    "not_regular",
];

/// The items a check report lists in `category`.
fn listed(report: &Value, category: &str) -> BTreeSet<String> {
    report[category]["listed"]
        .as_array()
        .unwrap_or_else(|| panic!("no {category} in {report:#}"))
        .iter()
        .map(|item| item.as_str().unwrap().to_owned())
        .collect()
}

/// A moment after every file planted so far: they all count as settled.
fn settled_now() -> String {
    (now_ms() + 60_000).to_string()
}

#[tokio::test]
async fn check_finds_nothing_on_a_pristine_store_and_recognises_the_purge_journal() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        let clean = report(
            &store
                .command(&["check", "--settled-before", &settled_now()])
                .assert_exit(0),
        );
        for category in CHECK_CATEGORIES {
            assert_eq!(
                clean[category]["count"], 0,
                "{engine:?} {category}: {clean:#}"
            );
        }
        // 13 uploaded local media with 9 thumbnail folders, 5 remote media with 3
        // (a never-uploaded media has no file to check).
        assert_eq!(clean["media_checked"], 30, "{engine:?}: {clean:#}");
        assert_eq!(clean["dry_run"], true);

        // An interrupted purge's journal is recognised, not taken for a stray file.
        let image = fixture_media(engine, "remote_image");
        std::fs::write(
            store.media_store.join(JOURNAL),
            format!(
                "remote\t{}\t{}\t{}\n",
                image["origin"].as_str().unwrap(),
                image["media_id"].as_str().unwrap(),
                image["filesystem_id"].as_str().unwrap()
            ),
        )
        .unwrap();
        let journalled = report(&store.command(&["check"]).assert_exit(1));
        assert_eq!(journalled["interrupted_purge"], 1, "{journalled:#}");
        assert_eq!(journalled["stray_files"]["count"], 0);
        // The empty journal of a purge between batches is nothing to report.
        std::fs::write(store.media_store.join(JOURNAL), "").unwrap();
        let between = report(&store.command(&["check"]).assert_exit(0));
        assert_eq!(between["interrupted_purge"], 0);
    }
}

#[tokio::test]
async fn check_finds_each_planted_inconsistency_and_fix_repairs_only_what_it_reported() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        let root = store.media_store.clone();
        let origin = fixture_media(engine, "remote_image")["origin"]
            .as_str()
            .unwrap()
            .to_owned();
        let plant = |relative: &str, bytes: &[u8]| {
            let path = root.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        // Files no row names, in local_content and remote_content.
        let local_orphan = "local_content/Zq/Zq/OrphanLocalMediaFile".to_owned();
        let remote_orphan = format!("remote_content/{origin}/Or/ph/anRemoteCacheFile");
        plant(&local_orphan, b"12345");
        plant(&remote_orphan, b"1234567");
        // A partial file beside a real one: a name no Synapse ID has.
        let avatar = fixture_media(engine, "alice_avatar");
        let stray = format!("{}.part", avatar["path"].as_str().unwrap());
        plant(&stray, b"123");
        // An empty folder, as Synapse leaves before a remote fetch succeeds.
        let empty = format!("remote_content/{origin}/Em/pt");
        std::fs::create_dir_all(root.join(&empty)).unwrap();
        // A media whose row is gone: its file and its thumbnail folder are orphans.
        let photo = fixture_media(engine, "alice_photo_1");
        let photo_id = photo["media_id"].as_str().unwrap();
        store
            .execute(&format!(
                "DELETE FROM local_media_repository WHERE media_id = '{photo_id}'; \
                 DELETE FROM local_media_repository_thumbnails WHERE media_id = '{photo_id}'"
            ))
            .await;
        let photo_path = photo["path"].as_str().unwrap().to_owned();
        let photo_thumbnails = photo_path.replace("local_content", "local_thumbnails");
        // A row whose file was lost: the folder it was alone in is left empty.
        let notes = fixture_media(engine, "bob_notes");
        let notes_path = Path::new(notes["path"].as_str().unwrap());
        std::fs::remove_file(root.join(notes_path)).unwrap();
        let emptied = notes_path.parent().unwrap().to_str().unwrap().to_owned();

        let files = store.files();
        let size = |path: &str| files[path];
        let thumbnail_files: Vec<&String> = files
            .keys()
            .filter(|f| f.starts_with(&format!("{photo_thumbnails}/")))
            .collect();
        assert_eq!(thumbnail_files.len(), 4);
        let thumbnail_bytes: u64 = thumbnail_files.iter().map(|f| files[*f]).sum();

        let found = report(
            &store
                .command(&["check", "--settled-before", &settled_now()])
                .assert_exit(1),
        );
        let expected: [(&str, BTreeSet<String>, u64); 6] = [
            (
                "orphan_files",
                BTreeSet::from([
                    local_orphan.clone(),
                    remote_orphan.clone(),
                    photo_path.clone(),
                ]),
                5 + 7 + size(&photo_path),
            ),
            (
                "orphan_thumbnails",
                BTreeSet::from([photo_thumbnails.clone()]),
                thumbnail_bytes,
            ),
            ("stray_files", BTreeSet::from([stray.clone()]), 3),
            ("empty_folders", BTreeSet::from([empty.clone(), emptied]), 0),
            (
                "rows_without_files",
                BTreeSet::from([notes["mxc"].as_str().unwrap().to_owned()]),
                notes["size"].as_u64().unwrap(),
            ),
            ("not_regular", BTreeSet::new(), 0),
        ];
        for (category, items, bytes) in &expected {
            assert_eq!(&listed(&found, category), items, "{engine:?} {category}");
            assert_eq!(found[category]["bytes"], *bytes, "{engine:?} {category}");
            assert_eq!(found[category]["fixed"], 0, "{engine:?} {category}");
        }

        // Fresh entries may be a write in progress: by default a fix leaves them.
        let rows_before = store.media_rows().await;
        let young = report(&store.command(&["check", "--fix"]).assert_exit(1));
        assert_eq!(young["recent"]["count"], 7, "{engine:?}: {young:#}");
        assert_eq!(
            store.files(),
            files,
            "{engine:?}: nothing recent is removed"
        );

        let fixed = report(
            &store
                .command(&["check", "--fix", "--settled-before", &settled_now()])
                .assert_exit(1),
        );
        for (category, items, _) in &expected {
            let repaired = if *category == "rows_without_files" {
                0
            } else {
                items.len()
            };
            assert_eq!(fixed[category]["fixed"], repaired, "{engine:?} {category}");
        }
        assert_eq!(
            store.media_rows().await,
            rows_before,
            "{engine:?}: no row changes"
        );
        let after = store.files();
        let gone: BTreeSet<String> = files
            .keys()
            .filter(|f| !after.contains_key(*f))
            .cloned()
            .collect();
        let mut wanted: BTreeSet<String> =
            BTreeSet::from([local_orphan, remote_orphan, photo_path, stray]);
        wanted.extend(thumbnail_files.into_iter().cloned());
        assert_eq!(gone, wanted, "{engine:?}: exactly the reported files go");
        assert!(after.keys().all(|f| files.contains_key(f)));
        assert_eq!(store.empty_folders(), Vec::<String>::new(), "{engine:?}");
        assert!(
            !root.join(JOURNAL).exists(),
            "the fix's own journal is removed"
        );

        let again = report(
            &store
                .command(&["check", "--settled-before", &settled_now()])
                .assert_exit(1),
        );
        for category in CHECK_CATEGORIES {
            let left = if category == "rows_without_files" {
                1
            } else {
                0
            };
            assert_eq!(
                again[category]["count"], left,
                "{engine:?} {category}: {again:#}"
            );
        }
    }
}

#[tokio::test]
async fn check_lists_links_without_following_them_and_fix_leaves_them() {
    let store = copy_fixture(Engine::Sqlite).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(outside.path().join("cd")).unwrap();
    std::fs::write(outside.path().join("cd/orphanfile"), b"not Synapse's").unwrap();
    let link = store.media_store.join("local_content/Li");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    let out = store
        .command(&["check", "--fix", "--settled-before", &settled_now()])
        .assert_exit(1);
    let report = report(&out);
    assert_eq!(
        listed(&report, "not_regular"),
        BTreeSet::from(["local_content/Li".to_owned()])
    );
    assert_eq!(report["orphan_files"]["count"], 0, "{report:#}");
    assert!(outside.path().join("cd/orphanfile").exists());
    assert!(link.is_symlink());
}

/// `mxc://…` of every media row, local and remote, whose sha256 is one of `hashes`
/// (judged here, row by row).
async fn with_hashes(store: &Store, hashes: &BTreeSet<String>) -> BTreeSet<String> {
    let mut conn = any_connection(&store.db_url).await;
    let mut found = BTreeSet::new();
    for (sql, local) in [
        (
            "SELECT '' AS origin, media_id, sha256 FROM local_media_repository",
            true,
        ),
        (
            "SELECT media_origin AS origin, media_id, sha256 FROM remote_media_cache",
            false,
        ),
    ] {
        for row in sqlx::query(sql).fetch_all(&mut conn).await.unwrap() {
            let sha256: Option<String> = row.get("sha256");
            if sha256.is_some_and(|h| hashes.contains(&h)) {
                let origin: String = row.get("origin");
                let origin = if local { SERVER.to_owned() } else { origin };
                found.insert(format!(
                    "mxc://{origin}/{}",
                    row.get::<String, _>("media_id")
                ));
            }
        }
    }
    conn.close().await.ok();
    found
}

/// The sha256 Synapse recorded for a fixture media.
fn sha256_of(engine: Engine, label: &str) -> String {
    fixture_media(engine, label)["sha256"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn listed_mxcs(report: &Value, field: &str) -> BTreeSet<String> {
    report[field]["listed"]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {report:#}"))
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn quarantine_spreads_to_every_media_with_the_same_hash_and_never_to_a_protected_one() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        let mxc = |label: &str| {
            fixture_media(engine, label)["mxc"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let (alice, bob, remote) = (
            mxc("alice_shared"),
            mxc("bob_shared"),
            mxc("remote_shared_copy"),
        );
        let protected = report(&store.command(&["protect", &bob]).assert_exit(0));
        assert_eq!(
            listed_mxcs(&protected, "changed"),
            BTreeSet::from([bob.clone()])
        );
        assert_eq!(
            store
                .lines(
                    "SELECT media_id FROM local_media_repository \
                     WHERE CASE WHEN safe_from_quarantine THEN 1 ELSE 0 END = 1"
                )
                .await,
            BTreeSet::from([fixture_media(engine, "bob_shared")["media_id"]
                .as_str()
                .unwrap()
                .to_owned()]),
            "{engine:?}: protect sets safe_from_quarantine on that media only"
        );

        let before = quarantined(&store).await;
        let changes = "SELECT CAST(COUNT(*) AS TEXT) FROM quarantined_media_changes";
        let changes_before = store.lines(changes).await;
        let args = [
            "quarantine",
            "--by",
            "@admin:fixture.test",
            "media",
            alice.as_str(),
        ];
        let dry = report(
            &store
                .command(&[&args[..], &["--dry-run"]].concat())
                .assert_exit(0),
        );
        assert_eq!(
            quarantined(&store).await,
            before,
            "{engine:?}: a dry run changes nothing"
        );
        let real = report(&store.command(&args).assert_exit(0));
        // Independently: every row with alice_shared's hash, but the protected one.
        let mut expected =
            with_hashes(&store, &BTreeSet::from([sha256_of(engine, "alice_shared")])).await;
        assert_eq!(
            expected,
            BTreeSet::from([alice.clone(), bob.clone(), remote.clone()])
        );
        expected.remove(&bob);
        let after = quarantined(&store).await;
        assert_eq!(
            after.difference(&before).cloned().collect::<BTreeSet<_>>(),
            expected,
            "{engine:?}"
        );
        for report in [&dry, &real] {
            assert_eq!(
                listed_mxcs(report, "changed"),
                expected,
                "{engine:?}: {report:#}"
            );
            assert_eq!(report["changed_by_hash"], 1, "{engine:?}");
            assert_eq!(
                listed_mxcs(report, "protected"),
                BTreeSet::from([bob.clone()])
            );
        }
        assert_eq!(
            store
                .lines(&format!(
                    "SELECT quarantined_by FROM remote_media_cache WHERE media_id = '{}'",
                    remote.rsplit('/').next().unwrap()
                ))
                .await,
            BTreeSet::from(["@admin:fixture.test".to_owned()])
        );
        let recorded: i64 = store
            .lines(changes)
            .await
            .pop_first()
            .unwrap()
            .parse()
            .unwrap();
        let recorded_before: i64 = changes_before.into_iter().next().unwrap().parse().unwrap();
        assert_eq!(
            recorded - recorded_before,
            2,
            "{engine:?}: each change is streamed"
        );

        // Again: already quarantined; the protected media named directly stays out.
        let again = report(&store.command(&args).assert_exit(0));
        assert_eq!(
            (
                again["changed"]["count"].as_u64(),
                again["already"]["count"].as_u64()
            ),
            (Some(0), Some(2))
        );
        let direct = report(
            &store
                .command(&["quarantine", "--by", "@admin:fixture.test", "media", &bob])
                .assert_exit(0),
        );
        assert_eq!(
            listed_mxcs(&direct, "protected"),
            BTreeSet::from([bob.clone()])
        );
        assert!(!quarantined(&store).await.contains(&bob), "{engine:?}");

        // Unknown media are listed failures.
        let missing = format!("mxc://{SERVER}/NoSuchMediaAtAll");
        let out = store
            .command(&[
                "quarantine",
                "--by",
                "@admin:fixture.test",
                "media",
                &missing,
            ])
            .assert_exit(1);
        assert_eq!(report(&out)["failures"]["by_reason"]["not_found"], 1);

        // Unquarantining the remote copy frees its hash everywhere.
        store
            .command(&["unquarantine", "media", &remote])
            .assert_exit(0);
        assert_eq!(quarantined(&store).await, before, "{engine:?}");
    }
}

#[tokio::test]
async fn quarantine_of_a_user_or_a_room_selects_the_media_synapse_selects() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        // A user's uploads not yet quarantined, with their hash-mates.
        let mut conn = any_connection(&store.db_url).await;
        let carol: Vec<(String, Option<String>)> = sqlx::query(
            "SELECT media_id, sha256 FROM local_media_repository \
             WHERE user_id = '@carol:fixture.test' AND quarantined_by IS NULL",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get("media_id"), row.get("sha256")))
        .collect();
        // A room's events with URLs: content.url and content.info.thumbnail_url.
        let events = sqlx::query(
            "SELECT j.json FROM events AS e JOIN event_json AS j ON j.event_id = e.event_id \
             WHERE e.contains_url = TRUE AND e.outlier = FALSE",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        conn.close().await.ok();
        let mut room_mxcs = BTreeSet::new();
        for row in events {
            let event: Value = serde_json::from_str(&row.get::<String, _>("json")).unwrap();
            for url in [
                &event["content"]["url"],
                &event["content"]["info"]["thumbnail_url"],
            ] {
                if let Some(url) = url.as_str() {
                    room_mxcs.insert(url.to_owned());
                }
            }
        }
        assert!(!room_mxcs.is_empty() && !carol.is_empty());

        let before = quarantined(&store).await;
        let hashes: BTreeSet<String> = carol.iter().filter_map(|(_, h)| h.clone()).collect();
        let mut expected = with_hashes(&store, &hashes).await;
        expected.extend(carol.iter().map(|(id, _)| format!("mxc://{SERVER}/{id}")));
        store
            .command(&[
                "quarantine",
                "--by",
                "@admin:fixture.test",
                "user",
                "@carol:fixture.test",
            ])
            .assert_exit(0);
        let after = quarantined(&store).await;
        assert_eq!(
            after.difference(&before).cloned().collect::<BTreeSet<_>>(),
            expected,
            "{engine:?}"
        );

        let room = &fixture_media_rooms(engine)[0];
        let mut room_hashes = BTreeSet::new();
        for label in ["alice_photo_1", "bob_room_avatar"] {
            if room_mxcs.contains(fixture_media(engine, label)["mxc"].as_str().unwrap()) {
                room_hashes.insert(sha256_of(engine, label));
            }
        }
        assert_eq!(room_hashes.len(), 2, "{engine:?}: {room_mxcs:?}");
        let mut expected = with_hashes(&store, &room_hashes).await;
        expected.extend(room_mxcs);
        let out = store
            .command(&[
                "quarantine",
                "--by",
                "@admin:fixture.test",
                "room",
                room,
                "--dry-run",
            ])
            .assert_exit(0);
        let dry = report(&out);
        let expected: BTreeSet<String> = expected.difference(&after).cloned().collect();
        assert_eq!(listed_mxcs(&dry, "changed"), expected, "{engine:?}");
        store
            .command(&["quarantine", "--by", "@admin:fixture.test", "room", room])
            .assert_exit(0);
        let last = quarantined(&store).await;
        assert_eq!(
            last.difference(&after).cloned().collect::<BTreeSet<_>>(),
            expected
        );
    }
}

/// The fixture's room IDs.
fn fixture_media_rooms(engine: Engine) -> Vec<String> {
    let text = std::fs::read_to_string(fixture(engine).join("expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    expected["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|room| room["room_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The `mxc` of every media a listing lists.
fn listed_media(listing: &Value) -> BTreeSet<String> {
    listing["media"]
        .as_array()
        .unwrap_or_else(|| panic!("no media in {listing:#}"))
        .iter()
        .map(|m| m["mxc"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn media_list_and_show_answer_what_the_database_holds() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        let alice = store
            .lines(&format!(
                "SELECT 'mxc://{SERVER}/' || media_id FROM local_media_repository \
                 WHERE user_id = '@alice:fixture.test'"
            ))
            .await;
        let by_user = report(
            &store
                .command(&["media", "list", "--user", "@alice:fixture.test"])
                .assert_exit(0),
        );
        assert_eq!(listed_media(&by_user), alice, "{engine:?}");

        let room = &fixture_media_rooms(engine)[0];
        let in_room = report(
            &store
                .command(&["media", "list", "--room", room])
                .assert_exit(0),
        );
        let expected: BTreeSet<String> = ["alice_photo_1", "bob_room_avatar"]
            .iter()
            .map(|label| {
                fixture_media(engine, label)["mxc"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(listed_media(&in_room), expected, "{engine:?}");

        let remote = fixture_media(engine, "remote_image");
        let shown = report(
            &store
                .command(&["media", "show", remote["mxc"].as_str().unwrap()])
                .assert_exit(0),
        );
        assert_eq!(shown["media"][0]["sha256"], remote["sha256"]);
        assert_eq!(
            shown["thumbnails"].as_array().unwrap().len(),
            remote["thumbnails"].as_array().unwrap().len(),
            "{engine:?}"
        );
        let missing = format!("mxc://{SERVER}/NoSuchMediaAtAll");
        let out = store.command(&["media", "show", &missing]).assert_exit(1);
        assert_eq!(report(&out)["failures"]["by_reason"]["not_found"], 1);
    }
}

/// The (origin, media ID, quarantined) of each change of a quarantine-changes page, and
/// its next batch. Synapse on SQLite answers `quarantined` as 1 or 0 (the column is an
/// integer there), so a number is read as a flag.
fn changes_page(page: &Value) -> (Vec<(String, String, bool)>, i64) {
    let changes = page["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changes in {page:#}"))
        .iter()
        .map(|c| {
            (
                c["origin"].as_str().unwrap().to_owned(),
                c["media_id"].as_str().unwrap().to_owned(),
                c["quarantined"]
                    .as_bool()
                    .or_else(|| c["quarantined"].as_u64().map(|n| n == 1))
                    .unwrap_or_else(|| panic!("quarantined: {c}")),
            )
        })
        .collect();
    (changes, page["next_batch"].as_i64().unwrap())
}

#[tokio::test]
async fn quarantine_changes_are_listed_as_synapses_admin_api_lists_them() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        // Changes of our own after Synapse's: a quarantine that spreads by hash, undone.
        let alice = fixture_media(engine, "alice_shared")["mxc"]
            .as_str()
            .unwrap()
            .to_owned();
        store
            .command(&["quarantine", "--by", "@admin:fixture.test", "media", &alice])
            .assert_exit(0);
        store
            .command(&["unquarantine", "media", &alice])
            .assert_exit(0);

        let synapse = LiveSynapse::serve(store.dir.path(), store.postgres.as_ref());
        let (mut theirs, mut their_next) = (Vec::new(), 0);
        loop {
            let page = synapse.admin(
                "GET",
                &format!("/_synapse/admin/v1/media/quarantine_changes?from={their_next}"),
                &serde_json::json!({}),
            );
            let (changes, next) = changes_page(&page);
            their_next = next;
            if changes.is_empty() {
                break;
            }
            theirs.extend(changes);
        }
        drop(synapse);

        // Ours, two at a time, following next_batch while more follow.
        let (mut ours, mut our_next, mut pages) = (Vec::new(), 0, 0);
        loop {
            let page = report(
                &store
                    .command(&[
                        "quarantine-changes",
                        "--from",
                        &our_next.to_string(),
                        "--limit",
                        "2",
                    ])
                    .assert_exit(0),
            );
            let (changes, next) = changes_page(&page);
            assert!(changes.len() <= 2, "{engine:?}: {page:#}");
            assert!(
                page["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| c["quarantined"].is_boolean()),
                "{engine:?}: ours are true or false on every engine: {page:#}"
            );
            (our_next, pages) = (next, pages + 1);
            ours.extend(changes);
            if page["more"] != true {
                break;
            }
        }
        assert_eq!(ours, theirs, "{engine:?}");
        assert_eq!(
            our_next, their_next,
            "{engine:?}: where the next batch starts"
        );
        assert!(pages > 2, "{engine:?}: the listing was paged");
        let alice_id = alice.rsplit('/').next().unwrap();
        let ours_for_alice: Vec<bool> = ours
            .iter()
            .filter(|(_, id, _)| id == alice_id)
            .map(|(_, _, quarantined)| *quarantined)
            .collect();
        assert_eq!(
            ours_for_alice,
            [true, false],
            "{engine:?}: our quarantine and unquarantine are in the stream, in order"
        );

        // Past the end: nothing, and the next batch stays.
        let past = report(
            &store
                .command(&["quarantine-changes", "--from", &our_next.to_string()])
                .assert_exit(0),
        );
        assert_eq!(changes_page(&past), (Vec::new(), our_next), "{engine:?}");
        assert_eq!(past["more"], false);
    }

    // A Synapse before 1.152 keeps no change stream: a usage error that says so.
    let old = copy_fixture(Engine::Sqlite).await;
    let mut conn = any_connection(&old.db_url).await;
    sqlx::query("DROP TABLE quarantined_media_changes")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let out = old.command(&["quarantine-changes"]).assert_exit(2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Synapse before 1.152"), "{stderr}");
}
