//! [`Explorer`] in a notebook: `explorer` as a cell's last expression shows the whole explorer
//! inline (one `text/html` output: a div with a unique id holding its data, style and script,
//! so several explorers coexist on one page and in the exported HTML), and a text outline.

use super::bundle::MimeBundle;
use super::display::{next_display_number, NotebookDisplay};
use crate::plot::Explorer;

/// The explorer's notebook bundle with the div id `id`.
pub(crate) fn explorer_bundle_with(explorer: &Explorer, id: &str) -> MimeBundle {
    MimeBundle::new().with("text/html", explorer.to_inline_html(id)).with("text/plain", explorer.plain_text())
}

impl NotebookDisplay for Explorer {
    fn mime_bundle(&self) -> MimeBundle {
        Explorer::mime_bundle(self)
    }
}

impl Explorer {
    /// The notebook bundle (`text/html` + `text/plain`), with a div id unique in this process.
    pub fn mime_bundle(&self) -> MimeBundle {
        explorer_bundle_with(self, &format!("thoughtscope-explorer-{}", next_display_number()))
    }

    /// Print [`Explorer::mime_bundle`]: evcxr calls this for a cell's last expression.
    pub fn evcxr_display(&self) {
        self.mime_bundle().print();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_explorers_get_distinct_ids_and_scoped_scripts() {
        let explorer = Explorer::new("t", vec!["One.".into(), "Two.".into()]);
        let (a, b) = (explorer.mime_bundle(), explorer.mime_bundle());
        let (a, b) = (a.get("text/html").unwrap(), b.get("text/html").unwrap());
        assert_ne!(a, b, "each display has its own div id");
        assert!(a.contains("class=\"ts-explorer\"") && a.contains("init(document.getElementById("));
        assert!(!a.contains("<html"), "a fragment, not a document");
        assert!(explorer.mime_bundle().get("text/plain").unwrap().contains("2 sentences"));
    }
}
