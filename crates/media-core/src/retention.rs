//! Retention: which media a purge deletes, which it keeps and why, and which content
//! directories go with them. Pure functions over candidate records; no I/O.
//!
//! Content is shared: several media rows may point at one content (a Dendrite hash
//! directory, a blob of our repository). So candidates are planned in **content groups**:
//! every row that uses one content, together. A content is removed only when every row of
//! its group is deleted; one kept row keeps it. Callers stream groups page by page, so a
//! plan never needs a whole table in memory.
//!
//! Candidates carry validated identifiers: a store's rows are decoded before they are
//! planned, and a row that cannot be decoded is never a candidate. Its content must still
//! be kept, which [`PagePlan::keep_contents_in_use`] does.

use std::collections::BTreeMap;

use crate::ids::UserId;
use crate::records::MediaKey;

/// Whether a media was uploaded to this server or cached from another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Locality {
    /// Uploaded by a user of this server.
    Local,
    /// Cached from another server; it can be fetched again.
    Remote,
}

/// One media row as a purge sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The media: origin and media ID.
    pub key: MediaKey,
    /// The uploader, for local media (`None` for remote media).
    pub uploader: Option<UserId>,
    /// Local or remote.
    pub locality: Locality,
    /// When the row was created (for remote media: cached), ms since the epoch.
    pub created_ts: i64,
    /// The content this row uses (a hash); rows with equal content share one stored copy.
    pub content: String,
    /// The content's size in bytes.
    pub size_bytes: u64,
    /// Whether the media is in use as a profile, room or member avatar.
    pub avatar: bool,
}

/// Which media a purge is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Media created before `cutoff_ms`: remote media, and local media too when
    /// `include_local` is set.
    OlderThan {
        /// Media created at or after this time (ms since the epoch) are kept.
        cutoff_ms: i64,
        /// Whether local uploads are purged too.
        include_local: bool,
    },
    /// Exactly one media, whatever its age or locality.
    Media {
        /// Its origin and media ID.
        key: MediaKey,
    },
    /// Every media one user uploaded, whatever its age.
    User {
        /// The uploader.
        user_id: UserId,
    },
}

/// A retention policy: a selection, and what is protected from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// The media the purge is about.
    pub selection: Selection,
    /// Keep media in use as avatars even when selected.
    pub keep_avatars: bool,
}

impl RetentionPolicy {
    /// Remote media older than `days` days before `now_ms` (and local media with
    /// `include_local`), avatars kept: the default purge.
    pub fn older_than_days(days: u32, include_local: bool, now_ms: i64) -> Self {
        Self {
            selection: Selection::OlderThan {
                cutoff_ms: now_ms - i64::from(days) * 86_400_000,
                include_local,
            },
            keep_avatars: true,
        }
    }
}

/// Why a selectable row was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeepReason {
    /// It is in use as an avatar.
    Avatar,
    /// It is younger than the cutoff.
    Recent,
    /// It is a local upload and local media are not purged.
    Local,
    /// The selection does not name it (another row of a `-m`/`-u` purge's content group).
    NotSelected,
}

/// What the policy does with one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delete the row.
    Delete,
    /// Keep it, for this reason.
    Keep(KeepReason),
}

/// The verdict of `policy` on one candidate.
pub fn verdict(policy: &RetentionPolicy, candidate: &Candidate) -> Verdict {
    let selected = match &policy.selection {
        Selection::OlderThan {
            cutoff_ms,
            include_local,
        } => {
            if candidate.locality == Locality::Local && !include_local {
                return Verdict::Keep(KeepReason::Local);
            }
            if candidate.created_ts >= *cutoff_ms {
                return Verdict::Keep(KeepReason::Recent);
            }
            true
        }
        Selection::Media { key } => candidate.key == *key,
        Selection::User { user_id } => {
            candidate.locality == Locality::Local && candidate.uploader.as_ref() == Some(user_id)
        }
    };
    if !selected {
        Verdict::Keep(KeepReason::NotSelected)
    } else if policy.keep_avatars && candidate.avatar {
        Verdict::Keep(KeepReason::Avatar)
    } else {
        Verdict::Delete
    }
}

