//! `wedge-agent serve|exec`: see `wedge_runtime::agent`.

fn main() -> std::process::ExitCode {
    wedge_runtime::agent::cli::main()
}
