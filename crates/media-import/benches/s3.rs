//! Object storage (issue #14): `import_synapse` straight into S3, and a file datastore moved
//! to S3 by `media_admin datastores transfer`, each against `rclone copy` of the same files to
//! the same server in the same run (and the transfer also against object_store's raw puts).
//!
//! `cargo build --release --bins && cargo bench -p media-import --bench s3`
//!
//! The server: `S3_BENCH_ENDPOINT` (e.g. `http://127.0.0.1:3900`) with the bucket
//! `S3_BENCH_BUCKET` (default `media-tests`), the credentials in `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY` and the region in `AWS_REGION` (default `garage`);
//! `S3_BENCH_SERVER` names it in the output. Without `S3_BENCH_ENDPOINT` the bench starts a
//! throwaway Garage with `scripts/garage-dev` (its binary from `GARAGE_BIN` or the PATH) and
//! stops it at the end. Every contender writes below a fresh prefix of its own; on a server
//! the bench did not start, those prefixes are deleted at the end.
//!
//! Sizes: `S3_BENCH_MEDIA` (default 20000) media of 4–64 KiB, one thumbnail each, in a
//! generated Synapse-shaped store (`media_tests::synthetic_synapse`, ~20% repeating
//! another's bytes), imported by the release `import_synapse` into a fresh SQLite
//! repository; `S3_BENCH_TRANSFER_MIB` (default 1024) of distinct 1–16 MiB blobs in a file
//! datastore (put there by an untimed import), moved by the release `media_admin`. Zero skips
//! a part; `S3_BENCH_VERIFY` (`received`, the default, `hash` or `size`) is the transfer's `--verify`.
//! `S3_BENCH_WORKERS` (default 8, as the tools) is our worker count, rclone's
//! `--transfers` and the raw puts' concurrency. The binaries run under `/usr/bin/time -v`
//! (peak memory is their maximum RSS); the raw puts run in a process of their own (their
//! peak is its `VmHWM`). `TMPDIR` chooses the filesystem of the stores (and of Garage).
//!
//! Throughput is the whole source (every file, duplicates and thumbnails included) over the
//! wall time, the same for every contender; the ratio is ours ÷ the reference's throughput
//! (≥ 1.0: at least as fast).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use media_tests::bench::{TimedRun, env_or, mib, read_into_page_cache, rerun_self, run_timed};
use media_tests::synthetic_synapse::{SyntheticSpec, SyntheticStore, write_synapse_sqlite};
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;

/// Set (to the folder to put) in the child process that measures object_store's raw puts.
const RAW_PUT_PHASE_VAR: &str = "S3_BENCH_RAW_PUT_FROM";
/// The prefix the raw puts write below, in that child.
const RAW_PUT_PREFIX_VAR: &str = "S3_BENCH_RAW_PUT_TO";

/// The S3-compatible server the contenders write to.
struct S3Server {
    endpoint: String,
    bucket: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
    /// What the output calls it.
    label: String,
    /// The Garage this bench started, stopped when the server is dropped.
    garage_dir: Option<PathBuf>,
}

impl S3Server {
    /// `S3_BENCH_ENDPOINT` and friends, or a Garage started by `scripts/garage-dev` in
    /// `work`.
    fn from_env(work: &Path) -> Self {
        let (vars, garage_dir) = match std::env::var("S3_BENCH_ENDPOINT") {
            Ok(_) => (std::env::vars().collect::<HashMap<_, _>>(), None),
            Err(_) => {
                let dir = work.join("garage");
                (start_garage(&dir), Some(dir))
            }
        };
        let var = |name: &str| {
            vars.get(name)
                .cloned()
                .unwrap_or_else(|| panic!("{name} is not set (see the top of benches/s3.rs)"))
        };
        let endpoint = var("S3_BENCH_ENDPOINT");
        Self {
            label: match &garage_dir {
                Some(_) => format!("Garage at {endpoint} (scripts/garage-dev)"),
                None => std::env::var("S3_BENCH_SERVER").unwrap_or_else(|_| endpoint.clone()),
            },
            bucket: vars
                .get("S3_BENCH_BUCKET")
                .cloned()
                .unwrap_or_else(|| "media-tests".to_owned()),
            region: vars
                .get("AWS_REGION")
                .cloned()
                .unwrap_or_else(|| "garage".to_owned()),
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            endpoint,
            garage_dir,
        }
    }

