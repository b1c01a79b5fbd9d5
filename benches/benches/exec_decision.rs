//! The supervisor's own work per exec, without the kernel round trip: reading the path and argv
//! out of a process with process_vm_readv, resolving the effective command, and matching it
//! against a policy.

use std::ffi::CString;

use criterion::{Criterion, criterion_group, criterion_main};
use nix::unistd::Pid;
use wedge_runtime::supervisor::effective::{Exec, ProcRoot, RootDir, resolve};
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

/// The effective-command resolution, per kind of file: a dynamic program (the common case: its
/// head only), the loader by path, a copy of the loader (recognised by its `DT_SONAME`: two bounded
/// reads past the head) and a static-pie program (one read, no `SONAME`); each walking
/// `/proc/PID/root` for every lookup (`ProcRoot`) and, as the supervisor does, from one descriptor
/// of the root opened for the resolution (`RootDir`).
fn effective(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("wedge-bench-loader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("l");
    std::fs::copy("/lib64/ld-linux-x86-64.so.2", &copy).unwrap();
    let me = ProcRoot {
        pid: std::process::id(),
    };
    let copy = copy.to_str().unwrap().to_owned();
    let cases = [
        ("dynamic program", "/bin/true".to_owned()),
        ("loader by path", "/lib64/ld-linux-x86-64.so.2".to_owned()),
        ("loader copy", copy),
        ("static-pie program", "/sbin/ldconfig".to_owned()),
    ];
    for (name, path) in &cases {
        let argv: Vec<String> = [path.as_str(), "/bin/echo", "x"].map(String::from).to_vec();
        c.bench_function(&format!("effective.resolve ({name})"), |b| {
            b.iter(|| {
                let exec = Exec {
                    path,
                    argv: &argv,
                    dirfd: None,
                };
                resolve(&me, exec, &[]).unwrap()
            })
        });
        c.bench_function(
            &format!("effective.resolve, root descriptor ({name})"),
            |b| {
                b.iter(|| {
                    let exec = Exec {
                        path,
                        argv: &argv,
                        dirfd: None,
                    };
                    resolve(&RootDir::new(me.pid), exec, &[]).unwrap()
                })
            },
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

criterion_group!(benches, decide, effective);
criterion_main!(benches);
