//! Follows the server's `SETTINGS_MAX_CONCURRENT_STREAMS` on an HTTP/2 connection by watching the
//! bytes it sends: the first `SETTINGS` frame (the server's connection preface, always its first
//! frame) and every later one. A new connection is handed out only once that first frame has
//! arrived, so the pool never opens streams past a limit it has not heard yet (they would be
//! refused: the start-up race hyper and reqwest users meet), and later changes are followed.
//!
//! Frames are a 9-byte header (24-bit length, type, flags, stream id) then the payload; only
//! `SETTINGS` payloads are read (6-byte entries: a 16-bit id, a 32-bit value), the rest skipped.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

const SETTINGS: u8 = 0x4;
const ACK: u8 = 0x1;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// A `SETTINGS` payload larger than this is not read (no server sends one; a hostile one could).
const MAX_SETTINGS_PAYLOAD: usize = 1024;

/// What the watcher learned: the server's stream limit, and whether its preface has arrived.
#[derive(Debug)]
pub struct ServerSettings {
    /// `usize::MAX` until (and unless) the server names a limit.
    max_streams: AtomicUsize,
    preface: AtomicBool,
    arrived: Notify,
}

impl ServerSettings {
    /// The server's current stream limit (`usize::MAX` when it set none).
    pub fn max_streams(&self) -> usize {
        self.max_streams.load(Ordering::Relaxed)
    }

    /// Returns once the server's first `SETTINGS` frame has been read.
    pub async fn preface(&self) {
        loop {
            let arrived = self.arrived.notified();
            if self.preface.load(Ordering::Acquire) {
                return;
            }
            arrived.await;
        }
    }
}

/// Where the watcher is in the incoming frames.
#[derive(Debug, Default)]
struct Frames {
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to come.
    remaining: usize,
    /// The payload of the current (non-ACK) `SETTINGS` frame, as it arrives.
    settings: Option<Vec<u8>>,
}

impl Frames {
    /// Feeds incoming bytes; returns every complete non-ACK `SETTINGS` payload that went by.
    fn feed(&mut self, mut bytes: &[u8], mut on_settings: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            if self.have < 9 {
                let take = (9 - self.have).min(bytes.len());
                self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have < 9 {
                    return;
                }
                let [a, b, c, kind, flags, ..] = self.header;
                self.remaining = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                let read =
                    kind == SETTINGS && flags & ACK == 0 && self.remaining <= MAX_SETTINGS_PAYLOAD;
                self.settings = read.then(|| Vec::with_capacity(self.remaining));
            }
            let take = self.remaining.min(bytes.len());
            if let Some(payload) = &mut self.settings {
                payload.extend_from_slice(&bytes[..take]);
            }
            self.remaining -= take;
            bytes = &bytes[take..];
            if self.remaining == 0 {
                if let Some(payload) = self.settings.take() {
                    on_settings(&payload);
                }
                self.have = 0;
            }
        }
    }
}

/// `SETTINGS_MAX_CONCURRENT_STREAMS` of a `SETTINGS` payload, when it names one.
fn max_concurrent_streams(payload: &[u8]) -> Option<usize> {
    // The last entry wins when a frame repeats a setting.
    payload
        .chunks_exact(6)
        .rev()
        .find(|entry| u16::from_be_bytes([entry[0], entry[1]]) == MAX_CONCURRENT_STREAMS)
        .map(|entry| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]) as usize)
}

/// A stream whose reads are watched for `SETTINGS`; writes pass through.
pub struct Watch<S> {
    inner: S,
    frames: Frames,
    settings: Arc<ServerSettings>,
}

impl<S> Watch<S> {
    pub fn new(inner: S) -> (Self, Arc<ServerSettings>) {
        let settings = Arc::new(ServerSettings {
            max_streams: AtomicUsize::new(usize::MAX),
            preface: AtomicBool::new(false),
            arrived: Notify::new(),
        });
        (
            Watch {
                inner,
                frames: Frames::default(),
                settings: settings.clone(),
            },
            settings,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let this = &mut *self;
        let settings = &this.settings;
        this.frames.feed(&buf.filled()[before..], |payload| {
            if let Some(limit) = max_concurrent_streams(payload) {
                settings.max_streams.store(limit, Ordering::Relaxed);
            }
            if !settings.preface.swap(true, Ordering::AcqRel) {
                settings.arrived.notify_waiters();
            }
        });
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watch<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut out = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            kind,
            flags,
            0,
            0,
            0,
            0,
        ];
        out.extend_from_slice(payload);
        out
    }

    fn settings(limit: u32) -> Vec<u8> {
        let mut payload = vec![0, 4, 0, 0, 255, 255]; // INITIAL_WINDOW_SIZE first
        payload.extend_from_slice(&MAX_CONCURRENT_STREAMS.to_be_bytes());
        payload.extend_from_slice(&limit.to_be_bytes());
        frame(SETTINGS, 0, &payload)
    }

    /// Every limit the frames announce, feeding `input` split at `split`.
    fn limits(input: &[u8], split: usize) -> Vec<Option<usize>> {
        let mut frames = Frames::default();
        let mut seen = Vec::new();
        frames.feed(&input[..split], |p| seen.push(max_concurrent_streams(p)));
        frames.feed(&input[split..], |p| seen.push(max_concurrent_streams(p)));
        seen
    }

    #[test]
    fn settings_are_found_among_other_frames_split_at_every_byte() {
        let mut input = settings(2);
        input.extend(frame(SETTINGS, ACK, &[])); // an ACK carries nothing
        input.extend(frame(0x0, 0, &[7; 40])); // DATA
        input.extend(frame(SETTINGS, 0, &[])); // names no limit
        input.extend(settings(7));
        for split in 0..=input.len() {
            assert_eq!(
                limits(&input, split),
                [Some(2), None, Some(7)],
                "split at {split}"
            );
        }
    }

    #[test]
    fn an_oversized_settings_frame_is_skipped_not_buffered() {
        let big = frame(SETTINGS, 0, &vec![0; MAX_SETTINGS_PAYLOAD + 6]);
        let mut input = big.clone();
        input.extend(settings(3));
        assert_eq!(limits(&input, 5), [Some(3)]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Any bytes from a server, split anywhere: no panic, same findings.
            #[test]
            fn any_bytes(input in prop::collection::vec(any::<u8>(), 0..300), split in any::<prop::sample::Index>()) {
                let at = split.index(input.len() + 1);
                prop_assert_eq!(limits(&input, at), limits(&input, 0));
            }
        }
    }
}
