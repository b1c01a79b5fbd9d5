//! What the kernel reads from the first bytes of a file it is asked to execute: the `#!` line
//! (`fs/binfmt_script.c`) and an ELF file's `PT_INTERP` (`fs/binfmt_elf.c`). One copy for the exec
//! supervisor, which decides what a trapped exec really runs, and for the harness, which packs a
//! program's interpreter and loader into a VM image.
//!
//! Guarantee: both functions look only at the bytes they are handed (no filesystem, no system
//! call) and never guess. A `#!` line the kernel would refuse gives `None`; ELF program headers or
//! an interpreter name lying beyond the bytes handed in give an [`ElfError`], not a shorter name.
//! So a caller on a hot path reads a file's head once and asks both; nothing here reads further.

/// How much of a `#!` line the kernel reads (`BINPRM_BUF_SIZE`).
pub const BINPRM_BUF_SIZE: usize = 256;

/// A parsed `#!` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shebang {
    pub interpreter: String,
    pub argument: Option<String>,
}

/// Parses the `#!` line at the start of `head` exactly as the kernel's `binfmt_script` does:
/// only the first [`BINPRM_BUF_SIZE`] bytes count; the interpreter ends at a blank or NUL; the
/// rest of the line, blanks trimmed on both ends, is one optional argument. `None` where the
/// kernel fails with `ENOEXEC` (no interpreter, or one cut off by the buffer's end). A relative
/// interpreter is returned as written: the kernel opens it from the caller's cwd.
pub fn parse_shebang(head: &[u8]) -> Option<Shebang> {
    // The kernel's buffer: what lies past the file's end reads as NUL.
    let mut buf = [0u8; BINPRM_BUF_SIZE];
    let n = head.len().min(BINPRM_BUF_SIZE);
    buf[..n].copy_from_slice(&head[..n]);
    if &buf[..2] != b"#!" {
        return None;
    }
    let blank = |b: u8| b == b' ' || b == b'\t';
    let terminator = |b: u8| blank(b) || b == 0;
    let buf_end = BINPRM_BUF_SIZE - 1;
    let mut end = match buf.iter().position(|&b| b == b'\n') {
        Some(newline) => newline,
        None => {
            let first = (2..buf_end).find(|&i| !blank(buf[i]))?;
            // No blank or NUL after the name within the buffer: the name may be cut off.
            (first..buf_end).find(|&i| terminator(buf[i]))?;
            buf_end
        }
    };
    while end > 2 && blank(buf[end - 1]) {
        end -= 1;
    }
    let name_start = (2..end).find(|&i| !blank(buf[i]))?;
    let separator = (name_start..end).find(|&i| terminator(buf[i]));
    let name_end = separator.unwrap_or(end);
    let argument = separator
        .filter(|&s| buf[s] != 0)
        .and_then(|s| (s..end).find(|&i| !blank(buf[i])))
        .map(|start| {
            let stop = (start..end).find(|&i| buf[i] == 0).unwrap_or(end);
            String::from_utf8_lossy(&buf[start..stop]).into_owned()
        });
    Some(Shebang {
        interpreter: String::from_utf8_lossy(&buf[name_start..name_end]).into_owned(),
        argument,
    })
}

/// Why the `PT_INTERP` of some bytes cannot be read. Only little-endian ELF is read (the targets
/// wedge runs on); anything else is an error, never a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not ELF")]
    NotElf,
    #[error("truncated ELF header")]
    TruncatedHeader,
    #[error("not little-endian ELF")]
    NotLittleEndian,
    #[error("unknown ELF class")]
    UnknownClass,
    #[error("ELF headers lie beyond the bytes read")]
    HeadersBeyond,
    #[error("offset too large")]
    OffsetTooLarge,
    #[error("program header offset overflows")]
    HeaderOffsetOverflows,
    #[error("PT_INTERP overflows")]
    InterpOverflows,
    #[error("PT_INTERP lies beyond the bytes read")]
    InterpBeyond,
}

