//! wedge-agent's requests are protobuf bytes from any client on its socket. Any bytes decode (with
//! prost, into the generated request types) to a request or a decode error, never a panic; a
//! decoded request re-encodes to bytes that decode to the same request; and it goes through the
//! service's own validation (`validate`, `kill_signal`), which rejects it with `InvalidArgument`
//! or accepts it only in the form the build relies on: a program, no NUL anywhere, environment
//! names without `=`, sorted, an absolute cwd, and at most `MAX_COMMAND_BYTES` in all.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::Code;
use wedge_runtime::agent::proto::{
    ExecRequest, HealthRequest, KillRequest, StdinRequest, WaitRequest,
};
use wedge_runtime::agent::build::Builder;
use wedge_runtime::agent::service::{MAX_COMMAND_BYTES, kill_signal, validate};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => {
            if let Some(request) = round_trip::<ExecRequest>(bytes) {
                check_exec(request);
            }
        }
        1 => {
            if let Some(request) = round_trip::<KillRequest>(bytes) {
                match kill_signal(&request) {
                    Ok(signal) => assert!(request.signal == 0 || signal as i32 == request.signal),
                    Err(status) => assert_eq!(status.code(), Code::InvalidArgument),
                }
            }
        }
        2 => drop(round_trip::<StdinRequest>(bytes)),
        3 => drop(round_trip::<WaitRequest>(bytes)),
        _ => drop(round_trip::<HealthRequest>(bytes)),
    }
});

/// Decodes `bytes`; a request that decodes must survive encoding and decoding again unchanged.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let request = M::decode(bytes).ok()?;
    let again = M::decode(request.encode_to_vec().as_slice()).expect("re-encoded request decodes");
    assert_eq!(request, again);
    Some(request)
}

fn check_exec(request: ExecRequest) {
    let sent = request.clone();
    let spec = match validate(request, Path::new("/state"), &Builder::Wedge) {
        Ok(spec) => spec,
        Err(status) => {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(!status.message().is_empty());
            return;
        }
    };
    assert_eq!(
        (spec.program.as_str(), &spec.args),
        (sent.program.as_str(), &sent.args)
    );
    assert!(!spec.program.is_empty());
    let strings = [&spec.program, &spec.cwd].into_iter().chain(&spec.args);
    let env = spec.env.iter().flat_map(|(k, v)| [k, v]);
    assert!(
        strings.chain(env).all(|s| !s.contains('\0')),
        "a NUL got through"
    );
    assert!(
        spec.env
            .iter()
            .all(|(k, _)| !k.is_empty() && !k.contains('='))
    );
    assert!(
        spec.env.windows(2).all(|w| w[0] < w[1]),
        "environment not sorted"
    );
    assert_eq!(spec.env.len(), sent.env.len());
    assert!(spec.cwd.starts_with('/'));
    assert!(sent.cwd.is_empty() || spec.cwd == sent.cwd);
    let size = spec.program.len()
        + spec.args.iter().map(|a| a.len() + 1).sum::<usize>()
        + spec
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    assert!(size <= MAX_COMMAND_BYTES, "{size} bytes accepted");
}
