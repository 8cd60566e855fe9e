//! `cleanmedia` end to end on a generated Dendrite store: rows purged per second and the
//! peak memory of the real binary.
//!
//! `cargo build --release --bin cleanmedia && DATABASE_URL=postgres://… cargo bench -p
//! media-dendrite --bench dendrite_purge` (PostgreSQL is optional: without
//! `DATABASE_URL` only SQLite runs). `BENCH_ROWS` (default 200000) old remote media rows,
//! each with a thumbnail row, over `BENCH_DIRS` (default rows / 2) hash directories, a
//! fifth of them shared by several rows. The binary runs under `/usr/bin/time -v` (its
//! "Maximum resident set size" is the peak memory); the run includes reading avatars,
//! the sanity checks (every row's file checked, every directory checked against the
//! database) and the purge. `TMPDIR` chooses the filesystem; `BENCH_ENGINES` (default
//! `sqlite,postgres`) the databases.

use std::process::Command;
use std::time::Instant;

use media_tests::bench::{env_or, run_timed};
use media_tests::dendrite::{DendriteFixture, Engine, LargeStoreSpec};

async fn bench(engine: Engine, spec: LargeStoreSpec) {
    let store = DendriteFixture::new(engine, false).await;
    let config = store.write_config("");
    let started = Instant::now();
    let disk_bytes = store.generate(spec).await;
    eprintln!(
        "{engine:?}: generated {} rows over {} directories in {:.1} s",
        spec.rows,
        spec.directories,
        started.elapsed().as_secs_f64()
    );
    let binary = media_tests::binary("cleanmedia");
    let mut command = Command::new(&binary);
    command
        .arg("-c")
        .arg(&config)
        .arg("--workdir")
        .arg(&store.workdir)
        .arg("--json");
    let run = run_timed(&command);
    let elapsed = run.elapsed.as_secs_f64();
    if let Ok(path) = std::env::var("BENCH_STDERR") {
        std::fs::write(format!("{path}.{engine:?}"), run.stderr.as_bytes()).unwrap();
    }
    assert!(run.status.success(), "cleanmedia failed: {}", run.stderr);
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON report");
    let purge = &report["purge"];
    assert_eq!(purge["media_rows_deleted"], spec.rows, "{report}");
    assert_eq!(purge["thumbnail_rows_deleted"], spec.rows);
    assert_eq!(purge["directories_removed"], spec.directories);
    assert_eq!(purge["bytes_freed"], disk_bytes);
    let rss = run.peak();
    let cpu = run.cpu_seconds.map_or("n/a".to_owned(), |(user, system)| {
        format!("{user:.1} s user + {system:.1} s system")
    });
    println!(
        "| {engine:?} | {} rows, {} directories | {elapsed:.2} s | {:.0} rows/s | {cpu} | {rss} |",
        spec.rows,
        spec.directories,
        spec.rows as f64 / elapsed
    );
    store.finish().await;
}

#[tokio::main]
async fn main() {
    let rows: usize = env_or("BENCH_ROWS", 200_000);
    let spec = LargeStoreSpec {
        rows,
        directories: env_or("BENCH_DIRS", rows / 2),
    };
    println!("| engine | store | cleanmedia, end to end | throughput | its CPU time | peak RSS |");
    println!("|---|---|---|---|---|---|");
    let engines: String = env_or("BENCH_ENGINES", "sqlite,postgres".to_owned());
    if engines.contains("sqlite") {
        bench(Engine::Sqlite, spec).await;
    }
    if !engines.contains("postgres") {
        return;
    }
    if std::env::var("DATABASE_URL").is_ok() {
        bench(Engine::Postgres, spec).await;
    } else {
        eprintln!("DATABASE_URL is not set: PostgreSQL skipped");
    }
}
