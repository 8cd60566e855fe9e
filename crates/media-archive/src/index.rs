//! `index.html`: the page a person reads in their export. It names every media by its
//! original file name, with its type, size and date, shows images inline once the parts
//! are unpacked beside it, totals the export, and says what was left out and why.
//!
//! The page is self-contained (inline CSS, no script, nothing fetched from the network)
//! and laid out as a list, which reads on a phone as well as on a desktop. It is written
//! in pieces: one [`media_item`] per record and one [`left_out_item`] per media left out,
//! spooled to files by the writer, and a [`head`] and [`TAIL`] around them once the
//! totals are known, so that memory does not grow with the number of media.

use media_core::html::{escape as html_escape, page_start};
use media_core::moment::Moment;
use media_core::progress::human_size;

/// A media that is not in the archive, and why.
#[derive(Debug, Clone, Copy)]
pub struct LeftOut<'a> {
    /// Its MXC URI.
    pub mxc: &'a str,
    /// Its original file name (may be empty).
    pub name: &'a str,
    /// Why it was left out, as a sentence for the person the data is about.
    pub why: &'a str,
}

/// The totals the head of the page shows.
#[derive(Debug, Clone, Default)]
pub struct IndexTotals {
    /// Media listed.
    pub media: u64,
    /// Bytes of the media listed (each media counted, even when it shares its file).
    pub media_bytes: u64,
    /// Distinct files in the parts.
    pub files: u64,
    /// Part files (without the manifest part).
    pub parts: u64,
    /// Media left out.
    pub left_out: u64,
}

