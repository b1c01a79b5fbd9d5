//! The engine against its purpose-built subjects: each gets the right verdict, the right
//! diagnosis, and leaves nothing behind. Every test runs under a watchdog.

mod support;

use std::time::Duration;

use support::{assert_nothing_left, diagnosis, engine, scenario_path, watchdog};

use wedge::engine::trial::{Engine, TrialSpec, run_trial};
use wedge::exec::runner::{PlanOptions, execute, plan};
use wedge::model::chaos::Chaos;
use wedge::model::record::{TrialRecord, Verdict};
use wedge::model::scenario::Scenario;

/// The one trial of `s`'s first cell with `seed` and `chaos`, checked to leave nothing.
fn first_cell_trial(engine: &Engine, s: &Scenario, seed: u64, chaos: Chaos) -> TrialRecord {
    cell_trial(engine, s, 0, seed, chaos)
}

/// One trial of cell `index`, checked to leave nothing.
fn cell_trial(engine: &Engine, s: &Scenario, index: usize, seed: u64, chaos: Chaos) -> TrialRecord {
    let cell = s.cells()[index].clone();
    let spec = TrialSpec {
        scenario: s,
        expectation: s.expectation(&cell, &engine.host.kernel),
        cell,
        cell_index: index,
        trial: 0,
        seed,
        cpus: None,
        chaos,
    };
    let r = run_trial(engine, &spec).unwrap();
    assert_nothing_left(&r);
    r
}

/// Every trial of the matching cells, under a 90 s watchdog, each checked to leave nothing.
fn run(file: &str, filters: &[&str], trials: Option<u32>) -> Vec<TrialRecord> {
    support::run(file, filters, trials, Duration::from_secs(90))
}

#[test]
fn exiting_subject_passes_with_its_exit_code() {
    let records = run("exit.toml", &["cpus=1", "cpus=2"], Some(2));
    assert_eq!(records.len(), 8);
    for r in &records {
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert!(r.met);
        let code: i32 = r.cell.get("code").unwrap().parse().unwrap();
        assert_eq!(r.exit.unwrap().code, Some(code));
        assert!(r.stdout_tail.contains("hello"));
        let pinned = r.cpus.as_ref().unwrap();
        assert_eq!(
            pinned.len(),
            r.cell.get("cpus").unwrap().parse::<usize>().unwrap()
        );
        assert!(r.diagnosis.is_none());
    }
}

#[test]
fn too_many_cpus_is_skipped_with_a_reason() {
    let records = run("exit.toml", &["cpus=64"], Some(1));
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.verdict, Verdict::Skipped);
        assert!(r.reason.contains("asks for 64 CPUs"), "{}", r.reason);
        assert!(r.reason.contains("no VM can run it"), "{}", r.reason);
    }
}

#[test]
fn mutex_deadlock_is_a_quiescent_hang_naming_both_threads() {
    for r in run("deadlock.toml", &[], Some(2)) {
        assert_eq!(r.verdict, Verdict::Hang, "{r:?}");
        assert!(r.met, "{}", r.reason);
        let d = diagnosis(&r);
        assert!(d.reason.starts_with("quiescent for 300 ms"), "{}", d.reason);
        for who in ["locker-a", "locker-b"] {
            assert!(
                d.summary
                    .contains(&format!("{who} thread blocked in futex(FUTEX_WAIT")),
                "{}",
                d.summary
            );
        }
        // Caught by the window, before the 20 s deadline: a deadline verdict's reason says
        // "deadline of ... passed" (the assertion above), and it comes no later than that.
        assert!(r.time_to_verdict_ms < 20_000.0, "{}", r.time_to_verdict_ms);
        let t = d.processes[0]
            .threads
            .iter()
            .find(|t| t.name == "locker-a")
            .unwrap();
        assert_eq!(t.state, "sleeping");
        assert!(
            t.detail.as_deref().unwrap().starts_with("futex(0x"),
            "{:?}",
            t.detail
        );
        assert!(t.for_ms >= 300, "{}", t.for_ms);
    }
}

