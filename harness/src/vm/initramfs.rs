//! The guest's initramfs: a newc ("070701") cpio archive, written and read in Rust.
//!
//! Guarantee: [`Archive::write_newc`] gives the same bytes for the same entries, whatever order
//! they were added in: entries are sorted by path (so every directory comes before what it
//! holds), inode numbers count up from 1 in that order, and mtime, uid, gid and device numbers
//! are 0. That is what lets the image be cached by the hash of its bytes. [`read_newc`] reads
//! such an archive back (for tests and for checking an image); bad input gives a [`CpioError`]
//! naming the byte offset, never a panic.
//!
//! What newc cannot say is refused when it is added ([`NameError`]), never written wrong: a name
//! or symlink target holding a NUL (the format's terminator), and a top-level entry named
//! `TRAILER!!!` (the kernel would stop unpacking there). So every archive that can be built
//! reads back to exactly its entries.
//!
//! Layout (the kernel's `Documentation/driver-api/early-userspace/buffer-format.rst`): each
//! entry is a 110-byte header of the magic and 13 eight-digit hex fields, the NUL-terminated
//! name padded so header + name is a multiple of 4, then the data padded to a multiple of 4. A
//! symlink's data is its target. The archive ends with an entry named `TRAILER!!!`.
//!
//! Why no crate: the writer proper is about forty lines (`write_newc`, `write_entry`, `pad4`);
//! what matters is around it: byte-identical output for a cache key, names refused before they
//! are written wrong, a reader that names the offset of every malformation. The newc crates on
//! crates.io (looked at: `cpio`, whose `write_cpio` numbers inodes from the caller's order from 0
//! and writes whatever names it is given; `cpio-archive`, MPL-2.0 and pulling `chrono` and
//! `simple-file-manifest`; `librarium` and `kpea`, general readers and writers of several cpio
//! formats) would still need all of that wrapped around them, so none makes this smaller or
//! easier to audit; GNU cpio reading our archive (a test below) is the external check instead.

use std::collections::BTreeMap;

use thiserror::Error;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const FIELDS: usize = 13;
const TRAILER: &str = "TRAILER!!!";

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
/// Permission bits plus setuid, setgid and sticky: all of a mode an entry keeps.
const PERM_MASK: u32 = 0o7777;

// Field positions in the header, after the magic.
const F_INO: usize = 0;
const F_MODE: usize = 1;
const F_NLINK: usize = 4;
const F_FILESIZE: usize = 6;
const F_NAMESIZE: usize = 11;

/// One archive member. Modes are permission bits only; the type comes from the variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// Why bytes are not a newc archive; `offset` is where in the input the problem starts.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CpioError {
    #[error("byte {offset}: bad magic {found:?}, expected \"070701\" (newc)")]
    BadMagic { offset: usize, found: String },
    #[error("byte {offset}: truncated {what}: needs {needed} bytes, {left} left")]
    Truncated {
        offset: usize,
        what: &'static str,
        needed: usize,
        left: usize,
    },
    #[error("byte {offset}: header field {field} is not 8 hex digits: {found:?}")]
    BadHex {
        offset: usize,
        field: usize,
        found: String,
    },
    #[error("byte {offset}: {what}")]
    BadName { offset: usize, what: &'static str },
    #[error("byte {offset}: unsupported file type in mode {mode:#o} of {name:?}")]
    UnsupportedType {
        offset: usize,
        mode: u32,
        name: String,
    },
    #[error("byte {offset}: symlink target of {name:?} is not UTF-8 without NULs")]
    BadTarget { offset: usize, name: String },
}

/// Why an entry cannot be added: newc has no way to write it as given.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{path:?}: a NUL in a name ends it early in newc")]
    NulInName { path: String },
    #[error("{path:?}: a NUL in a symlink target ends it early in newc")]
    NulInTarget { path: String },
    #[error("{path:?}: a top-level {TRAILER:?} is newc's end-of-archive marker")]
    Trailer { path: String },
}

