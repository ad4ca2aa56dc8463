//! An output folder is replaced as a whole: a run that fails (or is killed) half-way leaves the
//! previous complete folder, files of earlier settings do not linger beside new ones, and no
//! staging folder is left behind.

use std::path::{Path, PathBuf};

use thoughtscope::analysis::{run_va, VaConfig};
use thoughtscope::io::write_folder_atomically;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_failed_write_leaves_the_previous_folder_and_a_good_one_replaces_it_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    write_folder_atomically(&out, |dir| {
        std::fs::write(dir.join("tables.csv"), b"first").unwrap();
        std::fs::write(dir.join("old_figure.png"), b"png").unwrap();
        Ok(())
    })
    .unwrap();
    assert_eq!(names(&out), ["old_figure.png", "tables.csv"]);
    // A run that fails half-way: the first run's folder is untouched.
    let err = write_folder_atomically(&out, |dir| -> thoughtscope::Result<()> {
        std::fs::write(dir.join("tables.csv"), b"second, half done").unwrap();
        Err(thoughtscope::Error::invalid("killed half-way"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("killed half-way"));
    assert_eq!(std::fs::read(out.join("tables.csv")).unwrap(), b"first");
    // A complete second run replaces everything: the old figure does not linger.
    write_folder_atomically(&out, |dir| {
        std::fs::write(dir.join("tables.csv"), b"second").unwrap();
        Ok(())
    })
    .unwrap();
    assert_eq!(names(&out), ["tables.csv"]);
    assert_eq!(names(tmp.path()), ["out"], "no staging or old folder left behind");
}

#[test]
fn va_replaces_its_output_folder_as_a_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("va");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("figure_of_earlier_settings.html"), b"old").unwrap();
    let config = VaConfig {
        root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rollouts/apple_boxes"),
        cache_dir: tmp.path().join("cache"),
        out: Some(out.clone()),
        run_attention: false,
        figures: false,
        ..Default::default()
    };
    let result = run_va(&config).unwrap();
    assert_eq!(result.out_dir, out);
    assert_eq!(names(&out), ["index.html", "va_counts.csv"]);
    assert!(!std::fs::read_to_string(out.join("index.html")).unwrap().contains(".staging-"));
    assert_eq!(names(tmp.path()), ["va"]);
}
