//! Saving figures into a folder in several formats at once: HTML pages that share one copy of
//! plotly.js, and PNG/SVG/PDF rendered together in one headless Chromium run ([`super::export`]).
//! Above both `figure` and `export`, which know nothing of each other's callers.

use std::path::{Path, PathBuf};

use super::export;
use super::figure::{write_plotly_js, Figure, PLOTLY_JS_FILE};
use crate::io::write_atomic;
use crate::{Error, Result};

/// What [`save_figures`] writes for each figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    Html,
    Png,
    Svg,
    /// A one-page vector PDF (as the CODI seed's matplotlib figures).
    Pdf,
}

impl SaveFormat {
    pub fn extension(self) -> &'static str {
        match self {
            SaveFormat::Html => "html",
            SaveFormat::Png => "png",
            SaveFormat::Svg => "svg",
            SaveFormat::Pdf => "pdf",
        }
    }
}

/// Write every `(stem, figure)` as `dir/<stem>.<ext>` for each format, creating `dir`. HTML pages
/// share one `dir/plotly.min.js` (see [`save_figures_sharing`] to share it across folders). All
/// static images are rendered in ONE Chromium run (a few seconds in all rather than per image).
/// Returns the files written, in order. PNG/SVG without Chromium is an error: check
/// [`super::static_export_available`] first to skip them with a message.
pub fn save_figures(dir: impl AsRef<Path>, figures: &[(&str, &Figure)], formats: &[SaveFormat]) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    save_figures_sharing(dir, figures, formats, dir)
}

/// [`save_figures`] with the HTML pages loading `js_dir/plotly.min.js`, written there once;
/// `js_dir` is `dir` or one of its ancestors (an analysis folder's root, so that every
/// per-rollout folder below it shares one copy), and the pages refer to it by a relative URL.
pub fn save_figures_sharing(
    dir: impl AsRef<Path>,
    figures: &[(&str, &Figure)],
    formats: &[SaveFormat],
    js_dir: impl AsRef<Path>,
) -> Result<Vec<PathBuf>> {
    let (dir, js_dir) = (dir.as_ref(), js_dir.as_ref());
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let script_src = if formats.contains(&SaveFormat::Html) {
        let depth = dir.strip_prefix(js_dir).map_err(|_| {
            Error::invalid(format!("plotly.js folder {} is not {} or above it", js_dir.display(), dir.display()))
        })?;
        write_plotly_js(js_dir)?;
        "../".repeat(depth.components().count()) + PLOTLY_JS_FILE
    } else {
        String::new()
    };
    let mut written = Vec::new();
    let mut images: Vec<(&Figure, PathBuf)> = Vec::new();
    let mut pdfs: Vec<(&Figure, PathBuf)> = Vec::new();
    for (stem, figure) in figures {
        for format in formats {
            let path = dir.join(format!("{stem}.{}", format.extension()));
            match format {
                SaveFormat::Html => write_atomic(&path, figure.to_html_with_script_src(&script_src).as_bytes())?,
                SaveFormat::Png | SaveFormat::Svg => images.push((figure, path.clone())),
                SaveFormat::Pdf => pdfs.push((figure, path.clone())),
            }
            written.push(path);
        }
    }
    if !images.is_empty() {
        let jobs: Vec<(&Figure, &Path)> = images.iter().map(|(f, p)| (*f, p.as_path())).collect();
        export::write_images(&jobs)?;
    }
    if !pdfs.is_empty() {
        if formats.contains(&SaveFormat::Svg) {
            // The SVGs were just written beside the PDFs: print those instead of drawing again.
            let mut jobs = Vec::with_capacity(pdfs.len());
            for (figure, pdf) in &pdfs {
                let svg_path = pdf.with_extension(SaveFormat::Svg.extension());
                let svg = std::fs::read(&svg_path).map_err(|e| Error::io(&svg_path, e))?;
                jobs.push((*figure, svg, pdf.as_path()));
            }
            export::write_pdfs_from_svgs(&jobs)?;
        } else {
            let jobs: Vec<(&Figure, &Path)> = pdfs.iter().map(|(f, p)| (*f, p.as_path())).collect();
            export::write_pdfs(&jobs)?;
        }
    }
    Ok(written)
}
