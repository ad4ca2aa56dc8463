//! Mutation fuzzing on stable Rust with proptest.
//!
//! A case is a list of mutations applied to a real seed file: byte flips, interesting integers
//! written over bytes, inserted dictionary tokens, deletions, truncation and spliced chunks, and
//! for JSON also structural ones (a value replaced by another type, huge numbers, `NaN`-ish
//! strings, deep nesting, removed or duplicated entries). Mutations are proptest values, so a
//! failing case shrinks to the fewest and smallest mutations that still fail.
//!
//! [`fuzz`] runs a target once with `PROPTEST_CASES` cases (default [`DEFAULT_CASES`]), or, with
//! `THOUGHTSCOPE_FUZZ_SECONDS` set, keeps starting fresh runners (new random seeds) until that
//! many seconds have passed. Either way it prints one results line (see [`Stats::line`]); a
//! failure writes the mutated input under `target/fuzz-failures/` and fails the test (an abort
//! leaves the input that caused it there as `<target>-last-input.bin`).
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::fmt::Debug;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::Value;

/// Cases per target when `PROPTEST_CASES` is unset: small, so CI stays fast.
pub const DEFAULT_CASES: u32 = 64;
/// Seconds per target for the time-budget mode (`scripts/fuzz.sh`).
pub const SECONDS_VAR: &str = "THOUGHTSCOPE_FUZZ_SECONDS";

/// Integers a parser is most likely to mishandle: zero, one, sign and width boundaries.
pub const INTERESTING_INTS: [u64; 22] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    (1 << 32) + 1,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
    u64::MAX - 1,
    31,
    32,
    33,
    4096,
    1 << 40,
];

// ---------------------------------------------------------------------------------------------
// Byte-level mutations

/// One edit of a byte string. Positions are [`Index`]es, valid for any length.
#[derive(Debug, Clone)]
pub enum ByteMutation {
    FlipBit { at: Index, bit: u8 },
    SetByte { at: Index, value: u8 },
    /// An interesting integer written over `width` bytes (1, 2, 4 or 8), either byte order.
    SetInt { at: Index, width: u8, value: u64, big_endian: bool },
    Insert { at: Index, bytes: Vec<u8> },
    /// One of the target's dictionary tokens inserted (format keywords, huge numbers, ...).
    InsertToken { at: Index, token: Index },
    /// A dictionary token written over the bytes at `at`.
    OverwriteToken { at: Index, token: Index },
    Delete { at: Index, len: u16 },
    Truncate { at: Index },
    /// A chunk of a seed (possibly another one) copied over the bytes at `to`.
    Splice { seed: Index, from: Index, to: Index, len: u16 },
    /// A chunk of the input repeated in place.
    Repeat { from: Index, len: u16, times: u8 },
}

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![3 => proptest::sample::select(INTERESTING_INTS.to_vec()), 1 => any::<u64>()]
}

/// A byte mutation, weighted towards the edits that keep the input mostly intact.
pub fn byte_mutation() -> impl Strategy<Value = ByteMutation> {
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| ByteMutation::FlipBit { at, bit }),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, value)| ByteMutation::SetByte { at, value }),
        3 => (any::<Index>(), proptest::sample::select(vec![1u8, 2, 4, 8]), interesting_u64(), any::<bool>())
            .prop_map(|(at, width, value, big_endian)| ByteMutation::SetInt { at, width, value, big_endian }),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| ByteMutation::Insert { at, bytes }),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(at, token)| ByteMutation::InsertToken { at, token }),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(at, token)| ByteMutation::OverwriteToken { at, token }),
        2 => (any::<Index>(), 1u16..64).prop_map(|(at, len)| ByteMutation::Delete { at, len }),
        1 => any::<Index>().prop_map(|at| ByteMutation::Truncate { at }),
        2 => (any::<Index>(), any::<Index>(), any::<Index>(), 1u16..256)
            .prop_map(|(seed, from, to, len)| ByteMutation::Splice { seed, from, to, len }),
        1 => (any::<Index>(), 1u16..64, 1u8..8).prop_map(|(from, len, times)| ByteMutation::Repeat { from, len, times }),
    ]
}

