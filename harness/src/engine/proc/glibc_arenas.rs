//! glibc's malloc arenas in another process, found and read from the outside: what the fork
//! pairing of chaos mode `syscall` watches (`engine::syscall_holds`).
//!
//! Guarantee: [`of_process`] returns only addresses that glibc's own bookkeeping vouches for (a
//! heap whose header points at the arena right after it; the main arena only as a member of the
//! closed ring of arenas), so a process that does not use glibc's malloc (musl, jemalloc, a
//! static binary without threads) yields none, and reading a word there never misleads.
//!
//! Why the arenas: a child made by `clone`/`clone3` from a multi-threaded process (not glibc's
//! `fork`, which takes every arena lock around the fork) inherits each arena's mutex in the state
//! it had at that instant; if another thread was inside `malloc` or `free` holding it, the child's
//! first allocation from that arena waits forever. This is how wedge-agent's in-process build
//! children die (their stranded futex sits at a 64 MiB boundary + `0x30`: a heap's arena).
//!
//! The layout, of glibc 2.26 to 2.41 on 64-bit (checked against Debian 12's 2.36 by the test
//! below, which reads this very process): every arena but the main one lives at the start of a
//! heap, a mapping aligned to `HEAP_MAX_SIZE` (64 MiB) that begins with a `heap_info` whose first
//! word (`ar_ptr`) is the arena's address, `0x30` past the heap's start; an arena
//! (`struct malloc_state`) begins with its mutex (an `int`: 0 free, 1 or 2 taken) and links to
//! the next arena at `0x870`, in a ring that runs through the main arena (in libc's data).
//! There is no symbol to find the main arena by (Debian's libc has no `.symtab`), hence the ring.

use procfs::process::{MMPermissions, MMapPath, Process};

use super::read_memory;

/// `HEAP_MAX_SIZE` on 64-bit: every non-main heap starts at a multiple of it.
pub const HEAP_ALIGN: u64 = 64 << 20;
/// Where a heap's arena starts: right after its `heap_info` (five words, padded to 16 bytes).
pub const ARENA_IN_HEAP: u64 = 0x30;
/// The offset of `malloc_state.next`: mutex, flags, have_fastchunks (12 bytes, padded to 16),
/// 10 fastbins, top, last_remainder, 254 bins, a 16-byte binmap.
pub const NEXT_IN_ARENA: u64 = 0x870;
/// More arenas than glibc ever makes (8 per CPU by default): a ring longer than this is not one.
const MOST_ARENAS: usize = 4096;

/// A mapping of the process, as far as finding arenas goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub kind: RegionKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// Readable, writable, anonymous: where heaps are.
    Anonymous,
    /// The writable data of `libc.so.*`: where the main arena is.
    LibcData,
    Other,
}

/// The largest libc data mapping scanned for the main arena (Debian 12's is 8 KiB).
const LIBC_DATA_AT_MOST: u64 = 1 << 20;

/// The arenas of process `pid` (each address is also its mutex's); empty when unreadable.
pub fn of_process(pid: i32) -> Vec<u64> {
    let Ok(maps) = Process::new(pid).and_then(|p| p.maps()) else {
        return Vec::new();
    };
    let rw = MMPermissions::READ | MMPermissions::WRITE;
    let regions: Vec<Region> = maps
        .iter()
        .map(|m| {
            let kind = match &m.pathname {
                _ if !m.perms.contains(rw) => RegionKind::Other,
                MMapPath::Anonymous => RegionKind::Anonymous,
                MMapPath::Path(p)
                    if p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("libc.so")) =>
                {
                    RegionKind::LibcData
                }
                _ => RegionKind::Other,
            };
            Region {
                start: m.address.0,
                end: m.address.1,
                kind,
            }
        })
        .collect();
    find(&regions, |addr, len| read_memory(pid, addr, len))
}

