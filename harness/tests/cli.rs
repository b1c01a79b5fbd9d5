//! The `wedge` command line: exit codes, result files, gate, report merging, shards, replay,
//! and keeping finished trials on SIGINT. Every command runs under a deadline.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn wedge() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wedge"));
    c.env(
        "WEDGE_BIN_DIR",
        Path::new(env!("CARGO_BIN_EXE_wedge-subject"))
            .parent()
            .unwrap(),
    );
    c.env_remove("RUST_LOG");
    c
}

fn scenario(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
        .display()
        .to_string()
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Waits for `child` with a deadline; kills it (and fails) past the deadline.
fn finish(mut child: Child, limit: Duration) -> Out {
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("watchdog: wedge did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Out {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

fn run(args: &[&str]) -> Out {
    let child = wedge()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(child, Duration::from_secs(60))
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("wedge-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, rel: &str) -> String {
        self.0.join(rel).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lines(path: &str) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn run_writes_every_result_file_and_the_gate_passes() {
    let t = TempDir::new("run");
    let out = t.path("res");
    let o = run(&[
        "run",
        &scenario("exit.toml"),
        "--trials",
        "2",
        "--cell",
        "cpus=1",
        "--out",
        &out,
        "--gate",
        "-q",
    ]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    for f in [
        "trials.jsonl",
        "summary.json",
        "summary.md",
        "junit.xml",
        "index.html",
    ] {
        assert!(Path::new(&out).join(f).is_file(), "{f} missing");
    }
    assert_eq!(lines(&format!("{out}/trials.jsonl")), 4);
    let md = std::fs::read_to_string(format!("{out}/summary.md")).unwrap();
    assert!(md.contains("passed 2/2"), "{md}");
    let g = run(&["gate", &out]);
    assert_eq!(g.code, 0, "{}", g.stdout);
    // The same directory again is refused: results are never overwritten.
    let again = run(&[
        "run",
        &scenario("exit.toml"),
        "--trials",
        "1",
        "--out",
        &out,
        "-q",
    ]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("already holds results"),
        "{}",
        again.stderr
    );
}

#[test]
fn gate_fails_with_the_offending_cell() {
    let t = TempDir::new("gate");
    let file = t.path("wrong.toml");
    std::fs::write(
        &file,
        "[scenario]\ntrials = 2\n[subject]\nkind = \"command\"\nargv = [\"wedge-subject\", \"exit\", \"{code}\"]\n\
         [matrix]\ncode = [0, 5]\n[expect]\nexit = 0\n",
    )
    .unwrap();
    let out = t.path("res");
    let o = run(&["run", &file, "--out", &out, "--gate", "-q"]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("wrong code=5: only 0/2 passed"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("code=0:"), "{}", o.stdout);
    let g = run(&["gate", &out]);
    assert_eq!(g.code, 1);
    assert!(g.stdout.contains("code=5"), "{}", g.stdout);
    let junit = std::fs::read_to_string(format!("{out}/junit.xml")).unwrap();
    assert_eq!(junit.matches("<failure").count(), 1, "{junit}");
}

#[test]
fn bad_scenarios_and_arguments_exit_2_with_a_location() {
    let t = TempDir::new("bad");
    let file = t.path("bad.toml");
    std::fs::write(&file, "[subject]\nkind = \"command\"\nargv = [\"true\"]\n\n[[steps]]\ndo = \"wait\"\nuntil = \"soon\"\n").unwrap();
    let o = run(&["run", &file, "--out", &t.path("res")]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains(&format!("{file}:5:")), "{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    assert!(
        !Path::new(&t.path("res")).exists(),
        "nothing is created for bad input"
    );

    let o = run(&["run", &scenario("exit.toml"), "--cell", "nope=1"]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("no scenario has an axis \"nope\""),
        "{}",
        o.stderr
    );
    let o = run(&["run", &scenario("exit.toml"), "--shard", "3/2"]);
    assert_eq!(o.code, 2);
    let o = run(&["run", "/nonexistent/x.toml"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("/nonexistent/x.toml:1:1"), "{}", o.stderr);
    let o = run(&["gate", &t.path("empty")]);
    assert_eq!(o.code, 2);
    // A plan with no cells gates nothing: bad input, not a pass.
    let o = run(&["run", "--shard", "40/40", &scenario("exit.toml")]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("shard 40/40 holds no cells"),
        "{}",
        o.stderr
    );
}

#[test]
fn shards_split_the_cells_and_report_merges_them() {
    let t = TempDir::new("shard");
    let (a, b, merged) = (t.path("a"), t.path("b"), t.path("merged"));
    for (shard, out) in [("1/2", &a), ("2/2", &b)] {
        let o = run(&[
            "run",
            &scenario("exit.toml"),
            "--trials",
            "1",
            "--shard",
            shard,
            "--out",
            out,
            "-q",
        ]);
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    // Six cells (two skipped): 3 records in each shard, disjoint.
    let cells = |dir: &str| -> Vec<String> {
        std::fs::read_to_string(format!("{dir}/trials.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["cell"].to_string()
            })
            .collect()
    };
    let (ca, cb) = (cells(&a), cells(&b));
    assert_eq!(ca.len(), 3);
    assert_eq!(cb.len(), 3);
    assert!(ca.iter().all(|c| !cb.contains(c)));
    let o = run(&["report", &a, &b]);
    assert_eq!(o.code, 2, "several directories need --out");
    let o = run(&["report", &a, &b, "--out", &merged]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(lines(&format!("{merged}/trials.jsonl")), 6);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{merged}/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["cells"].as_array().unwrap().len(), 6);
    // Re-rendering one directory in place works too.
    std::fs::remove_file(format!("{a}/summary.md")).unwrap();
    assert_eq!(run(&["report", &a]).code, 0);
    assert!(Path::new(&format!("{a}/summary.md")).is_file());
}

#[test]
fn the_default_suite_comes_from_wedge_scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let child = wedge()
        .arg("list")
        .env("WEDGE_SCENARIOS", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = finish(child, Duration::from_secs(30));
    assert_eq!(o.code, 0, "{}", o.stderr);
    for name in [
        "busy",
        "daemon",
        "deadlock",
        "exit",
        "pipe-read",
        "seccomp-recv",
        "signals",
        "sleep",
        "tty",
    ] {
        assert!(
            o.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{name} ("))),
            "{name} missing:\n{}",
            o.stdout
        );
    }
}

#[test]
fn list_and_replay() {
    // Planned as `run` would: a cell wanting more CPUs than the host has runs in a VM when
    // one can run here, and is skipped, with the reason, otherwise or with `--backend host`.
    let o = run(&["list", &scenario("exit.toml")]);
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("code=3,cpus=2"), "{}", o.stdout);
    assert!(o.stdout.contains("expect exit 3"), "{}", o.stdout);
    assert!(
        o.stdout.contains("skipped here") || o.stdout.contains("[in a VM: kernel "),
        "{}",
        o.stdout
    );
    let o = run(&["list", "--backend", "host", &scenario("exit.toml")]);
    assert_eq!(o.code, 0);
    assert!(
        o.stdout.contains("skipped here: cell asks for"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("in a VM"), "{}", o.stdout);
    let o = run(&["replay", &scenario("seccomp-recv.toml"), "--seed", "42"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("seed 42"), "{}", o.stdout);
    assert!(
        o.stdout
            .contains("supervisor thread blocked in ioctl(SECCOMP_IOCTL_NOTIF_RECV)"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("seccomp_notify_ioctl") || !Path::new("/proc/self/stack").exists(),
        "{}",
        o.stdout
    );
    let o = run(&[
        "replay",
        &scenario("exit.toml"),
        "--cell",
        "code=3",
        "--seed",
        "1",
    ]);
    assert_eq!(o.code, 2, "ambiguous cell");
    assert!(o.stderr.contains("code=3,cpus=1"), "{}", o.stderr);
}

#[test]
fn sigint_keeps_every_finished_trial() {
    let t = TempDir::new("sigint");
    let out = t.path("res");
    let child = wedge()
        .args([
            "run",
            &scenario("sleep.toml"),
            "--trials",
            "50",
            "--jobs",
            "1",
            "--out",
            &out,
            "-q",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let jsonl = format!("{out}/trials.jsonl");
    // Wait for two finished trials (observable state), then interrupt.
    let end = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&jsonl).map_or(0, |s| s.lines().count()) < 2 {
        assert!(Instant::now() < end, "no trials finished");
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = finish(child, Duration::from_secs(30));
    assert_eq!(o.code, 130, "{}", o.stderr);
    assert!(!o.stdout.contains("gate: pass"), "{}", o.stdout);
    assert!(o.stdout.contains("interrupted after"), "{}", o.stdout);
    let records = std::fs::read_to_string(&jsonl).unwrap();
    let n = records.lines().count();
    assert!((2..50).contains(&n), "{n}");
    for l in records.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["verdict"], "pass");
    }
    let md = std::fs::read_to_string(format!("{out}/summary.md")).unwrap();
    assert!(md.contains(&format!("passed {n}/{n}")), "{md}");
}

#[test]
fn every_isolation_backend_kills_an_escaped_daemon() {
    let t = TempDir::new("backends");
    for backend in ["cgroup2", "cgroup1", "subreaper"] {
        let out = t.path(backend);
        let child = wedge()
            .args([
                "run",
                &scenario("daemon.toml"),
                "--trials",
                "2",
                "--out",
                &out,
                "--gate",
                "-q",
            ])
            .env("WEDGE_ISOLATION", backend)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let o = finish(child, Duration::from_secs(60));
        assert_eq!(o.code, 0, "{backend}: {}{}", o.stdout, o.stderr);
        let md = std::fs::read_to_string(format!("{out}/summary.md")).unwrap();
        // Without a cgroup of that kind here, wedge falls back to the next backend.
        let used = md
            .lines()
            .find(|l| l.contains("isolation"))
            .unwrap()
            .to_string();
        if backend == "subreaper" {
            assert!(used.ends_with("isolation subreaper"), "{used}");
        }
        assert!(md.contains("caught 2/2"), "{md}");
        for l in std::fs::read_to_string(format!("{out}/trials.jsonl"))
            .unwrap()
            .lines()
        {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v.get("leaks").is_none(), "{backend}: {l}");
            let id = v["trial_id"].as_str().unwrap();
            assert!(
                !std::path::Path::new(&std::env::temp_dir().join(format!("wedge-trial-{id}")))
                    .exists()
            );
        }
    }
}

#[test]
fn kernels_list_shows_the_list_and_fetch_rejects_unknown_names() {
    let t = TempDir::new("kernels");
    let list = t.path("kernels.toml");
    std::fs::write(
        &list,
        "[[kernel]]\nname = \"k1\"\npackage = \"linux-image-x\"\nrelease = \"1.2.3-x\"\nversion = \"1.2.3\"\n",
    )
    .unwrap();
    let kernels = |args: &[&str], list: &str| {
        let child = wedge()
            .arg("kernels")
            .args(args)
            .env("WEDGE_KERNELS", list)
            .env("XDG_CACHE_HOME", t.path("cache"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        finish(child, Duration::from_secs(60))
    };
    let o = kernels(&["list"], &list);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let row = o.stdout.lines().find(|l| l.starts_with("k1 ")).unwrap();
    assert!(row.contains("1.2.3-x") && row.contains(" no "), "{row}");
    assert!(
        o.stdout.contains(&t.path("cache/wedge/kernels")),
        "{}",
        o.stdout
    );
    let o = kernels(&["fetch", "k2"], &list);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("unknown kernel \"k2\" (known: k1)"),
        "{}",
        o.stderr
    );
    std::fs::write(&list, "[[kernel]]\nname = \"k1\"\n").unwrap();
    let o = kernels(&["list"], &list);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains(&format!("{list}:1:1")), "{}", o.stderr);
}

/// A pipe whose reader is already gone: every write to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

/// Runs wedge with stdout (and, with `both`, stderr) a pipe nobody reads.
fn run_closed(args: &[&str], both: bool) -> Out {
    let mut c = wedge();
    c.args(args).stdout(closed_pipe());
    let child = if both {
        c.stderr(closed_pipe()).spawn().unwrap()
    } else {
        c.stderr(Stdio::piped()).spawn().unwrap()
    };
    // `finish` reads both streams: give it empty ones for the closed pipes.
    let mut child = child;
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "watchdog: wedge did not finish");
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).unwrap();
    }
    Out {
        code: status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr,
    }
}

/// `wedge list | head -1` panicked with a broken-pipe backtrace. Every verb that prints now
/// stops writing quietly and exits as it would have: 0, or 1 for a failed gate.
#[test]
fn every_verb_ends_quietly_when_its_output_is_closed() {
    let t = TempDir::new("epipe");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let o = run_closed(&["list", &dir.display().to_string()], false);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    let o = run_closed(&["kernels", "list"], false);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    // A run whose progress and summary both go nowhere still runs and writes its results.
    let out = t.path("res");
    let file = scenario("exit.toml");
    let args = [
        "run", &file, "--trials", "1", "--cell", "cpus=1", "--out", &out,
    ];
    let o = run_closed(&args, true);
    assert_eq!(o.code, 0);
    assert_eq!(lines(&format!("{out}/trials.jsonl")), 2);
    for args in [vec!["report", out.as_str()], vec!["gate", out.as_str()]] {
        let o = run_closed(&args, false);
        assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
        assert!(!o.stderr.contains("panicked"), "{args:?}: {}", o.stderr);
    }
    // A failed gate stays a failure with its output closed.
    let wrong = t.path("wrong.toml");
    std::fs::write(
        &wrong,
        "[scenario]\ntrials = 1\n[subject]\nkind = \"command\"\nargv = [\"wedge-subject\", \"exit\", \"5\"]\n\
         [expect]\nexit = 0\n",
    )
    .unwrap();
    let failed = t.path("failed");
    let o = run_closed(&["run", &wrong, "--out", &failed, "--gate", "-q"], false);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let o = run_closed(&["gate", &failed], false);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
}

/// Without `--gate` a run reports how many cells missed and exits 0; it never says "gate".
#[test]
fn a_run_without_gate_reports_expectations_and_exits_0() {
    let t = TempDir::new("nogate");
    let file = t.path("wrong.toml");
    std::fs::write(
        &file,
        "[scenario]\ntrials = 2\n[subject]\nkind = \"command\"\nargv = [\"wedge-subject\", \"exit\", \"{code}\"]\n\
         [matrix]\ncode = [0, 5]\n[expect]\nexit = 0\n",
    )
    .unwrap();
    let o = run(&["run", &file, "--out", &t.path("a"), "-q"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("expectations: 1 of 2 cells missed"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("wrong code=5: only 0/2 passed"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.to_lowercase().contains("gate:"), "{}", o.stdout);
    let o = run(&[
        "run",
        &file,
        "--cell",
        "code=0",
        "--out",
        &t.path("b"),
        "-q",
    ]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        o.stdout.trim(),
        "expectations: all 1 cells met",
        "{}",
        o.stdout
    );
    // Without -q the run ends with the pass-rate table, then the expectations.
    let o = run(&["run", &file, "--out", &t.path("c")]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let table: Vec<&str> = o.stdout.lines().skip_while(|l| *l != "wrong").collect();
    assert!(table.len() > 3, "{}", o.stdout);
    assert!(
        table[2].contains("code=0") && table[2].contains("✅ 2/2"),
        "{}",
        o.stdout
    );
    assert!(
        table[3].contains("code=5") && table[3].contains("❌ 0/2"),
        "{}",
        o.stdout
    );
    assert!(
        o.stderr.contains("% done, "),
        "the progress estimates the time left: {}",
        o.stderr
    );
}

/// `{scenario_dir}` is absolute even when the scenario's path is relative, so a program beside
/// the scenario starts from the trial's own directory.
#[test]
fn scenario_dir_is_absolute_for_a_relative_scenario_path() {
    use std::os::unix::fs::PermissionsExt;
    let t = TempDir::new("scendir");
    std::fs::create_dir_all(t.0.join("dir")).unwrap();
    let prog = t.0.join("dir/prog");
    std::fs::write(&prog, "#!/bin/sh\necho beside\n").unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        t.0.join("dir/x.toml"),
        "[scenario]\ntrials = 1\n[subject]\nkind = \"command\"\nargv = [\"{scenario_dir}/prog\"]\n\
         [expect]\nexit = 0\nstdout = \"beside\"\n",
    )
    .unwrap();
    let child = wedge()
        .args(["run", "dir/x.toml", "--out", "res", "--gate", "-q"])
        .current_dir(&t.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = finish(child, Duration::from_secs(60));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let records = std::fs::read_to_string(t.0.join("res/trials.jsonl")).unwrap();
    let r: serde_json::Value = serde_json::from_str(records.lines().next().unwrap()).unwrap();
    assert_eq!(r["verdict"], "pass", "{r}");
    assert_eq!(
        r["file"], "dir/x.toml",
        "the file stays as given (replay lines)"
    );
}

/// Matrix values keep their TOML type in trials.jsonl and summary.json; `--cell code=3`
/// still selects the integer 3, and the results re-render.
#[test]
fn matrix_values_keep_their_types_in_results() {
    let t = TempDir::new("types");
    let out = t.path("res");
    let file = scenario("per-axis-argv.toml");
    let args = [
        "run", &file, "--cell", "wrap=env", "--cell", "code=3", "--trials", "1",
    ];
    let o = run(&[&args[..], &["--out", &out, "--gate", "-q"]].concat());
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let line = std::fs::read_to_string(format!("{out}/trials.jsonl")).unwrap();
    let r: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(
        r["cell"],
        serde_json::json!({"wrap": "env", "code": 3}),
        "{r}"
    );
    assert_eq!(r["stdout_tail"], "wrapped=env\n", "the list was spliced in");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{out}/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["cells"][0]["cell"]["code"], 3, "{summary}");
    let o = run(&["report", &out]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = run(&["gate", &out]);
    assert_eq!(o.code, 0, "{}", o.stdout);
}

/// A bad `exit` list is bad input at its value, saying what is accepted.
#[test]
fn a_bad_exit_list_is_located_and_says_what_is_accepted() {
    let t = TempDir::new("badexit");
    let file = t.path("x.toml");
    std::fs::write(
        &file,
        "[subject]\nkind = \"command\"\nargv = [\"true\"]\n[expect]\nexit = [0, \"sucess\"]\n",
    )
    .unwrap();
    let o = run(&["list", &file]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("{file}:5:12: unknown exit status \"sucess\"")),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("or a list of these"), "{}", o.stderr);
    assert!(!o.stderr.contains("untagged"), "{}", o.stderr);
}

/// `[[classify]]`: `list`, `run` and `replay` take a file with it as one without; a bad entry is
/// bad input at its location; a lost trial's record names its class and the summary counts it.
#[test]
fn classify_is_read_by_every_verb_and_a_bad_entry_is_located() {
    let t = TempDir::new("classify");
    let file = t.path("c.toml");
    let text = "[subject]\nkind = \"command\"\nargv = [\"sh\", \"-c\", \"echo nope >&2; exit {code}\"]\n\
                [matrix]\ncode = [0, 3]\n\
                [expect]\nexit = 0\n\
                [[classify]]\nname = \"said nope\"\nverdict = [\"fail\"]\nstderr = \"^nope\"\n\
                cell = { code = 3 }\n";
    std::fs::write(&file, text).unwrap();
    let o = run(&["list", &file]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let out = t.path("res");
    let o = run(&[
        "run",
        &file,
        "--trials",
        "2",
        "--backend",
        "host",
        "--out",
        &out,
    ]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let records = std::fs::read_to_string(format!("{out}/trials.jsonl")).unwrap();
    assert_eq!(
        records.matches("\"loss\":\"said nope\"").count(),
        2,
        "{records}"
    );
    assert_eq!(
        records.matches("\"loss\"").count(),
        2,
        "passes get no class"
    );
    let md = std::fs::read_to_string(format!("{out}/summary.md")).unwrap();
    assert!(md.contains("| code=3 | 2 | 2 |"), "{md}");
    let o = run(&["replay", &file, "--cell", "code=3", "--seed", "1"]);
    assert_eq!(o.code, 1, "a missed trial; {}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("lost: said nope"), "{}", o.stdout);

    let bad = text.replace("stderr = \"^nope\"", "stderr = \"(nope\"");
    std::fs::write(&file, &bad).unwrap();
    for args in [vec!["list"], vec!["run"], vec!["replay", "--seed", "1"]] {
        let verb = args[0];
        let o = run(&[&args[..], &[file.as_str()]].concat());
        assert_eq!(o.code, 2, "{verb}: {}", o.stderr);
        assert!(
            o.stderr
                .contains(&format!("{file}:11:10: bad `stderr` pattern")),
            "{verb}: {}",
            o.stderr
        );
    }
    std::fs::write(
        &file,
        text.replace("verdict = [\"fail\"]", "verdict = [\"timeout\"]"),
    )
    .unwrap();
    let o = run(&["list", &file]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("{file}:10:12: unknown verdict \"timeout\"")),
        "{}",
        o.stderr
    );
}

#[test]
fn opt_in_cells_are_listed_and_run_only_when_asked_for() {
    let t = TempDir::new("optin");
    let file = t.path("costly.toml");
    std::fs::write(
        &file,
        "[scenario]\ntrials = 1\nopt_in = { speed = [\"slow\"] }\n[subject]\nkind = \"command\"\n\
         argv = [\"wedge-subject\", \"exit\", \"0\"]\n[matrix]\nspeed = [\"fast\", \"slow\"]\n\
         [expect]\nexit = 0\n",
    )
    .unwrap();
    let listed = |extra: &[&str]| {
        let mut args = vec!["list", &file];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
        o.stdout
    };
    let quick = listed(&[]);
    assert!(
        quick.contains("speed=fast") && !quick.contains("speed=slow"),
        "{quick}"
    );
    for extra in [&["--full"][..], &["--cell", "speed=slow"]] {
        let more = listed(extra);
        assert!(more.contains("speed=slow"), "{extra:?}: {more}");
    }
    let o = run(&["run", &file, "--out", &t.path("r"), "-q", "--gate"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(lines(&format!("{}/trials.jsonl", t.path("r"))), 1);
}

/// A recording only replays in the QEMU build that made it: another build is refused before
/// anything runs, with both versions named (exit 2); a directory that is no recording too.
#[test]
fn an_exact_replay_refuses_another_qemu_build() {
    let t = TempDir::new("exact");
    let (kernel, initrd) = (t.0.join("vmlinuz"), t.0.join("image.cpio"));
    std::fs::write(&kernel, b"kernel").unwrap();
    std::fs::write(&initrd, b"initrd").unwrap();
    let slot = wedge::vm::recording::Slot::open(&t.0.join("recordings"), "t").unwrap();
    std::fs::write(slot.log(), b"log").unwrap();
    let manifest = wedge::vm::recording::Manifest {
        qemu_version: "QEMU emulator version 7.2.22 (Debian)".into(),
        kernel: "6.1".into(),
        cpus: 1,
        ..Default::default()
    };
    let dir = slot
        .keep(manifest, (&kernel, &initrd), b"", "6.1-0")
        .unwrap();
    let fake = t.0.join("qemu");
    std::fs::write(&fake, "#!/bin/sh\necho 'QEMU emulator version 9.9.9'\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = wedge()
        .env("WEDGE_QEMU", &fake)
        .args(["replay", "--exact"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("another QEMU build"), "{err}");
    assert!(err.contains("9.9.9") && err.contains("7.2.22"), "{err}");
    let o = wedge()
        .args(["replay", "--exact"])
        .arg(&kernel)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("recording.json"));
}

/// `report --reclassify` classifies lost trials again by the rules their scenario file has
/// now, into a new directory; the original records keep the classes they were run with.
#[test]
fn report_reclassify_uses_the_current_rules_and_keeps_the_originals() {
    let t = TempDir::new("reclassify");
    let file = t.path("lossy.toml");
    let write = |class: &str| {
        std::fs::write(
            &file,
            format!(
                "[scenario]\ntrials = 2\n[subject]\nkind = \"command\"\n\
                 argv = [\"wedge-subject\", \"exit\", \"{{code}}\"]\n[matrix]\ncode = [0, 5]\n\
                 [expect]\nexit = 0\n\
                 [[classify]]\nname = \"{class}\"\nverdict = [\"fail\"]\n"
            ),
        )
        .unwrap()
    };
    write("first rule");
    let (ran, again) = (t.path("ran"), t.path("again"));
    let o = run(&["run", &file, "--out", &ran, "-q"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let losses = |dir: &str| -> Vec<String> {
        std::fs::read_to_string(format!("{dir}/trials.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                let r: serde_json::Value = serde_json::from_str(l).unwrap();
                r["loss"].as_str().map(str::to_string)
            })
            .collect()
    };
    assert_eq!(losses(&ran), ["first rule", "first rule"]);
    write("sharper rule");
    let o = run(&["report", &ran, "--reclassify"]);
    assert_eq!(
        o.code, 2,
        "in place would rewrite the records: {}",
        o.stderr
    );
    let o = run(&["report", &ran, "--reclassify", "--out", &ran]);
    assert_eq!(o.code, 2, "--out must be new: {}", o.stderr);
    let o = run(&["report", &ran, "--reclassify", "--out", &again]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(losses(&again), ["sharper rule", "sharper rule"]);
    assert_eq!(
        losses(&ran),
        ["first rule", "first rule"],
        "originals untouched"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{again}/summary.json")).unwrap())
            .unwrap();
    let lost = summary["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["losses"].as_object().is_some_and(|m| !m.is_empty()))
        .expect("a cell with losses");
    assert_eq!(lost["losses"]["sharper rule"], 2, "{summary}");
    // A scenario file that no longer parses is bad input, with its location.
    std::fs::write(&file, "[scenario\n").unwrap();
    let o = run(&["report", &ran, "--reclassify", "--out", &t.path("third")]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("lossy.toml"), "{}", o.stderr);
}

#[test]
fn report_base_adds_new_trials_to_a_summary_whose_records_are_gone() {
    let t = TempDir::new("report-base");
    let file = t.path("codes.toml");
    std::fs::write(
        &file,
        "[scenario]\ntrials = 2\n[subject]\nkind = \"command\"\n\
         argv = [\"wedge-subject\", \"exit\", \"{code}\"]\n[matrix]\ncode = [0, 5]\n\
         [expect]\nexit = 0\n",
    )
    .unwrap();
    let (first, second) = (t.path("first"), t.path("second"));
    for (dir, seed) in [(&first, "1"), (&second, "2")] {
        let o = run(&["run", &file, "--out", dir, "--seed", seed, "-q"]);
        assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    }
    // The first run's records are gone; only its summary is left, as in reports/.
    let kept = t.path("kept.json");
    std::fs::copy(format!("{first}/summary.json"), &kept).unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    let o = run(&["report", &second, "--base", &kept]);
    assert_eq!(o.code, 2, "--base needs a new --out: {}", o.stderr);
    let grown = t.path("grown");
    let o = run(&["report", &second, "--base", &kept, "--out", &grown]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("4 new, 4 from bases"), "{}", o.stdout);
    let cells = |dir: &str| -> Vec<(String, u64, u64)> {
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/summary.json")).unwrap())
                .unwrap();
        s["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let n = |k: &str| c[k].as_u64().unwrap();
                (
                    c["cell_id"].as_str().unwrap().to_string(),
                    n("trials"),
                    n("passes"),
                )
            })
            .collect()
    };
    assert_eq!(
        cells(&grown),
        [("code=0".to_string(), 4, 4), ("code=5".to_string(), 4, 0)]
    );
    // Re-rendering the grown directory keeps its base.
    let o = run(&["report", &grown]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(cells(&grown)[0].1, 4);
    // A base that is not a summary is bad input, named.
    std::fs::write(&kept, "{\"cells\": 3}").unwrap();
    let o = run(&["report", &second, "--base", &kept, "--out", &t.path("bad")]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("kept.json") && o.stderr.contains("not a wedge summary"),
        "{}",
        o.stderr
    );
}
