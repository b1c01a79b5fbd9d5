//! The guest's serial console as a channel: the guest writes framed messages (its greeting, each
//! finished trial's record, kernel messages, the end of the run) between the kernel's own lines;
//! the host splits the byte stream back into frames and everything else.
//!
//! Guarantees:
//! - A frame is accepted only whole and intact: its marker, kind, payload length and FNV-1a
//!   checksum all agree. A partial line, garbage, a line the kernel broke in two, or a guest that
//!   died mid-record never yields a frame; it is kept as console text instead.
//! - Bytes are never lost: everything that is not a frame is returned as console lines, so a
//!   diagnosis can quote the guest's last words.
//! - Kernel splats (BUG, Oops, WARNING, hung task, RCU stall, soft/hard lockup, panic) are
//!   recognised in console lines and in forwarded kernel messages alike.
//!
//! A frame is one line: `@@wedge <kind> <length> <checksum> <payload>`. The payload is one line
//! of JSON (serde never writes a raw newline), `length` its size in bytes, `checksum` its FNV-1a
//! 64 in hex. The guest writes each frame with one `write` from one thread; the kernel may still
//! print in between, which the checksum catches.
//!
//! Why no crate: the channel is a console the kernel writes its own lines into, so a frame must
//! be printable text that survives being interleaved with, or broken by, kernel output, and be
//! found again in a stream of arbitrary bytes. Byte-stuffing framings (`cobs`, SLIP as in
//! `pamoja-serial`) assume the line is theirs alone and binary, and line or length codecs
//! (`tokio-util`'s `LinesCodec`, `LengthDelimitedCodec`) have no way to tell a torn line from an
//! intact one. What is left is a marker, a length and a checksum in a line of text, small enough
//! to check by eye; only the checksum is a crate's (`fnv`).

use serde::{Deserialize, Serialize};

/// What starts every frame.
pub const MARKER: &str = "@@wedge ";

/// The kinds of frame the guest sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// The guest is up and about to run trials: its kernel and CPUs.
    Hello,
    /// One finished trial.
    Record,
    /// A kernel message the guest read from `/dev/kmsg`.
    Kmsg,
    /// The guest's kernel probe report (`wedge probe` in the guest), before any trial.
    Probes,
    /// Every trial ran; nothing follows but the power-off.
    Done,
    /// The guest cannot run the plan (bad plan, a mount that failed): the reason.
    Fatal,
}

impl FrameKind {
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Hello => "hello",
            FrameKind::Record => "record",
            FrameKind::Kmsg => "kmsg",
            FrameKind::Probes => "probes",
            FrameKind::Done => "done",
            FrameKind::Fatal => "fatal",
        }
    }

    /// Every kind, in the order the protocol lists them.
    pub const ALL: [FrameKind; 6] = [
        FrameKind::Hello,
        FrameKind::Record,
        FrameKind::Kmsg,
        FrameKind::Probes,
        FrameKind::Done,
        FrameKind::Fatal,
    ];

    fn parse(s: &str) -> Option<FrameKind> {
        FrameKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A frame as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: String,
}

/// The guest's greeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// `uname -r` in the guest.
    pub kernel: String,
    /// CPUs the guest sees.
    pub cpus: usize,
    pub wedge_version: String,
}

/// A kernel message, forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kmsg {
    /// syslog level, 0 (emergency) to 7 (debug).
    pub level: u8,
    pub text: String,
}

/// The end of a guest's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// Trials the guest ran (and sent a record for).
    pub trials: u64,
    /// The guest's uptime at its end (`/proc/uptime`; under instruction counting, virtual time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
}

/// FNV-1a, 64 bits: enough to tell a torn line from an intact one.
fn checksum(bytes: &[u8]) -> u64 {
    use std::hash::Hasher as _;
    let mut h = fnv::FnvHasher::default();
    h.write(bytes);
    h.finish()
}

/// The line (with its newline) that carries `payload` as a `kind` frame. A payload holding a
/// newline cannot be framed; the caller serialises to one line.
pub fn encode(kind: FrameKind, payload: &str) -> String {
    debug_assert!(!payload.contains('\n'), "frame payloads are one line");
    format!(
        "\n{MARKER}{} {} {:016x} {payload}\n",
        kind.name(),
        payload.len(),
        checksum(payload.as_bytes())
    )
}

