//! Progress for long library loops (rollouts, forward passes, ablation runs) that reads well
//! everywhere: an indicatif bar with rate and ETA on a terminal; one line per item in a log (stderr
//! not a terminal); in a notebook one line per step of N % (default 10 %), never a `\r` (evcxr
//! forwards output line by line, so a redrawn bar would pile up). Quiet turns it all off.
//!
//! Loops inside one item (the layers of one forward pass) use [`progress_detail`]: a second bar
//! stacked under the item bar on a terminal (all bars share one `MultiProgress`), the notebook's
//! 10 % lines in evcxr, and nothing in a log, where the item lines already say what happens.
//!
//! ```no_run
//! use thoughtscope_model::progress::progress;
//! let bar = progress(700, "ablation runs");
//! for _ in 0..700 {
//!     // ... one run ...
//!     bar.inc(1);
//! }
//! bar.finish();
//! ```
//!
//! The mode comes from the process's [`ProgressSettings`] (part of [`Settings`](crate::Settings)):
//! `off` when quiet, `bar` or `lines` when chosen, otherwise `lines` inside evcxr or when stderr is
//! not a terminal (CI logs), `bar` on a terminal. Lines go to stdout inside evcxr (shown as normal
//! cell output) and to stderr elsewhere (stdout stays for data).
//! [`Progress`] is `Clone + Send + Sync`: rayon workers can share it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How a [`Progress`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// An indicatif bar on stderr.
    Bar,
    /// One line per step of N %.
    Lines,
    /// Nothing.
    Off,
}

/// How long loops report progress; part of [`Settings`](crate::Settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressSettings {
    /// The mode every reporter takes (`Some(Off)`: quiet); `None` picks per reporter: lines in a
    /// notebook or when stderr is not a terminal, else a bar.
    pub mode: Option<ProgressMode>,
    /// Running inside evcxr: lines go to stdout, one every [`step_percent`](Self::step_percent) %.
    pub notebook: bool,
    /// Percent of the items between two notebook lines (1–100).
    pub step_percent: u64,
}

impl Default for ProgressSettings {
    fn default() -> Self {
        ProgressSettings { mode: None, notebook: false, step_percent: 10 }
    }
}

impl ProgressSettings {
    /// Nothing reported (the CLI's `--quiet`).
    pub fn quiet() -> Self {
        ProgressSettings { mode: Some(ProgressMode::Off), ..ProgressSettings::default() }
    }

    /// The mode a reporter made now takes (see the module doc).
    pub fn mode(&self) -> ProgressMode {
        match self.mode {
            Some(mode) => mode,
            None if self.notebook || !std::io::stderr().is_terminal() => ProgressMode::Lines,
            None => ProgressMode::Bar,
        }
    }

    /// A reporter over `total` items labelled `label`, in [`ProgressSettings::mode`].
    pub fn progress(&self, total: u64, label: &str) -> Progress {
        match self.mode() {
            ProgressMode::Bar => Progress::bar(total, label),
            ProgressMode::Lines if self.notebook => {
                Progress::lines_to(Box::new(std::io::stdout()), total, label, self.step_percent)
            }
            ProgressMode::Lines => Progress::line_per_item_to(Box::new(std::io::stderr()), total, label),
            ProgressMode::Off => Progress::hidden(),
        }
    }

    /// A reporter for a loop inside one item of an outer [`ProgressSettings::progress`] loop (see
    /// the module doc).
    pub fn progress_detail(&self, total: u64, label: &str) -> Progress {
        match self.mode() {
            ProgressMode::Lines if !self.notebook => Progress::hidden(),
            _ => {
                let detail = self.progress(total, label);
                if let Inner::Bar(bar) = &*detail.inner {
                    bar.set_style(bar_style("  {prefix} [{bar:30}] {pos}/{len} {per_sec} (eta {eta})"));
                }
                Progress { inner: Arc::new(Inner::Detail(detail)) }
            }
        }
    }

    /// One status line (e.g. what a model load kept), where progress lines go: stdout inside
    /// evcxr, stderr elsewhere; nothing when quiet.
    pub fn note(&self, line: &str) {
        match self.mode() {
            ProgressMode::Off => {}
            _ if self.notebook => println!("{line}"),
            _ => eprintln!("{line}"),
        }
    }
}

/// The progress settings of this process. A static, unlike the rest of the settings: reporters
/// are made deep inside library loops that take no settings (ablation runs, forward passes,
/// rollouts), and every bar draws on the one terminal. Set only from a settings value
/// ([`Settings::apply_process_wide`](crate::Settings::apply_process_wide)); until then from the
/// environment ([`Settings::from_env`](crate::Settings::from_env)'s progress part), which is also
/// what each evcxr cell sees (a cell links its own copy of every static).
static CURRENT: RwLock<Option<ProgressSettings>> = RwLock::new(None);