#[test]
fn read_on_a_silent_pipe_is_a_hang_in_read() {
    for r in run("pipe-read.toml", &[], Some(2)) {
        assert_eq!(r.verdict, Verdict::Hang, "{r:?}");
        assert!(r.met, "{}", r.reason);
        let d = diagnosis(&r);
        assert!(d.reason.starts_with("quiescent"), "{}", d.reason);
        let main = &d.processes[0].threads[0];
        assert!(main.main);
        assert_eq!(main.call.as_deref(), Some("read"));
        assert!(
            main.detail.as_deref().unwrap().starts_with("read(fd "),
            "{:?}",
            main.detail
        );
        assert!(
            d.summary.contains("main thread blocked in read"),
            "{}",
            d.summary
        );
    }
}

#[test]
fn sigterm_ignoring_subject_and_its_setsid_daemon_are_both_killed() {
    for r in run("daemon.toml", &[], Some(2)) {
        assert_eq!(r.verdict, Verdict::Hang, "{r:?}");
        assert!(r.met, "{}", r.reason);
        let d = diagnosis(&r);
        assert_eq!(d.processes.len(), 2, "{}", d.summary);
        let daemon = d
            .processes
            .iter()
            .find(|p| p.name == "wedge-daemon")
            .expect("daemon in the diagnosis");
        let subject = d
            .processes
            .iter()
            .find(|p| p.name == "wedge-subject")
            .unwrap();
        // The daemon escaped the subject: it is not its child any more.
        assert_ne!(daemon.ppid, subject.pid);
        assert!(
            d.summary.contains(&format!(
                "wedge-subject[{}]: main thread blocked in pause",
                subject.pid
            )),
            "{}",
            d.summary
        );
        assert_eq!(
            r.log.iter().filter(|l| l.contains("send SIGTERM")).count(),
            3,
            "{:?}",
            r.log
        );
    }
}

#[test]
fn a_daemon_left_behind_is_reported_as_lingering() {
    let records = run("daemon-exit.toml", &[], Some(1));
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.exit.unwrap().code, Some(0));
        assert_eq!(r.lingering.len(), 1, "{r:?}");
        assert!(
            r.lingering[0].starts_with("wedge-daemon["),
            "{:?}",
            r.lingering
        );
        if r.cell.get("allow") == Some("true") {
            assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
        } else {
            assert_eq!(r.verdict, Verdict::Fail);
            assert!(r.reason.contains("left processes running"), "{}", r.reason);
        }
    }
}

#[test]
fn busy_loop_is_not_quiescent_and_hits_the_deadline() {
    for r in run("busy.toml", &[], Some(1)) {
        assert_eq!(r.verdict, Verdict::Hang, "{r:?}");
        assert!(r.met, "{}", r.reason);
        let d = diagnosis(&r);
        assert!(d.reason.starts_with("deadline of 1500 ms"), "{}", d.reason);
        assert!(r.time_to_verdict_ms >= 1500.0, "{}", r.time_to_verdict_ms);
        assert!(d.summary.contains("main thread running"), "{}", d.summary);
    }
}

#[test]
fn sleeping_past_the_window_is_not_a_hang() {
    for r in run("sleep.toml", &[], Some(2)) {
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert!(r.diagnosis.is_none());
        // It slept 700 ms, more than three 200 ms windows, and still passed.
        assert!(r.time_to_verdict_ms >= 700.0, "{}", r.time_to_verdict_ms);
    }
}

#[test]
fn every_signal_is_delivered_separately() {
    for r in run("signals.toml", &[], Some(3)) {
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert!(
            r.stdout_tail.contains("TERM after 3 INT"),
            "{}",
            r.stdout_tail
        );
    }
}

#[test]
fn pty_subject_reads_as_the_foreground_job() {
    for r in run("tty.toml", &[], Some(1)) {
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert!(r.stdout_tail.contains("foreground"), "{}", r.stdout_tail);
        assert!(r.stdout_tail.contains("got: hi there"), "{}", r.stdout_tail);
    }
}

#[test]
fn a_seed_replays_the_same_random_choices() {
    let path = scenario_path("signals.toml");
    let logs = watchdog(Duration::from_secs(60), move || {
        let engine = engine();
        let s = Scenario::load(&path).unwrap();
        let mut choices = Vec::new();
        for seed in [7, 7, 8, 9, 10] {
            let r = first_cell_trial(&engine, &s, seed, Chaos::Off);
            assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
            let sleeps: Vec<String> = r
                .log
                .iter()
                .filter_map(|l| {
                    l.split("  ")
                        .last()
                        .filter(|t| t.starts_with("sleep "))
                        .map(str::to_string)
                })
                .collect();
            assert_eq!(sleeps.len(), 1, "{:?}", r.log);
            choices.push(sleeps[0].clone());
        }
        choices
    });
    assert_eq!(logs[0], logs[1], "the same seed must make the same choice");
    assert!(
        logs[1..].iter().any(|c| *c != logs[0]),
        "different seeds never differed: {logs:?}"
    );
}

