//! `media_admin purge`, `usage` and `check` end to end on a generated repository, each
//! against the shell tool doing the same work on the same files in the same run.
//!
//! `cargo build --release --bins && DATABASE_URL=postgres://… cargo bench -p media-admin
//! --bench admin` (PostgreSQL is optional: without `DATABASE_URL` only SQLite runs).
//!
//! The repository: `BENCH_MEDIA` (default 200000) media of 256 B–4 KiB on a file
//! datastore, half local (1,000 uploaders), half of 50 remote origins; one media in five
//! repeats the bytes of the one before it; with `BENCH_THUMBNAILS=1` (the default) each
//! media has a thumbnail (the same bytes for the same picture). It is filled through the
//! library (`FileDatastore::put_bytes` without fsync, `MediaIndex::insert_media_batch` in
//! batches of 500), not by `import_synapse`: the import runs at about 2,000 media/s, too
//! slow to build a million.
//!
//! Measured, each `BENCH_RUNS` times (default 2), the release binary under
//! `/usr/bin/time -v` (its "Maximum resident set size" is the peak memory):
//! - `usage users` and `usage servers`, and the query plans of every statement they run
//!   (read from sqlx's statement log: `EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN` on
//!   PostgreSQL, after an `ANALYZE`);
//! - `check` against `find STORE -type f | wc -l`, and `check --deep` against
//!   `find STORE -type f -print0 | xargs -0 sha256sum`, the store read into the page
//!   cache first;
//! - `purge old --unaccessed-since 2100-01-01 --include-local` (every media) on a fresh
//!   copy of the repository and of the store, against `find COPY -type f -delete` on
//!   another fresh copy of the same store.
//!
//! `BENCH_PHASES` (default `usage,check,purge`) chooses the measurements, `BENCH_ENGINES`
//! (default `sqlite,postgres`) the databases, `TMPDIR` the filesystem, `BENCH_BATCH` the
//! purge's `--batch` values, comma-separated (default: the tool's own). The purge needs
//! three copies of the store on disk at once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use media_core::Durability;
use media_core::datastore::{Datastore, DatastoreExt};
use media_core::records::{MediaKey, MediaRecord, Purpose, ThumbnailMethod, ThumbnailRecord};
use media_db::{DatastoreId, MediaIndex, NewMedia};
use media_store::FileDatastore;
use media_tests::TestDatabase;
use media_tests::bench::{
    TimedRun, copy_database, copy_tree, count_files, drop_database_copy, env_or,
    read_into_page_cache, run_timed, time_shell,
};
use sqlx::Row;

/// Media per transaction while filling.
const BATCH: usize = 500;
/// `created_ts` of the first media (2020-09-13), ms.
const BASE_TS: i64 = 1_600_000_000_000;

