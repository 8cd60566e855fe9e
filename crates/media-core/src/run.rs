//! The vocabulary every job of the toolkit shares: whether it changes anything
//! ([`RunMode`]), how bad an error is ([`ErrorClass`], which decides the exit code), the
//! items that failed ([`Failures`], one cap policy for every tool) and what a finished run
//! reports ([`Report`]).
//!
//! ```
//! use media_core::run::{Failures, Reason, RunMode};
//!
//! #[derive(Debug, Clone, Copy, PartialEq, Eq)]
//! enum Why { FileMissing }
//!
//! impl Reason for Why {
//!     fn code(self) -> &'static str { "file_missing" }
//! }
//!
//! let mut failures = Failures::default();
//! failures.push("mxc://example.org/abc", Why::FileMissing, "no such file");
//! assert_eq!(failures.count(), 1);
//! assert_eq!(failures.count_of(Why::FileMissing), 1);
//! assert!(RunMode::from_dry_run(true).is_dry_run());
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Whether a job only plans (a dry run) or applies its plan. The same code computes the
/// plan either way; only the apply step looks at the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// Compute and report the plan; change nothing.
    DryRun,
    /// Carry the plan out.
    #[default]
    Apply,
}

impl RunMode {
    /// The mode a `--dry-run` flag asks for.
    pub fn from_dry_run(dry_run: bool) -> Self {
        if dry_run { Self::DryRun } else { Self::Apply }
    }

    /// True for a dry run.
    pub fn is_dry_run(self) -> bool {
        self == Self::DryRun
    }

    /// True when the job changes things.
    pub fn applies(self) -> bool {
        self == Self::Apply
    }

    /// What a report's first line adds for this mode: `" (dry run: nothing changed)"`, or
    /// nothing.
    pub fn headline_suffix(self) -> &'static str {
        match self {
            Self::DryRun => " (dry run: nothing changed)",
            Self::Apply => "",
        }
    }
}

/// How bad an error is. Every error type of the toolkit says which class each of its
/// errors is in ([`Classify`]), and the command-line tools map classes to exit codes in
/// one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The command line, a configuration or a location is wrong: nothing was done, and
    /// the operator can fix it (exit code 2).
    Usage,
    /// One item could not be handled; the others were (exit code 1).
    Item,
    /// Something stopped the run part-way: a database, a disk or a network failed (exit
    /// code 3). What was done is consistent and a new run carries on.
    Fatal,
}

/// An error that knows its [`ErrorClass`].
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;

    /// Shorthand for `class() == ErrorClass::Usage`.
    fn is_usage(&self) -> bool {
        self.class() == ErrorClass::Usage
    }
}

/// Why an item failed: a small enum per job, each value with a stable code that reports
/// (human and JSON) write. The code is the reason's only spelling: [`Failures`] writes it
/// in JSON too, so a reason needs no serde attributes of its own.
pub trait Reason: Copy + Eq + fmt::Debug {
    /// The reason as a stable `snake_case` code, e.g. `file_missing`.
    fn code(self) -> &'static str;
}

/// One item that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(bound(serialize = "R: Reason"))]
pub struct Failure<R> {
    /// The item: an `mxc://` URI, a thumbnail, a path or an archive entry.
    pub item: String,
    /// Why, as a typed reason (its code in reports).
    #[serde(serialize_with = "code_of")]
    pub reason: R,
    /// What happened, for people: the path, the expected and actual values, the error.
    pub detail: String,
}

/// The items of a run that failed: all counted (in total and per reason), the first
/// [`Failures::LISTED`] kept with their details, so memory stays bounded however many
/// fail.
///
/// Serialized as `{"count": N, "by_reason": {"file_missing": N, …}, "listed": […],
/// "not_listed": N}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(bound(serialize = "R: Reason"))]
pub struct Failures<R> {
    count: u64,
    #[serde(serialize_with = "by_code")]
    by_reason: Vec<(R, u64)>,
    listed: Vec<Failure<R>>,
    not_listed: u64,
}

fn code_of<R: Reason, S: serde::Serializer>(reason: &R, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(reason.code())
}