#[test]
fn a_wait_for_a_file_nothing_is_left_to_make_fails_naming_the_exit() {
    let records = run("exit-before-path.toml", &[], Some(1));
    assert_eq!(records.len(), 1);
    let r = &records[0];
    // Not a hang at the deadline: the tree was empty, so nothing could be stuck.
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    assert!(r.met, "{}", r.reason);
    assert!(r.diagnosis.is_none(), "{r:?}");
    for part in [
        "the subject ended (exit 3) before",
        "never-made to exist",
        "no process of the trial was left for 300 ms",
    ] {
        assert!(r.reason.contains(part), "{part:?} not in {}", r.reason);
    }
}

#[test]
fn a_missing_subject_binary_is_an_error_not_a_pass() {
    let dir = std::env::temp_dir().join(format!("wedge-engine-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("missing.toml");
    std::fs::write(&file, "[scenario]\ntrials = 1\n[subject]\nkind = \"command\"\nargv = [\"wedge-no-such-subject\"]\n").unwrap();
    let records = watchdog(Duration::from_secs(30), move || {
        let engine = engine();
        let s = std::sync::Arc::new(Scenario::load(&file).unwrap());
        let cells = plan(
            &wedge::exec::host_facts::of_engine(&engine),
            &[s],
            &PlanOptions::default(),
        )
        .unwrap();
        execute(&engine, &cells, 1, None, true).unwrap()
    });
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].verdict, Verdict::Error);
    assert!(
        records[0].reason.contains("wedge-no-such-subject"),
        "{}",
        records[0].reason
    );
    let summary = wedge::report::stats::summarize(&records);
    assert_eq!(wedge::report::gate::evaluate(&summary).len(), 1);
}

#[test]
fn seccomp_supervisor_hang_is_diagnosed_by_name() {
    for r in run("seccomp-recv.toml", &[], Some(2)) {
        assert_eq!(r.verdict, Verdict::Hang, "{r:?}");
        assert!(r.met, "{}", r.reason);
        let d = diagnosis(&r);
        assert!(
            d.summary
                .contains("supervisor thread blocked in ioctl(SECCOMP_IOCTL_NOTIF_RECV)"),
            "{}",
            d.summary
        );
        let t = d.processes[0]
            .threads
            .iter()
            .find(|t| t.name == "supervisor")
            .unwrap();
        assert!(
            t.detail
                .as_deref()
                .unwrap()
                .ends_with(", SECCOMP_IOCTL_NOTIF_RECV)"),
            "{:?}",
            t.detail
        );
        assert!(
            r.log.iter().any(|l| l.contains("condition holds")),
            "{:?}",
            r.log
        );
    }
}

