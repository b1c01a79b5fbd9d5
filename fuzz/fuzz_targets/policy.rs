//! Exec policies, structure-aware: generated allow and deny rules are rendered into a policy file,
//! parsed by the shipped parser, and every generated exec is decided by the shipped matcher and
//! by the reference below, which must agree. Words come mostly from a small vocabulary, so rules
//! and commands collide often (prefixes, near-misses like `push`/`pushx`, paths and basenames).
//!
//! The reference is the documented semantics (runtime/src/supervisor/policy.rs), written out
//! independently: a rule's words, its first one cut to a basename, must be a whole-word prefix of
//! the exec (the executed path's basename, then argv[1..]); the first matching allow rule wins over
//! any deny rule, else the first matching deny rule denies, else the exec is allowed by default.
//!
//! Any raw text also parses to a policy or an error located inside the text.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use wedge_runtime::supervisor::policy::{Policy, Ruling};

#[derive(Arbitrary, Debug)]
struct Structured {
    rules: Vec<(bool, Vec<Word>, Spacing)>,
    /// The executed path, then argv: argv[0] (none: an empty argv) and the arguments.
    execs: Vec<(Word, Option<Word>, Vec<Word>)>,
}

/// A word: from the vocabulary, or anything.
#[derive(Arbitrary, Debug)]
enum Word {
    Known(u8),
    Any(String),
}

/// How a rule's words are separated when rendered (the parser folds whitespace).
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Spacing {
    Space,
    Tabs,
    Padded,
}

const VOCABULARY: &[&str] = &[
    "git",
    "push",
    "pushx",
    "origin",
    "main",
    "/usr/bin/git",
    "./git",
    "gitk",
    "rm",
    "-rf",
    "-r",
    "/bin/rm",
    "x",
    "dir/",
    "/",
    "//",
    "a b",
    "",
    " ",
    "é",
    "git/push",
];

impl Word {
    fn text(&self) -> &str {
        match self {
            Word::Known(i) => VOCABULARY[*i as usize % VOCABULARY.len()],
            Word::Any(s) => s,
        }
    }
}

// The first byte picks the check: even, the rest is a policy file's text (so a seed is a real
// file after one byte); odd, the rest generate rules and execs.
fuzz_target!(|data: &[u8]| match data.split_first() {
    Some((kind, text)) if kind % 2 == 0 => {
        if let Ok(text) = std::str::from_utf8(text) {
            check_text(text);
        }
    }
    Some((_, bytes)) => {
        if let Ok(input) = Structured::arbitrary_take_rest(Unstructured::new(bytes)) {
            check_structured(&input);
        }
    }
    None => {}
});

fn check_text(text: &str) {
    match Policy::parse("fuzz.toml", text) {
        Ok(policy) => {
            let argv: Vec<&str> = text.split_whitespace().take(8).collect();
            let _ = policy.decide(argv.first().copied().unwrap_or(""), &argv);
        }
        Err(err) => {
            assert!(err.line >= 1 && err.column >= 1, "unlocated error: {err}");
            assert!(
                err.line <= text.lines().count() + 1,
                "error past the end: {err}"
            );
        }
    }
}

fn check_structured(input: &Structured) {
    let rules: Vec<(bool, String)> = input
        .rules
        .iter()
        .take(16)
        .map(|(allow, words, spacing)| (*allow, render_rule(words, *spacing)))
        .collect();
    let file = render_file(&rules);
    let policy = match Policy::parse("fuzz.toml", &file) {
        Ok(policy) => policy,
        Err(err) => {
            // The only thing the rendering cannot rule out: a rule with no words.
            assert!(
                rules
                    .iter()
                    .any(|(_, r)| r.split_whitespace().next().is_none()),
                "a well-formed file was rejected: {err}\n{file}"
            );
            assert!(err.message.starts_with("empty "), "{err}\n{file}");
            return;
        }
    };
    for (path, argv0, args) in input.execs.iter().take(16) {
        let path = path.text();
        let mut argv: Vec<&str> = Vec::new();
        if let Some(argv0) = argv0 {
            argv.push(argv0.text());
            argv.extend(args.iter().take(8).map(Word::text));
        }
        let ruling = policy.decide(path, &argv);
        let expected = reference(&rules, path, &argv);
        assert_eq!(ruling, expected, "exec {path:?} {argv:?} under\n{file}");
    }
}

fn render_rule(words: &[Word], spacing: Spacing) -> String {
    let sep = match spacing {
        Spacing::Space => " ",
        Spacing::Tabs => "\t \t",
        Spacing::Padded => "  ",
    };
    let body = words
        .iter()
        .take(6)
        .map(Word::text)
        .collect::<Vec<_>>()
        .join(sep);
    match spacing {
        Spacing::Padded => format!("  {body} \t"),
        _ => body,
    }
}

/// The policy file: allow and deny arrays of TOML basic strings.
fn render_file(rules: &[(bool, String)]) -> String {
    let list = |allow: bool| {
        rules
            .iter()
            .filter(|(a, _)| *a == allow)
            .map(|(_, r)| toml_string(r))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("allow = [{}]\ndeny = [{}]\n", list(true), list(false))
}

fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The reference decision (see the module docs).
fn reference(rules: &[(bool, String)], path: &str, argv: &[&str]) -> Ruling {
    let program = last_component(path);
    let args = if argv.is_empty() { &[][..] } else { &argv[1..] };
    let matching = |allow: bool| {
        rules
            .iter()
            .filter(|(a, _)| *a == allow)
            .find_map(|(_, rule)| {
                let words: Vec<&str> = rule.split_whitespace().collect();
                let (first, rest) = words.split_first()?;
                (last_component(first) == program && args.starts_with(rest))
                    .then(|| words.join(" "))
            })
    };
    if let Some(rule) = matching(true) {
        Ruling::Allowed(rule)
    } else if let Some(rule) = matching(false) {
        Ruling::Denied(rule)
    } else {
        Ruling::AllowedByDefault
    }
}

/// The last non-empty `/`-separated component, or the whole text when there is none.
fn last_component(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        _ if trimmed.is_empty() => path,
        Some(slash) => &trimmed[slash + 1..],
        None => trimmed,
    }
}
