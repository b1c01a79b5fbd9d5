//! Exec policy: which command lines the supervisor lets a sandboxed program execute.
//!
//! A policy file is TOML:
//!
//! ```toml
//! allow = ["git status"]
//! deny = ["git push", "rm -rf"]
//! launchers = ["/opt/loader"]   # optional: look through these too (see below)
//! deny_tracing = true           # optional, the default: ptrace/process_vm_writev fail
//! ```
//!
//! A rule is a whitespace-separated list of tokens that must be a prefix of the executed argv.
//! Its first token is compared with the basename of the executed path (so `git`, `/usr/bin/git`
//! and a relative `./git` all match `git`); the rest are compared with argv[1..] exactly.
//! An argv that matches an allow rule is allowed; otherwise one that matches a deny rule is
//! denied; anything else is allowed. With no rules at all everything is allowed.
//!
//! The supervisor asks about the *effective* command (the resolver in `effective.rs`): a chain of programs
//! (a script, its interpreter; a loader, its program), the last of which really runs. Then
//! ([`Policy::decide_chain`]) a deny rule matches any program of the chain under any of its names
//! (its real file name, the name it was run by, argv\[0\]); an allow rule matches only the real
//! name of the last program, and overrides a deny only for that last program. So a name an
//! attacker picks (a symlink, a script, argv\[0\]) can add a denial but never an allowance.
//!
//! `launchers` adds files (a path in the sandbox, or a bare file name) that run the program they
//! are given without an exec of their own, with ld.so's argv syntax; `env` and the usual loader
//! paths are always launchers ([`DEFAULT_LAUNCHERS`]).

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// One parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    text: String,
    program: String,
    args: Vec<String>,
}

impl Rule {
    /// Parses a rule; `None` when it has no tokens.
    pub fn parse(text: &str) -> Option<Rule> {
        let mut tokens = text.split_whitespace();
        let program = basename(tokens.next()?).to_owned();
        Some(Rule {
            text: tokens_joined(text),
            program,
            args: tokens.map(str::to_owned).collect(),
        })
    }

    /// Whether this rule is a prefix of `argv`, with `program` the basename of the executed path.
    pub fn matches<S: AsRef<str>>(&self, program: &str, args: &[S]) -> bool {
        self.program == program
            && args.len() >= self.args.len()
            && self
                .args
                .iter()
                .zip(args)
                .all(|(rule, arg)| rule == arg.as_ref())
    }

    /// The rule as written, whitespace normalised.
    pub fn text(&self) -> &str {
        &self.text
    }
}

fn tokens_joined(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The last component of a path, as the kernel would see it for an executed file.
pub fn basename(path: &str) -> &str {
    path.rsplit('/')
        .find(|part| !part.is_empty())
        .unwrap_or(path)
}

/// The policy's ruling on one exec: which rule decided it, and which way. (Not a trial verdict:
/// that is the harness's word.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ruling {
    /// An allow rule matched.
    Allowed(String),
    /// A deny rule matched and no allow rule did.
    Denied(String),
    /// No rule matched.
    AllowedByDefault,
}

impl Ruling {
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Ruling::Denied(_))
    }

    /// The matched rule, for the decision log.
    pub fn rule(&self) -> &str {
        match self {
            Ruling::Allowed(rule) | Ruling::Denied(rule) => rule,
            Ruling::AllowedByDefault => "(no rule matched: allowed by default)",
        }
    }
}

/// Launchers every policy has: `env`, and where the common loaders live (the loader named by the
/// target's `/bin/sh` is found on its own). An entry with a `/` is a path in the target's root; one
/// without names a program by its real file name.
pub const DEFAULT_LAUNCHERS: [&str; 3] = [
    "env",
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-musl-x86_64.so.1",
];

/// One program of an effective command, as the policy reads it.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    /// The basename of its real file.
    pub program: &'a str,
    /// Its other names (basenames), which only deny rules look at.
    pub aliases: &'a [String],
    /// argv\[1..\].
    pub args: &'a [String],
}

