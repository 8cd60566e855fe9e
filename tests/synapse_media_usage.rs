//! End-to-end tests of `synapse_media purge user|media`, `usage` and `-c homeserver.yaml`
//! on copies of the real-Synapse fixture (tests/fixtures/synapse), SQLite and PostgreSQL.
//!
//! What a purge should delete and what usage should report are computed here
//! independently: rows are read whole and judged or summed in Rust, files measured on
//! disk; the tool's SQL is never reused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use media_tests::synapse_store::{
    ENGINES, Engine, Expected, SERVER, Store, assert_purged, copy_fixture, fan_out, files_of,
    media_id, opt_i64,
};
use media_tests::{TestCommand, any_connection, report};
use serde_json::Value;
use sqlx::{Connection, Row};

/// The files of a local media (`url_cache` set or not) and where its thumbnails are.
fn local_paths(media_id: &str, url_preview: bool) -> (String, String) {
    match url_preview {
        true => {
            let (date, rest) = media_id.split_once('_').unwrap();
            (
                format!("url_cache/{date}/{rest}"),
                format!("url_cache_thumbnails/{date}/{rest}"),
            )
        }
        false => (
            format!("local_content/{}", fan_out(media_id)),
            format!("local_thumbnails/{}", fan_out(media_id)),
        ),
    }
}

/// What deleting the local media whose rows `sql` selects (`media_id`, `url_cache`)
/// should delete: the rows and every file they own.
async fn expected_local(store: &Store, sql: &str) -> Expected {
    let files = store.files();
    let mut conn = any_connection(&store.db_url).await;
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    let mut expected = Expected::default();
    for row in rows {
        let id: String = row.get("media_id");
        let url_cache: Option<String> = row.get("url_cache");
        let (content, thumbnails) = local_paths(&id, url_cache.is_some());
        let owned = files_of(&files, &content, &thumbnails);
        expected.bytes += owned.iter().map(|f| files[f]).sum::<u64>();
        expected.files.extend(owned);
        expected.media.insert(format!("{SERVER}/{id}"));
    }
    expected
}

#[tokio::test]
async fn purge_user_deletes_every_local_media_of_the_user_whatever_its_state_and_nothing_else() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        let expected = expected_local(
            &store,
            "SELECT media_id, url_cache FROM local_media_repository \
             WHERE user_id = '@alice:fixture.test'",
        )
        .await;
        for label in ["alice_avatar", "alice_quarantined", "alice_never_uploaded"] {
            assert!(
                expected
                    .media
                    .contains(&format!("{SERVER}/{}", media_id(engine, label))),
                "{engine:?}: the user's {label} goes too, as with Synapse's API"
            );
        }
        assert_purged(&store, &["purge", "user", "@alice:fixture.test"], &expected).await;
    }
}

#[tokio::test]
async fn purge_user_before_a_date_deletes_only_the_uploads_created_before_it() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        let created: BTreeSet<String> = store
            .lines(
                "SELECT CAST(created_ts AS TEXT) FROM local_media_repository \
                 WHERE user_id = '@bob:fixture.test'",
            )
            .await;
        let created: Vec<i64> = created.iter().map(|ts| ts.parse().unwrap()).collect();
        let cutoff = created[created.len() / 2];
        assert!(
            created.iter().any(|ts| *ts < cutoff) && created.iter().any(|ts| *ts >= cutoff),
            "{engine:?}: the cutoff splits bob's uploads: {created:?}"
        );
        let expected = expected_local(
            &store,
            &format!(
                "SELECT media_id, url_cache FROM local_media_repository \
                 WHERE user_id = '@bob:fixture.test' AND created_ts < {cutoff}"
            ),
        )
        .await;
        assert_purged(
            &store,
            &[
                "purge",
                "user",
                "@bob:fixture.test",
                "--before",
                &cutoff.to_string(),
            ],
            &expected,
        )
        .await;
    }
}