/// The `PT_INTERP` of an ELF file, from its head: `Ok(None)` when it has none (a static program
/// or a loader itself). An error when it is not little-endian ELF, or its program headers or
/// interpreter lie beyond `head`. The name ends at its first NUL, as the loader reads it.
pub fn elf_interpreter(head: &[u8]) -> Result<Option<String>, ElfError> {
    const PT_INTERP: u64 = 3;
    // (e_phoff, e_phentsize, e_phnum), and whether a program header has 64-bit fields.
    let (phoff, phentsize, phnum, wide) = program_headers(head)?;
    for i in 0..phnum {
        let at = phentsize
            .checked_mul(i)
            .and_then(|o| o.checked_add(phoff))
            .ok_or(ElfError::HeaderOffsetOverflows)?;
        if read(head, at, 4)? != PT_INTERP {
            continue;
        }
        // (p_offset, p_filesz) of the PT_INTERP header.
        let (offset, size) = if wide {
            (read(head, at + 8, 8)?, read(head, at + 32, 8)?)
        } else {
            (read(head, at + 4, 4)?, read(head, at + 16, 4)?)
        };
        let end = offset.checked_add(size).ok_or(ElfError::InterpOverflows)?;
        let bytes = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| head.get(s..e))
            .ok_or(ElfError::InterpBeyond)?;
        let name = bytes.split(|&b| b == 0).next().unwrap_or_default();
        return Ok(Some(String::from_utf8_lossy(name).into_owned()));
    }
    Ok(None)
}

/// Where one segment's bytes lie in the file and in memory (a `PT_LOAD` or `PT_DYNAMIC` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
}

/// What an ELF file's headers say beyond its `PT_INTERP`: enough to find the strings of its
/// dynamic section (as `ld.so` finds its own) without reading the section headers, which the
/// kernel and the loader never look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfLayout {
    /// `e_type == ET_DYN`: a shared object, a PIE, or a loader.
    pub shared_object: bool,
    /// Whether the file is 64-bit (its dynamic entries are 16 bytes, not 8).
    pub wide: bool,
    /// The `PT_DYNAMIC` segment, if any.
    pub dynamic: Option<Segment>,
    /// The `PT_LOAD` segments, in header order.
    pub loads: Vec<Segment>,
}

/// The most `PT_LOAD` headers kept: real files have 2 to 5; more is not a loader anyone ships.
const MAX_LOADS: usize = 16;

/// The layout of an ELF file from its head, under the same rules as [`elf_interpreter`]: an
/// error, never a guess, when a header lies beyond `head`.
pub fn elf_layout(head: &[u8]) -> Result<ElfLayout, ElfError> {
    const PT_LOAD: u64 = 1;
    const PT_DYNAMIC: u64 = 2;
    const ET_DYN: u64 = 3;
    let (phoff, phentsize, phnum, wide) = program_headers(head)?;
    let mut layout = ElfLayout {
        shared_object: read(head, 16, 2)? == ET_DYN,
        wide,
        dynamic: None,
        loads: Vec::new(),
    };
    for i in 0..phnum {
        let at = phentsize
            .checked_mul(i)
            .and_then(|o| o.checked_add(phoff))
            .ok_or(ElfError::HeaderOffsetOverflows)?;
        let p_type = read(head, at, 4)?;
        if p_type != PT_LOAD && p_type != PT_DYNAMIC {
            continue;
        }
        let segment = if wide {
            Segment {
                offset: read(head, at + 8, 8)?,
                vaddr: read(head, at + 16, 8)?,
                filesz: read(head, at + 32, 8)?,
            }
        } else {
            Segment {
                offset: read(head, at + 4, 4)?,
                vaddr: read(head, at + 8, 4)?,
                filesz: read(head, at + 16, 4)?,
            }
        };
        if p_type == PT_DYNAMIC {
            layout.dynamic.get_or_insert(segment);
        } else if layout.loads.len() < MAX_LOADS {
            layout.loads.push(segment);
        }
    }
    Ok(layout)
}