/// A content whose every row is deleted, so its stored copy can go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentRef {
    /// The content (hash).
    pub content: String,
    /// Its size as the rows recorded it.
    pub size_bytes: u64,
}

/// The plan for one page of content groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PagePlan {
    /// Rows to delete, by their full key (origin AND media ID).
    pub delete_rows: Vec<MediaKey>,
    /// Contents no remaining row uses once `delete_rows` are gone.
    pub remove_contents: Vec<ContentRef>,
    /// Counts of what was kept.
    pub kept: Kept,
}

impl PagePlan {
    /// Keeps the contents that rows outside this plan use (`in_use` says which): rows of
    /// the page the caller could not make candidates of, say. Such a content is not
    /// removed, whatever the plan deleted; it is counted as shared with a kept row.
    pub fn keep_contents_in_use(&mut self, in_use: impl Fn(&str) -> bool) {
        let before = self.remove_contents.len();
        self.remove_contents.retain(|c| !in_use(&c.content));
        self.kept.shared_contents += (before - self.remove_contents.len()) as u64;
    }
}

/// What a plan keeps, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    /// Selectable rows kept, by reason ([`KeepReason::NotSelected`] rows are not counted:
    /// the purge was not about them).
    pub rows: BTreeMap<KeepReason, u64>,
    /// Contents that lost rows but stay, because a kept row still uses them.
    pub shared_contents: u64,
}

impl Kept {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Kept) {
        for (reason, n) in &other.rows {
            *self.rows.entry(*reason).or_default() += n;
        }
        self.shared_contents += other.shared_contents;
    }

    /// Kept rows for `reason`.
    pub fn rows_for(&self, reason: KeepReason) -> u64 {
        self.rows.get(&reason).copied().unwrap_or(0)
    }
}

