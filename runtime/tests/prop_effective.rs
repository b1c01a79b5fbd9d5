//! Properties of the effective-command resolver, on an in-memory filesystem: `#!` lines, loader
//! and `env` argv forms, symlink chains and loops, missing files, and hostile input.

use std::collections::HashMap;

use nix::errno::Errno;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use wedge_runtime::supervisor::effective::{
    Exec, Kind, MAX_SYMLINKS, TargetFs, Unresolved, parse_shebang, resolve,
};
use wedge_runtime::supervisor::policy::{DEFAULT_LAUNCHERS, Policy};

#[derive(Clone, Debug)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(String),
}

/// A target's filesystem: absolute, symlink-free paths of directories, files and symlinks.
#[derive(Clone, Debug)]
struct Fake {
    nodes: HashMap<String, Node>,
    cwd: String,
}

/// The head of an x86_64 ELF file with one program header, PT_INTERP `interp` if given.
fn elf(interp: Option<&str>) -> Vec<u8> {
    let mut b = vec![0u8; 64 + 56];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[32..40].copy_from_slice(&64u64.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&1u16.to_le_bytes());
    if let Some(interp) = interp {
        let at = b.len() as u64;
        b[64..68].copy_from_slice(&3u32.to_le_bytes());
        b[64 + 8..64 + 16].copy_from_slice(&at.to_le_bytes());
        b[64 + 32..64 + 40].copy_from_slice(&(interp.len() as u64 + 1).to_le_bytes());
        b.extend_from_slice(interp.as_bytes());
        b.push(0);
    }
    b
}

const LOADER: &str = "/lib/ld.so";

impl Fake {
    /// /bin/sh, /bin/echo, /usr/bin/env (dynamic, loaded by /lib/ld.so), /lib64/ld-linux ->
    /// /lib/ld.so, cwd /home.
    fn system() -> Fake {
        let mut nodes = HashMap::new();
        for dir in [
            "/bin", "/lib", "/lib64", "/usr", "/usr/bin", "/home", "/tmp",
        ] {
            nodes.insert(dir.to_owned(), Node::Dir);
        }
        for program in ["/bin/sh", "/bin/echo", "/usr/bin/env"] {
            nodes.insert(program.to_owned(), Node::File(elf(Some(LOADER))));
        }
        nodes.insert(LOADER.to_owned(), Node::File(elf(None)));
        nodes.insert(
            "/lib64/ld-linux-x86-64.so.2".to_owned(),
            Node::Link(LOADER.into()),
        );
        Fake {
            nodes,
            cwd: "/home".into(),
        }
    }

    fn add(&mut self, path: &str, node: Node) {
        self.nodes.insert(path.to_owned(), node);
    }
}

impl TargetFs for Fake {
    fn readlink(&self, path: &str) -> Result<Option<String>, Errno> {
        match self.nodes.get(path) {
            Some(Node::Link(target)) => Ok(Some(target.clone())),
            Some(_) => Ok(None),
            None => {
                let parent = &path[..path.rfind('/').unwrap_or(0)];
                match self.nodes.get(parent) {
                    Some(Node::File(_)) => Err(Errno::ENOTDIR),
                    _ => Err(Errno::ENOENT),
                }
            }
        }
    }

    fn read_head(&self, path: &str, max: usize) -> Result<Vec<u8>, Errno> {
        match self.nodes.get(path) {
            Some(Node::File(bytes)) => Ok(bytes[..bytes.len().min(max)].to_vec()),
            Some(_) => Err(Errno::EACCES),
            None => Err(Errno::ENOENT),
        }
    }

    fn cwd(&self) -> Result<String, Errno> {
        Ok(self.cwd.clone())
    }

    fn fd_dir(&self, _fd: i32) -> Result<String, Errno> {
        Err(Errno::EBADF)
    }
}

fn launchers() -> Vec<String> {
    DEFAULT_LAUNCHERS.map(str::to_owned).to_vec()
}

fn exec<'a>(path: &'a str, argv: &'a [String]) -> Exec<'a> {
    Exec {
        path,
        argv,
        dirfd: None,
    }
}

fn word() -> impl Strategy<Value = String> {
    "[a-z0-9_][a-z0-9_.-]{0,7}"
}