impl ElfLayout {
    /// The file offset of the byte mapped at `vaddr`, through the `PT_LOAD` segment that maps it
    /// from the file; `None` when none does.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads.iter().find_map(|load| {
            let within = vaddr.checked_sub(load.vaddr)?;
            (within < load.filesz).then(|| load.offset.checked_add(within))?
        })
    }

    /// `(DT_STRTAB, DT_SONAME)` read from the bytes of the dynamic section, up to its `DT_NULL`:
    /// the address of the string table and the offset of the `SONAME` in it. `None` when either
    /// is missing from the bytes handed in.
    pub fn soname_ref(&self, dynamic: &[u8]) -> Option<(u64, u64)> {
        const DT_NULL: u64 = 0;
        const DT_STRTAB: u64 = 5;
        const DT_SONAME: u64 = 14;
        let width = if self.wide { 8 } else { 4 };
        let (mut strtab, mut soname) = (None, None);
        for entry in dynamic.chunks_exact(2 * width) {
            let tag = read(entry, 0, width).ok()?;
            let value = read(entry, width as u64, width).ok()?;
            match tag {
                DT_NULL => break,
                DT_STRTAB => strtab = strtab.or(Some(value)),
                DT_SONAME => soname = soname.or(Some(value)),
                _ => {}
            }
        }
        strtab.zip(soname)
    }
}

/// Whether `soname` is the `DT_SONAME` of a dynamic loader: glibc's `ld-linux*.so.N` (x86_64,
/// i386, x32, arm, aarch64), `ld64.so.N` (ppc64, s390x), `ld.so.N` (mips, older ports), and musl's
/// `ld-musl-ARCH.so.1`. Shared libraries and executables do not take these names.
pub fn is_loader_soname(soname: &[u8]) -> bool {
    [b"ld-linux".as_slice(), b"ld-musl-", b"ld64.so.", b"ld.so."]
        .iter()
        .any(|prefix| soname.starts_with(prefix))
}

/// `(e_phoff, e_phentsize, e_phnum, 64-bit)` of little-endian ELF.
fn program_headers(head: &[u8]) -> Result<(u64, u64, u64, bool), ElfError> {
    if !head.starts_with(b"\x7fELF") {
        return Err(ElfError::NotElf);
    }
    let class = *head.get(4).ok_or(ElfError::TruncatedHeader)?;
    if head.get(5) != Some(&1) {
        return Err(ElfError::NotLittleEndian);
    }
    match class {
        2 => Ok((
            read(head, 32, 8)?,
            read(head, 54, 2)?,
            read(head, 56, 2)?,
            true,
        )),
        1 => Ok((
            read(head, 28, 4)?,
            read(head, 42, 2)?,
            read(head, 44, 2)?,
            false,
        )),
        _ => Err(ElfError::UnknownClass),
    }
}

