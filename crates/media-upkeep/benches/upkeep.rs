//! `synapse_media purge remote` and `synapse_media check` end to end on a generated
//! Synapse media store, each against the shell tool doing the same work on the same
//! files in the same run.
//!
//! `cargo build --release --bins && DATABASE_URL=postgres://… cargo bench -p
//! media-upkeep --bench upkeep` (PostgreSQL is optional: without `DATABASE_URL` only
//! SQLite runs).
//!
//! The store: `BENCH_MEDIA` (default 200000) remote cache media of 1–4 KiB, one
//! thumbnail each, from the test support's synthetic Synapse generator (SQLite, copied
//! into PostgreSQL for the PostgreSQL runs); one media in five repeats the bytes of
//! another (in a file of its own, as Synapse stores it).
//!
//! Measured, each `BENCH_RUNS` times (default 2), the release binary under
//! `/usr/bin/time -v` (its "Maximum resident set size" is the peak memory):
//! - `check` against `find STORE -type f | wc -l`, the store read into the page cache
//!   first;
//! - `purge remote --before 1d` (every media) on a fresh copy of the database and of the
//!   store, against `find COPY -mindepth 2 -delete` on another fresh copy of the store:
//!   the same work (every file and every folder below the top-level ones, which the
//!   purge removes when they are left empty);
//! - with `synapse` in `BENCH_PHASES` (and `SYNAPSE_PYTHON` set, as for the tests):
//!   Synapse's own `purge_media_cache` through its admin API, a live Synapse on a copy of
//!   the real-Synapse fixture into which the generated remote cache (rows and files) is
//!   merged, against `purge remote` with the same cutoff on a second such copy (SQLite
//!   only).
//!
//! `BENCH_PHASES` (default `check,purge`) chooses the measurements, `BENCH_ENGINES`
//! (default `sqlite,postgres`) the databases, `TMPDIR` the filesystem. The purge needs
//! three copies of the store on disk at once.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection};

use media_tests::bench::{
    TimedRun, copy_database, copy_tree, count_files, drop_database_copy, env_or,
    read_into_page_cache, run_timed, time_shell,
};
use media_tests::live_synapse::LiveSynapse;
use media_tests::synapse_store::{Engine, Store, copy_fixture};
use media_tests::synthetic_synapse::{
    SyntheticSpec, SyntheticStore, copy_into_postgres, write_synapse_sqlite,
};
use media_tests::{TestDatabase, any_connection};

/// `synapse_media --synapse-db DB --media-store STORE ARGS… --json`.
fn synapse_media(db: &str, store: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(media_tests::binary("synapse_media"));
    command
        .arg("--synapse-db")
        .arg(db)
        .arg("--media-store")
        .arg(store)
        .args(args)
        .arg("--json")
        .env_remove("RUST_LOG");
    command
}

/// "1.23 s = 12345 media/s".
fn rate(elapsed: Duration, media: usize) -> String {
    format!(
        "{:.2} s = {:.0} media/s",
        elapsed.as_secs_f64(),
        media as f64 / elapsed.as_secs_f64()
    )
}

/// `check` against `find | wc -l`.
fn bench_check(engine: &str, db: &str, store: &SyntheticStore, runs: usize) {
    let root = &store.media_store;
    read_into_page_cache(root);
    for run in 1..=runs {
        let (find, _) = time_shell("find . -type f | wc -l >/dev/null", root);
        let check: TimedRun = run_timed(&synapse_media(db, root, &["check"]));
        assert!(
            check.status.code().is_some_and(|c| c <= 1),
            "check: {}",
            check.stderr
        );
        let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
        println!(
            "| {engine} | {} media, {} files | check #{run} | {} | {} | `find -type f \\| wc \
             -l` {:.2} s | **{:.2}×** | {} media checked |",
            store.media,
            store.files,
            rate(check.elapsed, store.media),
            check.peak(),
            find.as_secs_f64(),
            find.as_secs_f64() / check.elapsed.as_secs_f64(),
            report["media_checked"],
        );
    }
}

/// `purge remote` of every media against `find -mindepth 2 -delete` of a copy.
async fn bench_purge(engine: &str, db: &str, store: &SyntheticStore, runs: usize) {
    let work = store.dir.join("purge");
    let doomed = store.dir.join("find");
    for run in 1..=runs {
        let url = copy_database(db, &format!("purge{run}")).await;
        copy_tree(&store.media_store, &work);
        copy_tree(&store.media_store, &doomed);
        let (find, _) = time_shell("find . -mindepth 2 -delete", &doomed);
        let purge = run_timed(&synapse_media(
            &url,
            &work,
            &["purge", "remote", "--before", "1d", "-q"],
        ));
        assert!(purge.status.success(), "purge: {}", purge.stderr);
        let report: serde_json::Value = serde_json::from_slice(&purge.stdout).unwrap();
        assert_eq!(report["media_deleted"], store.media, "{report}");
        println!(
            "| {engine} | {} media, {} files | purge #{run} | {} | {} | `find -delete` {} | \
             **{:.2}×** | {} files left |",
            store.media,
            store.files,
            rate(purge.elapsed, store.media),
            purge.peak(),
            rate(find, store.media),
            find.as_secs_f64() / purge.elapsed.as_secs_f64(),
            count_files(&work),
        );
        drop_database_copy(&url).await;
        std::fs::remove_dir_all(&work).unwrap();
        std::fs::remove_dir_all(&doomed).unwrap();
    }
}

