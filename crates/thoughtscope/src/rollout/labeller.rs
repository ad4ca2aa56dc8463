//! Chunk labellers: turn a trace's chunks into `chunks_labeled.json` entries (thought-anchors' format).
//!
//! - [`Labeller`]: the interface [`super::generate`] uses; any [`Tagger`] labels through
//!   [`label_with_tagger`], and [`RuleTagger`] implements it directly.
//! - [`LlmLabeller`]: upstream's DAG labelling (`analyze_rollouts.py::label_chunk`) against any
//!   OpenAI-compatible endpoint: one `POST {base_url}/chat/completions` for the whole trace, asking
//!   for `{"<chunk index>": {"function_tags": [...], "depends_on": [...]}}`. The prompt is ours
//!   (same tag vocabulary and output format as upstream's `DAG_PROMPT`, plus [`VA_TAG`]).
//!   Parsing is lenient (code fences, prose around the object, numbers for indices, a single tag
//!   as a string). Upstream quirk kept: a chunk the answer does not mention gets `["unknown"]` and
//!   `[]`. When the call or the parse fails, every chunk gets upstream's error record instead of
//!   `function_tags`: `"categories": ["Unknown"], "explanation": "Error: …"` (as upstream writes a failed label), which
//!   [`super::Rollout`] reads back as a labelling error.
//!
//! HTTP is `ureq` without TLS: plain `http://` only (local servers, proxies). Build with the
//! `labeller-tls` feature for `https://` endpoints.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::tagger::{tag_chunks, RuleTagger, Tagger, FUNCTION_TAGS, VA_TAG};
use super::write::LabeledChunk;
use crate::{Error, Result};

/// Labels every chunk of one trace.
pub trait Labeller {
    /// One entry per chunk, `chunk_idx` = position. Never fails: a labeller that cannot label
    /// records why in the entries (see [`LlmLabeller`]).
    fn label(&self, problem: &str, chunks: &[String]) -> Vec<LabeledChunk>;
    /// Short description recorded in `generation.json` (`rules`, `llm:<model>`).
    fn describe(&self) -> String;
}

/// `chunks_labeled.json` entries from a per-sentence [`Tagger`] (`depends_on` empty).
pub fn label_with_tagger(tagger: &dyn Tagger, problem: &str, chunks: &[String]) -> Vec<LabeledChunk> {
    tag_chunks(tagger, problem, chunks)
        .into_iter()
        .enumerate()
        .map(|(chunk_idx, function_tags)| LabeledChunk {
            chunk: chunks[chunk_idx].clone(),
            chunk_idx,
            function_tags,
            depends_on: Vec::new(),
            extra: Map::new(),
        })
        .collect()
}

impl Labeller for RuleTagger {
    fn label(&self, problem: &str, chunks: &[String]) -> Vec<LabeledChunk> {
        label_with_tagger(self, problem, chunks)
    }
    fn describe(&self) -> String {
        "rules".into()
    }
}

/// Where and how to call the chat endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    /// e.g. `http://127.0.0.1:8000/v1` (the request goes to `{base_url}/chat/completions`).
    pub base_url: String,
    pub model: String,
    /// Environment variable holding the API key (sent as `Authorization: Bearer …` when set).
    pub api_key_env: Option<String>,
    pub temperature: f64,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Send `response_format: {"type": "json_object"}` as upstream (some servers reject it).
    pub json_mode: bool,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8000/v1".into(),
            model: "gpt-4o".into(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            temperature: 0.0,
            timeout: Duration::from_secs(120),
            json_mode: true,
        }
    }
}

/// Labels from one chunk of the model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLabel {
    pub function_tags: Vec<String>,
    pub depends_on: Vec<String>,
}

/// The OpenAI-compatible labeller.
#[derive(Debug, Clone)]
pub struct LlmLabeller {
    pub config: LlmConfig,
}

/// What each tag means, as told to the labelling model.
const TAG_DESCRIPTIONS: [(&str, &str); 10] = [
    ("problem_setup", "reading, restating or parsing the problem"),
    ("plan_generation", "deciding or announcing what to do next (meta-reasoning)"),
    ("fact_retrieval", "recalling a fact, formula, definition or problem detail without computing"),
    ("active_computation", "doing arithmetic or algebra towards the answer"),
    ("result_consolidation", "collecting intermediate results, summarising, preparing the answer"),
    ("uncertainty_management", "confusion, re-evaluation, backtracking or switching approach"),
    ("final_answer_emission", "stating the final (boxed) answer"),
    ("self_checking", "verifying or re-confirming earlier steps"),
    (VA_TAG, "saying it may be tested, evaluated, graded or observed (add it next to the functional tag)"),
    ("unknown", "none of the above, or purely stylistic"),
];

impl LlmLabeller {
    pub fn new(config: LlmConfig) -> Self {
        Self { config }
    }

