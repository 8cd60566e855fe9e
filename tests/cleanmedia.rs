//! End-to-end tests of `cleanmedia` on Dendrite-shaped stores (SQLite and PostgreSQL, one
//! database or three, real files laid out as Dendrite writes them). The `defect*` tests
//! each pin one defect of the Python cleanmedia that ours must not have.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use media_tests::TestCommand;
use media_tests::dendrite::{
    DendriteFixture, Engine, LargeStoreSpec, MediaSpec, SERVER_NAME, set_age,
};
use serde_json::Value;

const ENGINES: [Engine; 2] = [Engine::Sqlite, Engine::Postgres];
const OTHER: &str = "other.example";
const THIRD: &str = "third.example:8448";

/// Runs cleanmedia on `store` with `-c <config> --workdir <workdir> --json` plus `args`,
/// from an unrelated folder (so only --workdir can make relative paths work).
fn cleanmedia(store: &DendriteFixture, args: &[&str]) -> Output {
    let config = store.workdir.join("dendrite.yaml");
    let elsewhere = tempfile::tempdir().unwrap();
    let base = [
        "-c",
        config.to_str().unwrap(),
        "--workdir",
        store.workdir.to_str().unwrap(),
        "--json",
    ];
    TestCommand::new("cleanmedia")
        .args(base)
        .args(args)
        .current_dir(elsewhere.path())
        .output()
}

/// The JSON report of a run that must have succeeded.
fn report(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "cleanmedia failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn mxcs(items: &[&MediaSpec]) -> BTreeSet<String> {
    items.iter().map(|m| m.mxc()).collect()
}

async fn new_store(engine: Engine, split: bool) -> DendriteFixture {
    let store = DendriteFixture::new(engine, split).await;
    store.write_config("");
    store
}

async fn add_all(store: &DendriteFixture, media: &[&MediaSpec]) {
    for m in media {
        store.add_media(m).await;
    }
}

/// Python cleanmedia deleted a hash directory without asking whether other rows use it:
/// a recent local upload of the same bytes lost its file.
#[tokio::test]
async fn defect1_shared_hash_directory_survives_while_a_kept_row_uses_it() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let old_remote = MediaSpec::remote(OTHER, "oldcopy", 60, b"same bytes");
        let fresh_local = MediaSpec::local("alice", "freshcopy", 1, b"same bytes");
        let alone = MediaSpec::remote(OTHER, "alone", 60, b"alone");
        add_all(&store, &[&old_remote, &fresh_local, &alone]).await;

        let r = report(&cleanmedia(&store, &[]));
        assert_eq!(r["purge"]["media_rows_deleted"], 2, "{engine:?}");
        assert_eq!(r["purge"]["directories_removed"], 1);
        assert_eq!(r["purge"]["kept"]["shared_hash_directories"], 1);
        assert_eq!(store.media_mxcs().await, mxcs(&[&fresh_local]));
        let dir = store.content_dir(&fresh_local.hash());
        assert_eq!(std::fs::read(dir.join("file")).unwrap(), b"same bytes");
        assert!(dir.join("thumbnail-32x32-crop").exists());
        assert!(!store.content_dir(&alone.hash()).exists());
        store.finish().await;
    }
}

/// Python cleanmedia deleted rows by media_id alone, hitting other origins' media.
#[tokio::test]
async fn defect2_rows_are_deleted_by_media_id_and_origin() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let old = MediaSpec::remote(OTHER, "sameid", 60, b"old one");
        let recent = MediaSpec::remote(THIRD, "sameid", 2, b"recent one");
        add_all(&store, &[&old, &recent]).await;

        let r = report(&cleanmedia(&store, &["-t", "30"]));
        assert_eq!(r["purge"]["media_rows_deleted"], 1, "{engine:?}");
        assert_eq!(r["purge"]["thumbnail_rows_deleted"], 1);
        assert_eq!(store.media_mxcs().await, mxcs(&[&recent]));
        assert_eq!(store.thumbnail_mxcs().await, [recent.mxc()]);
        assert!(store.content_dir(&recent.hash()).join("file").exists());
        store.finish().await;
    }
}

