//! A trial's record printed in full for a person: what `wedge replay` shows of the trial it ran
//! and `wedge replay --exact` of each trial it replayed.

use wedge::model::record::TrialRecord;

/// Prints everything `r` holds: verdict, expectation, class, diagnosis with kernel stacks,
/// leaks, the log and the output tails.
pub fn print_record(r: &TrialRecord) {
    wedge::outln!("{} {} seed {}", r.scenario, r.cell.id(), r.seed);
    wedge::outln!("verdict: {} ({})", r.verdict.as_str(), r.reason);
    wedge::outln!(
        "expectation: {} — {}",
        r.expectation.describe(),
        if r.met { "met" } else { "MISSED" }
    );
    if let Some(class) = &r.loss {
        wedge::outln!("lost: {class} (the scenario's [[classify]])");
    }
    wedge::outln!("time to verdict: {:.1} ms", r.time_to_verdict_ms);
    if let Some(d) = &r.diagnosis {
        wedge::outln!("diagnosis ({}):", d.reason);
        for p in &d.processes {
            wedge::outln!(
                "  {}[{}] ppid {} {} — {}",
                p.name,
                p.pid,
                p.ppid,
                p.state,
                p.cmdline.join(" ")
            );
            for t in &p.threads {
                wedge::outln!(
                    "    {}[{}] {}{}{} (for {} ms)",
                    t.name,
                    t.tid,
                    t.phrase(),
                    t.detail
                        .as_ref()
                        .map_or_else(String::new, |d| format!(" — {d}")),
                    t.wchan
                        .as_ref()
                        .map_or_else(String::new, |w| format!(", wchan {w}")),
                    t.for_ms
                );
                for frame in t.kernel_stack.iter().take(8) {
                    wedge::outln!("        {frame}");
                }
            }
        }
    }
    for l in &r.leaks {
        wedge::outln!("leak: {l}");
    }
    for l in &r.lingering {
        wedge::outln!("lingering: {l}");
    }
    if !r.log.is_empty() {
        wedge::outln!("log:");
        for l in &r.log {
            wedge::outln!("  {l}");
        }
    }
    if !r.stdout_tail.is_empty() {
        wedge::outln!("stdout:\n{}", r.stdout_tail);
    }
    if !r.stderr_tail.is_empty() {
        wedge::outln!("stderr:\n{}", r.stderr_tail);
    }
}
