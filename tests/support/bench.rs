//! Small helpers the benchmarks share.

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// The value of environment variable `name` parsed as a `T`, or `default` when it is
/// unset or does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `bytes` in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Flushes every dirty page (`sync`), so that no contender pays for an earlier one's
/// writes.
fn sync_disk() {
    assert!(Command::new("sync").status().unwrap().success());
}

/// How long ext4 without a journal keeps from reusing a freed inode while its inode
/// table block is dirty (60 s once it is written, plus 300 s until then: the kernel's
/// `recently_deleted`), with a margin.
const RECENT_DELETION_WINDOW: Duration = Duration::from_secs(370);

/// Waits, after a step that deleted many files below `dir`, until creating files there
/// costs what it costs on a fresh filesystem. On ext4 without a journal, each inode
/// allocated in the minutes after a deletion walks past every inode freed in them: after
/// a store of a million files went, `cp -r` ran two to four times slower, and not by the
/// same factor as the job it was compared with. Elsewhere this only syncs.
/// `BENCH_SETTLE_SECS` overrides the wait (0: none).
pub fn settle_after_deletion(dir: &Path) {
    sync_disk();
    let wait = match std::env::var("BENCH_SETTLE_SECS") {
        Ok(secs) => Duration::from_secs(secs.parse().expect("BENCH_SETTLE_SECS: seconds")),
        Err(_) if on_ext4_without_journal(dir) => RECENT_DELETION_WINDOW,
        Err(_) => Duration::ZERO,
    };
    if !wait.is_zero() {
        eprintln!(
            "waiting {} s for the deleted inodes below {} to age (ext4 without a journal)",
            wait.as_secs(),
            dir.display()
        );
        std::thread::sleep(wait);
    }
}

/// Whether `dir` is on an ext4 filesystem that has no journal: its mount (the longest
/// mount point above it in `/proc/self/mountinfo`) is ext4, and `/proc/fs/jbd2/` lists
/// no journal for its device.
fn on_ext4_without_journal(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // Fields: id parent major:minor root mount-point options … - fstype source options.
    let mount = mounts
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split(' ').nth(4)?;
            let mut rest = after.split(' ');
            let (fstype, source) = (rest.next()?, rest.next()?);
            dir.starts_with(mount_point)
                .then_some((mount_point.len(), fstype, source))
        })
        .max_by_key(|(len, _, _)| *len);
    let Some((_, "ext4", source)) = mount else {
        return false;
    };
    let device = source.rsplit('/').next().unwrap_or(source);
    let journals = std::fs::read_dir("/proc/fs/jbd2")
        .map(|entries| {
            entries.filter_map(Result::ok).any(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{device}-"))
            })
        })
        .unwrap_or(false);
    !journals
}

/// Runs a shell command in `dir` after a `sync`; returns its wall time, and its
/// wall time with a `sync` after it (the durable equivalent).
pub fn time_shell(command: &str, dir: &Path) -> (Duration, Duration) {
    sync_disk();
    let start = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "{command}");
    let done = start.elapsed();
    sync_disk();
    (done, start.elapsed())
}

/// Reads every file below `dir` once, so that every contender reads it from the page
/// cache.
pub fn read_into_page_cache(dir: &Path) {
    time_shell("find . -type f -exec cat {} + > /dev/null", dir);
}

/// A command run by [`run_timed`].
#[derive(Debug)]
pub struct TimedRun {
    /// Its wall time.
    pub elapsed: Duration,
    /// Its peak resident memory in MiB ("Maximum resident set size"), when reported.
    pub peak_mib: Option<f64>,
    /// Its user and system CPU seconds, when reported.
    pub cpu_seconds: Option<(f64, f64)>,
    /// How it ended.
    pub status: ExitStatus,
    /// What it printed on its standard output.
    pub stdout: Vec<u8>,
    /// What it printed on its standard error, `/usr/bin/time`'s figures included.
    pub stderr: String,
}

impl TimedRun {
    /// Its peak memory as "12.3 MiB", or "n/a".
    pub fn peak(&self) -> String {
        self.peak_mib
            .map_or("n/a".to_owned(), |mib| format!("{mib:.1} MiB"))
    }
}