/// A set of entries keyed by path (relative, no leading `/`), written in sorted order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// `path` without empty or `.` components, `..` resolved lexically (never above the root).
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// `path` normalized, if newc can write it and every parent it implies.
fn writable(path: &str) -> Result<String, NameError> {
    let normal = normalize(path);
    if normal.contains('\0') {
        return Err(NameError::NulInName { path: path.into() });
    }
    // Only the top level: the kernel compares the whole name, so `a/TRAILER!!!` is a file.
    if normal.split('/').next() == Some(TRAILER) {
        return Err(NameError::Trailer { path: path.into() });
    }
    Ok(normal)
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds (or re-modes) a directory and any missing parents (0o755). On an error nothing
    /// changes.
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<(), NameError> {
        let path = writable(path)?;
        if path.is_empty() {
            return Ok(()); // the root is implicit: the kernel unpacks into it
        }
        self.make_parents(&path);
        self.entries.insert(
            path,
            Entry::Dir {
                mode: mode & PERM_MASK,
            },
        );
        Ok(())
    }

    /// Adds a regular file, replacing whatever was at `path`; missing parents are created. On
    /// an error nothing changes.
    pub fn add_file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<(), NameError> {
        let entry = Entry::File {
            mode: mode & PERM_MASK,
            data,
        };
        self.put_leaf(&writable(path)?, entry);
        Ok(())
    }

    /// Adds a symlink to `target` (stored as given), replacing whatever was at `path`. On an
    /// error nothing changes.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), NameError> {
        let normal = writable(path)?;
        if target.contains('\0') {
            return Err(NameError::NulInTarget { path: path.into() });
        }
        let entry = Entry::Symlink {
            target: target.to_owned(),
        };
        self.put_leaf(&normal, entry);
        Ok(())
    }

    /// Whether `path` (normalized like the adders do) is in the archive; the root always is.
    pub fn contains(&self, path: &str) -> bool {
        let path = normalize(path);
        path.is_empty() || self.entries.contains_key(&path)
    }

    /// The entry at `path` (normalized like the adders do).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(&normalize(path))
    }

    /// The entries in the order they are written.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    /// A non-directory at `path`. Anything below `path` goes: the kernel could not create it
    /// under a file, and a stale subtree would make the bytes depend on history.
    fn put_leaf(&mut self, path: &str, entry: Entry) {
        if path.is_empty() {
            return; // the root cannot be a file
        }
        self.make_parents(path);
        let prefix = format!("{path}/");
        self.entries.retain(|p, _| !p.starts_with(&prefix));
        self.entries.insert(path.to_owned(), entry);
    }

    /// Every ancestor of `path` as a directory; an ancestor that was a file or symlink becomes a
    /// directory (the later add wins, as it does for the entry itself).
    fn make_parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            if !matches!(self.entries.get(parent), Some(Entry::Dir { .. })) {
                self.entries
                    .insert(parent.to_owned(), Entry::Dir { mode: 0o755 });
            }
            end += i + 1;
        }
    }

    /// The archive's bytes: sorted entries (parents first), then the trailer.
    pub fn write_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, nlink, data): (u32, u32, &[u8]) = match entry {
                Entry::Dir { mode } => (S_IFDIR | mode, 2, &[]),
                Entry::File { mode, data } => (S_IFREG | mode, 1, data),
                Entry::Symlink { target } => (S_IFLNK | 0o777, 1, target.as_bytes()),
            };
            write_entry(&mut out, ino, mode, nlink, path, data);
        }
        write_entry(&mut out, 0, 0, 1, TRAILER, &[]);
        out
    }
}