/// Python cleanmedia protected only profile avatars, only with -l, by media_id only: the
/// default purge deleted remote avatars, and room and member avatars were never kept.
#[tokio::test]
async fn defect3_profile_room_member_and_notice_avatars_are_kept_in_the_default_purge() {
    for engine in ENGINES {
        let store = DendriteFixture::new(engine, false).await;
        store.write_config("  server_notices:\n    avatar_url: mxc://dendrite.test/notices\n");
        let profile = MediaSpec::remote(OTHER, "profileav", 60, b"p");
        let room = MediaSpec::remote(OTHER, "roomav", 60, b"r");
        let member = MediaSpec::remote(THIRD, "memberav", 60, b"m");
        let notices = MediaSpec::local("server", "notices", 400, b"n");
        // Same media ID as the profile avatar, another origin: not protected.
        let lookalike = MediaSpec::remote(THIRD, "profileav", 60, b"l");
        let plain = MediaSpec::remote(OTHER, "plain", 60, b"x");
        add_all(
            &store,
            &[&profile, &room, &member, &notices, &lookalike, &plain],
        )
        .await;
        store.set_profile_avatar("alice", &profile.mxc()).await;
        store.set_profile_avatar("bob", "").await;
        let room_content = format!(r#"{{"url":"{}"}}"#, room.mxc());
        store
            .add_state_event("!r:x", "m.room.avatar", "", &room_content)
            .await;
        let member_content = format!(r#"{{"membership":"join","avatar_url":"{}"}}"#, member.mxc());
        store
            .add_state_event("!r:x", "m.room.member", "@m:x", &member_content)
            .await;
        // An avatar event with a state key is no room avatar.
        let odd = format!(r#"{{"url":"{}"}}"#, plain.mxc());
        store
            .add_state_event("!r:x", "m.room.avatar", "odd", &odd)
            .await;

        let r = report(&cleanmedia(&store, &["-l"]));
        assert_eq!(r["purge"]["kept"]["avatar"], 4, "{engine:?}");
        assert_eq!(
            store.media_mxcs().await,
            mxcs(&[&profile, &room, &member, &notices])
        );
        assert!(!store.content_dir(&lookalike.hash()).exists());
        store.finish().await;
    }
}

/// Python cleanmedia read the global connection string before the component's, took
/// PostgreSQL URLs only, and never read separate user and sync databases. Here the
/// global string points at the media database, which has no user or sync tables; the
/// components' own strings (relative and absolute `file:`, URL and key=value) must win.
#[tokio::test]
async fn defect4_component_databases_win_over_the_global_one() {
    for engine in ENGINES {
        let store = new_store(engine, true).await;
        let avatar = MediaSpec::remote(OTHER, "av", 60, b"a");
        let member = MediaSpec::remote(OTHER, "mav", 60, b"m");
        let old = MediaSpec::remote(OTHER, "old", 60, b"o");
        add_all(&store, &[&avatar, &member, &old]).await;
        store.set_profile_avatar("alice", &avatar.mxc()).await;
        let content = format!(r#"{{"avatar_url":"{}"}}"#, member.mxc());
        store
            .add_state_event("!r:x", "m.room.member", "@m:x", &content)
            .await;

        let r = report(&cleanmedia(&store, &[]));
        assert_eq!(r["purge"]["media_rows_deleted"], 1, "{engine:?}");
        assert_eq!(store.media_mxcs().await, mxcs(&[&avatar, &member]));
        store.finish().await;
    }
}

/// Python cleanmedia loaded every row and committed once per media. Ours pages through
/// whole content groups (paging itself: media-db's `content_group_pages_never_split_a_group`)
/// and commits per page: thousands of rows, with groups shared between old and recent
/// rows, are purged exactly.
#[tokio::test]
async fn defect5_many_rows_with_shared_groups_are_purged_exactly() {
    let store = new_store(Engine::Sqlite, false).await;
    let mut kept = Vec::new();
    let mut all = Vec::new();
    for i in 0..2_600u32 {
        let bytes = format!("content {}", i % 2_200).into_bytes();
        let age = if i % 7 == 0 { 3 } else { 90 };
        let mut media = MediaSpec::remote(OTHER, &format!("m{i}"), age, &bytes);
        media.thumbnails.clear();
        store.add_media(&media).await;
        if age == 3 {
            kept.push(media.clone());
        }
        all.push(media);
    }
    let r = report(&cleanmedia(&store, &[]));
    let kept_hashes: BTreeSet<String> = kept.iter().map(MediaSpec::hash).collect();
    let all_hashes: BTreeSet<String> = all.iter().map(MediaSpec::hash).collect();
    assert_eq!(r["purge"]["media_rows_deleted"], 2_600 - kept.len());
    assert_eq!(
        r["purge"]["directories_removed"],
        all_hashes.len() - kept_hashes.len()
    );
    assert_eq!(
        store.media_mxcs().await,
        mxcs(&kept.iter().collect::<Vec<_>>())
    );
    for hash in &all_hashes {
        assert_eq!(
            store.content_dir(hash).join("file").exists(),
            kept_hashes.contains(hash),
            "{hash}"
        );
    }
    store.finish().await;
}

/// Python cleanmedia's 2024 orphan-thumbnail query was uncorrelated and found nothing.
/// Ours correlates on media ID AND origin: a thumbnail whose media ID lives on under
/// another origin is still an orphan.
#[tokio::test]
async fn defect6_orphan_thumbnails_are_found_per_origin_and_fixed() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let live = MediaSpec::remote(OTHER, "shared_id", 2, b"live");
        let dead = MediaSpec::remote(THIRD, "shared_id", 2, b"dead");
        add_all(&store, &[&live, &dead]).await;
        store
            .execute_on_media(&format!(
                "DELETE FROM mediaapi_media_repository WHERE media_origin = '{THIRD}'"
            ))
            .await;

        let r = report(&cleanmedia(&store, &[]));
        let orphans = &r["sanity"]["orphan_thumbnail_rows"];
        assert_eq!(orphans["found"], 1, "{engine:?}");
        assert_eq!(orphans["fixed"], 0);
        assert_eq!(orphans["items"][0], dead.mxc());
        assert_eq!(store.thumbnail_mxcs().await.len(), 2);

        let r = report(&cleanmedia(&store, &["--fix"]));
        assert_eq!(r["sanity"]["orphan_thumbnail_rows"]["fixed"], 1);
        assert_eq!(store.thumbnail_mxcs().await, [live.mxc()]);
        store.finish().await;
    }
}

/// Python cleanmedia left orphan rows when a directory was already gone, never removed
/// empty parent directories and never cleaned `tmp/`.
#[tokio::test]
async fn defect7_gone_files_still_lose_rows_parents_go_and_stale_tmp_is_cleaned() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let mut gone = MediaSpec::remote(OTHER, "gone", 60, b"gone");
        gone.write_file = false;
        let old = MediaSpec::remote(OTHER, "old", 60, b"old");
        add_all(&store, &[&gone, &old]).await;
        let stale = store.media_path.join("tmp/1804289383");
        let fresh = store.media_path.join("tmp/846930886");
        for dir in [&stale, &fresh] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("content"), b"partial").unwrap();
        }
        set_age(&stale, Duration::from_secs(2 * 86_400));

        let r = report(&cleanmedia(&store, &["--fix"]));
        assert_eq!(r["sanity"]["rows_without_file"]["found"], 1, "{engine:?}");
        assert_eq!(r["sanity"]["stale_tmp_directories"]["found"], 1);
        assert!(store.media_mxcs().await.is_empty());
        assert!(store.thumbnail_mxcs().await.is_empty());
        // Only tmp/fresh is left: no empty fan-out folders.
        assert_eq!(store.files(), ["tmp/846930886/content"]);
        let top: Vec<_> = std::fs::read_dir(&store.media_path).unwrap().collect();
        assert_eq!(top.len(), 1, "empty parents were left");
        store.finish().await;
    }
}

