//! PCM streams: the spec's state machine and real-time consumption on the simulated clock.
//!
//! The model is the ground truth the driver's timing is judged against, so a period's
//! completion time is computed, not sampled: a stream consumes frames at exactly its rate from
//! the moment it starts or from the moment a late buffer arrives, whichever is later, and a
//! buffer completes when its last frame has been consumed. Times are kept as a base instant
//! plus a frame count, so rounding never accumulates over a long stream.

use std::collections::VecDeque;

use platform::PhysEntry;
use spec::virtio_snd::{Direction, PcmRate, PcmSetParams};

use super::config::{frame_bits, sample_bytes, StreamConfig};
use super::fault::Fault;

/// Where a stream is in the spec's PCM command lifecycle (virtio §5.14.6.6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcmState {
    /// Never configured since reset.
    Initial,
    SetParams,
    Prepared,
    Started,
    Stopped,
    Released,
}

impl PcmState {
    /// States a request may be sent in, exactly as the spec's table (and vhost-device-sound)
    /// has them; `None` for requests that do not change stream state.
    pub fn allowed_before(request: u32) -> &'static [PcmState] {
        use spec::virtio_snd as s;
        use PcmState::*;
        match request {
            s::VIRTIO_SND_R_PCM_SET_PARAMS => &[Initial, SetParams, Prepared, Released],
            s::VIRTIO_SND_R_PCM_PREPARE => &[SetParams, Prepared, Released],
            s::VIRTIO_SND_R_PCM_START => &[Prepared, Stopped],
            s::VIRTIO_SND_R_PCM_STOP => &[Started],
            s::VIRTIO_SND_R_PCM_RELEASE => &[Prepared, Stopped],
            _ => &[],
        }
    }
}

/// The parameters of a SET_PARAMS, as the stream uses them after PREPARE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamParams {
    pub buffer_bytes: u32,
    pub period_bytes: u32,
    /// Feature bits the driver selected.
    pub features: u32,
    pub channels: u8,
    /// `PcmFormat` value.
    pub format: u8,
    /// `PcmRate` value.
    pub rate: u8,
}

impl StreamParams {
    pub(crate) fn from_wire(p: &PcmSetParams) -> Self {
        StreamParams {
            buffer_bytes: p.buffer_bytes.get(),
            period_bytes: p.period_bytes.get(),
            features: p.features.get(),
            channels: p.channels,
            format: p.format,
            rate: p.rate,
        }
    }

    /// Frames per second.
    pub fn rate_hz(&self) -> u32 {
        PcmRate::from_raw(self.rate)
            .map(PcmRate::hz)
            .unwrap_or(48_000)
    }

    /// Bits per frame (all channels).
    pub fn frame_bits(&self) -> Option<u64> {
        frame_bits(self.format, self.channels)
    }

    /// Bytes per frame, for byte-sized formats.
    pub fn frame_bytes(&self) -> Option<usize> {
        self.frame_bits()
            .filter(|b| b % 8 == 0)
            .map(|b| (b / 8) as usize)
    }

    /// Whole frames in `bytes`, and whether bytes were left over.
    pub(crate) fn frames_in(&self, bytes: usize) -> (u64, bool) {
        match self.frame_bits() {
            Some(fb) => {
                let bits = bytes as u64 * 8;
                (bits / fb, bits % fb != 0)
            }
            None => (0, bytes != 0),
        }
    }

    /// µs taken by `frames` at this rate, rounded up (a frame is done when it is done).
    pub fn micros_for(&self, frames: u64) -> i64 {
        let rate = u128::from(self.rate_hz().max(1));
        let us = (u128::from(frames) * 1_000_000).div_ceil(rate);
        i64::try_from(us).unwrap_or(i64::MAX)
    }
}

/// One completed period as the device saw it: the ground truth for timing tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeriodRecord {
    /// Simulated µs at which its last frame was played (tx: for a device that takes frames
    /// ahead, `takes_ahead_frames` after it completed; for one that completes as it is
    /// queued, the instant it was queued) or captured (rx).
    pub time: i64,
    pub frames: u64,
    pub bytes: usize,
}