#[tokio::test]
async fn purge_media_deletes_the_named_local_and_remote_media_whatever_their_state() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        let local = ["alice_quarantined", "carol_profile_avatar", "bob_notes"];
        let remote = ["remote_quarantined", "remote_image"];
        let ids: Vec<String> = local.iter().map(|l| media_id(engine, l)).collect();
        let in_list = ids
            .iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut expected = expected_local(
            &store,
            &format!(
                "SELECT media_id, url_cache FROM local_media_repository \
                 WHERE media_id IN ({in_list})"
            ),
        )
        .await;
        let files = store.files();
        let mut mxcs: Vec<String> = ids
            .iter()
            .map(|id| format!("mxc://{SERVER}/{id}"))
            .collect();
        for label in remote {
            let id = media_id(engine, label);
            let rows = store
                .lines(&format!(
                    "SELECT media_origin || ' ' || filesystem_id FROM remote_media_cache \
                     WHERE media_id = '{id}'"
                ))
                .await;
            let (origin, filesystem_id) = rows.first().unwrap().split_once(' ').unwrap();
            let owned = files_of(
                &files,
                &format!("remote_content/{origin}/{}", fan_out(filesystem_id)),
                &format!("remote_thumbnail/{origin}/{}", fan_out(filesystem_id)),
            );
            assert!(!owned.is_empty(), "{engine:?}: {label} has files");
            expected.bytes += owned.iter().map(|f| files[f]).sum::<u64>();
            expected.files.extend(owned);
            expected.media.insert(format!("{origin}/{id}"));
            mxcs.push(format!("mxc://{origin}/{id}"));
        }
        let mut args = vec!["purge", "media"];
        args.extend(mxcs.iter().map(String::as_str));
        assert_purged(&store, &args, &expected).await;

        let rows = store.media_rows().await;
        let missing = format!("mxc://{SERVER}/NoSuchMediaAnywhere");
        let out = store
            .command(&["purge", "media", &missing, "--dry-run"])
            .assert_exit(1);
        let answer = report(&out);
        assert_eq!(answer["failures"]["count"], 1, "{answer:#}");
        assert_eq!(answer["failures"]["listed"][0]["item"], missing.as_str());
        assert_eq!(answer["failures"]["listed"][0]["reason"], "not_found");
        assert_eq!(store.media_rows().await, rows, "nothing changed");
    }
}

/// One media as usage sees it, read whole and measured here.
#[derive(Debug, Clone)]
struct MediaFacts {
    origin: String,
    media_id: String,
    user_id: Option<String>,
    created_ts: i64,
    bytes: u64,
    sha256: Option<String>,
    thumbnails: u64,
    thumbnail_bytes: u64,
}

