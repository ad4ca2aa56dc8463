//! Modules point one way: `scripts/module-graph.py` finds no cycle between the library's
//! top-level modules, nor between sibling modules inside any folder of the library, the model
//! crate or the CLI — and it does find one when there is one (checked on a small crate written
//! here, whose cycle goes through a re-export).

use std::path::Path;
use std::process::Command;

fn module_graph(args: &[&str]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/module-graph.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running python3 {}: {e} (the module check needs python3)", script.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn no_module_cycle_between_or_inside_folders() {
    let (ok, text) = module_graph(&[]);
    assert!(ok, "module cycles:\n{text}");
    assert!(text.contains("no cycles between top-level modules") && text.contains("no cycles inside folders"), "{text}");
}

#[test]
fn the_check_finds_a_cycle_between_siblings_through_a_reexport() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("outer")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod outer;\n").unwrap();
    // `a` names `b` through the folder's re-export; `b` names `a` directly. Comments and strings
    // that name a module do not count.
    std::fs::write(src.join("outer/mod.rs"), "pub mod a;\npub mod b;\npub mod c;\npub use b::Thing;\n").unwrap();
    std::fs::write(src.join("outer/a.rs"), "pub struct Other;\npub fn f() -> super::Thing { super::Thing }\n").unwrap();
    std::fs::write(src.join("outer/b.rs"), "use crate::outer::a::Other;\npub struct Thing;\n").unwrap();
    std::fs::write(src.join("outer/c.rs"), "// super::a::Other\nconst S: &str = \"crate::outer::b\";\n").unwrap();
    let (ok, text) = module_graph(&["--crate", src.to_str().unwrap()]);
    assert!(!ok, "the cycle went unseen:\n{text}");
    assert!(text.contains("outer: a -> b -> a"), "{text}");

    // Without the back edge there is none.
    std::fs::write(src.join("outer/b.rs"), "pub struct Thing;\n").unwrap();
    let (ok, text) = module_graph(&["--crate", src.to_str().unwrap()]);
    assert!(ok && text.contains("no cycles inside folders"), "{text}");
}
