//! The CODI problem set and its stratified sample (CoT_Exploration `create_test_dataset.py`, `create_full_dataset.py`).
//!
//! Upstream (`create_full_dataset.py`) groups the 1,000-problem file by difficulty in file order and
//! draws `random.sample(bucket, k)` for the buckets 2-step, 3-step, 4-step, 5+step from one
//! `random.seed(42)` stream. `PyRandom` reproduces CPython's generator bit for bit (MT19937 seeded
//! by `init_by_array` of the seed's 32-bit words, `getrandbits`, `_randbelow`, and `sample`'s
//! choice between the pool and the set algorithm), so the ids equal the upstream sample exactly.

use std::collections::HashSet;
use std::path::Path;

use rand_mt::Mt;
use serde_json::Value;

use crate::{Error, Result};

/// Difficulty buckets in the order upstream samples them.
pub(crate) const DIFFICULTIES: [&str; 4] = ["2-step", "3-step", "4-step", "5+step"];

/// Problems per level of the upstream 100-problem set, and of its 10-problem test set.
pub const FULL_PER_LEVEL: [usize; 4] = [25, 25, 25, 25];
pub const TEST_PER_LEVEL: [usize; 4] = [3, 3, 2, 2];

/// One GSM8K-style problem. `record` keeps the whole input object so a written sample carries
/// every upstream field; the typed fields are what the pipeline reads.
#[derive(Debug, Clone)]
pub struct Problem {
    pub id: String,
    pub question: String,
    /// Gold answer exactly as the file has it (an int in every upstream file).
    pub answer: serde_json::Number,
    pub difficulty: String,
    pub record: Value,
}

impl Problem {
    pub fn answer_f64(&self) -> f64 {
        self.answer.as_f64().unwrap_or(f64::NAN)
    }

    pub(crate) fn from_value(record: Value, index: usize, path: &Path) -> Result<Self> {
        let field = |name: &str| -> Result<&Value> {
            record.get(name).ok_or_else(|| {
                Error::format(path, format!("problem {index}: missing field `{name}`"))
            })
        };
        let text = |name: &str| -> Result<String> {
            field(name)?.as_str().map(str::to_owned).ok_or_else(|| {
                Error::format(path, format!("problem {index}: field `{name}` is not a string"))
            })
        };
        // The sampled files use `gsm8k_id`; the written ablation results use `problem_id`.
        let id = match record.get("gsm8k_id") {
            Some(_) => text("gsm8k_id")?,
            None => text("problem_id").map_err(|_| {
                Error::format(path, format!("problem {index}: missing field `gsm8k_id`"))
            })?,
        };
        let question = text("question")?;
        let difficulty = text("difficulty")?;
        let answer = match field("answer")? {
            Value::Number(n) => n.clone(),
            other => {
                return Err(Error::format(
                    path,
                    format!("problem {index} ({id}): field `answer` is {other}, expected a number"),
                ))
            }
        };
        Ok(Problem { id, question, answer, difficulty, record })
    }
}

/// Read a JSON list of problems (the 1,000-problem file or a written sample).
pub fn load_problems(path: impl AsRef<Path>) -> Result<Vec<Problem>> {
    let path = path.as_ref();
    let text = crate::io::read_text_bounded(path, crate::io::INPUT_LIMIT)?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(Error::format(path, "expected a JSON list of problems"));
    };
    items.into_iter().enumerate().map(|(i, v)| Problem::from_value(v, i, path)).collect()
}

/// Write problems as a JSON list of their original records, in the given order.
pub fn write_problems(problems: &[Problem], path: impl AsRef<Path>) -> Result<()> {
    let records: Vec<&Value> = problems.iter().map(|p| &p.record).collect();
    crate::io::write_json(path.as_ref(), &records)
}

