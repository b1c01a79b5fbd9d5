//! The typed handshake between the builder and the processes it clones.
//!
//! Every message the build exchanges with its intermediate and init processes is one [`Message`],
//! and each side decodes what it receives with [`Message::decode`], which rejects every malformed
//! input with its own [`HandshakeError`] and never panics: a child that dies half-way or writes
//! garbage becomes a build error, not an agent crash.
//!
//! The conversation, one channel per hop so messages cannot overtake each other:
//! 1. intermediate → builder (its SEQPACKET socketpair): [`Message::InitPid`] once it has cloned
//!    the init process, or [`Message::Failed`];
//! 2. init → builder (its SEQPACKET socketpair): [`Message::Connected`] once it has connected to
//!    the notify socket ([`NOTIFY_SOCKET`]), or [`Message::Failed`];
//! 3. builder → init (the notify connection, a stream): [`Message::Start`];
//! 4. init → builder (the CLOEXEC exec-notify pipe, read to EOF): nothing if the exec succeeded
//!    (the exec closed the pipe), else [`Message::ExecFailed`].
//!
//! Wire format: one tag byte, then the variant's fixed-width little-endian fields, then (for the
//! variants that carry text) the text as UTF-8 up to the end of the message. A message is always
//! exactly one datagram, one read of [`Message::START_LEN`] bytes, or one pipe read to EOF, so no
//! length prefix is needed. Text is cut to [`MAX_TEXT`] bytes (at a character boundary) so that an
//! encoded message always fits the receiver's buffer ([`MAX_MESSAGE`]).
//!
//! | variant       | tag   | fields                    |
//! |---------------|-------|---------------------------|
//! | `InitPid`     | `'P'` | pid: i32                  |
//! | `Connected`   | `'C'` | —                         |
//! | `Start`       | `'S'` | —                         |
//! | `Failed`      | `'E'` | text                      |
//! | `ExecFailed`  | `'X'` | errno: i32, then text     |

/// The notify socket's name inside the state directory: the builder binds it and the init process
/// connects to it, both by this relative name inside the cwd critical section.
pub const NOTIFY_SOCKET: &str = "notify.sock";

/// The longest text a message carries; longer text is cut.
pub const MAX_TEXT: usize = 4000;

/// The longest encoded message: a receive buffer of this size never truncates one.
pub const MAX_MESSAGE: usize = 1 + 4 + MAX_TEXT;

const TAG_INIT_PID: u8 = b'P';
const TAG_CONNECTED: u8 = b'C';
const TAG_START: u8 = b'S';
const TAG_FAILED: u8 = b'E';
const TAG_EXEC_FAILED: u8 = b'X';

/// One handshake message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The intermediate cloned the init process, which has this (host) pid.
    InitPid(i32),
    /// The init process is connected to the notify socket and waits for [`Message::Start`].
    Connected,
    /// The builder's go-ahead: the init process may exec the command.
    Start,
    /// A child failed before the exec was attempted, and why.
    Failed(String),
    /// The init process could not exec the command (or prepare to): the errno and why.
    ExecFailed { errno: i32, message: String },
}

/// Why bytes received on a handshake channel are not a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("an empty handshake message")]
    Empty,
    #[error("an unknown handshake message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("a truncated handshake message (tag {tag:?}: {got} of {need} field bytes)")]
    Truncated { tag: char, need: usize, got: usize },
    #[error("{extra} unexpected bytes after a handshake message (tag {tag:?})")]
    TrailingBytes { tag: char, extra: usize },
    #[error("a handshake message whose text is not UTF-8 (tag {tag:?})")]
    NotUtf8 { tag: char },
}

impl Message {
    /// The encoded length of [`Message::Start`], which the init process reads exactly.
    pub const START_LEN: usize = 1;

    /// The message on the wire (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::InitPid(pid) => with_i32(TAG_INIT_PID, *pid),
            Message::Connected => vec![TAG_CONNECTED],
            Message::Start => vec![TAG_START],
            Message::Failed(text) => with_text(vec![TAG_FAILED], text),
            Message::ExecFailed { errno, message } => {
                with_text(with_i32(TAG_EXEC_FAILED, *errno), message)
            }
        }
    }

    /// Parses one message; every malformed form is its own error.
    pub fn decode(bytes: &[u8]) -> Result<Message, HandshakeError> {
        let (&tag, body) = bytes.split_first().ok_or(HandshakeError::Empty)?;
        match tag {
            TAG_INIT_PID => {
                let (pid, rest) = take_i32(tag, body)?;
                no_more(tag, rest)?;
                Ok(Message::InitPid(pid))
            }
            TAG_CONNECTED => no_more(tag, body).map(|()| Message::Connected),
            TAG_START => no_more(tag, body).map(|()| Message::Start),
            TAG_FAILED => text(tag, body).map(Message::Failed),
            TAG_EXEC_FAILED => {
                let (errno, rest) = take_i32(tag, body)?;
                let message = text(tag, rest)?;
                Ok(Message::ExecFailed { errno, message })
            }
            other => Err(HandshakeError::UnknownTag(other)),
        }
    }
}

