//! Work split across the tasks of a batch job (a Slurm array): task `index` of `count` takes the
//! items whose content key hashes to it, `xxh3_64(key) % count`. The key is what names the item's
//! result (a text id, a problem id), never its position in a list, so adding, removing or
//! reordering items moves no other item, every task agrees on the split without talking to the
//! others, and a rerun with another `count` finds the work already done in the shared cache.
//!
//! `--shard i/n` names the task on the command line (0-based); without it,
//! [`Shard::from_env`] reads Slurm's array variables.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Slurm's index of this array task.
pub(crate) const TASK_ID_VAR: &str = "SLURM_ARRAY_TASK_ID";
/// Slurm's number of tasks in the array.
pub(crate) const TASK_COUNT_VAR: &str = "SLURM_ARRAY_TASK_COUNT";
/// Slurm's lowest task index (an array `--array=1-4` starts at 1).
pub(crate) const TASK_MIN_VAR: &str = "SLURM_ARRAY_TASK_MIN";

/// Task `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Task `index` of `count`; `count` 0 or `index >= count` is an error.
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 {
            return Err(Error::invalid("--shard: the shard count must be at least 1 (e.g. --shard 0/4)"));
        }
        if index >= count {
            return Err(Error::invalid(format!(
                "--shard {index}/{count}: the index is 0-based, so it must be below the count (0..={})",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }

    /// The shard of this Slurm array task, from `SLURM_ARRAY_TASK_ID` and
    /// `SLURM_ARRAY_TASK_COUNT` (the ID less `SLURM_ARRAY_TASK_MIN`, so `--array=1-4` gives
    /// shards 0..4). `Ok(None)` outside an array job.
    pub fn from_env() -> Result<Option<Shard>> {
        Shard::from_vars(crate::model::settings::lookups::var)
    }

    /// [`Shard::from_env`] over any variable lookup (testable without touching the process's
    /// environment).
    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
        let Some(id) = var(TASK_ID_VAR) else { return Ok(None) };
        let number = |name: &str, value: &str| -> Result<usize> {
            value.trim().parse().map_err(|_| Error::invalid(format!("environment variable {name}={value:?} is not a non-negative integer")))
        };
        let id = number(TASK_ID_VAR, &id)?;
        let count = match var(TASK_COUNT_VAR) {
            Some(count) => number(TASK_COUNT_VAR, &count)?,
            None => return Err(Error::invalid(format!("{TASK_ID_VAR} is set but {TASK_COUNT_VAR} is not: cannot tell how many shards there are"))),
        };
        let min = match var(TASK_MIN_VAR) {
            Some(min) => number(TASK_MIN_VAR, &min)?,
            None => 0,
        };
        let index = id.checked_sub(min).ok_or_else(|| {
            Error::invalid(format!("{TASK_ID_VAR}={id} is below {TASK_MIN_VAR}={min}"))
        })?;
        // An array with a step or gaps (`--array=0-9:2`) has IDs that do not map onto 0..count.
        if index >= count {
            return Err(Error::invalid(format!(
                "{TASK_ID_VAR}={id} less {TASK_MIN_VAR}={min} is not below {TASK_COUNT_VAR}={count}: \
                 submit a contiguous array (--array=0-{}) or pass --shard i/n",
                count.saturating_sub(1)
            )));
        }
        Shard::new(index, count).map(Some)
    }

    /// `--shard` if given, else the Slurm array's task, else `None` (the whole list).
    pub fn resolve(given: Option<Shard>) -> Result<Option<Shard>> {
        match given {
            Some(shard) => Ok(Some(shard)),
            None => Shard::from_env(),
        }
    }

    /// The shard (0..count) an item with this content key belongs to.
    pub(crate) fn of_key(key: &str, count: usize) -> usize {
        (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % count.max(1) as u64) as usize
    }

    /// Whether the item with this content key belongs to this shard.
    pub fn owns(&self, key: &str) -> bool {
        Shard::of_key(key, self.count) == self.index
    }

    /// The items of `items` this shard owns, in their order.
    pub fn select<T>(&self, items: impl IntoIterator<Item = T>, key: impl Fn(&T) -> String) -> Vec<T> {
        items.into_iter().filter(|item| self.owns(&key(item))).collect()
    }
}

/// `i/n`, as `--shard` shows it.
impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Parses `--shard i/n`: `i` 0-based, below `n`.
impl FromStr for Shard {
    type Err = Error;

    fn from_str(text: &str) -> Result<Shard> {
        let junk = || Error::invalid(format!("--shard {text:?}: expected INDEX/COUNT with a 0-based index, e.g. --shard 0/4"));
        let (index, count) = text.split_once('/').ok_or_else(junk)?;
        let index: usize = index.trim().parse().map_err(|_| junk())?;
        let count: usize = count.trim().parse().map_err(|_| junk())?;
        Shard::new(index, count)
    }
}

/// What one task's run over its share did, for the line it prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardRun {
    pub shard: Option<Shard>,
    /// Items in the whole list.
    pub total: usize,
    /// Items this shard owns.
    pub taken: usize,
    /// Items whose result this run computed.
    pub computed: usize,
    /// Items whose result was already there.
    pub cached: usize,
    /// Items that could not be done, as (item, why); the merge step reports them again.
    pub failed: Vec<(String, String)>,
}

