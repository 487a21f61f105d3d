//! The `chunked` transfer coding (RFC 9112 §7.1), decoded incrementally: bytes in as they arrive,
//! the chunks' data out, with no I/O and no buffering of its own (each input byte is looked at
//! once; data bytes are copied once, into the caller's output).
//!
//! Strict where hyper is (its `proto/h1/decode.rs` is the oracle of the differential test in
//! `transport/h1/oracle.rs`): every line of the framing ends in CRLF — a bare LF after a size,
//! inside an extension, after chunk data or in the trailers is refused, because a peer (or a
//! proxy in between) that reads bare LF differently would see other message boundaries than we
//! do. A size that overflows 64 bits is refused; whitespace may stand between a size and its
//! extensions, as hyper allows. Trailer fields are checked as a head's fields are (a token name,
//! a colon, a value without control bytes) and then ignored: they carry nothing an API client
//! reads. Stricter than hyper in one bound: extensions and trailers share one budget of
//! [`MAX_LINE_BYTES`] (hyper gives each its own 16 KiB).

use std::fmt;

/// Chunk extensions and trailer fields together may take this many bytes; the extensions and
/// trailers carry nothing an API client reads, so a server sending more is not talking to us.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Trailer fields one body may end with (hyper's default header count, which it applies to
/// trailers too).
pub const MAX_TRAILERS: usize = 100;

/// Why a chunked body cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkError(&'static str);

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid chunked body: {}", self.0)
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size (`digits` so far).
    Size {
        digits: u8,
    },
    /// After the size: whitespace, then `;` extensions or the line's CR.
    AfterSize,
    /// Inside chunk extensions, up to the line's CR.
    Extension,
    /// The CR of the size line was seen; its LF must follow.
    SizeLf,
    /// Chunk data, this many bytes left.
    Data,
    /// After the data: its CRLF.
    DataCr,
    DataLf,
    /// In the trailer section, at the start of a line.
    TrailerLineStart,
    /// Inside a trailer field's name.
    TrailerName,
    /// Inside a trailer field's value, up to the line's CR.
    TrailerValue,
    /// The CR of a trailer field line was seen.
    TrailerLf,
    /// The CR of the trailer section's empty last line was seen.
    TrailerEndLf,
    Done,
}

/// Where the decoder is in a chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// The size being read, then the data bytes left of the current chunk.
    size: u64,
    /// Bytes of extensions and trailers so far.
    line_bytes: usize,
    /// Trailer fields so far.
    trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            line_bytes: 0,
            trailers: 0,
        }
    }
}

