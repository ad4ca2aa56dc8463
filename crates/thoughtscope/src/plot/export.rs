//! Static PNG/SVG export with headless Chromium as a subprocess: no kaleido, no WebDriver, nothing
//! downloaded. A temporary page inlines plotly.js, draws each figure, calls
//! `Plotly.toImage(gd, {format, width, height})` and writes the data: URL into the DOM;
//! `chromium --headless --dump-dom --virtual-time-budget=…` prints that DOM, and we decode the
//! images from it. Many figures share one Chromium run (about 3 s, most of it start-up).
//!
//! Chromium is found through `$CHROMIUM`, then `chromium` / `chromium-browser` on PATH (Debian:
//! `apt-get install chromium`). Without it every export returns `Error::Other` saying so;
//! [`static_export_available`] lets pipelines skip static images with a message instead.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};

use super::figure::{plotly_js_script, script_safe_json, write_atomic, Figure};
use crate::{Error, Result};

impl Figure {
    /// The figure as an SVG document, rendered by headless Chromium (see [`crate::plot::export`]).
    pub fn to_svg(&self) -> Result<String> {
        let bytes = render_images(&[(self, ImageFormat::Svg)])?.remove(0);
        String::from_utf8(bytes).map_err(|e| Error::Other(format!("Chromium returned an SVG that is not UTF-8: {e}")))
    }

    /// The figure as PNG bytes, rendered by headless Chromium.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        Ok(render_images(&[(self, ImageFormat::Png)])?.remove(0))
    }

    /// Write an SVG file (headless Chromium; `Error::Other` saying how to install it when absent).
    pub fn write_svg(&self, path: impl AsRef<Path>) -> Result<()> {
        write_images(&[(self, path.as_ref())])
    }

    /// Write a PNG file (headless Chromium; `Error::Other` saying how to install it when absent).
    pub fn write_png(&self, path: impl AsRef<Path>) -> Result<()> {
        write_images(&[(self, path.as_ref())])
    }
}

/// Formats [`render_images`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageFormat {
    Png,
    Svg,
}

impl ImageFormat {
    /// From a path's extension (`.png`, `.svg`, any case).
    pub(crate) fn from_path(path: &Path) -> Option<ImageFormat> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "png" => Some(ImageFormat::Png),
            "svg" => Some(ImageFormat::Svg),
            _ => None,
        }
    }

    fn plotly_name(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Svg => "svg",
        }
    }
}

/// The message of the error returned when no Chromium is found.
pub const CHROMIUM_MISSING: &str =
    "static export needs Chromium: apt-get install chromium (or set CHROMIUM to its path)";