/// A tx or rx buffer the device holds.
pub(crate) struct IoBuf {
    pub cookie: u64,
    pub ticket: super::Ticket,
    pub frames: u64,
    /// Tx: the PCM bytes, copied when the chain was queued.
    pub data: Vec<u8>,
    /// The device-writable entries (tx: the status; rx: the frames then the status).
    pub writable: Vec<PhysEntry>,
    /// Rx: bytes of frame space before the status.
    pub capacity: usize,
    pub fault: Option<Fault>,
}

/// Frames consumed since `base` (µs); the next buffer ends `micros_for(frames + its frames)`
/// after `base`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Timeline {
    pub base: i64,
    pub frames: u64,
}

/// When a stream's device hands its buffers back (from `ModelConfig::capture` and
/// `ModelConfig::playback`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IoMode {
    /// At the stream's rate, from START.
    Paced,
    /// As soon as queued, in any state (`PlaybackCompletion::Instant`).
    Instant,
    /// Only at RELEASE, empty (`CaptureCompletion::AtRelease`).
    AtRelease,
    /// Never (`CaptureCompletion::Never`).
    Never,
}

pub(crate) struct Stream {
    pub id: u32,
    pub mode: IoMode,
    pub cfg: StreamConfig,
    pub state: PcmState,
    pub set_params: Option<StreamParams>,
    pub prepared: Option<StreamParams>,
    pub io: VecDeque<IoBuf>,
    pub running: bool,
    pub line: Timeline,
    /// When to check whether the stream ran dry (1 µs after its last buffer completed, so a
    /// driver refilling from that completion's interrupt is in time).
    pub dry_check: Option<i64>,
    pub xrun_times: Vec<i64>,
    pub played: Vec<u8>,
    pub recorded: Vec<u8>,
    pub periods: Vec<PeriodRecord>,
    /// Bytes captured so far (the capture pattern's position).
    pub capture_pos: u64,
    /// Playback frames taken ahead of playing (see `ModelConfig::takes_ahead_frames`).
    pub ahead: u64,
    /// Frames STOP threw away (taken, never played).
    pub dropped_frames: u64,
}

impl Stream {
    pub fn new(id: u32, cfg: StreamConfig) -> Self {
        Stream {
            id,
            mode: IoMode::Paced,
            cfg,
            state: PcmState::Initial,
            set_params: None,
            prepared: None,
            io: VecDeque::new(),
            running: false,
            line: Timeline::default(),
            dry_check: None,
            xrun_times: Vec::new(),
            played: Vec::new(),
            recorded: Vec::new(),
            periods: Vec::new(),
            capture_pos: 0,
            ahead: 0,
            dropped_frames: 0,
        }
    }

    /// Back to the state after a device reset; the ground-truth records stay for the test.
    pub fn reset(&mut self) {
        self.state = PcmState::Initial;
        self.set_params = None;
        self.prepared = None;
        self.io.clear();
        self.running = false;
        self.dry_check = None;
    }

    fn params(&self) -> StreamParams {
        self.prepared.unwrap_or(StreamParams {
            buffer_bytes: 0,
            period_bytes: 0,
            features: 0,
            channels: 2,
            format: spec::virtio_snd::VIRTIO_SND_PCM_FMT_S16,
            rate: spec::virtio_snd::VIRTIO_SND_PCM_RATE_48000,
        })
    }

    /// When the head buffer's last frame is consumed, if the stream is running.
    pub fn head_due(&self) -> Option<i64> {
        if !self.running || self.mode != IoMode::Paced {
            return None;
        }
        let head = self.io.front()?;
        let p = self.params();
        let ahead = if self.cfg.direction == Direction::Output {
            self.ahead
        } else {
            0
        };
        Some(
            self.line.base.saturating_add(
                p.micros_for((self.line.frames + head.frames).saturating_sub(ahead)),
            ),
        )
    }

    /// The instant the frames consumed so far were done (for playback taken ahead, played).
    pub fn line_end(&self) -> i64 {
        self.line
            .base
            .saturating_add(self.params().micros_for(self.line.frames))
    }

    pub fn start(&mut self, now: i64) {
        self.running = true;
        self.line = Timeline {
            base: now,
            frames: 0,
        };
        // Only a paced stream can run dry: the others never consume at a rate.
        self.dry_check = (self.io.is_empty() && self.mode == IoMode::Paced).then_some(now + 1);
    }

