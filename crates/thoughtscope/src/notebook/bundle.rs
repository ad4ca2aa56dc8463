//! [`MimeBundle`]: the evcxr display protocol. A display prints blocks
//! `EVCXR_BEGIN_CONTENT <mime>\n<content>\nEVCXR_END_CONTENT` on stdout; evcxr collects them into
//! one output whose data maps MIME type to content (a later block of the same type replaces an
//! earlier one; types containing `json` are parsed as JSON).

use std::io::{self, Write};

const BEGIN: &str = "EVCXR_BEGIN_CONTENT";
const END: &str = "EVCXR_END_CONTENT";

/// Ordered `(mime type, content)` pairs printed as one evcxr output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MimeBundle {
    parts: Vec<(String, String)>,
}

impl MimeBundle {
    pub fn new() -> Self {
        MimeBundle::default()
    }

    /// Add (or replace) the content of `mime`.
    pub fn with(mut self, mime: impl Into<String>, content: impl Into<String>) -> Self {
        self.insert(mime, content);
        self
    }

    pub fn insert(&mut self, mime: impl Into<String>, content: impl Into<String>) {
        let (mime, content) = (mime.into(), content.into());
        match self.parts.iter_mut().find(|(m, _)| *m == mime) {
            Some(part) => part.1 = content,
            None => self.parts.push((mime, content)),
        }
    }

    pub fn get(&self, mime: &str) -> Option<&str> {
        self.parts.iter().find(|(m, _)| m == mime).map(|(_, c)| c.as_str())
    }

    pub fn mime_types(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().map(|(m, _)| m.as_str())
    }

    /// The protocol text: one block per part, in order.
    pub fn to_protocol_string(&self) -> String {
        let mut out = String::new();
        for (mime, content) in &self.parts {
            out.push_str(BEGIN);
            out.push(' ');
            // evcxr takes the MIME type up to the first space.
            out.push_str(&mime.replace(char::is_whitespace, ""));
            out.push('\n');
            out.push_str(&guard_content(mime, content));
            if !content.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(END);
            out.push('\n');
        }
        out
    }

    /// Write the whole bundle with one `write_all`, so that other threads' output (progress
    /// lines) cannot land inside a block.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(self.to_protocol_string().as_bytes())?;
        out.flush()
    }

    /// Print to stdout (locked). A closed stdout is ignored: displaying never panics.
    pub fn print(&self) {
        let stdout = io::stdout();
        let mut lock = stdout.lock();
        let _ = self.write_to(&mut lock);
    }
}

/// Content lines that evcxr would read as protocol markers are neutralised: a line equal to
/// `EVCXR_END_CONTENT` would end the block early, and any line containing
/// `EVCXR_BEGIN_CONTENT ` would start a new one. HTML gets an entity (renders the same), other
/// types a zero-width space after `EVCXR`.
fn guard_content(mime: &str, content: &str) -> String {
    if !content.contains("EVCXR_") {
        return content.to_owned();
    }
    let replacement = if mime == "text/html" { "EVCXR&#95;" } else { "EVCXR\u{200b}_" };
    content
        .split('\n')
        .map(|line| {
            if line == END || line.contains("EVCXR_BEGIN_CONTENT ") {
                line.replace("EVCXR_", replacement)
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parse protocol text back into `(mime, content)` pairs as evcxr does (later blocks of a MIME
/// type replace earlier ones); other lines are ignored. For tests and tools.
pub fn parse_protocol(text: &str) -> Vec<(String, String)> {
    let mut parts: Vec<(String, String)> = Vec::new();
    let mut lines = text.split('\n');
    while let Some(line) = lines.next() {
        let Some(start) = line.find("EVCXR_BEGIN_CONTENT ") else { continue };
        let mime = line[start + "EVCXR_BEGIN_CONTENT ".len()..].split(' ').next().unwrap_or_default().to_owned();
        let mut content = String::new();
        for line in lines.by_ref() {
            if line == END {
                break;
            }
            content.push_str(line);
            content.push('\n');
        }
        match parts.iter_mut().find(|(m, _)| *m == mime) {
            Some(part) => part.1 = content,
            None => parts.push((mime, content)),
        }
    }
    parts
}
