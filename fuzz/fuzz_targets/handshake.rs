//! The build handshake (runtime/src/agent/build/handshake.rs): a child that dies half-way or writes
//! garbage must become a build error, never an agent crash. Any bytes decode to a message or to
//! the error for their form, and a message that decodes encodes back to the same bytes (the wire
//! format has one spelling per message). Generated messages encode to at most `MAX_MESSAGE` bytes
//! and decode back to themselves, their text cut to `MAX_TEXT` bytes at a character boundary.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use wedge_runtime::agent::build::handshake::{HandshakeError, MAX_MESSAGE, MAX_TEXT, Message};

#[derive(Arbitrary, Debug)]
enum Generated {
    InitPid(i32),
    Connected,
    Start,
    Failed(String, u16),
    ExecFailed(i32, String, u16),
}

// The first byte picks the check: even, the rest are received bytes (so a seed is a real message
// after one byte); odd, the rest generate a message to send.
fuzz_target!(|data: &[u8]| match data.split_first() {
    Some((kind, bytes)) if kind % 2 == 0 => check_bytes(bytes),
    Some((_, bytes)) => {
        if let Ok(generated) = Generated::arbitrary_take_rest(Unstructured::new(bytes)) {
            check_message(generated);
        }
    }
    None => {}
});

fn check_bytes(bytes: &[u8]) {
    match Message::decode(bytes) {
        Ok(message) => {
            assert_eq!(message.encode(), bytes, "{message:?} has two spellings");
        }
        Err(HandshakeError::Empty) => assert!(bytes.is_empty()),
        Err(HandshakeError::UnknownTag(tag)) => assert_eq!(Some(&tag), bytes.first()),
        Err(HandshakeError::Truncated { need, got, .. }) => {
            assert!(got < need && got == bytes.len() - 1, "{bytes:?}")
        }
        Err(HandshakeError::TrailingBytes { extra, .. }) => {
            assert!(extra >= 1 && extra < bytes.len(), "{bytes:?}")
        }
        Err(HandshakeError::NotUtf8 { tag }) => {
            let text = if tag == 'X' { &bytes[5..] } else { &bytes[1..] };
            assert!(std::str::from_utf8(text).is_err(), "{bytes:?}")
        }
    }
}

fn check_message(generated: Generated) {
    // Text past MAX_TEXT without a large input: repeat it.
    let long = |text: String, times: u16| text.repeat(1 + usize::from(times % 64));
    let message = match generated {
        Generated::InitPid(pid) => Message::InitPid(pid),
        Generated::Connected => Message::Connected,
        Generated::Start => Message::Start,
        Generated::Failed(text, times) => Message::Failed(long(text, times)),
        Generated::ExecFailed(errno, text, times) => Message::ExecFailed {
            errno,
            message: long(text, times),
        },
    };
    let bytes = message.encode();
    assert!(
        bytes.len() <= MAX_MESSAGE,
        "{} bytes for {message:?}",
        bytes.len()
    );
    let decoded = Message::decode(&bytes).unwrap_or_else(|e| panic!("{message:?}: {e}"));
    // The text that arrives: the longest prefix of what was sent that fits and is whole characters.
    let arrived = |sent: &str, got: &str| {
        assert!(
            got.len() <= MAX_TEXT && sent.starts_with(got),
            "{got:?} of {sent:?}"
        );
        let next = sent[got.len()..].chars().next().map_or(0, char::len_utf8);
        assert!(
            next == 0 || got.len() + next > MAX_TEXT,
            "cut early: {got:?} of {sent:?}"
        );
    };
    match (&message, &decoded) {
        (Message::Failed(sent), Message::Failed(got)) => arrived(sent, got),
        (
            Message::ExecFailed { errno, message },
            Message::ExecFailed {
                errno: got_errno,
                message: got,
            },
        ) => {
            assert_eq!(errno, got_errno);
            arrived(message, got);
        }
        (sent, got) => assert_eq!(sent, got),
    }
}