/// A set of allow and deny rules, plus the launchers the supervisor looks through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    launchers: Vec<String>,
    deny_tracing: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow: Vec::new(),
            deny: Vec::new(),
            launchers: DEFAULT_LAUNCHERS.map(str::to_owned).to_vec(),
            deny_tracing: true,
        }
    }
}

impl Policy {
    /// A policy from rule texts. Rules with no tokens are an error.
    pub fn from_rules<A, D>(allow: A, deny: D) -> Result<Policy, String>
    where
        A: IntoIterator,
        A::Item: AsRef<str>,
        D: IntoIterator,
        D::Item: AsRef<str>,
    {
        let parse = |text: &str| Rule::parse(text).ok_or_else(|| format!("empty rule {text:?}"));
        Ok(Policy {
            allow: allow
                .into_iter()
                .map(|t| parse(t.as_ref()))
                .collect::<Result<_, _>>()?,
            deny: deny
                .into_iter()
                .map(|t| parse(t.as_ref()))
                .collect::<Result<_, _>>()?,
            ..Policy::default()
        })
    }

    /// Decides on an exec of `path` with `argv` taken at its word, a chain of one program
    /// (argv[0] itself is not compared: the executed path's basename stands for it).
    pub fn decide<S: AsRef<str>>(&self, path: &str, argv: &[S]) -> Ruling {
        let program = basename(path);
        let args = argv.get(1..).unwrap_or(&[]);
        if let Some(rule) = self.allow.iter().find(|r| r.matches(program, args)) {
            return Ruling::Allowed(rule.text.clone());
        }
        if let Some(rule) = self.deny.iter().find(|r| r.matches(program, args)) {
            return Ruling::Denied(rule.text.clone());
        }
        Ruling::AllowedByDefault
    }

    /// Decides on an effective command, outermost program first: denied when a deny rule matches
    /// any program under any of its names, unless that program is the last one and an allow rule
    /// matches its real name; allowed by an allow rule on the last program; else by default.
    /// An empty chain is denied.
    pub fn decide_chain(&self, chain: &[Invocation<'_>]) -> Ruling {
        let Some((last, outer)) = chain.split_last() else {
            return Ruling::Denied("(an empty command)".into());
        };
        let denial = |inv: &Invocation<'_>| {
            self.deny.iter().find(|rule| {
                std::iter::once(inv.program)
                    .chain(inv.aliases.iter().map(String::as_str))
                    .any(|name| rule.matches(name, inv.args))
            })
        };
        if let Some(rule) = outer.iter().find_map(denial) {
            return Ruling::Denied(rule.text.clone());
        }
        if let Some(rule) = self
            .allow
            .iter()
            .find(|r| r.matches(last.program, last.args))
        {
            return Ruling::Allowed(rule.text.clone());
        }
        match denial(last) {
            Some(rule) => Ruling::Denied(rule.text.clone()),
            None => Ruling::AllowedByDefault,
        }
    }

    /// The launchers the supervisor looks through (the defaults, then the file's own).
    pub fn launchers(&self) -> &[String] {
        &self.launchers
    }

    /// Whether `ptrace` and `process_vm_writev` fail inside the sandbox (the default).
    pub fn deny_tracing(&self) -> bool {
        self.deny_tracing
    }