/// Every media of the store with its recorded lengths, checked against the files on
/// disk (each row's file measures what the row says).
async fn media_facts(store: &Store) -> Vec<MediaFacts> {
    let files = store.files();
    let mut conn = any_connection(&store.db_url).await;
    let local = sqlx::query(
        "SELECT media_id, user_id, CAST(created_ts AS BIGINT) AS created_ts, \
         CAST(media_length AS BIGINT) AS media_length, sha256, url_cache \
         FROM local_media_repository",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let local_thumbnails = sqlx::query(
        "SELECT media_id, CAST(thumbnail_length AS BIGINT) AS thumbnail_length \
         FROM local_media_repository_thumbnails",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let remote = sqlx::query(
        "SELECT media_origin, media_id, CAST(created_ts AS BIGINT) AS created_ts, \
         CAST(media_length AS BIGINT) AS media_length, sha256, filesystem_id \
         FROM remote_media_cache",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let remote_thumbnails = sqlx::query(
        "SELECT media_origin, media_id, CAST(thumbnail_length AS BIGINT) AS thumbnail_length \
         FROM remote_media_cache_thumbnails",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.ok();
    let mut thumbnails: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for row in &local_thumbnails {
        let entry = thumbnails
            .entry((SERVER.to_owned(), row.get("media_id")))
            .or_default();
        entry.0 += 1;
        entry.1 += opt_i64(row, "thumbnail_length").unwrap_or(0) as u64;
    }
    for row in &remote_thumbnails {
        let entry = thumbnails
            .entry((row.get("media_origin"), row.get("media_id")))
            .or_default();
        entry.0 += 1;
        entry.1 += opt_i64(row, "thumbnail_length").unwrap_or(0) as u64;
    }
    let mut facts = Vec::new();
    for row in &local {
        let id: String = row.get("media_id");
        let url_cache: Option<String> = row.get("url_cache");
        let (content, _) = local_paths(&id, url_cache.is_some());
        let bytes = opt_i64(row, "media_length").unwrap_or(0) as u64;
        assert_eq!(
            files.get(&content).copied().unwrap_or(0),
            bytes,
            "{content}: the file measures what its row says"
        );
        let (n, tb) = thumbnails
            .get(&(SERVER.to_owned(), id.clone()))
            .copied()
            .unwrap_or_default();
        facts.push(MediaFacts {
            origin: SERVER.to_owned(),
            media_id: id,
            user_id: row.get("user_id"),
            created_ts: opt_i64(row, "created_ts").unwrap(),
            bytes,
            sha256: row.get("sha256"),
            thumbnails: n,
            thumbnail_bytes: tb,
        });
    }
    for row in &remote {
        let origin: String = row.get("media_origin");
        let id: String = row.get("media_id");
        let filesystem_id: String = row.get("filesystem_id");
        let content = format!("remote_content/{origin}/{}", fan_out(&filesystem_id));
        let bytes = opt_i64(row, "media_length").unwrap_or(0) as u64;
        assert_eq!(
            files.get(&content).copied().unwrap_or(0),
            bytes,
            "{content}"
        );
        let (n, tb) = thumbnails
            .get(&(origin.clone(), id.clone()))
            .copied()
            .unwrap_or_default();
        facts.push(MediaFacts {
            origin,
            media_id: id,
            user_id: None,
            created_ts: opt_i64(row, "created_ts").unwrap(),
            bytes,
            sha256: row.get("sha256"),
            thumbnails: n,
            thumbnail_bytes: tb,
        });
    }
    facts
}

/// `YYYY-MM` (UTC) of Unix milliseconds, by the civil-from-days calendar arithmetic.
fn month(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}")
}

/// The figures the report gives a group, as (media, bytes, thumbnails, thumbnail bytes,
/// duplicate media, duplicate bytes).
type Sums = (u64, u64, u64, u64, u64, u64);

fn sums<'a>(media: impl Iterator<Item = &'a MediaFacts>, duplicates: &BTreeSet<String>) -> Sums {
    let mut s = Sums::default();
    for m in media {
        let duplicate = duplicates.contains(&format!("{}/{}", m.origin, m.media_id));
        s.0 += 1;
        s.1 += m.bytes;
        s.2 += m.thumbnails;
        s.3 += m.thumbnail_bytes;
        s.4 += u64::from(duplicate);
        s.5 += if duplicate { m.bytes } else { 0 };
    }
    s
}

fn report_sums(figures: &Value) -> Sums {
    let n = |key: &str| {
        figures[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {figures}"))
    };
    (
        n("media"),
        n("bytes"),
        n("thumbnails"),
        n("thumbnail_bytes"),
        n("duplicate_media"),
        n("duplicate_bytes"),
    )
}

/// The media of each room, as the room's events with URLs name them.
async fn room_media(store: &Store) -> BTreeMap<String, BTreeSet<String>> {
    let mut conn = any_connection(&store.db_url).await;
    let rows = sqlx::query(
        "SELECT e.room_id, j.json FROM events AS e JOIN event_json AS j \
         ON j.event_id = e.event_id WHERE e.contains_url = TRUE AND e.outlier = FALSE",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.ok();
    let mut rooms: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in rows {
        let event: Value = serde_json::from_str(&row.get::<String, _>("json")).unwrap();
        let content = &event["content"];
        let media = rooms.entry(row.get("room_id")).or_default();
        for url in [&content["url"], &content["info"]["thumbnail_url"]] {
            if let Some(mxc) = url.as_str().and_then(|u| u.strip_prefix("mxc://")) {
                media.insert(mxc.to_owned());
            }
        }
    }
    rooms
}

#[tokio::test]
async fn usage_figures_equal_an_independent_computation_over_rows_and_files() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        let facts = media_facts(&store).await;
        // Every copy of a sha256 but the oldest (then by origin and media ID) is stored
        // twice.
        let mut by_hash: BTreeMap<&str, Vec<&MediaFacts>> = BTreeMap::new();
        for m in &facts {
            if let Some(hash) = &m.sha256 {
                by_hash.entry(hash).or_default().push(m);
            }
        }
        let mut duplicates = BTreeSet::new();
        for copies in by_hash.values_mut() {
            copies.sort_by_key(|m| (m.created_ts, m.origin.clone(), m.media_id.clone()));
            duplicates.extend(
                copies
                    .iter()
                    .skip(1)
                    .map(|m| format!("{}/{}", m.origin, m.media_id)),
            );
        }
        assert!(
            !duplicates.is_empty(),
            "{engine:?}: the fixture stores some bytes twice"
        );
        let rooms = room_media(&store).await;
        assert!(
            !rooms.is_empty(),
            "{engine:?}: the fixture has rooms with media"
        );

        for by in ["origin", "user", "month", "room"] {
            let mut expected: BTreeMap<String, Sums> = BTreeMap::new();
            let group = |key: &dyn Fn(&MediaFacts) -> Option<String>| {
                let mut groups: BTreeMap<String, Vec<&MediaFacts>> = BTreeMap::new();
                for m in &facts {
                    if let Some(k) = key(m) {
                        groups.entry(k).or_default().push(m);
                    }
                }
                groups
                    .into_iter()
                    .map(|(k, media)| (k, sums(media.into_iter(), &duplicates)))
                    .collect::<BTreeMap<_, _>>()
            };
            match by {
                "origin" => expected = group(&|m| Some(m.origin.clone())),
                "user" => expected = group(&|m| m.user_id.clone()),
                "month" => expected = group(&|m| Some(month(m.created_ts))),
                _ => {
                    for (room, media) in &rooms {
                        let of_room = facts
                            .iter()
                            .filter(|m| media.contains(&format!("{}/{}", m.origin, m.media_id)));
                        expected.insert(room.clone(), sums(of_room, &duplicates));
                    }
                }
            }
            let answer = report(
                &store
                    .command(&["usage", "--by", by, "--limit", "1000"])
                    .assert_exit(0),
            );
            assert_eq!(
                report_sums(&answer["totals"]),
                sums(facts.iter(), &duplicates),
                "{engine:?} totals: {answer:#}"
            );
            let unhashed = facts.iter().filter(|m| m.sha256.is_none()).count() as u64;
            assert_eq!(answer["totals"]["media_without_sha256"], unhashed);
            let listed: BTreeMap<String, Sums> = answer["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| (g["key"].as_str().unwrap().to_owned(), report_sums(g)))
                .collect();
            assert_eq!(listed, expected, "{engine:?} by {by}: {answer:#}");
            let sizes: Vec<u64> = answer["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["bytes"].as_u64().unwrap() + g["thumbnail_bytes"].as_u64().unwrap())
                .collect();
            assert!(
                sizes.windows(2).all(|w| w[0] >= w[1]),
                "{engine:?} by {by}: largest first: {sizes:?}"
            );
            let (_, bytes, _, thumbnail_bytes, _, _) = report_sums(&answer["totals"]);
            let share = answer["totals"]["thumbnail_share"].as_f64().unwrap();
            let want = thumbnail_bytes as f64 / (bytes + thumbnail_bytes) as f64;
            assert!((share - want).abs() < 1e-9, "{share} != {want}");

            let limited = report(
                &store
                    .command(&["usage", "--by", by, "--limit", "1"])
                    .assert_exit(0),
            );
            assert_eq!(limited["groups"].as_array().unwrap().len(), 1);
            assert_eq!(limited["groups"][0], answer["groups"][0]);
            assert_eq!(
                limited["groups_not_listed"],
                (expected.len() - 1) as u64,
                "{engine:?} by {by}"
            );
        }
    }
}

/// Checks that `page` nests its elements properly: every opened element is closed in
/// order (void elements and `/>` excepted).
fn assert_well_formed(page: &str) {
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    let mut open: Vec<String> = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("a tag ends") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if ["meta", "br", "img", "link"].contains(&name.as_str()) {
            continue;
        }
        if tag.starts_with('/') {
            assert_eq!(
                open.pop().as_deref(),
                Some(name.as_str()),
                "</{name}> closes"
            );
        } else {
            open.push(name);
        }
    }
    assert!(open.is_empty(), "left open: {open:?}");
}

#[tokio::test]
async fn usage_html_is_one_well_formed_page_with_charts_of_the_figures() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        let page_path = store.media_store.with_file_name("usage.html");
        let page_arg = page_path.to_string_lossy();
        let answer = report(
            &store
                .command(&["usage", "--by", "user", "--html", &page_arg])
                .assert_exit(0),
        );
        assert_eq!(answer["html"], page_path.to_string_lossy().as_ref());
        let page = std::fs::read_to_string(&page_path).unwrap();
        assert_well_formed(&page);
        assert!(!page.contains("<script") && !page.contains("href=\"http"));
        assert_eq!(page.matches("<svg").count(), 3, "three charts");
        let totals = &answer["totals"];
        for key in ["bytes", "thumbnail_bytes", "duplicate_bytes"] {
            assert!(
                page.contains(&format!("{} bytes", totals[key])),
                "{engine:?}: the page gives the total {key} {}",
                totals[key]
            );
        }
        for group in answer["groups"].as_array().unwrap() {
            let key = group["key"].as_str().unwrap();
            assert!(
                page.contains(&format!("{key}: {} bytes of media", group["bytes"])),
                "{engine:?}: {key}'s bar carries its bytes"
            );
        }
    }
}

/// A homeserver.yaml for `store`, with its database in Synapse's own form, and the
/// settings listed in `leave_out` left out.
fn write_homeserver_yaml(store: &Store, engine: Engine, leave_out: &[&str]) -> std::path::PathBuf {
    let database = match engine {
        Engine::Sqlite => format!(
            "database:\n  name: sqlite3\n  args:\n    database: {}\n",
            store.db_url.trim_start_matches("sqlite://")
        ),
        Engine::Postgres => {
            // postgres://user[:password]@host:port/dbname
            let rest = store.db_url.split_once("://").unwrap().1;
            let (credentials, rest) = rest.split_once('@').unwrap();
            let (user, password) = credentials
                .split_once(':')
                .map_or((credentials, None), |(u, p)| (u, Some(p)));
            let (address, dbname) = rest.split_once('/').unwrap();
            let (host, port) = address.rsplit_once(':').unwrap();
            let dbname = dbname.split('?').next().unwrap();
            let password = password.map_or(String::new(), |p| format!("    password: '{p}'\n"));
            format!(
                "database:\n  name: psycopg2\n  args:\n    user: {user}\n{password}    \
                 host: {host}\n    port: {port}\n    database: {dbname}\n    cp_min: 5\n"
            )
        }
    };
    let mut yaml = String::from("report_stats: false\n");
    if !leave_out.contains(&"server_name") {
        yaml.push_str(&format!("server_name: {SERVER}\n"));
    }
    if !leave_out.contains(&"media_store_path") {
        yaml.push_str(&format!(
            "media_store_path: {}\n",
            store.media_store.display()
        ));
    }
    if !leave_out.contains(&"database") {
        yaml.push_str(&database);
    }
    let name = format!("homeserver-{}.yaml", leave_out.join("-"));
    let path = store.media_store.with_file_name(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `synapse_media -c CONFIG args… --json`, with no other Synapse flag.
fn with_config(config: &Path, args: &[&str]) -> TestCommand {
    let mut command = TestCommand::new("synapse_media");
    command.arg("-c").arg(config).args(args).arg("--json");
    command
}

#[tokio::test]
async fn a_homeserver_yaml_gives_the_database_media_store_and_server_name_and_flags_win() {
    for engine in ENGINES {
        let store = copy_fixture(engine).await;
        let config = write_homeserver_yaml(&store, engine, &[]);
        let args = ["purge", "user", "@carol:fixture.test", "--dry-run"];
        let by_flags = report(&store.command(&args).assert_exit(0));
        let by_config = report(&with_config(&config, &args).assert_exit(0));
        assert_eq!(by_config["route"]["from"], by_flags["route"]["from"]);
        for key in [
            "media_deleted",
            "files_deleted",
            "bytes_freed",
            "thumbnail_rows_deleted",
        ] {
            assert_eq!(by_config[key], by_flags[key], "{engine:?} {key}");
        }
        assert!(by_config["media_deleted"].as_u64().unwrap() > 0);
        let usage = report(&with_config(&config, &["usage"]).assert_exit(0));
        assert_eq!(
            usage["totals"],
            report(&store.command(&["usage"]).assert_exit(0))["totals"]
        );

        // A flag given wins over the file.
        let out = with_config(&config, &args)
            .args(["--media-store", "/nonexistent/media_store"])
            .assert_exit(2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--media-store /nonexistent"), "{stderr}");
        let out = with_config(&config, &args)
            .args(["--server-name", "other.example"])
            .assert_exit_in(&[2, 3]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("other.example"), "{engine:?}: {stderr}");

        // A key the file lacks, with no flag for it, is a usage error naming it.
        for key in ["database", "media_store_path", "server_name"] {
            let partial = write_homeserver_yaml(&store, engine, &[key]);
            let out = with_config(&partial, &args).assert_exit(2);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(key), "{engine:?} {key}: {stderr}");
        }
        let partial = write_homeserver_yaml(&store, engine, &["media_store_path"]);
        with_config(&partial, &args)
            .arg("--media-store")
            .arg(&store.media_store)
            .assert_exit(0);
    }
}
