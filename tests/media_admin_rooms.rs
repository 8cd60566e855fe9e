//! End-to-end: rooms. `import_synapse --include rooms` records which rooms hold which
//! media from Synapse's events; `media_admin purge room` and `quarantine room` /
//! `unquarantine room` act on them. The real binaries against repositories (SQLite and
//! PostgreSQL) filled from the real-Synapse fixture, whose one room holds a photo (whose
//! bytes another media shares) and the room's avatar (pinned by the import).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use media_tests::admin::{
    Row, admin, assert_store_matches_rows, contents_without, figures, import_fixture, media_rows,
    strings,
};
use media_tests::{TestDatabase, any_connection, report, repository_contents, walk_blobs};

/// The fixture's room.
const ROOM: &str = "!CHtsZYNEgkCZgyHTVo_Ck5w_AxwtFhsMW70LiBIsppk";

/// The kinds the import reads without rooms.
const MEDIA_ONLY: &str = "local,remote,thumbnails,url-previews";

fn fixture_db() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite/homeserver.db")
}

/// Every `room origin/media_id` Synapse's events reference, read straight from the
/// fixture with SQLite's own JSON functions: the URLs of `content.url`,
/// `content.info.thumbnail_url`, `content.file.url` and `content.info.thumbnail_file.url`
/// of the events flagged `contains_url` that are not outliers.
async fn synapse_room_links() -> BTreeSet<String> {
    let url = format!("sqlite://{}?mode=ro", fixture_db().display());
    let mut conn = any_connection(&url).await;
    let mut links = BTreeSet::new();
    for path in [
        "$.content.url",
        "$.content.info.thumbnail_url",
        "$.content.file.url",
        "$.content.info.thumbnail_file.url",
    ] {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT e.room_id, CAST(json_extract(j.json, $1) AS TEXT) AS url FROM events AS e \
             JOIN event_json AS j ON j.event_id = e.event_id \
             WHERE e.contains_url AND NOT e.outlier AND json_extract(j.json, $1) LIKE 'mxc://%'",
        )
        .bind(path)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        links.extend(
            rows.into_iter()
                .map(|(room, url)| format!("{room} {}", url.trim_start_matches("mxc://"))),
        );
    }
    links
}

/// Every `room origin/media_id` the repository records.
async fn recorded_links(repo: &str) -> BTreeSet<String> {
    strings(
        repo,
        "SELECT room_id || ' ' || origin || '/' || media_id FROM room_media",
    )
    .await
}

