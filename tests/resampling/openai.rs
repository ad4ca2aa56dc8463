//! `thoughtscope resample --provider openai` against a real OpenAI-compatible server: llama.cpp's
//! server from the PyPI package llama-cpp-python (scripts/install-llama-cpp.sh), started by the
//! test on a free loopback port with the SmolLM2 GGUF, and killed at the end, also on failure.
//! Checks upstream's layout and fields, the parsed answers, the manifest's provider identity, the
//! fallback when the server returns fewer choices than `n`, and the refusal to resume with another
//! provider.

use crate::support;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use thoughtscope::rollout::generate::upstream_prompt;
use thoughtscope::rollout::resample::{DecodeSettings, OpenAiConfig, OpenAiProvider, FORCED_ANSWER_SUFFIX};

const GGUF: &str = "models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf";
const PROBLEM: &str = "What is 2 plus 3?";
const CHUNKS: [&str; 4] = ["I need 2 plus 3.", "Two plus three is five.", "Let me check: 2 + 3 = 5.", "So the answer is \\boxed{5}."];

/// The server process; killed and reaped when dropped, whatever happened in the test.
struct Server {
    child: Child,
    log: PathBuf,
    base_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.chars().rev().take(3000).collect::<Vec<_>>().into_iter().rev().collect()
    }
}

