//! End-to-end tests of `synapse_media` through Synapse's admin API (`--homeserver-url`):
//! a live Synapse (tests/fixtures/synapse/serve.py) on one fixture copy deletes and
//! quarantines what the tool planned, and the tool verifies and cleans up after it; a
//! second copy gets the same runs applied directly. Both must end with the same rows and
//! files, and neither with an empty folder.

use std::collections::{BTreeMap, BTreeSet};

use media_tests::live_synapse::LiveSynapse;
use media_tests::synapse_store::{Engine, Store, copy_fixture, fixture_media, now_ms, quarantined};
use media_tests::{TestCommand, report};
use serde_json::Value;

/// The admin recorded as quarantining: the fixture's admin, whose token serve.py gives.
const ADMIN: &str = "@admin:fixture.test";

/// `synapse_media` on `store` with `args`, through `synapse`'s admin API with `token`.
fn through_api(store: &Store, synapse: &LiveSynapse, token: &str, args: &[&str]) -> TestCommand {
    let mut command = store.command(args);
    command
        .args(["--homeserver-url", &synapse.url])
        .env("SYNAPSE_ADMIN_TOKEN", token);
    command
}

/// The rows and files of a store, to tell whether a run changed anything.
async fn state(store: &Store) -> (BTreeSet<String>, BTreeSet<String>, BTreeMap<String, u64>) {
    (
        store.media_rows().await,
        quarantined(store).await,
        store.files(),
    )
}

/// `mxc://…` of every protected local media.
async fn protected(store: &Store) -> BTreeSet<String> {
    store
        .lines(
            "SELECT media_id FROM local_media_repository \
             WHERE CASE WHEN safe_from_quarantine THEN 1 ELSE 0 END = 1",
        )
        .await
}