fn by_code<R: Reason, S: serde::Serializer>(
    counts: &[(R, u64)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let map: BTreeMap<&str, u64> = counts.iter().map(|(r, n)| (r.code(), *n)).collect();
    map.serialize(serializer)
}

impl<R> Default for Failures<R> {
    fn default() -> Self {
        Self {
            count: 0,
            by_reason: Vec::new(),
            listed: Vec::new(),
            not_listed: 0,
        }
    }
}

impl<R: Reason> Failures<R> {
    /// How many failures are kept with their details; beyond that they are only counted.
    pub const LISTED: usize = 10_000;

    /// How many failures a report for people prints before "… and N more".
    pub const PRINTED: usize = 50;

    /// Records a failure.
    pub fn push(&mut self, item: impl Into<String>, reason: R, detail: impl Into<String>) {
        self.record(Failure {
            item: item.into(),
            reason,
            detail: detail.into(),
        });
    }

    /// Records a failure built elsewhere.
    pub fn record(&mut self, failure: Failure<R>) {
        self.count += 1;
        self.count_reason(failure.reason, 1);
        if self.listed.len() < Self::LISTED {
            self.listed.push(failure);
        } else {
            self.not_listed += 1;
        }
    }

    fn count_reason(&mut self, reason: R, n: u64) {
        match self.by_reason.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += n,
            None => self.by_reason.push((reason, n)),
        }
    }

    /// Adds another list's failures (a worker's, a part's) to this one, keeping the cap.
    pub fn merge(&mut self, other: Failures<R>) {
        for (reason, n) in other.by_reason {
            self.count_reason(reason, n);
        }
        self.count += other.count;
        self.not_listed += other.not_listed;
        for failure in other.listed {
            if self.listed.len() < Self::LISTED {
                self.listed.push(failure);
            } else {
                self.not_listed += 1;
            }
        }
    }

    /// Orders the listed failures by item, then detail, so that a run whose workers
    /// finish in any order lists them the same way every time.
    pub fn sort_listed(&mut self) {
        self.listed
            .sort_by(|a, b| a.item.cmp(&b.item).then_with(|| a.detail.cmp(&b.detail)));
    }

    /// How many items failed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// How many items failed for `reason`.
    pub fn count_of(&self, reason: R) -> u64 {
        self.by_reason
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// Whether anything failed.
    pub fn any(&self) -> bool {
        self.count > 0
    }

    /// The failures kept with their details, in the order they happened.
    pub fn listed(&self) -> &[Failure<R>] {
        &self.listed
    }

    /// Writes the failures for people, one per line (`  ITEM [reason]: detail`), at most
    /// [`Failures::PRINTED`] of them, then how many more there are.
    pub fn write_lines(&self, f: &mut impl fmt::Write) -> fmt::Result {
        for failure in self.listed.iter().take(Self::PRINTED) {
            writeln!(
                f,
                "  {} [{}]: {}",
                failure.item,
                failure.reason.code(),
                failure.detail
            )?;
        }
        let printed = self.listed.len().min(Self::PRINTED) as u64;
        if self.count > printed {
            writeln!(
                f,
                "  … and {} more (--json lists the first {})",
                self.count - printed,
                Self::LISTED
            )?;
        }
        Ok(())
    }
}

/// Where a run read from and where it wrote to, as a report's first line names them, so
/// that an operator reading a report (or a cron mail) knows which stores it is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Route {
    /// What was read: a Synapse database, an archive folder, a repository.
    pub from: String,
    /// What was written (or, in a dry run, would be).
    pub to: String,
}

impl Route {
    /// A route from `from` to `to`.
    pub fn new(from: impl fmt::Display, to: impl fmt::Display) -> Self {
        Self {
            from: from.to_string(),
            to: to.to_string(),
        }
    }

    /// Writes a report's first line: `TOOL: FROM → TO`, and what the mode adds.
    pub fn write_headline(
        &self,
        f: &mut impl fmt::Write,
        tool: &str,
        mode: RunMode,
    ) -> fmt::Result {
        writeln!(
            f,
            "{tool}: {} → {}{}",
            self.from,
            self.to,
            mode.headline_suffix()
        )
    }
}

/// What a finished run reports: printed for people ([`fmt::Display`]) or as JSON
/// ([`Serialize`]) by every tool the same way, and whether items failed (exit code 1).
pub trait Report: Serialize + fmt::Display {
    /// Whether the run was a dry run.
    fn mode(&self) -> RunMode;

    /// Whether some item failed; the report lists them.
    fn has_failures(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Why {
        Missing,
        Corrupt,
    }

    impl Reason for Why {
        fn code(self) -> &'static str {
            match self {
                Why::Missing => "missing",
                Why::Corrupt => "corrupt",
            }
        }
    }

    #[test]
    fn failures_beyond_the_cap_are_counted_not_kept() {
        let mut failures = Failures::default();
        for i in 0..Failures::<Why>::LISTED + 5 {
            failures.push(format!("item {i}"), Why::Missing, "gone");
        }
        failures.push("last", Why::Corrupt, "bad");
        assert_eq!(failures.count(), Failures::<Why>::LISTED as u64 + 6);
        assert_eq!(failures.listed().len(), Failures::<Why>::LISTED);
        assert_eq!(failures.count_of(Why::Corrupt), 1);
        let json = serde_json::to_value(&failures).unwrap();
        assert_eq!(json["not_listed"], 6);
        assert_eq!(
            json["by_reason"]["missing"],
            Failures::<Why>::LISTED as u64 + 5
        );
        assert_eq!(json["listed"][0]["reason"], "missing");
    }

    #[test]
    fn merged_failures_keep_counts_and_the_cap() {
        let mut a = Failures::default();
        a.push("a", Why::Missing, "x");
        let mut b = Failures::default();
        b.push("b", Why::Corrupt, "y");
        b.push("c", Why::Missing, "z");
        a.merge(b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.count_of(Why::Missing), 2);
        assert_eq!(a.listed()[2].item, "c");
        a.push("a", Why::Corrupt, "w");
        a.sort_listed();
        let order: Vec<_> = a.listed().iter().map(|f| (&*f.item, &*f.detail)).collect();
        assert_eq!(order, [("a", "w"), ("a", "x"), ("b", "y"), ("c", "z")]);
    }

    #[test]
    fn a_headline_names_both_ends_and_the_mode() {
        let route = Route::new("synapse:/srv/homeserver.db", "sqlite:///srv/repo.db");
        let mut text = String::new();
        route
            .write_headline(&mut text, "import_synapse", RunMode::DryRun)
            .unwrap();
        assert_eq!(
            text,
            "import_synapse: synapse:/srv/homeserver.db → sqlite:///srv/repo.db \
             (dry run: nothing changed)\n"
        );
    }

    #[test]
    fn people_see_a_bounded_list_and_how_many_more() {
        let mut failures = Failures::default();
        for i in 0..Failures::<Why>::PRINTED + 3 {
            failures.push(format!("item {i}"), Why::Missing, "gone");
        }
        let mut text = String::new();
        failures.write_lines(&mut text).unwrap();
        assert_eq!(text.lines().count(), Failures::<Why>::PRINTED + 1);
        assert!(text.contains("item 0 [missing]: gone"));
        assert!(text.ends_with("… and 3 more (--json lists the first 10000)\n"));
    }
}
