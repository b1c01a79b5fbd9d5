//! `wedge-init -- PROGRAM [ARGS...]`: runs a trial's subject in a pid namespace of its own, with
//! an init of wedge's as the namespace's pid 1. See `wedge::engine::pidns` for what it does and why.
//!
//! `wedge-init --hold-syscalls SEED PID...`: the tracer of chaos mode `syscall` (a second role
//! of the same small program, so guest images need nothing more); see
//! `wedge::engine::syscall_holds`.

use wedge::engine::syscall_holds;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(syscall_holds::FLAG) {
        syscall_holds::tracer_main(&args[2..])
    }
    wedge::engine::pidns::keeper_main(args)
}