/// A dry run changes no row and no file, and reports exactly what the real run then does.
#[tokio::test]
async fn dry_run_changes_nothing_and_reports_what_the_real_run_does() {
    for engine in ENGINES {
        for split in [false, true] {
            let store = new_store(engine, split).await;
            let media = [
                MediaSpec::remote(OTHER, "a", 60, b"shared"),
                MediaSpec::local("alice", "b", 2, b"shared"),
                MediaSpec::remote(OTHER, "c", 60, b"c"),
                MediaSpec::remote(THIRD, "d", 10, b"d"),
                MediaSpec::local("alice", "e", 90, b"e"),
                MediaSpec::remote(OTHER, "f", 60, b"avatar"),
            ];
            // An old remote media whose file is gone: `--fix` deletes its rows (so
            // Dendrite fetches it again) and then its directory, in both runs.
            let gone = MediaSpec::remote(OTHER, "g", 60, b"gone");
            add_all(&store, &media.iter().chain([&gone]).collect::<Vec<_>>()).await;
            std::fs::remove_file(store.content_dir(&gone.hash()).join("file")).unwrap();
            // Old enough for the unused-directory check, once its rows are gone.
            set_age(&store.content_dir(&gone.hash()), Duration::from_secs(7_200));
            store.set_profile_avatar("alice", &media[5].mxc()).await;
            let rows = store.media_mxcs().await;
            let thumbs = store.thumbnail_mxcs().await;
            let files = store.files();

            let dry = report(&cleanmedia(&store, &["-n", "-t", "7", "--fix"]));
            assert_eq!(dry["dry_run"], true);
            assert_eq!(store.media_mxcs().await, rows, "{engine:?} split={split}");
            assert_eq!(store.thumbnail_mxcs().await, thumbs);
            assert_eq!(store.files(), files);

            let real = report(&cleanmedia(&store, &["-t", "7", "--fix"]));
            assert_eq!(real["dry_run"], false);
            assert_eq!(dry["purge"], real["purge"], "{engine:?} split={split}");
            assert_eq!(dry["sanity"], real["sanity"]);
            assert_eq!(real["sanity"]["rows_without_file"]["fixed"], 1);
            assert_eq!(real["sanity"]["unreferenced_directories"]["fixed"], 1);
            assert!(!store.content_dir(&gone.hash()).exists());
            assert_eq!(real["purge"]["media_rows_deleted"], 3);
            assert_eq!(real["purge"]["thumbnail_rows_deleted"], 3);
            assert_eq!(real["purge"]["directories_removed"], 2);
            // c and d: a 1-byte file and a 3-byte thumbnail each.
            assert_eq!(real["purge"]["bytes_freed"], 8);
            assert_eq!(real["purge"]["kept"]["avatar"], 1);
            assert_eq!(real["purge"]["kept"]["local"], 2);
            assert_eq!(real["purge"]["kept"]["recent"], 0);
            assert_eq!(real["purge"]["kept"]["shared_hash_directories"], 1);
            assert_eq!(
                store.media_mxcs().await,
                mxcs(&[&media[1], &media[4], &media[5]])
            );
            store.finish().await;
        }
    }
}

/// A directory the purge cannot remove (here it holds only a file Dendrite never
/// writes) is a purge failure, listed once: the unused-directory check after the purge
/// leaves it out, so the dry run and the real run report the same. A later run, which
/// no longer purges its rows, lists it as unused.
#[tokio::test]
async fn a_directory_the_purge_cannot_remove_is_reported_once_in_both_runs() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let stuck = MediaSpec {
            write_file: false,
            ..MediaSpec::remote(OTHER, "stuck", 60, b"stuck")
        };
        // A recent media with its file: one row of two without its file is no sign of an
        // unmounted folder.
        let recent = MediaSpec::remote(OTHER, "recent", 1, b"recent");
        add_all(&store, &[&stuck, &recent]).await;
        let dir = store.content_dir(&stuck.hash());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), b"an operator's").unwrap();
        set_age(&dir, Duration::from_secs(7_200));

        // Done, with a failure listed: exit 1.
        let with_failure = |out: Output| {
            assert_eq!(out.status.code(), Some(1), "{engine:?}");
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        };
        let dry = with_failure(cleanmedia(&store, &["-n"]));
        let real = with_failure(cleanmedia(&store, &[]));
        assert_eq!(dry["purge"], real["purge"], "{engine:?}");
        assert_eq!(dry["sanity"], real["sanity"]);
        let failures = &real["purge"]["failures"];
        assert_eq!(failures["count"], 1, "{real}");
        assert!(
            failures["listed"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("notes.txt")
        );
        assert_eq!(real["sanity"]["unreferenced_directories"]["found"], 0);
        assert_eq!(real["purge"]["media_rows_deleted"], 1);
        assert!(dir.join("notes.txt").exists());

        let later = report(&cleanmedia(&store, &[]));
        assert_eq!(later["sanity"]["unreferenced_directories"]["found"], 1);
        assert_eq!(later["purge"]["failures"]["count"], 0);
        store.finish().await;
    }
}