const STYLE: &str = "body{font:16px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
margin:0 auto;padding:12px;max-width:60em;color:#222;background:#fff;overflow-wrap:anywhere}\
h1{font-size:1.4em;margin:.3em 0}h2{font-size:1.15em;margin:1.2em 0 .4em}\
pre{background:#f3f3f3;padding:8px;overflow-x:auto;white-space:pre-wrap;font-size:.9em}\
code{background:#f3f3f3;padding:0 2px}.note{background:#fff8e1;border-left:4px solid #f0b400;\
padding:6px 10px}ol.media,ul.left-out{list-style:none;padding:0;margin:0}\
ol.media li{display:flex;gap:10px;align-items:flex-start;padding:8px 0;border-bottom:1px solid #ddd}\
.thumb{flex:0 0 96px;width:96px;height:96px;display:flex;align-items:center;justify-content:center;\
background:#f3f3f3;border-radius:4px;overflow:hidden;font-size:.75em;color:#777;text-align:center}\
.thumb img{max-width:96px;max-height:96px}.info{flex:1;min-width:0}\
.name{font-weight:600}.meta,.id{color:#555;font-size:.9em}.id{font-size:.8em}\
ul.left-out li{padding:6px 0;border-bottom:1px solid #ddd}";

/// MIME types a browser shows in an `<img>` (SVG there runs no script).
fn shows_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "image/png"
            | "image/jpeg"
            | "image/jpg"
            | "image/gif"
            | "image/webp"
            | "image/avif"
            | "image/bmp"
            | "image/x-ms-bmp"
            | "image/svg+xml"
            | "image/x-icon"
            | "image/vnd.microsoft.icon"
    )
}

/// The start of the page, up to the first media: title, unpacking instructions, totals.
pub fn head(entity_id: &str, created_ts: i64, totals: &IndexTotals) -> String {
    let title = html_escape(entity_id);
    let parts = match totals.parts {
        0 => "no part file (this export holds no media bytes)".to_owned(),
        1 => "<code>export-part-1.tgz</code>".to_owned(),
        n => format!("<code>export-part-1.tgz</code> … <code>export-part-{n}.tgz</code>"),
    };
    let left_out = match totals.left_out {
        0 => "Nothing was left out.".to_owned(),
        1 => "<a href=\"#left-out\">1 media was left out</a> (why: at the end of this page)."
            .to_owned(),
        n => format!(
            "<a href=\"#left-out\">{n} media were left out</a> (why: at the end of this page)."
        ),
    };
    format!(
        "{shell}<h1>Media of {title}</h1>\n<p class=\"meta\">Exported {date}.</p>\n\
         <h2>How to open your files</h2>\n\
         <p class=\"note\">This page lists your media; the files themselves are in {parts}, \
         beside <code>export-manifest.tgz</code>, which holds this page. Unpack every \
         <code>.tgz</code> file of the export into one folder and open \
         <code>index.html</code> from there: each file then sits beside this page, the \
         links below open it and images show inline.</p>\n\
         <p>On Linux or macOS, in a terminal, in the export's folder:</p>\n\
         <pre>mkdir unpacked\nfor f in export-*.tgz; do tar -xzf \"$f\" -C unpacked; done</pre>\n\
         <p>On Windows 10 or later, in a command prompt, in the export's folder:</p>\n\
         <pre>mkdir unpacked\nfor %f in (export-*.tgz) do tar -xzf %f -C unpacked</pre>\n\
         <p>(or unpack each file with 7-Zip into the same folder).</p>\n\
         <h2>Summary</h2>\n<ul>\n<li>{media} media, {media_size} in total.</li>\n\
         <li>{files} files in {part_count} part file(s); media with identical content \
         share one file.</li>\n<li>{left_out}</li>\n</ul>\n\
         <h2>Your media</h2>\n<ol class=\"media\">\n",
        shell = page_start(&format!("Media of {entity_id}"), STYLE),
        date = utc_date(created_ts),
        media = totals.media,
        media_size = human_size(totals.media_bytes),
        files = totals.files,
        part_count = totals.parts,
    )
}

/// One media of the list. `file_name` is its entry in the parts (empty when the bytes
/// are not in the archive); links and images point at it, relative to the page.
pub fn media_item(
    mxc: &str,
    name: &str,
    file_name: &str,
    content_type: &str,
    size_bytes: u64,
    created_ts: i64,
) -> String {
    let href = format!("./{}", percent_encode(file_name));
    let shown_name = if name.is_empty() {
        "(no file name)".to_owned()
    } else {
        html_escape(name)
    };
    let (thumb, title) = if file_name.is_empty() {
        (
            "<div class=\"thumb\">not included</div>".to_owned(),
            format!("<span class=\"name\">{shown_name}</span>"),
        )
    } else {
        let thumb = if shows_inline(content_type) {
            format!(
                "<a class=\"thumb\" href=\"{href}\"><img src=\"{href}\" alt=\"(image not \
                 unpacked)\" loading=\"lazy\"></a>"
            )
        } else {
            let kind = content_type.split('/').next().unwrap_or_default();
            let kind = if kind.is_empty() { "file" } else { kind };
            format!(
                "<a class=\"thumb\" href=\"{href}\">{}</a>",
                html_escape(kind)
            )
        };
        (
            thumb,
            format!("<a class=\"name\" href=\"{href}\">{shown_name}</a>"),
        )
    };
    let kind = if content_type.is_empty() {
        "unknown type".to_owned()
    } else {
        html_escape(content_type)
    };
    let file = if file_name.is_empty() {
        "bytes not included in this export".to_owned()
    } else {
        format!("file {}", html_escape(file_name))
    };
    format!(
        "<li>{thumb}<div class=\"info\">{title}<br><span class=\"meta\">{kind} · {size} · \
         {date}</span><br><span class=\"id\">{mxc} · {file}</span></div></li>\n",
        size = human_size(size_bytes),
        date = utc_date(created_ts),
        mxc = html_escape(mxc),
    )
}

/// One media left out, for the list at the end of the page.
pub fn left_out_item(left_out: &LeftOut<'_>) -> String {
    let name = if left_out.name.is_empty() {
        String::new()
    } else {
        format!(
            "<span class=\"name\">{}</span> ",
            html_escape(left_out.name)
        )
    };
    format!(
        "<li>{name}<span class=\"id\">{}</span><br>{}</li>\n",
        html_escape(left_out.mxc),
        html_escape(left_out.why)
    )
}

/// Between the media and the media left out.
pub fn middle(totals: &IndexTotals) -> String {
    let intro = match totals.left_out {
        0 => "<p>Nothing was left out of this export.</p>\n".to_owned(),
        n => format!(
            "<p>{n} media {} not in this export:</p>\n",
            if n == 1 { "is" } else { "are" }
        ),
    };
    format!("</ol>\n<h2 id=\"left-out\">Left out</h2>\n{intro}<ul class=\"left-out\">\n")
}

/// The end of the page.
pub const TAIL: &str = "</ul>\n</body></html>\n";

/// Percent-encodes a file name for a relative URL: every byte but the unreserved ones.
/// With the `./` put before it, a name such as `example.org:8448__x` is never read as a
/// URL scheme.
fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM UTC` for a time in ms since the epoch.
pub(crate) fn utc_date(ms: i64) -> String {
    let t = Moment::from_unix_ms(ms).utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_764_000_000_000), "2025-11-24 16:00 UTC");
    }

    #[test]
    fn a_file_name_with_a_port_or_odd_bytes_is_linked_relative_to_the_page() {
        let item = media_item(
            "mxc://example.org:8448/abc",
            "photo.png",
            "example.org:8448__abc #1?.png",
            "image/png",
            10,
            0,
        );
        let href = "./example.org%3A8448__abc%20%231%3F.png";
        assert!(item.contains(&format!("href=\"{href}\"")), "{item}");
        assert!(item.contains(&format!("<img src=\"{href}\"")), "{item}");
    }

    #[test]
    fn only_images_a_browser_shows_are_inline() {
        let image = media_item("mxc://a/b", "", "a__b.jpg", "image/jpeg", 1, 0);
        let video = media_item("mxc://a/c", "", "a__c.mp4", "video/mp4", 1, 0);
        let metadata_only = media_item("mxc://a/d", "d.png", "", "image/png", 1, 0);
        assert!(image.contains("<img "));
        assert!(!video.contains("<img ") && video.contains(">video</a>"));
        assert!(!metadata_only.contains("<img ") && !metadata_only.contains("href"));
        assert!(metadata_only.contains("bytes not included"));
    }
}