/// `count` byte mutations (a range like `0..4`).
pub fn byte_mutations(count: std::ops::Range<usize>) -> impl Strategy<Value = Vec<ByteMutation>> {
    proptest::collection::vec(byte_mutation(), count)
}

/// A position in `0..=len` (an insertion point).
fn point(at: &Index, len: usize) -> usize {
    at.index(len + 1)
}

/// Apply `mutation` to `bytes[..limit]` (`limit` clamps every position: `usize::MAX` for the
/// whole input). `seeds` feed splices, `dictionary` the token insertions.
pub fn apply_bytes(bytes: &mut Vec<u8>, mutation: &ByteMutation, seeds: &[&[u8]], dictionary: &[&[u8]], limit: usize) {
    let span = bytes.len().min(limit);
    let token = |i: &Index| -> &[u8] {
        if dictionary.is_empty() {
            b"\0"
        } else {
            dictionary[i.index(dictionary.len())]
        }
    };
    match mutation {
        ByteMutation::FlipBit { at, bit } if span > 0 => bytes[at.index(span)] ^= 1 << (bit % 8),
        ByteMutation::SetByte { at, value } if span > 0 => bytes[at.index(span)] = *value,
        ByteMutation::SetInt { at, width, value, big_endian } if span > 0 => {
            let width = usize::from(*width).min(8);
            let encoded = if *big_endian { value.to_be_bytes() } else { value.to_le_bytes() };
            let encoded = if *big_endian { &encoded[8 - width..] } else { &encoded[..width] };
            let start = at.index(span);
            let end = (start + width).min(bytes.len());
            bytes[start..end].copy_from_slice(&encoded[..end - start]);
        }
        ByteMutation::Insert { at, bytes: inserted } => {
            let at = point(at, span);
            bytes.splice(at..at, inserted.iter().copied());
        }
        ByteMutation::InsertToken { at, token: t } => {
            let at = point(at, span);
            bytes.splice(at..at, token(t).iter().copied());
        }
        ByteMutation::OverwriteToken { at, token: t } => {
            let t = token(t);
            let at = point(at, span);
            let end = (at + t.len()).min(bytes.len());
            bytes.splice(at..end, t.iter().copied());
        }
        ByteMutation::Delete { at, len } if span > 0 => {
            let at = at.index(span);
            let end = (at + usize::from(*len)).min(bytes.len());
            bytes.drain(at..end);
        }
        ByteMutation::Truncate { at } => {
            let at = point(at, span);
            bytes.truncate(at);
        }
        ByteMutation::Splice { seed, from, to, len } if !seeds.is_empty() => {
            let source = seeds[seed.index(seeds.len())];
            if source.is_empty() {
                return;
            }
            let from = from.index(source.len());
            let chunk = &source[from..(from + usize::from(*len)).min(source.len())];
            let to = point(to, span);
            let end = (to + chunk.len()).min(bytes.len());
            bytes.splice(to..end, chunk.iter().copied());
        }
        ByteMutation::Repeat { from, len, times } if span > 0 => {
            let from = from.index(span);
            let chunk = bytes[from..(from + usize::from(*len)).min(bytes.len())].to_vec();
            let repeated: Vec<u8> = chunk.iter().copied().cycle().take(chunk.len() * usize::from(*times)).collect();
            bytes.splice(from..from, repeated);
        }
        _ => {}
    }
}

/// `bytes` with every mutation applied in order.
pub fn mutate_bytes(bytes: &[u8], mutations: &[ByteMutation], seeds: &[&[u8]], dictionary: &[&[u8]], limit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in mutations {
        apply_bytes(&mut out, m, seeds, dictionary, limit);
    }
    out
}

/// Tokens worth inserting into any JSON text.
pub const JSON_TOKENS: [&str; 24] = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1e308",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "-0",
    "0.5",
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    ",",
    ":",
    "[",
    "{",
    "\"",
    "\\",
];

// ---------------------------------------------------------------------------------------------
// Structural JSON mutations

/// What a JSON node can be replaced with.
#[derive(Debug, Clone)]
pub enum JsonReplacement {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    String(String),
    EmptyArray,
    EmptyObject,
    /// Raw text spliced in after serialisation: what serde_json never writes (`NaN`, `1e999`,
    /// numbers beyond u64).
    Raw(&'static str),
    /// A copy of another node of the same document.
    CopyOf(Index),
    /// An array of `len` copies of the node itself.
    Repeated(u16),
}

const RAW_TOKENS: [&str; 9] =
    ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "18446744073709551616", "-18446744073709551616", "1e-999", "-0"];