fn blanks() -> impl Strategy<Value = String> {
    "[ \t]{0,3}"
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/prop_effective.txt"))),
        ..ProptestConfig::default()
    })]

    /// A `#!` line becomes the argv the kernel builds: interpreter, the optional argument (blanks
    /// inside kept, around it trimmed), the script as named, then the script's argv[1..].
    #[test]
    fn a_script_runs_its_interpreter_with_the_kernels_argv(
        pre in blanks(), arg in proptest::option::of(("[a-z-]{1,5}", "( [a-z]{1,3})?").prop_map(|(a, b)| a + &b)),
        mid in "[ \t]{1,2}", post in blanks(), args in prop::collection::vec(word(), 0..3),
        name in word(),
    ) {
        let mut fs = Fake::system();
        let line = match &arg {
            Some(arg) => format!("#!{pre}/bin/echo{mid}{arg}{post}\n"),
            None => format!("#!{pre}/bin/echo{post}\n"),
        };
        let script = format!("/tmp/{name}");
        fs.add(&script, Node::File(line.into_bytes()));
        let argv: Vec<String> = std::iter::once("x".to_owned()).chain(args.clone()).collect();
        let effective = resolve(&fs, exec(&script, &argv), &launchers()).unwrap();
        let mut expected = vec!["/bin/echo".to_owned()];
        expected.extend(arg);
        expected.push(script.clone());
        expected.extend(args);
        prop_assert_eq!(effective.layers.len(), 2);
        prop_assert_eq!(effective.layers[0].kind, Kind::Script);
        prop_assert_eq!(&effective.program().path, "/bin/echo");
        prop_assert_eq!(&effective.program().argv, &expected);
    }

    /// The loader's options are skipped, `--argv0` is honoured, and the program it runs is
    /// resolved (here through a symlink) and matched: a deny rule on it denies the whole exec.
    #[test]
    fn the_loader_is_looked_through_in_every_argv_form(
        opts in prop::collection::vec(prop_oneof![
            Just(vec!["--inhibit-cache".to_owned()]),
            word().prop_map(|w| vec!["--library-path".to_owned(), format!("/{w}")]),
            word().prop_map(|w| vec![format!("--preload=/{w}.so")]),
            word().prop_map(|w| vec!["--argv0".to_owned(), w]),
        ], 0..4),
        args in prop::collection::vec(word(), 0..3),
        via in prop_oneof![Just("/lib64/ld-linux-x86-64.so.2"), Just(LOADER)],
    ) {
        let mut fs = Fake::system();
        fs.add("/tmp/e", Node::Link("/bin/echo".into()));
        let mut argv = vec![via.to_owned()];
        argv.extend(opts.iter().flatten().cloned());
        argv.push("/tmp/e".into());
        argv.extend(args.iter().cloned());
        let effective = resolve(&fs, exec(via, &argv), &launchers()).unwrap();
        prop_assert_eq!(effective.layers[0].kind, Kind::Loader);
        let program = effective.program();
        prop_assert_eq!(&program.path, "/bin/echo");
        let argv0 = opts.iter().rev().find(|o| o[0] == "--argv0").map_or("/tmp/e".to_owned(), |o| o[1].clone());
        prop_assert_eq!(&program.argv[0], &argv0);
        prop_assert_eq!(&program.argv[1..], &args[..]);
        prop_assert!(program.aliases.contains(&"e".to_owned()));
        let policy = Policy::from_rules(Vec::<String>::new(), ["echo"]).unwrap();
        prop_assert!(!policy.decide_chain(&effective.invocations()).is_allowed());
    }

    /// `env`'s options, then its assignments, are skipped; its program is known by name. (Like
    /// GNU env, the first assignment ends the options: a later `-i` would be the program.)
    #[test]
    fn env_is_looked_through(
        opts in prop::collection::vec(prop_oneof![
            Just("-i".to_owned()), Just("-".to_owned()), Just("-0v".to_owned()),
            word().prop_map(|w| format!("-u{w}")), word().prop_map(|w| format!("--unset={w}")),
            word().prop_map(|w| format!("-C/{w}")),
        ], 0..4),
        assignments in prop::collection::vec(word().prop_map(|w| format!("{w}=1")), 0..3),
        args in prop::collection::vec(word(), 0..3),
    ) {
        let fs = Fake::system();
        let mut argv = vec!["env".to_owned()];
        argv.extend(opts);
        argv.extend(assignments);
        argv.push("echo".into());
        argv.extend(args.iter().cloned());
        let effective = resolve(&fs, exec("/usr/bin/env", &argv), &launchers()).unwrap();
        prop_assert_eq!(effective.layers[0].kind, Kind::Env);
        prop_assert_eq!(effective.program().kind, Kind::Named);
        prop_assert_eq!(&effective.program().argv[0], "echo");
        prop_assert_eq!(&effective.program().argv[1..], &args[..]);
    }

    /// A chain of fewer than MAX_SYMLINKS symlinks resolves, with the first and last names among
    /// the aliases; a cycle of any length is a loop (ELOOP); a dangling one is ENOENT.
    #[test]
    fn symlink_chains_resolve_and_loops_fail(n in 1usize..MAX_SYMLINKS, cycle in 1usize..6, relative in any::<bool>()) {
        let mut fs = Fake::system();
        for i in 0..n {
            let target = if i + 1 == n { "/bin/echo".to_owned() } else if relative { format!("l{}", i + 1) } else { format!("/tmp/l{}", i + 1) };
            fs.add(&format!("/tmp/l{i}"), Node::Link(target));
        }
        let argv = vec!["l0".to_owned()];
        let effective = resolve(&fs, exec("/tmp/l0", &argv), &launchers()).unwrap();
        prop_assert_eq!(&effective.program().path, "/bin/echo");
        prop_assert!(effective.program().aliases.contains(&"l0".to_owned()));

        for i in 0..cycle {
            fs.add(&format!("/tmp/c{i}"), Node::Link(format!("/tmp/c{}", (i + 1) % cycle)));
        }
        let err = resolve(&fs, exec("/tmp/c0", &argv), &launchers()).unwrap_err();
        prop_assert_eq!(err.errno(), Errno::ELOOP, "{}", err);
        fs.add("/tmp/dangling", Node::Link(format!("/tmp/gone{cycle}")));
        let err = resolve(&fs, exec("/tmp/dangling", &argv), &launchers()).unwrap_err();
        prop_assert_eq!(err.errno(), Errno::ENOENT, "{}", err);
    }

    /// A missing file, or a path through a file, fails with the kernel's own errno (so PATH
    /// searches go on); a relative path is found from the cwd.
    #[test]
    fn missing_files_fail_as_the_kernel_fails_them(name in word(), dir in word()) {
        let mut fs = Fake::system();
        let argv = vec![name.clone()];
        let missing = format!("/{dir}x/{name}");
        let err = resolve(&fs, exec(&missing, &argv), &launchers()).unwrap_err();
        prop_assert!(matches!(err, Unresolved::Missing { errno: Errno::ENOENT, .. }), "{}", err);
        let through = format!("/bin/echo/{name}");
        let err = resolve(&fs, exec(&through, &argv), &launchers()).unwrap_err();
        prop_assert_eq!(err.errno(), Errno::ENOTDIR);
        fs.add(&format!("/home/{name}"), Node::File(elf(Some(LOADER))));
        let relative = format!("./{name}");
        let effective = resolve(&fs, exec(&relative, &argv), &launchers()).unwrap();
        prop_assert_eq!(effective.program().path.clone(), format!("/home/{name}"));
    }

    /// Scripts nest at most four deep; the fifth interpreter is refused (ELOOP).
    #[test]
    fn nested_interpreters_are_bounded(depth in 1usize..8) {
        let mut fs = Fake::system();
        for i in 0..depth {
            let next = if i + 1 == depth { "/bin/echo".to_owned() } else { format!("/tmp/s{}", i + 1) };
            fs.add(&format!("/tmp/s{i}"), Node::File(format!("#!{next}\n").into_bytes()));
        }
        let argv = vec!["s0".to_owned()];
        let got = resolve(&fs, exec("/tmp/s0", &argv), &launchers());
        if depth <= 4 {
            prop_assert_eq!(got.unwrap().layers.len(), depth + 1);
        } else {
            prop_assert_eq!(got.unwrap_err(), Unresolved::TooManyInterpreters);
        }
    }

    /// Whatever a file holds and whatever the argv, the resolver returns (never panics), and a
    /// file that is neither ELF nor `#!` is refused with ENOEXEC.
    #[test]
    fn hostile_files_and_argv_never_panic(
        head in prop::collection::vec(any::<u8>(), 0..300), argv in prop::collection::vec("\\PC{0,12}", 0..5),
        prefix in prop_oneof![Just(b"".to_vec()), Just(b"#!".to_vec()), Just(b"\x7fELF\x02\x01".to_vec())],
    ) {
        let mut fs = Fake::system();
        let bytes: Vec<u8> = prefix.iter().chain(&head).copied().collect();
        fs.add("/tmp/f", Node::File(bytes.clone()));
        let result = resolve(&fs, exec("/tmp/f", &argv), &launchers());
        if !bytes.starts_with(b"#!") && !bytes.starts_with(b"\x7fELF") {
            prop_assert_eq!(result.unwrap_err().errno(), Errno::ENOEXEC);
        }
        let _ = parse_shebang(&bytes);
        let loader_argv: Vec<String> = std::iter::once(LOADER.to_owned()).chain(argv.iter().cloned()).collect();
        let _ = resolve(&fs, exec(LOADER, &loader_argv), &launchers());
        let env_argv: Vec<String> = std::iter::once("env".to_owned()).chain(argv).collect();
        let _ = resolve(&fs, exec("/usr/bin/env", &env_argv), &launchers());
    }
}