impl ShardRun {
    /// `shard 1/4: 3 of 10 rollouts (2 computed, 1 cached)` (no `shard` part when unsharded),
    /// then one line per failed item.
    pub fn lines(&self, what: &str) -> Vec<String> {
        let counts = format!("{} computed, {} cached{}", self.computed, self.cached, match self.failed.len() {
            0 => String::new(),
            n => format!(", {n} failed"),
        });
        let head = match self.shard {
            Some(shard) => format!("shard {shard}: {} of {} {what} ({counts})", self.taken, self.total),
            None => format!("{} {what} ({counts})", self.total),
        };
        std::iter::once(head).chain(self.failed.iter().map(|(item, why)| format!("  {item}: {why}"))).collect()
    }
}

/// At most `k` of `items` spread evenly through them: item `floor(i · n / k)` for `i < k`. How
/// quick runs (test mode, a notebook's default corpus) take a deterministic subset that still spans
/// a sorted list (every model folder, every difficulty level).
pub fn evenly_spaced<T: Clone>(items: &[T], k: usize) -> Vec<T> {
    let n = items.len();
    if n <= k {
        return items.to_vec();
    }
    (0..k).map(|i| items[i * n / k].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn keys() -> Vec<String> {
        (0..200).map(|i| format!("{:016x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))).collect()
    }

    #[test]
    fn parses_index_over_count_and_names_the_flag_in_errors() {
        assert_eq!("0/4".parse::<Shard>().unwrap(), Shard { index: 0, count: 4 });
        assert_eq!(" 3 / 4 ".parse::<Shard>().unwrap(), Shard { index: 3, count: 4 });
        assert_eq!("0/1".parse::<Shard>().unwrap().to_string(), "0/1");
        for bad in ["4/4", "5/4", "0/0", "", "1", "a/4", "1/b", "-1/4", "1/4/2", "1.0/4"] {
            let error = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(error.contains("--shard"), "{bad:?}: {error}");
        }
        assert!("4/4".parse::<Shard>().unwrap_err().to_string().contains("0-based"));
    }

    #[test]
    fn every_item_is_in_exactly_one_shard() {
        let keys = keys();
        for count in [1, 2, 3, 4, 7] {
            let mut seen: HashMap<&String, usize> = HashMap::new();
            for index in 0..count {
                for key in Shard::new(index, count).unwrap().select(&keys, |k| (*k).clone()) {
                    *seen.entry(key).or_default() += 1;
                }
            }
            assert_eq!(seen.len(), keys.len(), "count {count}");
            assert!(seen.values().all(|&times| times == 1), "count {count}");
        }
        // Not all in one shard: the hash spreads them.
        let sizes: Vec<usize> = (0..4).map(|i| Shard::new(i, 4).unwrap().select(&keys, |k| (*k).clone()).len()).collect();
        assert!(sizes.iter().all(|&s| s > 25), "{sizes:?}");
    }

    #[test]
    fn membership_depends_on_the_key_not_the_position() {
        let keys = keys();
        let mut reordered = keys.clone();
        reordered.reverse();
        reordered.retain(|k| !k.ends_with('5'));
        for index in 0..4 {
            let shard = Shard::new(index, 4).unwrap();
            let mut before = shard.select(&keys, |k| (*k).clone());
            before.retain(|k| !k.ends_with('5'));
            let mut after = shard.select(&reordered, |k| (*k).clone());
            after.reverse();
            assert_eq!(before, after);
        }
        // Fixed forever: a cluster's tasks built at different commits must agree.
        assert_eq!(Shard::of_key("65c133c9cf042207", 4), Shard::of_key("65c133c9cf042207", 4));
        assert_eq!(Shard::of_key("", 1), 0);
    }

    #[test]
    fn slurm_array_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(Shard::from_vars(vars(&[])).unwrap(), None);
        assert_eq!(
            Shard::from_vars(vars(&[(TASK_ID_VAR, "2"), (TASK_COUNT_VAR, "4")])).unwrap(),
            Some(Shard { index: 2, count: 4 })
        );
        assert_eq!(
            Shard::from_vars(vars(&[(TASK_ID_VAR, "4"), (TASK_COUNT_VAR, "4"), (TASK_MIN_VAR, "1")])).unwrap(),
            Some(Shard { index: 3, count: 4 })
        );
        for (bad, names) in [
            (vars(&[(TASK_ID_VAR, "1")]), TASK_COUNT_VAR),
            (vars(&[(TASK_ID_VAR, "x"), (TASK_COUNT_VAR, "4")]), TASK_ID_VAR),
            (vars(&[(TASK_ID_VAR, "4"), (TASK_COUNT_VAR, "4")]), TASK_COUNT_VAR),
            (vars(&[(TASK_ID_VAR, "0"), (TASK_COUNT_VAR, "4"), (TASK_MIN_VAR, "1")]), TASK_MIN_VAR),
        ] {
            let error = Shard::from_vars(bad).unwrap_err().to_string();
            assert!(error.contains(names), "{error}");
        }
    }

    #[test]
    fn evenly_spaced_spans_the_list() {
        // The CODI test sample's order: 3, 3, 2 and 2 problems of 2 to 5 steps.
        let levels = [2, 2, 2, 3, 3, 3, 4, 4, 5, 5];
        assert_eq!(super::evenly_spaced(&levels, 3), vec![2, 3, 4]);
        assert_eq!(super::evenly_spaced(&(0..40).collect::<Vec<_>>(), 12).len(), 12);
        assert_eq!(super::evenly_spaced(&(0..40).collect::<Vec<_>>(), 12)[..4], [0, 3, 6, 10]);
        assert_eq!(super::evenly_spaced(&(0..40).collect::<Vec<_>>(), 12)[11], 36);
        assert_eq!(super::evenly_spaced(&[1, 2], 3), vec![1, 2]);
        assert!(super::evenly_spaced::<u8>(&[], 3).is_empty());
    }
}
