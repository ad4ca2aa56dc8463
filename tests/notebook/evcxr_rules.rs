//! What evcxr refuses that ordinary Rust accepts, checked in the project's notebooks before they
//! run: evcxr keeps every top-level variable of a cell for the cells after it, and a variable
//! holding a reference cannot be kept (the cell fails to compile with "contains a reference with
//! a non-static lifetime"). The tests that compile the notebooks' cells as plain Rust cannot see
//! this; a headless run finds it only minutes into the notebook.

use crate::support;

use serde_json::Value;

/// The top-level `let` lines of `code` whose value is a reference (`let x = &…` or `let x: &T =
/// …`): a borrow inside a block or a function is fine, so only lines at column 0 count.
fn top_level_reference_lets(code: &str) -> Vec<String> {
    let pattern = regex::Regex::new(r"^let\s+(mut\s+)?\w+\s*(:\s*&[^=]*=|=\s*&)").unwrap();
    code.lines().filter(|line| pattern.is_match(line)).map(str::to_owned).collect()
}

#[test]
fn the_rule_finds_a_kept_reference_and_passes_a_borrow_in_a_block() {
    let code = "let a = &result.tagged;\nlet b: &str = \"x\";\nlet c = f(&x);\n{\n    let d = &x;\n}\nlet e = a == &b;";
    assert_eq!(top_level_reference_lets(code), ["let a = &result.tagged;", "let b: &str = \"x\";"]);
}

#[test]
fn no_notebook_keeps_a_reference_at_top_level() {
    let dir = support::repo().join("notebooks");
    let mut found = Vec::new();
    let mut notebooks = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "ipynb") {
            continue;
        }
        notebooks += 1;
        let notebook: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (index, cell) in notebook["cells"].as_array().unwrap().iter().enumerate() {
            if cell["cell_type"] != "code" {
                continue;
            }
            let source: String = match &cell["source"] {
                Value::Array(lines) => lines.iter().filter_map(Value::as_str).collect(),
                Value::String(text) => text.clone(),
                _ => String::new(),
            };
            for line in top_level_reference_lets(&source) {
                found.push(format!("{} cell {index}: {line}", path.display()));
            }
        }
    }
    assert!(notebooks >= 4, "found {notebooks} notebooks in {}", dir.display());
    assert!(found.is_empty(), "evcxr cannot keep these references between cells (move them into a block):\n{}", found.join("\n"));
}