/// The Chromium binary: `$CHROMIUM` when set (it must exist), else `chromium` or
/// `chromium-browser` on PATH.
pub fn chromium_path() -> Option<PathBuf> {
    if let Some(explicit) = crate::model::settings::lookups::chromium() {
        return if explicit.components().count() > 1 {
            explicit.is_file().then_some(explicit)
        } else {
            find_on_path(&explicit.to_string_lossy())
        };
    }
    ["chromium", "chromium-browser"].iter().find_map(|name| find_on_path(name))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = crate::model::settings::lookups::path()?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// Whether PNG/SVG export can run here (a Chromium binary was found).
pub fn static_export_available() -> bool {
    chromium_path().is_some()
}

/// Write each figure to its path, the format taken from the extension (`.png` or `.svg`), all in
/// one Chromium run. Parent directories are created; files are written atomically.
pub(crate) fn write_images(jobs: &[(&Figure, &Path)]) -> Result<()> {
    let mut render_jobs = Vec::with_capacity(jobs.len());
    for (figure, path) in jobs {
        let format = ImageFormat::from_path(path).ok_or_else(|| {
            Error::invalid(format!("{}: static export writes .png or .svg files", path.display()))
        })?;
        render_jobs.push((*figure, format));
    }
    let images = render_images(&render_jobs)?;
    for ((_, path), bytes) in jobs.iter().zip(images) {
        write_atomic(path, &bytes)?;
    }
    Ok(())
}

/// Render each `(figure, format)` at the figure's `width × height`, all in one Chromium run.
/// Returns the file bytes in job order (SVG as UTF-8 text).
pub(crate) fn render_images(jobs: &[(&Figure, ImageFormat)]) -> Result<Vec<Vec<u8>>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let chromium = chromium_path().ok_or_else(|| Error::Other(CHROMIUM_MISSING.to_owned()))?;
    let scratch = ScratchDir::new()?;
    let page = scratch.path.join("export.html");
    std::fs::write(&page, export_page(jobs)).map_err(|e| Error::io(&page, e))?;

    // Virtual time only advances while the page is idle, so this budget is not eaten by drawing;
    // the wall-clock limit guards against a hung browser.
    let virtual_ms = 20_000 + 5_000 * jobs.len() as u64;
    let wall_limit = Duration::from_secs(90 + 10 * jobs.len() as u64);
    let stdout_path = scratch.path.join("dom.html");
    let stderr_path = scratch.path.join("chromium.log");
    let status = run_chromium(
        &chromium,
        &scratch,
        &[format!("--virtual-time-budget={virtual_ms}"), "--dump-dom".to_owned(), file_url(&page)],
        &stdout_path,
        wall_limit,
        "the static export",
    )?;
    let dom = std::fs::read_to_string(&stdout_path).map_err(|e| Error::io(&stdout_path, e))?;
    let mut images: Vec<Option<Vec<u8>>> = vec![None; jobs.len()];
    for (index, payload) in results_in(&dom) {
        let Some(slot) = images.get_mut(index) else { continue };
        let title = &jobs[index].0.title;
        *slot = Some(match payload {
            Payload::Image(url) => decode_data_url(&url).map_err(|what| {
                Error::Other(format!("static export of figure {index} ({title:?}): {what}"))
            })?,
            Payload::Failed(message) => {
                return Err(Error::Other(format!(
                    "static export of figure {index} ({title:?}) failed in plotly.js: {message}"
                )))
            }
        });
    }
    images
        .into_iter()
        .enumerate()
        .map(|(index, image)| {
            image.ok_or_else(|| {
                Error::Other(format!(
                    "Chromium ({status}) returned no image for figure {index} ({:?}) of {}{}",
                    jobs[index].0.title,
                    jobs.len(),
                    log_tail(&stderr_path)
                ))
            })
        })
        .collect()
}

/// The page Chromium loads: plotly.js, the jobs as JSON, and a script that renders them one by
/// one into `<pre>` results. The result markers are assembled in JS so that the script's own
/// text in the dumped DOM never looks like a result.
fn export_page(jobs: &[(&Figure, ImageFormat)]) -> String {
    let jobs_json: Vec<Value> = jobs
        .iter()
        .map(|(figure, format)| {
            json!({
                "figure": figure.to_json_value(),
                "format": format.plotly_name(),
                "width": figure.width,
                "height": figure.height,
            })
        })
        .collect();
    let jobs_json = script_safe_json(&Value::Array(jobs_json).to_string());
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8">
{plotly}
</head><body><div id="results"></div>
<script type="text/javascript">
(async function () {{
  var jobs = {jobs_json};
  var results = document.getElementById("results");
  var open = "TS" + "RESULT", close = "TS" + "END";
  for (var i = 0; i < jobs.length; i++) {{
    var job = jobs[i];
    var gd = document.createElement("div");
    gd.style.width = job.width + "px";
    gd.style.height = job.height + "px";
    document.body.appendChild(gd);
    var line;
    try {{
      await Plotly.newPlot(gd, job.figure);
      var url = await Plotly.toImage(gd, {{format: job.format, width: job.width, height: job.height}});
      line = open + " " + i + " ok " + url + " " + close;
    }} catch (error) {{
      line = open + " " + i + " error " + encodeURIComponent(String(error)) + " " + close;
    }}
    var pre = document.createElement("pre");
    pre.textContent = line;
    results.appendChild(pre);
    Plotly.purge(gd);
    gd.remove();
  }}
}})();
</script></body></html>
"#,
        plotly = plotly_js_script(),
    )
}

