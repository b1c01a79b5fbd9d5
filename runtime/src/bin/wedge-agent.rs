//! `wedge-agent serve|exec`: see `wedge_runtime::agent`.

#[cfg(not(loom))]
fn main() -> std::process::ExitCode {
    wedge_runtime::agent::cli::main()
}

/// wedge-agent needs tokio, which does not build under `--cfg loom`; loom builds only check models.
#[cfg(loom)]
fn main() {}