/// `.venv/bin/python` with llama-cpp-python's server importable, else a skip (a failure under CI).
fn llama_python() -> Option<PathBuf> {
    let python = support::repo().join(".venv/bin/python");
    let importable = python.is_file()
        && Command::new(&python)
            .args(["-c", "import llama_cpp.server.app"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if importable {
        Some(python)
    } else {
        support::skip("llama-cpp-python's server is not importable from .venv: run `bash scripts/install-llama-cpp.sh`");
        None
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Start llama.cpp's server on the GGUF and wait until `/v1/models` answers.
fn start_server(python: &Path, gguf: &Path, dir: &Path) -> Server {
    let port = free_port();
    let log = dir.join("server.log");
    let log_file = std::fs::File::create(&log).unwrap();
    // The wrapper keeps the weights out of llama.cpp's AMX buffers, whose matmul segfaults on
    // this GGUF in a GGML_NATIVE build on a CPU with AMX.
    let child = Command::new(python)
        .arg(support::repo().join("scripts/llama_server.py"))
        .arg("--model")
        .arg(gguf)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--n_threads", "2", "--n_ctx", "2048", "--seed", "44"])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let mut server = Server { child, log, base_url: format!("http://127.0.0.1:{port}/v1") };
    let started = Instant::now();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .proxy(None)
        .build()
        .into();
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("llama.cpp server exited ({status}) before answering:\n{}", server.log_tail());
        }
        if let Ok(mut response) = agent.get(&format!("{}/models", server.base_url)).call() {
            if response.status().is_success() {
                let mut text = String::new();
                response.body_mut().as_reader().read_to_string(&mut text).unwrap();
                assert!(text.contains("\"data\""), "{text}");
                return server;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(120), "llama.cpp server not up in 120 s:\n{}", server.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A problem folder in upstream's layout.
fn problem_dir(root: &Path) -> PathBuf {
    let dir = root.join("problem_3");
    std::fs::create_dir_all(&dir).unwrap();
    let prompt = upstream_prompt(PROBLEM);
    let solution = CHUNKS.join(" ");
    let write = |name: &str, value: Value| std::fs::write(dir.join(name), serde_json::to_string_pretty(&value).unwrap()).unwrap();
    write("problem.json", json!({"problem": PROBLEM, "gt_answer": "5"}));
    write("base_solution.json", json!({"prompt": prompt, "solution": solution, "full_cot": format!("{prompt}{solution}")}));
    write("chunks.json", json!({"chunks": CHUNKS}));
    dir
}

fn resample(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thoughtscope")).arg("--quiet").arg("resample").args(args).output().unwrap()
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The first non-empty `\boxed{...}` content of `text`, braces counted, an unclosed one running
/// to the end (the test's own re-statement of upstream's `extract_boxed_answers`).
fn first_boxed(text: &str) -> Option<String> {
    text.match_indices("\\boxed{").find_map(|(at, open)| {
        let rest = &text[at + open.len()..];
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c { '{' => 1, '}' => -1, _ => 0 };
                depth == 0
            })
            .map_or(rest.len(), |(end, _)| end);
        (end > 0).then(|| rest[..end].to_string())
    })
}

#[test]
fn openai_provider_against_llama_cpp_server() {
    let gguf = support::repo().join(GGUF);
    if !gguf.is_file() {
        support::skip(format!("{} absent: run scripts/fetch-model.sh", gguf.display()));
        return;
    }
    let Some(python) = llama_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let server = start_server(&python, &gguf, tmp.path());
    let dir = problem_dir(tmp.path());
    let (dir_arg, url) = (dir.to_str().unwrap().to_owned(), server.base_url.clone());

    // The library: the server's model id, and a request for 2 choices (llama-cpp-python ignores
    // `n`; whatever it returns, `continuations` must give one per seed).
    let provider = OpenAiProvider::connect(OpenAiConfig { concurrency: 2, ..OpenAiConfig::new(&url) }).unwrap();
    let model_id = provider.model().to_owned();
    assert!(!model_id.is_empty());
    let settings = DecodeSettings { temperature: 0.6, top_p: 0.95, max_tokens: 8 };
    let prompt = upstream_prompt(PROBLEM);
    let asked = provider.complete(&prompt, 2, 7, &settings).unwrap();
    assert!((1..=2).contains(&asked.len()), "{asked:?}");
    eprintln!("llama.cpp server returned {} choice(s) for n = 2", asked.len());
    // Same seed, same request: llama.cpp reseeds its sampler per request.
    let again = provider.complete(&prompt, 1, 7, &settings).unwrap();
    assert_eq!(again[0].text, asked[0].text, "a seeded request is reproducible");

    // Default rollouts through the command, two chunks, K = 2, two choices asked per request.
    let out = tmp.path().join("out");
    let common = ["--provider", "openai", "--base-url", url.as_str(), "--rollouts", "2", "--max-tokens", "16", "--concurrency", "2"];
    let run = resample(&[&[dir_arg.as_str(), "--out", out.to_str().unwrap(), "--chunks", "1,3", "--choices-per-request", "2"][..], &common[..]].concat());
    assert!(run.status.success(), "{}\nserver log:\n{}", String::from_utf8_lossy(&run.stderr), server.log_tail());
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("chunk_1\t") && stdout.contains("chunk_3\t") && stdout.contains("new tokens/s"), "{stdout}");
    let problem_out = out.join("problem_3");
    for name in ["problem.json", "base_solution.json", "chunks.json"] {
        assert!(problem_out.join(name).is_file(), "{name} copied beside the chunks");
    }
    for chunk in [1usize, 3] {
        let chunk_dir = problem_out.join(format!("chunk_{chunk}"));
        let manifest = read(&chunk_dir.join("resample_manifest.json"));
        assert_eq!(manifest["provider"], format!("openai:{url}"));
        assert_eq!(manifest["model"], model_id.as_str());
        assert_eq!((manifest["rollouts"].as_u64(), manifest["max_tokens"].as_u64()), (Some(2), Some(16)));
        let records = read(&chunk_dir.join("solutions.json"));
        let records = records.as_array().unwrap();
        assert_eq!(records.len(), 2);
        let prefix = CHUNKS[..chunk].join(" ");
        for r in records {
            let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
            for field in ["chunk_removed", "prefix_without_chunk", "chunk_resampled", "rollout", "full_cot", "answer", "is_correct"] {
                assert!(keys.contains(&field), "{field} missing: {keys:?}");
            }
            assert_eq!(r["chunk_removed"], CHUNKS[chunk]);
            assert_eq!(r["prefix_without_chunk"], prefix.as_str());
            let rollout = r["rollout"].as_str().unwrap();
            assert!(!rollout.is_empty(), "the server returned text");
            assert_eq!(r["full_cot"].as_str().unwrap(), format!("{}{prefix}{rollout}", upstream_prompt(PROBLEM)));
            let expected = first_boxed(rollout).unwrap_or_default();
            assert_eq!(r["answer"].as_str().unwrap(), expected, "{rollout:?}");
            assert_eq!(r["is_correct"], expected == "5");
        }
        assert_ne!(records[0]["rollout"], records[1]["rollout"], "two seeds, two continuations");
    }

    // Forced answers: the prompt ends in `\boxed{`, so the server's first tokens are the answer.
    let forced = tmp.path().join("forced");
    let run = resample(&[&[dir_arg.as_str(), "--out", forced.to_str().unwrap(), "--chunks", "3", "--forced-answer"][..], &common[..]].concat());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let records = read(&forced.join("problem_3/chunk_3/solutions.json"));
    let mut answered = 0;
    for r in records.as_array().unwrap() {
        let (full_cot, answer) = (r["full_cot"].as_str().unwrap(), r["answer"].as_str().unwrap());
        assert!(full_cot.contains(FORCED_ANSWER_SUFFIX));
        let expected = first_boxed(&full_cot[full_cot.find(FORCED_ANSWER_SUFFIX).unwrap()..]).unwrap_or_default();
        assert_eq!(answer, expected, "{full_cot:?}");
        answered += usize::from(!answer.is_empty());
        assert_eq!(r["is_correct"], answer == "5");
    }
    eprintln!("forced answers: {}", records);
    assert!(answered > 0, "no forced rollout closed its \\boxed{{}} in 16 tokens: {records}");

    // Resume: the same command does nothing; the local engine on the same folder is refused.
    let again = resample(&[&[dir_arg.as_str(), "--out", out.to_str().unwrap(), "--chunks", "1,3", "--choices-per-request", "2"][..], &common[..]].concat());
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already done"));
    let local = resample(&[dir_arg.as_str(), "--out", out.to_str().unwrap(), "--chunks", "1", "--rollouts", "2", "--max-tokens", "16", "--model", "smollm2-135m"]);
    let stderr = String::from_utf8_lossy(&local.stderr);
    assert!(!local.status.success() && stderr.contains("provider") && stderr.contains("openai:"), "{stderr}");
    drop(server);
}
