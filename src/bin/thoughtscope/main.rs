//! The `thoughtscope` command line. Each subcommand's module holds its arguments and maps them to
//! one library call's options, then prints what the call returns; errors are printed here, on one
//! line. Results go to stdout through `outln!`, never `println!`, so that a reader that stops
//! early (`| head`) ends the command quietly instead of making it panic.
//!
//! The run's [`Settings`] are built once, in [`main`]: from the environment
//! ([`Settings::from_env`]), then `--quiet`; each command that runs a model adds its `--device`
//! and `--weights` ([`DeviceArg::settings`]) and passes them down.
//!
//! For example (the README's command table lists every command):
//!
//! ```text
//! thoughtscope segment rollouts/apple_boxes/rollout_00 --mode chunks --json | head -3
//! thoughtscope codi run-all --test-mode
//! thoughtscope codi ablate --test-mode --shard 0/4    # one Slurm array task's share
//! ```

/// `println!` for the command's results. When stdout's reader has gone (`thoughtscope segment …
/// --json | head -1`), the write fails with `BrokenPipe` and the process ends at once with
/// success and no message, as ripgrep and the Unix tools do, where `println!` would panic; any
/// other write error ends it with that error on stderr.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_stdout_line(format_args!($($arg)*))
    };
}

mod analysis;
mod anchors;
mod attn;
mod blackbox;
mod bench;
mod cache;
mod codi;
mod explore;
mod generate;
mod importance;
mod notebook;
mod report;
mod resample;
mod suppress;
mod va;

use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use thoughtscope::model::names::NamedValues;
use thoughtscope::model::{ProgressSettings, Settings};

#[derive(Debug, Parser)]
#[command(name = "thoughtscope", version, about = "Sentence-level attention and continuous-thought analysis of reasoning traces")]
struct Cli {
    /// No progress bars or progress lines (results and errors are still printed).
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Split a rollout's trace into sentences (full-cot: upstream's segmentation; chunks: chunks joined by "\n").
    Segment(analysis::SegmentArgs),
    /// Vertical scores of one N×N sentence-averaged matrix (.npy).
    VerticalScores(analysis::VerticalScoresArgs),
    /// Receiver heads (top-k mean kurtosis) over every cache entry of one model.
    ReceiverHeads(analysis::ReceiverHeadsArgs),
    /// Sentence-averaged attention of every layer × head for one problem directory, into the cache.
    Attn(attn::AttnArgs),
    /// Attention suppression: per source sentence, KL of the next-token distributions with its keys suppressed (N×N, step_importance_supp.json).
    Suppress(suppress::SuppressArgs),
    /// Receiver heads over a folder of traces against the attention suppression of one trace: rank agreement, function tags.
    Anchors(anchors::AnchorsArgs),
    /// One trace as a self-contained interactive HTML page: text coloured by a metric, attention, suppression, resampling, heatmap.
    Explore(explore::ExploreArgs),
    /// Tagged-sentence (VA) attention analysis over a folder of rollouts: tables, figures, permutation p-values.
    Va(va::VaArgs),
    /// The attention cache: `cache status <dir> [--root R]` (entries, broken, temporaries, missing).
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Sample rollouts of each problem with a model and write them in the thought-anchors layout.
    Generate(generate::GenerateArgs),
    /// Upstream's importance metrics (resampling, counterfactual, forced) of one problem's resampled rollouts, into a chunks_labeled.json-shaped file.
    Importance(importance::ImportanceArgs),
    /// White-box (receiver scores, suppression) against counterfactual importance on one trace.
    Blackbox(blackbox::BlackboxArgs),
    /// Resample each chunk of a trace: K continuations of the prefix without it (thought-anchors layout).
    Resample(resample::ResampleArgs),
    /// CODI continuous-thought experiments: make-model, dataset, ablate, attention, analyze, run-all.
    #[command(subcommand)]
    Codi(codi::CodiCommand),
    /// Notebooks: `notebook run <nb.ipynb>` executes one headlessly into an offline HTML report.
    #[command(subcommand)]
    Notebook(notebook::NotebookCommand),
    /// Reports: `report index <dir>` writes `<dir>/index.html` linking every report below it.
    #[command(subcommand)]
    Report(report::ReportCommand),
}

/// The parser of a library option spelled as a word (`--score-type median`): `--help` lists the
/// words and clap refuses any other with the list; the library's own table of names decides.
fn named<T: NamedValues + Clone + Send + Sync>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::names()).map(|name| T::from_name(&name).expect("clap accepted one of the listed names"))
}

