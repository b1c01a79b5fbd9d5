//! The supervisor's own work per exec, without the kernel round trip: reading the path and argv
//! out of a process with process_vm_readv, and matching them against a policy.

use std::ffi::CString;

use criterion::{Criterion, criterion_group, criterion_main};
use nix::unistd::Pid;
use wedge_runtime::supervisor::exec_decision::{ReadLimits, read_request};
use wedge_runtime::supervisor::policy::Policy;

fn decide(c: &mut Criterion) {
    let policy = Policy::from_rules(
        ["git status", "git log", "cargo test", "npm run build"],
        [
            "git push",
            "rm -rf",
            "curl",
            "wget",
            "ssh",
            "scp",
            "nc",
            "docker",
            "kubectl delete",
            "npm publish",
        ],
    )
    .unwrap();
    let argv = ["git", "push", "origin", "main", "--force"];
    c.bench_function("policy.decide (14 rules)", |b| {
        b.iter(|| policy.decide(std::hint::black_box("/usr/bin/git"), &argv))
    });

    let path = CString::new("/usr/bin/git").unwrap();
    let args: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
    let mut ptrs: Vec<u64> = args.iter().map(|a| a.as_ptr() as u64).collect();
    ptrs.push(0);
    let limits = ReadLimits::default();
    c.bench_function("read_request (5 args, process_vm_readv)", |b| {
        b.iter(|| {
            read_request(
                Pid::this(),
                path.as_ptr() as u64,
                ptrs.as_ptr() as u64,
                &limits,
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, decide);
criterion_main!(benches);