/// A crash after the rows were committed and before the directories were removed leaves
/// directories no row uses: the next run lists them, `--fix` removes them (and only them).
#[tokio::test]
async fn crash_between_commit_and_file_removal_is_found_and_fixed() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let purged = MediaSpec::remote(OTHER, "purged", 60, b"purged");
        let kept = MediaSpec::remote(OTHER, "kept", 1, b"kept");
        add_all(&store, &[&purged, &kept]).await;
        // What the purge's transaction commits, without the file removal after it.
        store
            .execute_on_media(
                "DELETE FROM mediaapi_thumbnail WHERE media_id = 'purged'; \
                 DELETE FROM mediaapi_media_repository WHERE media_id = 'purged'",
            )
            .await;
        let dir = store.content_dir(&purged.hash());

        let r = report(&cleanmedia(&store, &[]));
        let found = &r["sanity"]["unreferenced_directories"];
        assert_eq!(found["found"], 1, "{engine:?}");
        assert_eq!(found["items"][0], dir.display().to_string());
        assert!(dir.exists(), "found without --fix, but removed");

        let r = report(&cleanmedia(&store, &["--fix", "-n"]));
        assert_eq!(r["sanity"]["unreferenced_directories"]["fixed"], 1);
        assert!(dir.exists(), "a dry run removed it");

        let r = report(&cleanmedia(&store, &["--fix"]));
        assert_eq!(r["sanity"]["unreferenced_directories"]["fixed"], 1);
        assert!(!dir.exists());
        assert!(store.content_dir(&kept.hash()).join("file").exists());
        let r = report(&cleanmedia(&store, &[]));
        assert_eq!(r["sanity"]["unreferenced_directories"]["found"], 0);
        store.finish().await;
    }
}

/// A purge killed (SIGKILL) right after it committed its rows, while it removes their
/// directories: every row left still has its file, and the next run (an hour later, as
/// from cron) with `--fix` removes exactly the directories left behind and finishes the
/// purge, leaving what an uninterrupted run leaves.
#[tokio::test]
async fn a_purge_killed_after_its_commit_leaves_nothing_the_next_run_cannot_repair() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let kept = [
            MediaSpec::remote(OTHER, "recent", 2, b"recent"),
            MediaSpec::local("alice", "upload", 90, b"local upload"),
        ];
        add_all(&store, &kept.iter().collect::<Vec<_>>()).await;
        store
            .generate(LargeStoreSpec {
                rows: 4_000,
                directories: 2_000,
            })
            .await;
        let before = store.media_count().await;
        let config = store.workdir.join("dendrite.yaml");
        let mut child = std::process::Command::new(media_tests::binary("cleanmedia"))
            .args(["-q", "-c", config.to_str().unwrap(), "--workdir"])
            .arg(&store.workdir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while store.media_count().await == before && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let hashes = store.media_hashes().await;
        let directories: BTreeSet<String> = store
            .files()
            .iter()
            .map(|file| file.rsplit_once('/').unwrap().0.to_owned())
            .collect();
        let left_behind: Vec<&String> = directories
            .iter()
            .filter(|dir| !hashes.contains(&dir.replace('/', "")))
            .collect();
        assert!(
            store.media_count().await < before && !left_behind.is_empty(),
            "{engine:?}: not killed between the commit and the removals"
        );
        for dir in &directories {
            set_age(&store.media_path.join(dir), Duration::from_secs(2 * 3600));
        }

        let r = report(&cleanmedia(&store, &["--fix"]));
        let sanity = &r["sanity"];
        assert_eq!(sanity["rows_without_file"]["found"], 0, "{engine:?}: {r}");
        assert_eq!(
            sanity["unreferenced_directories"]["fixed"],
            left_behind.len()
        );
        assert_eq!(store.media_mxcs().await, mxcs(&[&kept[0], &kept[1]]));
        let mut expected: Vec<String> = kept
            .iter()
            .flat_map(|m| {
                let dir = store.content_dir(&m.hash());
                let dir = dir.strip_prefix(&store.media_path).unwrap().to_owned();
                ["file", "thumbnail-32x32-crop"].map(|f| dir.join(f).display().to_string())
            })
            .collect();
        expected.sort();
        assert_eq!(store.files(), expected);
        let r = report(&cleanmedia(&store, &[]));
        assert_eq!(r["sanity"]["unreferenced_directories"]["found"], 0);
        assert_eq!(r["purge"]["media_rows_deleted"], 0);
        store.finish().await;
    }
}

/// Dendrite may store the same bytes again after the purge planned a hash directory's
/// removal. A trigger inserts such an upload inside the purge's own delete, so it is
/// committed before the removal: the re-check in SQL keeps the directory.
#[tokio::test]
async fn a_directory_uploaded_again_during_the_purge_is_kept() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let purged = MediaSpec::remote(OTHER, "purged", 60, b"uploaded again");
        add_all(&store, &[&purged]).await;
        let reupload = format!(
            "INSERT INTO mediaapi_media_repository (media_id, media_origin, content_type, \
             file_size_bytes, creation_ts, upload_name, base64hash, user_id) \
             VALUES ('again', '{SERVER_NAME}', 'image/png', OLD.file_size_bytes, {}, \
             'b.png', OLD.base64hash, '@bob:{SERVER_NAME}');",
            media_core::now_ms()
        );
        store
            .execute_on_media(&match engine {
                Engine::Sqlite => format!(
                    "CREATE TRIGGER reupload AFTER DELETE ON mediaapi_media_repository \
                     FOR EACH ROW WHEN OLD.media_id = 'purged' BEGIN {reupload} END"
                ),
                Engine::Postgres => format!(
                    "CREATE FUNCTION reupload() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN {reupload} RETURN OLD; END $$; \
                     CREATE TRIGGER reupload AFTER DELETE ON mediaapi_media_repository \
                     FOR EACH ROW WHEN (OLD.media_id = 'purged') EXECUTE FUNCTION reupload()"
                ),
            })
            .await;

        let r = report(&cleanmedia(&store, &[]));
        assert_eq!(r["purge"]["media_rows_deleted"], 1, "{engine:?}: {r}");
        assert_eq!(r["purge"]["directories_removed"], 0);
        assert_eq!(r["purge"]["kept"]["directories_in_use_again"], 1);
        assert_eq!(
            store.media_mxcs().await,
            BTreeSet::from([format!("mxc://{SERVER_NAME}/again")])
        );
        let dir = store.content_dir(&purged.hash());
        assert_eq!(std::fs::read(dir.join("file")).unwrap(), b"uploaded again");
        let r = report(&cleanmedia(&store, &[]));
        assert_eq!(r["sanity"]["rows_without_file"]["found"], 0, "{r}");
        store.finish().await;
    }
}

