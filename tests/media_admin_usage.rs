//! End-to-end: `media_admin usage …` and `media_admin check [--deep] [--fix]`, the real
//! binary against repositories (SQLite and PostgreSQL) filled by `import_synapse` from
//! the real-Synapse fixture, in a folder datastore.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use media_core::hashing::sha256_of;
use media_tests::{
    TestCommand, TestDatabase, any_connection, report, repository_contents, walk_blobs,
};
use serde_json::Value;

/// `import_synapse` of the committed SQLite fixture into `repo` and the folder `store`
/// (exit code 1: the fixture has a media that was never uploaded).
fn import_fixture(cwd: &Path, repo: &str, store: &Path) {
    media_tests::import_sqlite_fixture(cwd, repo, store.to_str().unwrap())
        .arg("-q")
        .assert_exit(1);
}

/// `media_admin ARGS… --repo-db REPO --json`, expecting exit code `code`; its report.
fn admin(cwd: &Path, repo: &str, args: &[&str], code: i32) -> Value {
    let out = TestCommand::new("media_admin")
        .args(args)
        .args(["--repo-db", repo, "--json"])
        .current_dir(cwd)
        .assert_exit(code);
    report(&out)
}

/// A media row: origin, media ID, uploader, digest, size.
type MediaRow = (String, String, Option<String>, String, i64);

/// Every media row and every blob's size, read whole (the test's own computation).
async fn rows(repo: &str) -> (Vec<MediaRow>, BTreeMap<String, i64>) {
    let mut conn = any_connection(repo).await;
    let media: Vec<MediaRow> =
        sqlx::query_as("SELECT origin, media_id, user_id, sha256, size_bytes FROM media")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let blobs: Vec<(String, i64)> = sqlx::query_as("SELECT sha256, size_bytes FROM blobs")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    (media, blobs.into_iter().collect())
}

/// Media, bytes and stored bytes (distinct blobs) per owner, computed in Rust.
fn expected_usage(
    media: &[MediaRow],
    blobs: &BTreeMap<String, i64>,
    owner: impl Fn(&MediaRow) -> Option<String>,
) -> BTreeMap<String, (i64, i64, i64)> {
    let mut groups: BTreeMap<String, (i64, i64, BTreeSet<String>)> = BTreeMap::new();
    for row in media {
        let Some(of) = owner(row) else { continue };
        let group = groups.entry(of).or_default();
        group.0 += 1;
        group.1 += row.4;
        group.2.insert(row.3.clone());
    }
    groups
        .into_iter()
        .map(|(of, (n, bytes, digests))| {
            let stored = digests.iter().map(|d| blobs[d]).sum();
            (of, (n, bytes, stored))
        })
        .collect()
}

/// A usage report's entries as owner → (media, bytes, stored bytes), checking that they
/// come largest first and that each saving is bytes minus stored bytes.
fn reported_usage(report: &Value) -> BTreeMap<String, (i64, i64, i64)> {
    let entries = report["entries"].as_array().unwrap();
    let bytes: Vec<i64> = entries
        .iter()
        .map(|e| e["bytes"].as_i64().unwrap())
        .collect();
    assert!(
        bytes.is_sorted_by(|a, b| a >= b),
        "largest first: {bytes:?}"
    );
    entries
        .iter()
        .map(|e| {
            let figure = |k: &str| e[k].as_i64().unwrap();
            assert_eq!(
                figure("saved_bytes"),
                figure("bytes") - figure("stored_bytes")
            );
            (
                e["of"].as_str().unwrap().to_owned(),
                (figure("media"), figure("bytes"), figure("stored_bytes")),
            )
        })
        .collect()
}

