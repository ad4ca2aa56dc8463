//! Options whose values are spelled as words (`--score-type median`, `"mode": "chunks"`): one
//! table per enum gives every value its name, and [`named_values!`](crate::named_values) derives
//! `Display`, `FromStr` (an unknown word is an error listing the valid ones) and [`NamedValues`]
//! from it. The command line builds its parsers and `--help` lists from the same table, so the
//! library needs no argument parser.

use crate::{Error, Result};

/// A fieldless enum whose values each have one name.
pub trait NamedValues: Copy + PartialEq + Sized + 'static {
    /// What a value is, for error messages (`"score type"`).
    const WHAT: &'static str;
    /// Every value with its name, in declaration order.
    const NAMED: &'static [(Self, &'static str)];

    /// This value's name.
    fn name(self) -> &'static str {
        Self::NAMED.iter().find(|(value, _)| *value == self).map(|(_, name)| *name).expect("every value is named")
    }

    /// Every name, in declaration order.
    fn names() -> Vec<&'static str> {
        Self::NAMED.iter().map(|(_, name)| *name).collect()
    }

    /// The value named `name` (exactly), or an error listing the names.
    fn from_name(name: &str) -> Result<Self> {
        Self::NAMED.iter().find(|(_, n)| *n == name).map(|(value, _)| *value).ok_or_else(|| {
            Error::invalid(format!("{} `{name}`: expected {}", Self::WHAT, alternatives(&Self::names())))
        })
    }
}

/// `` `a`, `b` or `c` ``.
fn alternatives(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// Implements [`NamedValues`](crate::names::NamedValues), `Display` (the name) and `FromStr`
/// (the name back, errors listing every name) for a fieldless enum:
///
/// ```
/// #[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// pub enum ScoreType { Mean, Median }
/// thoughtscope_model::named_values!(ScoreType, "score type", { Mean => "mean", Median => "median" });
///
/// assert_eq!("median".parse::<ScoreType>().unwrap(), ScoreType::Median);
/// assert_eq!(ScoreType::Mean.to_string(), "mean");
/// let err = "mode".parse::<ScoreType>().unwrap_err().to_string();
/// assert_eq!(err, "score type `mode`: expected `mean` or `median`");
/// ```
#[macro_export]
macro_rules! named_values {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $crate::names::NamedValues for $ty {
            const WHAT: &'static str = $what;
            const NAMED: &'static [(Self, &'static str)] = &[$(($ty::$variant, $name)),+];
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::names::NamedValues::name(*self))
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::Error;
            fn from_str(s: &str) -> ::std::result::Result<Self, $crate::Error> {
                <$ty as $crate::names::NamedValues>::from_name(s)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Three {
        A,
        B,
        C,
    }
    crate::named_values!(Three, "letter", { A => "a", B => "b-b", C => "c" });

    #[test]
    fn names_round_trip_and_errors_list_them() {
        for value in [Three::A, Three::B, Three::C] {
            assert_eq!(value.to_string().parse::<Three>().unwrap(), value);
        }
        assert_eq!(Three::names(), ["a", "b-b", "c"]);
        let err = "B-B".parse::<Three>().unwrap_err().to_string();
        assert_eq!(err, "letter `B-B`: expected `a`, `b-b` or `c`");
    }
}