/// The arenas in `regions`, with `read` giving `len` bytes at an address of the process: the
/// heaps' arenas and, through their ring, the main arena; with no heap (one arena, or
/// `M_ARENA_MAX` 1), the main arena alone, found in libc's data as the arena whose `next` is
/// itself.
pub fn find(regions: &[Region], read: impl Fn(u64, usize) -> Option<Vec<u8>>) -> Vec<u64> {
    let word = |addr: u64| -> Option<u64> {
        let bytes = read(addr, 8)?;
        Some(u64::from_ne_bytes(bytes.try_into().ok()?))
    };
    let mut arenas: Vec<u64> = regions
        .iter()
        .filter(|r| r.kind == RegionKind::Anonymous && r.start % HEAP_ALIGN == 0)
        .filter(|r| word(r.start) == Some(r.start + ARENA_IN_HEAP))
        .map(|r| r.start + ARENA_IN_HEAP)
        .collect();
    match arenas.first() {
        Some(&first) => arenas.extend(ring_from(first, &arenas, word)),
        None => arenas.extend(lone_main_arena(regions, &read)),
    }
    arenas
}

/// The arenas on the ring from `first` that `known` lacks, if the ring closes there.
fn ring_from(first: u64, known: &[u64], word: impl Fn(u64) -> Option<u64>) -> Vec<u64> {
    let mut ring = Vec::new();
    let mut at = first;
    for _ in 0..MOST_ARENAS {
        match word(at + NEXT_IN_ARENA) {
            Some(next) if next == first => {
                ring.retain(|a| !known.contains(a));
                return ring;
            }
            Some(next) if next != 0 && !ring.contains(&next) => {
                ring.push(next);
                at = next;
            }
            _ => break,
        }
    }
    Vec::new()
}

/// The main arena when it is the only one: in libc's data, a mutex word (0, 1 or 2) whose
/// `next`, `NEXT_IN_ARENA` bytes on, is its own address.
fn lone_main_arena(
    regions: &[Region],
    read: &impl Fn(u64, usize) -> Option<Vec<u8>>,
) -> Option<u64> {
    let at = |bytes: &[u8], o: usize| -> u64 {
        u64::from_ne_bytes(bytes[o..o + 8].try_into().unwrap_or_default())
    };
    let next = NEXT_IN_ARENA as usize;
    regions
        .iter()
        .filter(|r| r.kind == RegionKind::LibcData && r.end - r.start <= LIBC_DATA_AT_MOST)
        .find_map(|r| {
            let bytes = read(r.start, (r.end - r.start) as usize)?;
            (0..bytes.len().saturating_sub(next + 8))
                .step_by(8)
                .find(|&o| at(&bytes, o + next) == r.start + o as u64 && at(&bytes, o) as u32 <= 2)
                .map(|o| r.start + o as u64)
        })
}

/// How far below a thread's pointer its arena pointer is looked for: the static TLS blocks of
/// the executable and of libc sit right below it (wedge-agent's is 0x260 bytes, Debian 12 libc's
/// 0x90); a larger executable TLS than this leaves the thread's arena unknown, never wrong.
pub const TLS_SCAN: u64 = 16 << 10;

/// The arena a thread of process `pid` allocates from (glibc's `thread_arena`), given the
/// thread's pointer `tp` (`fs_base` on x86-64) and stack pointer `sp`; `None` when no word below
/// the thread pointer holds one of `arenas`.
///
/// glibc keeps `thread_arena` in libc's static TLS block, which on x86-64 (TLS variant II) lies
/// below the thread pointer after the executable's block; no symbol gives its offset (Debian's
/// libc has no `.symtab`), so the words below the thread pointer are read nearest first, and the
/// first that equals an arena's address is taken for it. No other TLS word of glibc or of a Rust
/// program points at an arena's start. The scan stops at [`TLS_SCAN`] bytes, at the stack
/// pointer when that is below the thread pointer (a thread's TLS is at the top of its stack;
/// below the stack pointer are dead frames, which may hold any arena's address), and at the
/// first unreadable page.
pub fn of_thread(pid: i32, tp: u64, sp: u64, arenas: &[u64]) -> Option<u64> {
    let floor = tp.saturating_sub(TLS_SCAN);
    // Word-aligned, so that the words read are the words the program stores.
    let low = (if sp < tp && sp > floor { sp } else { floor } + 7) & !7;
    let mut top = tp;
    while top > low {
        let start = (top - 1) & !0xfff;
        let start = start.max(low);
        let bytes = read_memory(pid, start, (top - start) as usize)?;
        if let Some(a) = nearest_arena(&bytes, arenas) {
            return Some(a);
        }
        top = start;
    }
    None
}