/// Parses one console line as a frame, if it is an intact one. The marker may follow other
/// text on the line (a kernel message without its newline).
pub fn parse_frame(line: &str) -> Option<Frame> {
    find_frame(line).map(|(_, frame)| frame)
}

/// Marker occurrences on one line that get a full check: the real frame's marker is the first
/// on its line but for stray kernel text, and the bound keeps a hostile line of markers from
/// costing a checksum of the line per marker.
const MARKERS_TRIED: usize = 8;

/// The first intact frame on `line`, with the byte offset its marker starts at. A frame runs
/// to the end of its line, so a marker inside a frame's payload is never mistaken for one.
fn find_frame(line: &str) -> Option<(usize, Frame)> {
    line.match_indices(MARKER)
        .take(MARKERS_TRIED)
        .find_map(|(at, _)| Some((at, parse_at(&line[at + MARKER.len()..])?)))
}

/// The frame whose header and payload follow a marker, if exactly what [`encode`] writes: the
/// length in plain decimal and the checksum in 16 lower-case hex digits, both matching the
/// payload. A laxer spelling (`+12`, `012`, `ABC`) would be a line the encoder never wrote.
fn parse_at(rest: &str) -> Option<Frame> {
    let mut parts = rest.splitn(4, ' ');
    let kind = FrameKind::parse(parts.next()?)?;
    let len_text = parts.next()?;
    let sum_text = parts.next()?;
    let payload = parts.next()?;
    let len = len_text
        .parse::<usize>()
        .ok()
        .filter(|l| l.to_string() == len_text)?;
    let sum = u64::from_str_radix(sum_text, 16)
        .ok()
        .filter(|s| format!("{s:016x}") == sum_text)?;
    (payload.len() == len && checksum(payload.as_bytes()) == sum).then(|| Frame {
        kind,
        payload: payload.to_string(),
    })
}

/// What the decoder made of some bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Frame(Frame),
    /// A console line that is not a frame (kernel output, a torn frame), without its newline.
    Line(String),
}

/// Splits a console byte stream into frames and lines, across reads of any size. It holds at
/// most one line's worth of bytes ([`Decoder::buffered`] never exceeds its line limit).
#[derive(Debug)]
pub struct Decoder {
    partial: Vec<u8>,
    /// The line in `partial` lost bytes at the limit: it is text, never a frame (its kept part
    /// could pass for one while the guest wrote something else).
    cut: bool,
    max_line: usize,
}

/// Longest console line kept whole by default; a longer one is cut (serial output has no bound
/// otherwise). A frame is far smaller: a trial record is a few kilobytes.
pub const MAX_LINE: usize = 4 << 20;

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::with_max_line(MAX_LINE)
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// A decoder that keeps at most `max_line` bytes of a line. The limit is a parameter so
    /// tests and the fuzz target reach the cut with small inputs.
    pub fn with_max_line(max_line: usize) -> Decoder {
        Decoder {
            partial: Vec::new(),
            cut: false,
            max_line,
        }
    }

    /// Bytes held for the line not yet ended: at most the line limit.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Feeds bytes as they came; returns every item completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Item> {
        let mut items = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.partial);
                line_items(&line, std::mem::take(&mut self.cut), &mut items);
            } else if self.partial.len() < self.max_line {
                self.partial.push(b);
            } else {
                self.cut = true;
            }
        }
        items
    }

    /// The stream ended: whatever was left without a newline, as a line (never a frame: a
    /// frame always ends with its newline, so this is a guest that died mid-write).
    pub fn finish(&mut self) -> Option<Item> {
        let rest = std::mem::take(&mut self.partial);
        self.cut = false;
        let text = clean(&rest);
        (!text.is_empty()).then_some(Item::Line(text))
    }
}

/// A serial line as text: `\r` from the tty's newline translation and other control bytes
/// dropped, invalid UTF-8 replaced.
fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .collect()
}

