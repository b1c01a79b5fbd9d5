//! The supervisor's cache of file heads (`effective::HeadCache`): kept by file identity, read
//! again after a rewrite, and never kept for a file changed in the clock tick of the read. The
//! end-to-end check of the same is `exec_bypass::a_script_rewritten_between_two_execs_...`.

mod support;

use nix::errno::Errno;
use nix::time::{ClockId, clock_gettime};
use wedge_runtime::supervisor::effective::{HEAD, HeadCache, RootDir, TargetFs};

use support::*;

#[test]
fn heads_are_kept_by_file_identity_and_a_rewrite_is_read_again() {
    let dir = TempDir::new("heads");
    let file = dir.file("s", "#!/bin/true secret\n");
    settled(&file);
    let heads = HeadCache::default();
    let fs = RootDir::with_heads(std::process::id(), &heads);
    let path = file.to_str().unwrap();
    assert_eq!(fs.read_head(path, HEAD).unwrap(), b"#!/bin/true secret\n");
    assert_eq!(heads.len(), 1, "a settled file's head is kept");
    // Kept: a shorter read is answered from it, and so is the same one.
    assert_eq!(fs.read_head(path, 2).unwrap(), b"#!");
    assert_eq!(fs.read_head(path, HEAD).unwrap(), b"#!/bin/true secret\n");
    // Rewritten in place to the same size: another ctime, so read again.
    std::fs::write(&file, "#!/bin/echo secret\n").unwrap();
    assert_eq!(fs.read_head(path, HEAD).unwrap(), b"#!/bin/echo secret\n");
    // What is not a regular file is refused as before, cache or not.
    assert_eq!(
        fs.read_head(dir.0.to_str().unwrap(), HEAD),
        Err(Errno::EACCES)
    );
}

#[test]
fn a_file_changed_in_the_current_clock_tick_is_not_kept() {
    let coarse = || clock_gettime(ClockId::CLOCK_REALTIME_COARSE).unwrap();
    let dir = TempDir::new("heads-now");
    let file = dir.0.join("f");
    // A write and a read within one tick of the coarse clock (a few ms; the two calls take
    // microseconds): the read cannot tell the write from a later one in the same tick, so it
    // must not keep the head. An attempt the tick ends in is made again.
    let within_one_tick = (0..50).find_map(|_| {
        let heads = HeadCache::default();
        let before = coarse();
        std::fs::write(&file, "x").unwrap();
        let fs = RootDir::with_heads(std::process::id(), &heads);
        assert_eq!(fs.read_head(file.to_str().unwrap(), HEAD).unwrap(), b"x");
        (coarse() == before).then(|| heads.len())
    });
    assert_eq!(
        within_one_tick,
        Some(0),
        "kept a head read in its file's change tick"
    );
}