    /// Our datastore URI for `prefix` in the bucket.
    fn datastore_uri(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}?endpoint={}&region={}",
            self.bucket, self.endpoint, self.region
        )
    }

    /// Gives `command` the server's credentials and region.
    fn credentials(&self, command: &mut Command) {
        command
            .env("AWS_ACCESS_KEY_ID", &self.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_access_key)
            .env("AWS_REGION", &self.region);
    }

    /// `rclone SUBCOMMAND` with the server's settings on the command line (no rclone
    /// configuration file).
    fn rclone(&self, subcommand: &str) -> Command {
        let mut command = Command::new("rclone");
        command
            // rclone 1.60 refuses any AWS_CA_BUNDLE ("unsupported transport"), and the
            // endpoint is given here anyway.
            .env_remove("AWS_CA_BUNDLE")
            .arg(subcommand)
            .args(["--s3-provider", "Other", "--s3-endpoint", &self.endpoint])
            .args(["--s3-access-key-id", &self.access_key_id])
            .args(["--s3-secret-access-key", &self.secret_access_key])
            .args(["--s3-region", &self.region, "-q"]);
        command
    }

    /// `prefix` in the bucket, as rclone names it.
    fn rclone_remote(&self, prefix: &str) -> String {
        format!(":s3:{}/{prefix}", self.bucket)
    }

    /// The objects below `prefix` and their total size (`rclone size`).
    fn objects_below(&self, prefix: &str) -> (u64, u64) {
        let out = self
            .rclone("size")
            .arg(self.rclone_remote(prefix))
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let size: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            size["count"].as_u64().unwrap(),
            size["bytes"].as_u64().unwrap(),
        )
    }

    /// `rclone copy SOURCE` to `prefix`, `transfers` files at a time.
    fn rclone_copy(&self, source: &Path, prefix: &str, transfers: usize) -> Command {
        let mut command = self.rclone("copy");
        command
            .arg(source)
            .arg(self.rclone_remote(prefix))
            .args(["--transfers", &transfers.to_string()]);
        command
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(dir) = &self.garage_dir {
            let stopped = Command::new(garage_dev()).arg("stop").arg(dir).status();
            if !stopped.is_ok_and(|status| status.success()) {
                eprintln!("could not stop the Garage in {}", dir.display());
            }
        }
    }
}

fn garage_dev() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/garage-dev")
}

