//! Properties of the exec policy matcher and parser.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use wedge_runtime::supervisor::policy::{Policy, Ruling, basename};

/// A token as it may appear in a command line (no whitespace: rules split on it).
fn token() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z][a-z0-9_.-]{0,7}", "-{1,2}[a-z]{1,4}", "[^\\s/]{1,6}"]
}

/// A program name: no '/', non-empty.
fn program() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.+-]{1,10}".prop_filter("not a dot path", |p| p != "." && p != "..")
}

fn directory() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]{1,6}", 0..4).prop_map(|parts| {
        if parts.is_empty() {
            String::new()
        } else {
            format!("/{}/", parts.join("/"))
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/prop_policy.txt"))),
        ..ProptestConfig::default()
    })]

    /// A rule matches every argv that extends it, whatever directory the program is run from.
    #[test]
    fn a_rule_matches_every_argv_that_extends_it(
        prog in program(), args in prop::collection::vec(token(), 0..4),
        extra in prop::collection::vec(token(), 0..4), dir in directory(), argv0 in token(),
    ) {
        let rule = std::iter::once(prog.clone()).chain(args.clone()).collect::<Vec<_>>().join(" ");
        let policy = Policy::from_rules(Vec::<String>::new(), [rule.clone()]).unwrap();
        let argv: Vec<String> = std::iter::once(argv0).chain(args).chain(extra).collect();
        prop_assert_eq!(policy.decide(&format!("{dir}{prog}"), &argv), Ruling::Denied(rule));
    }

    /// An argv shorter than the rule, or differing in one token, does not match it.
    #[test]
    fn a_rule_does_not_match_an_argv_that_differs(
        prog in program(), args in prop::collection::vec(token(), 1..4), index in any::<prop::sample::Index>(),
    ) {
        let rule = std::iter::once(prog.clone()).chain(args.clone()).collect::<Vec<_>>().join(" ");
        let policy = Policy::from_rules(Vec::<String>::new(), [rule]).unwrap();
        let path = format!("/usr/bin/{prog}");
        let mut shorter = vec![prog.clone()];
        shorter.extend(args[..args.len() - 1].iter().cloned());
        prop_assert_eq!(policy.decide(&path, &shorter), Ruling::AllowedByDefault);
        let mut changed = vec![prog.clone()];
        changed.extend(args.iter().cloned());
        let i = 1 + index.index(args.len());
        changed[i].push('\u{1}');
        prop_assert_eq!(policy.decide(&path, &changed), Ruling::AllowedByDefault);
    }

    /// Allow always overrides deny: whatever else the deny list holds.
    #[test]
    fn allow_always_overrides_deny(
        prog in program(), args in prop::collection::vec(token(), 0..3),
        more_deny in prop::collection::vec((program(), prop::collection::vec(token(), 0..3)), 0..4),
        extra in prop::collection::vec(token(), 0..3),
    ) {
        let rule = std::iter::once(prog.clone()).chain(args.clone()).collect::<Vec<_>>().join(" ");
        let mut deny: Vec<String> = more_deny.into_iter().map(|(p, a)| std::iter::once(p).chain(a).collect::<Vec<_>>().join(" ")).collect();
        deny.push(prog.clone());
        deny.push(rule.clone());
        let policy = Policy::from_rules([rule.clone()], deny).unwrap();
        let argv: Vec<String> = std::iter::once(prog.clone()).chain(args).chain(extra).collect();
        prop_assert_eq!(policy.decide(&format!("/bin/{prog}"), &argv), Ruling::Allowed(rule));
    }

    /// argv[0] is normalised to the basename of the executed path, on both sides.
    #[test]
    fn program_is_compared_by_basename(
        prog in program(), dir in directory(), rule_dir in directory(), argv0 in token(),
        args in prop::collection::vec(token(), 0..3),
    ) {
        let policy = Policy::from_rules(Vec::<String>::new(), [format!("{rule_dir}{prog}")]).unwrap();
        let argv: Vec<String> = std::iter::once(argv0).chain(args).collect();
        let path = format!("{dir}{prog}");
        prop_assert!(!policy.decide(&path, &argv).is_allowed());
        prop_assert_eq!(basename(&path), prog.as_str());
    }

    /// No input makes the parser or the matcher panic; errors point inside the text.
    #[test]
    fn arbitrary_input_never_panics(text in "\\PC{0,200}", path in "\\PC{0,40}", argv in prop::collection::vec("\\PC{0,12}", 0..5)) {
        match Policy::parse("fuzz.toml", &text) {
            Ok(policy) => { let _ = policy.decide(&path, &argv); }
            Err(err) => {
                prop_assert!(err.line >= 1 && err.line <= text.lines().count().max(1) + 1, "{}", err);
                prop_assert!(err.column >= 1, "{}", err);
            }
        }
        let _ = Policy::from_rules([path.as_str()], argv.iter()).map(|p| p.decide(&path, &argv));
    }

    /// Structured but hostile policy files: arrays of arbitrary strings parse or fail cleanly.
    #[test]
    fn arbitrary_rule_strings_never_panic(rules in prop::collection::vec("\\PC{0,20}", 0..6), path in "\\PC{0,20}") {
        let body = rules.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join(", ");
        let text = format!("deny = [{body}]\nallow = [{body}]\n");
        if let Ok(policy) = Policy::parse("p.toml", &text) {
            let _ = policy.decide(&path, &rules);
        }
    }
}
