//! How each job's rate holds as the job grows (issue #18): the release binaries on
//! generated stores of N small media, each against its physical reference in the same run.
//!
//! `cargo build --release --bins && cargo bench -p media-import --bench scale`
//! (`DATABASE_URL=postgres://…` adds the import into a PostgreSQL repository).
//! `SCALE_BENCH_SIZES` (default `100000,1000000`) are the N; `SCALE_BENCH_JOBS` (default
//! `import,gdpr,cleanmedia`) the jobs. Media are 1–4 KiB, a fifth repeating the bytes of
//! another, no thumbnails (Synapse-shaped SQLite store of the test support's generator).
//!
//! - `import_synapse` into SQLite (and PostgreSQL) against `cp -r` + `sync` of the store;
//! - `gdpr_export` of the whole server (from the SQLite import) against `tar -cf` + sync;
//! - `gdpr_import` of that export against `tar -xf` + sync of the store;
//! - `cleanmedia` purging N old remote media rows of a Dendrite-shaped SQLite store (the
//!   Dendrite generator's 64-byte contents, N / 2 hash directories) against
//!   `find -delete` of a copy of its media folder.
//!
//! On ext4 without a journal, a step that creates files after the bench deleted many
//! waits 370 s first (`settle_after_deletion`; `BENCH_SETTLE_SECS` sets the wait, 0 for
//! none): up to three waits per N.
//! Every binary runs under `/usr/bin/time -v` (peak memory is its own). Generated data
//! lives under `TMPDIR` and goes after each N: at most one store of N media is on disk.
//! The last column is the job's rate at this N as a share of its rate at the first N.
//! `SCALE_BENCH_KEEP=1` only generates the Synapse store of each N, keeps it and prints
//! where it is (to run one job on it under a profiler).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use media_tests::TestDatabase;
use media_tests::bench::{
    TimedRun, read_into_page_cache, run_timed, settle_after_deletion, time_shell,
};
use media_tests::dendrite::{DendriteFixture, Engine, LargeStoreSpec};
use media_tests::synthetic_synapse::{SyntheticSpec, SyntheticStore, write_synapse_sqlite};

const KIB: u64 = 1024;

