//! `wedge probe`: the kernel behaviour probes, on the host or in a VM (`--backend`, `--kernel`,
//! `--cpus` as for `wedge run`; `auto` is the host unless `--kernel` names another kernel), as a
//! table or JSON, compared with the known kernels (`--compare`), or regenerating the reference
//! reports (`--report DIR`: the host and every kernel of kernels.toml).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::common::Failure;
use wedge::plan::backend::{Backend, Target, VmSupport, Wants, choose};
use wedge::probe::known::{KnownReports, REGENERATE, behaviour_table, render_markdown};
use wedge::probe::run::{SuiteOptions, run_suite};
use wedge::probe::{ProbeReport, compare, render_table};
use wedge::vm::support::HostVms;

/// Probe the kernel behaviours sandbox runtimes depend on (seccomp user notification, the
/// syscall ABIs, process handling): a table of id, value and evidence. With --kernel, in a VM.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    #[command(flatten)]
    backend: super::common::BackendArgs,
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
    /// Say which known kernel (reports/kernels.json) this one behaves like, each
    /// difference, and what it means for the scenario library.
    #[arg(long)]
    compare: bool,
    /// Probe the host and every kernel of kernels.toml; write DIR/kernels.json and
    /// DIR/kernels.md.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["json", "compare"])]
    report: Option<PathBuf>,
    /// Run one probe in this process and print its result (how `wedge probe` runs each).
    #[arg(long, hide = true, value_name = "ID")]
    run_one: Option<String>,
}

pub fn probe(args: ProbeArgs) -> Result<(), Failure> {
    if let Some(id) = &args.run_one {
        return match wedge::probe::run::run_one(id) {
            true => Ok(()),
            false => Err(Failure::Input(format!("unknown probe {id}"))),
        };
    }
    let vms = HostVms::detect();
    if let Some(dir) = &args.report {
        return write_reports(dir, &vms);
    }
    let wants = Wants {
        kernel: args.backend.kernel.clone(),
        cpus: args.backend.cpus.map(|c| c as usize),
    };
    let report = probe_where(args.backend.backend, &wants, &vms)?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Failure::Io(e.to_string()))?;
        wedge::outln!("{text}");
    } else {
        wedge::out!("{}", render_table(&report));
    }
    if args.compare {
        let known = KnownReports::builtin().map_err(|e| Failure::Io(e.to_string()))?;
        // Comparing a known kernel with its own report says nothing: leave that out (a bzImage
        // given by path is named by its path, so it is compared with every known kernel).
        let others: Vec<ProbeReport> = known
            .kernels
            .into_iter()
            .filter(|k| k.kernel != report.kernel || k.release != report.release)
            .collect();
        match compare::compare(&report, &others) {
            Some(c) => wedge::out!("\n{}", compare::render(&report, &c)),
            None => wedge::outln!("\nno known kernel to compare with"),
        }
    }
    Ok(())
}

/// Probes where `backend` puts a cell that wants `wants`.
fn probe_where(backend: Backend, wants: &Wants, vms: &HostVms) -> Result<ProbeReport, Failure> {
    let host = host();
    let target = choose(backend, wants, &host, vms).map_err(|e| Failure::Input(e.to_string()))?;
    match target {
        Target::Host => Ok(probe_host(&host)),
        Target::Vm(t) => {
            let settings = vms.settings().ok_or_else(|| {
                Failure::Input(vms.unavailable().map(|e| e.to_string()).unwrap_or_default())
            })?;
            wedge::errln!(
                "wedge: probing kernel {} in a VM ({} vCPUs, {})",
                t.kernel.name,
                t.cpus,
                settings.accel.name()
            );
            wedge::exec::guest_probe::probe_in_vm(&t, &settings, &AtomicBool::new(false))
                .map_err(|e| Failure::Io(e.to_string()))
        }
    }
}

fn host() -> wedge::model::record::Host {
    wedge::model::record::Host {
        kernel: wedge::engine::proc::kernel_release(),
        cpus: wedge::engine::trial::host_cpus().len(),
        isolation: String::new(),
        backend: "host".into(),
        accel: None,
    }
}

fn probe_host(host: &wedge::model::record::Host) -> ProbeReport {
    ProbeReport {
        kernel: "host".into(),
        release: host.kernel.clone(),
        backend: "host".into(),
        accel: None,
        cpus: host.cpus,
        probes: run_suite(&SuiteOptions::this_program(1)),
    }
}

/// `--report DIR`: probes the host and every listed kernel, writes kernels.json and kernels.md.
fn write_reports(dir: &Path, vms: &HostVms) -> Result<(), Failure> {
    let list = wedge::vm::kernels::load_list(&wedge::vm::kernels::default_list_path())
        .map_err(|e| Failure::Input(e.to_string()))?;
    wedge::errln!("wedge: probing the host");
    let mut kernels = vec![probe_host(&host())];
    for k in &list {
        let wants = Wants {
            kernel: Some(k.name.clone()),
            cpus: None,
        };
        kernels.push(probe_where(Backend::Vm, &wants, vms)?);
    }
    let known = KnownReports {
        command: REGENERATE.to_string(),
        wedge_version: wedge::VERSION.to_string(),
        kernels,
    };
    std::fs::create_dir_all(dir).map_err(|e| Failure::Io(format!("{}: {e}", dir.display())))?;
    let json = serde_json::to_string_pretty(&known).map_err(|e| Failure::Io(e.to_string()))?;
    for (name, text) in [
        ("kernels.json", json + "\n"),
        ("kernels.md", render_markdown(&known)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Failure::Io(format!("{}: {e}", path.display())))?;
    }
    wedge::out!("{}", behaviour_table(&known));
    wedge::errln!(
        "wedge: wrote {0}/kernels.json and {0}/kernels.md",
        dir.display()
    );
    Ok(())
}