fn json_replacement() -> impl Strategy<Value = JsonReplacement> {
    let strings = proptest::sample::select(vec![
        "", "NaN", "nan", "Infinity", "-inf", "1e308", "-1", "0", "18446744073709551615", "\u{0}", "../..", "/", "/dev/zero",
        "layer_", "layer_18446744073709551616", "é", "\u{feff}", "\n\n", " ",
    ]);
    prop_oneof![
        1 => Just(JsonReplacement::Null),
        1 => any::<bool>().prop_map(JsonReplacement::Bool),
        2 => proptest::sample::select(vec![-1i64, 0, 1, 2, -2, i64::MIN, i64::MAX, -4294967296]).prop_map(JsonReplacement::Int),
        2 => proptest::sample::select(vec![u64::MAX, u64::MAX - 1, 1 << 32, 1 << 63, 4294967295, 1 << 24, 1 << 30, 99999999])
            .prop_map(JsonReplacement::UInt),
        2 => proptest::sample::select(vec![1e308, -1e308, 5e-324, -0.0, 0.5, 1.5, -1.5, 1e-30, 3.4e38])
            .prop_map(JsonReplacement::Float),
        2 => strings.prop_map(|s| JsonReplacement::String(s.to_string())),
        1 => (1usize..20_000).prop_map(|n| JsonReplacement::String("x".repeat(n))),
        1 => Just(JsonReplacement::EmptyArray),
        1 => Just(JsonReplacement::EmptyObject),
        2 => proptest::sample::select(RAW_TOKENS.to_vec()).prop_map(JsonReplacement::Raw),
        2 => any::<Index>().prop_map(JsonReplacement::CopyOf),
        1 => (0u16..40).prop_map(JsonReplacement::Repeated),
    ]
}

/// One structural edit of a JSON document; `node` indexes its nodes in pre-order.
#[derive(Debug, Clone)]
pub enum JsonMutation {
    Replace { node: Index, with: JsonReplacement },
    /// The node removed from its parent (object entry or array element).
    Remove { node: Index },
    /// The node repeated in its parent array (or under a new key in its object).
    Duplicate { node: Index },
    /// The node wrapped in `depth` arrays (past serde_json's 128 levels too).
    Nest { node: Index, depth: u16 },
    /// An object key renamed (to another key of the document, or an odd one).
    RenameKey { node: Index, to: Index },
    /// An array's elements reversed.
    Reverse { node: Index },
    /// Text edits inside a string value (`node` indexes the document's strings): delete up to
    /// `delete` characters at `at`, then insert a [`TEXT_TOKENS`] entry there. Keeps the JSON
    /// valid, so the reader's text handling (sentence splitting, ids, names) gets the input.
    EditString { node: Index, at: Index, delete: u8, insert: Index },
}

/// Text worth inserting into strings: sentence and paragraph ends, markup the segmenter looks
/// for, whitespace of every kind, multi-byte characters.
pub const TEXT_TOKENS: [&str; 24] = [
    "\n", "\n\n", "\r\n\r\n", ". ", "! ", "? ", "...", ".\n", "<think>", "</think>", "\t", " ", "  ", "\u{a0}", "\u{2028}",
    "é", "😀", "\u{0}", "Wait,", "\\boxed{", "}", "1.5", "", "a",
];

pub fn json_mutation() -> impl Strategy<Value = JsonMutation> {
    prop_oneof![
        6 => (any::<Index>(), json_replacement()).prop_map(|(node, with)| JsonMutation::Replace { node, with }),
        2 => any::<Index>().prop_map(|node| JsonMutation::Remove { node }),
        1 => any::<Index>().prop_map(|node| JsonMutation::Duplicate { node }),
        1 => (any::<Index>(), prop_oneof![3 => 1u16..8, 1 => 100u16..300]).prop_map(|(node, depth)| JsonMutation::Nest { node, depth }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(node, to)| JsonMutation::RenameKey { node, to }),
        1 => any::<Index>().prop_map(|node| JsonMutation::Reverse { node }),
        4 => (any::<Index>(), any::<Index>(), prop_oneof![1 => Just(0u8), 1 => 1u8..40], any::<Index>())
            .prop_map(|(node, at, delete, insert)| JsonMutation::EditString { node, at, delete, insert }),
    ]
}

