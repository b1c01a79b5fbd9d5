//! Generates wedge-agent's gRPC code from `proto/agent.proto` (needs `protoc`, see ci/setup.sh).
//!
//! Also the build script of `runtime/libcontainer-latest`, the second build of the same sources
//! against the current libcontainer, whose manifest sits one directory down: the `proto`
//! directory is looked for beside the manifest, then one level up.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The second build marks itself by its package, never by a feature a build could leave out
    // (a `wedge-agent-latest` that did not know itself would hand over to itself forever).
    println!("cargo::rustc-check-cfg=cfg(wedge_second_build)");
    if std::env::var("CARGO_PKG_NAME").as_deref() == Ok("wedge-agent-latest") {
        println!("cargo::rustc-cfg=wedge_second_build");
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto = [manifest.join("proto"), manifest.join("../proto")]
        .into_iter()
        .find(|dir| dir.join("agent.proto").is_file())
        .ok_or("no proto/agent.proto beside the manifest or one level up")?;
    let file = proto.join("agent.proto");
    println!("cargo::rerun-if-changed={}", file.display());
    tonic_prost_build::configure().compile_protos(&[file], &[proto])?;
    Ok(())
}
