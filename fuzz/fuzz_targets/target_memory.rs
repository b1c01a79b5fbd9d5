//! The supervisor's decoding of an exec's path and argv out of a hostile target's memory, fed from
//! an arbitrary memory image through the shipped reader (`read_request_from`) and its default
//! limits. The image is whole pages, as `process_vm_readv` sees an address space: strings that
//! end at a page boundary or run into an unmapped page, argv arrays that straddle pages or are
//! never terminated, pointers into nowhere, strings past the length limits, argv past the count
//! and total limits, bytes that are not UTF-8.
//!
//! The result must equal the reference below, which reads the image byte by byte: the path, then
//! each argv pointer in turn (a NULL ends it), each string up to its NUL; a byte that is not mapped
//! is a fault; a string with no NUL within its budget, or one argument more than `max_args`, is too
//! long; an argument's budget is `max_arg_len`, cut to what `max_total` has left of the bytes read
//! so far (each with its NUL).
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nix::errno::Errno;
use wedge_runtime::supervisor::exec_decision::{
    ExecRequest, MemorySource, ReadLimits, Refusal, read_request_from,
};

const PAGE: u64 = 4096;
/// Where string `i` is placed: `(i + 1) * REGION`, far enough apart never to overlap.
const REGION: u64 = 1 << 24;
/// Where the argv array is placed.
const ARRAY_BASE: u64 = 0x7f00_0000_0000;
/// The longest filler of a string: past `max_arg_len` (128 KiB), so that limit is reachable.
const MAX_FILL: u32 = 136 * 1024;
/// The most argv slots: past `max_args` (4096).
const MAX_SLOTS: usize = 4200;

#[derive(Arbitrary, Debug)]
struct Input {
    strings: Vec<Text>,
    path: Pointer,
    argv: Option<Array>,
    /// Reads that would touch an unmapped page fail whole instead of coming back short.
    whole_reads: bool,
}