/// The `n` largest byte counts of `usage`.
fn top_bytes(usage: &BTreeMap<String, (i64, i64, i64)>, n: usize) -> Vec<i64> {
    let mut bytes: Vec<i64> = usage.values().map(|v| v.1).collect();
    bytes.sort_unstable_by(|a, b| b.cmp(a));
    bytes.truncate(n);
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_figures_equal_an_independent_computation() {
    for db in TestDatabase::both().await {
        let label = db.label;
        let cwd = tempfile::tempdir().unwrap();
        import_fixture(cwd.path(), &db.url, &cwd.path().join("store"));
        let (media, blobs) = rows(&db.url).await;

        let servers = expected_usage(&media, &blobs, |r| Some(r.0.clone()));
        let users = expected_usage(&media, &blobs, |r| r.2.clone());
        assert!(
            users.len() >= 3,
            "{label}: the fixture has several uploaders"
        );
        assert!(
            users.values().any(|(_, bytes, stored)| bytes > stored),
            "{label}: the fixture has a user with duplicated bytes"
        );

        let report = admin(
            cwd.path(),
            &db.url,
            &["usage", "servers", "--limit", "1000"],
            0,
        );
        assert_eq!(reported_usage(&report), servers, "{label}: servers");
        let all_digests: BTreeSet<&String> = media.iter().map(|r| &r.3).collect();
        let totals = &report["totals"];
        assert_eq!(totals["media"], media.len() as i64, "{label}");
        assert_eq!(
            totals["bytes"],
            media.iter().map(|r| r.4).sum::<i64>(),
            "{label}"
        );
        assert_eq!(
            totals["stored_bytes"],
            all_digests.iter().map(|d| blobs[*d]).sum::<i64>(),
            "{label}"
        );

        let report = admin(
            cwd.path(),
            &db.url,
            &["usage", "users", "--limit", "1000"],
            0,
        );
        assert_eq!(reported_usage(&report), users, "{label}: users");

        // --limit fetches the largest only.
        let report = admin(cwd.path(), &db.url, &["usage", "users", "--limit", "2"], 0);
        let listed = reported_usage(&report);
        assert_eq!(listed.len(), 2, "{label}");
        let mut listed_bytes: Vec<i64> = listed.values().map(|v| v.1).collect();
        listed_bytes.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(listed_bytes, top_bytes(&users, 2), "{label}: --limit 2");
        for (user, figures) in &listed {
            assert_eq!(users[user], *figures, "{label}: {user}");
        }

        // Named users only.
        let named: Vec<&String> = users.keys().take(2).collect();
        let mut args = vec!["usage", "users"];
        args.extend(named.iter().map(|u| u.as_str()));
        let report = admin(cwd.path(), &db.url, &args, 0);
        let expected: BTreeMap<String, _> =
            named.iter().map(|u| ((*u).clone(), users[*u])).collect();
        assert_eq!(reported_usage(&report), expected, "{label}: named users");

        // Uploads: each media's size and the media sharing its bytes, largest first.
        let report = admin(
            cwd.path(),
            &db.url,
            &["usage", "uploads", "--limit", "1000"],
            0,
        );
        let entries = report["entries"].as_array().unwrap();
        assert_eq!(entries.len(), media.len(), "{label}");
        let sizes: Vec<i64> = entries
            .iter()
            .map(|e| e["bytes"].as_i64().unwrap())
            .collect();
        assert!(sizes.is_sorted_by(|a, b| a >= b), "{label}: largest first");
        for row in &media {
            let mxc = format!("mxc://{}/{}", row.0, row.1);
            let entry = entries
                .iter()
                .find(|e| e["media"] == mxc.as_str())
                .unwrap_or_else(|| panic!("{label}: {mxc} listed"));
            assert_eq!(entry["bytes"], row.4, "{label}: {mxc}");
            assert_eq!(
                entry["uploader"].as_str(),
                row.2.as_deref(),
                "{label}: {mxc}"
            );
            let copies = media.iter().filter(|other| other.3 == row.3).count();
            assert_eq!(entry["copies"], copies as u64, "{label}: {mxc}");
        }
        assert_usage_page(cwd.path(), &db.url, &media, &servers, &users, label);

        let first = &media[0];
        let mxc = format!("mxc://{}/{}", first.0, first.1);
        let report = admin(cwd.path(), &db.url, &["usage", "uploads", &mxc], 0);
        assert_eq!(report["entries"].as_array().unwrap().len(), 1, "{label}");
        assert_eq!(report["entries"][0]["media"], mxc.as_str(), "{label}");
    }
}

/// `usage --html`: a well-formed, self-contained page whose charts hold the figures.
fn assert_usage_page(
    cwd: &Path,
    repo: &str,
    media: &[MediaRow],
    servers: &BTreeMap<String, (i64, i64, i64)>,
    users: &BTreeMap<String, (i64, i64, i64)>,
    label: &str,
) {
    let path = cwd.join("usage.html");
    let report = admin(cwd, repo, &["usage", "--html", path.to_str().unwrap()], 0);
    assert_eq!(report["origins"], servers.len(), "{label}");
    let page = std::fs::read_to_string(&path).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "{label}");
    assert_balanced(&page);
    for external in [
        "<script",
        "<link",
        "<img",
        "url(",
        "@import",
        "@font-face",
        "src=",
    ] {
        assert!(!page.contains(external), "{label}: {external} in the page");
    }
    for (owner, (n, bytes, stored)) in servers.iter().chain(users) {
        let title = format!("<title>{owner}: {n} media, {bytes} bytes ({stored} stored)</title>");
        assert!(page.contains(&title), "{label}: {title}");
    }
    for (server, (_, bytes, stored)) in servers {
        let saved = bytes - stored;
        let title = format!("<title>{server}: {saved} bytes saved ({bytes} bytes uploaded");
        assert!(page.contains(&title), "{label}: {title}");
    }
    // The months add up to every media's bytes.
    let months = page
        .split("<h2>Bytes by month of upload</h2>")
        .nth(1)
        .unwrap()
        .split("</svg>")
        .next()
        .unwrap();
    let month_bytes: i64 = months
        .split("<title>")
        .skip(1)
        .map(|t| {
            let figures = t.split(": ").nth(1).unwrap();
            figures.split(' ').nth(2).unwrap().parse::<i64>().unwrap()
        })
        .sum();
    assert_eq!(
        month_bytes,
        media.iter().map(|r| r.4).sum::<i64>(),
        "{label}"
    );
}

