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

use media_tests::bench::env_or;
use media_tests::dendrite::{DendriteFixture, Engine, LargeStoreSpec};

/// A figure `/usr/bin/time -v` reported (e.g. "Maximum resident set size (kbytes)").
fn time_figure(time_output: &str, label: &str) -> Option<f64> {
    time_output
        .lines()
        .find_map(|l| l.trim().strip_prefix(label)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

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
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(&binary)
        .arg("-c")
        .arg(&config)
        .arg("--workdir")
        .arg(&store.workdir)
        .arg("--json")
        .output()
        .expect("run /usr/bin/time -v cleanmedia");
    let elapsed = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Ok(path) = std::env::var("BENCH_STDERR") {
        std::fs::write(format!("{path}.{engine:?}"), stderr.as_bytes()).unwrap();
    }
    assert!(out.status.success(), "cleanmedia failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let purge = &report["purge"];
    assert_eq!(purge["media_rows_deleted"], spec.rows, "{report}");
    assert_eq!(purge["thumbnail_rows_deleted"], spec.rows);
    assert_eq!(purge["directories_removed"], spec.directories);
    assert_eq!(purge["bytes_freed"], disk_bytes);
    let rss = time_figure(&stderr, "Maximum resident set size (kbytes)")
        .map_or("n/a".to_owned(), |k| format!("{:.1} MiB", k / 1024.0));
    let cpu = time_figure(&stderr, "User time (seconds)")
        .zip(time_figure(&stderr, "System time (seconds)"))
        .map_or("n/a".to_owned(), |(user, system)| {
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