/// The kernel's edge cases of a `#!` line, one by one.
#[test]
fn shebang_edge_cases_match_binfmt_script() {
    let parse = |s: &[u8]| parse_shebang(s).map(|l| (l.interpreter, l.argument));
    assert_eq!(parse(b"#!/bin/sh"), Some(("/bin/sh".into(), None)));
    assert_eq!(
        parse(b"#! /bin/sh -e -x \n"),
        Some(("/bin/sh".into(), Some("-e -x".into())))
    );
    assert_eq!(parse(b"#!\n"), None, "no interpreter");
    assert_eq!(parse(b"#!   \t\n"), None, "blanks only");
    // A name running to the end of the 256-byte buffer may be cut off: ENOEXEC.
    let long = [b"#!/".as_slice(), &[b'a'; 300]].concat();
    assert_eq!(parse(&long), None);
    // A long argument is cut off, the name is kept.
    let long_arg = [b"#!/bin/sh ".as_slice(), &[b'x'; 300]].concat();
    let (name, arg) = parse(&long_arg).unwrap();
    assert_eq!(
        (name.as_str(), arg.map(|a| a.len())),
        ("/bin/sh", Some(245))
    );
    assert_eq!(
        parse(b"#!/bin/sh\0-x\n"),
        Some(("/bin/sh".into(), None)),
        "NUL ends the line's name"
    );
}

