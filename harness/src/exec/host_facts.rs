//! Gathering what planning knows of this machine
//! ([`HostFacts`]): from the engine a run's trials use ([`of_engine`]), or surveyed without
//! changing anything ([`surveyed`], for `wedge list`); and the host's probe values, gathered only
//! when a plan needs them ([`plan_probing`]).
//!
//! Guarantee: [`surveyed`] creates, removes and starts nothing; [`plan_probing`] starts the probe
//! suite at most once, and only for a plan with a cell on this host whose expectation is keyed
//! on probes. Planning itself ([`crate::plan`]) never gathers anything.

use crate::engine::isolation::TreeKind;
use crate::engine::limits::Support;
use crate::engine::trial::Engine;
use crate::model::record::Host;
use crate::plan::HostFacts;
use crate::plan::suite::InputError;

/// This machine's facts as a run knows them: those of the engine its trials run with (not yet
/// probed).
pub fn of_engine(engine: &Engine) -> HostFacts {
    HostFacts {
        host: engine.host.clone(),
        limits: engine.limits.enforcement(),
        probes: None,
    }
}

/// This machine's facts as a run started now would find them, found without creating, removing
/// or starting anything (not probed).
pub fn surveyed() -> HostFacts {
    let kind = TreeKind::survey();
    HostFacts {
        host: Host {
            kernel: crate::engine::proc::kernel_release(),
            cpus: crate::engine::trial::host_cpus().len(),
            isolation: kind.name().to_string(),
            backend: "host".into(),
            accel: None,
        },
        limits: Support::survey(&kind).enforcement(),
        probes: None,
    }
}

/// Plans with `facts` (`plan` is the planning call); when that plan has a cell on this host
/// whose expectation is keyed on probes (`needs`, e.g. [`crate::plan::needs_host_probes`]),
/// probes this host once, with the `wedge` binary next to this program, and plans again with
/// its values.
pub fn plan_probing<T>(
    mut facts: HostFacts,
    plan: impl Fn(&HostFacts) -> Result<T, InputError>,
    needs: impl Fn(&T) -> bool,
) -> Result<T, InputError> {
    let planned = plan(&facts)?;
    if facts.probes.is_some() || !needs(&planned) {
        return Ok(planned);
    }
    let wedge = crate::plan::commands::own_dir().join("wedge");
    facts.probes = Some(crate::probe::run::probe_host(wedge));
    plan(&facts)
}
