//! `media_admin usage --html FILE`: the usage of the repository as one self-contained
//! page (no script, no font, no external file): bar charts in inline SVG of the bytes by
//! origin, by uploader and by month of upload, and of what deduplication saves per
//! origin. Each bar carries its exact figures in its tooltip (`<title>`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use media_core::moment::Moment;
use media_core::progress::human_size;
use media_core::run::{Report, RunMode};
use media_db::{Repository, Usage, UsageReport};
use serde::Serialize;

use crate::error::AdminError;
use crate::usage::Space;

/// Width of a chart, in SVG user units (pixels).
const CHART_WIDTH: u32 = 760;
/// Width of the label column of a chart.
const LABEL_WIDTH: u32 = 260;
/// Height of one bar's row.
const ROW_HEIGHT: u32 = 22;

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

/// One bar: its label, its value and its tooltip.
struct Bar {
    label: String,
    value: u64,
    title: String,
}

impl Bar {
    /// The bar of `usage`'s bytes as uploaded.
    fn bytes<K: std::fmt::Display>(usage: &Usage<K>) -> Self {
        Self {
            label: usage.of.to_string(),
            value: usage.bytes,
            title: format!(
                "{}: {} media, {} bytes ({} stored)",
                usage.of, usage.media, usage.bytes, usage.stored_bytes
            ),
        }
    }

    /// The bar of what deduplication saves of `usage`.
    fn saved<K: std::fmt::Display>(usage: &Usage<K>) -> Self {
        let saved = usage.bytes.saturating_sub(usage.stored_bytes);
        Self {
            label: usage.of.to_string(),
            value: saved,
            title: format!(
                "{}: {saved} bytes saved ({} bytes uploaded, {} stored)",
                usage.of, usage.bytes, usage.stored_bytes
            ),
        }
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
    let mut page = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <title>Media repository usage</title>\n<style>\n\
         body { font-family: sans-serif; margin: 2em; color: #222; }\n\
         svg text { font-size: 12px; font-family: sans-serif; }\n\
         .bar { fill: #3b7dd8; } .saved { fill: #2e9d5b; }\n\
         </style>\n</head>\n<body>\n",
    );
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
    chart(
        &mut page,
        "Bytes by origin",
        "bar",
        origins.iter().map(Bar::bytes),
    );
    chart(
        &mut page,
        "Bytes by uploader",
        "bar",
        users.iter().map(Bar::bytes),
    );
    chart(
        &mut page,
        "Bytes by month of upload",
        "bar",
        months.iter().map(Bar::bytes),
    );
    chart(
        &mut page,
        "Saved by deduplication, by origin",
        "saved",
        origins.iter().map(Bar::saved),
    );
    page.push_str("</body>\n</html>\n");
    page
}

/// Appends a heading and a horizontal bar chart of `bars` (scaled to the largest).
fn chart(page: &mut String, heading: &str, class: &str, bars: impl Iterator<Item = Bar>) {
    let bars: Vec<Bar> = bars.collect();
    let _ = writeln!(page, "<h2>{}</h2>", escape(heading));
    if bars.is_empty() {
        page.push_str("<p>(none)</p>\n");
        return;
    }
    let largest = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let bar_space = CHART_WIDTH - LABEL_WIDTH - 90;
    let height = ROW_HEIGHT * bars.len() as u32;
    let _ = writeln!(
        page,
        "<svg width=\"{CHART_WIDTH}\" height=\"{height}\" viewBox=\"0 0 {CHART_WIDTH} {height}\" \
         role=\"img\" aria-label=\"{}\">",
        escape(heading)
    );
    for (row, bar) in bars.iter().enumerate() {
        let y = row as u32 * ROW_HEIGHT;
        let width = (u128::from(bar.value) * u128::from(bar_space) / u128::from(largest)) as u32;
        let _ = writeln!(
            page,
            "<g><title>{title}</title>\
             <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{label}</text>\
             <rect class=\"{class}\" x=\"{LABEL_WIDTH}\" y=\"{ry}\" width=\"{width}\" \
             height=\"{rh}\"/>\
             <text x=\"{vx}\" y=\"{ty}\">{value}</text></g>",
            title = escape(&bar.title),
            lx = LABEL_WIDTH - 6,
            ty = y + 15,
            label = escape(&bar.label),
            ry = y + 3,
            rh = ROW_HEIGHT - 6,
            vx = LABEL_WIDTH + width + 4,
            value = human_size(bar.value),
        );
    }
    page.push_str("</svg>\n");
}

/// `text` with the characters HTML and SVG give a meaning escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_cannot_break_out_of_the_markup() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