/// Zero bytes up to the next multiple of 4.
fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn write_entry(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) {
    // Sizes beyond u32 cannot be expressed in newc; an initramfs member is never near 4 GiB,
    // and saturating keeps this total (the reader would then report truncation).
    let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
    let mut fields = [0u32; FIELDS];
    fields[F_INO] = ino;
    fields[F_MODE] = mode;
    fields[F_NLINK] = nlink;
    fields[F_FILESIZE] = size;
    fields[F_NAMESIZE] = namesize;
    out.extend_from_slice(MAGIC);
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

/// `len` bytes at `at`, or a truncation error saying what was being read.
fn take<'a>(
    bytes: &'a [u8],
    at: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], CpioError> {
    let left = bytes.len().saturating_sub(at);
    if len > left || at > bytes.len() {
        return Err(CpioError::Truncated {
            offset: at.min(bytes.len()),
            what,
            needed: len,
            left,
        });
    }
    Ok(&bytes[at..at + len])
}

fn parse_header(bytes: &[u8], at: usize) -> Result<[u32; FIELDS], CpioError> {
    let header = take(bytes, at, HEADER_LEN, "header")?;
    if &header[..6] != MAGIC {
        return Err(CpioError::BadMagic {
            offset: at,
            found: String::from_utf8_lossy(&header[..6]).into_owned(),
        });
    }
    let mut fields = [0u32; FIELDS];
    for (i, field) in fields.iter_mut().enumerate() {
        let start = 6 + 8 * i;
        let raw = &header[start..start + 8];
        // from_str_radix alone would accept a leading '+'; newc fields are hex digits only.
        let parsed = std::str::from_utf8(raw)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| u32::from_str_radix(s, 16).ok());
        *field = parsed.ok_or_else(|| CpioError::BadHex {
            offset: at + start,
            field: i,
            found: String::from_utf8_lossy(raw).into_owned(),
        })?;
    }
    Ok(fields)
}

fn round4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// The name stored after a header at `at` (without its NUL) and where the data starts.
fn parse_name(bytes: &[u8], at: usize, namesize: usize) -> Result<(String, usize), CpioError> {
    let name_at = at + HEADER_LEN;
    if namesize == 0 {
        return Err(CpioError::BadName {
            offset: name_at,
            what: "name size is 0 (no room for the NUL)",
        });
    }
    let raw = take(bytes, name_at, namesize, "name")?;
    let data_at = at + round4(HEADER_LEN + namesize);
    padding(bytes, name_at + namesize, data_at, "name padding")?;
    let Some((&0, name)) = raw.split_last() else {
        return Err(CpioError::BadName {
            offset: name_at,
            what: "name is not NUL-terminated",
        });
    };
    let name = std::str::from_utf8(name).map_err(|_| CpioError::BadName {
        offset: name_at,
        what: "name is not UTF-8",
    })?;
    if name.contains('\0') {
        // The kernel reads the name as a C string: it would unpack under a shorter name.
        return Err(CpioError::BadName {
            offset: name_at,
            what: "name holds a NUL before its end",
        });
    }
    Ok((name.to_owned(), data_at))
}

/// The zero padding from `from` up to `to`: it must be there (an archive cut inside it is
/// truncated, reported where the padding starts, never past the input's end).
fn padding(bytes: &[u8], from: usize, to: usize, what: &'static str) -> Result<(), CpioError> {
    take(bytes, from, to - from, what).map(|_| ())
}

