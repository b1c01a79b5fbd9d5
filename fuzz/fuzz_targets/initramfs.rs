//! The guest's initramfs (harness/src/vm/initramfs.rs): the newc writer and reader. Arbitrary
//! adds (any path, mode, contents, symlink target) leave each entry as added, and the archive's
//! bytes read back to exactly its entries, parents first, the same bytes whatever order the
//! entries are added in; an add newc cannot write (a NUL, a top-level `TRAILER!!!`) is refused
//! and changes nothing. Arbitrary bytes given to the reader give entries or an error naming a
//! byte of the input, never a panic, and never more than the input's size in names and data.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use wedge::vm::initramfs::{Archive, CpioError, Entry, NameError, read_newc};

#[derive(Arbitrary, Debug)]
enum Add {
    Dir(String, u32),
    File(String, u32, Vec<u8>),
    Symlink(String, String),
}

// The first byte picks the check: even, the rest are archive bytes (so a seed is a real archive
// after one byte); odd, the rest generate the adds.
fuzz_target!(|data: &[u8]| match data.split_first() {
    Some((kind, bytes)) if kind % 2 == 0 => check_bytes(bytes),
    Some((_, rest)) => {
        if let Ok(adds) = Vec::<Add>::arbitrary_take_rest(Unstructured::new(rest)) {
            check_adds(&adds);
        }
    }
    None => {}
});

fn apply(archive: &mut Archive, add: &Add) -> Result<(), NameError> {
    match add {
        Add::Dir(path, mode) => archive.add_dir(path, *mode),
        Add::File(path, mode, data) => archive.add_file(path, *mode, data.clone()),
        Add::Symlink(path, target) => archive.add_symlink(path, target),
    }
}

/// What an add leaves at its path: the mode cut to its permission bits.
fn expected(add: &Add) -> (&str, Entry) {
    match add {
        Add::Dir(path, mode) => (path, Entry::Dir { mode: mode & 0o7777 }),
        Add::File(path, mode, data) => (
            path,
            Entry::File {
                mode: mode & 0o7777,
                data: data.clone(),
            },
        ),
        Add::Symlink(path, target) => (
            path,
            Entry::Symlink {
                target: target.clone(),
            },
        ),
    }
}

fn check_adds(adds: &[Add]) {
    let mut archive = Archive::new();
    for add in adds {
        let before = archive.clone();
        if let Err(e) = apply(&mut archive, add) {
            // Refused (a NUL, a top-level trailer name): then nothing changed.
            assert_eq!(archive, before, "{add:?} refused ({e}) but changed the archive");
            continue;
        }
        let (path, want) = expected(add);
        // The root is implicit and cannot be replaced; everything else is there as added.
        if let Some(got) = archive.get(path) {
            assert_eq!(got, &want, "{add:?}");
        } else {
            assert!(archive.contains(path), "{add:?} left nothing");
            assert!(archive.entries().all(|(p, _)| !p.is_empty()));
        }
    }
    check_archive(&archive);
}

/// `archive` writes bytes that read back to its entries, and that an archive built from those
/// entries in reverse order writes again.
fn check_archive(archive: &Archive) {
    let bytes = archive.write_newc();
    assert_eq!(bytes.len() % 4, 0);
    let want: Vec<(String, Entry)> = archive
        .entries()
        .map(|(p, e)| (p.to_owned(), e.clone()))
        .collect();
    let read = read_newc(&bytes).unwrap_or_else(|e| panic!("our own archive: {e}"));
    assert_eq!(read, want, "round trip");
    for (i, (path, _)) in want.iter().enumerate() {
        if let Some((parent, _)) = path.rsplit_once('/') {
            let at = want.iter().position(|(p, _)| p == parent);
            assert!(
                at.is_some_and(|at| at < i && matches!(want[at].1, Entry::Dir { .. })),
                "{path:?} without its directory before it"
            );
        }
    }
    let mut again = Archive::new();
    for (path, entry) in want.iter().rev() {
        apply(&mut again, &to_add(path, entry)).expect("an entry of a built archive adds again");
    }
    assert_eq!(again.write_newc(), bytes, "the order of adds changed the bytes");
}

fn to_add(path: &str, entry: &Entry) -> Add {
    let path = path.to_owned();
    match entry.clone() {
        Entry::Dir { mode } => Add::Dir(path, mode),
        Entry::File { mode, data } => Add::File(path, mode, data),
        Entry::Symlink { target } => Add::Symlink(path, target),
    }
}

fn check_bytes(bytes: &[u8]) {
    match read_newc(bytes) {
        Ok(entries) => {
            let held: usize = entries.iter().map(|(p, e)| p.len() + size(e)).sum();
            assert!(held <= bytes.len(), "{held} bytes from {}", bytes.len());
            // Whatever it read, added to an archive, must round-trip like any adds.
            let mut archive = Archive::new();
            for (path, entry) in &entries {
                // The reader refuses NULs; a name under a top-level `TRAILER!!!` directory is
                // the one thing it reads that an archive cannot hold.
                match apply(&mut archive, &to_add(path, entry)) {
                    Ok(()) | Err(NameError::Trailer { .. }) => {}
                    Err(e) => panic!("read {path:?} but cannot add it: {e}"),
                }
            }
            check_archive(&archive);
        }
        Err(e) => assert!(offset(&e) <= bytes.len(), "{e} in {} bytes", bytes.len()),
    }
}

fn size(entry: &Entry) -> usize {
    match entry {
        Entry::Dir { .. } => 0,
        Entry::File { data, .. } => data.len(),
        Entry::Symlink { target } => target.len(),
    }
}

fn offset(e: &CpioError) -> usize {
    match e {
        CpioError::BadMagic { offset, .. }
        | CpioError::Truncated { offset, .. }
        | CpioError::BadHex { offset, .. }
        | CpioError::BadName { offset, .. }
        | CpioError::UnsupportedType { offset, .. }
        | CpioError::BadTarget { offset, .. } => *offset,
    }
}
