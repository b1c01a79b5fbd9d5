//! `wedge probe` for real: on the host every probe gives a value it can give, planning resolves
//! expectations keyed on probes with the host's values, and in VMs 6.1 and 6.12 differ where the
//! 6.11 change says (one boot per kernel; skipped, with the reason printed, when this machine
//! has no QEMU, static guest build or fetched kernel).

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wedge::plan::backend::VmSupport;
use wedge::probe::{PROBES, ProbeReport, check_token};

/// Runs `wedge probe ARGS` under a deadline; (exit code, stdout, stderr).
fn wedge_probe(args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wedge"))
        .arg("probe")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("watchdog: wedge probe {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), out, err)
}

#[test]
fn the_host_gives_every_probe_a_value_with_evidence() {
    let (code, out, err) = wedge_probe(&["--backend", "host", "--json"], Duration::from_secs(120));
    assert_eq!(code, 0, "{err}");
    let report: ProbeReport = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report.kernel.as_str(), report.backend.as_str()),
        ("host", "host")
    );
    let ids: Vec<&str> = report.probes.iter().map(|p| p.id.as_str()).collect();
    let want: Vec<&str> = PROBES.iter().map(|p| p.id).collect();
    assert_eq!(ids, want);
    for p in &report.probes {
        check_token(&p.id, &p.value).unwrap();
        assert!(!p.evidence.is_empty(), "{} has no evidence", p.id);
        assert_ne!(p.value, "error", "{}: {}", p.id, p.evidence);
    }
    // Whatever the kernel: one listener per chain, and close never wakes a blocked receive.
    assert_eq!(report.value("second_listener"), Some("EBUSY"));
    assert_eq!(report.value("close_wakes_recv"), Some("no"));
}

#[test]
fn a_probe_past_its_bound_is_killed_and_reported_as_blocks() {
    // close_wakes_recv watches a blocked receive for a second; a 300 ms bound cuts it.
    let options = wedge::probe::run::SuiteOptions {
        wedge: env!("CARGO_BIN_EXE_wedge").into(),
        bound: Duration::from_millis(300),
    };
    let started = Instant::now();
    let results = wedge::probe::run::run_suite(&options);
    assert!(
        started.elapsed() < Duration::from_secs(PROBES.len() as u64),
        "{:?}",
        started.elapsed()
    );
    let close = results.iter().find(|r| r.id == "close_wakes_recv").unwrap();
    assert_eq!(close.value, "blocks", "{}", close.evidence);
    assert!(close.evidence.contains("300 ms"), "{}", close.evidence);
    // A quick probe still finishes within the bound.
    let pid_ns = results.iter().find(|r| r.id == "pid_ns").unwrap();
    assert_eq!(pid_ns.value, "yes", "{}", pid_ns.evidence);
}

#[test]
fn an_unknown_probe_is_bad_input() {
    let (code, _, err) = wedge_probe(&["--run-one", "no_such_probe"], Duration::from_secs(30));
    assert_eq!(code, 2);
    assert!(err.contains("unknown probe no_such_probe"), "{err}");
}

#[test]
fn planning_resolves_probe_keyed_expectations_with_the_hosts_values() {
    let dir = std::env::temp_dir().join(format!("wedge-probe-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keyed.toml");
    // Two overrides, one per value the host can give: exactly one applies, and which one says
    // what the host was probed to do.
    std::fs::write(
        &file,
        "[subject]\nkind = \"command\"\nargv = [\"true\"]\n\
         [[expect.when]]\nprobe = { recv_after_users_exit = \"ENOENT\" }\nwithin_ms = 111\n\
         [[expect.when]]\nprobe = { recv_after_users_exit = \"blocks\" }\nwithin_ms = 222\n",
    )
    .unwrap();
    let s = Arc::new(wedge::model::scenario::Scenario::load(&file).unwrap());
    let engine = wedge::engine::trial::Engine::new();
    let options = wedge::exec::runner::PlanOptions {
        backend: wedge::plan::backend::Backend::Host,
        ..Default::default()
    };
    // Planned as a run plans: without probe values first, which this plan needs, then with the
    // host's.
    let mut facts = wedge::exec::host_facts::of_engine(&engine);
    let cells = wedge::exec::runner::plan(&facts, std::slice::from_ref(&s), &options).unwrap();
    assert!(wedge::plan::needs_host_probes(&cells));
    facts.probes = Some(wedge::probe::run::probe_host(
        wedge::plan::commands::own_dir().join("wedge"),
    ));
    let cells = wedge::exec::runner::plan(&facts, &[s], &options).unwrap();
    let (code, out, _) = wedge_probe(&["--backend", "host", "--json"], Duration::from_secs(120));
    assert_eq!(code, 0);
    let host: ProbeReport = serde_json::from_str(&out).unwrap();
    let want = match host.value("recv_after_users_exit") {
        Some("ENOENT") => 111,
        Some("blocks") => 222,
        other => panic!("recv_after_users_exit = {other:?}"),
    };
    assert_eq!(cells[0].expectation.within_ms, Some(want));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Why the VM test cannot run here, if it cannot.
fn vm_missing(vms: &wedge::vm::support::HostVms) -> Option<String> {
    if let Some(why) = vms.unavailable() {
        return Some(why.to_string());
    }
    for k in ["6.1", "6.12"] {
        if let Err(why) = vms.kernel(k) {
            return Some(why.to_string());
        }
    }
    None
}

#[test]
fn in_vms_6_1_keeps_blocking_and_6_12_returns_enoent() {
    let vms = wedge::vm::support::HostVms::detect();
    if let Some(why) = vm_missing(&vms) {
        eprintln!("skipped: no VM probe here: {why}");
        return;
    }
    for (kernel, want) in [("6.1", "blocks"), ("6.12", "ENOENT")] {
        let (code, out, err) =
            wedge_probe(&["--kernel", kernel, "--json"], Duration::from_secs(300));
        assert_eq!(code, 0, "{kernel}: {err}");
        let r: ProbeReport = serde_json::from_str(&out).unwrap();
        assert_eq!((r.kernel.as_str(), r.backend.as_str()), (kernel, "vm"));
        assert_eq!(r.probes.len(), PROBES.len(), "{kernel}");
        assert_eq!(
            r.value("recv_after_users_exit"),
            Some(want),
            "{kernel}: {out}"
        );
    }
}
