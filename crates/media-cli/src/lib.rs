//! Plumbing shared by the toolkit's command-line tools, so each binary stays a thin
//! parse → wire → report → exit-code layer.
//!
//! For programs that embed the toolkit as libraries this crate is optional: it holds
//! what every tool's command line shares ([`Exit`] codes, [`RepositoryArgs`] and opening
//! the repository they name with [`RepositoryArgs::open`], [`Verbosity`], the progress
//! bar) and small parsers such as [`parse_byte_size`]:
//!
//! ```
//! use media_cli::parse_byte_size;
//!
//! assert_eq!(parse_byte_size("200MiB"), Ok(200 * 1024 * 1024));
//! assert_eq!(parse_byte_size("1.5G"), Ok(1536 * 1024 * 1024));
//! assert!(parse_byte_size("ten bytes").is_err());
//! ```
#![deny(missing_docs)]

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use media_core::progress::Progress;
use media_core::run::{Classify, ErrorClass, Report};

mod repository;

pub use repository::{REPOSITORY_HEADING, RepositoryAccess, RepositoryArgs};

/// The exit codes every tool of the toolkit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: everything was done.
    Done,
    /// 1: done, but some items failed; the report lists them.
    ItemsFailed,
    /// 2: a usage or configuration error; nothing was done.
    Usage,
    /// 3: a fatal error stopped the run.
    Fatal,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(match exit {
            Exit::Done => 0,
            Exit::ItemsFailed => 1,
            Exit::Usage => 2,
            Exit::Fatal => 3,
        })
    }
}

/// `-q`/`-v` flags, shared by every tool.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct Verbosity {
    /// Only print errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more detail (repeat for even more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Verbosity {
    /// Sends log lines to stderr at the chosen level; `RUST_LOG`, when set, wins.
    pub fn init_logging(self) {
        let level = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info",
            (false, 2) => "debug",
            (false, _) => "trace",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        let colour = colour_logs(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(colour)
            .try_init();
    }
}

/// Whether log lines get ANSI colours: only when stderr is a terminal (never in cron's
/// mail, journald or a file), and never when `NO_COLOR` is set to a non-empty value
/// (<https://no-color.org>).
pub fn colour_logs(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Rewrites Go-style flags (`-dbHost value`, `-dbHost=value`, as matrix-media-repo's tools
/// take them) into this tool's `--db-host value` form, so existing command lines keep
/// working. `aliases` maps Go names to our long flag names; other arguments pass through.
pub fn translate_go_flags(
    args: impl IntoIterator<Item = String>,
    aliases: &[(&str, &str)],
) -> Vec<String> {
    args.into_iter()
        .map(|arg| {
            let Some(flag) = arg.strip_prefix('-').filter(|f| !f.starts_with('-')) else {
                return arg;
            };
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (flag, None),
            };
            match aliases.iter().find(|(go, _)| *go == name) {
                Some((_, ours)) => match value {
                    Some(value) => format!("--{ours}={value}"),
                    None => format!("--{ours}"),
                },
                None => arg,
            }
        })
        .collect()
}

/// Where and how a tool prints its report and errors: `--json`, `-q` or for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A report for people on stdout, errors on stderr.
    Human,
    /// Nothing on stdout unless items failed; errors on stderr.
    Quiet,
    /// The report, or `{"error": {"class": …, "message": …}}`, as JSON on stdout (errors
    /// also on stderr, for people watching).
    Json,
}

impl Output {
    /// The output the `--json` and `-q` flags ask for (`--json` wins).
    pub fn new(json: bool, verbosity: Verbosity) -> Self {
        match (json, verbosity.quiet) {
            (true, _) => Self::Json,
            (false, true) => Self::Quiet,
            (false, false) => Self::Human,
        }
    }
}

impl Exit {
    /// The exit code of a run stopped by an error of `class`.
    pub fn for_class(class: ErrorClass) -> Self {
        match class {
            ErrorClass::Usage => Self::Usage,
            ErrorClass::Item => Self::ItemsFailed,
            ErrorClass::Fatal => Self::Fatal,
        }
    }
}

/// An error that stopped a tool's run: its class (which decides the exit code) and the
/// message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    /// How bad it is.
    pub class: ErrorClass,
    /// What, where, and what to do next.
    pub message: String,
}

impl RunError {
    /// A usage or configuration error (exit code 2).
    pub fn usage(message: impl std::fmt::Display) -> Self {
        Self {
            class: ErrorClass::Usage,
            message: message.to_string(),
        }
    }

    /// An error of the toolkit's libraries, in the class it says it is in.
    pub fn of<E: Classify + std::fmt::Display>(error: E) -> Self {
        Self {
            class: error.class(),
            message: error.to_string(),
        }
    }
}