/// The bytes of picture `content` (256 B–4 KiB), or of its thumbnail.
fn picture(content: usize, thumbnail: bool) -> Vec<u8> {
    let tag = if thumbnail { "thumbnail" } else { "media" };
    let len = 256 + (content * 7919) % 3840;
    format!("{tag} {content:010} ")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

/// Media `i`: its bytes (and its thumbnail's) put into `store`.
async fn new_media(
    store: &FileDatastore,
    i: usize,
    thumbnails: bool,
    datastore_id: DatastoreId,
) -> NewMedia {
    let content = if i % 5 == 4 { i - 1 } else { i };
    let put = store.put_bytes(&picture(content, false)).await.unwrap();
    let local = i.is_multiple_of(2);
    let origin = if local {
        "example.org".to_owned()
    } else {
        format!("remote{}.example", i % 50)
    };
    let key = MediaKey::new(origin.parse().unwrap(), format!("m{i:09}").parse().unwrap());
    let created_ts = BASE_TS + i as i64 * 1_000;
    let mut thumbnail = Vec::new();
    if thumbnails {
        let put = store.put_bytes(&picture(content, true)).await.unwrap();
        thumbnail.push(ThumbnailRecord {
            media: key.clone(),
            width: 320,
            height: 240,
            method: ThumbnailMethod::Scale,
            content_type: "image/png".into(),
            animated: false,
            sha256: put.blob.sha256,
            size_bytes: put.blob.size,
            created_ts,
        });
    }
    NewMedia {
        record: MediaRecord {
            key,
            sha256: put.blob.sha256,
            size_bytes: put.blob.size,
            upload_name: Some(format!("picture{i}.png")),
            content_type: Some("image/png".into()),
            uploader: local.then(|| format!("@user{}:example.org", i % 1_000).parse().unwrap()),
            created_ts,
            last_access_ts: None,
            quarantined: false,
            quarantined_by: None,
            purpose: Purpose::None,
            imported_from: Some("bench".into()),
        },
        thumbnails: thumbnail,
        datastore_id,
    }
}

/// Fills the repository at `url` with `media` media on a file datastore at `root`.
async fn fill(url: &str, root: &Path, media: usize, thumbnails: bool) {
    let repo = media_db::connect(url).await.unwrap();
    let store = FileDatastore::open(root)
        .await
        .unwrap()
        .with_max_durability(Durability::Unsynced);
    let id = repo.register_datastore(&store.uri()).await.unwrap();
    for start in (0..media).step_by(BATCH) {
        let batch: Vec<NewMedia> = futures::stream::iter(start..(start + BATCH).min(media))
            .map(|i| new_media(&store, i, thumbnails, id))
            .buffered(16)
            .collect()
            .await;
        repo.insert_media_batch(&batch, &store).await.unwrap();
    }
    repo.close().await;
}

/// `media_admin ARGS… --repo-db URL --json`.
fn admin(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(media_tests::binary("media_admin"));
    command
        .args(args)
        .args(["--repo-db", url, "--json"])
        .env_remove("RUST_LOG");
    command
}

/// Runs `command` measured; panics unless it succeeded.
fn measured(command: &Command) -> TimedRun {
    let run = run_timed(command);
    assert!(run.status.success(), "{command:?}: {}", run.stderr);
    run
}

/// "1.23 s = 12,345 media/s".
fn rate(elapsed: Duration, media: usize) -> String {
    let per_second = (media as f64 / elapsed.as_secs_f64()).round() as u64;
    let digits = per_second.to_string();
    let mut grouped = String::new();
    for (n, c) in digits.chars().enumerate() {
        if n > 0 && (digits.len() - n).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{:.2} s = {grouped} media/s", elapsed.as_secs_f64())
}

/// The statements `args` run, read from sqlx's statement log of one unmeasured run.
fn statements(url: &str, args: &[&str]) -> Vec<String> {
    let out = admin(url, args)
        .env("RUST_LOG", "sqlx::query=debug")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    log.lines()
        .filter_map(|line| {
            let start = line.find("db.statement=\"")? + "db.statement=\"".len();
            let rest = &line[start..];
            let end = rest.rfind("\" rows_affected")?;
            Some(rest[..end].replace("\\n", " ").replace("\\\"", "\""))
        })
        .map(|sql| sql.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|sql| sql.contains("FROM media") || sql.contains("FROM blobs"))
        .collect()
}

/// Prints the plan of every statement `args` run.
async fn print_plans(url: &str, args: &[&str]) {
    let mut conn = media_tests::any_connection(url).await;
    // The statistics autovacuum would have gathered on a repository filled over time.
    sqlx::raw_sql("ANALYZE").execute(&mut conn).await.unwrap();
    for sql in statements(url, args) {
        let explain = if url.starts_with("postgres") {
            format!("EXPLAIN {sql}")
        } else {
            format!("EXPLAIN QUERY PLAN {sql}")
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(explain))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("explain {sql}: {e}"));
        println!("\n`media_admin {}`: `{sql}`\n```", args.join(" "));
        for row in rows {
            let last = row.len() - 1;
            println!("{}", row.get::<String, _>(last));
        }
        println!("```");
    }
}

/// `usage users` and `usage servers`: time, peak memory and plans.
async fn bench_usage(engine: &str, url: &str, media: usize, runs: usize) {
    for args in [["usage", "users"], ["usage", "servers"]] {
        for run in 1..=runs {
            let timed = measured(&admin(url, &args));
            println!(
                "| {engine} | {media} media | `{}` #{run} | {:.2} s | {} |",
                args.join(" "),
                timed.elapsed.as_secs_f64(),
                timed.peak()
            );
        }
    }
    print_plans(url, &["usage", "users"]).await;
    print_plans(url, &["usage", "servers"]).await;
}

/// `check` and `check --deep` against `find | wc -l` and `sha256sum`.
fn bench_check(engine: &str, url: &str, store: &Path, media: usize, runs: usize) {
    read_into_page_cache(store);
    let files = count_files(store);
    let quoted = format!("'{}'", store.display());
    for run in 1..=runs {
        let (find, _) = time_shell(&format!("find {quoted} -type f | wc -l >/dev/null"), store);
        let check = measured(&admin(url, &["check"]));
        let (sha, _) = time_shell(
            &format!("find {quoted} -type f -print0 | xargs -0 sha256sum >/dev/null"),
            store,
        );
        let deep = measured(&admin(url, &["check", "--deep"]));
        let ratio = |tool: Duration, check: Duration| tool.as_secs_f64() / check.as_secs_f64();
        println!(
            "| {engine} | {media} media, {files} files | #{run} | `check` {} ({}) | `find \
             -type f \\| wc -l` {:.2} s | **{:.2}×** | `check --deep` {} ({}) | `sha256sum` \
             {:.2} s | **{:.2}×** |",
            rate(check.elapsed, media),
            check.peak(),
            find.as_secs_f64(),
            ratio(find, check.elapsed),
            rate(deep.elapsed, media),
            deep.peak(),
            sha.as_secs_f64(),
            ratio(sha, deep.elapsed),
        );
    }
}

/// `purge old --include-local` of every media against `find -delete` of a copy.
async fn bench_purge(engine: &str, db: &TestDatabase, store: &Path, media: usize, runs: usize) {
    let pristine = store.with_extension("pristine");
    std::fs::rename(store, &pristine).unwrap();
    let doomed = store.with_extension("find");
    let files = count_files(&pristine);
    let batches: String = env_or("BENCH_BATCH", String::new());
    let batches: Vec<Option<&str>> = match batches.as_str() {
        "" => vec![None],
        list => list.split(',').map(|b| Some(b.trim())).collect(),
    };
    for (run, batch) in (1..=runs).flat_map(|run| batches.iter().map(move |b| (run, *b))) {
        let url = copy_database(&db.url, &format!("purge{run}")).await;
        copy_tree(&pristine, store);
        copy_tree(&pristine, &doomed);
        let (find, _) = time_shell("find . -type f -delete", &doomed);
        let mut args = vec![
            "purge",
            "old",
            "--unaccessed-since",
            "2100-01-01",
            "--include-local",
            "-q",
        ];
        if let Some(batch) = batch {
            args.extend(["--batch", batch]);
        }
        let purge = measured(&admin(&url, &args));
        let report: serde_json::Value = serde_json::from_slice(&purge.stdout).unwrap();
        assert_eq!(report["media"], media, "{report}");
        let left = count_files(store);
        println!(
            "| {engine} | {media} media, {files} files | #{run} | batch {} | {} | {} \
             | `find -delete` {} | **{:.2}×** | {} files left |",
            batch.unwrap_or("default"),
            rate(purge.elapsed, media),
            purge.peak(),
            rate(find, media),
            find.as_secs_f64() / purge.elapsed.as_secs_f64(),
            left,
        );
        drop_database_copy(&url).await;
        std::fs::remove_dir_all(store).unwrap();
        std::fs::remove_dir_all(&doomed).unwrap();
    }
    std::fs::rename(&pristine, store).unwrap();
}

async fn bench(db: TestDatabase, media: usize) {
    let work = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let store: PathBuf = work.path().join("store");
    let started = Instant::now();
    fill(&db.url, &store, media, env_or("BENCH_THUMBNAILS", 1u8) == 1).await;
    let engine = db.label;
    eprintln!(
        "{engine}: filled {media} media ({} files) in {:.1} s",
        count_files(&store),
        started.elapsed().as_secs_f64()
    );
    let runs: usize = env_or("BENCH_RUNS", 2);
    let phases: String = env_or("BENCH_PHASES", "usage,check,purge".to_owned());
    if phases.contains("usage") {
        bench_usage(engine, &db.url, media, runs).await;
    }
    if phases.contains("check") {
        bench_check(engine, &db.url, &store, media, runs);
    }
    if phases.contains("purge") {
        bench_purge(engine, &db, &store, media, runs).await;
    }
}

#[tokio::main]
async fn main() {
    let media: usize = env_or("BENCH_MEDIA", 200_000);
    let engines: String = env_or("BENCH_ENGINES", "sqlite,postgres".to_owned());
    if engines.contains("sqlite") {
        bench(TestDatabase::sqlite(), media).await;
    }
    if !engines.contains("postgres") {
        return;
    }
    if std::env::var("DATABASE_URL").is_ok() {
        bench(TestDatabase::postgres().await, media).await;
    } else {
        eprintln!("DATABASE_URL is not set: PostgreSQL skipped");
    }
}