/// A mutated JSON document: structural edits, serialised (compact or pretty), then byte edits.
#[derive(Debug, Clone)]
pub struct JsonCase {
    pub structural: Vec<JsonMutation>,
    pub bytes: Vec<ByteMutation>,
    pub pretty: bool,
}

pub fn json_case() -> impl Strategy<Value = JsonCase> {
    (
        proptest::collection::vec(json_mutation(), 0..4),
        // Byte edits mostly break the syntax (or UTF-8): rarer, so structure gets through.
        prop_oneof![3 => Just(Vec::new()), 1 => byte_mutations(1..3)],
        any::<bool>(),
    )
        .prop_map(|(structural, bytes, pretty)| JsonCase { structural, bytes, pretty })
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    At(usize),
}

fn node_paths(value: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(prefix.clone());
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                prefix.push(Step::At(i));
                node_paths(item, prefix, out);
                prefix.pop();
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                prefix.push(Step::Key(key.clone()));
                node_paths(item, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'v>(value: &'v mut Value, path: &[Step]) -> Option<&'v mut Value> {
    path.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::At(i) => v.get_mut(*i),
    })
}

fn node_ref<'v>(value: &'v Value, path: &[Step]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.get(k.as_str()),
        Step::At(i) => v.get(*i),
    })
}

fn all_keys(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| all_keys(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                all_keys(v, out);
            }
        }
        _ => {}
    }
}

/// Apply structural mutations; raw tokens become placeholders that [`render_json`] replaces.
fn mutate_json(mut value: Value, mutations: &[JsonMutation], raws: &mut Vec<&'static str>) -> Value {
    for mutation in mutations {
        let mut paths = Vec::new();
        node_paths(&value, &mut Vec::new(), &mut paths);
        let pick = |i: &Index| paths[i.index(paths.len())].clone();
        match mutation {
            JsonMutation::Replace { node, with } => {
                let path = pick(node);
                let replacement = match with {
                    JsonReplacement::Null => Value::Null,
                    JsonReplacement::Bool(b) => Value::Bool(*b),
                    JsonReplacement::Int(i) => Value::from(*i),
                    JsonReplacement::UInt(u) => Value::from(*u),
                    JsonReplacement::Float(f) => Value::from(*f),
                    JsonReplacement::String(s) => Value::String(s.clone()),
                    JsonReplacement::EmptyArray => Value::Array(Vec::new()),
                    JsonReplacement::EmptyObject => Value::Object(Default::default()),
                    JsonReplacement::Raw(token) => {
                        raws.push(token);
                        Value::String(format!("__fuzz_raw_{}__", raws.len() - 1))
                    }
                    JsonReplacement::CopyOf(other) => {
                        let other = pick(other);
                        node_mut(&mut value, &other).map(|v| v.clone()).unwrap_or(Value::Null)
                    }
                    JsonReplacement::Repeated(n) => {
                        let item = node_mut(&mut value, &path).map(|v| v.clone()).unwrap_or(Value::Null);
                        Value::Array(vec![item; usize::from(*n)])
                    }
                };
                if let Some(slot) = node_mut(&mut value, &path) {
                    *slot = replacement;
                }
            }
            JsonMutation::Remove { node } | JsonMutation::Duplicate { node } => {
                let path = pick(node);
                let Some((last, parent_path)) = path.split_last() else { continue };
                let duplicate = matches!(mutation, JsonMutation::Duplicate { .. });
                let Some(parent) = node_mut(&mut value, parent_path) else { continue };
                match (parent, last) {
                    (Value::Array(items), Step::At(i)) if duplicate => {
                        let copy = items[*i].clone();
                        items.insert(*i, copy);
                    }
                    (Value::Array(items), Step::At(i)) => {
                        items.remove(*i);
                    }
                    (Value::Object(map), Step::Key(k)) if duplicate => {
                        let copy = map[k].clone();
                        map.insert(format!("{k}_copy"), copy);
                    }
                    (Value::Object(map), Step::Key(k)) => {
                        map.remove(k);
                    }
                    _ => {}
                }
            }
            JsonMutation::Nest { node, depth } => {
                let path = pick(node);
                if let Some(slot) = node_mut(&mut value, &path) {
                    let mut nested = slot.take();
                    for _ in 0..*depth {
                        nested = Value::Array(vec![nested]);
                    }
                    *slot = nested;
                }
            }
            JsonMutation::RenameKey { node, to } => {
                let path = pick(node);
                let mut keys = Vec::new();
                all_keys(&value, &mut keys);
                keys.extend(["".to_string(), "__proto__".to_string(), "é".to_string()]);
                let new_key = keys[to.index(keys.len())].clone();
                let Some((Step::Key(old), parent_path)) = path.split_last() else { continue };
                if let Some(Value::Object(map)) = node_mut(&mut value, parent_path) {
                    if let Some(v) = map.remove(old) {
                        map.insert(new_key, v);
                    }
                }
            }
            JsonMutation::Reverse { node } => {
                let path = pick(node);
                if let Some(Value::Array(items)) = node_mut(&mut value, &path) {
                    items.reverse();
                }
            }
            JsonMutation::EditString { node, at, delete, insert } => {
                let strings: Vec<&Vec<Step>> =
                    paths.iter().filter(|p| matches!(node_ref(&value, p), Some(Value::String(_)))).collect();
                if strings.is_empty() {
                    continue;
                }
                let path = strings[node.index(strings.len())].clone();
                if let Some(Value::String(text)) = node_mut(&mut value, &path) {
                    let mut chars: Vec<char> = text.chars().collect();
                    let start = at.index(chars.len() + 1);
                    let end = (start + usize::from(*delete)).min(chars.len());
                    chars.splice(start..end, TEXT_TOKENS[insert.index(TEXT_TOKENS.len())].chars());
                    *text = chars.into_iter().collect();
                }
            }
        }
    }
    value
}