fn stdout_and_stderr(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn on_sqlite_through_the_admin_api_the_same_rows_and_files_go_as_directly_and_no_empty_folder_stays()
 {
    same_end_state_as_direct(Engine::Sqlite).await;
}

#[tokio::test]
async fn on_postgres_through_the_admin_api_the_same_rows_and_files_go_as_directly_and_no_empty_folder_stays()
 {
    same_end_state_as_direct(Engine::Postgres).await;
}

/// One live Synapse on `theirs`: a dry run and a refused token change nothing, then
/// protect, quarantine, purge remote and purge local go through its admin API, while
/// `ours` gets the same runs directly.
async fn same_end_state_as_direct(engine: Engine) {
    let ours = copy_fixture(engine).await;
    let theirs = copy_fixture(engine).await;
    let synapse = LiveSynapse::serve(theirs.dir.path(), theirs.postgres.as_ref());
    let token = synapse.admin_token.clone();
    let before = (now_ms() - 86_400_000).to_string();
    let untouched = state(&theirs).await;

    // A dry run plans and calls nothing: even a token Synapse would refuse goes unnoticed.
    let dry = report(
        &through_api(
            &theirs,
            &synapse,
            "not-a-token",
            &["purge", "remote", "--before", &before, "--dry-run"],
        )
        .assert_exit(0),
    );
    let direct_dry = report(
        &ours
            .command(&["purge", "remote", "--before", &before, "--dry-run"])
            .assert_exit(0),
    );
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["media_deleted"], direct_dry["media_deleted"]);
    assert_eq!(dry["synapse_api"]["planned"], direct_dry["media_deleted"]);
    assert_eq!(dry["synapse_api"]["deleted_by_synapse"], 0);
    for key in [
        "thumbnail_rows_deleted",
        "files_deleted",
        "bytes_freed",
        "kept",
    ] {
        assert_eq!(dry[key], direct_dry[key], "{key}: {dry:#}");
    }
    assert_eq!(
        state(&theirs).await,
        untouched,
        "{engine:?}: a dry run changes nothing"
    );

    // A token Synapse refuses is a usage error before anything changes, and is never shown.
    let refused = through_api(
        &theirs,
        &synapse,
        "syt_wrong_token_4f9a",
        &["purge", "local", "--before", &before],
    )
    .assert_exit(2);
    let said = stdout_and_stderr(&refused);
    assert!(said.contains("refused the admin token"), "{said}");
    assert!(
        !said.contains("syt_wrong_token_4f9a"),
        "the token is never printed: {said}"
    );
    assert_eq!(
        state(&theirs).await,
        untouched,
        "{engine:?}: a refused token changes nothing"
    );

    // Protect one copy of a shared file, then quarantine another: both ways.
    let mxc = |label: &str| {
        fixture_media(engine, label)["mxc"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (alice, bob) = (mxc("alice_shared"), mxc("bob_shared"));
    for args in [
        vec!["protect", bob.as_str()],
        vec!["quarantine", "--by", ADMIN, "media", alice.as_str()],
        vec!["quarantine", "--by", ADMIN, "user", "@bob:fixture.test"],
    ] {
        let direct = report(&ours.command(&args).assert_exit(0));
        let api = report(&through_api(&theirs, &synapse, &token, &args).assert_exit(0));
        assert_eq!(api["changed"], direct["changed"], "{args:?}: {api:#}");
        assert_eq!(
            api["synapse_api"]["verified"], direct["changed"]["count"],
            "{api:#}"
        );
        assert_eq!(api["failures"]["count"], 0, "{args:?}: {api:#}");
        assert!(
            direct["changed"]["count"].as_u64().unwrap() > 0,
            "{args:?}: {direct:#}"
        );
    }
    assert_eq!(protected(&theirs).await, protected(&ours).await);
    let quarantined_through_api = quarantined(&theirs).await;
    assert_eq!(quarantined_through_api, quarantined(&ours).await);
    assert!(
        quarantined_through_api.contains(&alice),
        "{quarantined_through_api:?}"
    );
    assert!(
        !quarantined_through_api.contains(&bob),
        "a protected media stays free"
    );

    // Named media and a user's uploads: one DELETE per planned media.
    let carol_blob = mxc("carol_blob");
    for args in [
        vec!["purge", "media", carol_blob.as_str()],
        vec!["purge", "user", "@carol:fixture.test"],
    ] {
        let direct = report(&ours.command(&args).assert_exit(0));
        let api = report(&through_api(&theirs, &synapse, &token, &args).assert_exit(0));
        for key in ["media_deleted", "files_deleted", "bytes_freed"] {
            assert_eq!(api[key], direct[key], "{args:?} {key}: {api:#}");
        }
        assert_eq!(
            api["synapse_api"]["deleted_by_synapse"],
            direct["media_deleted"]
        );
        assert_eq!(api["failures"]["count"], 0, "{args:?}: {api:#}");
    }
    assert_eq!(theirs.media_rows().await, ours.media_rows().await);
    // Synapse's API deletes local media only: a cached remote media is a listed failure,
    // and Synapse is not asked.
    let remote_text = mxc("remote_text");
    let planned = report(
        &through_api(
            &theirs,
            &synapse,
            &token,
            &["purge", "media", &remote_text, "--dry-run"],
        )
        .assert_exit(1),
    );
    assert_eq!(
        planned["failures"]["by_reason"]["not_local"], 1,
        "the dry run shows it"
    );
    let refused = report(
        &through_api(&theirs, &synapse, &token, &["purge", "media", &remote_text]).assert_exit(1),
    );
    assert_eq!(
        refused["failures"]["by_reason"]["not_local"], 1,
        "{refused:#}"
    );
    assert_eq!(refused["synapse_api"]["planned"], 0, "{refused:#}");
    assert_eq!(theirs.media_rows().await, ours.media_rows().await);

    // The purges: the same rows and files go, and the report's counts match.
    for kind in ["remote", "local"] {
        let args = ["purge", kind, "--before", &before];
        let direct = report(&ours.command(&args).assert_exit(0));
        let api = report(&through_api(&theirs, &synapse, &token, &args).assert_exit(0));
        for key in [
            "media_deleted",
            "thumbnail_rows_deleted",
            "files_deleted",
            "bytes_freed",
            "media_without_file",
            "kept",
        ] {
            assert_eq!(api[key], direct[key], "{engine:?} {kind} {key}: {api:#}");
        }
        let through: &Value = &api["synapse_api"];
        assert_eq!(through["planned"], direct["media_deleted"], "{api:#}");
        assert_eq!(
            through["deleted_by_synapse"], direct["media_deleted"],
            "{api:#}"
        );
        assert_eq!(through["verified"], direct["media_deleted"], "{api:#}");
        assert!(
            through["cleaned_up"]["directories"].as_u64().unwrap() > 0,
            "{kind}: Synapse leaves emptied folders behind (issues #7690, #16229), and they \
             are cleaned up: {api:#}"
        );
        assert_eq!(
            api["directories_removed"],
            through["cleaned_up"]["directories"]
        );
        assert_eq!(api["failures"]["count"], 0, "{api:#}");
        assert!(
            direct["media_deleted"].as_u64().unwrap() > 0,
            "{kind}: nothing to purge"
        );
    }
    drop(synapse);
    assert_eq!(theirs.media_rows().await, ours.media_rows().await);
    assert_eq!(
        theirs.files(),
        ours.files(),
        "{engine:?}: the same files go"
    );
    assert_eq!(theirs.empty_folders(), Vec::<String>::new());
    assert_eq!(ours.empty_folders(), Vec::<String>::new());
}

#[tokio::test]
async fn an_unreachable_homeserver_is_a_fatal_error_before_anything_changes() {
    let store = copy_fixture(Engine::Sqlite).await;
    let untouched = state(&store).await;
    let before = (now_ms() - 86_400_000).to_string();
    for args in [
        vec!["purge", "remote", "--before", &before],
        vec!["quarantine", "--by", ADMIN, "user", "@alice:fixture.test"],
    ] {
        let out = store
            .command(&args)
            .args([
                "--homeserver-url",
                "http://127.0.0.1:9",
                "--admin-token",
                "t0ken",
            ])
            .assert_exit(3);
        let said = stdout_and_stderr(&out);
        assert!(
            said.contains("cannot reach Synapse's admin API"),
            "{args:?}: {said}"
        );
    }
    // Without a token, or with a URL that is none, nothing is tried at all.
    let out = store
        .command(&["purge", "remote", "--before", &before])
        .args(["--homeserver-url", "http://127.0.0.1:9"])
        .assert_exit(2);
    assert!(stdout_and_stderr(&out).contains("SYNAPSE_ADMIN_TOKEN"));
    store
        .command(&["purge", "remote", "--before", &before])
        .args(["--homeserver-url", "127.0.0.1:9", "--admin-token", "t0ken"])
        .assert_exit(2);
    assert_eq!(state(&store).await, untouched);
}