    /// Parses a policy file's text. `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Policy, PolicyError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            allow: Vec<toml::Spanned<String>>,
            #[serde(default)]
            deny: Vec<toml::Spanned<String>>,
            #[serde(default)]
            launchers: Vec<toml::Spanned<String>>,
            deny_tracing: Option<bool>,
        }

        let at = |offset: usize, message: String| PolicyError::at(origin, text, offset, message);
        let file: File = toml::from_str(text).map_err(|err| {
            let offset = err.span().map_or(0, |span| span.start);
            at(offset, err.message().trim_end().to_owned())
        })?;
        let rules = |list: Vec<toml::Spanned<String>>, kind: &str| {
            list.into_iter()
                .map(|spanned| {
                    Rule::parse(spanned.get_ref())
                        .ok_or_else(|| at(spanned.span().start, format!("empty {kind} rule")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut policy = Policy {
            allow: rules(file.allow, "allow")?,
            deny: rules(file.deny, "deny")?,
            deny_tracing: file.deny_tracing.unwrap_or(true),
            ..Policy::default()
        };
        for spanned in file.launchers {
            let launcher = spanned.get_ref().trim();
            if launcher.is_empty() || launcher.contains(char::is_whitespace) {
                let message = "a launcher is one path or file name".to_owned();
                return Err(at(spanned.span().start, message));
            }
            if !policy.launchers.iter().any(|l| l == launcher) {
                policy.launchers.push(launcher.to_owned());
            }
        }
        Ok(policy)
    }

    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| PolicyError {
            origin: origin.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read: {err}"),
        })?;
        Policy::parse(&origin, &text)
    }

    /// Whether it has no rules (launchers and switches aside).
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// A policy file that cannot be used, with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub origin: String,
    /// 1-based; 0 when the file could not be read at all.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

impl PolicyError {
    fn at(origin: &str, text: &str, offset: usize, message: String) -> PolicyError {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        PolicyError {
            origin: origin.to_owned(),
            line,
            column,
            message,
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.origin, self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for PolicyError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        Policy::from_rules(allow, deny).unwrap()
    }

    #[test]
    fn no_rules_allow_everything() {
        let p = policy(&[], &[]);
        assert_eq!(
            p.decide("/bin/rm", &["rm", "-rf", "/"]),
            Ruling::AllowedByDefault
        );
    }

    #[test]
    fn deny_is_a_token_prefix_on_the_basename() {
        let p = policy(&[], &["git push", "rm -rf"]);
        assert_eq!(
            p.decide("/usr/bin/git", &["git", "push", "origin"]),
            Ruling::Denied("git push".into())
        );
        assert_eq!(
            p.decide("/usr/bin/git", &["whatever", "push"]),
            Ruling::Denied("git push".into())
        );
        assert!(p.decide("/usr/bin/git", &["git", "pushx"]).is_allowed());
        assert!(p.decide("/usr/bin/git", &["git"]).is_allowed());
        assert!(p.decide("/usr/bin/gitk", &["gitk", "push"]).is_allowed());
        assert_eq!(
            p.decide("./rm", &["rm", "-rf", "x"]),
            Ruling::Denied("rm -rf".into())
        );
        assert!(p.decide("/bin/rm", &["rm", "-r", "-f", "x"]).is_allowed());
    }

    #[test]
    fn allow_overrides_deny() {
        let p = policy(&["git push origin feature"], &["git push"]);
        assert_eq!(
            p.decide("/usr/bin/git", &["git", "push", "origin", "feature"]),
            Ruling::Allowed("git push origin feature".into())
        );
        assert_eq!(
            p.decide("/usr/bin/git", &["git", "push", "origin", "main"]),
            Ruling::Denied("git push".into())
        );
    }

    #[test]
    fn rule_program_is_normalised_and_whitespace_folded() {
        let p = policy(&[], &["  /usr/bin/git \t push  "]);
        assert_eq!(
            p.decide("/opt/git", &["git", "push"]),
            Ruling::Denied("/usr/bin/git push".into()),
            "the rule is logged as written, its whitespace folded"
        );
    }

    #[test]
    fn basename_handles_trailing_slashes_and_bare_names() {
        assert_eq!(basename("/usr/bin/git"), "git");
        assert_eq!(basename("git"), "git");
        assert_eq!(basename("dir/"), "dir");
        assert_eq!(basename("/"), "/");
        assert_eq!(basename(""), "");
    }

    #[test]
    fn parses_a_policy_file() {
        let p = Policy::parse(
            "p.toml",
            "allow = [\"git status\"]\ndeny = [\"git push\", \"rm -rf\"]\n",
        )
        .unwrap();
        assert_eq!(p, policy(&["git status"], &["git push", "rm -rf"]));
        assert!(Policy::parse("p.toml", "").unwrap().is_empty());
    }

    #[test]
    fn unknown_key_is_located() {
        let err = Policy::parse("p.toml", "allow = []\n  denny = [\"x\"]\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 3), "{err}");
        assert!(err.to_string().starts_with("p.toml:2:3: "), "{err}");
        assert!(err.message.contains("denny"), "{err}");
    }

    #[test]
    fn wrong_type_and_syntax_errors_are_located() {
        let err = Policy::parse("p.toml", "allow = \"git\"\n").unwrap_err();
        assert_eq!((err.line, err.column), (1, 9), "{err}");
        let err = Policy::parse("p.toml", "deny = [\"a\",\n  \"b\" \"c\"]\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        let err = Policy::parse("p.toml", "deny = [\"ok\", 3]\n").unwrap_err();
        assert_eq!((err.line, err.column), (1, 15), "{err}");
    }

    #[test]
    fn empty_rule_is_located() {
        let err = Policy::parse("p.toml", "deny = [\"git push\",\n   \"  \"]\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 4), "{err}");
        assert_eq!(err.message, "empty deny rule");
    }

    fn inv<'a>(program: &'a str, aliases: &'a [String], args: &'a [String]) -> Invocation<'a> {
        Invocation {
            program,
            aliases,
            args,
        }
    }

    #[test]
    fn a_chain_is_denied_by_any_name_and_allowed_only_by_its_real_last_program() {
        let p = policy(&["echo ok"], &["echo secret", "env"]);
        let none: Vec<String> = vec![];
        let secret = vec!["secret".to_owned()];
        let e = vec!["e".to_owned()];
        // A symlink `e` to echo: denied by the real name.
        assert!(!p.decide_chain(&[inv("echo", &e, &secret)]).is_allowed());
        // A real `e` whose alias is echo (argv[0], say) is denied too: names only add denials.
        let echo = vec!["echo".to_owned()];
        assert!(!p.decide_chain(&[inv("e", &echo, &secret)]).is_allowed());
        // But an allow rule needs the real name: an alias `echo` does not make `e ok` allowed.
        let ok = vec!["ok".to_owned()];
        assert_eq!(
            p.decide_chain(&[inv("e", &echo, &ok)]),
            Ruling::AllowedByDefault
        );
        assert_eq!(
            p.decide_chain(&[inv("echo", &none, &ok)]),
            Ruling::Allowed("echo ok".into())
        );
        // A denied outer program (env) is denied even when the last one is allowed.
        let env_args = vec!["echo".to_owned(), "ok".to_owned()];
        assert_eq!(
            p.decide_chain(&[inv("env", &none, &env_args), inv("echo", &none, &ok)]),
            Ruling::Denied("env".into())
        );
        assert_eq!(
            p.decide_chain(&[]),
            Ruling::Denied("(an empty command)".into())
        );
    }

    #[test]
    fn launchers_and_deny_tracing_parse_with_defaults() {
        let p = Policy::parse("p.toml", "deny = [\"rm\"]\n").unwrap();
        assert!(p.deny_tracing());
        assert_eq!(p.launchers(), DEFAULT_LAUNCHERS);
        let p = Policy::parse(
            "p.toml",
            "launchers = [\"/opt/run\", \"env\"]\ndeny_tracing = false\n",
        )
        .unwrap();
        assert!(!p.deny_tracing());
        assert_eq!(p.launchers().len(), DEFAULT_LAUNCHERS.len() + 1);
        assert_eq!(p.launchers().last().map(String::as_str), Some("/opt/run"));
        let err = Policy::parse("p.toml", "launchers = [\"a b\"]\n").unwrap_err();
        assert_eq!((err.line, err.column), (1, 14), "{err}");
    }
}