/// Run headless Chromium with the flags every export needs plus `args`; stdout to `stdout_path`,
/// stderr to `chromium.log` in `scratch`. Kills it after `wall_limit`.
fn run_chromium(
    chromium: &Path,
    scratch: &ScratchDir,
    args: &[String],
    stdout_path: &Path,
    wall_limit: Duration,
    what: &str,
) -> Result<std::process::ExitStatus> {
    let stderr_path = scratch.path.join("chromium.log");
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", scratch.path.join("profile").display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(stdout_path).map_err(|e| Error::io(stdout_path, e))?)
        .stderr(File::create(&stderr_path).map_err(|e| Error::io(&stderr_path, e))?);
    let mut child = command
        .spawn()
        .map_err(|e| Error::Other(format!("starting {}: {e}", chromium.display())))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if started.elapsed() > wall_limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Other(format!(
                    "{} did not finish {what} within {} s{}",
                    chromium.display(),
                    wall_limit.as_secs(),
                    log_tail(&stderr_path)
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(Error::Other(format!("waiting for {}: {e}", chromium.display()))),
        }
    }
}

/// Write each figure as a one-page vector PDF of the figure's size (the SVG that plotly.js draws,
/// printed by Chromium's `--print-to-pdf`; matplotlib's `savefig(…pdf)` is what the seeds use).
/// All SVGs come from one Chromium run, then one short print run per PDF.
pub(crate) fn write_pdfs(jobs: &[(&Figure, &Path)]) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let svg_jobs: Vec<(&Figure, ImageFormat)> = jobs.iter().map(|(f, _)| (*f, ImageFormat::Svg)).collect();
    let svgs = render_images(&svg_jobs)?;
    let with_svgs: Vec<(&Figure, Vec<u8>, &Path)> = jobs.iter().zip(svgs).map(|((f, p), svg)| (*f, svg, *p)).collect();
    write_pdfs_from_svgs(&with_svgs)
}

/// [`write_pdfs`] from SVGs already drawn (`(figure, its SVG, PDF path)`), e.g. the `.svg` files
/// written beside the PDFs, so plotly.js does not draw each figure twice.
pub(crate) fn write_pdfs_from_svgs(jobs: &[(&Figure, Vec<u8>, &Path)]) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let chromium = chromium_path().ok_or_else(|| Error::Other(CHROMIUM_MISSING.to_owned()))?;
    for (figure, svg, path) in jobs {
        let scratch = ScratchDir::new()?;
        let page = scratch.path.join("figure.html");
        let svg = std::str::from_utf8(svg).map_err(|_| Error::Other("plotly.js returned an SVG that is not UTF-8".into()))?;
        let html = format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>@page {{ size: {w}px {h}px; margin: 0 }} \
             html, body {{ margin: 0; padding: 0 }} svg {{ display: block }}</style></head><body>{svg}</body></html>",
            w = figure.width,
            h = figure.height,
        );
        std::fs::write(&page, html).map_err(|e| Error::io(&page, e))?;
        let pdf = scratch.path.join("figure.pdf");
        let stdout_path = scratch.path.join("stdout.txt");
        run_chromium(
            &chromium,
            &scratch,
            &[
                format!("--print-to-pdf={}", pdf.display()),
                "--no-pdf-header-footer".to_owned(),
                "--virtual-time-budget=5000".to_owned(),
                file_url(&page),
            ],
            &stdout_path,
            Duration::from_secs(90),
            "printing a PDF",
        )?;
        let bytes = std::fs::read(&pdf).map_err(|e| {
            Error::Other(format!("Chromium wrote no PDF for {:?} ({e}){}", figure.title, log_tail(&scratch.path.join("chromium.log"))))
        })?;
        if !bytes.starts_with(b"%PDF") {
            return Err(Error::Other(format!("Chromium's PDF for {:?} is not a PDF", figure.title)));
        }
        write_atomic(path, &bytes)?;
    }
    Ok(())
}

