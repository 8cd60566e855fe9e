//! Running the workspace's binaries: [`TestCommand`] builds a command line, runs it and,
//! when the outcome is not the expected one, panics with everything needed to see why
//! (the command line, its exit status, what it printed and what its working directory
//! holds).

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Where cargo builds a binary of this workspace: beside the test executables
/// (`target/<profile>/<name>`, the tests running from `target/<profile>/deps`).
fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile folder");
    dir.join(name)
}

/// The path of a binary of this workspace, built by cargo beside the test executables
/// (`target/<profile>/<name>`, the tests running from `target/<profile>/deps`).
pub fn binary(name: &str) -> PathBuf {
    built_binary(name).unwrap_or_else(|| {
        panic!(
            "{} is not built: run `cargo build --bins` (or the tests through ./scripts/test) \
             so the binaries are built first",
            binary_path(name).display()
        )
    })
}

/// Like [`binary`], but `None` when it is not built (for a benchmark that measures a
/// binary only where it exists).
pub fn built_binary(name: &str) -> Option<PathBuf> {
    Some(binary_path(name)).filter(|path| path.exists())
}

/// One run of a workspace binary, built up like a [`Command`]: arguments, environment,
/// working directory and standard input. `RUST_LOG` is removed from its environment, so
/// that what a tool logs does not depend on the shell the tests run from.
///
/// ```no_run
/// # use media_tests::TestCommand;
/// # let dir = std::path::Path::new(".");
/// let out = TestCommand::new("gdpr_import")
///     .args(["--directory", "archive", "--json"])
///     .current_dir(dir)
///     .assert_exit(0);
/// ```
#[derive(Debug)]
pub struct TestCommand {
    command: Command,
    stdin: Option<Vec<u8>>,
}

impl TestCommand {
    /// A run of the workspace binary `name` (see [`binary`]).
    pub fn new(name: &str) -> Self {
        let mut command = Command::new(binary(name));
        command.env_remove("RUST_LOG");
        Self {
            command,
            stdin: None,
        }
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, A>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.command.env(name, value);
        self
    }

