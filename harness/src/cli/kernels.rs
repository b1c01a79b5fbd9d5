//! `wedge kernels list|fetch`: the guest kernels of the VM backend, what is known and cached.

use clap::Subcommand;

use super::common::Failure;
use wedge::vm::image::cache_dir;
use wedge::vm::kernels::{KnownKernel, cached, default_list_path, fetch, load_list};

/// The guest kernels of the VM backend (kernels.toml, or $WEDGE_KERNELS): list or fetch them.
#[derive(clap::Args, Debug)]
pub struct KernelsArgs {
    #[command(subcommand)]
    verb: KernelsVerb,
}

#[derive(Subcommand, Debug)]
enum KernelsVerb {
    /// The known kernels: release, upstream version, whether cached, and config facts.
    List,
    /// Download and unpack kernels into the cache (every known kernel when none is named).
    Fetch {
        /// Kernel names from kernels.toml.
        names: Vec<String>,
    },
}

pub fn kernels(args: KernelsArgs) -> Result<(), Failure> {
    let path = default_list_path();
    let list = load_list(&path).map_err(|e| Failure::Input(e.to_string()))?;
    let cache = cache_dir();
    match args.verb {
        KernelsVerb::List => {
            print_list(&list, &cache);
            Ok(())
        }
        KernelsVerb::Fetch { names } => {
            let chosen = choose(&list, &names)?;
            for k in chosen {
                wedge::errln!("fetching {} ({})", k.name, k.package);
                let img = fetch(k, &cache).map_err(|e| Failure::Io(e.to_string()))?;
                wedge::outln!("{} {} {}", k.name, img.release, img.path.display());
            }
            Ok(())
        }
    }
}

/// The named kernels, or all; an unknown name is a usage error listing the known ones.
fn choose<'a>(list: &'a [KnownKernel], names: &[String]) -> Result<Vec<&'a KnownKernel>, Failure> {
    if names.is_empty() {
        return Ok(list.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            list.iter().find(|k| &k.name == n).ok_or_else(|| {
                let known: Vec<&str> = list.iter().map(|k| k.name.as_str()).collect();
                Failure::Input(format!(
                    "unknown kernel {n:?} (known: {})",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

fn fact(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "y",
        Some(false) => "n",
        None => "?",
    }
}

fn print_list(list: &[KnownKernel], cache: &std::path::Path) {
    wedge::outln!(
        "{:<8} {:<28} {:<10} {:<7} {:<6} {:<7} {:<6} {:<7} ia32",
        "name",
        "release",
        "version",
        "cached",
        "notif",
        "userns",
        "pidns",
        "cgroup"
    );
    for k in list {
        let img = cached(k, cache);
        let f = img.as_ref().and_then(|i| i.config).unwrap_or_default();
        wedge::outln!(
            "{:<8} {:<28} {:<10} {:<7} {:<6} {:<7} {:<6} {:<7} {}",
            k.name,
            k.release,
            k.version,
            if img.is_some() { "yes" } else { "no" },
            fact(f.seccomp_user_notif),
            fact(f.user_ns),
            fact(f.pid_ns),
            fact(f.cgroup2),
            fact(f.ia32),
        );
    }
    wedge::outln!("cache: {}", cache.join("kernels").display());
}