#[test]
fn failpoints_reach_the_subject_and_follow_the_seed() {
    let dir = std::env::temp_dir().join(format!("wedge-engine-fp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("failpoints.toml");
    std::fs::write(
        &file,
        r#"
[scenario]
trials = 1
[subject]
kind = "command"
argv = ["sh", "-c", "echo \"FP=$FAILPOINTS\""]
[[steps]]
do = "failpoint"
name = "build::chdir"
action = "return"
[[steps]]
do = "failpoint"
name = "build::stall"
action = "sleep({rand:1-1000})"
probability = 0.5
[expect]
exit = 0
stdout = "FP=build::chdir=return"
"#,
    )
    .unwrap();
    let outputs = watchdog(Duration::from_secs(60), move || {
        let engine = engine();
        let s = Scenario::load(&file).unwrap();
        let mut outputs = Vec::new();
        for seed in [1, 1, 2, 3, 4, 5, 6, 7, 8] {
            let r = first_cell_trial(&engine, &s, seed, Chaos::Off);
            assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
            outputs.push(r.stdout_tail.trim().to_string());
        }
        std::fs::remove_dir_all(&dir).unwrap();
        outputs
    });
    assert_eq!(outputs[0], outputs[1], "same seed, same failpoints");
    let with_stall = outputs
        .iter()
        .filter(|o| o.contains(";build::stall=sleep("))
        .count();
    assert!(with_stall > 0 && with_stall < outputs.len(), "{outputs:?}");
    let delays: std::collections::BTreeSet<&str> = outputs
        .iter()
        .filter_map(|o| o.split("sleep(").nth(1))
        .collect();
    assert!(delays.len() > 1 || with_stall == 1, "{outputs:?}");
}

/// Stand-ins for the runtime's binaries that print their arguments, to check the command lines
/// wedge builds for `wedge-run` and `wedge-agent` subjects and `spawn` steps.
#[test]
fn runtime_subjects_get_the_contract_command_lines() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("wedge-engine-fake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script(
        "wedge-run",
        "echo \"ARGS: $*\"\nwhile [ \"$1\" != -- ]; do shift; done\nshift\nexec \"$@\"",
    );
    script(
        "wedge-agent",
        "echo \"ARGS: $*\"\nif [ \"$1\" = serve ]; then touch \"$3\"; exec sleep 1000; fi\nexit 0",
    );
    std::fs::write(
        dir.join("run.toml"),
        r#"
[scenario]
trials = 1
[subject]
kind = "wedge-run"
drain_ms = "50"
command = ["sh", "-c", "exit 7"]
[matrix]
variant = ["fixed", "pre-fix"]
sandbox = ["none"]
[expect]
exit = 7
stdout = "ARGS: --sandbox none --variant (fixed|pre-fix) --drain-ms 50 -- sh -c exit 7"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("agent.toml"),
        r#"
[scenario]
trials = 1
quiescence_ms = 0
deadline_ms = 10000
[subject]
kind = "wedge-agent"
[matrix]
strategy = ["inline"]
workers = [2]
concurrency = [4]
[[steps]]
do = "wait"
until = "path"
path = "{socket}"
[[steps]]
do = "spawn"
name = "client"
argv = ["wedge-agent", "exec", "--socket", "{socket}", "--concurrency", "{concurrency}", "--", "true"]
[[steps]]
do = "wait"
until = "exited"
process = "client"
exit = 0
[[steps]]
do = "signal"
signal = "TERM"
[expect]
exit = "TERM"
stdout = "ARGS: serve --socket /\\S+/work/agent.sock --workers 2 --strategy inline"
"#,
    )
    .unwrap();
    let d = dir.clone();
    let records = watchdog(Duration::from_secs(60), move || {
        let mut engine = engine();
        engine.bin_dir = d.clone();
        let scenarios: Vec<_> = ["run.toml", "agent.toml"]
            .iter()
            .map(|f| std::sync::Arc::new(Scenario::load(&d.join(f)).unwrap()))
            .collect();
        let cells = plan(
            &wedge::exec::host_facts::of_engine(&engine),
            &scenarios,
            &PlanOptions::default(),
        )
        .unwrap();
        execute(&engine, &cells, 2, None, true).unwrap()
    });
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_nothing_left(r);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    }
    let agent = records
        .iter()
        .find(|r| r.cell.get("strategy").is_some())
        .unwrap();
    assert!(
        agent
            .log
            .iter()
            .any(|l| l.contains("spawn client:") && l.contains("--concurrency 4 -- true")),
        "{:?}",
        agent.log
    );
}