/// The `origin/media_id` keys recorded in the fixture's room.
async fn room_keys(repo: &str) -> BTreeSet<String> {
    recorded_links(repo)
        .await
        .into_iter()
        .filter_map(|link| Some(link.strip_prefix(ROOM)?.trim().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_import_records_exactly_the_rooms_of_synapse_events_and_a_second_run_adds_nothing() {
    let expected = synapse_room_links().await;
    // The photo and the room's avatar.
    assert_eq!(expected.len(), 2, "{expected:?}");
    for db in TestDatabase::both().await {
        let label = db.label;
        let cwd = tempfile::tempdir().unwrap();
        let store = cwd.path().join("store");
        // Rooms are read by default.
        import_fixture(cwd.path(), &db.url, &store);
        assert_eq!(recorded_links(&db.url).await, expected, "{label}");
        let before = repository_contents(&db.url).await;

        let out = media_tests::import_sqlite_fixture(cwd.path(), &db.url, store.to_str().unwrap())
            .args(["--include", "rooms", "--json"])
            .assert_exit(0);
        let again = report(&out);
        assert_eq!(again["rooms"]["events"], 2, "{label}: {again}");
        assert_eq!(again["rooms"]["references"], 2, "{label}: {again}");
        assert_eq!(again["rooms"]["links_recorded"], 0, "{label}: {again}");
        assert_eq!(again["media_imported"], 0, "{label}: {again}");
        assert_eq!(recorded_links(&db.url).await, expected, "{label}");
        assert_eq!(repository_contents(&db.url).await, before, "{label}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_room_deletes_exactly_the_rooms_unpinned_media_and_its_dry_run_plans_the_same() {
    for db in TestDatabase::both().await {
        let label = db.label;
        let cwd = tempfile::tempdir().unwrap();
        let store = cwd.path().join("store");
        import_fixture(cwd.path(), &db.url, &store);
        let in_room = room_keys(&db.url).await;
        let rows = media_rows(&db.url).await;
        let purged: BTreeSet<String> = rows
            .iter()
            .filter(|r| in_room.contains(&r.key) && !r.pinned && !r.quarantined)
            .map(|r| r.key.clone())
            .collect();
        // The photo goes; the room's avatar is pinned and stays.
        assert_eq!(purged.len(), 1, "{label}: {in_room:?}");
        assert_eq!(in_room.len(), 2, "{label}");
        let before = repository_contents(&db.url).await;
        let files = walk_blobs(&store);

        // Before the photo was created: nothing.
        let out = admin(
            cwd.path(),
            &db.url,
            &[
                "purge",
                "room",
                ROOM,
                "--before",
                "1795529829000",
                "--dry-run",
            ],
        )
        .assert_exit(0);
        assert_eq!(report(&out)["media"], 0, "{label}");

        let out = admin(cwd.path(), &db.url, &["purge", "room", ROOM, "--dry-run"]).assert_exit(0);
        let plan = report(&out);
        assert_eq!(plan["mode"], "dry_run", "{label}");
        assert_eq!(plan["notice"], serde_json::Value::Null, "{label}");
        assert_eq!(repository_contents(&db.url).await, before, "{label}");
        assert_eq!(walk_blobs(&store), files, "{label}");

        let out = admin(cwd.path(), &db.url, &["purge", "room", ROOM]).assert_exit(0);
        let done = report(&out);
        assert_eq!(figures(&done), figures(&plan), "{label}: {done}");
        assert_eq!(done["media"], purged.len() as u64, "{label}: {done}");
        assert_eq!(done["params"]["room"], ROOM, "{label}: {done}");
        assert_eq!(
            repository_contents(&db.url).await,
            contents_without(&before, &purged),
            "{label}"
        );
        assert_store_matches_rows(&db.url, &store, label).await;
        let freed = files.len() - walk_blobs(&store).len();
        assert_eq!(done["blobs_freed"], freed as u64, "{label}");

        // The record of what the room held stays; nothing is left to purge.
        assert_eq!(room_keys(&db.url).await, in_room, "{label}");
        let out = admin(cwd.path(), &db.url, &["purge", "room", ROOM]).assert_exit(0);
        assert_eq!(report(&out)["media"], 0, "{label}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn quarantine_room_propagates_to_shared_bytes_and_skips_pinned_media() {
    for db in TestDatabase::both().await {
        let label = db.label;
        let cwd = tempfile::tempdir().unwrap();
        let store = cwd.path().join("store");
        import_fixture(cwd.path(), &db.url, &store);
        let in_room = room_keys(&db.url).await;
        let rows = media_rows(&db.url).await;
        let digests: BTreeSet<&str> = rows
            .iter()
            .filter(|r| in_room.contains(&r.key))
            .map(|r| r.sha256.as_str())
            .collect();
        let sharing = |r: &&Row| digests.contains(r.sha256.as_str());
        let quarantined = |rows: &[Row]| -> BTreeSet<String> {
            rows.iter()
                .filter(|r| r.quarantined)
                .map(|r| r.key.clone())
                .collect()
        };
        let initially = quarantined(&rows);
        let pinned: BTreeSet<String> = rows
            .iter()
            .filter(sharing)
            .filter(|r| r.pinned)
            .map(|r| format!("mxc://{}", r.key))
            .collect();
        let changed: BTreeSet<String> = rows
            .iter()
            .filter(sharing)
            .filter(|r| !r.pinned && !r.quarantined)
            .map(|r| r.key.clone())
            .collect();
        // The photo and another media holding its bytes, outside the room.
        assert!(
            changed.iter().any(|k| !in_room.contains(k)),
            "{label}: no media shares the bytes of the room's media: {changed:?}"
        );
        assert!(!pinned.is_empty(), "{label}");

        let out = admin(
            cwd.path(),
            &db.url,
            &["quarantine", "room", ROOM, "--by", "@admin:fixture.test"],
        )
        .assert_exit(0);
        let done = report(&out);
        assert_eq!(done["target"], format!("room {ROOM}"), "{label}: {done}");
        assert_eq!(
            done["media_walked"],
            in_room.len() as u64,
            "{label}: {done}"
        );
        assert_eq!(
            done["media_changed"],
            changed.len() as u64,
            "{label}: {done}"
        );
        let listed: BTreeSet<String> = done["pinned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed, pinned, "{label}: {done}");
        let mut expected = initially.clone();
        expected.extend(changed.iter().cloned());
        assert_eq!(quarantined(&media_rows(&db.url).await), expected, "{label}");

        // Lifting it lifts every unpinned media holding those bytes.
        admin(cwd.path(), &db.url, &["unquarantine", "room", ROOM]).assert_exit(0);
        let lifted: BTreeSet<String> = initially
            .iter()
            .filter(|k| !rows.iter().any(|r| &&r.key == k && sharing(&r)))
            .cloned()
            .collect();
        assert_eq!(quarantined(&media_rows(&db.url).await), lifted, "{label}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_room_without_recorded_media_is_said_plainly_and_changes_nothing() {
    for db in TestDatabase::both().await {
        let label = db.label;
        let cwd = tempfile::tempdir().unwrap();
        let store = cwd.path().join("store");
        media_tests::import_sqlite_fixture(cwd.path(), &db.url, store.to_str().unwrap())
            .args(["-q", "--include", MEDIA_ONLY])
            .assert_exit(1);
        assert!(recorded_links(&db.url).await.is_empty(), "{label}");
        let before = repository_contents(&db.url).await;
        for args in [
            &["purge", "room", ROOM][..],
            &["purge", "room", ROOM, "--dry-run"],
            &["quarantine", "room", ROOM],
            &["unquarantine", "room", ROOM],
        ] {
            let out = admin(cwd.path(), &db.url, args).assert_exit(0);
            let done = report(&out);
            let notice = done["notice"].as_str().unwrap_or_default();
            assert!(
                notice.contains("--include rooms"),
                "{label} {args:?}: {done}"
            );
            for counter in ["media", "media_walked", "media_changed"] {
                if let Some(n) = done.get(counter) {
                    assert_eq!(n, 0, "{label} {args:?}: {done}");
                }
            }
            assert_eq!(repository_contents(&db.url).await, before, "{label}");
        }
        // The text report says it too.
        let out = media_tests::TestCommand::new("media_admin")
            .args(["purge", "room", ROOM, "--repo-db", &db.url])
            .current_dir(cwd.path())
            .assert_exit(0);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("no media recorded for room") && text.contains("--include rooms"),
            "{label}: {text}"
        );

        // `--include rooms` alone records them for the media imported before.
        let out = media_tests::import_sqlite_fixture(cwd.path(), &db.url, store.to_str().unwrap())
            .args(["--include", "rooms", "--json"])
            .assert_exit(0);
        assert_eq!(report(&out)["rooms"]["links_recorded"], 2, "{label}");
        assert_eq!(
            recorded_links(&db.url).await,
            synapse_room_links().await,
            "{label}"
        );
        assert_eq!(repository_contents(&db.url).await, before, "{label}");
    }
}

/// `import_synapse` of a synthetic store (its database: `synapse_db`) into `repo`, with
/// `include`; the JSON report.
fn import_synthetic(
    cwd: &Path,
    synapse_db: &str,
    media_store: &Path,
    repo: &str,
    include: &str,
) -> serde_json::Value {
    let store = cwd.join("store");
    let out = media_tests::TestCommand::new("import_synapse")
        .args(["--synapse-db", synapse_db])
        .args(["--media-store", media_store.to_str().unwrap()])
        .args(["--repo-db", repo, "--datastore", store.to_str().unwrap()])
        .args(["--include", include, "--json"])
        .current_dir(cwd)
        .assert_exit(0);
    report(&out)
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_are_read_page_by_page_from_a_synapse_on_sqlite_and_on_postgresql() {
    use media_tests::synthetic_synapse::{
        MEDIA_ROOMS, SyntheticSpec, add_text_events, copy_into_postgres, write_synapse_sqlite,
    };
    // More events with media than one page of the reader, among many without.
    let source = tempfile::tempdir().unwrap();
    let mut spec = SyntheticSpec::small_media(1_500);
    spec.min_size = 64;
    spec.max_size = 512;
    spec.thumbnails_per_media = 0;
    let synapse = write_synapse_sqlite(source.path(), &spec).await;
    add_text_events(&synapse, 5_000).await;
    let synapse_pg = TestDatabase::postgres().await;
    copy_into_postgres(&synapse, &synapse_pg.url).await;
    let room = |n: usize| format!("!media{n}:synthetic.test");
    for synapse_db in [
        synapse.sqlite_path.to_str().unwrap(),
        synapse_pg.url.as_str(),
    ] {
        let repo = TestDatabase::sqlite();
        let cwd = tempfile::tempdir().unwrap();
        let done = import_synthetic(
            cwd.path(),
            synapse_db,
            &synapse.media_store,
            &repo.url,
            "local,remote,rooms",
        );
        assert_eq!(done["rooms"]["source"], "events", "{synapse_db}: {done}");
        assert_eq!(done["rooms"]["events"], 1_500, "{synapse_db}: {done}");
        assert_eq!(done["rooms"]["references"], 3_000, "{synapse_db}: {done}");
        assert_eq!(
            done["rooms"]["links_recorded"], 1_500,
            "{synapse_db}: {done}"
        );
        let links = recorded_links(&repo.url).await;
        assert_eq!(links.len(), 1_500, "{synapse_db}");
        for n in 0..MEDIA_ROOMS {
            let in_room = links
                .iter()
                .filter(|l| l.starts_with(&format!("{} ", room(n))));
            assert_eq!(
                in_room.count(),
                1_500 / MEDIA_ROOMS,
                "{synapse_db}: room {n}"
            );
        }
        // Every media of the repository was posted in a room.
        let media = strings(&repo.url, "SELECT origin || '/' || media_id FROM media").await;
        let posted: BTreeSet<String> = links
            .iter()
            .map(|l| l.split(' ').nth(1).unwrap().to_owned())
            .collect();
        assert_eq!(posted, media, "{synapse_db}");
    }
}

/// Without its `events` table (a copy of the media tables alone), an import records no
/// room and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_synapse_database_without_events_records_no_room_and_says_why() {
    use media_tests::synthetic_synapse::{SyntheticSpec, write_synapse_sqlite};
    let source = tempfile::tempdir().unwrap();
    let mut spec = SyntheticSpec::small_media(20);
    spec.thumbnails_per_media = 0;
    let synapse = write_synapse_sqlite(source.path(), &spec).await;
    let mut conn = any_connection(&format!("sqlite://{}", synapse.sqlite_path.display())).await;
    sqlx::query("DROP TABLE events")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let repo = TestDatabase::sqlite();
    let cwd = tempfile::tempdir().unwrap();
    let done = import_synthetic(
        cwd.path(),
        synapse.sqlite_path.to_str().unwrap(),
        &synapse.media_store,
        &repo.url,
        "local,remote,rooms",
    );
    assert_eq!(done["media_imported"], 20, "{done}");
    assert_eq!(done["rooms"]["source"], "no_events_table", "{done}");
    assert!(recorded_links(&repo.url).await.is_empty());
}

/// The cost of `--include rooms` on a large `events` table (not a test of speed: run it
/// with `cargo test -p media-tests --test media_admin_rooms -- --ignored --nocapture`;
/// `ROOMS_BENCH_MEDIA` and `ROOMS_BENCH_TEXT_EVENTS` set the sizes). The same import runs
/// without and with rooms into fresh repositories, and `--include rooms` alone (the
/// room step only) once more, on the Synapse in SQLite and in PostgreSQL.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, minutes long: run it by name"]
async fn measure_the_cost_of_recording_rooms_on_a_large_events_table() {
    use std::time::Instant;

    use media_tests::synthetic_synapse::{
        SyntheticSpec, add_text_events, copy_into_postgres, write_synapse_sqlite,
    };
    let size = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (media, text_events) = (
        size("ROOMS_BENCH_MEDIA", 20_000),
        size("ROOMS_BENCH_TEXT_EVENTS", 2_000_000),
    );
    let source = tempfile::tempdir().unwrap();
    let mut spec = SyntheticSpec::small_media(media);
    spec.min_size = 64;
    spec.max_size = 1024;
    spec.thumbnails_per_media = 0;
    let synapse = write_synapse_sqlite(source.path(), &spec).await;
    add_text_events(&synapse, text_events).await;
    let synapse_pg = TestDatabase::postgres().await;
    copy_into_postgres(&synapse, &synapse_pg.url).await;
    eprintln!(
        "{media} media (one event each) among {} events",
        media + text_events
    );
    for (label, synapse_db) in [
        ("sqlite", synapse.sqlite_path.to_str().unwrap()),
        ("postgres", synapse_pg.url.as_str()),
    ] {
        for include in ["local,remote", "local,remote,rooms"] {
            let repo = TestDatabase::sqlite();
            let cwd = tempfile::tempdir().unwrap();
            let start = Instant::now();
            import_synthetic(
                cwd.path(),
                synapse_db,
                &synapse.media_store,
                &repo.url,
                include,
            );
            let whole = start.elapsed();
            let start = Instant::now();
            let again = import_synthetic(
                cwd.path(),
                synapse_db,
                &synapse.media_store,
                &repo.url,
                "rooms",
            );
            eprintln!(
                "synapse on {label}: import --include {include}: {whole:.2?}; then \
                 --include rooms alone: {:.2?} ({} links new)",
                start.elapsed(),
                again["rooms"]["links_recorded"]
            );
        }
    }
}