/// Every element of `page` (but the void `meta` and `!DOCTYPE`) is closed, in order.
fn assert_balanced(page: &str) {
    let mut open: Vec<&str> = Vec::new();
    for tag in page.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap();
        if tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        let name = tag.split([' ', '\n']).next().unwrap();
        if let Some(closing) = name.strip_prefix('/') {
            assert_eq!(
                open.pop(),
                Some(closing),
                "</{closing}> closes another element"
            );
        } else if name != "meta" {
            open.push(name);
        }
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
}

/// The faults planted in a datastore, and where.
struct Planted {
    /// The key of the blob whose object was deleted, and its size.
    missing: (String, i64),
    /// The key of the blob whose object was overwritten with other bytes of its size.
    damaged: String,
    /// The digest of the orphan object.
    orphan: String,
    /// The digest of the object whose deletion is queued.
    queued: String,
    /// The stale temporary file.
    temporary: PathBuf,
    /// The media row whose bytes have no blob row.
    unbacked: String,
    /// The media whose thumbnail row remains without it.
    thumbnailed: String,
    /// The blob row of a datastore that is not recorded.
    strayed: String,
}

/// Writes `bytes` into `store` at their content-addressed key; returns the digest.
fn put_at_key(store: &Path, bytes: &[u8]) -> String {
    let sha256 = sha256_of(bytes).to_string();
    let path = store.join(key_of(&sha256));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    sha256
}

fn key_of(sha256: &str) -> String {
    format!("{}/{}/{sha256}", &sha256[0..2], &sha256[2..4])
}

