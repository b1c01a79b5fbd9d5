//! Exit statuses and signals as scenarios name them, validated when a file loads (the trial's
//! judge matches them against what a process really did).
//!
//! An `exit` value is read by [`ExitVisitor`], which checks it as it reads it: the TOML parser
//! then reports a bad value at the value itself, with a message that says what is accepted
//! (rather than serde's "data did not match any variant of untagged enum").

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

pub use super::error::ACCEPTED;
use super::error::ExitError;

/// An exit status as written in a scenario: a code, a word, or a list of them. Deserializing
/// checks the value (a code in 0..=255, a known word or signal name, a flat non-empty list), so
/// a bad one is refused where it is written, saying what is accepted.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ExitSpec {
    /// Exactly this exit code.
    Code(i32),
    /// `"success"` (0), `"failure"` (did not succeed: a code ≠ 0 or killed by a signal),
    /// `"nonzero"` (exited with a code ≠ 0), `"signal"` (killed by any signal), a signal name
    /// such as `"KILL"`/`"SIGKILL"` (killed by it), or `"any"`.
    Word(String),
    /// Any one of these (`exit = [0, 130]`); never empty, never nested.
    OneOf(Vec<ExitSpec>),
}

impl<'de> Deserialize<'de> for ExitSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ExitSpec, D::Error> {
        deserializer.deserialize_any(ExitVisitor { in_list: false })
    }
}

/// The exit words besides signal names.
const WORDS: &[&str] = &["success", "failure", "nonzero", "signal", "any"];

/// Parses a signal name (`TERM`, `SIGTERM`) or number.
pub fn parse_signal(text: &str) -> Option<nix::sys::signal::Signal> {
    use std::str::FromStr;
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok();
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name).ok()
}

fn check_code(code: i64) -> Result<i32, ExitError> {
    if (0..=255).contains(&code) {
        Ok(code as i32)
    } else {
        Err(ExitError::CodeRange(code))
    }
}

fn check_word(word: &str) -> Result<(), ExitError> {
    if WORDS.contains(&word) || parse_signal(word).is_some() {
        Ok(())
    } else {
        Err(ExitError::UnknownWord(word.to_string()))
    }
}

/// Checks an exit status as written; the message says what is wrong and what is accepted.
pub(crate) fn validate_exit(spec: &ExitSpec) -> Result<(), ExitError> {
    match spec {
        ExitSpec::Code(c) => check_code(i64::from(*c)).map(drop),
        ExitSpec::Word(w) => check_word(w),
        ExitSpec::OneOf(list) if list.is_empty() => Err(ExitError::EmptyList),
        ExitSpec::OneOf(list) => list.iter().try_for_each(|e| match e {
            ExitSpec::OneOf(_) => Err(ExitError::NestedList),
            single => validate_exit(single),
        }),
    }
}

/// `exit 0`, `exit signal`, `exit 0 or 130`: an exit expectation in a verdict's reason.
pub fn describe_exit_spec(spec: &ExitSpec) -> String {
    format!("exit {}", describe_value(spec))
}

fn describe_value(spec: &ExitSpec) -> String {
    match spec {
        ExitSpec::Code(c) => c.to_string(),
        ExitSpec::Word(w) => w.clone(),
        ExitSpec::OneOf(list) => list
            .iter()
            .map(describe_value)
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

/// Reads one `exit` value, checking it as it goes; `in_list` for the elements of a list (which
/// cannot be lists themselves).
pub(crate) struct ExitVisitor {
    pub in_list: bool,
}

impl<'de> Visitor<'de> for ExitVisitor {
    type Value = ExitSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ACCEPTED)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ExitSpec, E> {
        check_code(v).map(ExitSpec::Code).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ExitSpec, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ExitSpec, E> {
        check_word(v).map_err(E::custom)?;
        Ok(ExitSpec::Word(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ExitSpec, A::Error> {
        if self.in_list {
            return Err(de::Error::custom(ExitError::NestedList));
        }
        let mut list = Vec::new();
        while let Some(one) = seq.next_element_seed(ExitVisitor { in_list: true })? {
            list.push(one);
        }
        if list.is_empty() {
            return Err(de::Error::custom(ExitError::EmptyList));
        }
        Ok(ExitSpec::OneOf(list))
    }
}

impl<'de> de::DeserializeSeed<'de> for ExitVisitor {
    type Value = ExitSpec;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<ExitSpec, D::Error> {
        d.deserialize_any(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Holder {
        exit: ExitSpec,
    }

    fn read(value: &str) -> Result<ExitSpec, String> {
        toml::from_str::<Holder>(&format!("exit = {value}"))
            .map(|h| h.exit)
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn every_single_form_and_lists_of_them_are_read() {
        assert_eq!(read("0"), Ok(ExitSpec::Code(0)));
        assert_eq!(read("\"failure\""), Ok(ExitSpec::Word("failure".into())));
        assert_eq!(read("\"SIGKILL\""), Ok(ExitSpec::Word("SIGKILL".into())));
        assert_eq!(
            read("[0, 130, \"TERM\"]"),
            Ok(ExitSpec::OneOf(vec![
                ExitSpec::Code(0),
                ExitSpec::Code(130),
                ExitSpec::Word("TERM".into())
            ]))
        );
        let json = serde_json::to_string(&read("[0, \"KILL\"]").unwrap()).unwrap();
        assert_eq!(json, r#"[0,"KILL"]"#);
        let back: ExitSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(describe_exit_spec(&back), "exit 0 or KILL");
    }

    #[test]
    fn bad_values_say_what_is_accepted() {
        for (value, needle) in [
            ("256", "exit code 256 is not in 0..=255"),
            ("-1", "exit code -1 is not in 0..=255"),
            ("\"sucess\"", "unknown exit status \"sucess\""),
            ("[0, \"nope\"]", "unknown exit status \"nope\""),
            ("[]", "an empty list of exits accepts nothing"),
            ("[[0]]", "cannot hold another list"),
            ("1.5", "an exit code 0..=255"),
            ("true", "an exit code 0..=255"),
            ("{ code = 1 }", "an exit code 0..=255"),
        ] {
            let e = read(value).unwrap_err();
            assert!(e.contains(needle), "{value}: {e}");
            assert!(e.contains("[0, 130]"), "{value}: {e}");
            assert!(!e.contains("untagged"), "{value}: {e}");
        }
        assert!(validate_exit(&ExitSpec::OneOf(Vec::new())).is_err());
        assert!(validate_exit(&ExitSpec::OneOf(vec![ExitSpec::OneOf(vec![])])).is_err());
        assert!(validate_exit(&ExitSpec::OneOf(vec![ExitSpec::Code(3)])).is_ok());
    }
}