/// The entries of a newc archive, in archive order, up to its trailer.
pub fn read_newc(bytes: &[u8]) -> Result<Vec<(String, Entry)>, CpioError> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let fields = parse_header(bytes, at)?;
        let (name, data_at) = parse_name(bytes, at, fields[F_NAMESIZE] as usize)?;
        if name == TRAILER {
            return Ok(out);
        }
        let size = fields[F_FILESIZE] as usize;
        let data = take(bytes, data_at, size, "data")?;
        let mode = fields[F_MODE];
        let entry = match mode & S_IFMT {
            S_IFDIR => Entry::Dir {
                mode: mode & PERM_MASK,
            },
            S_IFREG => Entry::File {
                mode: mode & PERM_MASK,
                data: data.to_vec(),
            },
            // A NUL would cut the target short in the kernel, as in a name.
            S_IFLNK => match std::str::from_utf8(data).ok().filter(|t| !t.contains('\0')) {
                Some(t) => Entry::Symlink {
                    target: t.to_owned(),
                },
                None => {
                    return Err(CpioError::BadTarget {
                        offset: data_at,
                        name,
                    });
                }
            },
            _ => {
                return Err(CpioError::UnsupportedType {
                    offset: at,
                    mode,
                    name,
                });
            }
        };
        out.push((name, entry));
        at = data_at + round4(size);
        padding(bytes, data_at + size, at, "data padding")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.add_file("bin/true", 0o755, b"\x7fELF".to_vec()).unwrap();
        a.add_symlink("lib64", "usr/lib64").unwrap();
        a.add_dir("proc", 0o555).unwrap();
        a.add_file(
            "/etc/passwd",
            0o644,
            b"root:x:0:0::/root:/bin/sh\n".to_vec(),
        )
        .unwrap();
        a
    }

    #[test]
    fn round_trip_gives_the_same_entries_parents_first() {
        let a = sample();
        let read = read_newc(&a.write_newc()).unwrap();
        let want: Vec<(String, Entry)> = a
            .entries()
            .map(|(p, e)| (p.to_owned(), e.clone()))
            .collect();
        assert_eq!(read, want);
        let names: Vec<&str> = read.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/true", "etc", "etc/passwd", "lib64", "proc"]
        );
        assert_eq!(read[0].1, Entry::Dir { mode: 0o755 });
    }

    #[test]
    fn insertion_order_does_not_change_the_bytes() {
        let mut b = Archive::new();
        b.add_file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n".to_vec())
            .unwrap();
        b.add_dir("proc", 0o555).unwrap();
        b.add_symlink("lib64", "usr/lib64").unwrap();
        b.add_file("bin/true", 0o755, b"\x7fELF".to_vec()).unwrap();
        assert_eq!(b.write_newc(), sample().write_newc());
    }

    #[test]
    fn paths_are_normalized_and_leaves_replace_subtrees() {
        let mut a = Archive::new();
        a.add_file("//a/./b/../c", 0o600, vec![1]).unwrap();
        assert!(a.contains("a/c") && a.contains("/a") && !a.contains("a/b"));
        a.add_file("a", 0o644, vec![2]).unwrap(); // a file where a directory was: its subtree goes
        assert!(!a.contains("a/c"));
        a.add_file("a/d", 0o644, vec![3]).unwrap(); // and back: the file becomes a directory again
        assert_eq!(a.entries().next(), Some(("a", &Entry::Dir { mode: 0o755 })));
        a.add_file("", 0o644, vec![4]).unwrap(); // the root cannot be a file
        assert_eq!(a.entries().count(), 2);
    }

    #[test]
    fn golden_bytes_of_a_one_file_archive() {
        let mut a = Archive::new();
        a.add_file("a", 0o644, b"hi".to_vec()).unwrap();
        let bytes = a.write_newc();
        // 110 header + "a\0" = 112 (aligned), "hi" padded to 4: 116; trailer 110 + 11 -> 124.
        assert_eq!(bytes.len(), 116 + 124);
        let header = concat!(
            "070701", "00000001", "000081a4", "00000000", "00000000", "00000001", "00000000",
            "00000002", "00000000", "00000000", "00000000", "00000000", "00000002", "00000000",
        );
        assert_eq!(&bytes[..110], header.as_bytes());
        assert_eq!(&bytes[110..116], b"a\0hi\0\0");
        let trailer = concat!(
            "070701", "00000000", "00000000", "00000000", "00000000", "00000001", "00000000",
            "00000000", "00000000", "00000000", "00000000", "00000000", "0000000b", "00000000",
        );
        assert_eq!(&bytes[116..226], trailer.as_bytes());
        assert_eq!(&bytes[226..], b"TRAILER!!!\0\0\0\0");
        assert_eq!(Archive::new().write_newc().len(), 124);
    }

    #[test]
    fn a_symlink_stores_its_target_as_data_and_dirs_have_two_links() {
        let mut a = Archive::new();
        a.add_symlink("bin", "usr/bin").unwrap();
        let bytes = a.write_newc();
        assert_eq!(&bytes[14..22], b"0000a1ff"); // S_IFLNK | 0777
        assert_eq!(&bytes[54..62], b"00000007"); // filesize = len("usr/bin")
        assert_eq!(&bytes[116..123], b"usr/bin");
        let mut d = Archive::new();
        d.add_dir("x", 0o700).unwrap();
        let bytes = d.write_newc();
        assert_eq!(&bytes[14..22], b"000041c0");
        assert_eq!(&bytes[38..46], b"00000002");
    }

    fn error_of(bytes: &[u8]) -> CpioError {
        read_newc(bytes).unwrap_err()
    }

    #[test]
    fn every_malformation_is_an_error_with_its_offset() {
        let mut a = Archive::new();
        a.add_file("a", 0o644, b"hi".to_vec()).unwrap();
        let good = a.write_newc();

        let mut bad = good.clone();
        bad[116..122].copy_from_slice(b"070707"); // odc magic on the trailer
        assert!(matches!(
            error_of(&bad),
            CpioError::BadMagic { offset: 116, .. }
        ));

        assert!(matches!(
            error_of(&good[..50]),
            CpioError::Truncated {
                offset: 0,
                what: "header",
                needed: 110,
                left: 50
            }
        ));
        assert!(matches!(
            error_of(&good[..111]),
            CpioError::Truncated { what: "name", .. }
        ));
        assert!(matches!(
            error_of(&good[..113]),
            CpioError::Truncated {
                offset: 112,
                what: "data",
                needed: 2,
                left: 1
            }
        ));
        assert!(matches!(
            error_of(&good[..116]),
            CpioError::Truncated { offset: 116, .. }
        ));

        let mut bad = good.clone();
        bad[54..62].copy_from_slice(b"0000000g");
        assert!(matches!(
            error_of(&bad),
            CpioError::BadHex {
                offset: 54,
                field: 6,
                ..
            }
        ));
        bad[54..62].copy_from_slice(b"+0000002");
        assert!(matches!(
            error_of(&bad),
            CpioError::BadHex { offset: 54, .. }
        ));

        let mut bad = good.clone();
        bad[111] = b'x'; // the name's NUL
        assert!(matches!(
            error_of(&bad),
            CpioError::BadName { offset: 110, .. }
        ));
        let mut bad = good.clone();
        bad[110] = 0xff;
        assert!(matches!(
            error_of(&bad),
            CpioError::BadName { offset: 110, .. }
        ));
        let mut bad = good.clone();
        bad[94..102].copy_from_slice(b"00000000"); // namesize 0
        assert!(matches!(
            error_of(&bad),
            CpioError::BadName { offset: 110, .. }
        ));

        let mut bad = good.clone();
        bad[14..22].copy_from_slice(b"000021a4"); // a character device
        assert!(matches!(
            error_of(&bad),
            CpioError::UnsupportedType { offset: 0, .. }
        ));

        let mut l = Archive::new();
        l.add_symlink("l", "t").unwrap();
        let mut bad = l.write_newc();
        bad[112] = 0xff;
        assert!(matches!(
            error_of(&bad),
            CpioError::BadTarget { offset: 112, .. }
        ));
        let mut bad = good.clone();
        bad[94..102].copy_from_slice(b"00000003"); // namesize 3 over "a\0\0": a NUL inside
        bad[112] = 0;
        assert_eq!(
            error_of(&bad),
            CpioError::BadName {
                offset: 110,
                what: "name holds a NUL before its end"
            }
        );
        let mut bad = l.write_newc();
        bad[112] = 0;
        assert!(matches!(
            error_of(&bad),
            CpioError::BadTarget { offset: 112, .. }
        ));
        assert!(error_of(&[]).to_string().contains("byte 0"));
    }

    #[test]
    fn what_newc_cannot_say_is_refused_and_changes_nothing() {
        let mut a = sample();
        let before = a.clone();
        let trailer = |p: &str| NameError::Trailer { path: p.into() };
        assert_eq!(
            a.add_file("TRAILER!!!", 0o644, vec![]),
            Err(trailer("TRAILER!!!"))
        );
        // Normalizing to it, or a parent it would imply, is the same name.
        assert_eq!(
            a.add_dir("x/../TRAILER!!!/", 0o755),
            Err(trailer("x/../TRAILER!!!/"))
        );
        assert_eq!(
            a.add_symlink("/TRAILER!!!/l", "t"),
            Err(trailer("/TRAILER!!!/l"))
        );
        assert!(matches!(
            a.add_file("bin/a\0b", 0o644, vec![]),
            Err(NameError::NulInName { .. })
        ));
        assert!(matches!(
            a.add_symlink("l", "us\0r"),
            Err(NameError::NulInTarget { .. })
        ));
        assert_eq!(a, before);
        // Below the top level it is an ordinary name.
        a.add_file("etc/TRAILER!!!", 0o644, vec![1]).unwrap();
        let read = read_newc(&a.write_newc()).unwrap();
        assert!(read.iter().any(|(p, _)| p == "etc/TRAILER!!!"));
    }

    #[test]
    fn an_archive_cut_inside_padding_is_truncated_within_the_input() {
        // Found by reading: a cut inside a name's padding sliced past the input's end.
        let mut a = Archive::new();
        a.add_dir("ab", 0o755).unwrap(); // 110 + "ab\0" = 113, padded to 116
        let bytes = a.write_newc();
        assert_eq!(
            error_of(&bytes[..113]),
            CpioError::Truncated {
                offset: 113,
                what: "name padding",
                needed: 3,
                left: 0
            }
        );
        let mut f = Archive::new();
        f.add_file("a", 0o644, b"h".to_vec()).unwrap(); // data at 112, padded to 116
        let bytes = f.write_newc();
        assert_eq!(
            error_of(&bytes[..114]),
            CpioError::Truncated {
                offset: 113,
                what: "data padding",
                needed: 3,
                left: 1
            }
        );
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            (0u32..0o10000).prop_map(|mode| Entry::Dir { mode }),
            (0u32..0o10000, proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(mode, data)| Entry::File { mode, data }),
            "[a-z/.]{0,12}".prop_map(|target| Entry::Symlink { target }),
        ]
    }

    proptest! {
        #[test]
        fn any_archive_round_trips(
            items in proptest::collection::vec(("[a-c]{1,2}(/[a-c]{1,2}){0,2}", arb_entry()), 0..12)
        ) {
            let mut a = Archive::new();
            for (path, entry) in &items {
                match entry.clone() {
                    Entry::Dir { mode } => a.add_dir(path, mode).unwrap(),
                    Entry::File { mode, data } => a.add_file(path, mode, data).unwrap(),
                    Entry::Symlink { target } => a.add_symlink(path, &target).unwrap(),
                }
            }
            let bytes = a.write_newc();
            prop_assert_eq!(bytes.len() % 4, 0);
            let read = read_newc(&bytes).unwrap();
            let want: Vec<(String, Entry)> =
                a.entries().map(|(p, e)| (p.to_owned(), e.clone())).collect();
            prop_assert_eq!(read, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = read_newc(&bytes);
        }
    }

    /// GNU cpio (an independent reader) lists and extracts what we wrote.
    #[test]
    fn gnu_cpio_reads_our_archive() {
        let probe = std::process::Command::new("cpio").arg("--version").output();
        if !probe.is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: no `cpio` on this host (apt-get install cpio)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("wedge-cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("a.cpio");
        std::fs::write(&archive, sample().write_newc()).unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "cd {} && cpio {} < a.cpio",
                    dir.display(),
                    args.join(" ")
                ))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let listed = run(&["-t", "--quiet"]);
        assert_eq!(listed, "bin\nbin/true\netc\netc/passwd\nlib64\nproc\n");
        run(&["-id", "--quiet", "--no-absolute-filenames"]);
        assert_eq!(std::fs::read(dir.join("bin/true")).unwrap(), b"\x7fELF");
        assert_eq!(
            std::fs::read_link(dir.join("lib64")).unwrap(),
            std::path::Path::new("usr/lib64")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
