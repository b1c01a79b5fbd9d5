//! `wedge-init -- PROGRAM [ARGS...]`: runs a trial's subject in a pid namespace of its own, with
//! an init of wedge's as the namespace's pid 1. See `wedge::engine::pidns` for what it does and why.

fn main() {
    wedge::engine::pidns::keeper_main(std::env::args().collect())
}