/// Plants each fault a check finds into the repository `repo` and its folder `store`.
async fn plant_faults(repo: &str, store: &Path) -> Planted {
    let mut conn = any_connection(repo).await;
    let blobs: Vec<(String, i64)> =
        sqlx::query_as("SELECT location, size_bytes FROM blobs ORDER BY sha256")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let missing = blobs[0].clone();
    std::fs::remove_file(store.join(&missing.0)).unwrap();
    let damaged = blobs[1].0.clone();
    let path = store.join(&damaged);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.iter_mut().for_each(|b| *b = !*b);
    std::fs::write(&path, bytes).unwrap();

    let orphan = put_at_key(store, b"bytes no row points at");
    let queued = put_at_key(store, b"bytes whose deletion is queued");
    let datastore_id: i64 = sqlx::query_scalar("SELECT id FROM datastores")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO pending_deletions (datastore_id, location, sha256, enqueued_ts) \
         VALUES ($1, $2, $3, 0)",
    )
    .bind(datastore_id)
    .bind(key_of(&queued))
    .bind(&queued)
    .execute(&mut conn)
    .await
    .unwrap();

    // A media row whose bytes no blob row holds (PostgreSQL has no foreign key that
    // would refuse it; SQLite's is turned off for this connection).
    if repo.starts_with("sqlite:") {
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO media (origin, media_id, sha256, size_bytes, created_ts) \
         VALUES ('example.org', 'unbacked', $1, 5, 0)",
    )
    .bind(sha256_of(b"bytes nothing holds").to_string())
    .execute(&mut conn)
    .await
    .unwrap();
    // A thumbnail (of recorded bytes) whose media row is gone.
    sqlx::query(
        "INSERT INTO thumbnails (origin, media_id, width, height, method, content_type, \
         sha256, size_bytes, created_ts) \
         SELECT 'example.org', 'gone', 32, 32, 'crop', 'image/png', sha256, size_bytes, 0 \
         FROM blobs WHERE location = $1",
    )
    .bind(&blobs[2].0)
    .execute(&mut conn)
    .await
    .unwrap();
    // A blob row of a datastore that is not recorded.
    let stray = sha256_of(b"bytes of no datastore").to_string();
    sqlx::query(
        "INSERT INTO blobs (sha256, size_bytes, datastore_id, location, created_ts) \
         VALUES ($1, 5, 999, $2, 0)",
    )
    .bind(&stray)
    .bind(key_of(&stray))
    .execute(&mut conn)
    .await
    .unwrap();

    // What a writer killed mid-put leaves: its folder, unlocked, with a partial file.
    let temporary = store.join(".tmp/w-1-00000000deadbeef/3/partial");
    std::fs::create_dir_all(temporary.parent().unwrap()).unwrap();
    std::fs::write(&temporary, [7u8; 100]).unwrap();
    Planted {
        missing,
        damaged,
        orphan,
        queued,
        temporary,
        unbacked: "mxc://example.org/unbacked".to_owned(),
        thumbnailed: "thumbnail of mxc://example.org/gone".to_owned(),
        strayed: format!("blob {stray} in datastore #999"),
    }
}

