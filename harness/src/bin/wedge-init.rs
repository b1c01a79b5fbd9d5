//! `wedge-init -- PROGRAM [ARGS...]`: runs a trial's subject in a pid namespace of its own, with
//! an init of wedge's as the namespace's pid 1. See `wedge::engine::pidns` for what it does and why.
//!
//! `wedge-init --hold-syscalls SEED PID...`: the tracer of chaos mode `syscall` (a second role
//! of the same small program, so guest images need nothing more); see
//! `wedge::engine::syscall_holds`.
//!
//! `wedge-init --serve PARENT`: the keeper server, which forks keepers for wedge instead of
//! wedge exec'ing each (a third role); see `wedge::engine::spawn_server`.
//!
//! `wedge-init --fingerprint`: the fingerprint of the sources it was built from (see
//! `wedge::engine::keeper`).

use wedge::engine::{spawn_server, syscall_holds};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(wedge::engine::keeper::FINGERPRINT_FLAG) {
        println!("{}", wedge::engine::keeper::FINGERPRINT);
        return;
    }
    // The static build runs as `wedge-init-static`; the keeper server, the keepers it forks,
    // and every init are `wedge-init` either way (in `ps`, and to a subject reading
    // `/proc/1/comm`).
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"wedge-init".as_ptr()) };
    if args.get(1).map(String::as_str) == Some(spawn_server::serve::FLAG) {
        spawn_server::serve::serve_main(&args[2..])
    }
    if args.get(1).map(String::as_str) == Some(syscall_holds::FLAG) {
        syscall_holds::tracer_main(&args[2..])
    }
    wedge::engine::pidns::keeper_main(args)
}
