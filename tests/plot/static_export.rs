//! Static export through headless Chromium and the screenshot check script. Each test skips
//! (a failure under CI) when Chromium is absent (`apt-get install chromium`).

use std::path::PathBuf;
use std::process::Command;

use thoughtscope::plot::{self, HeatmapOptions, LineOptions, SaveFormat, Series};

use crate::support;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("thoughtscope-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sample_heatmap() -> plot::Figure {
    let n = 12;
    let mut m = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            m[i * n + j] = 1.0 / (1.0 + (i - j) as f64);
        }
    }
    plot::heatmap(&m, n, &HeatmapOptions { title: "export test".into(), highlight: vec![3, 7], ..Default::default() })
        .unwrap()
}

#[test]
fn png_and_svg_in_one_chromium_run() {
    if !support::chromium() {
        return;
    }
    let heat = sample_heatmap();
    let lines = plot::line_scores(
        &[Series::new("v", [0.1, f64::NAN, 0.3, 0.2])],
        &LineOptions { title: "scores".into(), highlight: vec![2], ..Default::default() },
    )
    .unwrap();
    let dir = scratch("export");
    let started = std::time::Instant::now();
    let files = plot::save_figures(&dir, &[("heat", &heat), ("lines", &lines)], &[SaveFormat::Html, SaveFormat::Png, SaveFormat::Svg])
        .unwrap();
    eprintln!("4 static images + 2 HTML in {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(files.len(), 6);
    let png = std::fs::read(dir.join("heat.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR width/height = the figure's size.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width as usize, height as usize), (heat.width, heat.height));
    let svg = std::fs::read_to_string(dir.join("lines.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
    assert!(svg.contains("class=\"main-svg\""));
    assert!(svg.contains("scores"), "title text in the SVG");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_extension_is_an_error_before_chromium() {
    let err = sample_heatmap().write_png("out.pdf").unwrap_err().to_string();
    assert!(err.contains(".png or .svg"), "{err}");
}

#[test]
fn check_script_screenshots_rendered_html() {
    if !support::chromium() {
        return;
    }
    let dir = scratch("check-script");
    let html = dir.join("fig.html");
    let png = dir.join("fig.png");
    plot::Report::new("check")
        .figure(&sample_heatmap())
        .figure(&plot::bar_with_error(&["a", "b"], &[1.0, 2.0], &[0.5, 0.1], &Default::default()).unwrap())
        .write_html(&html)
        .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/check-html-chromium.sh");
    let output = Command::new("bash").arg(&script).arg(&html).arg(&png).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("2 plot(s) rendered"), "{stdout}");
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");

    // A figure page below its folder's shared plotly.min.js renders from file:// too.
    let written = plot::save_figures_sharing(dir.join("sub"), &[("heat", &sample_heatmap())], &[SaveFormat::Html], &dir)
        .unwrap();
    let output = Command::new("bash").arg(&script).arg(&written[0]).arg(&png).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("1 plot(s) rendered of 1 expected") && stdout.contains("0 network"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}
