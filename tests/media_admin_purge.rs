//! End-to-end: `media_admin attributes`, `quarantine`/`unquarantine`, `purge …` and
//! `tasks`, the real binary against repositories (SQLite and PostgreSQL) filled by
//! `import_synapse` from the real-Synapse fixture, and a synthetic one for the kill test.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use media_tests::admin::{
    Row, admin, assert_store_matches_rows, contents_without, count, figures, import_fixture,
    media_rows, strings,
};
use media_tests::{TestCommand, TestDatabase, report, repository_contents, walk_blobs};

/// Our fixture's own server.
const OURS: &str = "fixture.test";

/// Which media a purge form must delete, given the digests of quarantined media.
type Rule = Box<dyn Fn(&Row, &BTreeSet<String>) -> bool>;

/// One purge form, and which media rows it must delete.
struct Form {
    args: Vec<String>,
    purges: Rule,
}

fn form(args: &[&str], purges: impl Fn(&Row, &BTreeSet<String>) -> bool + 'static) -> Form {
    Form {
        args: args.iter().map(|a| a.to_string()).collect(),
        purges: Box::new(purges),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_purge_deletes_exactly_its_media_and_its_dry_run_plans_the_same() {
    // Fixture times: media created from 1795529829462 on; accessed at 1795529887908.
    let bulk = |r: &Row| !r.pinned && !r.quarantined;
    let forms = [
        form(&["purge", "remote", "--before", "0d"], move |r, _| {
            r.origin() != OURS && bulk(r)
        }),
        form(&["purge", "quarantined"], |r, quarantined| {
            !r.pinned && quarantined.contains(&r.sha256)
        }),
        form(
            &[
                "purge",
                "media",
                "mxc://fixture.test/GXXThUZxZNkfBGbMYoBXyyeq",
                "mxc://127.0.0.1:40641/RemoteAvatarJpeg03",
                "mxc://127.0.0.1:40641/RemoteQuarantine05",
            ],
            |r, _| {
                [
                    "fixture.test/GXXThUZxZNkfBGbMYoBXyyeq",
                    "127.0.0.1:40641/RemoteAvatarJpeg03",
                    "127.0.0.1:40641/RemoteQuarantine05",
                ]
                .contains(&r.key.as_str())
            },
        ),
        form(&["purge", "user", "@bob:fixture.test"], move |r, _| {
            r.user_id.as_deref() == Some("@bob:fixture.test") && bulk(r)
        }),
        form(
            &[
                "purge",
                "user",
                "@alice:fixture.test",
                "--before",
                "1795529829570",
            ],
            move |r, _| {
                r.user_id.as_deref() == Some("@alice:fixture.test")
                    && r.created_ts < 1_795_529_829_570
                    && bulk(r)
            },
        ),
        form(&["purge", "server", "127.0.0.1:40641"], move |r, _| {
            r.origin() == "127.0.0.1:40641" && bulk(r)
        }),
        form(
            &["purge", "old", "--unaccessed-since", "1795529887909"],
            move |r, _| r.origin() != OURS && bulk(r),
        ),
        form(
            &[
                "purge",
                "old",
                "--unaccessed-since",
                "1795529829600",
                "--include-local",
                "--batch",
                "2",
            ],
            move |r, _| r.last_access_ts.unwrap_or(r.created_ts) < 1_795_529_829_600 && bulk(r),
        ),
    ];
    for form in &forms {
        for db in TestDatabase::both().await {
            let label = format!("{} {}", db.label, form.args.join(" "));
            let cwd = tempfile::tempdir().unwrap();
            let store = cwd.path().join("store");
            import_fixture(cwd.path(), &db.url, &store);
            let before = repository_contents(&db.url).await;
            let files = walk_blobs(&store);
            let rows = media_rows(&db.url).await;
            let quarantined: BTreeSet<String> = rows
                .iter()
                .filter(|r| r.quarantined)
                .map(|r| r.sha256.clone())
                .collect();
            let purged: BTreeSet<String> = rows
                .iter()
                .filter(|r| (form.purges)(r, &quarantined))
                .map(|r| r.key.clone())
                .collect();
            assert!(!purged.is_empty(), "{label}: the form selects nothing");
            let args: Vec<&str> = form.args.iter().map(String::as_str).collect();

            let out =
                admin(cwd.path(), &db.url, &[&args[..], &["--dry-run"]].concat()).assert_exit(0);
            let plan = report(&out);
            assert_eq!(plan["mode"], "dry_run", "{label}");
            assert_eq!(repository_contents(&db.url).await, before, "{label}");
            assert_eq!(walk_blobs(&store), files, "{label}");

            let out = admin(cwd.path(), &db.url, &args).assert_exit(0);
            let done = report(&out);
            assert_eq!(figures(&done), figures(&plan), "{label}: {done}");
            assert_eq!(done["media"], purged.len() as u64, "{label}: {done}");
            let expected = contents_without(&before, &purged);
            assert_eq!(repository_contents(&db.url).await, expected, "{label}");
            assert_store_matches_rows(&db.url, &store, &label).await;
            let freed = files.len() - walk_blobs(&store).len();
            assert_eq!(done["blobs_freed"], freed as u64, "{label}");
            assert_eq!(done["objects_deleted"], freed as u64, "{label}");

            // Purged IDs of our own server stay reserved.
            let local: BTreeSet<String> = purged
                .iter()
                .filter(|k| k.starts_with("fixture.test/"))
                .cloned()
                .collect();
            let reserved = strings(
                &db.url,
                "SELECT origin || '/' || media_id FROM reserved_media",
            )
            .await;
            assert_eq!(reserved, local, "{label}");
            assert_eq!(done["reserved"], local.len() as u64, "{label}");

            // The run is in the task log, finished, with its counters.
            let out = admin(cwd.path(), &db.url, &["tasks", "list"]).assert_exit(0);
            let tasks = report(&out)["tasks"].as_array().unwrap().clone();
            let last = tasks.last().unwrap();
            assert_eq!(last["kind"], "media_admin purge", "{label}");
            assert_eq!(last["id"], done["task"], "{label}");
            assert_eq!(last["is_finished"], true, "{label}");
            assert_eq!(last["counters"]["media"], done["media"], "{label}");
            assert_eq!(last["params"]["purge"], form.args[1], "{label}");

            // Run again: nothing is left to purge.
            let out = admin(cwd.path(), &db.url, &args).assert_exit_in(&[0, 1]);
            assert_eq!(report(&out)["media"], 0, "{label}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn quarantine_propagates_to_shared_bytes_skips_pinned_media_and_purging_keeps_them_blocked() {
    // zRNI… (alice), IIQM… (bob) and the remote RemoteSharedCopy04 hold the same bytes.
    let (alice, bob, remote) = (
        "mxc://fixture.test/zRNIvDVgFsRictsattcXLzvO",
        "mxc://fixture.test/IIQMiQnKZfreHcBxpSspBNDl",
        "127.0.0.1:40641/RemoteSharedCopy04",
    );
    for db in TestDatabase::both().await {
        let label = db.label;
        let cwd = tempfile::tempdir().unwrap();
        let store = cwd.path().join("store");
        import_fixture(cwd.path(), &db.url, &store);
        let quarantined_keys = || async {
            media_rows(&db.url)
                .await
                .into_iter()
                .filter(|r| r.quarantined)
                .map(|r| r.key)
                .collect::<BTreeSet<String>>()
        };
        let initially = quarantined_keys().await;

        let out = admin(cwd.path(), &db.url, &["attributes", "get", bob]).assert_exit(0);
        assert_eq!(report(&out)["purpose"], "none", "{label}");
        let out = admin(
            cwd.path(),
            &db.url,
            &["attributes", "set", bob, "--purpose", "pinned"],
        )
        .assert_exit(0);
        assert_eq!(report(&out)["previous_purpose"], "none", "{label}");
        let out = admin(cwd.path(), &db.url, &["attributes", "get", bob]).assert_exit(0);
        assert_eq!(report(&out)["purpose"], "pinned", "{label}");

        let changes_before = count(&db.url, "SELECT COUNT(*) FROM quarantine_changes").await;
        let out = admin(
            cwd.path(),
            &db.url,
            &["quarantine", "media", alice, "--by", "@admin:fixture.test"],
        )
        .assert_exit(0);
        let done = report(&out);
        assert_eq!(done["media_changed"], 2, "{label}: {done}");
        assert_eq!(done["pinned_skipped"], 1, "{label}: {done}");
        assert_eq!(done["pinned"][0], bob, "{label}: {done}");
        let mut expected = initially.clone();
        expected.extend([
            "fixture.test/zRNIvDVgFsRictsattcXLzvO".to_owned(),
            remote.to_owned(),
        ]);
        assert_eq!(quarantined_keys().await, expected, "{label}");
        assert_eq!(
            count(&db.url, "SELECT COUNT(*) FROM quarantine_changes").await,
            changes_before + 2,
            "{label}"
        );

        // A user's media, in batches of two: each with every media sharing its bytes.
        let rows = media_rows(&db.url).await;
        let carols: BTreeSet<String> = rows
            .iter()
            .filter(|r| r.user_id.as_deref() == Some("@carol:fixture.test"))
            .map(|r| r.sha256.clone())
            .collect();
        let out = admin(
            cwd.path(),
            &db.url,
            &["quarantine", "user", "@carol:fixture.test", "--batch", "2"],
        )
        .assert_exit(0);
        assert_eq!(report(&out)["media_walked"], 4, "{label}");
        expected.extend(
            rows.iter()
                .filter(|r| carols.contains(&r.sha256) && !r.pinned)
                .map(|r| r.key.clone()),
        );
        assert_eq!(quarantined_keys().await, expected, "{label}");

        // A media that is not there is listed, the others still done.
        let out = admin(
            cwd.path(),
            &db.url,
            &[
                "quarantine",
                "media",
                "mxc://fixture.test/NoSuchMedia",
                alice,
            ],
        )
        .assert_exit(1);
        assert_eq!(report(&out)["failures"]["count"], 1, "{label}");

        // Lifting a server's quarantine lifts it on every copy of its media's bytes.
        let ours: BTreeSet<String> = rows
            .iter()
            .filter(|r| r.origin() == OURS)
            .map(|r| r.sha256.clone())
            .collect();
        admin(
            cwd.path(),
            &db.url,
            &["unquarantine", "server", OURS, "--batch", "3"],
        )
        .assert_exit(0);
        let still: BTreeSet<String> = rows
            .iter()
            .filter(|r| expected.contains(&r.key) && !ours.contains(&r.sha256))
            .map(|r| r.key.clone())
            .collect();
        assert!(!still.is_empty(), "{label}");
        assert_eq!(quarantined_keys().await, still, "{label}");

        // Purging quarantined media: the shared bytes stay while a pinned media holds
        // them; every purged quarantined media's bytes stay blocked.
        admin(cwd.path(), &db.url, &["quarantine", "media", alice]).assert_exit(0);
        let before = repository_contents(&db.url).await;
        let quarantined_digests: BTreeSet<String> = media_rows(&db.url)
            .await
            .into_iter()
            .filter(|r| r.quarantined)
            .map(|r| r.sha256)
            .collect();
        let out = admin(cwd.path(), &db.url, &["purge", "quarantined"]).assert_exit(0);
        let purged: BTreeSet<String> = media_rows(&db.url)
            .await
            .into_iter()
            .map(|r| r.key)
            .collect();
        let gone: BTreeSet<String> = rows
            .iter()
            .map(|r| r.key.clone())
            .filter(|k| !purged.contains(k))
            .collect();
        assert_eq!(report(&out)["media"], gone.len() as u64, "{label}");
        assert!(!gone.contains("fixture.test/IIQMiQnKZfreHcBxpSspBNDl"));
        assert!(gone.contains(remote), "{label}: {gone:?}");
        assert_eq!(
            repository_contents(&db.url).await,
            contents_without(&before, &gone),
            "{label}"
        );
        assert_store_matches_rows(&db.url, &store, label).await;
        assert_eq!(
            strings(&db.url, "SELECT sha256 FROM blocked_hashes").await,
            quarantined_digests,
            "{label}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_killed_mid_way_converges_on_the_next_run() {
    use media_tests::synthetic_synapse::{SyntheticSpec, write_synapse_sqlite};
    for db in TestDatabase::both().await {
        let label = db.label;
        let source = tempfile::tempdir().unwrap();
        let synapse = write_synapse_sqlite(source.path(), &SyntheticSpec::small_media(800)).await;
        let cwd = tempfile::tempdir().unwrap();
        let store = cwd.path().join("store");
        TestCommand::new("import_synapse")
            .args(["--synapse-db", synapse.sqlite_path.to_str().unwrap()])
            .args(["--media-store", synapse.media_store.to_str().unwrap()])
            .args([
                "--repo-db",
                &db.url,
                "--datastore",
                store.to_str().unwrap(),
                "-q",
            ])
            .current_dir(cwd.path())
            .assert_exit(0);
        let before = repository_contents(&db.url).await;
        let purged: BTreeSet<String> = media_rows(&db.url)
            .await
            .into_iter()
            .filter(|r| r.origin() == synapse.server_name && !r.pinned && !r.quarantined)
            .map(|r| r.key)
            .collect();
        let files = walk_blobs(&store).len();

        let mut child = std::process::Command::new(media_tests::binary("media_admin"))
            .args([
                "purge",
                "server",
                &synapse.server_name,
                "--batch",
                "1",
                "-q",
            ])
            .args(["--repo-db", &db.url])
            .current_dir(cwd.path())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while walk_blobs(&store).len() + 40 > files {
            assert!(Instant::now() < deadline, "{label}: no progress in 60 s");
            assert!(
                child.try_wait().unwrap().is_none(),
                "{label}: it finished before the kill"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let left = count(
            &db.url,
            "SELECT COUNT(*) FROM media WHERE origin = 'synthetic.test'",
        )
        .await;
        assert!(left > 0, "{label}: the kill came too late");

        // The killed run is in the task log, unfinished.
        let out = admin(cwd.path(), &db.url, &["tasks", "list", "--unfinished"]).assert_exit(0);
        let unfinished = report(&out)["tasks"].as_array().unwrap().clone();
        assert_eq!(unfinished.len(), 1, "{label}: {unfinished:?}");
        assert_eq!(unfinished[0]["kind"], "media_admin purge");
        let id = unfinished[0]["id"].to_string();
        let out = admin(cwd.path(), &db.url, &["tasks", "show", &id]).assert_exit(0);
        assert_eq!(report(&out)["is_finished"], false, "{label}");

        let args = ["purge", "server", &synapse.server_name, "--batch", "50"];
        let out = admin(cwd.path(), &db.url, &[&args[..], &["--dry-run"]].concat()).assert_exit(0);
        let plan = report(&out);
        let out = admin(cwd.path(), &db.url, &args).assert_exit(0);
        let done = report(&out);
        assert_eq!(figures(&done), figures(&plan), "{label}: {done}");
        assert_eq!(
            repository_contents(&db.url).await,
            contents_without(&before, &purged),
            "{label}"
        );
        assert_store_matches_rows(&db.url, &store, label).await;
        let reserved = count(&db.url, "SELECT COUNT(*) FROM reserved_media").await;
        assert_eq!(reserved, purged.len() as i64, "{label}");
    }
}