    /// Stops consuming. A partly consumed head buffer starts over at the next START (its
    /// bytes are only recorded as played when it completes, so nothing is counted twice).
    /// Frames taken ahead and not played by `now` are thrown away, as QEMU does.
    pub fn stop(&mut self, now: i64) {
        if self.running && self.ahead > 0 && self.cfg.direction == Direction::Output {
            let p = self.params();
            let hz = i64::from(p.rate_hz().max(1));
            let played = ((now - self.line.base).max(0) * hz / 1_000_000) as u64;
            let inside = self.line.frames.saturating_sub(played).min(self.ahead);
            let bytes = (inside as usize).saturating_mul(p.frame_bytes().unwrap_or(0));
            let keep = self.played.len().saturating_sub(bytes);
            self.dropped_frames += inside;
            self.played.truncate(keep);
        }
        self.running = false;
        self.dry_check = None;
    }

    /// A buffer arrived at `now`. If it finds the stream running and dry, consumption
    /// restarts from now: the gap is the underrun.
    pub fn push(&mut self, buf: IoBuf, now: i64) {
        if self.running && self.io.is_empty() && now > self.line_end() {
            self.line = Timeline {
                base: now,
                frames: 0,
            };
        }
        self.io.push_back(buf);
        self.dry_check = None;
    }

    /// Takes the head buffer, which completed at `at`.
    pub fn complete_head(&mut self, at: i64) -> Option<IoBuf> {
        let buf = self.io.pop_front()?;
        self.line.frames += buf.frames;
        if self.io.is_empty() && self.running {
            self.dry_check = Some(at + 1);
        }
        Some(buf)
    }

    /// The capture signal for bytes `offset .. offset + len` of this stream's capture, in
    /// the current format: sample `k` (counting every channel) is `k + 0x100 * stream id`,
    /// little-endian, truncated to the sample width.
    pub fn pattern(&self, offset: u64, len: usize) -> Vec<u8> {
        capture_pattern(self.id, sample_bytes(self.params().format), offset, len)
    }
}

/// The capture signal for bytes `offset .. offset + len` of stream `stream`'s capture, with
/// samples of `sample_bytes` bytes: sample `k` (counting every channel) is
/// `k + 0x100 * stream`, little-endian, truncated to the sample width.
pub fn capture_pattern(stream: u32, sample_bytes: usize, offset: u64, len: usize) -> Vec<u8> {
    let sb = sample_bytes.max(1);
    let first = offset / sb as u64;
    let skip = (offset % sb as u64) as usize;
    // A sample at a time (the fuzz targets' instrumentation makes a byte-at-a-time loop most
    // of a run), then cut to the bytes asked for.
    let mut out = Vec::with_capacity(len + skip + sb);
    let mut k = first + 0x100 * u64::from(stream);
    while out.len() < skip + len {
        let bytes = k.to_le_bytes();
        out.extend_from_slice(&bytes[..sb.min(8)]);
        out.resize(out.len() + sb.saturating_sub(8), 0);
        k = k.wrapping_add(1);
    }
    out.drain(..skip);
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::capture_pattern;

    #[test]
    fn the_capture_pattern_is_the_sample_index_little_endian() {
        // Sample k of stream s is k + 0x100 * s, little-endian, cut to the sample width.
        assert_eq!(capture_pattern(1, 2, 3, 5), [0x01, 0x02, 0x01, 0x03, 0x01]);
        assert_eq!(capture_pattern(0, 1, 254, 4), [0xfe, 0xff, 0x00, 0x01]);
        assert_eq!(
            capture_pattern(2, 3, 1, 7),
            [0x02, 0x00, 0x01, 0x02, 0x00, 0x02, 0x02]
        );
        assert_eq!(capture_pattern(0, 4, 4, 4), [1, 0, 0, 0]);
        assert_eq!(capture_pattern(0, 4, 0, 0), [] as [u8; 0]);
        // Wider than a u64: the high bytes are zero.
        assert_eq!(
            capture_pattern(0, 10, 10, 10),
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