#[tokio::test]
async fn mxid_purges_one_media_by_bare_id_or_mxc_and_refuses_an_ambiguous_id() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let unique = MediaSpec::local("alice", "unique", 0, b"u");
        let twin_a = MediaSpec::remote(OTHER, "twin", 0, b"ta");
        let twin_b = MediaSpec::remote(THIRD, "twin", 0, b"tb");
        let bystander = MediaSpec::local("alice", "other", 400, b"o");
        add_all(&store, &[&unique, &twin_a, &twin_b, &bystander]).await;

        let r = report(&cleanmedia(&store, &["-m", "unique"]));
        assert_eq!(r["purge"]["media_rows_deleted"], 1, "{engine:?}");
        assert!(!store.content_dir(&unique.hash()).exists());

        let out = cleanmedia(&store, &["-m", "twin"]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(OTHER) && err.contains(THIRD) && err.contains("mxc://"),
            "{err}"
        );

        let out = cleanmedia(&store, &["-m", "nosuch"]);
        assert_eq!(out.status.code(), Some(2));

        let r = report(&cleanmedia(&store, &["--mxid", &twin_b.mxc()]));
        assert_eq!(r["purge"]["media_rows_deleted"], 1);
        assert_eq!(store.media_mxcs().await, mxcs(&[&twin_a, &bystander]));
        store.finish().await;
    }
}

#[tokio::test]
async fn userid_purges_that_users_uploads_of_any_age_but_not_their_avatar() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let fresh = MediaSpec::local("alice", "fresh", 0, b"f");
        let old = MediaSpec::local("alice", "old", 400, b"o");
        let avatar = MediaSpec::local("alice", "avatar", 400, b"a");
        let bobs = MediaSpec::local("bob", "bobs", 400, b"b");
        let remote = MediaSpec::remote(OTHER, "remote", 400, b"r");
        add_all(&store, &[&fresh, &old, &avatar, &bobs, &remote]).await;
        store.set_profile_avatar("alice", &avatar.mxc()).await;

        let r = report(&cleanmedia(
            &store,
            &["-u", &format!("@alice:{SERVER_NAME}")],
        ));
        assert_eq!(r["purge"]["media_rows_deleted"], 2, "{engine:?}");
        assert_eq!(r["purge"]["kept"]["avatar"], 1);
        assert_eq!(store.media_mxcs().await, mxcs(&[&avatar, &bobs, &remote]));
        store.finish().await;
    }
}

#[tokio::test]
async fn local_media_go_only_with_local_flag() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let old_local = MediaSpec::local("alice", "oldlocal", 90, b"ol");
        let new_local = MediaSpec::local("alice", "newlocal", 3, b"nl");
        add_all(&store, &[&old_local, &new_local]).await;

        let r = report(&cleanmedia(&store, &[]));
        assert_eq!(r["purge"]["media_rows_deleted"], 0, "{engine:?}");
        assert_eq!(r["purge"]["kept"]["local"], 2);
        let r = report(&cleanmedia(&store, &["--local", "--days", "30"]));
        assert_eq!(r["purge"]["media_rows_deleted"], 1);
        assert_eq!(store.media_mxcs().await, mxcs(&[&new_local]));
        store.finish().await;
    }
}

#[tokio::test]
async fn bad_configs_are_usage_errors_that_name_the_problem() {
    let store = new_store(Engine::Sqlite, false).await;
    let run_with = |yaml: &str| {
        std::fs::write(store.workdir.join("dendrite.yaml"), yaml).unwrap();
        cleanmedia(&store, &[])
    };
    let cases = [
        ("global: [unclosed", "YAML"),
        (
            "global: {server_name: dendrite.test}\nmedia_api: {base_path: ./media_store}\n",
            "connection_string",
        ),
        (
            "global: {server_name: dendrite.test, database: {connection_string: 'file:nosuch.db'}}\n\
             media_api: {base_path: ./media_store}\n",
            "nosuch.db",
        ),
        (
            "global: {server_name: dendrite.test, database: {connection_string: 'file:dendrite.db'}}\n\
             media_api: {base_path: ./no_media_here}\n",
            "base_path",
        ),
    ];
    for (yaml, expected) in cases {
        let out = run_with(yaml);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {err}");
        assert!(err.contains(expected), "{yaml}: {err}");
    }
    TestCommand::new("cleanmedia")
        .args(["-c", "/nonexistent/dendrite.yaml"])
        .current_dir("/")
        .assert_exit(2);
    store.finish().await;
}