/// One line of the table.
struct Row {
    job: &'static str,
    media: usize,
    elapsed: Duration,
    reference: (&'static str, Duration),
    peak: String,
}

impl Row {
    fn rate(&self) -> f64 {
        self.media as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs a release binary of this workspace under `/usr/bin/time -v` and checks it succeeded.
fn run_binary(name: &str, args: &[&str], dir: &Path) -> TimedRun {
    let mut command = Command::new(media_tests::binary(name));
    command.args(args).current_dir(dir);
    let run = run_timed(&command);
    assert!(run.status.success(), "{name} failed: {}", run.stderr);
    run
}

/// Free space under `dir` in KiB (`df`).
fn free_kib(dir: &Path) -> u64 {
    let out = Command::new("df")
        .arg("--output=avail")
        .arg("-k")
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free space")
}

fn spec(media: usize) -> SyntheticSpec {
    SyntheticSpec {
        min_size: KIB,
        max_size: 4 * KIB,
        thumbnails_per_media: 0,
        ..SyntheticSpec::small_media(media)
    }
}

/// `import_synapse` of `store` into the repository `repo_db` (a URL) and the datastore
/// `datastore`.
fn import(store: &SyntheticStore, repo_db: &str, datastore: &Path) -> TimedRun {
    let run = run_binary(
        "import_synapse",
        &[
            "--synapse-db",
            store.sqlite_path.to_str().unwrap(),
            "--media-store",
            store.media_store.to_str().unwrap(),
            "--repo-db",
            repo_db,
            "--datastore",
            datastore.to_str().unwrap(),
            "--json",
        ],
        &store.dir,
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON report");
    eprintln!("import_synapse report: {report}");
    run
}

async fn synapse_jobs(media: usize, jobs: &[String], work: &Path, rows: &mut Vec<Row>) {
    let wants = |job: &str| jobs.iter().any(|j| j == job);
    // After the previous N's files (or whatever ran before) went.
    settle_after_deletion(work);
    let store = write_synapse_sqlite(&work.join("synapse"), &spec(media)).await;
    eprintln!(
        "N={media}: {} files, {} bytes ({} unique)",
        store.files, store.total_bytes, store.unique_bytes
    );
    if std::env::var_os("SCALE_BENCH_KEEP").is_some() {
        println!(
            "kept for a profiler: --synapse-db {} --media-store {}",
            store.sqlite_path.display(),
            store.media_store.display()
        );
        return;
    }
    read_into_page_cache(&store.media_store);
    let (_, cp) = time_shell(
        &format!("cp -r '{}' cp-copy", store.media_store.display()),
        work,
    );
    // The copy stays until the imports are done: on ext4 without a journal, allocating
    // inodes right after 100,000s were freed walks past the recently deleted ones (its
    // `recently_deleted`; see `settle_after_deletion`), a cost `cp -r` did not pay.

    let repo_db = format!("sqlite://{}", work.join("repo.db").display());
    let datastore = work.join("datastore");
    let run = import(&store, &repo_db, &datastore);
    rows.push(Row {
        job: "import_synapse → SQLite",
        media,
        elapsed: run.elapsed,
        reference: ("cp -r + sync", cp),
        peak: run.peak(),
    });
    if std::env::var_os("DATABASE_URL").is_some() && wants("import") {
        let db = TestDatabase::postgres().await;
        let pg_store = work.join("datastore-pg");
        let run = import(&store, &db.url, &pg_store);
        rows.push(Row {
            job: "import_synapse → PostgreSQL",
            media,
            elapsed: run.elapsed,
            reference: ("cp -r + sync", cp),
            peak: run.peak(),
        });
        std::fs::remove_dir_all(pg_store).unwrap();
    }
    std::fs::remove_dir_all(work.join("cp-copy")).unwrap();
    if wants("gdpr") {
        let media_store = store.media_store.display().to_string();
        let (_, tar_c) = time_shell(&format!("tar -cf store.tar -C '{media_store}' ."), work);
        std::fs::create_dir(work.join("untar")).unwrap();
        settle_after_deletion(work);
        let (_, tar_x) = time_shell("tar -xf store.tar -C untar", work);
        std::fs::remove_dir_all(work.join("untar")).unwrap();
        std::fs::remove_file(work.join("store.tar")).unwrap();
        // The store goes before the export is written: one copy of the bytes at a time
        // besides the repository's.
        std::fs::remove_dir_all(&store.dir).unwrap();

        let export = work.join("export");
        let args = |extra: [&str; 4]| {
            let mut args = vec![
                "--db".to_owned(),
                repo_db.clone(),
                "--datastore".to_owned(),
                datastore.display().to_string(),
                "--json".to_owned(),
            ];
            args.extend(extra.map(str::to_owned));
            args
        };
        let export_args = args([
            "--entity",
            &store.server_name,
            "--destination",
            export.to_str().unwrap(),
        ]);
        let refs: Vec<&str> = export_args.iter().map(String::as_str).collect();
        let run = run_binary("gdpr_export", &refs, work);
        rows.push(Row {
            job: "gdpr_export (server)",
            media,
            elapsed: run.elapsed,
            reference: ("tar -cf + sync", tar_c),
            peak: run.peak(),
        });
        // The import goes into a repository and datastore of its own.
        let target_db = format!("sqlite://{}", work.join("target.db").display());
        let target_store = work.join("target-store");
        let import_args = [
            "--db",
            &target_db,
            "--datastore",
            target_store.to_str().unwrap(),
            "--directory",
            export.to_str().unwrap(),
            "--json",
        ];
        std::fs::remove_dir_all(&datastore).unwrap();
        settle_after_deletion(work);
        let run = run_binary("gdpr_import", &import_args, work);
        rows.push(Row {
            job: "gdpr_import",
            media,
            elapsed: run.elapsed,
            reference: ("tar -xf + sync", tar_x),
            peak: run.peak(),
        });
    }
    for leftover in ["synapse", "datastore", "export", "target-store"] {
        std::fs::remove_dir_all(work.join(leftover)).ok();
    }
    for leftover in ["repo.db", "target.db"] {
        std::fs::remove_file(work.join(leftover)).ok();
    }
}

async fn cleanmedia_job(media: usize, work: &Path, rows: &mut Vec<Row>) {
    let store = DendriteFixture::new(Engine::Sqlite, false).await;
    let config = store.write_config("");
    store
        .generate(LargeStoreSpec {
            rows: media,
            directories: media / 2,
        })
        .await;
    read_into_page_cache(&store.media_path);
    time_shell(
        &format!("cp -a '{}' find-copy", store.media_path.display()),
        work,
    );
    let (_, find) = time_shell("find find-copy -delete", work);
    let run = run_binary(
        "cleanmedia",
        &[
            "-c",
            config.to_str().unwrap(),
            "--workdir",
            store.workdir.to_str().unwrap(),
            "--json",
        ],
        work,
    );
    rows.push(Row {
        job: "cleanmedia (Dendrite, SQLite)",
        media,
        elapsed: run.elapsed,
        reference: ("find -delete + sync", find),
        peak: run.peak(),
    });
    store.finish().await;
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("SCALE_BENCH_SIZES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("SCALE_BENCH_SIZES: numbers"))
        .collect();
    let jobs: Vec<String> = std::env::var("SCALE_BENCH_JOBS")
        .unwrap_or_else(|_| "import,gdpr,cleanmedia".into())
        .split(',')
        .map(|j| j.trim().to_owned())
        .collect();
    let mut rows = Vec::new();
    for &media in &sizes {
        let mut work = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        if std::env::var_os("SCALE_BENCH_KEEP").is_some() {
            work.disable_cleanup(true);
        }
        // A store, two repositories' copies and one reference copy: about 4 × 5 KiB a media.
        let needed = 20 * media as u64;
        let free = free_kib(work.path());
        assert!(
            free > needed,
            "N={media} needs about {needed} KiB free under {}, {free} KiB are",
            work.path().display()
        );
        if jobs.iter().any(|j| j == "import" || j == "gdpr") {
            synapse_jobs(media, &jobs, work.path(), &mut rows).await;
        }
        if jobs.iter().any(|j| j == "cleanmedia") {
            cleanmedia_job(media, work.path(), &mut rows).await;
        }
    }
    let first: BTreeMap<&str, f64> = rows
        .iter()
        .filter(|r| r.media == sizes[0])
        .map(|r| (r.job, r.rate()))
        .collect();
    println!(
        "| job | N | rate | ÷ reference (time) | reference | peak memory | rate ÷ rate at N={} |",
        sizes[0]
    );
    println!("|---|---|---|---|---|---|---|");
    for row in &rows {
        let (reference, reference_time) = row.reference;
        let share = first.get(row.job).map_or("n/a".to_owned(), |r| {
            format!("{:.0}%", 100.0 * row.rate() / r)
        });
        println!(
            "| {} | {} | {:.0} media/s | {:.2}× | {reference} {:.1} s | {} | {share} |",
            row.job,
            row.media,
            row.rate(),
            row.elapsed.as_secs_f64() / reference_time.as_secs_f64(),
            reference_time.as_secs_f64(),
            row.peak,
        );
    }
}