/// Runs `command` under `/usr/bin/time -v`, after a `sync`, and measures it (wall time,
/// peak memory, CPU time). Panics when it cannot start.
pub fn run_timed(command: &Command) -> TimedRun {
    sync_disk();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-v")
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => timed.env(name, value),
            None => timed.env_remove(name),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        timed.current_dir(dir);
    }
    let start = Instant::now();
    let out = timed
        .output()
        .unwrap_or_else(|e| panic!("run /usr/bin/time -v {command:?}: {e}"));
    let elapsed = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    TimedRun {
        elapsed,
        peak_mib: time_figure(&stderr, "Maximum resident set size (kbytes)").map(|k| k / 1024.0),
        cpu_seconds: time_figure(&stderr, "User time (seconds)")
            .zip(time_figure(&stderr, "System time (seconds)")),
        status: out.status,
        stdout: out.stdout,
        stderr,
    }
}

/// A figure `/usr/bin/time -v` reported (e.g. "Maximum resident set size (kbytes)").
fn time_figure(time_output: &str, label: &str) -> Option<f64> {
    time_output
        .lines()
        .find_map(|l| l.trim().strip_prefix(label)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs this benchmark binary again, after a `sync`, with `vars` added to its
/// environment (which tell it to run one measured phase, in a process of its own so
/// that its peak memory is its own); returns what it printed.
pub fn rerun_self<'a>(vars: impl IntoIterator<Item = (&'a str, &'a std::ffi::OsStr)>) -> String {
    sync_disk();
    let out = Command::new(std::env::current_exe().unwrap())
        .envs(vars)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The peak resident memory of this process so far, in MiB (Linux `VmHWM`; NaN where
/// the kernel does not tell).
pub fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

/// A copy of the repository or Synapse database at `url`, named after it with `suffix`
/// added, for a destructive run to consume: a SQLite file is copied beside it (with its
/// `-wal` and `-shm`), a PostgreSQL database is created from it as a template (nothing
/// may be connected to it). Drop it with [`drop_database_copy`].
pub async fn copy_database(url: &str, suffix: &str) -> String {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let copy = format!("{path}.{suffix}");
        for extra in ["", "-wal", "-shm"] {
            if Path::new(&format!("{path}{extra}")).exists() {
                std::fs::copy(format!("{path}{extra}"), format!("{copy}{extra}")).unwrap();
            }
        }
        return format!("sqlite://{copy}");
    }
    let (server, name) = url.rsplit_once('/').expect("a database URL");
    let copy = format!("{name}_{suffix}");
    let mut conn = crate::any_connection(&crate::postgres_server_url()).await;
    let create = format!("CREATE DATABASE {copy} TEMPLATE {name}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("copy {name}: {e}"));
    format!("{server}/{copy}")
}

/// Removes a copy [`copy_database`] made.
pub async fn drop_database_copy(url: &str) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        for extra in ["", "-wal", "-shm"] {
            std::fs::remove_file(format!("{path}{extra}")).ok();
        }
        return;
    }
    let (_, name) = url.rsplit_once('/').expect("a database URL");
    let mut conn = crate::any_connection(&crate::postgres_server_url()).await;
    let drop = format!("DROP DATABASE {name} WITH (FORCE)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("drop {name}: {e}"));
}

/// Files below `dir` (`find DIR -type f`).
pub fn count_files(dir: &Path) -> usize {
    let out = Command::new("find")
        .arg(dir)
        .args(["-type", "f"])
        .output()
        .unwrap();
    out.stdout.iter().filter(|&&b| b == b'\n').count()
}

/// `cp -a FROM TO && sync`: a file whose copied pages are still being written back makes
/// its deletion wait for them, so a deleter timed on the copy never times its writeback.
pub fn copy_tree(from: &Path, to: &Path) {
    let command = format!("cp -a '{}' '{}' && sync", from.display(), to.display());
    time_shell(&command, Path::new("/"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ext4_without_a_journal_is_waited_for() {
        for not_ext4 in ["/proc", "/dev/shm", "/sys"] {
            assert!(!on_ext4_without_journal(Path::new(not_ext4)), "{not_ext4}");
        }
        let this_disk = on_ext4_without_journal(&std::env::temp_dir());
        eprintln!("the temporary folder is on ext4 without a journal: {this_disk}");
    }
}