#[tokio::test]
async fn the_summary_names_what_was_deleted_kept_and_found() {
    let store = new_store(Engine::Sqlite, false).await;
    let old = MediaSpec::remote(OTHER, "old", 60, b"old");
    let fresh = MediaSpec::remote(OTHER, "fresh", 1, b"fresh");
    add_all(&store, &[&old, &fresh]).await;
    store
        .execute_on_media("DELETE FROM mediaapi_media_repository WHERE media_id = 'fresh'")
        .await;
    let config = store.workdir.join("dendrite.yaml");
    let args = ["-c", config.to_str().unwrap(), "-n"];
    let out = TestCommand::new("cleanmedia")
        .args(args)
        .current_dir(&store.workdir)
        .assert_exit(0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dry run: nothing changed"), "{text}");
    assert!(
        text.contains("deleted: 1 media rows, 1 thumbnail rows, 1 directories, 6 bytes"),
        "{text}"
    );
    assert!(
        text.contains("sanity: 1 orphan thumbnail rows (repair with --fix)"),
        "{text}"
    );
    let quiet = TestCommand::new("cleanmedia")
        .args(args)
        .arg("-q")
        .current_dir(&store.workdir)
        .assert_exit(0);
    assert!(quiet.stdout.is_empty() && quiet.stderr.is_empty());
    store.finish().await;
}

/// The rows, thumbnail rows and files of a store, to show a refused run changed nothing.
async fn snapshot(store: &DendriteFixture) -> (BTreeSet<String>, Vec<String>, Vec<String>) {
    (
        store.media_mxcs().await,
        store.thumbnail_mxcs().await,
        store.files(),
    )
}

/// A run refused before it changed anything: exit 2, no report, `expected` in the error.
fn assert_refused(out: &Output, expected: &str, context: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{context}: {err}");
    assert!(err.contains(expected), "{context}: {err}");
    assert!(err.contains("Nothing was changed"), "{context}: {err}");
    // With --json, stdout carries the error object, never a report.
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.is_empty() {
        let printed: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{context}: stdout is not JSON ({e}): {stdout}"));
        assert_eq!(
            printed["error"]["class"], "usage",
            "{context}: a refused run printed a report: {stdout}"
        );
        assert!(printed.get("purge").is_none(), "{context}: {stdout}");
    }
}

/// Issue #12.1: with the media volume unmounted (an empty `base_path`), `--fix` deleted
/// every remote row as "without its file" (a 1-day-old media and a profile avatar
/// among them), and the next night removed their files. Every mode now refuses an empty
/// folder; with the volume back, only the normal purge happens.
#[tokio::test]
async fn an_empty_media_folder_is_refused_not_purged() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let old = MediaSpec::remote(OTHER, "old", 60, b"old");
        let young = MediaSpec::remote(OTHER, "young", 1, b"young");
        let avatar = MediaSpec::remote(THIRD, "avatar", 60, b"avatar");
        let local = MediaSpec::local("alice", "upload", 90, b"upload");
        add_all(&store, &[&old, &young, &avatar, &local]).await;
        store.set_profile_avatar("alice", &avatar.mxc()).await;
        // The volume is not mounted: Dendrite's folder is an empty mount point.
        let volume = store.workdir.join("volume");
        std::fs::rename(&store.media_path, &volume).unwrap();
        std::fs::create_dir(&store.media_path).unwrap();
        let before = snapshot(&store).await;

        for args in [&["--fix"][..], &["--fix", "-n"], &[], &["-l", "-t", "0"]] {
            let context = format!("{engine:?} {args:?}");
            assert_refused(&cleanmedia(&store, args), "looks unmounted", &context);
        }
        assert_eq!(snapshot(&store).await, before, "{engine:?}");

        std::fs::remove_dir(&store.media_path).unwrap();
        std::fs::rename(&volume, &store.media_path).unwrap();
        let r = report(&cleanmedia(&store, &["--fix"]));
        assert_eq!(r["purge"]["media_rows_deleted"], 1, "{engine:?}: {r}");
        assert_eq!(store.media_mxcs().await, mxcs(&[&young, &avatar, &local]));
        for kept in [&young, &avatar, &local] {
            assert!(store.content_dir(&kept.hash()).join("file").exists());
        }
        store.finish().await;
    }
}

/// Issue #12.1: a folder that holds something (Dendrite made `tmp/` in the empty mount
/// point, one file is there) but where most rows have no file is refused too.
#[tokio::test]
async fn most_rows_without_their_file_are_refused_not_deleted() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let present = MediaSpec::remote(OTHER, "present", 60, b"present");
        let gone: Vec<MediaSpec> = (0..4)
            .map(|i| MediaSpec {
                write_file: false,
                ..MediaSpec::remote(OTHER, &format!("gone{i}"), 1, format!("g{i}").as_bytes())
            })
            .collect();
        add_all(&store, &[&present]).await;
        add_all(&store, &gone.iter().collect::<Vec<_>>()).await;
        std::fs::create_dir_all(store.media_path.join("tmp/2718281828")).unwrap();
        let before = snapshot(&store).await;

        for args in [&["--fix"][..], &["--fix", "-n"]] {
            let out = cleanmedia(&store, args);
            let context = format!("{engine:?} {args:?}");
            assert_refused(&out, "looks unmounted", &context);
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("4 of 5"),
                "{context}"
            );
        }
        assert_eq!(snapshot(&store).await, before, "{engine:?}");
        store.finish().await;
    }
}

/// Issue #12.1: in a folder that is there, `--fix` deletes remote rows without their
/// file (Dendrite fetches them again), but never an avatar's row, whatever its age,
/// and never a local row.
#[tokio::test]
async fn rows_without_their_file_never_lose_an_avatar() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let with_files: Vec<MediaSpec> = (0..5)
            .map(|i| MediaSpec::remote(OTHER, &format!("f{i}"), 2, format!("f{i}").as_bytes()))
            .collect();
        let lost = |spec: MediaSpec| MediaSpec {
            write_file: false,
            ..spec
        };
        let profile = lost(MediaSpec::remote(THIRD, "profile", 60, b"profile"));
        let member = lost(MediaSpec::remote(OTHER, "member", 2, b"member"));
        let local = lost(MediaSpec::local("alice", "local", 2, b"local"));
        let refetch = lost(MediaSpec::remote(OTHER, "refetch", 2, b"refetch"));
        add_all(&store, &with_files.iter().collect::<Vec<_>>()).await;
        add_all(&store, &[&profile, &member, &local, &refetch]).await;
        store.set_profile_avatar("alice", &profile.mxc()).await;
        let content = format!(r#"{{"avatar_url":"{}"}}"#, member.mxc());
        store
            .add_state_event("!r:x", "m.room.member", "@m:x", &content)
            .await;

        let dry = report(&cleanmedia(&store, &["--fix", "-n"]));
        let real = report(&cleanmedia(&store, &["--fix"]));
        assert_eq!(dry["sanity"], real["sanity"], "{engine:?}");
        let found = &real["sanity"]["rows_without_file"];
        assert_eq!(found["found"], 4, "{engine:?}: {real}");
        assert_eq!(found["fixed"], 1, "{engine:?}: {real}");
        let mut expected: Vec<&MediaSpec> = with_files.iter().collect();
        expected.extend([&profile, &member, &local]);
        assert_eq!(store.media_mxcs().await, mxcs(&expected), "{engine:?}");
        store.finish().await;
    }
}