/// The last 8-byte-aligned word of `bytes` (read from an aligned address) that is one of
/// `arenas`.
pub fn nearest_arena(bytes: &[u8], arenas: &[u64]) -> Option<u64> {
    bytes
        .chunks_exact(8)
        .rev()
        .map(|w| u64::from_ne_bytes(w.try_into().unwrap_or_default()))
        .find(|w| arenas.contains(w))
}

/// Those of `arenas` whose mutex is taken in process `pid` right now.
pub fn locked(pid: i32, arenas: &[u64]) -> Vec<u64> {
    arenas
        .iter()
        .copied()
        .filter(|&arena| {
            read_memory(pid, arena, 4)
                .and_then(|b| b.try_into().ok())
                .is_some_and(|b: [u8; 4]| u32::from_ne_bytes(b) != 0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A process's memory as a few words (a read must start at one of them).
    fn memory(words: &[(u64, u64)]) -> impl Fn(u64, usize) -> Option<Vec<u8>> + use<> {
        let m: HashMap<u64, u64> = words.iter().copied().collect();
        move |a, len| {
            let mut out = Vec::new();
            for i in (0..len as u64).step_by(8) {
                out.extend(m.get(&(a + i)).copied().unwrap_or(0).to_ne_bytes());
            }
            m.contains_key(&a).then(|| out[..len].to_vec())
        }
    }

    fn anon(start: u64) -> Region {
        Region {
            start,
            end: start + 0x21000,
            kind: RegionKind::Anonymous,
        }
    }

    #[test]
    fn heaps_vouched_for_by_their_header_and_the_closed_ring() {
        let (h1, h2, main) = (0x7f00_0000_0000, 0x7f00_0400_0000, 0x7f55_0000_1c60);
        let (a1, a2) = (h1 + ARENA_IN_HEAP, h2 + ARENA_IN_HEAP);
        let mem = memory(&[
            (h1, a1),
            (h2, a2),
            (a1 + NEXT_IN_ARENA, a2),
            (a2 + NEXT_IN_ARENA, main),
            (main + NEXT_IN_ARENA, a1),
            // Aligned, but its first word is not the arena after it: not a heap.
            (0x7f00_0800_0000, 42),
        ]);
        let regions = [h1, 0x7f00_0123_4000, h2, 0x7f00_0800_0000].map(anon);
        assert_eq!(find(&regions, &mem), vec![a1, a2, main]);
    }

    #[test]
    fn a_ring_that_does_not_close_adds_nothing() {
        let h = 0x7f00_0000_0000;
        let a = h + ARENA_IN_HEAP;
        let mem = memory(&[(h, a), (a + NEXT_IN_ARENA, 0x5555_0000), (0x5555_0870, 7)]);
        assert_eq!(find(&[anon(h)], &mem), vec![a]);
        assert_eq!(find(&[], &mem), Vec::<u64>::new());
    }

    #[test]
    fn a_lone_main_arena_is_found_in_libcs_data_by_its_self_link() {
        let data = 0x7f55_0000_0000;
        let main = data + 0xc60;
        let mut words = vec![(main, 1), (main + NEXT_IN_ARENA, main)];
        // Every word of the mapping readable; a decoy links to itself from a word that is no
        // mutex (a lock word is 0, 1 or 2).
        words.push((data + 0x100, 99));
        words.push((data + 0x100 + NEXT_IN_ARENA, data + 0x100));
        for o in (0..0x2000).step_by(8) {
            if !words.iter().any(|(a, _)| *a == data + o) {
                words.push((data + o, 0));
            }
        }
        let mem = memory(&words);
        let libc = Region {
            start: data,
            end: data + 0x2000,
            kind: RegionKind::LibcData,
        };
        assert_eq!(find(&[libc], &mem), vec![main]);
        let other = Region {
            kind: RegionKind::Other,
            ..libc
        };
        assert_eq!(find(&[other], &mem), Vec::<u64>::new());
    }

    #[test]
    fn finds_this_processs_own_arenas_and_sees_them_free() {
        // Threads that allocate while they live each get an arena of their own (glibc makes up
        // to 8 per CPU before it shares), so this process has heaps besides the main arena.
        let (ready, gate) = (std::sync::Barrier::new(5), std::sync::Barrier::new(5));
        std::thread::scope(|s| {
            for i in 0..4 {
                let (ready, gate) = (&ready, &gate);
                s.spawn(move || {
                    let kept = std::hint::black_box(vec![i as u8; 4000]);
                    ready.wait();
                    gate.wait();
                    drop(kept);
                });
            }
            ready.wait();
            let me = std::process::id() as i32;
            let arenas = of_process(me);
            gate.wait();
            let heaps = arenas.iter().filter(|a| *a % HEAP_ALIGN == ARENA_IN_HEAP);
            assert!(heaps.count() >= 1, "{arenas:x?}");
            let main = arenas.iter().filter(|a| *a % HEAP_ALIGN != ARENA_IN_HEAP);
            assert_eq!(
                main.count(),
                1,
                "the ring closes through the main arena: {arenas:x?}"
            );
            // Each mutex reads as one of glibc's lock states (0 free, 1 taken, 2 taken with
            // waiters); whether one is taken now is the test harness's other threads' business.
            for &a in &arenas {
                let w = read_memory(me, a, 4).expect("readable");
                assert!(u32::from_ne_bytes(w.try_into().unwrap()) <= 2);
            }
        });
    }

    #[test]
    fn the_nearest_arena_word_below_the_thread_pointer_is_the_threads() {
        let arenas = [0x7f00_0000_0030, 0x7f55_0000_1c60];
        let words = |ws: &[u64]| ws.iter().flat_map(|w| w.to_ne_bytes()).collect::<Vec<u8>>();
        // Read upwards to the thread pointer: the last word is nearest to it.
        let tls = words(&[arenas[1], 0, 5, arenas[0], 0x7f00_0000_0038, 0]);
        assert_eq!(nearest_arena(&tls, &arenas), Some(arenas[0]));
        // A word that is near an arena but not at its start is not one.
        assert_eq!(nearest_arena(&words(&[0x7f00_0000_0040, 1]), &arenas), None);
        assert_eq!(nearest_arena(&[], &arenas), None);
    }

    #[test]
    fn finds_the_arena_of_a_thread_of_this_process_from_its_thread_pointer() {
        let me = std::process::id() as i32;
        std::thread::spawn(move || {
            let mut tp = 0u64;
            // SAFETY: ARCH_GET_FS writes the calling thread's fs base to the given address, a
            // live u64.
            let rc =
                unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1003, std::ptr::addr_of_mut!(tp)) };
            assert_eq!(rc, 0);
            // Past the thread cache's largest size: served from this thread's arena.
            let chunk = std::hint::black_box(vec![7u8; 4000]);
            let at = chunk.as_ptr() as u64;
            // The chunk's size word: bit 2 (NON_MAIN_ARENA) says its arena heads its heap.
            let size =
                read_memory(me, at - 8, 8).map(|b| u64::from_ne_bytes(b.try_into().unwrap()));
            let arenas = of_process(me);
            let expected = if size.expect("readable") & 4 != 0 {
                (at & !(HEAP_ALIGN - 1)) + ARENA_IN_HEAP
            } else {
                *arenas
                    .iter()
                    .find(|a| *a % HEAP_ALIGN != ARENA_IN_HEAP)
                    .expect("main")
            };
            let sp = std::ptr::addr_of!(tp) as u64;
            assert_eq!(
                of_thread(me, tp, sp, &arenas),
                Some(expected),
                "{arenas:x?}"
            );
            drop(chunk);
        })
        .join()
        .expect("the thread's checks");
        // The stack pointer bounds the scan: a word below it is not looked at.
        let mut words = vec![0u64; 64];
        words[10] = 0x7f00_0000_0030;
        std::hint::black_box(&mut words);
        let (start, tp) = (words.as_ptr() as u64, words.as_ptr() as u64 + 64 * 8);
        let arenas = [0x7f00_0000_0030];
        assert_eq!(of_thread(me, tp, start + 32 * 8, &arenas), None);
        assert_eq!(of_thread(me, tp, start, &arenas), Some(arenas[0]));
        words[40] = 0x7f00_0000_0030;
        std::hint::black_box(&mut words);
        assert_eq!(of_thread(me, tp, start + 32 * 8, &arenas), Some(arenas[0]));
    }
}