/// The items of one ended console line: its text, or an intact frame with the text before its
/// marker (kernel output that lost its newline) as a line of its own.
fn line_items(line: &[u8], cut: bool, items: &mut Vec<Item>) {
    // A frame is checked on the bytes as they came, never on the cleaned text: its checksum
    // covers the payload exactly, control characters included, and a line that only cleaning
    // makes look intact was not written by the encoder. Only the tty's `\r` before the newline
    // is not the encoder's.
    let raw = String::from_utf8_lossy(line);
    let found = (!cut)
        .then(|| find_frame(&raw).or_else(|| raw.strip_suffix('\r').and_then(find_frame)))
        .flatten();
    let (text, frame) = match found {
        Some((at, frame)) => (clean(raw[..at].as_bytes()), Some(frame)),
        None => (clean(line), None),
    };
    if !text.is_empty() {
        items.push(Item::Line(text));
    }
    items.extend(frame.map(Item::Frame));
}

/// Whether a kernel line reports a kernel bug or a stall, and which kind.
pub fn splat(line: &str) -> Option<&'static str> {
    const PATTERNS: &[(&str, &str)] = &[
        ("Kernel panic", "panic"),
        ("BUG:", "BUG"),
        ("Oops:", "oops"),
        ("WARNING:", "WARNING"),
        ("blocked for more than", "hung task"),
        ("rcu_sched self-detected stall", "RCU stall"),
        ("rcu: INFO: rcu_preempt", "RCU stall"),
        ("detected stalls on CPUs", "RCU stall"),
        ("soft lockup", "soft lockup"),
        ("hard LOCKUP", "hard lockup"),
        ("general protection fault", "general protection fault"),
    ];
    PATTERNS
        .iter()
        .find(|(p, _)| line.contains(p))
        .map(|(_, kind)| *kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(items: &[Item]) -> Vec<&Frame> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Frame(f) => Some(f),
                Item::Line(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_frame_survives_any_split_of_the_stream() {
        let payload = r#"{"trial":3,"reason":"ünïcode and spaces"}"#;
        let mut stream = b"[    0.5] booting\r\n".to_vec();
        stream.extend(
            encode(FrameKind::Record, payload)
                .replace('\n', "\r\n")
                .bytes(),
        );
        stream.extend(b"tail without newline");
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let mut d = Decoder::new();
            let mut items = Vec::new();
            for part in stream.chunks(chunk) {
                items.extend(d.feed(part));
            }
            items.extend(d.finish());
            assert_eq!(
                items,
                vec![
                    Item::Line("[    0.5] booting".into()),
                    Item::Frame(Frame {
                        kind: FrameKind::Record,
                        payload: payload.into()
                    }),
                    Item::Line("tail without newline".into()),
                ],
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn a_torn_or_corrupted_frame_is_a_line_not_a_frame() {
        let good = encode(FrameKind::Done, r#"{"trials":2}"#);
        let good = good.trim();
        // The kernel printed in the middle of the frame.
        let torn = format!(
            "{}[ 3.1] random: crng init done{}",
            &good[..20],
            &good[20..]
        );
        // One byte of the payload changed.
        let flipped = good.replace("2}", "3}");
        // Cut short: the guest died mid-write.
        let short = &good[..good.len() - 3];
        for bad in [
            torn.as_str(),
            flipped.as_str(),
            short,
            "@@wedge record x y {}",
        ] {
            assert_eq!(parse_frame(bad), None, "{bad}");
        }
        let mut d = Decoder::new();
        assert!(d.feed(short.as_bytes()).is_empty());
        assert_eq!(d.finish(), Some(Item::Line(short.to_string())));
        assert_eq!(frames(&d.feed(b"\n\n\n")).len(), 0);
    }

    #[test]
    fn a_frame_after_kernel_text_on_the_same_line_is_found() {
        let line = format!("[ 1.0] foo{}", encode(FrameKind::Hello, "{}").trim_start());
        let mut d = Decoder::new();
        let items = d.feed(line.as_bytes());
        assert_eq!(frames(&items)[0].kind, FrameKind::Hello);
        // The kernel's text is kept, as a line of its own before the frame.
        assert_eq!(items[0], Item::Line("[ 1.0] foo".into()));
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn a_frame_after_a_stray_marker_is_found_and_one_inside_a_payload_is_not() {
        let inner = encode(FrameKind::Done, "{}");
        let payload = serde_json::to_string(inner.trim()).unwrap();
        let line = format!(
            "@@wedge junk {}",
            encode(FrameKind::Record, &payload).trim_start()
        );
        let items = Decoder::new().feed(line.as_bytes());
        assert_eq!(
            items,
            vec![
                Item::Line("@@wedge junk ".into()),
                Item::Frame(Frame {
                    kind: FrameKind::Record,
                    payload
                })
            ]
        );
    }

    #[test]
    fn only_the_encoders_spelling_of_a_header_is_a_frame() {
        let good = encode(FrameKind::Done, "{}");
        let good = good.trim();
        assert!(parse_frame(good).is_some());
        let sum = good.split(' ').nth(3).unwrap();
        for bad in [
            good.replacen(" 2 ", " +2 ", 1),
            good.replacen(" 2 ", " 02 ", 1),
            good.replacen(sum, &sum.to_uppercase(), 1),
            good.replacen(sum, sum.trim_start_matches('0'), 1),
            good.replacen(sum, &format!("0{sum}"), 1),
        ] {
            if bad != good {
                assert_eq!(parse_frame(&bad), None, "{bad}");
            }
        }
    }

    #[test]
    fn garbage_is_kept_as_text_and_never_panics() {
        let mut d = Decoder::new();
        let junk: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let items = d.feed(&junk);
        assert!(frames(&items).is_empty());
        assert!(
            items
                .iter()
                .all(|i| matches!(i, Item::Line(l) if !l.contains('\r')))
        );
    }

    #[test]
    fn a_long_line_is_cut_at_the_limit_and_never_buffered_past_it() {
        let mut d = Decoder::with_max_line(8);
        assert!(d.feed(b"0123456789abcdef").is_empty());
        assert_eq!(d.buffered(), 8);
        assert_eq!(d.feed(b"xyz\nnext"), vec![Item::Line("01234567".into())]);
        assert_eq!(d.buffered(), 4);
        assert_eq!(Decoder::new().max_line, MAX_LINE);
    }

    #[test]
    fn a_cut_line_is_never_a_frame() {
        // The kept part is an intact frame, but the guest wrote more on that line.
        let frame = encode(FrameKind::Done, "{}");
        let frame = frame.trim();
        let mut d = Decoder::with_max_line(frame.len());
        let items = d.feed(format!("{frame}tail\n{frame}\n").as_bytes());
        assert_eq!(items[0], Item::Line(frame.to_string()));
        assert!(matches!(items[1], Item::Frame(_)), "the next line is whole");
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn a_payload_with_control_characters_is_still_a_frame() {
        // Found by the vm_console fuzz target: cleaning the line first broke the checksum.
        let line = encode(FrameKind::Record, "}\0\u{5}0m");
        let mut d = Decoder::new();
        assert_eq!(
            d.feed(line.as_bytes()),
            vec![Item::Frame(Frame {
                kind: FrameKind::Record,
                payload: "}\0\u{5}0m".into()
            })]
        );
        // Found next: NULs inside the marker made a frame only once cleaned.
        let torn = encode(FrameKind::Fatal, "ab").replacen("@@w", "@@w\0\0", 1);
        assert!(matches!(&d.feed(torn.as_bytes())[..], [Item::Line(_)]));
        let crlf = encode(FrameKind::Kmsg, "a\rb").replace('\n', "\r\n");
        assert_eq!(
            d.feed(crlf.as_bytes()),
            vec![Item::Frame(Frame {
                kind: FrameKind::Kmsg,
                payload: "a\rb".into()
            })]
        );
    }

    #[test]
    fn splats_are_named() {
        assert_eq!(
            splat("[ 5.2] BUG: kernel NULL pointer dereference"),
            Some("BUG")
        );
        assert_eq!(
            splat("INFO: task foo:12 blocked for more than 120 seconds."),
            Some("hung task")
        );
        assert_eq!(
            splat("watchdog: BUG: soft lockup - CPU#0 stuck for 22s!"),
            Some("BUG")
        );
        assert_eq!(
            splat("Kernel panic - not syncing: Attempted to kill init!"),
            Some("panic")
        );
        assert_eq!(splat("[ 0.1] Linux version 6.1.0"), None);
    }
}
