//! `media_admin usage --html FILE`: the usage of the repository as one self-contained
//! page (no script, no font, no external file): bar charts in inline SVG of the bytes by
//! origin, by uploader and by month of upload, and of what deduplication saves per
//! origin. Each bar carries its exact figures in its tooltip (`<title>`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use media_core::html::{self, Bar};
use media_core::moment::Moment;
use media_core::progress::human_size;
use media_core::run::{Report, RunMode};
use media_db::{Repository, Usage, UsageReport};
use serde::Serialize;

use crate::error::AdminError;
use crate::usage::Space;

/// What `media_admin usage --html` reports once the page is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PageReport {
    /// Where the page was written.
    pub path: PathBuf,
    /// The whole repository.
    pub totals: Space,
    /// Origins charted.
    pub origins: usize,
    /// Uploaders charted.
    pub users: usize,
    /// Months charted.
    pub months: usize,
}

impl std::fmt::Display for PageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "media_admin usage: wrote {} ({} origins, {} uploaders, {} months; {})",
            self.path.display(),
            self.origins,
            self.users,
            self.months,
            self.totals
        )
    }
}

impl Report for PageReport {
    fn mode(&self) -> RunMode {
        RunMode::Apply
    }

    fn has_failures(&self) -> bool {
        false
    }
}

/// Writes the usage page of `repo` to `path`: the `limit` largest origins and uploaders,
/// every month.
pub async fn write_page(
    repo: &Repository,
    path: &Path,
    limit: u32,
) -> Result<PageReport, AdminError> {
    let totals = repo.usage_totals().await?;
    let origins = repo.usage_by_server(limit).await?;
    let users = repo.usage_by_user(&[], limit).await?;
    let months = repo.usage_by_month().await?;
    let page = render(&totals, &origins, &users, &months);
    tokio::fs::write(path, page)
        .await
        .map_err(|source| AdminError::Write {
            path: path.to_owned(),
            source,
        })?;
    Ok(PageReport {
        path: path.to_owned(),
        totals: (&totals).into(),
        origins: origins.len(),
        users: users.len(),
        months: months.len(),
    })
}

/// The bar of `usage`'s bytes as uploaded.
fn bytes_bar<K: std::fmt::Display>(usage: &Usage<K>) -> Bar {
    Bar {
        label: usage.of.to_string(),
        value: usage.bytes,
        title: format!(
            "{}: {} media, {} bytes ({} stored)",
            usage.of, usage.media, usage.bytes, usage.stored_bytes
        ),
    }
}

/// The bar of what deduplication saves of `usage`.
fn saved_bar<K: std::fmt::Display>(usage: &Usage<K>) -> Bar {
    let saved = usage.bytes.saturating_sub(usage.stored_bytes);
    Bar {
        label: usage.of.to_string(),
        value: saved,
        title: format!(
            "{}: {saved} bytes saved ({} bytes uploaded, {} stored)",
            usage.of, usage.bytes, usage.stored_bytes
        ),
    }
}

/// The page: a heading with the totals, then one chart per figure.
fn render(
    totals: &Usage<()>,
    origins: &[Usage<media_core::ids::ServerName>],
    users: &[Usage<media_core::ids::UserId>],
    months: &[Usage<String>],
) -> String {
    let space = Space::from(totals);
    let mut page = html::page_start("Media repository usage", html::CHART_STYLE);
    let _ = writeln!(
        page,
        "<h1>Media repository usage</h1>\n<p>{} media, {} bytes uploaded ({}), {} bytes \
         stored ({}); deduplication saves {} bytes ({}). Written {}.</p>",
        space.media,
        space.bytes,
        human_size(space.bytes),
        space.stored_bytes,
        human_size(space.stored_bytes),
        space.saved_bytes,
        human_size(space.saved_bytes),
        Moment::from_unix_ms(media_core::now_ms())
    );
    html::bar_chart(
        &mut page,
        "Bytes by origin",
        "bar",
        &origins.iter().map(bytes_bar).collect::<Vec<_>>(),
    );
    html::bar_chart(
        &mut page,
        "Bytes by uploader",
        "bar",
        &users.iter().map(bytes_bar).collect::<Vec<_>>(),
    );
    html::bar_chart(
        &mut page,
        "Bytes by month of upload",
        "bar",
        &months.iter().map(bytes_bar).collect::<Vec<_>>(),
    );
    html::bar_chart(
        &mut page,
        "Saved by deduplication, by origin",
        "saved",
        &origins.iter().map(saved_bar).collect::<Vec<_>>(),
    );
    page.push_str(html::PAGE_END);
    page
}