/// Issue #12.1: a media volume listed in fstab but not mounted is refused, even when the
/// mount point beneath holds a plausible folder; an fstab naming other mount points
/// changes nothing.
#[tokio::test]
async fn a_media_volume_in_fstab_that_is_not_mounted_is_refused() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let old = MediaSpec::remote(OTHER, "old", 60, b"old");
        let young = MediaSpec::remote(OTHER, "young", 1, b"young");
        add_all(&store, &[&old, &young]).await;
        let fstab = store.workdir.join("fstab");
        let before = snapshot(&store).await;
        for mount_point in [&store.media_path, &store.workdir] {
            std::fs::write(
                &fstab,
                format!(
                    "# comment\nUUID=1 / ext4 defaults 0 1\n/dev/vdb1 {} ext4 nofail 0 2\n",
                    mount_point.display()
                ),
            )
            .unwrap();
            let out = cleanmedia(&store, &["--fix", "--fstab", fstab.to_str().unwrap()]);
            assert_refused(&out, "looks unmounted", &format!("{engine:?}"));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&mount_point.display().to_string()), "{err}");
        }
        assert_eq!(snapshot(&store).await, before, "{engine:?}");

        std::fs::write(&fstab, "/dev/vdc1 /srv/elsewhere ext4 nofail 0 2\n").unwrap();
        let r = report(&cleanmedia(
            &store,
            &["--fix", "--fstab", fstab.to_str().unwrap()],
        ));
        assert_eq!(r["purge"]["media_rows_deleted"], 1, "{engine:?}");
        store.finish().await;
    }
}

/// Issue #12.2: `--fix` followed a `<base>/tmp` link and removed a folder outside the
/// media store. A linked `tmp` is not Dendrite's folder: the run is refused (exit 2)
/// before anything changes; links inside a real `tmp/` are never followed either.
#[tokio::test]
async fn a_linked_tmp_folder_is_not_followed_by_fix() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let kept = MediaSpec::remote(OTHER, "kept", 1, b"kept");
        add_all(&store, &[&kept]).await;
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("1234567");
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("content"), b"not Dendrite's").unwrap();
        set_age(&victim, Duration::from_secs(3 * 86_400));
        let tmp = store.media_path.join("tmp");
        std::os::unix::fs::symlink(outside.path(), &tmp).unwrap();

        for args in [&["--fix", "-n"][..], &["--fix"]] {
            let out = cleanmedia(&store, args);
            assert_refused(&out, "tmp (a link)", &format!("{engine:?} {args:?}"));
        }
        assert_eq!(
            std::fs::read(victim.join("content")).unwrap(),
            b"not Dendrite's"
        );

        // A real tmp/ holding a link named as Dendrite names its staging directories.
        std::fs::remove_file(&tmp).unwrap();
        std::fs::create_dir(&tmp).unwrap();
        std::os::unix::fs::symlink(&victim, tmp.join("7654321")).unwrap();
        for args in [&["--fix", "-n"][..], &["--fix"]] {
            let r = report(&cleanmedia(&store, args));
            assert_eq!(
                r["sanity"]["stale_tmp_directories"]["found"], 0,
                "{engine:?}"
            );
        }
        assert_eq!(
            std::fs::read(victim.join("content")).unwrap(),
            b"not Dendrite's"
        );
        assert!(tmp.join("7654321").is_symlink());
        assert!(store.content_dir(&kept.hash()).join("file").exists());
        store.finish().await;
    }
}

/// Issue #12.3: with `base_path: /`, cleanmedia listed the system's `/tmp` entries as
/// stale staging directories and `--fix` would remove them. The root directory and any
/// folder with top-level entries Dendrite does not make are refused; in `tmp/`, only
/// Dendrite's staging names are ever removed.
#[tokio::test]
async fn a_root_or_foreign_base_path_is_refused_and_only_dendrite_tmp_names_go() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let kept = MediaSpec::remote(OTHER, "kept", 1, b"kept");
        add_all(&store, &[&kept]).await;
        let config = store.workdir.join("dendrite.yaml");
        let yaml = std::fs::read_to_string(&config).unwrap();
        // A dry run only: a regression here must not touch the machine's /tmp.
        std::fs::write(
            &config,
            yaml.replace("base_path: ./media_store", "base_path: /"),
        )
        .unwrap();
        let out = cleanmedia(&store, &["--fix", "-n"]);
        assert_refused(&out, "root directory", &format!("{engine:?}"));
        std::fs::write(&config, &yaml).unwrap();

        let notes = store.media_path.join("notes.txt");
        std::fs::write(&notes, b"an operator's").unwrap();
        std::fs::create_dir(store.media_path.join("backup")).unwrap();
        let before = snapshot(&store).await;
        let out = cleanmedia(&store, &["--fix"]);
        assert_refused(&out, "not Dendrite's", &format!("{engine:?}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("backup") && err.contains("notes.txt"), "{err}");
        assert_eq!(snapshot(&store).await, before, "{engine:?}");
        std::fs::remove_file(&notes).unwrap();
        std::fs::remove_dir(store.media_path.join("backup")).unwrap();

        let dendrites = store.media_path.join("tmp/3141592653");
        let foreign = store.media_path.join("tmp/upload-keep");
        for dir in [&dendrites, &foreign] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("content"), b"partial").unwrap();
            set_age(dir, Duration::from_secs(2 * 86_400));
        }
        let r = report(&cleanmedia(&store, &["--fix"]));
        let stale = &r["sanity"]["stale_tmp_directories"];
        assert_eq!(stale["found"], 1, "{engine:?}: {r}");
        assert_eq!(stale["fixed"], 1);
        assert!(!dendrites.exists());
        assert!(
            foreign.join("content").exists(),
            "a foreign tmp entry was removed"
        );
        store.finish().await;
    }
}