    /// The user message sent for a trace.
    pub fn prompt(&self, problem: &str, chunks: &[String]) -> String {
        debug_assert_eq!(TAG_DESCRIPTIONS.len(), FUNCTION_TAGS.len() + 1);
        let mut text = String::from(
            "You annotate chain-of-thought traces of language models solving maths problems. The trace \
             below is split into numbered chunks. For every chunk give:\n\
             - \"function_tags\": one or more tags saying what the chunk does, from this list:\n",
        );
        for (tag, meaning) in TAG_DESCRIPTIONS {
            text.push_str(&format!("  - {tag}: {meaning}\n"));
        }
        text.push_str(
            "- \"depends_on\": the indices (as strings) of earlier chunks whose results or ideas this chunk \
             directly uses; [] when none. Be conservative.\n\n\
             Answer with one JSON object and nothing else, keyed by chunk index as a string, e.g.\n\
             {\"0\": {\"function_tags\": [\"problem_setup\"], \"depends_on\": []}, \
             \"1\": {\"function_tags\": [\"active_computation\"], \"depends_on\": [\"0\"]}}\n\n",
        );
        text.push_str(&format!("[PROBLEM]\n{problem}\n\n[CHUNKS]\n"));
        for (i, chunk) in chunks.iter().enumerate() {
            text.push_str(&format!("Chunk {i}:\n{chunk}\n\n"));
        }
        text.push_str("Now label every chunk.");
        text
    }

    /// One chat-completions call; returns the assistant message content.
    pub fn request(&self, prompt: &str) -> Result<String> {
        let url = format!("{}/chat/completions", self.config.base_url.trim_end_matches('/'));
        if url.starts_with("https://") && !cfg!(feature = "labeller-tls") {
            return Err(Error::invalid(format!(
                "labeller endpoint {url}: https needs thoughtscope built with the `labeller-tls` feature"
            )));
        }
        let mut body = json!({
            "model": self.config.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.config.temperature,
        });
        if self.config.json_mode {
            body["response_format"] = json!({"type": "json_object"});
        }
        let mut agent_config =
            ureq::Agent::config_builder().timeout_global(Some(self.config.timeout)).http_status_as_error(false);
        if is_loopback(&url) {
            // A local server never sits behind the environment's HTTP proxy.
            agent_config = agent_config.proxy(None);
        }
        let agent: ureq::Agent = agent_config.build().into();
        let mut request = agent.post(&url).header("Content-Type", "application/json");
        let key = self.config.api_key_env.as_deref().and_then(crate::model::settings::lookups::var);
        if let Some(key) = &key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        let mut response = request
            .send(body.to_string())
            .map_err(|e| Error::Other(format!("labeller request to {url}: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| Error::Other(format!("labeller response from {url}: {e}")))?;
        if !(200..300).contains(&status) {
            let hint = match (status, &self.config.api_key_env, &key) {
                (401 | 403, Some(var), None) => format!(" (no API key: ${var} is not set)"),
                _ => String::new(),
            };
            return Err(Error::Other(format!("labeller endpoint {url}: HTTP {status}{hint}: {}", snippet(&text))));
        }
        let reply: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Other(format!("labeller endpoint {url}: response is not JSON ({e}): {}", snippet(&text))))?;
        reply
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::Other(format!("labeller endpoint {url}: no choices[0].message.content in {}", snippet(&text))))
    }

    /// Call the endpoint and parse its labels (errors are returned, not recorded).
    pub fn try_label(&self, problem: &str, chunks: &[String]) -> Result<Vec<ChunkLabel>> {
        let content = self.request(&self.prompt(problem, chunks))?;
        parse_labels(&content, chunks.len())
    }
}

impl Labeller for LlmLabeller {
    fn label(&self, problem: &str, chunks: &[String]) -> Vec<LabeledChunk> {
        let (labels, error) = match self.try_label(problem, chunks) {
            Ok(labels) => (labels, None),
            Err(e) => {
                let no_tags = ChunkLabel { function_tags: Vec::new(), depends_on: Vec::new() };
                (vec![no_tags; chunks.len()], Some(format!("Error: {e}")))
            }
        };
        chunks
            .iter()
            .zip(labels)
            .enumerate()
            .map(|(chunk_idx, (chunk, label))| {
                let mut extra = Map::new();
                if let Some(explanation) = &error {
                    extra.insert("categories".into(), json!(["Unknown"]));
                    extra.insert("explanation".into(), json!(explanation));
                }
                LabeledChunk {
                    chunk: chunk.clone(),
                    chunk_idx,
                    function_tags: label.function_tags,
                    depends_on: label.depends_on,
                    extra,
                }
            })
            .collect()
    }
    fn describe(&self) -> String {
        format!("llm:{}", self.config.model)
    }
}

fn is_loopback(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or(url);
    ["127.", "localhost:", "localhost/", "[::1]"].iter().any(|prefix| host.starts_with(prefix))
}

fn unknown_label() -> ChunkLabel {
    ChunkLabel { function_tags: vec!["unknown".into()], depends_on: Vec::new() }
}

fn snippet(text: &str) -> String {
    let cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() { format!("{cut}…") } else { cut }
}

/// Parse a labelling answer for `n_chunks` chunks. Accepts the object keyed by chunk index
/// (upstream's format), wrapped in code fences or prose, or an array of objects with
/// `chunk_idx`; tags may be a list or one string, indices numbers or strings. Chunks without an
/// entry get `["unknown"]` and `[]`. Fails only when no JSON object or array can be found.
pub fn parse_labels(content: &str, n_chunks: usize) -> Result<Vec<ChunkLabel>> {
    let value = find_json(content).ok_or_else(|| {
        Error::Other(format!("labeller answer holds no JSON object: {}", snippet(content)))
    })?;
    let mut labels = vec![unknown_label(); n_chunks];
    let mut place = |index: usize, entry: &Value| {
        if index < n_chunks {
            labels[index] = chunk_label(entry);
        }
    };
    match &value {
        Value::Object(object) => {
            // `{"chunks": [...]}` or `{"labels": {...}}` wrappers, else keyed by index.
            let inner = ["chunks", "labels", "annotations"].iter().find_map(|k| object.get(*k));
            match inner {
                Some(Value::Array(items)) => place_array(items, &mut place),
                Some(Value::Object(map)) => place_keyed(map, &mut place),
                _ => place_keyed(object, &mut place),
            }
        }
        Value::Array(items) => place_array(items, &mut place),
        _ => unreachable!("find_json returns objects or arrays"),
    }
    Ok(labels)
}

fn place_keyed(map: &Map<String, Value>, place: &mut dyn FnMut(usize, &Value)) {
    for (key, entry) in map {
        let digits = key.trim().trim_start_matches(|c: char| !c.is_ascii_digit());
        if let Ok(index) = digits.parse::<usize>() {
            place(index, entry);
        }
    }
}

fn place_array(items: &[Value], place: &mut dyn FnMut(usize, &Value)) {
    for (position, entry) in items.iter().enumerate() {
        let index = entry.get("chunk_idx").or_else(|| entry.get("index")).and_then(index_of).unwrap_or(position);
        place(index, entry);
    }
}

fn index_of(value: &Value) -> Option<usize> {
    match value {
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn chunk_label(entry: &Value) -> ChunkLabel {
    let tags_value = entry.get("function_tags").or_else(|| entry.get("tags")).or_else(|| entry.get("categories"));
    let mut function_tags: Vec<String> = match tags_value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(normalize_tag).collect(),
        Some(Value::String(s)) => s.split(',').map(normalize_tag).collect(),
        _ => Vec::new(),
    };
    function_tags.retain(|t| !t.is_empty());
    if function_tags.is_empty() {
        function_tags.push("unknown".into());
    }
    let depends_on = match entry.get("depends_on") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| index_of(v).map(|i| i.to_string()))
            .collect(),
        Some(single) => index_of(single).map(|i| vec![i.to_string()]).unwrap_or_default(),
        None => Vec::new(),
    };
    ChunkLabel { function_tags, depends_on }
}

