//! The pieces of the toolkit's self-contained HTML pages (a usage page, an export's
//! index): text escaping, the page shell, and horizontal bar charts in inline SVG. No
//! script, no font, no external file: a page opens the same from a disk, a mail or a
//! web server.

use std::fmt::Write as _;

use crate::progress::human_size;

/// `text` with the characters HTML and SVG give a meaning escaped: safe in element
/// content and in quoted attribute values.
pub fn escape(text: &str) -> String {
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

/// The start of a page, up to and including `<body>`: `title` (escaped here) and the
/// page's own CSS `style` (taken as written).
pub fn page_start(title: &str, style: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{style}</style></head>\n<body>\n",
        escape(title)
    )
}

/// The end of a page started with [`page_start`].
pub const PAGE_END: &str = "</body></html>\n";

/// CSS for pages with [`bar_chart`]s: bars of class `bar` are blue, of class `saved`
/// green, of class `thumbnail` orange.
pub const CHART_STYLE: &str = "\
body { font-family: sans-serif; margin: 2em; color: #222; }\n\
svg text { font-size: 12px; font-family: sans-serif; }\n\
.bar { fill: #3b7dd8; } .saved { fill: #2e9d5b; } .thumbnail { fill: #d8883b; }\n";

/// Width of a chart, in SVG user units (pixels).
const CHART_WIDTH: u32 = 760;
/// Width of the label column of a chart.
const LABEL_WIDTH: u32 = 260;
/// Height of one bar's row.
const ROW_HEIGHT: u32 = 22;

/// One bar of a chart: its label, its value in bytes and its tooltip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// Shown left of the bar.
    pub label: String,
    /// Its length, in bytes (shown right of the bar as a human size).
    pub value: u64,
    /// Its exact figures, shown on hovering it (SVG `<title>`).
    pub title: String,
}

/// Appends a heading and a horizontal bar chart of `bars` (scaled to the largest) to
/// `page`; `class` picks the bars' colour from [`CHART_STYLE`].
pub fn bar_chart(page: &mut String, heading: &str, class: &str, bars: &[Bar]) {
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
            class = escape(class),
            ry = y + 3,
            rh = ROW_HEIGHT - 6,
            vx = LABEL_WIDTH + width + 4,
            value = human_size(bar.value),
        );
    }
    page.push_str("</svg>\n");
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

    #[test]
    fn bars_scale_to_the_largest_and_carry_escaped_labels() {
        let mut page = String::new();
        let bar = |label: &str, value| Bar {
            label: label.to_owned(),
            value,
            title: format!("{label}: {value}"),
        };
        bar_chart(
            &mut page,
            "By <origin>",
            "bar",
            &[bar("a&b", 100), bar("c", 50)],
        );
        assert!(page.contains("<h2>By &lt;origin&gt;</h2>"), "{page}");
        assert!(page.contains("<title>a&amp;b: 100</title>"), "{page}");
        assert!(
            page.contains("width=\"410\""),
            "the largest bar fills the space: {page}"
        );
        assert!(
            page.contains("width=\"205\""),
            "half as large, half as long: {page}"
        );
        let mut empty = String::new();
        bar_chart(&mut empty, "Nothing", "bar", &[]);
        assert!(empty.ends_with("<p>(none)</p>\n"));
    }
}
