//! A problem set the project makes itself, in the seed dataset's schema, so that the CODI pipeline
//! runs on a fresh machine with nothing beside it. **These are not GSM8K problems**: seeded
//! multi-step arithmetic word problems with exact integer answers, written like GSM8K's (a person,
//! a quantity, one operation per sentence, a question), with a worked solution in GSM8K's form
//! (`<<12+5=17>>` per step, `#### N`) and the seed's four difficulty levels by the number of steps
//! (2, 3, 4, and 5 or 6 for `5+step`), counted as `expand_gsm8k_cot_dataset.py` counts them.
//!
//! The real stratified GSM8K file stays an input (`--input`); ids here are
//! `synthetic_<2step|3step|4step|5plusstep>_<NNN>` and `source` is `synthetic`, so the two never mix silently.

use serde_json::{json, Value};

use super::dataset::{Problem, PyRandom, DIFFICULTIES};
use crate::Result;

/// Problems per level in the embedded default set (the seed samples 25 per level from 250).
pub const DEFAULT_PER_LEVEL: usize = 50;
/// Seed of the embedded default set.
pub const DEFAULT_SEED: u64 = 2026;

const NAMES: [&str; 12] = ["Mia", "Liam", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Emma", "Kenji", "Sara", "Tom"];
/// (plural noun, container for equal groups).
const ITEMS: [(&str, &str); 8] = [
    ("apples", "baskets"),
    ("stickers", "albums"),
    ("marbles", "jars"),
    ("cookies", "boxes"),
    ("pencils", "cases"),
    ("stamps", "envelopes"),
    ("shells", "buckets"),
    ("cards", "decks"),
];

/// One step of a problem: the sentence, the annotated calculation and the new value.
struct Step {
    sentence: String,
    expression: String,
    value: i64,
}

/// Draw `0..n` from the seeded stream.
fn below(rng: &mut PyRandom, n: usize) -> usize {
    rng.randbelow(n)
}

fn between(rng: &mut PyRandom, low: i64, high: i64) -> i64 {
    low + below(rng, (high - low + 1) as usize) as i64
}

/// One operation on the current count `v`, chosen so the result stays a positive integer below
/// a few thousand.
fn next_step(rng: &mut PyRandom, v: i64, name: &str, item: &str, container: &str) -> Step {
    loop {
        match below(rng, 5) {
            0 => {
                let n = between(rng, 2, 30);
                return Step {
                    sentence: format!("{name} then gets {n} more {item}."),
                    expression: format!("{v}+{n}"),
                    value: v + n,
                };
            }
            1 if v > 3 => {
                let n = between(rng, 1, v - 1);
                return Step {
                    sentence: format!("{name} gives {n} {item} to a friend."),
                    expression: format!("{v}-{n}"),
                    value: v - n,
                };
            }
            2 if v <= 400 => {
                let k = between(rng, 2, 4);
                let times = ["", "", "doubles", "triples", "quadruples"][k as usize];
                return Step {
                    sentence: format!("{name} {times} the number of {item}."),
                    expression: format!("{v}*{k}"),
                    value: v * k,
                };
            }
            3 => {
                let divisors: Vec<i64> = (2..=6).filter(|d| v % d == 0 && v / d >= 2).collect();
                if divisors.is_empty() {
                    continue;
                }
                let d = divisors[below(rng, divisors.len())];
                return Step {
                    sentence: format!("{name} shares the {item} equally among {d} {container} and keeps one of them."),
                    expression: format!("{v}/{d}"),
                    value: v / d,
                };
            }
            4 if v <= 200 => {
                let k = between(rng, 2, 5);
                let n = between(rng, 2, 9);
                return Step {
                    sentence: format!("{name} buys {k} {container} with {n} {item} in each."),
                    expression: format!("{v}+{k}*{n}"),
                    value: v + k * n,
                };
            }
            _ => continue,
        }
    }
}

/// The difficulty label of `steps` calculation steps (`expand_gsm8k_cot_dataset.py`).
pub(crate) fn difficulty_of(steps: usize) -> &'static str {
    match steps {
        0..=2 => DIFFICULTIES[0],
        3 => DIFFICULTIES[1],
        4 => DIFFICULTIES[2],
        _ => DIFFICULTIES[3],
    }
}