/// Make `settings` the process's progress settings (see [`CURRENT`]).
pub(crate) fn configure(settings: ProgressSettings) {
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = Some(settings);
}

/// The process's progress settings (see [`CURRENT`]).
pub(crate) fn current() -> ProgressSettings {
    if let Some(settings) = *CURRENT.read().unwrap_or_else(|e| e.into_inner()) {
        return settings;
    }
    let from_env = progress_from(&crate::env::env_text);
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = Some(from_env);
    from_env
}

/// The mode [`progress`] picks here (see the module doc).
pub fn progress_mode() -> ProgressMode {
    current().mode()
}

/// [`ProgressSettings::note`] with the process's progress settings.
pub fn note(line: &str) {
    current().note(line)
}

/// A progress reporter over `total` items labelled `label`, with the process's progress settings.
pub fn progress(total: u64, label: &str) -> Progress {
    current().progress(total, label)
}

/// [`ProgressSettings::progress_detail`] with the process's progress settings.
pub fn progress_detail(total: u64, label: &str) -> Progress {
    current().progress_detail(total, label)
}

/// Every bar on the terminal, so that an item bar and its detail bar stack instead of
/// overwriting each other: one per process, as the terminal is.
fn terminal_bars() -> &'static MultiProgress {
    static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

/// A shared progress reporter; see [`progress`].
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

enum Inner {
    Bar(ProgressBar),
    Lines(Lines),
    /// A [`progress_detail`] reporter: like the one it wraps, but its bar is cleared when done.
    Detail(Progress),
    Off,
}