/// The text of `value` with raw-token placeholders replaced.
fn render_json(value: &Value, pretty: bool, raws: &[&str]) -> Vec<u8> {
    let mut text = if pretty { serde_json::to_string_pretty(value) } else { serde_json::to_string(value) }
        .expect("a serde_json::Value serialises");
    for (k, raw) in raws.iter().enumerate() {
        text = text.replace(&format!("\"__fuzz_raw_{k}__\""), raw);
    }
    text.into_bytes()
}

/// The bytes of `seed` (a JSON text) after `case`; byte edits draw tokens from [`JSON_TOKENS`]
/// plus `extra_tokens`. A seed that is not JSON gets the byte edits only.
pub fn mutate_json_text(seed: &[u8], case: &JsonCase, seeds: &[&[u8]], extra_tokens: &[&[u8]]) -> Vec<u8> {
    let text = match serde_json::from_slice::<Value>(seed) {
        Ok(value) => {
            let mut raws = Vec::new();
            let value = mutate_json(value, &case.structural, &mut raws);
            render_json(&value, case.pretty, &raws)
        }
        Err(_) => seed.to_vec(),
    };
    let mut dictionary: Vec<&[u8]> = JSON_TOKENS.iter().map(|t| t.as_bytes()).collect();
    dictionary.extend_from_slice(extra_tokens);
    mutate_bytes(&text, &case.bytes, seeds, &dictionary, usize::MAX)
}

// ---------------------------------------------------------------------------------------------
// The runner

/// Counters of one target's run.
#[derive(Debug, Default)]
pub struct Stats {
    pub executions: Cell<u64>,
    pub slowest: Cell<Duration>,
    /// How the inputs fared, e.g. ("ok", n) and ("err", n): shows the mutations reach past the
    /// first check.
    pub outcomes: RefCell<std::collections::BTreeMap<&'static str, u64>>,
}

impl Stats {
    pub fn count(&self, outcome: &'static str) {
        *self.outcomes.borrow_mut().entry(outcome).or_default() += 1;
    }

    /// Count `result` as "ok" or "err"; with `THOUGHTSCOPE_FUZZ_VERBOSE=1` print each error (to
    /// see which check the mutations stop at).
    pub fn outcome<T, E: std::fmt::Display>(&self, result: &Result<T, E>) {
        match result {
            Ok(_) => self.count("ok"),
            Err(e) => {
                self.count("err");
                if std::env::var("THOUGHTSCOPE_FUZZ_VERBOSE").is_ok_and(|v| v == "1") {
                    log_line(&format!("  err: {}", e.to_string().chars().take(300).collect::<String>()));
                }
            }
        }
    }