/// Issue #12.4: two runs at once both failed on each other's removals. A run now takes
/// an exclusive lock on the media folder; a second one waits, naming the holder, and
/// changes nothing until the lock is free.
#[tokio::test]
async fn a_second_run_waits_for_the_lock_and_names_its_holder() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let old = MediaSpec::remote(OTHER, "old", 60, b"old");
        add_all(&store, &[&old]).await;
        // A real process holds the lock as a run would: flock(1) on the folder (without
        // forking, so the process killed below is the one holding it).
        let mut holder = Command::new("flock")
            .arg("--no-fork")
            .arg(&store.media_path)
            .args(["sh", "-c", "echo locked; exec sleep 600"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("flock(1) from util-linux");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");

        let config = store.workdir.join("dendrite.yaml");
        let mut run = Command::new(media_tests::binary("cleanmedia"))
            .args(["--json", "-c", config.to_str().unwrap(), "--workdir"])
            .arg(&store.workdir)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(run.stderr.take().unwrap());
        let mut said = String::new();
        while !said.contains("waiting") {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = holder.kill();
                panic!("{engine:?}: cleanmedia did not wait for the lock: {said}");
            }
            said.push_str(&line);
        }
        assert!(said.contains(&format!("pid {}", holder.id())), "{said}");
        assert_eq!(
            store.media_mxcs().await,
            mxcs(&[&old]),
            "changed while waiting"
        );

        holder.kill().unwrap();
        holder.wait().unwrap();
        let out = run.wait_with_output().unwrap();
        let r = report(&out);
        assert_eq!(r["purge"]["media_rows_deleted"], 1, "{engine:?}");
        assert!(store.media_mxcs().await.is_empty());
        store.finish().await;
    }
}

/// Issue #12.4: two real runs started together on one store: neither reports a failure,
/// and between them every old row and directory goes exactly once.
#[tokio::test]
async fn two_runs_at_once_report_no_spurious_failures() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        store
            .generate(LargeStoreSpec {
                rows: 3_000,
                directories: 1_500,
            })
            .await;
        let config = store.workdir.join("dendrite.yaml");
        let start = || {
            std::process::Command::new(media_tests::binary("cleanmedia"))
                .args([
                    "-q",
                    "--json",
                    "--fix",
                    "-c",
                    config.to_str().unwrap(),
                    "--workdir",
                ])
                .arg(&store.workdir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let runs = [start(), start()];
        let reports: Vec<Value> = runs
            .into_iter()
            .map(|run| report(&run.wait_with_output().unwrap()))
            .collect();
        let total = |key: &str| -> u64 {
            reports
                .iter()
                .map(|r| r["purge"][key].as_u64().unwrap())
                .sum()
        };
        assert_eq!(
            total("media_rows_deleted"),
            3_000,
            "{engine:?}: {reports:?}"
        );
        assert_eq!(total("directories_removed"), 1_500);
        for r in &reports {
            assert_eq!(r["sanity"]["failures"]["count"], 0, "{r}");
        }
        assert_eq!(store.media_count().await, 0);
        assert!(store.files().is_empty());
        store.finish().await;
    }
}

/// The mirror image of issue #12.1, found while looking for its class elsewhere: with a
/// config naming the wrong (or a fresh) media database, every hash directory is one "no
/// row uses", and `--fix` removed them all. No media rows at all while the folder holds
/// media is refused.
#[tokio::test]
async fn an_empty_media_table_is_refused_not_a_licence_to_remove_every_directory() {
    for engine in ENGINES {
        let store = new_store(engine, false).await;
        let media = MediaSpec::remote(OTHER, "media", 60, b"media");
        add_all(&store, &[&media]).await;
        store
            .execute_on_media(
                "DELETE FROM mediaapi_thumbnail; DELETE FROM mediaapi_media_repository",
            )
            .await;
        let before = snapshot(&store).await;
        for args in [&["--fix", "-n"][..], &["--fix"]] {
            let out = cleanmedia(&store, args);
            assert_refused(&out, "no media rows", &format!("{engine:?} {args:?}"));
        }
        assert_eq!(snapshot(&store).await, before, "{engine:?}");
        assert!(store.content_dir(&media.hash()).join("file").exists());
        store.finish().await;
    }
}

/// Issue 19 item 8: `cleanmedia -c homeserver.yaml` (Synapse's config) said
/// `global.server_name "" is not a server name`.
#[test]
fn a_synapse_config_is_named_as_such_not_as_an_empty_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let homeserver_yaml =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite/homeserver.yaml");
    let out = TestCommand::new("cleanmedia")
        .arg("-c")
        .arg(&homeserver_yaml)
        .arg("--dry-run")
        .current_dir(dir.path())
        .assert_exit(2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("looks like a Synapse config"), "{stderr}");
    assert!(stderr.contains("media_store_path"), "{stderr}");
    assert!(stderr.contains("dendrite.yaml"), "{stderr}");
    assert!(!stderr.contains("is not a server name"), "{stderr}");

    // Any other config without `global:` names the missing section.
    let other = dir.path().join("other.yaml");
    std::fs::write(&other, "media_api:\n  base_path: /srv/media\n").unwrap();
    let out = TestCommand::new("cleanmedia")
        .arg("-c")
        .arg(&other)
        .current_dir(dir.path())
        .assert_exit(2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no `global:` section"), "{stderr}");
}