/// Prints a tool's final report: as JSON on stdout with `--json`, otherwise for people
/// (unless quiet and nothing failed). Returns the exit code the report calls for.
pub fn print_report<R: Report>(report: &R, output: Output) -> Exit {
    let failed = report.has_failures();
    match output {
        Output::Json => match serde_json::to_string_pretty(report) {
            Ok(text) => write_stdout(&format!("{text}\n")),
            Err(e) => eprintln!("the report could not be written as JSON: {e}"),
        },
        Output::Quiet if !failed => {}
        Output::Human | Output::Quiet => write_stdout(&report.to_string()),
    }
    if failed {
        Exit::ItemsFailed
    } else {
        Exit::Done
    }
}

/// Writes `text` to stdout. A reader that went away (`… --json | head`) is not an
/// error: the rest of the report is dropped, as `cat` and `ls` do, instead of a panic.
fn write_stdout(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => eprintln!("the report could not be written to stdout: {e}"),
    }
}

/// The end of every tool's `main`: prints an error that stopped the run (prefixed with
/// the tool's name on stderr, and as a JSON error object on stdout with `--json`) and
/// turns the outcome into the process exit code, in one place for every tool.
pub fn exit_with(tool: &str, output: Output, outcome: Result<Exit, RunError>) -> ExitCode {
    match outcome {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("{tool}: {}", error.message);
            if output == Output::Json {
                let object = serde_json::json!({
                    "error": { "class": error.class, "message": error.message }
                });
                write_stdout(&format!("{object:#}\n"));
            }
            Exit::for_class(error.class).into()
        }
    }
}

/// Parses a byte size as people write it: `1048576`, `200MiB`, `100M`, `1.5GiB`, `64k`
/// (K, M, G, T are powers of 1024 with or without `iB`; `B` alone is bytes).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: write e.g. 200MiB, 1G or 1048576"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown size unit {other:?}: use K, M, G or T")),
    };
    let bytes = number * (1u64 << shift) as f64;
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("{text:?} is not a usable size"));
    }
    Ok(bytes as u64)
}

/// The flags that print a tool's shell completions or man page, for packagers and
/// installers: `tool --generate-completions bash`, `tool --generate-man > tool.1`. They
/// are not part of a tool's own flags (so `--help` does not list them): see
/// [`print_docs_if_asked`].
#[derive(Debug, Clone, Default, Args)]
struct DocsArgs {
    /// Print the shell completion script for SHELL on stdout.
    #[arg(long, value_name = "SHELL", conflicts_with = "generate_man")]
    generate_completions: Option<clap_complete::Shell>,

    /// Print the man page (roff) on stdout.
    #[arg(long)]
    generate_man: bool,
}

/// When the command line (`args`, program name first) asks for the shell completions
/// (`--generate-completions SHELL`) or the man page (`--generate-man`) of the tool whose
/// parser is `C`, writes them to stdout and returns the exit code; otherwise `None`, and
/// the tool parses its command line as usual. Checked before the tool's own parsing, so
/// neither its required flags nor values set in the environment get in the way; any
/// other flag next to these is a usage error.
pub fn print_docs_if_asked<C: clap::CommandFactory>(args: &[String]) -> Option<Exit> {
    let asked = args.iter().skip(1).any(|arg| {
        arg == "--generate-man"
            || arg == "--generate-completions"
            || arg.starts_with("--generate-completions=")
    });
    if !asked {
        return None;
    }
    let mut command = C::command();
    let name = command.get_name().to_owned();
    let docs_command = DocsArgs::augment_args(clap::Command::new("docs").bin_name(&name));
    let docs = docs_command
        .try_get_matches_from(args)
        .and_then(|matches| <DocsArgs as clap::FromArgMatches>::from_arg_matches(&matches))
        .unwrap_or_else(|e| e.exit());
    // Rendered into memory first: clap_complete panics on a failed write (`| head`).
    let mut text = Vec::new();
    let rendered = match docs.generate_completions {
        Some(shell) => {
            clap_complete::generate(shell, &mut command, name.clone(), &mut text);
            Ok(())
        }
        None => clap_mangen::Man::new(command).render(&mut text),
    };
    let written = rendered.and_then(|()| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(&text).and_then(|()| out.flush())
    });
    Some(match written {
        Ok(()) => Exit::Done,
        Err(e) => {
            eprintln!("{name}: the documentation could not be written: {e}");
            Exit::Fatal
        }
    })
}

/// Reads a tool's command line (`args`, program name first; `std::env::args()` in a
/// tool) into its parser `C`, the same way in every tool: Go-style flags named in
/// `aliases` are rewritten first ([`translate_go_flags`]); a command line asking for the
/// shell completions or the man page gets them printed and its exit code back as the
/// error ([`print_docs_if_asked`]); a command line `C` refuses ends the process with
/// clap's message and exit code 2.
pub fn parse_command_line<C: clap::Parser>(
    args: impl IntoIterator<Item = String>,
    aliases: &[(&str, &str)],
) -> Result<C, Exit> {
    let args = translate_go_flags(args, aliases);
    match print_docs_if_asked::<C>(&args) {
        Some(exit) => Err(exit),
        None => Ok(C::parse_from(args)),
    }
}

/// The report flags most tools share: `--json`, and `-q`/`-v`.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct ReportArgs {
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub verbosity: Verbosity,
}