/// Starts Garage in `dir`; returns the variables its `export` lines set.
fn start_garage(dir: &Path) -> HashMap<String, String> {
    let out = Command::new(garage_dev())
        .arg("start")
        .arg(dir)
        .output()
        .expect("run scripts/garage-dev");
    assert!(
        out.status.success(),
        "S3_BENCH_ENDPOINT is not set and no Garage could be started (set S3_BENCH_ENDPOINT \
         to an S3-compatible server, or GARAGE_BIN to a garage binary):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// What one contender moved: the files and bytes of its source.
#[derive(Clone, Copy)]
struct Work {
    media: usize,
    files: usize,
    bytes: u64,
}

/// One contender's outcome: measured, or why not.
struct Contender {
    name: String,
    outcome: Result<Measured, String>,
}

impl Contender {
    /// Counts what the measured contender left below `prefix` on the server.
    fn count_objects(mut self, server: &S3Server, prefix: &str) -> Self {
        if let Ok(measured) = &mut self.outcome {
            measured.objects = Some(server.objects_below(prefix));
        }
        self
    }
}

struct Measured {
    elapsed: Duration,
    peak: String,
    /// The objects it wrote and their bytes, once counted.
    objects: Option<(u64, u64)>,
}

impl From<&TimedRun> for Measured {
    fn from(run: &TimedRun) -> Self {
        Self {
            elapsed: run.elapsed,
            peak: run.peak(),
            objects: None,
        }
    }
}

/// Runs `command`; a failure is the contender's outcome (the last lines it printed), not a
/// panic, so that the other rows still print.
fn contender(name: &str, command: &Command) -> (Contender, TimedRun) {
    eprintln!("running {name}…");
    let run = run_timed(command);
    let outcome = if run.status.success() {
        Ok(Measured::from(&run))
    } else {
        let said: Vec<_> = run
            .stderr
            .lines()
            .take_while(|l| !l.trim_start().starts_with("Command being timed"))
            .collect();
        Err(format!(
            "failed ({}): {}",
            run.status,
            said[said.len().saturating_sub(3)..].join(" / ")
        ))
    };
    let name = name.to_owned();
    (Contender { name, outcome }, run)
}

/// Prints one table: each contender's time, throughput, ratios to the references (by their
/// index in `contenders`) and peak memory.
fn print_table(title: &str, work: Work, contenders: &[Contender], references: &[usize]) {
    println!(
        "\n{title}: {} media, {} files, {:.0} MiB",
        work.media,
        work.files,
        mib(work.bytes)
    );
    let against: Vec<String> = references
        .iter()
        .map(|&r| format!("ratio to {}", contenders[r].name))
        .collect();
    println!(
        "| contender | time | media/s | MiB/s | {} | peak memory | objects written |",
        against.join(" | ")
    );
    println!(
        "|---|---|---|---|{}---|---|",
        "---|".repeat(references.len())
    );
    for contender in contenders {
        let Ok(measured) = &contender.outcome else {
            let why = contender.outcome.as_ref().err().unwrap();
            println!("| {} | {why} |", contender.name);
            continue;
        };
        let seconds = measured.elapsed.as_secs_f64();
        let ratios: Vec<String> = references
            .iter()
            .map(|&r| match &contenders[r].outcome {
                // Ours ÷ the reference's throughput = the reference's time ÷ ours.
                Ok(reference) => format!("{:.2}×", reference.elapsed.as_secs_f64() / seconds),
                Err(_) => "—".to_owned(),
            })
            .collect();
        let objects = measured.objects.map_or("—".to_owned(), |(count, bytes)| {
            format!("{count} ({:.0} MiB)", mib(bytes))
        });
        println!(
            "| {} | {seconds:.2} s | {:.0} | {:.1} | {} | {} | {objects} |",
            contender.name,
            work.media as f64 / seconds,
            mib(work.bytes) / seconds,
            ratios.join(" | "),
            measured.peak,
        );
    }
}

/// `import_synapse` (release) of `store` into a new SQLite repository at `repo` and
/// `datastore`, `workers` at a time.
fn import_command(store: &SyntheticStore, repo: &Path, datastore: &str, workers: usize) -> Command {
    let mut command = Command::new(media_tests::binary("import_synapse"));
    command
        .arg("--synapse-db")
        .arg(&store.sqlite_path)
        .arg("--media-store")
        .arg(&store.media_store)
        .arg("--repo-db")
        .arg(format!("sqlite://{}", repo.display()))
        .args(["--datastore", datastore])
        .args(["--workers", &workers.to_string(), "--json"]);
    command
}

/// Checks that an import imported every media.
fn assert_imported_everything(run: &TimedRun, store: &SyntheticStore) {
    let report: serde_json::Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", run.stderr));
    assert_eq!(
        report["media_imported"].as_u64(),
        Some(store.media as u64),
        "{report}"
    );
}

/// Part 1: 4–64 KiB media from a Synapse media store into S3.
async fn bench_import(work_dir: &Path, server: &S3Server, run: &str, workers: usize) {
    let media: usize = env_or("S3_BENCH_MEDIA", 20_000);
    if media == 0 {
        return;
    }
    let store =
        write_synapse_sqlite(&work_dir.join("small"), &SyntheticSpec::small_media(media)).await;
    let work = Work {
        media: store.media,
        files: store.files,
        bytes: store.total_bytes,
    };
    read_into_page_cache(&store.media_store);

    let prefix = format!("{run}/rclone-import");
    let (rclone, _) = contender(
        &format!("`rclone copy --transfers {workers}`"),
        &server.rclone_copy(&store.media_store, &prefix, workers),
    );
    let rclone = rclone.count_objects(server, &prefix);
    let prefix = format!("{run}/import");
    let mut import = import_command(
        &store,
        &work_dir.join("import-repo.db"),
        &server.datastore_uri(&prefix),
        workers,
    );
    server.credentials(&mut import);
    let (ours, timed) = contender(&format!("`import_synapse --workers {workers}`"), &import);
    if ours.outcome.is_ok() {
        assert_imported_everything(&timed, &store);
    }
    let ours = ours.count_objects(server, &prefix);
    print_table(
        "import into S3 (media and thumbnails)",
        work,
        &[rclone, ours],
        &[0],
    );
}

/// The regular files below `dir` and their total size.
fn files_below(dir: &Path) -> (Vec<PathBuf>, u64) {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    let bytes = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    (files, bytes)
}

/// Part 2: a file datastore of 1–16 MiB blobs moved to S3.
async fn bench_transfer(work_dir: &Path, server: &S3Server, run: &str, workers: usize) {
    let size_mib: u64 = env_or("S3_BENCH_TRANSFER_MIB", 1024);
    if size_mib == 0 {
        return;
    }
    let spec = SyntheticSpec {
        duplicate_ratio: 0.0,
        ..SyntheticSpec::large_media(size_mib << 20)
    };
    let store = write_synapse_sqlite(&work_dir.join("large"), &spec).await;
    // The source: a file datastore and its repository, filled by an (untimed) import.
    let source = work_dir.join("file-datastore");
    let source_uri = format!("file://{}", source.display());
    let repo = work_dir.join("transfer-repo.db");
    let setup = run_timed(&import_command(&store, &repo, &source_uri, workers));
    assert!(setup.status.success(), "{}", setup.stderr);
    assert_imported_everything(&setup, &store);
    std::fs::remove_dir_all(&store.dir).unwrap();
    let (files, bytes) = files_below(&source);
    let work = Work {
        media: store.media,
        files: files.len(),
        bytes,
    };
    read_into_page_cache(&source);

    let prefix = format!("{run}/rclone-transfer");
    let (rclone, _) = contender(
        &format!("`rclone copy --transfers {workers}`"),
        &server.rclone_copy(&source, &prefix, workers),
    );
    let rclone = rclone.count_objects(server, &prefix);
    let prefix = format!("{run}/raw-put");
    let raw_put = Contender {
        name: format!("object_store raw put, {workers} at once"),
        outcome: Ok(time_raw_put(server, &source, &prefix)),
    }
    .count_objects(server, &prefix);
    // Last: a transfer deletes its source.
    // How the transfer checks each copy: `--verify received` (the tool's default),
    // `hash` (every copy read back and hashed) or `size`.
    let verify = std::env::var("S3_BENCH_VERIFY").unwrap_or_else(|_| "received".to_owned());
    let name = format!("`media_admin datastores transfer --workers {workers} --verify {verify}`");
    let ours = match media_tests::built_binary("media_admin") {
        None => Contender {
            name,
            outcome: Err("media_admin not built".to_owned()),
        },
        Some(binary) => {
            let prefix = format!("{run}/transfer");
            let mut transfer = Command::new(binary);
            transfer
                .args(["datastores", "transfer", "--repo-db"])
                .arg(format!("sqlite://{}", repo.display()))
                .args(["--from", &source_uri])
                .args(["--to", &server.datastore_uri(&prefix)])
                .args([
                    "--workers",
                    &workers.to_string(),
                    "--verify",
                    &verify,
                    "--json",
                ]);
            server.credentials(&mut transfer);
            contender(&name, &transfer).0.count_objects(server, &prefix)
        }
    };
    print_table(
        "file datastore → S3 (distinct blobs)",
        work,
        &[rclone, raw_put, ours],
        &[0, 1],
    );
}

/// object_store's puts of every file below `source`, in a process of its own (so that its
/// peak memory is its own).
fn time_raw_put(server: &S3Server, source: &Path, prefix: &str) -> Measured {
    eprintln!("running object_store raw puts…");
    let text = rerun_self([
        (RAW_PUT_PHASE_VAR, source.as_os_str()),
        (RAW_PUT_PREFIX_VAR, prefix.as_ref()),
        ("S3_BENCH_ENDPOINT", server.endpoint.as_ref()),
        ("S3_BENCH_BUCKET", server.bucket.as_ref()),
        ("AWS_ACCESS_KEY_ID", server.access_key_id.as_ref()),
        ("AWS_SECRET_ACCESS_KEY", server.secret_access_key.as_ref()),
        ("AWS_REGION", server.region.as_ref()),
    ]);
    let (seconds, peak_mib) = text.trim().split_once(' ').expect("seconds peak-MiB");
    Measured {
        elapsed: Duration::from_secs_f64(seconds.parse().unwrap()),
        peak: format!("{:.1} MiB", peak_mib.parse::<f64>().unwrap()),
        objects: None,
    }
}

/// In the child: reads each file below the source and puts it (one request each),
/// `S3_BENCH_WORKERS` at a time; prints "seconds peak-MiB".
async fn run_raw_put_phase() {
    let var = |name: &str| std::env::var(name).expect("set by the parent");
    let source = PathBuf::from(var(RAW_PUT_PHASE_VAR));
    let prefix = var(RAW_PUT_PREFIX_VAR);
    let endpoint = var("S3_BENCH_ENDPOINT");
    let store = Arc::new(
        AmazonS3Builder::from_env()
            .with_endpoint(&endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(var("S3_BENCH_BUCKET"))
            .build()
            .unwrap(),
    );
    let (files, _) = files_below(&source);
    let start = Instant::now();
    futures::stream::iter(files)
        .map(|file| {
            let store = store.clone();
            let key = object_store::path::Path::from(format!(
                "{prefix}/{}",
                file.strip_prefix(&source).unwrap().display()
            ));
            async move {
                let bytes = tokio::fs::read(&file).await?;
                store
                    .put(&key, bytes.into())
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            }
        })
        .buffer_unordered(env_or("S3_BENCH_WORKERS", 8))
        .try_collect::<()>()
        .await
        .unwrap();
    println!(
        "{} {}",
        start.elapsed().as_secs_f64(),
        media_tests::bench::peak_memory_mib()
    );
}

#[tokio::main]
async fn main() {
    if std::env::var_os(RAW_PUT_PHASE_VAR).is_some() {
        return run_raw_put_phase().await;
    }
    let work = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let server = S3Server::from_env(work.path());
    let workers: usize = env_or("S3_BENCH_WORKERS", 8);
    let run = format!(
        "bench-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    println!(
        "server: {} | bucket {} | prefix {run}/ | {workers} workers",
        server.label, server.bucket
    );
    bench_import(work.path(), &server, &run, workers).await;
    bench_transfer(work.path(), &server, &run, workers).await;
    if server.garage_dir.is_none() {
        let purge = server
            .rclone("purge")
            .arg(server.rclone_remote(&run))
            .status();
        if !purge.is_ok_and(|status| status.success()) {
            eprintln!("could not delete {run}/ from the bucket");
        }
    }
}
