//! The wait-for graph of each purpose-built hang (waitfor.toml): the exact edges (waiter,
//! resource, holder) and the cycle or chain, named by role (`parent`/`child` process, thread
//! name), since pids and addresses change from run to run. And what building the graph costs
//! on the pthread ABBA subject (printed, not asserted). Every run is under a watchdog.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::{diagnosis, run};
use wedge::engine::monitor::awake::HangClass;
use wedge::engine::monitor::{Diagnosis, Snapshot};
use wedge::model::record::{TrialRecord, Verdict};
use wedge::model::waitfor::{Party, Resource, WaitEdge, WaitGraph};

/// `parent`/`child` (the subject and a process it forked), with `:thread` for a thread.
fn label(d: &Diagnosis, party: Party) -> String {
    let p = d.processes.iter().find(|p| p.pid == party.pid);
    let role = match p {
        Some(p) if d.processes.iter().any(|q| q.pid == p.ppid) => "child",
        Some(_) => "parent",
        None => "?",
    };
    match party.tid {
        None => role.to_string(),
        Some(tid) => {
            let t = p.and_then(|p| p.threads.iter().find(|t| t.tid == tid));
            let name = t.map_or("?", |t| if t.main { "main" } else { t.name.as_str() });
            format!("{role}:{name}")
        }
    }
}

fn kind(r: &Resource) -> &'static str {
    match r {
        Resource::Mutex { .. } => "mutex",
        Resource::PiMutex { .. } => "pi-mutex",
        Resource::Futex { .. } => "futex",
        Resource::OwnerGone { .. } => "owner-gone",
        Resource::Stranded { .. } => "stranded",
        Resource::ThreadExit => "thread-exit",
        Resource::FileLock { .. } => "file-lock",
        Resource::Pipe { .. } => "pipe",
        Resource::Socket { .. } => "socket",
        Resource::Semaphore { .. } => "semaphore",
        Resource::Child => "child",
        Resource::Continue => "continue",
        Resource::Parked => "parked",
    }
}