/// A listed launcher is looked through; an unknown loader option is refused (fail closed).
#[test]
fn listed_launchers_and_unknown_options() {
    let mut fs = Fake::system();
    fs.add("/tmp/runner", Node::File(elf(None)));
    let argv: Vec<String> = ["runner", "/bin/echo", "secret"]
        .map(str::to_owned)
        .to_vec();
    let plain = resolve(&fs, exec("/tmp/runner", &argv), &launchers()).unwrap();
    assert_eq!(
        plain.layers.len(),
        1,
        "not a launcher unless listed: {plain:?}"
    );
    let mut listed = launchers();
    listed.push("/tmp/runner".into());
    let looked = resolve(&fs, exec("/tmp/runner", &argv), &listed).unwrap();
    assert_eq!(looked.program().path, "/bin/echo");

    let odd: Vec<String> = [LOADER, "--frobnicate", "/bin/echo"]
        .map(str::to_owned)
        .to_vec();
    let err = resolve(&fs, exec(LOADER, &odd), &launchers()).unwrap_err();
    assert!(
        matches!(err, Unresolved::Launcher { .. }) && err.errno() == Errno::EPERM,
        "{err}"
    );
    let bare: Vec<String> = [LOADER, "echo"].map(str::to_owned).to_vec();
    assert!(
        resolve(&fs, exec(LOADER, &bare), &launchers()).is_err(),
        "a name ld.so would search for"
    );
    let list: Vec<String> = [LOADER, "--list", "/bin/echo"].map(str::to_owned).to_vec();
    assert_eq!(
        resolve(&fs, exec(LOADER, &list), &launchers())
            .unwrap()
            .layers
            .len(),
        1
    );
}
