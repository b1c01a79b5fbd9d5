//! The VM console framing (harness/src/vm/console.rs): the host decodes whatever a guest, its
//! kernel and a broken serial line put on the console, so any bytes in any chunking must decode
//! without a panic, with the decoder holding at most its line limit, to the same items however
//! the stream was split; every frame it yields must be exactly what `encode` writes (the whole
//! rest of an uncut line, from the marker, any text before it a line of its own), and every
//! other line the line's text, cut and cleaned.
//! And a round trip: frames `encode` wrote, between kernel log lines that hold no marker, split
//! anywhere, decode to the same frames in order and the same log lines.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use wedge::vm::console::{self, Decoder, Frame, FrameKind, Item, MARKER};

// The first byte picks the check: even, raw console bytes follow after a chunking byte and a
// line-limit byte (so a seed is a captured console after three bytes); odd, the rest generate a
// stream of frames and noise.
fuzz_target!(|data: &[u8]| match data.split_first() {
    Some((kind, rest)) if kind % 2 == 0 => {
        if let [chunking, limit, bytes @ ..] = rest {
            check_bytes(*chunking, *limit, bytes);
        }
    }
    Some((_, rest)) => {
        if let Ok(stream) = Stream::arbitrary_take_rest(Unstructured::new(rest)) {
            check_round_trip(stream);
        }
    }
    None => {}
});

/// Splits `bytes` into reads: all at once for seed 0, else lengths 1..=seed from a small LCG.
fn chunks(bytes: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![bytes];
    }
    let mut state = u32::from(seed);
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let len = 1 + (state >> 16) as usize % usize::from(seed);
        let (head, tail) = rest.split_at(len.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

/// Every item of `reads`, fed in turn, then `finish`; checks the buffer bound after each read.
fn decode(decoder: &mut Decoder, limit: usize, reads: &[&[u8]]) -> Vec<Item> {
    let mut items = Vec::new();
    for read in reads {
        items.extend(decoder.feed(read));
        assert!(
            decoder.buffered() <= limit,
            "{} bytes buffered, limit {limit}",
            decoder.buffered()
        );
    }
    items.extend(decoder.finish());
    assert_eq!(decoder.buffered(), 0, "finish leaves nothing behind");
    items
}

/// What a console line reads as: lossy UTF-8 without control characters but tabs.
fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .collect()
}

/// `encode`'s line for `frame`, without the newlines around it.
fn encoded(frame: &Frame) -> String {
    console::encode(frame.kind, &frame.payload)
        .trim_matches('\n')
        .to_string()
}

fn check_bytes(chunking: u8, limit: u8, bytes: &[u8]) {
    // Limit byte 0: the real limit (never reached here); else a small one, so lines get cut.
    let limit = if limit == 0 {
        console::MAX_LINE
    } else {
        usize::from(limit)
    };
    let items = decode(
        &mut Decoder::with_max_line(limit),
        limit,
        &chunks(bytes, chunking),
    );
    let whole = decode(&mut Decoder::with_max_line(limit), limit, &[bytes]);
    assert_eq!(items, whole, "the chunking changed what was decoded");

    // One item per line whose kept text is not empty, in order (two for a frame after other
    // text); the last, unended, line can only be text.
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let unended = lines.pop().unwrap_or_default();
    let mut items = items.into_iter();
    for raw in lines {
        let kept = &raw[..raw.len().min(limit)];
        if clean(kept).is_empty() {
            continue; // nothing to keep, and no frame: an uncut frame's line holds its marker
        }
        match items.next() {
            Some(Item::Frame(frame)) => check_frame_line(raw, limit, "", &frame),
            Some(Item::Line(line)) if line == clean(kept) => check_splat(&line),
            // Text before a frame on the same line comes first, as a line of its own.
            Some(Item::Line(prefix)) => match items.next() {
                Some(Item::Frame(frame)) => check_frame_line(raw, limit, &prefix, &frame),
                other => panic!("{prefix:?} is not line {raw:?}, and {other:?} follows"),
            },
            None => panic!("no item for line {raw:?}"),
        }
    }
    let kept = &unended[..unended.len().min(limit)];
    let last = (!clean(kept).is_empty()).then(|| Item::Line(clean(kept)));
    assert_eq!(items.next(), last, "the unended line");
    assert_eq!(items.next(), None);
}

/// A frame from `raw`: never from a cut line, exactly what `encode` writes for it at the end of
/// the line (then only the tty's carriage returns), and `prefix` the rest of the line's text.
fn check_frame_line(raw: &[u8], limit: usize, prefix: &str, frame: &Frame) {
    assert!(raw.len() <= limit, "{frame:?} from a line cut at {limit}");
    let text = String::from_utf8_lossy(raw);
    let ended = text.trim_end_matches('\r');
    let line = encoded(frame);
    assert!(
        ended.ends_with(&line),
        "{frame:?} is not what encode writes, from line {text:?}"
    );
    let before = &ended[..ended.len() - line.len()];
    assert_eq!(prefix, clean(before.as_bytes()), "the text before the frame");
}

/// A splat stays one whatever the kernel printed around it.
fn check_splat(line: &str) {
    if console::splat(line).is_some() {
        assert!(console::splat(&format!("[ 1.0] cpu0: {line} (tail)")).is_some());
    }
}

const KINDS: [FrameKind; 6] = FrameKind::ALL;

#[derive(Arbitrary, Debug)]
struct Piece {
    /// Kernel output before the frame; any `@` becomes `#`, so it holds no marker.
    noise: Vec<u8>,
    kind: u8,
    /// Sent as its JSON string (what the guest sends) or, with `raw`, as it is, `\n` removed.
    text: String,
    raw: bool,
}

#[derive(Arbitrary, Debug)]
struct Stream {
    pieces: Vec<Piece>,
    tail: Vec<u8>,
    /// The tty's newline translation: every `\n` the guest writes arrives as `\r\n`.
    onlcr: bool,
    chunking: u8,
}

fn quiet(noise: &[u8]) -> Vec<u8> {
    let noise: Vec<u8> = noise
        .iter()
        .map(|&b| if b == b'@' { b'#' } else { b })
        .collect();
    assert!(!noise.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()));
    noise
}

/// The lines a stretch of noise between frames reads as.
fn noise_lines(noise: &[u8]) -> impl Iterator<Item = Item> + '_ {
    noise
        .split(|&b| b == b'\n')
        .map(clean)
        .filter(|l| !l.is_empty())
        .map(Item::Line)
}

fn check_round_trip(stream: Stream) {
    let mut bytes = Vec::new();
    let mut want = Vec::new();
    for piece in &stream.pieces {
        let noise = quiet(&piece.noise);
        bytes.extend_from_slice(&noise);
        want.extend(noise_lines(&noise));
        let payload = if piece.raw {
            piece.text.replace('\n', "")
        } else {
            serde_json::to_string(&piece.text).expect("a string serialises")
        };
        let frame = Frame {
            kind: KINDS[usize::from(piece.kind) % KINDS.len()],
            payload,
        };
        let mut line = console::encode(frame.kind, &frame.payload);
        if stream.onlcr {
            line = line.replace('\n', "\r\n");
        }
        bytes.extend_from_slice(line.as_bytes());
        want.push(Item::Frame(frame));
    }
    let tail = quiet(&stream.tail);
    bytes.extend_from_slice(&tail);
    want.extend(noise_lines(&tail));

    let limit = console::MAX_LINE;
    let got = decode(
        &mut Decoder::new(),
        limit,
        &chunks(&bytes, stream.chunking),
    );
    assert_eq!(got, want, "from {:?}", String::from_utf8_lossy(&bytes));
}