fn with_i32(tag: u8, value: i32) -> Vec<u8> {
    let mut bytes = vec![tag];
    bytes.extend_from_slice(&value.to_le_bytes());
    bytes
}

fn with_text(mut bytes: Vec<u8>, text: &str) -> Vec<u8> {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    bytes.extend_from_slice(&text.as_bytes()[..end]);
    bytes
}

fn take_i32(tag: u8, body: &[u8]) -> Result<(i32, &[u8]), HandshakeError> {
    if body.len() < 4 {
        return Err(HandshakeError::Truncated {
            tag: tag as char,
            need: 4,
            got: body.len(),
        });
    }
    let (field, rest) = body.split_at(4);
    let field: [u8; 4] = field.try_into().expect("split at 4");
    Ok((i32::from_le_bytes(field), rest))
}

fn no_more(tag: u8, rest: &[u8]) -> Result<(), HandshakeError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(HandshakeError::TrailingBytes {
            tag: tag as char,
            extra: rest.len(),
        })
    }
}

fn text(tag: u8, body: &[u8]) -> Result<String, HandshakeError> {
    String::from_utf8(body.to_vec()).map_err(|_| HandshakeError::NotUtf8 { tag: tag as char })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<Message> {
        vec![
            Message::InitPid(4242),
            Message::InitPid(i32::MIN),
            Message::Connected,
            Message::Start,
            Message::Failed(String::new()),
            Message::Failed("unshare(CLONE_NEWPID): EPERM — ünïcode".into()),
            Message::ExecFailed {
                errno: libc::ENOENT,
                message: "No such file or directory".into(),
            },
            Message::ExecFailed {
                errno: -1,
                message: String::new(),
            },
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        for message in every_variant() {
            let bytes = message.encode();
            assert!(bytes.len() <= MAX_MESSAGE, "{message:?}");
            assert_eq!(Message::decode(&bytes), Ok(message.clone()), "{bytes:?}");
        }
        assert_eq!(Message::Start.encode().len(), Message::START_LEN);
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary_and_still_decodes() {
        let long = "é".repeat(MAX_TEXT); // 2 bytes each: twice the limit
        let bytes = Message::Failed(long).encode();
        assert_eq!(bytes.len(), 1 + MAX_TEXT);
        let Ok(Message::Failed(cut)) = Message::decode(&bytes) else {
            panic!("a cut message must decode");
        };
        assert_eq!(cut, "é".repeat(MAX_TEXT / 2));
        let bytes = Message::ExecFailed {
            errno: 2,
            message: "x".repeat(MAX_TEXT + 10),
        }
        .encode();
        assert_eq!(bytes.len(), MAX_MESSAGE);
    }

    #[test]
    fn each_malformed_input_is_rejected_with_its_own_error() {
        let cases: [(&[u8], HandshakeError); 8] = [
            (b"", HandshakeError::Empty),
            (b"Z", HandshakeError::UnknownTag(b'Z')),
            // The old string forms are not messages any more.
            (b"pid 12", HandshakeError::UnknownTag(b'p')),
            (
                b"P\x01\x02",
                HandshakeError::Truncated {
                    tag: 'P',
                    need: 4,
                    got: 2,
                },
            ),
            (
                b"X\x01",
                HandshakeError::Truncated {
                    tag: 'X',
                    need: 4,
                    got: 1,
                },
            ),
            (
                b"P\x01\x00\x00\x00\x00",
                HandshakeError::TrailingBytes { tag: 'P', extra: 1 },
            ),
            (b"Cx", HandshakeError::TrailingBytes { tag: 'C', extra: 1 }),
            (b"E\xff\xfe", HandshakeError::NotUtf8 { tag: 'E' }),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Message::decode(bytes), Err(expected), "{bytes:?}");
        }
        assert_eq!(
            Message::decode(b"S\x00"),
            Err(HandshakeError::TrailingBytes { tag: 'S', extra: 1 })
        );
        assert_eq!(
            Message::decode(b"X\x02\x00\x00\x00\xc3"),
            Err(HandshakeError::NotUtf8 { tag: 'X' })
        );
    }

    #[test]
    fn no_input_makes_decode_panic() {
        // Every input of up to 3 bytes over a spread of byte values: decode returns, never panics.
        let alphabet = [0u8, 1, b'C', b'E', b'P', b'S', b'X', 0x7f, 0xc3, 0xff];
        let mut inputs = vec![vec![]];
        for _ in 0..3 {
            let longer: Vec<Vec<u8>> = inputs
                .iter()
                .flat_map(|prefix| {
                    alphabet.iter().map(move |b| {
                        let mut next = prefix.clone();
                        next.push(*b);
                        next
                    })
                })
                .collect();
            inputs.extend(longer);
        }
        for input in inputs {
            let _ = Message::decode(&input);
        }
    }
}
