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
    if !head.starts_with(b"\x7fELF") {
        return Err(ElfError::NotElf);
    }
    let class = *head.get(4).ok_or(ElfError::TruncatedHeader)?;
    if head.get(5) != Some(&1) {
        return Err(ElfError::NotLittleEndian);
    }
    // (e_phoff, e_phentsize, e_phnum), and whether a program header has 64-bit fields.
    let (phoff, phentsize, phnum, wide) = match class {
        2 => (
            read(head, 32, 8)?,
            read(head, 54, 2)?,
            read(head, 56, 2)?,
            true,
        ),
        1 => (
            read(head, 28, 4)?,
            read(head, 42, 2)?,
            read(head, 44, 2)?,
            false,
        ),
        _ => return Err(ElfError::UnknownClass),
    };
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

    #[test]
    fn a_shebang_splits_as_the_kernel_splits_it() {
        let line = parse_shebang(b"#! /usr/bin/env  python3 -u \nprint()\n").unwrap();
        assert_eq!(line.interpreter, "/usr/bin/env");
        assert_eq!(line.argument.as_deref(), Some("python3 -u"));
        assert_eq!(parse_shebang(b"\x7fELF"), None);
        assert_eq!(parse_shebang(b"#!\n"), None, "no interpreter");
    }
}