/// A little-endian unsigned field of `width` bytes at `at`.
fn read(head: &[u8], at: u64, width: usize) -> Result<u64, ElfError> {
    let start = usize::try_from(at).map_err(|_| ElfError::OffsetTooLarge)?;
    let bytes = start
        .checked_add(width)
        .and_then(|end| head.get(start..end))
        .ok_or(ElfError::HeadersBeyond)?;
    Ok(bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 64-bit little-endian ELF header with one program header of type `p_type` whose
    /// data (`interp`) follows it.
    fn elf64(p_type: u32, interp: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        f[64..68].copy_from_slice(&p_type.to_le_bytes());
        f[72..80].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        f[96..104].copy_from_slice(&(interp.len() as u64).to_le_bytes()); // p_filesz
        f.extend_from_slice(interp);
        f
    }

    #[test]
    fn pt_interp_is_read_up_to_its_nul() {
        let f = elf64(3, b"/lib/ld.so\0");
        assert_eq!(elf_interpreter(&f), Ok(Some("/lib/ld.so".into())));
        assert_eq!(elf_interpreter(&elf64(1, b"/lib/ld.so\0")), Ok(None));
    }

    #[test]
    fn nothing_beyond_the_head_is_guessed() {
        let f = elf64(3, b"/lib/ld.so\0");
        assert_eq!(
            elf_interpreter(&f[..f.len() - 1]),
            Err(ElfError::InterpBeyond)
        );
        assert_eq!(elf_interpreter(&f[..100]), Err(ElfError::HeadersBeyond));
        assert_eq!(elf_interpreter(&f[..4]), Err(ElfError::TruncatedHeader));
        assert_eq!(elf_interpreter(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        let mut big_endian = f.clone();
        big_endian[5] = 2;
        assert_eq!(elf_interpreter(&big_endian), Err(ElfError::NotLittleEndian));
    }

    /// A 64-bit ET_DYN file: one PT_LOAD mapping file offset 0x100 at 0x1100, one PT_DYNAMIC
    /// at offset 0x40 + 2 * 56 holding DT_STRTAB 0x1100, DT_SONAME `soname_at`, DT_NULL.
    fn shared_object(soname_at: u64) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 2 * 56];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[16..18].copy_from_slice(&3u16.to_le_bytes()); // e_type = ET_DYN
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        let dynamic_at = f.len() as u64;
        // (p_type, p_offset, p_vaddr, p_filesz)
        for (i, (ty, off, vaddr, size)) in
            [(1u32, 0x100u64, 0x1100u64, 0x40u64), (2, dynamic_at, 0, 48)]
                .into_iter()
                .enumerate()
        {
            let at = 64 + 56 * i;
            f[at..at + 4].copy_from_slice(&ty.to_le_bytes());
            f[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            f[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            f[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        }
        for (tag, value) in [(5u64, 0x1100u64), (14, soname_at), (0, 0)] {
            f.extend_from_slice(&tag.to_le_bytes());
            f.extend_from_slice(&value.to_le_bytes());
        }
        f
    }

    #[test]
    fn the_soname_is_found_as_the_loader_finds_it() {
        let f = shared_object(7);
        let layout = elf_layout(&f).unwrap();
        assert!(layout.shared_object && layout.wide);
        let dynamic = layout.dynamic.unwrap();
        let start = dynamic.offset as usize;
        let entries = &f[start..start + dynamic.filesz as usize];
        assert_eq!(layout.soname_ref(entries), Some((0x1100, 7)));
        assert_eq!(layout.file_offset(0x1100 + 7), Some(0x107));
        assert_eq!(
            layout.file_offset(0x1140),
            None,
            "past the segment's file bytes"
        );
        assert_eq!(layout.file_offset(0x10ff), None);
        // Without DT_SONAME before DT_NULL there is none.
        assert_eq!(layout.soname_ref(&entries[..16]), None);
        assert_eq!(elf_layout(&f[..100]), Err(ElfError::HeadersBeyond));
    }

    #[test]
    fn only_loader_names_are_loaders() {
        for name in [
            "ld-linux-x86-64.so.2",
            "ld-linux.so.2",
            "ld64.so.2",
            "ld-musl-x86_64.so.1",
        ] {
            assert!(is_loader_soname(name.as_bytes()), "{name}");
        }
        for name in ["libz.so.1", "libc.so.6", "", "ld", "libld-linux.so"] {
            assert!(!is_loader_soname(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn a_shebang_splits_as_the_kernel_splits_it() {
        let line = parse_shebang(b"#! /usr/bin/env  python3 -u \nprint()\n").unwrap();
        assert_eq!(line.interpreter, "/usr/bin/env");
        assert_eq!(line.argument.as_deref(), Some("python3 -u"));
        assert_eq!(parse_shebang(b"\x7fELF"), None);
        assert_eq!(parse_shebang(b"#!\n"), None, "no interpreter");
    }
}
