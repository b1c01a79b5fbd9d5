//! The messages between wedge and its keeper server, one per `SOCK_SEQPACKET` datagram.
//!
//! Little-endian, length-prefixed, nothing to parse twice: an [`Order`] is a tag byte, the
//! descriptor targets, the working directory, the arguments and the variables; the
//! descriptors themselves travel beside it as `SCM_RIGHTS`, in target order. Decoding checks
//! every length against what is left and fails with [`WireError`], never a panic: the
//! server reads whatever its socket holds.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// The largest message either side sends or reads (a larger order is started directly).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The most descriptors an order carries.
pub const MAX_FDS: usize = 16;

/// What wedge asks the server for: one keeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// The number each descriptor of the message gets in the keeper, in their order.
    pub targets: Vec<RawFd>,
    pub cwd: PathBuf,
    /// The keeper's command line, `argv[0]` first.
    pub args: Vec<OsString>,
    /// Variables set on top of the server's environment (which is wedge's, from its start).
    pub env: Vec<(OsString, OsString)>,
}

/// What comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The server is up: its pid and the fingerprint of the sources it was built from.
    Hello { pid: i32, fingerprint: String },
    /// From the new keeper itself: its pid, and 0 or the errno of the step of its start that
    /// failed (it then exits 127, and wedge reaps it).
    Ready { pid: i32, errno: i32 },
    /// The server could not start a keeper (it could not fork, or the order did not decode).
    Refused { errno: i32 },
}

/// Why a message does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message ends at byte {at}, {wanted} more bytes expected")]
    Truncated { at: usize, wanted: usize },
    #[error("unknown message tag {0:#04x}")]
    Tag(u8),
    #[error("{0} bytes after the end of the message")]
    Trailing(usize),
    #[error("the fingerprint is not UTF-8")]
    Fingerprint,
}

const ORDER: u8 = b'O';
const HELLO: u8 = b'H';
const READY: u8 = b'R';
const REFUSED: u8 = b'X';