impl ChunkedDecoder {
    /// Decodes `input`, appending chunk data to `out`. Returns `Some(n)` once the body is complete,
    /// `n` being the bytes of `input` it used (the rest is not part of this body), else `None`:
    /// every byte was used and more are needed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Option<usize>, ChunkError> {
        let mut at = 0;
        while at < input.len() {
            if self.state == State::Data {
                let take = (input.len() - at).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[at..at + take]);
                at += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let byte = input[at];
            at += 1;
            self.state = self.step(byte)?;
            if self.state == State::Done {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    /// True once the terminating chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// One byte outside chunk data.
    fn step(&mut self, byte: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::Size { digits } => match hex(byte) {
                Some(value) => {
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|size| size.checked_add(u64::from(value)))
                        .ok_or(ChunkError("chunk size too large"))?;
                    State::Size {
                        digits: digits.saturating_add(1),
                    }
                }
                None if digits == 0 => return Err(ChunkError("chunk size missing")),
                None => self.after_size(byte)?,
            },
            State::AfterSize => self.after_size(byte)?,
            State::Extension => match byte {
                b'\r' => State::SizeLf,
                b'\n' => return Err(ChunkError("bare LF in a chunk extension")),
                _ => {
                    self.count_line_byte()?;
                    State::Extension
                }
            },
            State::SizeLf => match byte {
                b'\n' if self.size == 0 => State::TrailerLineStart,
                b'\n' => State::Data,
                _ => return Err(ChunkError("CR without LF after a chunk size")),
            },
            State::Data => unreachable!("data is copied in bulk"),
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError("chunk data not followed by CRLF")),
            },
            State::DataLf => match byte {
                b'\n' => State::Size { digits: 0 },
                _ => return Err(ChunkError("CR without LF after chunk data")),
            },
            State::TrailerLineStart => match byte {
                b'\r' => State::TrailerEndLf,
                _ if is_token(byte) => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(ChunkError("too many trailer fields"));
                    }
                    self.count_line_byte()?;
                    State::TrailerName
                }
                _ => return Err(ChunkError("invalid trailer field")),
            },
            State::TrailerName => {
                self.count_line_byte()?;
                match byte {
                    b':' => State::TrailerValue,
                    _ if is_token(byte) => State::TrailerName,
                    _ => return Err(ChunkError("invalid trailer field name")),
                }
            }
            State::TrailerValue => match byte {
                b'\r' => State::TrailerLf,
                b'\t' | b' '..=b'~' | 0x80..=0xff => {
                    self.count_line_byte()?;
                    State::TrailerValue
                }
                _ => return Err(ChunkError("invalid trailer field value")),
            },
            State::TrailerLf => match byte {
                b'\n' => State::TrailerLineStart,
                _ => return Err(ChunkError("CR without LF in the trailers")),
            },
            State::TrailerEndLf => match byte {
                b'\n' => State::Done,
                _ => return Err(ChunkError("CR without LF at the end of the trailers")),
            },
            State::Done => State::Done,
        })
    }

    fn after_size(&mut self, byte: u8) -> Result<State, ChunkError> {
        Ok(match byte {
            b' ' | b'\t' => State::AfterSize,
            b';' => State::Extension,
            b'\r' => State::SizeLf,
            _ => return Err(ChunkError("invalid byte after a chunk size")),
        })
    }

    fn count_line_byte(&mut self) -> Result<(), ChunkError> {
        self.line_bytes += 1;
        if self.line_bytes > MAX_LINE_BYTES {
            return Err(ChunkError("chunk extensions or trailers too long"));
        }
        Ok(())
    }
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// A byte of a field name (RFC 9110 `tchar`).
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, Option<usize>), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        let used = decoder.decode(input, &mut out)?;
        Ok((out, used))
    }

    #[test]
    fn chunks_with_extensions_and_trailers() {
        let body = b"4\r\nWiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\nNEXT";
        let (out, used) = decode_all(body).unwrap();
        assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(&body[used.unwrap()..], b"NEXT");
    }

    #[test]
    fn whitespace_before_extensions_is_allowed() {
        let body = b"3 \t;x\r\nabc\r\n0 \r\n\r\n";
        let (out, used) = decode_all(body).unwrap();
        assert_eq!(out, b"abc");
        assert_eq!(used, Some(body.len()));
    }

    #[test]
    fn a_bare_lf_anywhere_in_the_framing_is_refused() {
        for body in [
            &b"3\nabc\r\n0\r\n\r\n"[..],
            b"3;x\nabc\r\n0\r\n\r\n",
            b"3\r\nabc\n0\r\n\r\n",
            b"3\r\nabc\r\n0\n\r\n",
            b"3\r\nabc\r\n0\r\n\n",
            b"3\r\nabc\r\n0\r\nX: y\n\r\n",
            b"3\r\nabc\r\n0\r\nX: y\r\n\n",
        ] {
            assert!(
                decode_all(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn incomplete_bodies_ask_for_more() {
        for body in [
            &b""[..],
            b"5\r\nab",
            b"0\r\n",
            b"0\r\nX: y\r\n",
            b"5\r\nabcde\r",
        ] {
            let (_, used) = decode_all(body).unwrap();
            assert_eq!(used, None, "{body:?}");
        }
    }

    #[test]
    fn hostile_bodies_are_refused() {
        let too_long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(MAX_LINE_BYTES + 1));
        let too_long_trailer = format!("0\r\nX: {}\r\n\r\n", "t".repeat(MAX_LINE_BYTES + 1));
        for body in [
            &b"g\r\n"[..],
            b"\r\n",
            b"11111111111111111\r\n",
            b"0\r\nBad Name: x\r\n\r\n",
            b"0\r\n: x\r\n\r\n",
            b"0\r\nX: \x01\r\n\r\n",
            b"0\r\nX\r\n\r\n",
            b"3\r\nabcd\r\n",
            b"3\rx",
            b"3\r\nabc\rx",
            too_long_ext.as_bytes(),
            too_long_trailer.as_bytes(),
        ] {
            assert!(
                decode_all(body).is_err(),
                "{:.60}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_size_takes_what_fits_in_64_bits_leading_zeros_included() {
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        assert_eq!(
            decoder.decode(b"FFFFFFFFFFFFFFFF\r\nab", &mut out),
            Ok(None)
        );
        assert_eq!(out, b"ab");
        assert_eq!(
            decode_all(b"00000000000000000003\r\nabc\r\n0\r\n\r\n")
                .unwrap()
                .0,
            b"abc"
        );
        let many_trailers = format!("0\r\n{}\r\n", "X: y\r\n".repeat(MAX_TRAILERS + 1));
        assert!(decode_all(many_trailers.as_bytes()).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A body: chunks of data (sizes in any case of hex, with or without extensions), a
        /// last chunk, trailers, then bytes of the next message.
        fn chunked_body() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
            let chunk = (
                prop::collection::vec(any::<u8>(), 1..40),
                any::<bool>(),
                any::<bool>(),
            );
            (
                prop::collection::vec(chunk, 0..6),
                prop::collection::vec("[A-Za-z-]{1,8}: [ -~]{0,12}", 0..3),
            )
                .prop_map(|(chunks, trailers)| {
                    let mut wire = Vec::new();
                    let mut data = Vec::new();
                    for (bytes, upper, ext) in chunks {
                        let size = if upper {
                            format!("{:X}", bytes.len())
                        } else {
                            format!("{:x}", bytes.len())
                        };
                        wire.extend_from_slice(size.as_bytes());
                        if ext {
                            wire.extend_from_slice(b" ; a=\"b\"");
                        }
                        wire.extend_from_slice(b"\r\n");
                        wire.extend_from_slice(&bytes);
                        wire.extend_from_slice(b"\r\n");
                        data.extend_from_slice(&bytes);
                    }
                    wire.extend_from_slice(b"0\r\n");
                    for t in trailers {
                        wire.extend_from_slice(t.as_bytes());
                        wire.extend_from_slice(b"\r\n");
                    }
                    wire.extend_from_slice(b"\r\n");
                    (wire, data)
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Split anywhere, a body decodes to its data, and what follows it is left alone.
            #[test]
            fn splits_do_not_change_the_data((wire, data) in chunked_body(),
                    next in prop::collection::vec(any::<u8>(), 0..8),
                    cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
                let mut input = wire.clone();
                input.extend_from_slice(&next);
                let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
                points.push(0);
                points.push(input.len());
                points.sort_unstable();
                let mut decoder = ChunkedDecoder::default();
                let mut out = Vec::new();
                let mut end = None;
                for pair in points.windows(2) {
                    let piece = &input[pair[0]..pair[1]];
                    if let Some(used) = decoder.decode(piece, &mut out).unwrap() {
                        end = Some(pair[0] + used);
                        break;
                    }
                }
                prop_assert_eq!(out, data);
                prop_assert_eq!(end, Some(wire.len()));
            }

            /// Arbitrary bytes never panic, and what is decoded never exceeds what came in.
            #[test]
            fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..200)) {
                let mut decoder = ChunkedDecoder::default();
                let mut out = Vec::new();
                if let Ok(Some(used)) = decoder.decode(&input, &mut out) {
                    prop_assert!(used <= input.len());
                }
                prop_assert!(out.len() <= input.len());
            }
        }
    }
}