#[derive(Arbitrary, Debug)]
struct Text {
    bytes: Vec<u8>,
    /// A run of one byte after `bytes`, for long strings.
    fill: Option<(u8, u32)>,
    nul: bool,
    /// Placed to end at a page boundary (with an unmapped page after it), else at `lead` bytes
    /// into its region (with zeroed bytes after it up to the page end).
    at_page_end: bool,
    lead: u16,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Pointer {
    /// `delta` bytes into string `index`.
    Into {
        index: u8,
        delta: u8,
    },
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
struct Array {
    /// Slots, each a pointer repeated `1 + repeat` times.
    slots: Vec<(Pointer, u16)>,
    terminated: bool,
    /// Placed to end at a page boundary (nothing mapped after it), else `lead` bytes in.
    at_page_end: bool,
    lead: u16,
}

/// A memory image: mapped pages, everything else unmapped.
#[derive(Default)]
struct Image {
    pages: BTreeMap<u64, Box<[u8; PAGE as usize]>>,
    whole_reads: bool,
}

impl Image {
    fn write(&mut self, addr: u64, bytes: &[u8]) {
        for (i, chunk) in bytes.chunks(PAGE as usize).enumerate() {
            let mut at = addr + (i as u64) * PAGE;
            let mut rest = chunk;
            while !rest.is_empty() {
                let page = self
                    .pages
                    .entry(at / PAGE)
                    .or_insert_with(|| Box::new([0; 4096]));
                let offset = (at % PAGE) as usize;
                let take = rest.len().min(PAGE as usize - offset);
                page[offset..offset + take].copy_from_slice(&rest[..take]);
                rest = &rest[take..];
                at += take as u64;
            }
        }
    }

    fn byte(&self, addr: u64) -> Option<u8> {
        self.pages
            .get(&(addr / PAGE))
            .map(|p| p[(addr % PAGE) as usize])
    }
}

impl MemorySource for Image {
    fn read_at(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let mut n = 0;
        while n < buf.len() {
            let Some(at) = addr.checked_add(n as u64) else {
                break;
            };
            let Some(page) = self.pages.get(&(at / PAGE)) else {
                break;
            };
            let offset = (at % PAGE) as usize;
            let take = (buf.len() - n).min(PAGE as usize - offset);
            buf[n..n + take].copy_from_slice(&page[offset..offset + take]);
            n += take;
        }
        match n {
            0 => Err(Errno::EFAULT),
            n if n < buf.len() && self.whole_reads => Err(Errno::EFAULT),
            n => Ok(n),
        }
    }
}

fuzz_target!(|input: Input| {
    let (image, path_ptr, argv_ptr) = build(&input);
    let limits = ReadLimits::default();
    let got = read_request_from(&image, path_ptr, argv_ptr, &limits);
    let expected = reference(&image, path_ptr, argv_ptr, &limits);
    assert_eq!(
        got, expected,
        "path at {path_ptr:#x}, argv at {argv_ptr:#x}"
    );
});

/// Lays the input out in an image; returns it with the path and argv pointers.
fn build(input: &Input) -> (Image, u64, u64) {
    let mut image = Image {
        whole_reads: input.whole_reads,
        ..Image::default()
    };
    let mut starts = Vec::new();
    for (i, text) in input.strings.iter().take(16).enumerate() {
        let mut bytes = text.bytes.clone();
        if let Some((byte, len)) = text.fill {
            bytes.resize(bytes.len() + (len % MAX_FILL) as usize, byte);
        }
        if text.nul {
            bytes.push(0);
        }
        let region = (i as u64 + 1) * REGION;
        let start = if text.at_page_end {
            region + 64 * PAGE - (bytes.len() as u64 % (64 * PAGE))
        } else {
            region + u64::from(text.lead) % (2 * PAGE)
        };
        image.write(start, &bytes);
        starts.push(start);
    }
    let resolve = |p: Pointer| match p {
        Pointer::Into { index, delta } if !starts.is_empty() => {
            starts[index as usize % starts.len()] + u64::from(delta)
        }
        Pointer::Into { .. } => 0,
        Pointer::Raw(raw) => raw,
    };
    let path_ptr = resolve(input.path);
    let Some(array) = &input.argv else {
        return (image, path_ptr, 0);
    };
    let mut slots: Vec<u64> = Vec::new();
    for (pointer, repeat) in &array.slots {
        let n = (1 + usize::from(*repeat)).min(MAX_SLOTS - slots.len());
        slots.extend(std::iter::repeat_n(resolve(*pointer), n));
    }
    if array.terminated {
        slots.push(0);
    }
    let bytes: Vec<u8> = slots.iter().flat_map(|p| p.to_ne_bytes()).collect();
    let start = if array.at_page_end {
        ARRAY_BASE + 16 * PAGE - bytes.len() as u64
    } else {
        ARRAY_BASE + u64::from(array.lead) % (2 * PAGE)
    };
    image.write(start, &bytes);
    (image, path_ptr, start)
}

enum Short {
    Fault,
    TooLong,
}

/// The string at `addr`: its bytes up to the first NUL among the first `max`, a page at a time
/// (a byte at a time was the target's bottleneck on megabyte argvs).
fn string(image: &Image, addr: u64, max: usize) -> Result<Vec<u8>, Short> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        let page = image.pages.get(&(at / PAGE)).ok_or(Short::Fault)?;
        let offset = (at % PAGE) as usize;
        let bytes = &page[offset..offset + (PAGE as usize - offset).min(max - out.len())];
        if let Some(nul) = bytes.iter().position(|&b| b == 0) {
            out.extend_from_slice(&bytes[..nul]);
            return Ok(out);
        }
        out.extend_from_slice(bytes);
        // Mapped pages lie below 2^47, so this never wraps where a byte could follow.
        at = at.checked_add(bytes.len() as u64).ok_or(Short::Fault)?;
    }
    Err(Short::TooLong)
}

fn pointer(image: &Image, addr: u64) -> Option<u64> {
    let mut raw = [0u8; 8];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = image.byte(addr.checked_add(i as u64)?)?;
    }
    Some(u64::from_ne_bytes(raw))
}

/// The reference decoding (see the module docs).
fn reference(
    image: &Image,
    path: u64,
    argv: u64,
    limits: &ReadLimits,
) -> Result<ExecRequest, Refusal> {
    let refusal = |short, what| match short {
        Short::Fault => Refusal::Unreadable(Errno::EFAULT),
        Short::TooLong => Refusal::TooLong(what),
    };
    let path = string(image, path, limits.max_path).map_err(|s| refusal(s, "the path"))?;
    let mut args = Vec::new();
    let mut total = 0;
    for slot in 0.. {
        if argv == 0 {
            break;
        }
        let at = argv
            .checked_add(8 * slot)
            .ok_or(Refusal::Unreadable(Errno::EFAULT))?;
        let ptr = pointer(image, at).ok_or(Refusal::Unreadable(Errno::EFAULT))?;
        if ptr == 0 {
            break;
        }
        if args.len() == limits.max_args {
            return Err(Refusal::TooLong("argv"));
        }
        let budget = limits.max_arg_len.min(limits.max_total - total);
        let arg = string(image, ptr, budget).map_err(|s| refusal(s, "argv"))?;
        total += arg.len() + 1;
        args.push(String::from_utf8_lossy(&arg).into_owned());
    }
    Ok(ExecRequest {
        path: String::from_utf8_lossy(&path).into_owned(),
        argv: args,
    })
}