/// `"Active Computation"` → `active_computation`.
fn normalize_tag(tag: &str) -> String {
    tag.trim().to_lowercase().replace([' ', '-'], "_")
}

/// The first parseable JSON object or array in `text`: the whole text, a fenced block, or the
/// span from the first `{`/`[` to its last matching closer.
fn find_json(text: &str) -> Option<Value> {
    let mut candidates: Vec<&str> = vec![text.trim()];
    if let Some(start) = text.find("```") {
        let body = &text[start + 3..];
        let body = body.trim_start_matches(|c: char| c.is_ascii_alphabetic() || c == '=');
        candidates.push(body.split("```").next().unwrap_or(body).trim());
    }
    for (open, close) in [('{', '}'), ('[', ']')] {
        if let (Some(a), Some(b)) = (text.find(open), text.rfind(close)) {
            if a < b {
                candidates.push(&text[a..=b]);
            }
        }
    }
    candidates.into_iter().find_map(|c| match serde_json::from_str::<Value>(c) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => Some(v),
        _ => None,
    })
}

/// Re-label an existing rollout directory: read `chunks.json` (and the problem text from
/// `problem.json`), write `chunks_labeled.json`.
pub fn relabel_rollout(dir: &std::path::Path, labeller: &dyn Labeller) -> Result<Vec<LabeledChunk>> {
    use super::write::{read_json, write_json, ChunksFile, CHUNKS_FILE, CHUNKS_LABELED_FILE, PROBLEM_FILE};
    let chunks: ChunksFile = read_json(&dir.join(CHUNKS_FILE))?;
    let problem_path = dir.join(PROBLEM_FILE);
    let problem: Value = read_json(&problem_path)?;
    let problem_text = problem
        .get("problem")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::format(&problem_path, "missing string field `problem`"))?;
    let labeled = labeller.label(problem_text, &chunks.chunks);
    write_json(&dir.join(CHUNKS_LABELED_FILE), &labeled)?;
    Ok(labeled)
}
