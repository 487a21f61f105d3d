//! An incremental Server-Sent Events decoder following the WHATWG EventSource parsing rules.
//!
//! Push bytes in with [`SseDecoder::feed`] as they arrive; complete events come out. It does no
//! I/O, never rescans bytes it has seen (each byte is looked at once and copied at most once), and
//! refuses an event larger than its limit instead of growing without bound.
//!
//! Rules implemented: LF, CR and CRLF line ends (a CR that ends one chunk and the LF that starts
//! the next are one line end); a UTF-8 BOM at the very start is dropped; lines starting with `:`
//! are comments; `field: value` with one leading space stripped from the value; a line without a
//! colon is a field with an empty value; `data` lines join with `\n`; `event`; `id` and `retry`
//! are read past (an API client neither reconnects nor resumes); unknown fields are ignored; an
//! empty line dispatches
//! the event unless no `data` was seen; an unfinished event at end of stream is discarded.
//! Lines are decoded as UTF-8 only once complete, so a character split across reads stays intact.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type, `message`.
    pub event: Option<String>,
    pub data: String,
}

/// The stream broke the decoder's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTooLarge {
    pub limit: usize,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug)]
pub struct SseDecoder {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended with CR: a leading LF in the next chunk belongs to that line end.
    after_cr: bool,
    /// Still at the start of the stream, where a BOM may be (possibly split across chunks).
    at_start: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    max_event_size: usize,
}