struct Lines {
    label: String,
    total: u64,
    /// 0: a line for every item.
    step_percent: u64,
    position: AtomicU64,
    /// Highest step (in units of `step_percent`) already printed.
    printed_step: Mutex<u64>,
    finished: AtomicBool,
    message: Mutex<String>,
    started: Instant,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl Progress {
    /// An indicatif bar on stderr (hidden by indicatif when stderr is not a terminal).
    pub fn bar(total: u64, label: &str) -> Progress {
        let bar = terminal_bars().add(ProgressBar::new(total));
        bar.set_style(bar_style("{prefix} [{bar:40}] {pos}/{len} {per_sec} ({elapsed} elapsed, eta {eta}) {msg}"));
        bar.set_prefix(label.to_owned());
        Progress { inner: Arc::new(Inner::Bar(bar)) }
    }

    /// Plain lines to `sink`, one each time another `step_percent` % is done (and a first line).
    pub fn lines_to(sink: Box<dyn Write + Send>, total: u64, label: &str, step_percent: u64) -> Progress {
        Self::lines(sink, total, label, step_percent.clamp(1, 100))
    }

    /// Plain lines to `sink`, one per item done, with the rate and ETA (and a first line).
    pub fn line_per_item_to(sink: Box<dyn Write + Send>, total: u64, label: &str) -> Progress {
        Self::lines(sink, total, label, 0)
    }

    fn lines(sink: Box<dyn Write + Send>, total: u64, label: &str, step_percent: u64) -> Progress {
        let lines = Lines {
            label: label.to_owned(),
            total,
            step_percent,
            position: AtomicU64::new(0),
            printed_step: Mutex::new(0),
            finished: AtomicBool::new(false),
            message: Mutex::new(String::new()),
            started: Instant::now(),
            sink: Mutex::new(sink),
        };
        lines.write_line(&format!("{}: 0/{total} started", lines.label));
        Progress { inner: Arc::new(Inner::Lines(lines)) }
    }

    /// A reporter that reports nothing.
    pub fn hidden() -> Progress {
        Progress { inner: Arc::new(Inner::Off) }
    }

    pub fn mode(&self) -> ProgressMode {
        match &*self.inner {
            Inner::Bar(_) => ProgressMode::Bar,
            Inner::Lines(_) => ProgressMode::Lines,
            Inner::Detail(inner) => inner.mode(),
            Inner::Off => ProgressMode::Off,
        }
    }

    /// `n` more items done.
    pub fn inc(&self, n: u64) {
        match &*self.inner {
            Inner::Bar(bar) => bar.inc(n),
            Inner::Lines(lines) => {
                let position = lines.position.fetch_add(n, Ordering::Relaxed) + n;
                lines.report(position);
            }
            Inner::Detail(inner) => inner.inc(n),
            Inner::Off => {}
        }
    }

    /// Set the number of items done (e.g. when resuming a run).
    pub fn set_position(&self, position: u64) {
        match &*self.inner {
            Inner::Bar(bar) => bar.set_position(position),
            Inner::Lines(lines) => {
                lines.position.store(position, Ordering::Relaxed);
                lines.report(position);
            }
            Inner::Detail(inner) => inner.set_position(position),
            Inner::Off => {}
        }
    }

    pub fn position(&self) -> u64 {
        match &*self.inner {
            Inner::Bar(bar) => bar.position(),
            Inner::Lines(lines) => lines.position.load(Ordering::Relaxed),
            Inner::Detail(inner) => inner.position(),
            Inner::Off => 0,
        }
    }

    /// A short status shown with the bar, or appended to the next progress line.
    pub fn set_message(&self, message: impl Into<String>) {
        match &*self.inner {
            Inner::Bar(bar) => bar.set_message(message.into()),
            Inner::Lines(lines) => *lines.message.lock().unwrap_or_else(|e| e.into_inner()) = message.into(),
            Inner::Detail(inner) => inner.set_message(message),
            Inner::Off => {}
        }
    }

    /// Print a line without breaking the bar (in lines mode: just the line).
    pub fn println(&self, line: impl AsRef<str>) {
        match &*self.inner {
            Inner::Bar(bar) => bar.println(line.as_ref()),
            Inner::Lines(lines) => lines.write_line(line.as_ref()),
            Inner::Detail(inner) => inner.println(line),
            Inner::Off => {}
        }
    }

    /// Done: the bar finishes; in lines mode a final "done" line with the elapsed time (once).
    pub fn finish(&self) {
        match &*self.inner {
            Inner::Bar(bar) => bar.finish(),
            Inner::Detail(inner) => match &*inner.inner {
                Inner::Bar(bar) => bar.finish_and_clear(),
                _ => inner.finish(),
            },
            Inner::Lines(lines) => {
                if !lines.finished.swap(true, Ordering::Relaxed) {
                    let position = lines.position.load(Ordering::Relaxed);
                    lines.write_line(&format!(
                        "{}: done, {position}/{} in {}",
                        lines.label,
                        lines.total,
                        format_duration(lines.started.elapsed())
                    ));
                }
            }
            Inner::Off => {}
        }
    }
}

impl Lines {
    fn report(&self, position: u64) {
        if self.total == 0 || self.finished.load(Ordering::Relaxed) {
            return;
        }
        let percent = (position.min(self.total) * 100) / self.total;
        let step = if self.step_percent == 0 { position } else { percent / self.step_percent };
        let mut printed = self.printed_step.lock().unwrap_or_else(|e| e.into_inner());
        if step <= *printed {
            return;
        }
        *printed = step;
        let elapsed = self.started.elapsed();
        let eta = if position > 0 && position < self.total {
            let remaining = elapsed.as_secs_f64() * (self.total - position) as f64 / position as f64;
            format!(", eta {}", format_duration(Duration::from_secs_f64(remaining)))
        } else {
            String::new()
        };
        let message = self.message.lock().map(|m| m.clone()).unwrap_or_default();
        let message = if message.is_empty() { String::new() } else { format!(" — {message}") };
        let per_second = position as f64 / elapsed.as_secs_f64().max(1e-9);
        let rate = if self.step_percent > 0 {
            String::new()
        } else if per_second >= 1.0 {
            format!(", {per_second:.1}/s")
        } else {
            format!(", {:.1}s each", 1.0 / per_second.max(1e-9))
        };
        self.write_line(&format!(
            "{}: {percent:>3}% ({position}/{}) elapsed {}{rate}{eta}{message}",
            self.label,
            self.total,
            format_duration(elapsed)
        ));
    }

    fn write_line(&self, line: &str) {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line so that lines from several threads never interleave.
        let _ = sink.write_all(format!("{line}\n").as_bytes());
        let _ = sink.flush();
    }
}

/// `4.2s`, `3m05s`, `1h02m`.
fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else if seconds < 3600.0 {
        let s = seconds as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let s = seconds as u64;
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// The progress settings from `THOUGHTSCOPE_PROGRESS`, `THOUGHTSCOPE_PROGRESS_STEP` and
/// `EVCXR_IS_RUNTIME` (looked up by `text`). Read by [`crate::settings::Settings::from_env`], and
/// here for reporters made before it.
pub(crate) fn progress_from(text: &impl Fn(&str) -> Option<String>) -> ProgressSettings {
    let mode = match text("THOUGHTSCOPE_PROGRESS").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Some("bar") => Some(ProgressMode::Bar),
        Some("lines" | "line") => Some(ProgressMode::Lines),
        Some("off" | "none" | "0") => Some(ProgressMode::Off),
        _ => None,
    };
    let step_percent = text("THOUGHTSCOPE_PROGRESS_STEP")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| (1..=100).contains(s))
        .unwrap_or(ProgressSettings::default().step_percent);
    ProgressSettings { mode, notebook: text("EVCXR_IS_RUNTIME").is_some_and(|v| v == "1"), step_percent }
}
