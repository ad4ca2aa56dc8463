//! The two CODI answer parsers: the official CODI one (`test.py`: strip commas,
//! last number, float equality) and CoT_Exploration's (`extract_answer_number`: four regexes in
//! order, no comma stripping, so "1,000" parses as 1; match within 0.01).

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Which parser turns generated text into a number and decides correctness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerParser {
    /// `zhenyi4/codi/test.py`: remove commas, last match of `-?\d+\.?\d*`, `pred == gold`.
    Official,
    /// CoT_Exploration `extract_answer_number` + `answers_match` (|p - g| < 0.01).
    Cotx,
}
crate::model::named_values!(AnswerParser, "answer parser", { Official => "official", Cotx => "cotx" });

/// A parsed answer: integral values stay ints (upstream returns `int` when integral), so the JSON
/// output says `18`, not `18.0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    Int(i64),
    Float(f64),
}

impl Answer {
    pub fn as_f64(self) -> f64 {
        match self {
            Answer::Int(i) => i as f64,
            Answer::Float(f) => f,
        }
    }

    fn from_f64(value: f64) -> Self {
        if value.fract() == 0.0 && value.abs() < 9.0e15 {
            Answer::Int(value as i64)
        } else {
            Answer::Float(value)
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        match self {
            Answer::Int(i) => serde_json::Value::from(i),
            Answer::Float(f) => serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
        }
    }
}

impl AnswerParser {
    /// The number the text answers, or `None` when it holds no number (upstream: `None` for
    /// CoT_Exploration, `inf` for the official parser, which never equals a gold answer).
    pub fn parse(self, text: &str) -> Option<Answer> {
        match self {
            AnswerParser::Official => parse_official(text),
            AnswerParser::Cotx => parse_cotx(text),
        }
    }

    /// Whether `predicted` counts as the gold answer under this parser's rule.
    pub fn matches(self, predicted: Option<Answer>, gold: f64) -> bool {
        let Some(p) = predicted else { return false };
        match self {
            AnswerParser::Official => p.as_f64() == gold,
            AnswerParser::Cotx => (p.as_f64() - gold).abs() < 0.01,
        }
    }
}

fn parse_official(text: &str) -> Option<Answer> {
    static NUMBER: OnceLock<Regex> = OnceLock::new();
    let number = NUMBER.get_or_init(|| Regex::new(r"-?\d+\.?\d*").expect("valid regex"));
    let without_commas = text.replace(',', "");
    let last = number.find_iter(&without_commas).last()?;
    // Python's float() accepts "18." as 18.0, and so does Rust's parser.
    last.as_str().parse::<f64>().ok().map(Answer::from_f64)
}

fn parse_cotx(text: &str) -> Option<Answer> {
    static PATTERNS: OnceLock<Vec<Regex>> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        [
            r"(?i)####\s*(-?\d+(?:\.\d+)?)",
            r"(?i)(?:answer|total|result)(?:\s+is)?\s*[:=]?\s*\$?\s*(-?\d+(?:\.\d+)?)",
            r"(?i)\$?\s*(-?\d+(?:\.\d+)?)\s*$",
        ]
        .iter()
        .map(|p| Regex::new(p).expect("valid regex"))
        .collect()
    });
    static ANY_NUMBER: OnceLock<Regex> = OnceLock::new();
    let any_number = ANY_NUMBER.get_or_init(|| Regex::new(r"-?\d+(?:\.\d+)?").expect("valid regex"));

    let captured = patterns
        .iter()
        .find_map(|re| re.captures(text).map(|c| c[1].to_owned()))
        .or_else(|| any_number.find_iter(text).last().map(|m| m.as_str().to_owned()))?;
    captured.parse::<f64>().ok().map(Answer::from_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_takes_last_number_without_commas() {
        let p = AnswerParser::Official;
        assert_eq!(p.parse("The answer is: 1,000"), Some(Answer::Int(1000)));
        assert_eq!(p.parse("3 apples and 4.5 pears"), Some(Answer::Float(4.5)));
        assert_eq!(p.parse("It is 18."), Some(Answer::Int(18)));
        assert_eq!(p.parse("no digits"), None);
        assert!(p.matches(Some(Answer::Int(18)), 18.0));
        assert!(!p.matches(None, 18.0));
    }

    #[test]
    fn cotx_follows_pattern_order_and_keeps_commas() {
        let p = AnswerParser::Cotx;
        assert_eq!(p.parse("The answer is: 18"), Some(Answer::Int(18)));
        // No comma stripping: "1,000" → the answer pattern captures 1.
        assert_eq!(p.parse("The answer is: 1,000"), Some(Answer::Int(1)));
        assert_eq!(p.parse("x #### 42 then answer is 7"), Some(Answer::Int(42)));
        assert_eq!(p.parse("TOTAL = $ 12.50 more"), Some(Answer::Float(12.5)));
        assert_eq!(p.parse("we get 5 and 6 apples"), Some(Answer::Int(6)));
        assert_eq!(p.parse("costs $7"), Some(Answer::Int(7)));
        assert_eq!(p.parse("nothing"), None);
        assert!(p.matches(Some(Answer::Float(17.995)), 18.0));
    }
}