/// Plans one page of candidates. The page must hold whole content groups (every row that
/// uses a content), in any order; rows of one content need not be adjacent.
pub fn plan_page(policy: &RetentionPolicy, candidates: &[Candidate]) -> PagePlan {
    let mut groups: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for candidate in candidates {
        groups
            .entry(candidate.content.as_str())
            .or_default()
            .push(candidate);
    }
    let mut plan = PagePlan::default();
    for (content, rows) in groups {
        let mut kept_any = false;
        let mut deleted_any = false;
        for row in &rows {
            match verdict(policy, row) {
                Verdict::Delete => {
                    deleted_any = true;
                    plan.delete_rows.push(row.key.clone());
                }
                Verdict::Keep(reason) => {
                    kept_any = true;
                    if reason != KeepReason::NotSelected {
                        *plan.kept.rows.entry(reason).or_default() += 1;
                    }
                }
            }
        }
        match (deleted_any, kept_any) {
            (true, false) => plan.remove_contents.push(ContentRef {
                content: content.to_owned(),
                size_bytes: rows.iter().map(|r| r.size_bytes).max().unwrap_or(0),
            }),
            (true, true) => plan.kept.shared_contents += 1,
            _ => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const NOW: i64 = 1_000 * DAY;

    fn key(origin: &str, id: &str) -> MediaKey {
        MediaKey::new(origin.parse().unwrap(), id.parse().unwrap())
    }

    fn alice() -> UserId {
        "@alice:here.example".parse().unwrap()
    }

    fn media(
        origin: &str,
        id: &str,
        locality: Locality,
        age_days: i64,
        content: &str,
    ) -> Candidate {
        Candidate {
            key: key(origin, id),
            uploader: match locality {
                Locality::Local => Some(alice()),
                Locality::Remote => None,
            },
            locality,
            created_ts: NOW - age_days * DAY,
            content: content.into(),
            size_bytes: 10,
            avatar: false,
        }
    }

    fn remote(id: &str, age_days: i64, content: &str) -> Candidate {
        media("there.example", id, Locality::Remote, age_days, content)
    }

    fn local(id: &str, age_days: i64, content: &str) -> Candidate {
        media("here.example", id, Locality::Local, age_days, content)
    }

    fn deleted_ids(plan: &PagePlan) -> Vec<&str> {
        plan.delete_rows
            .iter()
            .map(|r| r.media_id.as_str())
            .collect()
    }

    fn removed(plan: &PagePlan) -> Vec<&str> {
        plan.remove_contents
            .iter()
            .map(|c| c.content.as_str())
            .collect()
    }

    #[test]
    fn old_remote_media_are_deleted_and_recent_ones_kept() {
        let policy = RetentionPolicy::older_than_days(30, false, NOW);
        let plan = plan_page(&policy, &[remote("old", 31, "h1"), remote("new", 29, "h2")]);
        assert_eq!(deleted_ids(&plan), ["old"]);
        assert_eq!(removed(&plan), ["h1"]);
        assert_eq!(plan.kept.rows_for(KeepReason::Recent), 1);
    }

    #[test]
    fn the_cutoff_itself_is_kept() {
        let policy = RetentionPolicy::older_than_days(30, false, NOW);
        assert_eq!(
            verdict(&policy, &remote("edge", 30, "h")),
            Verdict::Keep(KeepReason::Recent)
        );
        let policy = RetentionPolicy::older_than_days(0, false, NOW);
        assert_eq!(
            verdict(&policy, &remote("now", 0, "h")),
            Verdict::Keep(KeepReason::Recent)
        );
        assert_eq!(verdict(&policy, &remote("past", 1, "h")), Verdict::Delete);
    }

    #[test]
    fn local_media_are_kept_unless_local_purge_is_asked_for() {
        let old_local = local("mine", 400, "h");
        let without = RetentionPolicy::older_than_days(30, false, NOW);
        assert_eq!(
            verdict(&without, &old_local),
            Verdict::Keep(KeepReason::Local)
        );
        let with = RetentionPolicy::older_than_days(30, true, NOW);
        assert_eq!(verdict(&with, &old_local), Verdict::Delete);
        assert_eq!(
            verdict(&with, &local("young", 1, "h")),
            Verdict::Keep(KeepReason::Recent)
        );
    }

    #[test]
    fn avatars_are_kept_remote_and_local_in_every_selection() {
        let mut remote_avatar = remote("ra", 400, "h1");
        remote_avatar.avatar = true;
        let mut local_avatar = local("la", 400, "h2");
        local_avatar.avatar = true;
        let policies = [
            RetentionPolicy::older_than_days(30, true, NOW),
            RetentionPolicy {
                selection: Selection::Media {
                    key: key("there.example", "ra"),
                },
                keep_avatars: true,
            },
            RetentionPolicy {
                selection: Selection::User { user_id: alice() },
                keep_avatars: true,
            },
        ];
        for policy in &policies {
            let plan = plan_page(policy, &[remote_avatar.clone(), local_avatar.clone()]);
            assert!(plan.delete_rows.is_empty(), "{policy:?}");
            assert!(plan.remove_contents.is_empty(), "{policy:?}");
        }
        let plan = plan_page(&policies[0], &[remote_avatar.clone(), local_avatar.clone()]);
        assert_eq!(plan.kept.rows_for(KeepReason::Avatar), 2);
        let unprotected = RetentionPolicy {
            keep_avatars: false,
            ..policies[0].clone()
        };
        assert_eq!(verdict(&unprotected, &remote_avatar), Verdict::Delete);
    }

    #[test]
    fn a_content_stays_while_any_kept_row_uses_it() {
        let policy = RetentionPolicy::older_than_days(30, false, NOW);
        // An old remote copy and a recent local upload of the same bytes.
        let page = [remote("old", 90, "shared"), local("fresh", 1, "shared")];
        let plan = plan_page(&policy, &page);
        assert_eq!(deleted_ids(&plan), ["old"]);
        assert!(plan.remove_contents.is_empty());
        assert_eq!(plan.kept.shared_contents, 1);
    }

    #[test]
    fn a_content_goes_when_every_row_using_it_goes() {
        let policy = RetentionPolicy::older_than_days(30, false, NOW);
        let mut other_origin = remote("b", 60, "shared");
        other_origin.key.origin = "elsewhere.example".parse().unwrap();
        let page = [
            remote("a", 90, "shared"),
            other_origin,
            remote("c", 45, "solo"),
        ];
        let plan = plan_page(&policy, &page);
        assert_eq!(plan.delete_rows.len(), 3);
        assert_eq!(removed(&plan), ["shared", "solo"]);
        assert_eq!(plan.kept.shared_contents, 0);
    }

    #[test]
    fn groups_need_not_be_adjacent_in_a_page() {
        let policy = RetentionPolicy::older_than_days(30, false, NOW);
        let page = [
            remote("a", 90, "x"),
            remote("b", 90, "y"),
            remote("c", 1, "x"),
        ];
        let plan = plan_page(&policy, &page);
        assert_eq!(removed(&plan), ["y"]);
        assert_eq!(plan.kept.shared_contents, 1);
    }

    #[test]
    fn one_media_is_matched_on_origin_and_media_id() {
        let policy = RetentionPolicy {
            selection: Selection::Media {
                key: key("there.example", "same"),
            },
            keep_avatars: true,
        };
        let mut other_origin = remote("same", 400, "h2");
        other_origin.key.origin = "elsewhere.example".parse().unwrap();
        let plan = plan_page(&policy, &[remote("same", 0, "h1"), other_origin]);
        assert_eq!(plan.delete_rows, [key("there.example", "same")]);
        assert_eq!(removed(&plan), ["h1"]);
        assert!(
            plan.kept.rows.is_empty(),
            "rows the purge is not about are not counted"
        );
    }

    #[test]
    fn one_media_sharing_its_content_leaves_the_content() {
        let policy = RetentionPolicy {
            selection: Selection::Media {
                key: key("here.example", "dup1"),
            },
            keep_avatars: true,
        };
        let plan = plan_page(&policy, &[local("dup1", 5, "h"), local("dup2", 5, "h")]);
        assert_eq!(deleted_ids(&plan), ["dup1"]);
        assert!(plan.remove_contents.is_empty());
        assert_eq!(plan.kept.shared_contents, 1);
    }

    #[test]
    fn a_user_purge_takes_that_users_uploads_of_any_age() {
        let policy = RetentionPolicy {
            selection: Selection::User { user_id: alice() },
            keep_avatars: true,
        };
        let mut bobs = local("bob1", 400, "h3");
        bobs.uploader = Some("@bob:here.example".parse().unwrap());
        let plan = plan_page(
            &policy,
            &[local("new", 0, "h1"), local("old", 400, "h2"), bobs],
        );
        assert_eq!(deleted_ids(&plan), ["new", "old"]);
        assert_eq!(removed(&plan), ["h1", "h2"]);
    }

    #[test]
    fn removed_content_size_comes_from_its_rows() {
        let policy = RetentionPolicy::older_than_days(1, false, NOW);
        let mut big = remote("a", 9, "h");
        big.size_bytes = 1234;
        let plan = plan_page(&policy, &[big]);
        assert_eq!(plan.remove_contents[0].size_bytes, 1234);
    }

    #[test]
    fn a_content_rows_outside_the_plan_use_is_kept_as_shared() {
        let policy = RetentionPolicy::older_than_days(30, false, NOW);
        let mut plan = plan_page(&policy, &[remote("a", 90, "x"), remote("b", 90, "y")]);
        assert_eq!(removed(&plan), ["x", "y"]);
        plan.keep_contents_in_use(|content| content == "y");
        assert_eq!(removed(&plan), ["x"]);
        assert_eq!(deleted_ids(&plan), ["a", "b"], "the rows still go");
        assert_eq!(plan.kept.shared_contents, 1);
    }

    #[test]
    fn kept_counts_add_up() {
        let mut total = Kept::default();
        let mut page = Kept::default();
        page.rows.insert(KeepReason::Avatar, 2);
        page.shared_contents = 1;
        total.add(&page);
        total.add(&page);
        assert_eq!(total.rows_for(KeepReason::Avatar), 4);
        assert_eq!(total.rows_for(KeepReason::Recent), 0);
        assert_eq!(total.shared_contents, 2);
    }
}