enum Payload {
    Image(String),
    Failed(String),
}

/// `(job index, payload)` for every result line in the dumped DOM.
fn results_in(dom: &str) -> Vec<(usize, Payload)> {
    let mut found = Vec::new();
    let mut rest = dom;
    while let Some(start) = rest.find("TSRESULT ") {
        rest = &rest[start + "TSRESULT ".len()..];
        let Some(end) = rest.find(" TSEND") else { break };
        let body = &rest[..end];
        rest = &rest[end..];
        let mut parts = body.splitn(3, ' ');
        let (Some(index), Some(kind), Some(payload)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(index) = index.parse::<usize>() else { continue };
        let payload = unescape_html_text(payload);
        found.push((
            index,
            match kind {
                "ok" => Payload::Image(payload),
                _ => Payload::Failed(percent_decode(&payload).unwrap_or(payload)),
            },
        ));
    }
    found
}

/// Undo the entity escapes `--dump-dom` applies to text content.
fn unescape_html_text(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&")
}

/// Bytes of a `data:image/png;base64,…` or `data:image/svg+xml,<percent-encoded>` URL.
fn decode_data_url(url: &str) -> std::result::Result<Vec<u8>, String> {
    let (header, data) = url.split_once(',').ok_or("the result is not a data: URL")?;
    if header.ends_with(";base64") {
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("bad base64 in the data: URL: {e}"))
    } else {
        percent_decode(data).map(String::into_bytes).ok_or_else(|| "bad percent-encoding in the data: URL".to_owned())
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `file://` URL of an absolute path, percent-encoding everything but unreserved characters and `/`.
fn file_url(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut url = String::from("file://");
    for byte in absolute.to_string_lossy().bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            url.push(byte as char);
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Chromium logs D-Bus complaints in containers; they are noise, not the cause.
    let useful: Vec<&str> = text.lines().filter(|l| !l.contains("dbus") && !l.trim().is_empty()).collect();
    if useful.is_empty() {
        String::new()
    } else {
        format!("; Chromium said: {}", useful[useful.len().saturating_sub(3)..].join(" | "))
    }
}

/// A private temporary directory (page, browser profile, output), removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new() -> Result<ScratchDir> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "thoughtscope-export-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        Ok(ScratchDir { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_parsed_and_decoded() {
        let dom = "<pre>TSRESULT 1 ok data:image/svg+xml,%3Csvg%3E%26%3C%2Fsvg%3E TSEND</pre>\
                   <pre>TSRESULT 0 ok data:image/png;base64,iVBORw0KGgo= TSEND</pre>\
                   <pre>TSRESULT 2 error Error%3A%20boom TSEND</pre>";
        let results = results_in(dom);
        assert_eq!(results.len(), 3);
        match &results[0] {
            (1, Payload::Image(url)) => assert_eq!(decode_data_url(url).unwrap(), b"<svg>&</svg>"),
            _ => panic!("first result"),
        }
        match &results[1] {
            (0, Payload::Image(url)) => assert_eq!(&decode_data_url(url).unwrap()[..4], b"\x89PNG"),
            _ => panic!("second result"),
        }
        match &results[2] {
            (2, Payload::Failed(message)) => assert_eq!(message, "Error: boom"),
            _ => panic!("third result"),
        }
    }

    #[test]
    fn file_urls_are_percent_encoded() {
        assert_eq!(file_url(Path::new("/tmp/a b/x.html")), "file:///tmp/a%20b/x.html");
    }

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(ImageFormat::from_path(Path::new("a/b.PNG")), Some(ImageFormat::Png));
        assert_eq!(ImageFormat::from_path(Path::new("b.svg")), Some(ImageFormat::Svg));
        assert_eq!(ImageFormat::from_path(Path::new("b.pdf")), None);
    }
}
