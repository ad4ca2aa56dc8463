//! Line-mode progress: one line per step, no carriage returns, safe from several threads.

use std::io::Write;
use std::sync::{Arc, Mutex};

use thoughtscope::notebook::{Progress, ProgressMode, ProgressSettings};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[test]
fn lines_every_step_and_a_final_line() {
    let buffer = Buffer::default();
    let progress = Progress::lines_to(Box::new(buffer.clone()), 50, "ablation", 20);
    assert_eq!(progress.mode(), ProgressMode::Lines);
    for i in 0..50 {
        if i == 30 {
            progress.set_message("problem 7");
        }
        progress.inc(1);
    }
    progress.finish();
    progress.finish();
    let text = buffer.text();
    assert!(!text.contains('\r'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 5 + 1, "{text}");
    assert_eq!(lines[0], "ablation: 0/50 started");
    assert!(lines[1].starts_with("ablation:  20% (10/50) elapsed "), "{}", lines[1]);
    assert!(lines[1].contains(", eta "));
    assert!(lines[4].ends_with("— problem 7"), "{}", lines[4]);
    assert!(lines[5].starts_with("ablation: 100% (50/50)"));
    assert!(lines[6].starts_with("ablation: done, 50/50 in "));
}

#[test]
fn jumps_print_one_line_and_threads_do_not_interleave() {
    let buffer = Buffer::default();
    let progress = Progress::lines_to(Box::new(buffer.clone()), 1000, "forward", 10);
    progress.set_position(550);
    assert_eq!(progress.position(), 550);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let progress = progress.clone();
            scope.spawn(move || {
                for _ in 0..100 {
                    progress.inc(1);
                }
            });
        }
    });
    progress.finish();
    let text = buffer.text();
    let lines: Vec<&str> = text.lines().collect();
    // started, 50%, 60%, 70%, 80%, 90% (950/1000), done.
    assert_eq!(lines.len(), 7, "{text}");
    assert!(lines[1].starts_with("forward:  55% (550/1000)") || lines[1].starts_with("forward:  55%"), "{}", lines[1]);
    for line in &lines[1..6] {
        assert!(line.starts_with("forward: ") && line.contains("% ("), "{line}");
    }
    assert!(lines[6].starts_with("forward: done, 950/1000"));
}

#[test]
fn hidden_and_zero_total_are_quiet() {
    let hidden = Progress::hidden();
    hidden.inc(5);
    hidden.finish();
    assert_eq!(hidden.mode(), ProgressMode::Off);
    let buffer = Buffer::default();
    let empty = Progress::lines_to(Box::new(buffer.clone()), 0, "nothing", 10);
    empty.inc(3);
    empty.finish();
    assert_eq!(buffer.text().lines().count(), 2);
}

#[test]
fn logs_get_one_line_per_item_with_rate_and_eta() {
    let buffer = Buffer::default();
    let progress = Progress::line_per_item_to(Box::new(buffer.clone()), 3, "rollouts");
    progress.inc(1);
    progress.set_message("rollout_01");
    progress.inc(1);
    progress.inc(1);
    progress.finish();
    let text = buffer.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 3 + 1, "{text}");
    assert!(lines[1].starts_with("rollouts:  33% (1/3) elapsed "), "{}", lines[1]);
    assert!(lines[1].contains("/s") || lines[1].contains("s each"), "rate: {}", lines[1]);
    assert!(lines[2].contains(", eta ") && lines[2].ends_with("— rollout_01"), "{}", lines[2]);
    assert!(lines[4].starts_with("rollouts: done, 3/3 in "));
}

/// Quiet settings (the CLI's `--quiet`) make silent reporters; without a mode chosen, a reporter
/// is never silent. (Applying settings to the whole process is tested in `serial`.)
#[test]
fn quiet_settings_make_silent_reporters() {
    let quiet = ProgressSettings::quiet();
    assert_eq!(quiet.mode(), ProgressMode::Off);
    assert_eq!(quiet.progress(10, "x").mode(), ProgressMode::Off);
    assert_eq!(quiet.progress_detail(10, "x").mode(), ProgressMode::Off);
    assert_ne!(ProgressSettings::default().mode(), ProgressMode::Off);
    let notebook = ProgressSettings { notebook: true, ..ProgressSettings::default() };
    assert_eq!(notebook.mode(), ProgressMode::Lines, "a notebook gets lines, never a redrawn bar");
}
