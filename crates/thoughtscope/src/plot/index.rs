//! One page that links every report under an output folder (`analysis/index.html`): each
//! analysis folder's own `index.html`, each executed notebook's HTML and each trace explorer page
//! in an `explorer/` folder, titled from the pages themselves, so a new user opens one file.

use std::path::{Path, PathBuf};

use super::figure::{html_document, html_escape, write_atomic};
use crate::{Error, Result};

/// A page found under the folder: its path relative to the folder and its `<title>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub path: PathBuf,
    pub title: String,
}

/// Reports under `root` (not `root/index.html` itself), at most three folders down: every
/// `index.html`, and every `.html` directly in a `reports/` folder (notebook reports) or an
/// `explorer/` folder (trace explorer pages). Sorted by path.
pub fn find_reports(root: impl AsRef<Path>) -> Result<Vec<IndexEntry>> {
    let root = root.as_ref();
    let mut found = Vec::new();
    collect(root, root, 0, &mut found)?;
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

fn collect(root: &Path, dir: &Path, depth: usize, found: &mut Vec<IndexEntry>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let in_reports = dir.file_name().is_some_and(|n| n == "reports" || n == "explorer");
    for path in entries {
        if path.is_dir() {
            if depth < 3 {
                collect(root, &path, depth + 1, found)?;
            }
            continue;
        }
        let is_html = path.extension().is_some_and(|x| x == "html");
        let is_index = path.file_name().is_some_and(|n| n == "index.html");
        if is_html && (is_index && depth > 0 || in_reports) {
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            found.push(IndexEntry { title: page_title(&path).unwrap_or_else(|| relative.display().to_string()), path: relative });
        }
    }
    Ok(())
}

/// The text of the first `<title>` in the file's first 64 kB.
fn page_title(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path).ok()?.take(64 * 1024).read_to_end(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head);
    let start = text.find("<title>")? + "<title>".len();
    let end = start + text[start..].find("</title>")?;
    let title = text[start..end].trim();
    (!title.is_empty()).then(|| unescape(title))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

/// Write `root/index.html` linking every report `find_reports` finds; returns its path and the
/// entries.
pub fn write_index(root: impl AsRef<Path>, title: &str) -> Result<(PathBuf, Vec<IndexEntry>)> {
    let root = root.as_ref();
    let entries = find_reports(root)?;
    let mut body = format!("<h1>{}</h1>\n", html_escape(title));
    if entries.is_empty() {
        body.push_str("<p>No reports yet.</p>\n");
    } else {
        body.push_str("<ul>\n");
        for entry in &entries {
            let href = entry.path.to_string_lossy().replace('\\', "/");
            body.push_str(&format!(
                "<li><a href=\"{}\">{}</a> <code>{}</code></li>\n",
                html_escape(&href),
                html_escape(&entry.title),
                html_escape(&href)
            ));
        }
        body.push_str("</ul>\n");
    }
    let path = root.join("index.html");
    write_atomic(&path, html_document(title, "", &body).as_bytes())?;
    Ok((path, entries))
}