    /// Sets the working directory (listed when the run does not end as expected).
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.command.current_dir(dir);
        self
    }

    /// Gives the run these bytes on its standard input (by default it reads nothing).
    pub fn stdin(&mut self, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Runs the command to its end and returns what it printed and its exit status,
    /// whatever that is. Panics, describing the command, only when it cannot be run.
    pub fn output(&mut self) -> Output {
        self.command.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.command.stdin(match self.stdin {
            Some(_) => Stdio::piped(),
            None => Stdio::null(),
        });
        let mut child = self.command.spawn().unwrap_or_else(|e| {
            panic!("cannot run it ({e}):\n{}", self.command_line());
        });
        // Written from a thread of its own: a child that prints before it reads would
        // otherwise block on a full pipe while we block on its input.
        let writer = match (child.stdin.take(), self.stdin.clone()) {
            (Some(mut pipe), Some(bytes)) => {
                Some(std::thread::spawn(move || pipe.write_all(&bytes)))
            }
            _ => None,
        };
        let output = child.wait_with_output().unwrap_or_else(|e| {
            panic!("lost the run ({e}):\n{}", self.command_line());
        });
        if let Some(writer) = writer {
            // A child that exits without reading all its input is not the writer's
            // fault: the exit status says what happened.
            let _ = writer.join().expect("the stdin writer panicked");
        }
        output
    }

    /// Runs the command and returns its output if it exited with `code`; panics with the
    /// command line, its exit status, its stdout and stderr and a listing of its working
    /// directory otherwise.
    pub fn assert_exit(&mut self, code: i32) -> Output {
        self.assert_exit_in(&[code])
    }

    /// Like [`assert_exit`](Self::assert_exit), for a run that may end with any of `codes`
    /// (as `&[0, 1]`: done, whether or not some items failed).
    pub fn assert_exit_in(&mut self, codes: &[i32]) -> Output {
        let output = self.output();
        match output.status.code() {
            Some(code) if codes.contains(&code) => output,
            _ => panic!(
                "expected exit code {}, got {}\n{}",
                codes
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(" or "),
                output.status,
                self.describe(&output)
            ),
        }
    }

    /// The command line as a shell would take it, with the working directory and the
    /// environment changes in front.
    fn command_line(&self) -> String {
        let mut line = String::new();
        if let Some(dir) = self.command.get_current_dir() {
            let _ = write!(line, "cd {} && ", quoted(dir.as_os_str()));
        }
        let (set, removed): (Vec<_>, Vec<_>) = self
            .command
            .get_envs()
            .partition(|(_, value)| value.is_some());
        if !(set.is_empty() && removed.is_empty()) {
            line.push_str("env ");
        }
        for (name, _) in removed {
            let _ = write!(line, "-u {} ", name.to_string_lossy());
        }
        for (name, value) in set {
            let value = value.unwrap_or_default();
            let _ = write!(line, "{}={} ", name.to_string_lossy(), quoted(value));
        }
        line.push_str(&quoted(self.command.get_program()));
        for arg in self.command.get_args() {
            line.push(' ');
            line.push_str(&quoted(arg));
        }
        line
    }

    /// Everything about a finished run that explains an unexpected outcome.
    fn describe(&self, output: &Output) -> String {
        let listing = match self.command.get_current_dir() {
            Some(dir) => directory_listing(dir),
            None => "(the test's own working directory, not listed)".to_owned(),
        };
        format!(
            "===== command =====\n{}\n===== exit =====\n{}\n===== stdout =====\n{}\n\
             ===== stderr =====\n{}\n===== working directory =====\n{listing}",
            self.command_line(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        )
    }
}

/// `text` as one shell word: as it is when it is plain, else in single quotes.
fn quoted(text: &OsStr) -> String {
    let text = text.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// At most this many entries of a working directory are listed.
const LISTED_ENTRIES: usize = 200;

/// Every file and folder under `root` (relative paths, sorted, sizes of files), up to
/// [`LISTED_ENTRIES`].
fn directory_listing(root: &Path) -> String {
    let mut entries = Vec::new();
    let mut folders = vec![root.to_owned()];
    while let Some(folder) = folders.pop() {
        let Ok(children) = std::fs::read_dir(&folder) else {
            entries.push(format!("{} (unreadable)", folder.display()));
            continue;
        };
        for child in children.flatten() {
            let path = child.path();
            let name = path.strip_prefix(root).unwrap_or(&path).display();
            match child.metadata() {
                Ok(meta) if meta.is_dir() => {
                    entries.push(format!("{name}/"));
                    folders.push(path);
                }
                Ok(meta) => entries.push(format!("{name} ({} bytes)", meta.len())),
                Err(e) => entries.push(format!("{name} ({e})")),
            }
        }
    }
    entries.sort();
    let total = entries.len();
    entries.truncate(LISTED_ENTRIES);
    let mut listing = format!("{} ({total} entries)", root.display());
    for entry in entries {
        listing.push_str("\n  ");
        listing.push_str(&entry);
    }
    if total > LISTED_ENTRIES {
        let _ = write!(listing, "\n  … and {} more", total - LISTED_ENTRIES);
    }
    listing
}

/// The JSON report a tool printed on stdout (with `--json`); panics with its output
/// when there is none.
pub fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stdout: {} stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `import_synapse` of the committed SQLite Synapse fixture (made by a real Synapse) into
/// the repository `repo` and `datastore`, run from `cwd`; add flags, then run it. The
/// fixture has a media that was never uploaded, so a full import exits 1.
pub fn import_sqlite_fixture(cwd: &Path, repo: &str, datastore: &str) -> TestCommand {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite");
    let mut command = TestCommand::new("import_synapse");
    command
        .arg("--synapse-db")
        .arg(fixture.join("homeserver.db"))
        .arg("--media-store")
        .arg(fixture.join("media_store"))
        .args(["--repo-db", repo, "--datastore", datastore])
        .current_dir(cwd);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of `sh` (not a workspace binary) through the same builder.
    fn shell(script: &str) -> TestCommand {
        let mut command = Command::new("sh");
        command.args(["-c", script]).env_remove("RUST_LOG");
        TestCommand {
            command,
            stdin: None,
        }
    }

    #[test]
    fn the_expected_exit_code_returns_the_output_and_stdin_reaches_the_program() {
        let out = shell("cat; echo oops >&2; exit 1")
            .stdin("piped in")
            .assert_exit_in(&[0, 1]);
        assert_eq!(out.stdout, b"piped in");
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(shell("exit 3").output().status.code(), Some(3));
    }

    #[test]
    fn an_unexpected_exit_code_panics_with_the_command_its_output_and_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/file.bin"), b"12345").unwrap();
        let panic = std::panic::catch_unwind(|| {
            shell("echo to stdout; echo to stderr >&2; exit 2")
                .env("GREETING", "hello world")
                .current_dir(dir.path())
                .assert_exit(0)
        })
        .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        for part in [
            "expected exit code 0, got exit status: 2",
            "env -u RUST_LOG GREETING='hello world' sh -c 'echo to stdout; echo to stderr >&2; exit 2'",
            &format!("cd {} && ", dir.path().display()),
            "to stdout",
            "to stderr",
            "sub/\n",
            "sub/file.bin (5 bytes)",
        ] {
            assert!(message.contains(part), "no {part:?} in\n{message}");
        }
    }

    #[test]
    fn a_shell_word_is_quoted_only_when_it_needs_to_be() {
        assert_eq!(
            quoted(OsStr::new("--db=sqlite://a/b.db")),
            "--db=sqlite://a/b.db"
        );
        assert_eq!(quoted(OsStr::new("it's")), r"'it'\''s'");
        assert_eq!(quoted(OsStr::new("")), "''");
    }
}