/// One problem with `steps` calculation steps (the first sentence states the start, then one
/// operation per step).
fn make_problem(rng: &mut PyRandom, level: usize, index: usize, steps: usize) -> Value {
    let name = NAMES[below(rng, NAMES.len())];
    let (item, container) = ITEMS[below(rng, ITEMS.len())];
    let start = between(rng, 5, 40);
    let mut sentences = vec![format!("{name} has {start} {item}.")];
    let mut solution = Vec::new();
    let mut value = start;
    for _ in 0..steps {
        let step = next_step(rng, value, name, item, container);
        sentences.push(step.sentence);
        solution.push(format!("{}=<<{}={}>>{}", step.expression, step.expression, step.value, step.value));
        value = step.value;
    }
    let question = format!("{} How many {item} does {name} have now?", sentences.join(" "));
    let full_solution = format!("{}\n#### {value}", solution.join("\n"));
    let difficulty = difficulty_of(steps);
    json!({
        "gsm8k_id": format!("synthetic_{}_{index:03}", ["2step", "3step", "4step", "5plusstep"][level]),
        "question": question,
        "answer": value,
        "full_solution": full_solution,
        "source": "synthetic",
        "reasoning_steps": steps,
        "difficulty": difficulty,
        "level": level,
    })
}

/// `per_level` problems for each of the four levels, in level order, from one seeded stream.
pub fn synthetic_problems(per_level: usize, seed: u64) -> Result<Vec<Problem>> {
    let mut rng = PyRandom::new(seed);
    let mut records = Vec::with_capacity(4 * per_level);
    for level in 0..4 {
        for index in 0..per_level {
            let steps = match level {
                3 => 5 + below(&mut rng, 2),
                _ => level + 2,
            };
            records.push(make_problem(&mut rng, level, index, steps));
        }
    }
    let origin = std::path::Path::new("<synthetic problems>");
    records.into_iter().enumerate().map(|(i, record)| Problem::from_value(record, i, origin)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluate `a+b`, `a-b`, `a*b`, `a/b`, `a+b*c` exactly (what the generator writes).
    fn evaluate(expression: &str) -> i64 {
        if let Some((a, rest)) = expression.split_once('+') {
            if let Some((b, c)) = rest.split_once('*') {
                return a.parse::<i64>().unwrap() + b.parse::<i64>().unwrap() * c.parse::<i64>().unwrap();
            }
            return a.parse::<i64>().unwrap() + rest.parse::<i64>().unwrap();
        }
        for (op, f) in [('-', (|a, b| a - b) as fn(i64, i64) -> i64), ('*', |a, b| a * b), ('/', |a, b| {
            assert_eq!(a % b, 0, "inexact division");
            a / b
        })] {
            if let Some((a, b)) = expression.split_once(op) {
                return f(a.parse().unwrap(), b.parse().unwrap());
            }
        }
        panic!("unknown expression {expression}")
    }

    #[test]
    fn solutions_are_consistent_and_levels_balanced() {
        let problems = synthetic_problems(20, 7).unwrap();
        assert_eq!(problems.len(), 80);
        for (level, difficulty) in DIFFICULTIES.iter().enumerate() {
            assert_eq!(problems.iter().filter(|p| p.difficulty == *difficulty).count(), 20, "{difficulty}");
            let _ = level;
        }
        for p in &problems {
            let solution = p.record["full_solution"].as_str().unwrap();
            // The seed's step count: `<<…>>` annotations.
            let annotations: Vec<&str> =
                solution.split("<<").skip(1).map(|s| s.split(">>").next().unwrap()).collect();
            assert_eq!(difficulty_of(annotations.len()), p.difficulty, "{}", p.id);
            let mut last = 0;
            for a in &annotations {
                let (expression, value) = a.split_once('=').unwrap();
                assert_eq!(evaluate(expression), value.parse::<i64>().unwrap(), "{}: {a}", p.id);
                last = value.parse().unwrap();
            }
            assert_eq!(p.answer.as_i64(), Some(last), "{}", p.id);
            assert!(solution.ends_with(&format!("#### {last}")));
            assert!(last > 0);
            assert!(p.id.starts_with("synthetic_"));
        }
    }

    #[test]
    fn same_seed_same_problems() {
        let a = synthetic_problems(3, 1).unwrap();
        let b = synthetic_problems(3, 1).unwrap();
        let c = synthetic_problems(3, 2).unwrap();
        let questions = |v: &[Problem]| v.iter().map(|p| p.question.clone()).collect::<Vec<_>>();
        assert_eq!(questions(&a), questions(&b));
        assert_ne!(questions(&a), questions(&c));
    }
}