impl SseDecoder {
    pub fn new(max_event_size: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            data: String::new(),
            has_data: false,
            event: None,
            max_event_size,
        }
    }

    /// Decodes `chunk`, appending every event it completes to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), EventTooLarge> {
        // An empty read says nothing; in particular it must not end a pending CR's wait for its
        // LF (found by the split property test).
        if chunk.is_empty() {
            return Ok(());
        }
        if self.at_start {
            chunk = self.skip_bom(chunk);
            if self.at_start {
                return Ok(());
            }
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while !chunk.is_empty() {
            let Some(end) = memchr::memchr2(b'\n', b'\r', chunk) else {
                self.line.extend_from_slice(chunk);
                self.check_size()?;
                return Ok(());
            };
            let terminator = chunk[end];
            if self.line.is_empty() {
                self.process_line(&chunk[..end], out)?;
            } else {
                self.line.extend_from_slice(&chunk[..end]);
                self.check_size()?;
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, out)?;
                // Keep the allocation for the next long line.
                self.line = line;
                self.line.clear();
            }
            chunk = &chunk[end + 1..];
            if terminator == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        Ok(())
    }

    /// End of stream: an event without its closing blank line is discarded (per the spec).
    pub fn finish(&mut self) {
        self.line.clear();
        self.data.clear();
        self.has_data = false;
        self.event = None;
    }

    /// Holds back up to three leading bytes until it is known whether they are a BOM.
    fn skip_bom<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        let seen = self.line.len();
        let wanted = BOM.len() - seen;
        let take = wanted.min(chunk.len());
        if chunk[..take] != BOM[seen..seen + take] {
            // Not a BOM: whatever was held back is ordinary line content.
            self.at_start = false;
            return chunk;
        }
        if take < wanted {
            self.line.extend_from_slice(&chunk[..take]);
            return &chunk[take..];
        }
        self.line.clear();
        self.at_start = false;
        &chunk[take..]
    }

    fn check_size(&self) -> Result<(), EventTooLarge> {
        if self.line.len() + self.data.len() > self.max_event_size {
            Err(EventTooLarge {
                limit: self.max_event_size,
            })
        } else {
            Ok(())
        }
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), EventTooLarge> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &line[line.len()..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.has_data = true;
                match std::str::from_utf8(value) {
                    Ok(text) => self.data.push_str(text),
                    Err(_) => self.data.push_str(&String::from_utf8_lossy(value)),
                }
                self.check_size()?;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if !self.has_data {
            return;
        }
        self.has_data = false;
        out.push(SseEvent {
            event: event.filter(|e| !e.is_empty()),
            data: std::mem::take(&mut self.data),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 16 * 1024 * 1024;

    fn decode_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new(LIMIT);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out).unwrap();
        }
        d.finish();
        out
    }

    fn decode(input: &[u8]) -> Vec<SseEvent> {
        decode_chunks(&[input])
    }

    /// Decodes `input` split at every byte offset (two chunks) and one byte at a time; every way
    /// must give the same events as one chunk.
    fn decode_every_split(input: &[u8]) -> Vec<SseEvent> {
        let whole = decode(input);
        for i in 0..=input.len() {
            assert_eq!(
                decode_chunks(&[&input[..i], &input[i..]]),
                whole,
                "split at {i} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_chunks(&bytes), whole, "byte by byte");
        whole
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn lf_crlf_and_lone_cr_line_ends() {
        for input in [
            &b"data: a\n\ndata: b\n\n"[..],
            b"data: a\r\n\r\ndata: b\r\n\r\n",
            b"data: a\r\rdata: b\r\r",
            b"data: a\r\n\ndata: b\n\r\n",
        ] {
            assert_eq!(
                data(&decode_every_split(input)),
                ["a", "b"],
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn cr_at_the_end_of_one_chunk_and_lf_at_the_start_of_the_next_is_one_line_end() {
        // If the LF were a second line end, the empty line would dispatch "a" early and "b"
        // would become a separate event.
        let events = decode_chunks(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(data(&events), ["a\nb"]);
    }

    #[test]
    fn bom_at_start_is_dropped_even_when_split() {
        let input = b"\xEF\xBB\xBFdata: x\n\n";
        assert_eq!(data(&decode_every_split(input)), ["x"]);
        // A BOM later in the stream is not special: it makes an unknown field here.
        assert_eq!(data(&decode(b"data: x\n\n\xEF\xBB\xBFdata: y\n\n")), ["x"]);
        // Bytes that only start like a BOM are kept.
        assert_eq!(decode(b"\xEFdata: x\n\n").len(), 0);
    }

    #[test]
    fn comments_are_ignored() {
        let events = decode_every_split(b": ping\n\n:\ndata: a\n: mid-event comment\ndata: b\n\n");
        assert_eq!(data(&events), ["a\nb"]);
    }

    #[test]
    fn multi_line_data_joins_with_newline_and_one_leading_space_is_stripped() {
        let events = decode_every_split(b"data:no space\ndata:  two spaces\ndata\ndata: \n\n");
        assert_eq!(data(&events), ["no space\n two spaces\n\n"]);
    }

    #[test]
    fn event_id_retry_and_unknown_fields() {
        let events = decode_every_split(
            b"event: delta\nid: 7\nretry: 1500\nfoo: bar\ndata: x\n\ndata: y\n\n",
        );
        assert_eq!(
            events[0],
            SseEvent {
                event: Some("delta".into()),
                data: "x".into(),
            }
        );
        // The event type resets after dispatch.
        assert_eq!(
            events[1],
            SseEvent {
                event: None,
                data: "y".into(),
            }
        );
    }

    #[test]
    fn empty_data_is_an_event_but_no_data_is_not() {
        let events = decode_every_split(b"data:\n\nevent: only-type\n\n\n\ndata\n\n");
        assert_eq!(data(&events), ["", ""]);
        assert_eq!(events[0].event, None);
    }

    #[test]
    fn unfinished_event_at_end_of_stream_is_discarded() {
        assert_eq!(data(&decode(b"data: a\n\ndata: b\n")), ["a"]);
        assert_eq!(data(&decode(b"data: a\n\ndata: b")), ["a"]);
    }

    #[test]
    fn an_empty_read_between_cr_and_lf_keeps_them_one_line_end() {
        assert_eq!(
            decode_chunks(&[b"data: a\r", b"", b"\n\r", b"", b"\n"]),
            decode(b"data: a\r\n\r\n")
        );
    }

    #[test]
    fn multibyte_utf8_split_at_every_byte_stays_intact() {
        let input = "data: héllo wörld — 你好 🌍\n\ndata: {\"content\":\"ünïcödé\"}\n\n".as_bytes();
        assert_eq!(
            data(&decode_every_split(input)),
            ["héllo wörld — 你好 🌍", "{\"content\":\"ünïcödé\"}"]
        );
    }

    #[test]
    fn openai_style_stream() {
        let input = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n: keep-alive\n\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let events = decode_every_split(input);
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].data, "[DONE]");
    }

    #[test]
    fn a_one_mebibyte_event_fed_one_byte_at_a_time_is_decoded_in_linear_time() {
        let payload = "x".repeat(1024 * 1024);
        let input = format!("data: {payload}\n\n");
        let mut d = SseDecoder::new(LIMIT);
        let mut out = Vec::new();
        for b in input.as_bytes().chunks(1) {
            d.feed(b, &mut out).unwrap();
        }
        assert_eq!(out.len(), 1);
        // A decoder that rescanned its buffer on each feed would examine ~n²/2 = 5.5e11 bytes
        // here and never finish within the test timeout.
        assert_eq!(out[0].data.len(), payload.len());
    }

    #[test]
    fn an_event_over_the_limit_is_refused() {
        let mut d = SseDecoder::new(1000);
        let mut out = Vec::new();
        let big = format!("data: {}\n", "y".repeat(600));
        d.feed(big.as_bytes(), &mut out).unwrap();
        // The second data line takes the event over 1000 bytes.
        assert_eq!(
            d.feed(big.as_bytes(), &mut out),
            Err(EventTooLarge { limit: 1000 })
        );
        // A single unterminated line is refused as it grows, before its end arrives.
        let mut d = SseDecoder::new(1000);
        let err = (0..100).try_for_each(|_| d.feed(&[b'z'; 100], &mut out));
        assert_eq!(err, Err(EventTooLarge { limit: 1000 }));
    }

    #[test]
    fn events_under_the_limit_pass() {
        let mut d = SseDecoder::new(1000);
        let mut out = Vec::new();
        for _ in 0..100 {
            d.feed(
                format!("data: {}\n\n", "k".repeat(900)).as_bytes(),
                &mut out,
            )
            .unwrap();
        }
        assert_eq!(out.len(), 100);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Bytes that look like SSE often enough to exercise every rule.
        fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(b"data: ".to_vec()),
                Just(b"data:".to_vec()),
                Just(b"event: error".to_vec()),
                Just(b": comment".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"\xEF\xBB\xBF".to_vec()),
                Just("é🌍".as_bytes().to_vec()),
                prop::collection::vec(any::<u8>(), 0..12),
            ];
            prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
        }

        fn feed_all(chunks: &[&[u8]], limit: usize) -> Result<Vec<SseEvent>, EventTooLarge> {
            let mut d = SseDecoder::new(limit);
            let mut out = Vec::new();
            for c in chunks {
                d.feed(c, &mut out)?;
            }
            d.finish();
            Ok(out)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// Any bytes split at any points give the same events as one feed.
            #[test]
            fn splits_do_not_change_events(input in sse_bytes(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
                let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
                points.sort_unstable();
                let mut chunks = Vec::new();
                let mut start = 0;
                for p in points {
                    chunks.push(&input[start..p]);
                    start = p;
                }
                chunks.push(&input[start..]);
                let whole = feed_all(&[&input], LIMIT).unwrap();
                prop_assert_eq!(feed_all(&chunks, LIMIT).unwrap(), whole);
            }

            /// Arbitrary bytes with a tiny limit: never a panic, never an event over the limit.
            #[test]
            fn tiny_limits_never_panic(input in prop::collection::vec(any::<u8>(), 0..200), limit in 1usize..32, step in 1usize..9) {
                let chunks: Vec<&[u8]> = input.chunks(step).collect();
                if let Ok(events) = feed_all(&chunks, limit) {
                    prop_assert!(events.iter().all(|e| e.data.len() <= limit));
                }
            }
        }
    }
}