impl ReportArgs {
    /// Where and how the report and errors are printed.
    pub fn output(&self) -> Output {
        Output::new(self.json, self.verbosity)
    }
}

/// What a tool's parsed command line tells [`run_tool`].
pub trait ToolArgs: clap::Parser {
    /// Where and how the report and errors are printed (`--json`, `-q`).
    fn output(&self) -> Output;

    /// The logging the flags ask for (`-q`, `-v`).
    fn verbosity(&self) -> Verbosity;
}

/// Threads a tool's runtime runs blocking work on (file reads and writes, hashing), at
/// most. Tokio's default (512) let bursts of short file operations start a thread each:
/// an import of 100,000 small media kept some 200 idle threads and peaked at 380 MiB
/// with mimalloc, whose per-thread heaps (and transparent huge pages) held most of it.
/// With this bound and the system allocator the same import peaks at 80 MiB, as fast.
/// Every tool keeps at most a few dozen blocking operations in flight; the rest wait
/// their turn.
const BLOCKING_THREADS: usize = 32;

/// A tool's whole `main`, the same in every tool: reads the command line into `C`
/// ([`parse_command_line`], with the Go-style `aliases`), starts logging, runs `run` on a
/// multi-threaded runtime whose blocking pool is bounded (see `BLOCKING_THREADS`) and
/// turns its outcome into the exit code ([`exit_with`]).
pub fn run_tool<C: ToolArgs>(
    tool: &str,
    aliases: &[(&str, &str)],
    run: impl AsyncFnOnce(&C) -> Result<Exit, RunError>,
) -> ExitCode {
    let cli: C = match parse_command_line(std::env::args(), aliases) {
        Ok(cli) => cli,
        Err(exit) => return exit.into(),
    };
    cli.verbosity().init_logging();
    let output = cli.output();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build();
    let outcome = match runtime {
        Ok(runtime) => runtime.block_on(run(&cli)),
        Err(e) => Err(RunError {
            class: ErrorClass::Fatal,
            message: format!("cannot start the runtime: {e}"),
        }),
    };
    exit_with(tool, output, outcome)
}

/// A progress bar on stderr, drawn only when stderr is a terminal; it polls a job's
/// [`Progress`] counters a few times a second.
pub struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressBar {
    /// Starts a bar (or nothing, when stderr is not a terminal, or the output is quiet or
    /// JSON).
    pub fn start(output: Output, progress: Arc<Progress>) -> Self {
        if output != Output::Human || !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{wide_bar} {pos}/{len} media, {msg} [{elapsed_precise}, ETA {eta}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let ticker = bar.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            while !ticker.is_finished() {
                let done = progress.items_done.load(Ordering::Relaxed);
                let total = progress.items_total.load(Ordering::Relaxed);
                let bytes = progress.bytes.load(Ordering::Relaxed);
                ticker.set_length(total);
                ticker.set_position(done);
                let rate = bytes as f64 / started.elapsed().as_secs_f64().max(0.001);
                ticker.set_message(format!(
                    "{} ({}/s)",
                    indicatif::HumanBytes(bytes),
                    indicatif::HumanBytes(rate as u64)
                ));
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Self { bar: Some(bar) }
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_people_write_them() {
        assert_eq!(parse_byte_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_byte_size("200MiB"), Ok(200 << 20));
        assert_eq!(parse_byte_size("100M"), Ok(100 << 20));
        assert_eq!(parse_byte_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_byte_size("64k"), Ok(64 << 10));
        for bad in ["", "MiB", "12 parsecs", "0", "-5"] {
            assert!(parse_byte_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour_logs(true, None));
        assert!(colour_logs(true, Some(OsStr::new(""))));
        assert!(!colour_logs(true, Some(OsStr::new("1"))));
        assert!(!colour_logs(false, None));
        assert!(!colour_logs(false, Some(OsStr::new(""))));
    }

    #[test]
    fn a_command_line_is_parsed_after_its_go_style_flags_are_rewritten() {
        #[derive(Debug, clap::Parser)]
        struct Tool {
            #[arg(long)]
            db_host: String,
            #[arg(long)]
            workers: u16,
        }
        let args = ["tool", "-dbHost=db", "--workers", "4"].map(String::from);
        let tool: Tool = parse_command_line(args, &[("dbHost", "db-host")]).unwrap();
        assert_eq!((tool.db_host.as_str(), tool.workers), ("db", 4));
    }

    #[test]
    fn go_style_flags_become_long_flags() {
        let args = [
            "tool",
            "-dbHost",
            "db",
            "-dbPort=5433",
            "--workers",
            "4",
            "-v",
            "-x",
        ]
        .map(String::from);
        let out = translate_go_flags(args, &[("dbHost", "db-host"), ("dbPort", "db-port")]);
        assert_eq!(
            out,
            [
                "tool",
                "--db-host",
                "db",
                "--db-port=5433",
                "--workers",
                "4",
                "-v",
                "-x"
            ]
        );
    }
}
