//! Policy files are user input: parsing any bytes must give a policy or a located error, never a
//! panic, and a parsed policy must decide any argv without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wedge_runtime::supervisor::policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse("fuzz.toml", text) {
        Ok(policy) => {
            let argv: Vec<&str> = text.split_whitespace().take(8).collect();
            let path = argv.first().copied().unwrap_or("");
            let _ = policy.decide(path, &argv);
        }
        Err(err) => {
            assert!(err.line >= 1 && err.column >= 1, "unlocated error: {err}");
            assert!(err.line <= text.lines().count() + 1, "error past the end: {err}");
        }
    }
});
