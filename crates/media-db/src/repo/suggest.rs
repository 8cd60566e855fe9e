//! Known uploaders and origins close to a name, for an export that found nothing: a
//! bounded number of index lookups, never a scan of the media table.

use super::Repository;
use crate::connect::on_pool;
use crate::error::{DbError, QueryContext};

/// Distinct uploaders or origins read (one index seek each) to rank by similarity.
const DISTINCT_READ: usize = 200;
/// Suggestions returned at most.
const SUGGESTIONS: usize = 5;

/// The Levenshtein distance between two strings, by characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Up to `SUGGESTIONS` (5) of `known` closest to `wanted` (case-insensitively), nearest
/// first, ignoring those too different to be meant.
pub fn closest(wanted: &str, known: impl IntoIterator<Item = String>) -> Vec<String> {
    let wanted = wanted.to_lowercase();
    let mut ranked: Vec<(usize, String)> = known
        .into_iter()
        .map(|k| (edit_distance(&wanted, &k.to_lowercase()), k))
        .filter(|(d, k)| *d <= (wanted.chars().count().max(k.chars().count()) / 4).max(2))
        .collect();
    ranked.sort();
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked
        .into_iter()
        .take(SUGGESTIONS)
        .map(|(_, k)| k)
        .collect()
}

impl Repository {
    /// Known uploaders and origins that `wanted` (a user ID, a server name, or a bare
    /// localpart such as `alice`) may have meant, nearest first: uploaders whose
    /// localpart is `wanted`'s (any server, any case), then the closest of the first
    /// distinct uploaders and origins.
    pub async fn suggest_entities(&self, wanted: &str) -> Result<Vec<String>, DbError> {
        let localpart = wanted
            .trim_start_matches('@')
            .split(':')
            .next()
            .unwrap_or("")
            .to_lowercase();
        let mut out = Vec::new();
        if !localpart.is_empty() {
            // An index range: every `@localpart:…`.
            let prefix = format!("@{localpart}:");
            let end = format!("@{localpart};");
            let exact: Vec<String> = on_pool!(&self.pool, |p| {
                sqlx::query_scalar(
                    "SELECT DISTINCT user_id FROM media WHERE user_id >= $1 AND user_id < $2 \
                     ORDER BY user_id LIMIT 5",
                )
                .bind(&prefix)
                .bind(&end)
                .fetch_all(p)
                .await
                .during("look up uploaders")?
            });
            out.extend(exact);
        }
        let near = if wanted.starts_with('@') {
            closest(wanted, self.distinct_values("user_id").await?)
        } else {
            closest(wanted, self.distinct_values("origin").await?)
        };
        for name in near {
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out.retain(|name| name != wanted);
        out.truncate(SUGGESTIONS);
        Ok(out)
    }

    /// The first [`DISTINCT_READ`] distinct values of an indexed column of `media`, by
    /// skipping from one value to the next (a loose index scan).
    async fn distinct_values(&self, column: &'static str) -> Result<Vec<String>, DbError> {
        let sql =
            format!("SELECT {column} FROM media WHERE {column} > $1 ORDER BY {column} LIMIT 1");
        let mut values: Vec<String> = Vec::new();
        let mut last = String::new();
        while values.len() < DISTINCT_READ {
            let next: Option<String> = on_pool!(&self.pool, |p| {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(&last)
                    .fetch_optional(p)
                    .await
                    .during("list known uploaders and origins")?
            });
            let Some(next) = next else { break };
            last.clone_from(&next);
            values.push(next);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_names_come_first_and_strangers_are_left_out() {
        assert_eq!(edit_distance("alice", "alice"), 0);
        assert_eq!(edit_distance("alice", "alicia"), 2);
        let known = ["@alice:fixture.test", "@bob:fixture.test", "@alicia:x.org"].map(String::from);
        assert_eq!(
            closest("@Alice:fixture.test", known.clone()),
            vec!["@alice:fixture.test".to_owned()]
        );
        assert!(closest("@zzzzzzzzzzzz:nowhere.example", known).is_empty());
    }
}