/// `--token-heads` and `--token-max`, flattened into every command that fills the attention cache
/// or writes a trace explorer page: the explorer's token view.
#[derive(Debug, Clone, Copy, Args)]
struct TokenViewArgs {
    /// Heads of the trace explorer's token view (any heads named with --heads first, then the top
    /// receiver heads); a cache fill stores their token pairs in the entry, from the same pass
    /// (0: none).
    #[arg(long, default_value_t = 4)]
    pub token_heads: usize,
    /// Tokens kept per sentence on each side of a token-view pair.
    #[arg(long, default_value_t = 16)]
    pub token_max: usize,
}

/// `--device` and `--weights`, flattened into every command that runs a model.
#[derive(Debug, Clone, Args)]
struct DeviceArg {
    /// `cpu`, `cuda`, `cuda:N` or `metal` (a GPU needs its backend built in: `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// How weight matrices are held: `stored` keeps bf16/f16 and GGUF blocks as the file has them
    /// (converted to f32 a band at a time where used; the same numbers), `f32` converts all at
    /// load. Default: THOUGHTSCOPE_WEIGHTS, else `stored`.
    #[arg(long, value_parser = crate::named::<thoughtscope::model::WeightPrecision>())]
    pub weights: Option<thoughtscope::model::WeightPrecision>,
}

/// `--shard`, flattened into every command that loops over problems or rollouts.
#[derive(Debug, Clone, Args)]
struct ShardArg {
    /// This task's share, `INDEX/COUNT` (0-based): an item belongs to shard `xxh3(content key) %
    /// COUNT`, its key being the text id or problem id. Without it, a Slurm array task takes the
    /// shard SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT name. A sharded run only fills the cache
    /// (or per-item outputs); the same command without a shard merges.
    #[arg(long, value_name = "I/N")]
    shard: Option<thoughtscope::io::shard::Shard>,
}

impl ShardArg {
    /// `--shard`, else the Slurm array task's shard, else `None` (the whole list).
    fn resolve(&self) -> thoughtscope::Result<Option<thoughtscope::io::shard::Shard>> {
        thoughtscope::io::shard::Shard::resolve(self.shard)
    }
}

impl DeviceArg {
    /// `settings` on this device, with this weight precision when one is given (else the
    /// environment's, already in `settings`). A bad device is an error naming it.
    fn settings(&self, settings: &Settings) -> thoughtscope::Result<Settings> {
        Ok(Settings {
            device: thoughtscope::model::parse_device(&self.device)?,
            weights: self.weights.unwrap_or(settings.weights),
            ..settings.clone()
        })
    }
}

/// The settings every command starts from: the environment's, quiet with `--quiet`; their
/// process-wide parts (progress, the kernels' instruction set) made current.
fn settings(quiet: bool) -> thoughtscope::Result<Settings> {
    let mut settings = Settings::from_env()?;
    if quiet {
        settings.progress = ProgressSettings::quiet();
    }
    settings.apply_process_wide()?;
    Ok(settings)
}

/// One line on stdout for `outln!`.
fn write_stdout_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(error) = writeln!(std::io::stdout().lock(), "{line}") {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {error}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    thoughtscope::model::reuse_freed_memory();
    thoughtscope::model::main_thread_in_pool();
    let cli = Cli::parse();
    let result = settings(cli.quiet).and_then(|settings| match cli.command {
        Command::Segment(args) => analysis::segment(args),
        Command::VerticalScores(args) => analysis::vertical_scores(args),
        Command::ReceiverHeads(args) => analysis::receiver_heads(args),
        Command::Attn(args) => attn::run(args, &settings),
        Command::Suppress(args) => suppress::run(args, &settings),
        Command::Anchors(args) => anchors::run(args, &settings),
        Command::Explore(args) => explore::run(args, &settings),
        Command::Va(args) => va::run(args, &settings),
        Command::Bench(command) => bench::run(command, &settings),
        Command::Cache(command) => cache::run(command),
        Command::Generate(args) => generate::run(args, &settings),
        Command::Importance(args) => importance::run(args, &settings),
        Command::Blackbox(args) => blackbox::run(args, &settings),
        Command::Resample(args) => resample::run(args, &settings),
        Command::Codi(command) => codi::run(command, &settings),
        Command::Notebook(command) => notebook::run(command),
        Command::Report(command) => report::run(command),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the error names the file and the problem.
            eprintln!("error: {}", error.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