/// A check report's problem counts by reason.
fn by_reason(report: &Value) -> BTreeMap<String, u64> {
    report["problems"]["by_reason"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// The items listed for `reason`.
fn listed(report: &Value, reason: &str) -> Vec<String> {
    report["problems"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["reason"] == reason)
        .map(|p| p["item"].as_str().unwrap().to_owned())
        .collect()
}

fn counts(expected: &[(&str, u64)]) -> BTreeMap<String, u64> {
    expected
        .iter()
        .map(|(k, n)| ((*k).to_owned(), *n))
        .collect()
}

/// The planted faults `--fix` leaves (the missing object and the unsound rows), and
/// `more`.
fn beyond_repair(more: &[(&str, u64)]) -> BTreeMap<String, u64> {
    let mut faults = counts(&[
        ("missing_object", 1),
        ("row_without_blob", 1),
        ("row_without_datastore", 1),
        ("thumbnail_without_media", 1),
    ]);
    faults.extend(counts(more));
    faults
}

#[tokio::test(flavor = "multi_thread")]
async fn check_finds_each_planted_fault_and_fix_repairs_only_what_is_safe() {
    for db in TestDatabase::both().await {
        let label = db.label;
        let cwd = tempfile::tempdir().unwrap();
        let store = cwd.path().join("store");
        import_fixture(cwd.path(), &db.url, &store);
        let clean = admin(cwd.path(), &db.url, &["check", "--deep"], 0);
        assert_eq!(
            by_reason(&clean),
            BTreeMap::new(),
            "{label}: a fresh import is sound"
        );

        let planted = plant_faults(&db.url, &store).await;
        let contents = repository_contents(&db.url).await;
        let files = walk_blobs(&store);

        let report = admin(cwd.path(), &db.url, &["check"], 1);
        assert_eq!(
            by_reason(&report),
            counts(&[
                ("missing_object", 1),
                ("orphan_object", 1),
                ("queued_deletions", 1),
                ("row_without_blob", 1),
                ("row_without_datastore", 1),
                ("stale_temporaries", 1),
                ("thumbnail_without_media", 1),
            ]),
            "{label}: {report:#}"
        );
        let datastore = &report["datastores"][0];
        assert_eq!(datastore["missing"]["count"], 1, "{label}");
        assert_eq!(datastore["missing"]["bytes"], planted.missing.1, "{label}");
        assert_eq!(datastore["orphans"]["count"], 1, "{label}");
        assert_eq!(datastore["orphans"]["bytes"], 22, "{label}");
        assert_eq!(datastore["queued"]["count"], 1, "{label}");
        assert_eq!(datastore["queued"]["bytes"], 30, "{label}");
        assert_eq!(datastore["temporaries"]["count"], 1, "{label}");
        assert_eq!(datastore["temporaries"]["bytes"], 100, "{label}");
        assert_eq!(
            datastore["damaged"]["count"], 0,
            "{label}: only --deep reads bytes"
        );
        assert_eq!(
            listed(&report, "missing_object"),
            [format!("#1 {}", planted.missing.0)],
            "{label}"
        );
        assert_eq!(
            listed(&report, "orphan_object"),
            [format!("#1 {}", key_of(&planted.orphan))],
            "{label}"
        );
        assert_eq!(report["rows_without_blob"], 1, "{label}");
        assert_eq!(
            listed(&report, "row_without_blob"),
            std::slice::from_ref(&planted.unbacked),
            "{label}"
        );
        assert_eq!(
            listed(&report, "thumbnail_without_media"),
            std::slice::from_ref(&planted.thumbnailed),
            "{label}"
        );
        assert_eq!(
            listed(&report, "row_without_datastore"),
            std::slice::from_ref(&planted.strayed),
            "{label}"
        );

        let report = admin(cwd.path(), &db.url, &["check", "--deep"], 1);
        assert_eq!(by_reason(&report)["damaged_object"], 1, "{label}");
        assert_eq!(
            listed(&report, "damaged_object"),
            [format!("#1 {}", planted.damaged)],
            "{label}"
        );
        // Without --fix nothing changed.
        assert_eq!(repository_contents(&db.url).await, contents, "{label}");
        assert_eq!(walk_blobs(&store), files, "{label}");
        assert!(planted.temporary.exists(), "{label}");

        let report = admin(cwd.path(), &db.url, &["check", "--deep", "--fix"], 1);
        let datastore = &report["datastores"][0];
        for repaired in ["orphans", "queued", "temporaries"] {
            assert_eq!(datastore[repaired]["repaired"], 1, "{label}: {repaired}");
        }
        assert_eq!(
            by_reason(&report),
            beyond_repair(&[("damaged_object", 1)]),
            "{label}: {report:#}"
        );
        // The orphan, the queued object and the temporary file are gone; every row is
        // kept, the missing and damaged objects' and the unsound ones too.
        let mut left = files.clone();
        left.remove(&planted.orphan);
        left.remove(&planted.queued);
        assert_eq!(walk_blobs(&store), left, "{label}");
        assert!(!planted.temporary.exists(), "{label}");
        assert_eq!(repository_contents(&db.url).await, contents, "{label}");
        let mut conn = any_connection(&db.url).await;
        let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pending_deletions")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(queued, 0, "{label}");

        let report = admin(cwd.path(), &db.url, &["check", "--deep"], 1);
        assert_eq!(
            by_reason(&report),
            beyond_repair(&[("damaged_object", 1)]),
            "{label}: after --fix only the missing and damaged objects and the unsound rows \
             remain"
        );
        let report = admin(cwd.path(), &db.url, &["check"], 1);
        assert_eq!(by_reason(&report), beyond_repair(&[]), "{label}");
    }
}

/// `media` media of distinct bytes recorded in the repository `repo` on the folder
/// datastore `store`, through the library (a fill no fixture could make quickly).
async fn fill_distinct(repo: &str, store: &Path, media: usize) {
    use media_core::datastore::{Datastore, DatastoreExt};
    use media_core::records::{MediaKey, MediaRecord};

    let db = media_db::connect(repo).await.unwrap();
    let folder = media_store::FileDatastore::open(store)
        .await
        .unwrap()
        .with_max_durability(media_core::Durability::Unsynced);
    let datastore_id = db.register_datastore(&folder.uri()).await.unwrap();
    let mut batch = Vec::new();
    for i in 0..media {
        let put = folder
            .put_bytes(format!("object {i}").as_bytes())
            .await
            .unwrap();
        batch.push(media_db::NewMedia {
            record: MediaRecord::new(
                MediaKey::new(
                    "example.org".parse().unwrap(),
                    format!("m{i}").parse().unwrap(),
                ),
                put.blob.sha256,
                put.blob.size,
                1,
            ),
            thumbnails: Vec::new(),
            datastore_id,
        });
        if batch.len() == 500 || i + 1 == media {
            media_db::MediaIndex::insert_media_batch(&db, &batch, &folder)
                .await
                .unwrap();
            batch.clear();
        }
    }
    db.close().await;
}

/// The check merges the listing with the rows a chunk (4,000 objects) at a time, and
/// reads each chunk's rows a page (5,000 rows) at a time: objects missing at the start,
/// across chunk boundaries, in a run longer than a page, in between and at the end, and
/// orphans among them, are each found once.
#[tokio::test(flavor = "multi_thread")]
async fn check_finds_exactly_the_missing_and_orphan_objects_across_many_chunks() {
    for db in TestDatabase::both().await {
        let label = db.label;
        let cwd = tempfile::tempdir().unwrap();
        let store = cwd.path().join("store");
        fill_distinct(&db.url, &store, 10_400).await;
        let mut conn = any_connection(&db.url).await;
        let locations: Vec<String> =
            sqlx::query_scalar("SELECT location FROM blobs ORDER BY sha256")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let mut removed = BTreeSet::new();
        for (i, location) in locations.iter().enumerate() {
            if i == 0 || i + 1 == locations.len() || (3_000..8_500).contains(&i) || i % 97 == 0 {
                std::fs::remove_file(store.join(location)).unwrap();
                removed.insert(format!("#1 {location}"));
            }
        }
        let orphans: BTreeSet<String> = (0..5)
            .map(|i| key_of(&put_at_key(&store, format!("orphan {i}").as_bytes())))
            .collect();

        for args in [&["check"][..], &["check", "--deep"]] {
            let report = admin(cwd.path(), &db.url, args, 1);
            let datastore = &report["datastores"][0];
            assert_eq!(
                datastore["objects"],
                locations.len() - removed.len() + orphans.len(),
                "{label} {args:?}"
            );
            assert_eq!(
                datastore["missing"]["count"],
                removed.len(),
                "{label} {args:?}"
            );
            assert_eq!(
                datastore["orphans"]["count"],
                orphans.len(),
                "{label} {args:?}"
            );
            assert_eq!(
                by_reason(&report),
                counts(&[
                    ("missing_object", removed.len() as u64),
                    ("orphan_object", orphans.len() as u64)
                ]),
                "{label} {args:?}"
            );
            let listed_missing: BTreeSet<String> =
                listed(&report, "missing_object").into_iter().collect();
            assert!(listed_missing.is_subset(&removed), "{label} {args:?}");
            let listed_orphans: BTreeSet<String> = listed(&report, "orphan_object")
                .into_iter()
                .map(|item| item.trim_start_matches("#1 ").to_owned())
                .collect();
            assert_eq!(listed_orphans, orphans, "{label} {args:?}");
        }
    }
}