    /// `fuzz <target>: executions N, crashes C, wall S s, slowest case M ms (ok a, err b)`.
    pub fn line(&self, target: &str, crashes: u64, wall: Duration) -> String {
        let outcomes: Vec<String> = self.outcomes.borrow().iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!(
            "fuzz {target}: executions {}, crashes {crashes}, wall {:.1} s, slowest case {} ms ({})",
            self.executions.get(),
            wall.as_secs_f64(),
            self.slowest.get().as_millis(),
            outcomes.join(", ")
        )
    }
}

fn log_line(line: &str) {
    // Past libtest's capture, so `cargo test` shows it without --nocapture.
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Where a failing input is written: `target/fuzz-failures/`.
pub fn failures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures")
}

/// Run `check` on inputs from `strategy` until the case count (or the time budget) is reached.
/// `check` returns `Err` for a property violation (e.g. damaged data served); a panic is caught
/// by proptest. Either way the case is shrunk, `describe` of the smallest failing input is saved
/// and the test fails. `describe` gives the input's bytes for reproduction (`None`: the Debug
/// form is enough).
pub fn fuzz<S>(
    target: &str,
    strategy: S,
    describe: impl Fn(&S::Value) -> Option<Vec<u8>>,
    check: impl Fn(&S::Value, &Stats) -> Result<(), String>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let cases = env_number::<u32>("PROPTEST_CASES").filter(|&c| c > 0).unwrap_or(DEFAULT_CASES);
    let budget = env_number::<f64>(SECONDS_VAR).filter(|s| *s > 0.0).map(Duration::from_secs_f64);
    let stats = Stats::default();
    // Each input is written here before it runs: an abort (which nothing can catch) leaves it
    // behind for reproduction; a clean finish removes it.
    let last_input = failures_dir().join(format!("{target}-last-input.bin"));
    let _ = std::fs::create_dir_all(failures_dir());
    let start = Instant::now();
    loop {
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 2000,
            max_shrink_time: 60_000,
            ..Config::default()
        };
        // `TestRunner::new` draws a fresh random seed each time (unless PROPTEST_RNG_SEED is set).
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |input| {
            stats.executions.set(stats.executions.get() + 1);
            if let Some(bytes) = describe(&input) {
                let _ = std::fs::write(&last_input, bytes);
            }
            let case_start = Instant::now();
            let outcome = check(&input, &stats);
            let took = case_start.elapsed();
            if took > stats.slowest.get() {
                stats.slowest.set(took);
            }
            outcome.map_err(TestCaseError::fail)
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => {
                log_line(&stats.line(target, 1, start.elapsed()));
                let _ = std::fs::remove_file(&last_input);
                let saved = describe(&input).map(|bytes| {
                    let path = failures_dir().join(format!("{target}-{}.bin", std::process::id()));
                    let _ = std::fs::write(&path, bytes);
                    path
                });
                panic!(
                    "fuzz {target}: {reason}\nsmallest failing input: {input:#?}\nmutated bytes saved to {}",
                    saved.map_or_else(|| "(not saved)".to_string(), |p| p.display().to_string())
                );
            }
            Err(TestError::Abort(reason)) => panic!("fuzz {target}: runner aborted: {reason}"),
        }
        match budget {
            Some(budget) if start.elapsed() < budget => continue,
            _ => break,
        }
    }
    let _ = std::fs::remove_file(&last_input);
    log_line(&stats.line(target, 0, start.elapsed()));
}

/// A fresh empty directory for one case under `root` (the previous case's is removed).
pub fn case_dir(root: &std::path::Path) -> PathBuf {
    thread_local!(static NEXT: Cell<u64> = const { Cell::new(0) });
    let n = NEXT.with(|c| {
        let n = c.get();
        c.set(n + 1);
        n
    });
    if n > 0 {
        let _ = std::fs::remove_dir_all(root.join(format!("case-{}", n - 1)));
    }
    let dir = root.join(format!("case-{n}"));
    std::fs::create_dir_all(&dir).expect("creating a case directory");
    dir
}