/// Stratified sample as upstream: one seeded stream, buckets in `DIFFICULTIES` order, each
/// bucket in file order, `per_level[b]` problems drawn from bucket `b`.
pub fn stratified_sample(problems: &[Problem], per_level: [usize; 4], seed: u64) -> Result<Vec<Problem>> {
    let mut rng = PyRandom::new(seed);
    // Each count is checked against its bucket below; capacity only for what can be drawn.
    let mut out = Vec::with_capacity(per_level.iter().map(|&k| k.min(problems.len())).sum::<usize>().min(problems.len()));
    for (level, &k) in DIFFICULTIES.iter().zip(per_level.iter()) {
        let bucket: Vec<&Problem> = problems.iter().filter(|p| p.difficulty == *level).collect();
        if k > bucket.len() {
            return Err(Error::invalid(format!(
                "cannot sample {k} problems of difficulty {level}: the input has only {}",
                bucket.len()
            )));
        }
        for index in rng.sample_indices(bucket.len(), k) {
            out.push(bucket[index].clone());
        }
    }
    Ok(out)
}

/// `codi dataset`: read `input`, sample, write `out`; returns the sample.
pub fn make_dataset(input: &Path, per_level: [usize; 4], seed: u64, out: &Path) -> Result<Vec<Problem>> {
    let problems = load_problems(input)?;
    let sample = stratified_sample(&problems, per_level, seed)?;
    write_problems(&sample, out)?;
    Ok(sample)
}

/// CPython's `random.Random` restricted to what `sample` needs.
#[derive(Debug, Clone)]
pub(crate) struct PyRandom {
    mt: Mt,
}

impl PyRandom {
    /// `random.seed(seed)` for a non-negative int: `init_by_array` of its 32-bit words, least
    /// significant first (`[0]` for zero).
    pub fn new(seed: u64) -> Self {
        let low = seed as u32;
        let high = (seed >> 32) as u32;
        let key: Vec<u32> = if high == 0 { vec![low] } else { vec![low, high] };
        PyRandom { mt: Mt::new_with_key(key) }
    }

    /// `getrandbits(k)` for `k <= 32`: the top `k` bits of one MT output.
    pub fn getrandbits(&mut self, k: u32) -> u32 {
        debug_assert!(k <= 32);
        if k == 0 {
            return 0;
        }
        self.mt.next_u32() >> (32 - k)
    }

    /// `_randbelow_with_getrandbits(n)`: rejection sampling on `bit_length(n)` bits.
    pub fn randbelow(&mut self, n: usize) -> usize {
        assert!(n > 0 && n <= u32::MAX as usize, "randbelow({n}) out of the supported range");
        let bits = usize::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(bits) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// Indices of `random.sample(range(n), k)`, reproducing the choice between the pool algorithm
    /// (small populations) and the rejection-set algorithm.
    pub fn sample_indices(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "sample larger than population");
        let mut setsize = 21usize;
        if k > 5 {
            // `4 ** ceil(log(3k, 4))`, with CPython's float log(x)/log(base).
            let exponent = ((k * 3) as f64).ln() / 4f64.ln();
            setsize += 4usize.pow(exponent.ceil() as u32);
        }
        let mut result = Vec::with_capacity(k);
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow(n - i);
                result.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut selected = HashSet::with_capacity(k);
            for _ in 0..k {
                let mut j = self.randbelow(n);
                while selected.contains(&j) {
                    j = self.randbelow(n);
                }
                selected.insert(j);
                result.push(j);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values printed by CPython 3.11.
    #[test]
    fn getrandbits_matches_cpython() {
        let mut rng = PyRandom::new(42);
        let got: Vec<u32> = (0..3).map(|_| rng.getrandbits(32)).collect();
        assert_eq!(got, vec![2746317213, 478163327, 107420369]);
    }

    #[test]
    fn sample_matches_cpython_both_algorithms() {
        let mut rng = PyRandom::new(7);
        assert_eq!(rng.sample_indices(1000, 5), vec![331, 970, 154, 404, 666]);
        assert_eq!(rng.sample_indices(10, 10), vec![0, 1, 8, 2, 4, 9, 7, 5, 6, 3]);
        let expected = vec![
            214, 35, 123, 46, 282, 217, 30, 289, 63, 114, 298, 31, 295, 299, 203, 25, 113, 23, 285,
            68, 148, 73, 276, 60, 292, 157, 286, 92, 52, 297,
        ];
        assert_eq!(rng.sample_indices(300, 30), expected);
    }

    #[test]
    fn two_word_seed_matches_cpython() {
        let mut rng = PyRandom::new((1u64 << 40) + 5);
        assert_eq!(rng.sample_indices(100, 4), vec![64, 66, 34, 84]);
    }
}
