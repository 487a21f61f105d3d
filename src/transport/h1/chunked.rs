//! The `chunked` transfer coding (RFC 9112 §7.1), decoded incrementally: bytes in as they arrive,
//! the chunks' data out, with no I/O and no buffering of its own (each input byte is looked at
//! once; data bytes are copied once, into the caller's output).
//!
//! Lenient where servers are sloppy and it costs nothing (a bare LF ends a line, spaces before a
//! chunk extension), strict where a hostile server could make it misbehave: a size of more than
//! 16 hex digits, chunk extensions or trailers longer than [`MAX_LINE_BYTES`] in total.

use std::fmt;

/// Chunk extensions and trailer fields together may take this many bytes; the extensions and
/// trailers carry nothing an API client reads, so a server sending more is not talking to us.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

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
    /// After the size: optional whitespace, then `;` extensions or the line end.
    AfterSize,
    /// Inside chunk extensions, up to the line end.
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
    /// Inside a trailer field line.
    TrailerLine,
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
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            line_bytes: 0,
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
                    if digits == 16 {
                        return Err(ChunkError("chunk size too large"));
                    }
                    self.size = self.size << 4 | u64::from(value);
                    State::Size { digits: digits + 1 }
                }
                None if digits == 0 => return Err(ChunkError("chunk size missing")),
                None => self.after_size(byte)?,
            },
            State::AfterSize => self.after_size(byte)?,
            State::Extension => match byte {
                b'\r' => State::SizeLf,
                b'\n' => self.size_line_end(),
                _ => {
                    self.count_line_byte()?;
                    State::Extension
                }
            },
            State::SizeLf => match byte {
                b'\n' => self.size_line_end(),
                _ => return Err(ChunkError("CR without LF after a chunk size")),
            },
            State::Data => unreachable!("data is copied in bulk"),
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                b'\n' => State::Size { digits: 0 },
                _ => return Err(ChunkError("chunk data longer than its size")),
            },
            State::DataLf => match byte {
                b'\n' => State::Size { digits: 0 },
                _ => return Err(ChunkError("CR without LF after chunk data")),
            },
            State::TrailerLineStart => match byte {
                b'\r' => State::TrailerEndLf,
                b'\n' => State::Done,
                _ => {
                    self.count_line_byte()?;
                    State::TrailerLine
                }
            },
            State::TrailerLine => {
                self.count_line_byte()?;
                match byte {
                    b'\n' => State::TrailerLineStart,
                    _ => State::TrailerLine,
                }
            }
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
            b'\n' => self.size_line_end(),
            _ => return Err(ChunkError("invalid byte after a chunk size")),
        })
    }

    /// The size line ended: data follows, or the trailers after the last chunk.
    fn size_line_end(&mut self) -> State {
        if self.size == 0 {
            State::TrailerLineStart
        } else {
            State::Data
        }
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
    fn bare_lf_line_ends_and_whitespace_before_extensions() {
        let body = b"3 ;x\nabc\n0\n\n";
        let (out, used) = decode_all(body).unwrap();
        assert_eq!(out, b"abc");
        assert_eq!(used, Some(body.len()));
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
    fn sixteen_hex_digits_are_the_most_a_size_takes() {
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        assert_eq!(
            decoder.decode(b"FFFFFFFFFFFFFFFF\r\nab", &mut out),
            Ok(None)
        );
        assert_eq!(out, b"ab");
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