impl Order {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ORDER];
        put_u32(&mut out, self.targets.len());
        for &t in &self.targets {
            out.extend_from_slice(&t.to_le_bytes());
        }
        put_bytes(&mut out, self.cwd.as_os_str().as_bytes());
        put_u32(&mut out, self.args.len());
        for a in &self.args {
            put_bytes(&mut out, a.as_bytes());
        }
        put_u32(&mut out, self.env.len());
        for (k, v) in &self.env {
            put_bytes(&mut out, k.as_bytes());
            put_bytes(&mut out, v.as_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Order, WireError> {
        let mut r = Reader { bytes, at: 0 };
        r.tag(ORDER)?;
        let targets = (0..r.count(4)?)
            .map(|_| r.i32())
            .collect::<Result<_, _>>()?;
        let cwd = PathBuf::from(r.os_string()?);
        let args = (0..r.count(4)?)
            .map(|_| r.os_string())
            .collect::<Result<_, _>>()?;
        let env = (0..r.count(8)?)
            .map(|_| Ok((r.os_string()?, r.os_string()?)))
            .collect::<Result<_, WireError>>()?;
        r.end()?;
        Ok(Order {
            targets,
            cwd,
            args,
            env,
        })
    }
}

impl Answer {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        match self {
            Answer::Hello { pid, fingerprint } => {
                out.push(HELLO);
                out.extend_from_slice(&pid.to_le_bytes());
                put_bytes(&mut out, fingerprint.as_bytes());
            }
            Answer::Ready { pid, errno } => {
                out.push(READY);
                out.extend_from_slice(&pid.to_le_bytes());
                out.extend_from_slice(&errno.to_le_bytes());
            }
            Answer::Refused { errno } => {
                out.push(REFUSED);
                out.extend_from_slice(&errno.to_le_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Answer, WireError> {
        let mut r = Reader { bytes, at: 0 };
        let answer = match r.u8()? {
            HELLO => {
                let pid = r.i32()?;
                let fingerprint = String::from_utf8(r.os_string()?.into_vec())
                    .map_err(|_| WireError::Fingerprint)?;
                Answer::Hello { pid, fingerprint }
            }
            READY => Answer::Ready {
                pid: r.i32()?,
                errno: r.i32()?,
            },
            REFUSED => Answer::Refused { errno: r.i32()? },
            other => return Err(WireError::Tag(other)),
        };
        r.end()?;
        Ok(answer)
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Lengths are bounded by MAX_MESSAGE long before u32 is.
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        let left = self.bytes.len() - self.at;
        if n > left {
            return Err(WireError::Truncated {
                at: self.bytes.len(),
                wanted: n - left,
            });
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn tag(&mut self, want: u8) -> Result<(), WireError> {
        match self.u8()? {
            t if t == want => Ok(()),
            other => Err(WireError::Tag(other)),
        }
    }

    fn u32(&mut self) -> Result<usize, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn i32(&mut self) -> Result<i32, WireError> {
        let b = self.take(4)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count of items of at least `min_size` bytes each, checked against what is left (so a
    /// forged count cannot make the decoder reserve or loop for more than the message holds).
    fn count(&mut self, min_size: usize) -> Result<usize, WireError> {
        let n = self.u32()?;
        let left = self.bytes.len() - self.at;
        if n.saturating_mul(min_size) > left {
            return Err(WireError::Truncated {
                at: self.bytes.len(),
                wanted: n.saturating_mul(min_size) - left,
            });
        }
        Ok(n)
    }

    fn os_string(&mut self) -> Result<OsString, WireError> {
        let n = self.u32()?;
        Ok(OsString::from_vec(self.take(n)?.to_vec()))
    }

    fn end(&self) -> Result<(), WireError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn order() -> Order {
        Order {
            targets: vec![0, 1, 2, 3, 4],
            cwd: PathBuf::from("/tmp/wedge-trial-1/work"),
            args: vec!["wedge-init".into(), "--".into(), "sh".into(), "-c".into()],
            env: vec![("TMPDIR".into(), "/tmp/x".into()), ("E".into(), "".into())],
        }
    }

    #[test]
    fn an_order_and_every_answer_come_back_as_they_went() {
        let o = order();
        assert_eq!(Order::decode(&o.encode()), Ok(o));
        for a in [
            Answer::Hello {
                pid: 7,
                fingerprint: "446f49dea0b9d622".into(),
            },
            Answer::Ready { pid: 9, errno: 0 },
            Answer::Ready { pid: 9, errno: 2 },
            Answer::Refused { errno: 11 },
        ] {
            assert_eq!(Answer::decode(&a.encode()), Ok(a));
        }
    }

    #[test]
    fn a_cut_or_padded_message_is_an_error_that_says_where() {
        let bytes = order().encode();
        assert_eq!(
            Order::decode(&bytes[..bytes.len() - 1]),
            Err(WireError::Truncated {
                at: bytes.len() - 1,
                wanted: 1
            })
        );
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(Order::decode(&padded), Err(WireError::Trailing(1)));
        assert_eq!(Order::decode(b"R"), Err(WireError::Tag(b'R')));
        assert_eq!(Answer::decode(b"Z"), Err(WireError::Tag(b'Z')));
    }

    #[test]
    fn a_forged_count_is_refused_before_anything_is_read_for_it() {
        let mut bytes = vec![ORDER];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Order::decode(&bytes),
            Err(WireError::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn no_bytes_make_the_decoders_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Order::decode(&bytes);
            let _ = Answer::decode(&bytes);
        }

        #[test]
        fn every_order_round_trips(
            targets in proptest::collection::vec(0i32..64, 0..6),
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..6),
        ) {
            let o = Order {
                targets,
                cwd: PathBuf::from("/"),
                args: args.into_iter().map(OsString::from_vec).collect(),
                env: vec![],
            };
            prop_assert_eq!(Order::decode(&o.encode()), Ok(o));
        }
    }
}