#[test]
fn leaked_mounts_and_temp_files_fail_the_trial() {
    let dir = std::env::temp_dir().join(format!("wedge-engine-leaks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("leaks.toml");
    std::fs::write(
        &file,
        r#"
[scenario]
trials = 1
[subject]
kind = "command"
argv = ["sh", "-c", "{script}"]
[matrix]
script = ["touch \"$TMPDIR/left-behind\"", "mkdir \"$TMPDIR/m\" && mount -n -t tmpfs wedge-test \"$TMPDIR/m\"", "true"]
[expect]
exit = 0
"#,
    )
    .unwrap();
    let f = file.clone();
    let records = watchdog(Duration::from_secs(60), move || {
        let engine = engine();
        let s = std::sync::Arc::new(Scenario::load(&f).unwrap());
        let cells = plan(
            &wedge::exec::host_facts::of_engine(&engine),
            &[s],
            &PlanOptions::default(),
        )
        .unwrap();
        execute(&engine, &cells, 1, None, true).unwrap()
    });
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(records.len(), 3);
    let temp = &records[0];
    assert_eq!(temp.verdict, Verdict::Fail, "{temp:?}");
    assert!(
        temp.leaks
            .iter()
            .any(|l| l.starts_with("temp file ") && l.ends_with("/tmp/left-behind")),
        "{:?}",
        temp.leaks
    );
    let mount = &records[1];
    assert_eq!(mount.verdict, Verdict::Fail, "{mount:?}");
    // The subject mounts in the trial's own mount namespace (wedge-init's): the mount never
    // reaches the host and ends with the namespace, so it is no leak; the directory it made
    // for it is.
    assert!(
        !mount.leaks.iter().any(|l| l.starts_with("mount ")),
        "{:?}",
        mount.leaks
    );
    assert!(
        mount
            .leaks
            .iter()
            .any(|l| l.starts_with("temp file ") && l.ends_with("/tmp/m")),
        "{:?}",
        mount.leaks
    );
    // Nothing of it is mounted on the host, and the trial directory is gone.
    let trial_dir = std::env::temp_dir().join(format!("wedge-trial-{}", mount.trial_id));
    assert!(!trial_dir.exists());
    assert!(
        !wedge::engine::proc::mount_points()
            .iter()
            .any(|m| m.contains(&mount.trial_id))
    );
    let clean = &records[2];
    assert_eq!(clean.verdict, Verdict::Pass, "{clean:?}");
    assert!(clean.leaks.is_empty());
}

#[test]
fn teardown_steps_that_fail_or_overrun_fail_the_trial_and_the_rest_still_run() {
    let records = support::run_unchecked(
        "leaking/teardown-fails.toml",
        &[],
        None,
        Duration::from_secs(60),
    );
    assert_eq!(records.len(), 2);
    for r in records {
        let cell = r.cell.get("teardown").unwrap().to_string();
        assert_eq!(r.verdict, Verdict::Fail, "{cell}: {r:?}");
        assert!(!r.met, "{cell}: {r:?}");
        assert!(
            r.reason.starts_with("teardown failed: teardown step "),
            "{cell}: {}",
            r.reason
        );
        let expected = match cell.as_str() {
            "fails" => "sh ended with exit 1 where exit 0 was expected; stderr: cannot delete",
            _ => "sleep did not end within 300 ms",
        };
        assert!(r.reason.contains(expected), "{cell}: {}", r.reason);
        assert!(
            r.reason.contains("(verdict was pass: ended with exit 0)"),
            "{}",
            r.reason
        );
        // The step after the failed one ran.
        assert!(
            r.log.iter().any(|l| l.ends_with("after ended: exit 0")),
            "{cell}: {:?}",
            r.log
        );
        assert_nothing_left(&r);
    }
}

#[test]
fn a_spawned_clients_exit_and_output_are_in_the_record() {
    let records = support::run_unchecked(
        "leaking/client-fails.toml",
        &[],
        None,
        Duration::from_secs(60),
    );
    let r = &records[0];
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    let client = &r.spawned[0];
    assert_eq!(client.name, "client");
    assert_eq!(client.exit.map(|e| e.code), Some(Some(1)), "{client:?}");
    assert_eq!(client.stdout_tail.trim(), "trying");
    assert_eq!(client.stderr_tail.trim(), "container wf-1 is not running");
    assert!(
        r.reason
            .ends_with("[spawned: client: exit 1, stderr: \"container wf-1 is not running\"]"),
        "{}",
        r.reason
    );
    assert_nothing_left(r);
}

/// The perturbations (when, for how long) of a trial's log.
fn chaos_lines(log: &[String]) -> Vec<String> {
    log.iter()
        .filter_map(|l| l.split("  ").last())
        .filter(|t| t.starts_with("chaos +"))
        .map(|t| {
            // "chaos +12 ms: thread 345 (sh) SCHED_IDLE for 37 ms (pick 1)": the time and the
            // hold are the schedule's; the thread is whichever the pick landed on.
            let at = t.split(':').next().unwrap_or_default().to_string();
            let hold = t
                .split(" for ")
                .nth(1)
                .unwrap_or_default()
                .split(" (")
                .next();
            format!("{at} for {}", hold.unwrap_or_default())
        })
        .collect()
}

#[test]
fn chaos_applies_the_seeds_perturbations_and_logs_them() {
    let path = scenario_path("chaos.toml");
    watchdog(Duration::from_secs(60), move || {
        let engine = engine();
        let s = Scenario::load(&path).unwrap();
        let mut runs = Vec::new();
        for (seed, chaos) in [(3, s.chaos), (3, s.chaos), (4, s.chaos), (3, Chaos::Off)] {
            let r = first_cell_trial(&engine, &s, seed, chaos);
            assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
            runs.push(chaos_lines(&r.log));
        }
        // A second of a subject at 1-100 ms gaps: dozens of perturbations, every one logged.
        assert!(runs[0].len() >= 5, "{:?}", runs[0]);
        // Every perturbation applied is one of its seed's schedule, in order: the same seed, the
        // same schedule. (Which of them apply can differ: one whose pick lands on a thread that
        // is already demoted is skipped, and the subject's threads at an instant vary.)
        let of_seed = |seed: u64| -> Vec<String> {
            wedge::model::chaos::schedule(seed)
                .take(1000)
                .map(|p| format!("chaos +{} ms for {} ms", p.at_ms, p.hold_ms))
                .collect()
        };
        for (run, seed) in [(&runs[0], 3), (&runs[1], 3), (&runs[2], 4)] {
            let schedule = of_seed(seed);
            let mut at = 0;
            for line in run {
                let found = schedule[at..].iter().position(|s| s == line);
                let offset =
                    found.unwrap_or_else(|| panic!("{line} is not in seed {seed}'s schedule"));
                at += offset + 1;
            }
        }
        assert_ne!(of_seed(3), of_seed(4));
        assert!(
            runs[3].is_empty(),
            "chaos off perturbs nothing: {:?}",
            runs[3]
        );
    });
}

/// `pct` demotes only threads that are running: a busy subject gets perturbed, each time a
/// thread named as running, and never squeezed onto one CPU.
#[test]
fn pct_demotes_running_threads_only() {
    let busy = scenario_path("chaos-busy.toml");
    watchdog(Duration::from_secs(60), move || {
        let engine = engine();
        let s = Scenario::load(&busy).unwrap();
        let r = first_cell_trial(&engine, &s, 5, s.chaos);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        let lines: Vec<&String> = r.log.iter().filter(|l| l.contains("chaos +")).collect();
        // The counting shell is what runs (wedge's keeper may be caught starting it).
        assert!(lines.iter().any(|l| l.contains("(sh)")), "{lines:?}");
        for l in &lines {
            assert!(l.contains(": running thread"), "{l}");
            assert!(!l.contains("squeezed"), "pct never squeezes: {l}");
        }
    });
}

/// `syscall` holds threads at the entries its seed draws, in the subject and in every process
/// it starts, and the subject is judged as without them.
#[test]
fn syscall_chaos_holds_the_entries_its_seed_draws() {
    let path = scenario_path("chaos-syscall.toml");
    watchdog(Duration::from_secs(90), move || {
        let engine = engine();
        let s = Scenario::load(&path).unwrap();
        // A seed that holds the first `execve`: the subject's own exec, which only a tracer
        // that seized it before its exec can see.
        let execve = libc::SYS_execve as u64;
        let seed = (1u64..)
            .find(|s| wedge::model::chaos::syscall_hold(*s, execve, 1).is_some())
            .unwrap();
        let r = first_cell_trial(&engine, &s, seed, s.chaos);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        let tracing = r.log.iter().find(|l| l.contains("chaos syscall: tracing"));
        let tracing = tracing.unwrap_or_else(|| panic!("no tracer line: {:?}", r.log));
        assert!(!tracing.contains("tracing 0 threads"), "{tracing}");
        assert!(tracing.ends_with(&format!("seed {seed}")), "{tracing}");
        // "chaos +12 ms: thread 345 (sh) held 7 ms at read (entry 3)"
        let mut threads = std::collections::BTreeSet::new();
        let mut holds = 0;
        for line in r.log.iter().filter(|l| l.contains(" held ")) {
            let (_, rest) = line.split_once(": thread ").unwrap();
            let tid = rest.split(' ').next().unwrap().to_string();
            let (_, rest) = rest.split_once(" held ").unwrap();
            let (ms, rest) = rest.split_once(" ms at ").unwrap();
            let (call, rest) = rest.split_once(" (entry ").unwrap();
            let entry: u64 = rest.trim_end_matches(')').parse().unwrap();
            let nr = wedge::model::syscall_names::number(call).unwrap();
            let drawn = wedge::model::chaos::syscall_hold(seed, nr, entry);
            assert_eq!(drawn, Some(ms.parse().unwrap()), "{line}");
            threads.insert(tid);
            holds += 1;
        }
        // Its first thread is the subject itself, held at its exec.
        let first = r.log.iter().find(|l| l.contains(" held ")).unwrap();
        assert!(first.contains(" at execve (entry 1)"), "{:?}", r.log);
        // Thirty programs make about a thousand calls; one in 32 is held.
        assert!(holds >= 5, "{:?}", r.log);
        assert!(threads.len() >= 2, "only the shell was held: {:?}", r.log);
    });
}

#[test]
fn syscall_chaos_forks_while_another_thread_is_inside_a_write() {
    use wedge::model::chaos::{fork_paired, may_hold_lock};
    let path = scenario_path("chaos-fork-pair.toml");
    watchdog(Duration::from_secs(90), move || {
        let engine = engine();
        let s = Scenario::load(&path).unwrap();
        let clone = libc::SYS_clone as u64;
        // glibc's fork is a `clone`: a seed that pairs many of the twenty, so that however
        // loaded the machine, some pairing finds the logger inside a write.
        let seed = (1u64..)
            .find(|seed| (1..=20).filter(|k| fork_paired(*seed, clone, *k)).count() >= 8)
            .unwrap();
        for (index, cell) in s.cells().iter().enumerate() {
            let r = cell_trial(&engine, &s, index, seed, Chaos::Syscall);
            // "chaos +6 ms: thread 12 (logger) kept at write (entry 25) while thread 11
            // (wedge-subject) made a process with clone (entry 7)"
            let mut pairs = 0;
            let write_pairs = r.log.iter().filter(|l| l.contains(" made a process with "));
            for line in write_pairs.filter(|l| l.contains(" kept at ")) {
                let (_, rest) = line.split_once(" kept at ").unwrap();
                let (call, rest) = rest.split_once(" (entry ").unwrap();
                let nr = wedge::model::syscall_names::number(call).unwrap();
                assert!(may_hold_lock(nr), "{line}");
                let (_, fork) = rest.split_once(" made a process with ").unwrap();
                let (fork_call, entry) = fork.split_once(" (entry ").unwrap();
                assert_eq!(fork_call, "clone", "{line}");
                let entry: u64 = entry.trim_end_matches(')').parse().unwrap();
                assert!(fork_paired(seed, clone, entry), "{line}");
                pairs += 1;
            }
            assert!(pairs >= 1, "no pairing: {:?}", r.log);
            // glibc's fork holds the arena locks itself: never an arena pairing.
            assert!(
                !r.log.iter().any(|l| l.contains("malloc arena")),
                "{:?}",
                r.log
            );
            match cell.get("child").unwrap() {
                // The lock the logger held is the child's forever, and the parent waits for it.
                "stdio" => {
                    assert_eq!(r.verdict, Verdict::Hang, "{r:?}");
                    let d = &diagnosis(&r).summary;
                    assert!(d.contains("when it was forked"), "{d}");
                }
                // The same pairings, children that take no lock: nothing is lost.
                _ => assert_eq!(r.verdict, Verdict::Pass, "{r:?}"),
            }
        }
    });
}

/// The first seed under which the first `n` entries into process-creating call `nr` are all
/// paired forks.
fn seed_pairing_first_forks(nr: u64, n: u64) -> u64 {
    use wedge::model::chaos::fork_paired;
    (1u64..)
        .find(|seed| (1..=n).all(|k| fork_paired(*seed, nr, k)))
        .unwrap()
}

/// The call of a pairing line ("... made a process with clone (entry 7) while ..."), after
/// checking that the seed pairs that entry.
fn paired_call(line: &str, seed: u64) -> &str {
    use wedge::model::chaos::fork_paired;
    let (_, fork) = line.split_once(" made a process with ").unwrap();
    let (call, rest) = fork.split_once(" (entry ").unwrap();
    let (entry, _) = rest.split_once(')').unwrap();
    let nr = match call {
        "clone" => libc::SYS_clone,
        "clone3" => libc::SYS_clone3,
        "fork" => libc::SYS_fork,
        _ => libc::SYS_vfork,
    } as u64;
    assert!(fork_paired(seed, nr, entry.parse().unwrap()), "{line}");
    call
}

#[test]
fn syscall_chaos_forks_right_after_another_thread_takes_a_global_lock() {
    let path = scenario_path("chaos-fork-mutex.toml");
    watchdog(Duration::from_secs(90), move || {
        let engine = engine();
        let s = Scenario::load(&path).unwrap();
        let clone = libc::SYS_clone as u64;
        // A seed that pairs the first four forks: the first one's watch sees a locker take the
        // lock within microseconds (they take turns without end), so no unpaired fork comes first.
        let seed = seed_pairing_first_forks(clone, 4);
        for (index, cell) in s.cells().iter().enumerate() {
            let r = cell_trial(&engine, &s, index, seed, Chaos::Syscall);
            // "... made a process with clone (entry 1) while thread 12 (locker) had just taken
            // lock word 0x5581c0e88c60 in wedge-subject's data (watched: ...)"
            let finds: Vec<&String> = r
                .log
                .iter()
                .filter(|l| l.contains(" had just taken lock word 0x"))
                .collect();
            for line in &finds {
                assert_eq!(paired_call(line, seed), "clone", "{line}");
                assert!(
                    line.contains(" in wedge-subject's data (watched: "),
                    "{line}"
                );
                assert!(
                    line.contains("(locker)") || line.contains("(contender)"),
                    "{line}"
                );
            }
            // Whatever the watch did, no trap reached the subject.
            let trapped = r.exit.as_ref().and_then(|e| e.signal) == Some(libc::SIGTRAP);
            assert!(!trapped, "{r:?}");
            match cell.get("child").unwrap() {
                // The lock the locker held is the child's forever, and the parent waits.
                "take" => {
                    assert!(!finds.is_empty(), "no watch pairing: {:?}", r.log);
                    assert_eq!(r.verdict, Verdict::Hang, "{r:?}");
                    let d = &diagnosis(&r).summary;
                    assert!(d.contains("when it was forked"), "{d}");
                }
                // The same pairings, children that leave the lock alone: nothing is lost.
                _ => assert_eq!(r.verdict, Verdict::Pass, "{r:?}"),
            }
        }
    });
}

#[test]
fn syscall_chaos_forks_while_another_thread_holds_a_malloc_arena() {
    let path = scenario_path("chaos-fork-arena.toml");
    watchdog(Duration::from_secs(90), move || {
        let engine = engine();
        let s = Scenario::load(&path).unwrap();
        let clone = libc::SYS_clone as u64;
        // Both cells' forks are `clone`s. A seed that pairs the first four: a child hangs at
        // the first paired fork whose looks catch the allocator inside malloc or free (about
        // nine in ten do), and no unpaired fork comes first (a fork that by itself lands inside
        // the allocator's lock, about one in two hundred, would hang the trial with no pairing).
        let seed = seed_pairing_first_forks(clone, 4);
        for (index, cell) in s.cells().iter().enumerate() {
            let r = cell_trial(&engine, &s, index, seed, Chaos::Syscall);
            // "chaos +9 ms: thread 11 (wedge-subject) made a process with clone (entry 7)
            // while malloc arena 0x7f55c0e88c60 (the one it allocates from) was locked by
            // another thread (look 3); kept stopped: 12 (allocator)"
            // A look's find, or a watch's: "... made a process with clone (entry 1) while
            // thread 12 (allocator) had just taken malloc arena 0x7f55c0e88c60 (the
            // forker's) (watched: ...)".
            let finds: Vec<&String> = r
                .log
                .iter()
                .filter(|l| {
                    l.contains(" was locked by another thread ") || l.contains(" had just taken ")
                })
                .collect();
            for line in &finds {
                assert_eq!(paired_call(line, seed), "clone", "{line}");
                // The forker's own arena is found below its thread pointer.
                let look = line.contains("while malloc arena 0x")
                    && line.contains("(the one it allocates from)");
                let watch = line.contains("had just taken malloc arena 0x")
                    && line.contains(" (the forker's) (watched: ");
                assert!(look || watch, "{line}");
            }
            match cell.get("how").unwrap() {
                // The allocator's arena lock is the child's forever, and the parent waits.
                "clone" => {
                    assert!(!finds.is_empty(), "no arena pairing: {:?}", r.log);
                    assert_eq!(r.verdict, Verdict::Hang, "{r:?}");
                    let d = &diagnosis(&r).summary;
                    assert!(d.contains("when it was forked"), "{d}");
                }
                // glibc's fork holds every arena lock itself across its clone: those are set
                // aside, so nothing is paired on them, and nothing is lost.
                _ => {
                    assert!(finds.is_empty(), "{finds:?}");
                    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
                }
            }
        }
    });
}