/// A copy of the real-Synapse fixture (SQLite) with the generated remote cache merged
/// into it: its rows (the columns both schemas have) and its files.
async fn fixture_with_cache(store: &SyntheticStore) -> Store {
    let merged = copy_fixture(Engine::Sqlite).await;
    let mut conn = any_connection(&merged.db_url).await;
    sqlx::query(AssertSqlSafe(format!(
        "ATTACH DATABASE '{}' AS generated",
        store.sqlite_path.display()
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    for table in ["remote_media_cache", "remote_media_cache_thumbnails"] {
        let columns_of =
            |schema: &str| format!("SELECT name FROM pragma_table_info('{table}', '{schema}')");
        let theirs: Vec<String> = sqlx::query_scalar(AssertSqlSafe(columns_of("main")))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let generated: Vec<String> = sqlx::query_scalar(AssertSqlSafe(columns_of("generated")))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let columns = generated
            .into_iter()
            .filter(|c| theirs.contains(c))
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO main.{table} ({columns}) SELECT {columns} FROM generated.{table}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();
    // Into the fixture's own folders of the same names; synced, so that no deleter
    // waits for the copy's writeback.
    for folder in ["remote_content", "remote_thumbnail"] {
        let status = Command::new("cp")
            .arg("-a")
            .arg(store.media_store.join(folder))
            .arg(&merged.media_store)
            .status()
            .unwrap();
        assert!(status.success(), "copying {folder}");
    }
    assert!(Command::new("sync").status().unwrap().success());
    merged
}

/// Synapse's own `purge_media_cache` (its admin API, a live Synapse on a copy of the
/// fixture holding the generated remote cache) against `purge remote` with the same
/// cutoff on a second copy of the same store.
async fn bench_synapse(store: &SyntheticStore, runs: usize) {
    if std::env::var("SYNAPSE_PYTHON").is_err() {
        eprintln!("SYNAPSE_PYTHON is not set: Synapse's own purge skipped");
        return;
    }
    for run in 1..=runs {
        let theirs = fixture_with_cache(store).await;
        let ours = fixture_with_cache(store).await;
        let files = count_files(&theirs.media_store);
        let before = media_core::now_ms().to_string();
        let synapse = LiveSynapse::serve(theirs.dir.path(), None);
        let started = Instant::now();
        let answer = synapse.admin(
            "POST",
            &format!("/_synapse/admin/v1/purge_media_cache?before_ts={before}"),
            &serde_json::json!({}),
        );
        let synapse_elapsed = started.elapsed();
        drop(synapse);
        let deleted = answer["deleted"].as_u64().unwrap() as usize;
        let purge = run_timed(&synapse_media(
            &ours.db_url,
            &ours.media_store,
            &["purge", "remote", "--before", &before, "-q"],
        ));
        assert!(purge.status.success(), "purge: {}", purge.stderr);
        let report: serde_json::Value = serde_json::from_slice(&purge.stdout).unwrap();
        assert_eq!(report["media_deleted"], deleted, "{report}");
        println!(
            "| sqlite | {deleted} remote media of {files} files | Synapse's `purge_media_cache` \
             #{run} | {} | {} files and {} empty folders left | `purge remote` {} | {} | **{:.1}×** \
             | {} files and {} empty folders left |",
            rate(synapse_elapsed, deleted),
            count_files(&theirs.media_store),
            theirs.empty_folders().len(),
            rate(purge.elapsed, deleted),
            purge.peak(),
            synapse_elapsed.as_secs_f64() / purge.elapsed.as_secs_f64(),
            count_files(&ours.media_store),
            ours.empty_folders().len(),
        );
    }
}

async fn bench(engine: &str, db: &str, store: &SyntheticStore, runs: usize) {
    let phases: String = env_or("BENCH_PHASES", "check,purge".to_owned());
    if phases.contains("check") {
        bench_check(engine, db, store, runs);
    }
    if phases.contains("purge") {
        bench_purge(engine, db, store, runs).await;
    }
    if phases.contains("synapse") && engine == "sqlite" {
        bench_synapse(store, runs).await;
    }
}

#[tokio::main]
async fn main() {
    let media: usize = env_or("BENCH_MEDIA", 200_000);
    let runs: usize = env_or("BENCH_RUNS", 2);
    let work = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let spec = SyntheticSpec {
        media,
        min_size: 1024,
        max_size: 4096,
        duplicate_ratio: 0.2,
        remote_ratio: 1.0,
        thumbnails_per_media: 1,
        seed: 17,
    };
    let started = Instant::now();
    let store = write_synapse_sqlite(&work.path().join("synapse"), &spec).await;
    eprintln!(
        "generated {} media ({} files) in {:.1} s",
        store.media,
        store.files,
        started.elapsed().as_secs_f64()
    );
    let engines: String = env_or("BENCH_ENGINES", "sqlite,postgres".to_owned());
    if engines.contains("sqlite") {
        let db = format!("sqlite://{}", store.sqlite_path.display());
        bench("sqlite", &db, &store, runs).await;
    }
    if !engines.contains("postgres") {
        return;
    }
    if std::env::var("DATABASE_URL").is_ok() {
        let db = TestDatabase::postgres().await;
        copy_into_postgres(&store, &db.url).await;
        bench("postgres", &db.url, &store, runs).await;
    } else {
        eprintln!("DATABASE_URL is not set: PostgreSQL skipped");
    }
}