type Labelled = (String, &'static str, String);

fn labelled(d: &Diagnosis, e: &WaitEdge) -> Labelled {
    let holder = e.holder.map_or_else(|| "-".to_string(), |h| label(d, h));
    (label(d, e.waiter), kind(&e.resource), holder)
}

fn edges(d: &Diagnosis, g: &WaitGraph) -> BTreeSet<Labelled> {
    g.edges.iter().map(|e| labelled(d, e)).collect()
}

fn path(d: &Diagnosis, g: &WaitGraph, idx: &[usize]) -> Vec<Labelled> {
    idx.iter().map(|&i| labelled(d, &g.edges[i])).collect()
}

fn e(w: &str, k: &'static str, h: &str) -> Labelled {
    (w.to_string(), k, h.to_string())
}

fn graph(r: &TrialRecord) -> (&Diagnosis, &WaitGraph) {
    assert_eq!(r.verdict, Verdict::Hang, "{}", r.reason);
    let d = diagnosis(r);
    let g = d
        .waits
        .as_ref()
        .unwrap_or_else(|| panic!("no graph: {}", d.summary));
    assert!(d.summary.ends_with(&g.text), "{}", d.summary);
    (d, g)
}

fn trials(mode: &str) -> Vec<TrialRecord> {
    let filter = format!("mode={mode}");
    let records = run("waitfor.toml", &[&filter], Some(2), Duration::from_secs(60));
    assert_eq!(records.len(), 2);
    records
}

/// The addresses of the futex-like resources of `g`, each once.
fn addrs(g: &WaitGraph) -> BTreeSet<u64> {
    g.edges
        .iter()
        .filter_map(|e| match e.resource {
            Resource::Mutex { addr } | Resource::PiMutex { addr } | Resource::Futex { addr } => {
                Some(addr)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn pthread_abba_is_a_lock_order_cycle_through_both_owners() {
    for r in trials("pthread-abba") {
        let (d, g) = graph(&r);
        let (a, b) = ("parent:abba-a", "parent:abba-b");
        assert_eq!(
            edges(d, g),
            BTreeSet::from([
                e("parent:main", "thread-exit", a),
                e(a, "mutex", b),
                e(b, "mutex", a),
            ])
        );
        assert_eq!(
            path(d, g, &g.cycle),
            vec![e(a, "mutex", b), e(b, "mutex", a)]
        );
        assert_eq!(addrs(g).len(), 2);
        assert!(g.text.starts_with("lock-order cycle: "), "{}", g.text);
    }
}

#[test]
fn three_threads_in_a_ring_are_one_cycle_of_three() {
    for r in trials("pthread-cycle3") {
        let (d, g) = graph(&r);
        let ring = ["parent:ring-0", "parent:ring-1", "parent:ring-2"];
        let cycle: Vec<Labelled> = (0..3)
            .map(|i| e(ring[i], "mutex", ring[(i + 1) % 3]))
            .collect();
        let mut all: BTreeSet<Labelled> = cycle.iter().cloned().collect();
        all.insert(e("parent:main", "thread-exit", ring[0]));
        assert_eq!(edges(d, g), all);
        assert_eq!(path(d, g, &g.cycle), cycle);
        assert_eq!(addrs(g).len(), 3);
    }
}

#[test]
fn pi_abba_is_a_cycle_through_the_lock_the_kernel_refused() {
    for r in trials("pi-abba") {
        let (d, g) = graph(&r);
        let (a, b) = ("parent:pi-a", "parent:pi-b");
        // Whichever thread asked second was refused (EDEADLK) and parked by glibc.
        let shapes = [
            [e(a, "pi-mutex", b), e(b, "parked", a)],
            [e(a, "parked", b), e(b, "pi-mutex", a)],
        ];
        let got = path(d, g, &g.cycle);
        assert!(shapes.iter().any(|s| got == s), "{got:?}: {}", g.text);
        let mut all: BTreeSet<Labelled> = got.into_iter().collect();
        all.insert(e("parent:main", "thread-exit", a));
        assert_eq!(edges(d, g), all);
        assert!(g.text.starts_with("lock-order cycle: "), "{}", g.text);
    }
}

#[test]
fn a_std_mutex_abba_groups_waiters_by_address_without_owners() {
    for r in trials("deadlock") {
        let (d, g) = graph(&r);
        assert_eq!(
            edges(d, g),
            BTreeSet::from([
                e("parent:main", "thread-exit", "parent:locker-a"),
                e("parent:locker-a", "futex", "-"),
                e("parent:locker-b", "futex", "-"),
            ])
        );
        assert!(g.cycle.is_empty());
        assert_eq!(addrs(g).len(), 2);
        assert!(g.text.contains("owner not recorded"), "{}", g.text);
    }
}

#[test]
fn flock_abba_between_two_processes_is_a_file_lock_cycle() {
    for r in trials("flock-abba") {
        let (d, g) = graph(&r);
        let cycle = vec![
            e("parent:main", "file-lock", "child"),
            e("child:main", "file-lock", "parent"),
        ];
        assert_eq!(edges(d, g), cycle.iter().cloned().collect());
        assert_eq!(path(d, g, &g.cycle), cycle);
        assert!(g.text.starts_with("file-lock cycle: "), "{}", g.text);
    }
}

#[test]
fn two_processes_reading_each_others_pipes_are_a_pipe_cycle() {
    for r in trials("pipe-cycle") {
        let (d, g) = graph(&r);
        let cycle = vec![
            e("parent:main", "pipe", "child"),
            e("child:main", "pipe", "parent"),
        ];
        assert_eq!(edges(d, g), cycle.iter().cloned().collect());
        assert_eq!(path(d, g, &g.cycle), cycle);
        assert!(g.text.starts_with("pipe cycle: "), "{}", g.text);
    }
}

#[test]
fn two_processes_waiting_on_each_others_socket_peers_are_a_socket_cycle() {
    for r in trials("socket-cycle") {
        let (d, g) = graph(&r);
        let cycle = vec![
            e("parent:main", "socket", "child"),
            e("child:main", "socket", "parent"),
        ];
        assert_eq!(edges(d, g), cycle.iter().cloned().collect());
        assert_eq!(path(d, g, &g.cycle), cycle);
        // Each reads its end; the peer is the other end of the same pair.
        let (mut ends, mut peers) = (BTreeSet::new(), BTreeSet::new());
        for e in &g.edges {
            let Resource::Socket { inode, peer, read } = e.resource else {
                panic!("{e:?}");
            };
            assert!(read && inode != peer, "{e:?}");
            ends.insert(inode);
            peers.insert(peer);
        }
        assert_eq!(ends.len(), 2);
        assert!(ends.is_disjoint(&peers), "{}", g.text);
        let role = |r: &str| {
            let pid = d.processes.iter().map(|p| p.pid);
            let pid = pid
                .clone()
                .find(|&p| label(d, Party::process(p)) == r)
                .unwrap();
            d.processes.iter().find(|p| p.pid == pid).unwrap()
        };
        let (parent, child) = (role("parent"), role("child"));
        let [a, b] = [&g.edges[g.cycle[0]], &g.edges[g.cycle[1]]].map(|e| match e.resource {
            Resource::Socket { inode, peer, .. } => (inode, peer),
            _ => unreachable!(),
        });
        assert_eq!(
            g.text,
            format!(
                "socket cycle: {pn}[{pp}] thread main[{pp}] reads socket:[{}] whose peer \
                 socket:[{}] is held by {cn}[{cp}]; thread main[{cp}] reads socket:[{}] whose \
                 peer socket:[{}] is held by {pn}[{pp}]",
                a.0,
                a.1,
                b.0,
                b.1,
                pn = parent.name,
                pp = parent.pid,
                cn = child.name,
                cp = child.pid,
            )
        );
    }
}

#[test]
fn semaphore_waiters_are_grouped_by_set_with_what_is_visible() {
    for r in trials("sysv-sem") {
        let (d, g) = graph(&r);
        assert_eq!(
            edges(d, g),
            BTreeSet::from([
                e("parent:main", "semaphore", "-"),
                e("child:main", "semaphore", "-"),
            ])
        );
        assert!(g.cycle.is_empty());
        let proc_of = |r: &str| {
            d.processes
                .iter()
                .find(|p| label(d, Party::process(p.pid)) == r)
                .unwrap()
        };
        let (parent, child) = (proc_of("parent"), proc_of("child"));
        // A fresh IPC namespace's first set is 0.
        assert_eq!(
            g.text,
            format!(
                "SysV semaphore set 0 (key 0x00000000), no owner recorded: {pn}[{pp}] thread \
                 main[{pp}] on semaphore 1 (value 0, last changed by {pn}[{pp}]), {cn}[{cp}] \
                 thread main[{cp}] on semaphore 0 (value 0, never changed)",
                pn = parent.name,
                pp = parent.pid,
                cn = child.name,
                cp = child.pid,
            )
        );
    }
}

#[test]
fn a_mutex_locked_across_fork_names_the_owner_the_child_does_not_have() {
    for r in trials("fork-locked") {
        let (d, g) = graph(&r);
        let chain = vec![
            e("parent:main", "child", "child"),
            e("child:main", "owner-gone", "-"),
        ];
        assert_eq!(edges(d, g), chain.iter().cloned().collect());
        assert!(g.cycle.is_empty());
        assert_eq!(path(d, g, &g.chain), chain);
        let gone = &g.edges[g.chain[1]];
        let Resource::OwnerGone {
            addr,
            owner,
            held_in: Some(held_in),
        } = gone.resource
        else {
            panic!("{gone:?}");
        };
        assert_eq!(label(d, held_in), "parent:holder");
        let proc_of = |r: &str| {
            d.processes
                .iter()
                .find(|p| label(d, Party::process(p.pid)) == r)
                .unwrap()
        };
        let (parent, child) = (proc_of("parent"), proc_of("child"));
        assert_eq!(
            g.text,
            format!(
                "wait chain: {pn}[{pp}] thread main[{pp}] waits for its child {cn}[{cp}], which \
                 waits for mutex {addr:#x}, whose owner tid {owner} recorded in the lock word \
                 does not exist in this process (lock inherited across fork from thread \
                 holder[{ht}])",
                pn = parent.name,
                pp = parent.pid,
                cn = child.name,
                cp = child.pid,
                ht = held_in.tid.unwrap(),
            )
        );
    }
}

#[test]
fn a_parent_waiting_on_a_stopped_child_is_a_chain_to_the_stop() {
    for r in trials("stopped-child") {
        let (d, g) = graph(&r);
        let chain = vec![
            e("parent:main", "child", "child"),
            e("child", "continue", "-"),
        ];
        assert_eq!(edges(d, g), chain.iter().cloned().collect());
        assert!(g.cycle.is_empty());
        assert_eq!(path(d, g, &g.chain), chain);
        assert!(g.text.starts_with("wait chain: "), "{}", g.text);
        assert!(g.text.ends_with("which is stopped"), "{}", g.text);
    }
}

/// Builds the graph of a live pthread ABBA subject (outside any trial) until its cycle shows,
/// then times the build (reading /proc and the futex words, and the graph) and prints the
/// median. Not asserted: a timing depends on the machine.
#[test]
fn building_the_graph_of_the_abba_subject_is_cheap() {
    support::watchdog(Duration::from_secs(60), || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wedge-subject"))
            .arg("pthread-abba")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let build = || {
            let snap = Snapshot::take(&[pid]);
            let obs = wedge::engine::monitor::waitfor_edges::observe(&snap.processes);
            wedge::model::waitfor::build(&obs)
        };
        let until = Instant::now() + Duration::from_secs(30);
        while build().is_none_or(|g| g.cycle.is_empty()) {
            assert!(Instant::now() < until, "no cycle in 30 s");
            std::thread::yield_now();
        }
        let mut times: Vec<Duration> = (0..51)
            .map(|_| {
                let t = Instant::now();
                let g = build();
                let took = t.elapsed();
                assert_eq!(g.map(|g| g.cycle.len()), Some(2));
                took
            })
            .collect();
        times.sort();
        let _ = child.kill();
        let _ = child.wait();
        eprintln!(
            "wait-for graph of pthread-abba: median {:?}, max {:?} over {} builds",
            times[times.len() / 2],
            times[times.len() - 1],
            times.len()
        );
    });
}

#[test]
fn a_busy_loop_is_spinning_and_says_so() {
    let records = run(
        "awake.toml",
        &["mode=busy"],
        Some(2),
        Duration::from_secs(60),
    );
    for r in &records {
        let d = diagnosis(r);
        assert!(d.reason.starts_with("deadline of 2000 ms"), "{}", d.reason);
        assert_eq!(d.class, Some(HangClass::Spinning), "{:?}", d.awake);
        let line = d.awake.first().map_or("", String::as_str);
        assert!(
            line.starts_with("spinning: wedge-subject[") && line.contains("main thread used"),
            "{line}"
        );
        assert!(d.summary.ends_with(line), "{}", d.summary);
    }
}

#[test]
fn a_periodic_alarm_is_named_as_what_kept_the_tree_awake() {
    let records = run(
        "awake.toml",
        &["mode=itimer-tick"],
        Some(2),
        Duration::from_secs(60),
    );
    for r in &records {
        let d = diagnosis(r);
        assert!(d.reason.starts_with("deadline of 2000 ms"), "{}", d.reason);
        assert_eq!(d.class, Some(HangClass::Stalled), "{:?}", d.awake);
        let line = d.awake.first().map_or("", String::as_str);
        // Woken every 200 ms: measured between snapshots, so give or take a tick.
        let ms: u64 = line
            .split("woke every ")
            .nth(1)
            .and_then(|rest| rest.split(" ms").next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!((170..=230).contains(&ms), "{line}");
        assert!(
            line.contains("main thread woke") && line.ends_with("(ITIMER_REAL)"),
            "{line}"
        );
    }
}

#[test]
fn a_cycle_is_a_deadlock_and_a_quiescent_chain_is_blocked() {
    let abba = trials("pthread-abba");
    assert_eq!(diagnosis(&abba[0]).class, Some(HangClass::Deadlock));
    let stopped = trials("stopped-child");
    let d = diagnosis(&stopped[0]);
    assert_eq!(d.class, Some(HangClass::Blocked));
    assert!(d.awake.is_empty(), "{:?}", d.awake);
}

#[test]
fn an_io_uring_wait_with_a_request_in_flight_passes_and_an_empty_one_hangs() {
    let records = run("uring.toml", &[], Some(2), Duration::from_secs(60));
    assert_eq!(records.len(), 4);
    for r in &records {
        match r.cell.get("mode").unwrap() {
            "uring-timeout" => {
                assert_eq!(r.verdict, Verdict::Pass, "{}: {r:?}", r.reason);
                // Two 1.5 s timeouts waited out, ten windows, never cut short.
                assert!(
                    r.time_to_verdict_ms >= 2900.0,
                    "{} ms",
                    r.time_to_verdict_ms
                );
            }
            _ => {
                assert_eq!(r.verdict, Verdict::Hang, "{}", r.reason);
                let d = diagnosis(r);
                assert!(d.reason.starts_with("quiescent for 300 ms"), "{}", d.reason);
            }
        }
        assert!(r.met, "{}", r.reason);
    }
}
