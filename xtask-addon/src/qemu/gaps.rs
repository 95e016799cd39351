//! Audible gaps in what QEMU's `wav` audio backend recorded: the guest plays a known signal
//! (the [`probe`]), and [`find_gaps`] finds every place where the recording stops being
//! that signal, how long it is not, and where the signal resumes.
//!
//! What the file holds when the stream has no data, read in QEMU's sources (10.0, the
//! version these runs use):
//!
//! - `hw/audio/virtio-snd.c`, `virtio_snd_pcm_out_cb`: the audio core's output callback
//!   hands `AUD_write` the bytes of the tx buffers the guest queued, in order; with the
//!   queue empty it writes nothing, and it never makes silence of its own.
//! - `audio/audio.c`, `audio_run_out`: on each timer tick the mixing engine asks the voice
//!   for data; when no voice holds live frames (`live == 0`) it only lets the backend
//!   flush what it already buffered (`run_buffer_out`): nothing is mixed, no silence
//!   is written for the tick.
//! - `audio/wavaudio.c`, `wav_write_out`: writes what it is handed, at most the frames due
//!   by `QEMU_CLOCK_VIRTUAL` since the voice started less those already written
//!   (`audio_rate_get_bytes`, `audio/audio.c`): a dry spell's deficit is made good as soon
//!   as data comes again (up to 65,536 frames, past which the rate control restarts).
//!
//! So the file is every frame the guest queued, back to back: **a device that ran dry
//! leaves no silence in it**, and its length says nothing about the time the stream was
//! dry. What the file does show is any frame that was not the next frame of the signal:
//! a buffer played again before the client refilled it (the signal jumps back), frames
//! lost (it jumps ahead), or silence or anything else inside the signal (a buffer the
//! client never wrote). That is what [`find_gaps`] looks for; the zeros and silent frames
//! that are part of the signal itself match it and are never gaps. A dry device is only
//! seen by the guest (`device_ran_dry`), which counts it apart.

use std::fmt;

use hmulti_client::wav::{SampleFormat, Wav};

/// The probe repeats after this many frames: its right channel counts frames modulo it.
pub const PROBE_CYCLE: usize = 65536;

/// Frames of the left channel's sine period (a divisor of [`PROBE_CYCLE`], so the probe
/// repeated is the same signal).
const SINE_PERIOD: usize = 64;

/// Frames that must match the probe, in order, for the signal to count as resumed.
const RESYNC: usize = 16;

/// Frame `p` of the probe: left a sine of period 64 frames at half scale (its samples at
/// frames 0 and 32 of each period are 0), right the frame number modulo 65,536 as a
/// 16-bit word (0 at frame 0: frame 0 of each cycle is a silent frame of the signal).
pub fn probe_frame(p: u64) -> [i16; 2] {
    let phase = (p % SINE_PERIOD as u64) as f64 / SINE_PERIOD as f64;
    let left = (16384.0 * (std::f64::consts::TAU * phase).sin()).round() as i16;
    let right = (p % PROBE_CYCLE as u64) as u16 as i16;
    [left, right]
}

/// The first `frames` frames of the probe as a stereo 16-bit WAV at `rate`.
pub fn probe(rate: u32, frames: usize) -> Wav {
    let mut data = Vec::with_capacity(frames * 4);
    for p in 0..frames as u64 {
        for s in probe_frame(p) {
            data.extend_from_slice(&s.to_le_bytes());
        }
    }
    Wav {
        rate,
        channels: 2,
        format: SampleFormat::S16,
        data,
    }
}

/// One place where the recording stopped being the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The recording's frame where it happened.
    pub at: usize,
    /// The probe frame that should have been there.
    pub expected: u64,
    /// Frames of the recording from `at` that are not the probe (0 for a plain jump).
    pub frames: usize,
    /// Of those, the silent ones (every sample 0).
    pub silent: usize,
    /// The probe frame the signal resumed at; `None` if it never did before the file ended
    /// (or, at the end, frames that are not silence followed the signal's last frame).
    pub resumed: Option<u64>,
}

impl Gap {
    /// How far the signal jumped: resumed less expected (negative: played again).
    pub fn jump(&self) -> Option<i64> {
        self.resumed.map(|r| r as i64 - self.expected as i64)
    }
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at frame {}", self.at)?;
        if self.frames > 0 {
            write!(
                f,
                ": {} frames not the signal ({} silent)",
                self.frames, self.silent
            )?;
        }
        match self.jump() {
            Some(0) => write!(f, ", then the signal went on where it was"),
            Some(j) if j < 0 => write!(f, ", then {} frames of the signal played again", -j),
            Some(j) => write!(f, ", then {j} frames of the signal skipped"),
            None => write!(
                f,
                ", the signal never resumed (expected frame {})",
                self.expected
            ),
        }
    }
}

/// What [`find_gaps`] found in a recording.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Audit {
    /// Silent frames before the signal's first frame.
    pub lead: usize,
    /// Frames after the signal's last frame (all silent unless a gap says otherwise).
    pub trailing: usize,
    /// Every place the recording stopped being the signal, in order.
    pub gaps: Vec<Gap>,
}

/// Finds where the recording `wav` (stereo 16-bit, as QEMU's wav backend writes at the
/// stream's rate) stops being the first `frames` frames of the [`probe`]: lead-in silence
/// is allowed before the signal's first frame and silence after its last; anything else
/// is a [`Gap`]. After a gap the signal counts as resumed where [`RESYNC`] frames in a row
/// match the probe, at the probe frame the right channel names (the one nearest the
/// expected frame).
pub fn find_gaps(wav: &Wav, frames: u64) -> Result<Audit, String> {
    if wav.format != SampleFormat::S16 || wav.channels != 2 {
        return Err(format!(
            "the recording is {:?} with {} channels; the probe is stereo 16-bit",
            wav.format, wav.channels
        ));
    }
    let y: Vec<[i16; 2]> = wav
        .data
        .chunks_exact(4)
        .map(|b| {
            [
                i16::from_le_bytes([b[0], b[1]]),
                i16::from_le_bytes([b[2], b[3]]),
            ]
        })
        .collect();
    let silent = |f: &[i16; 2]| *f == [0, 0];
    // Does the recording from `j` match the probe from `q` for RESYNC frames (fewer where
    // the probe or the file ends)?
    let matches = |j: usize, q: u64| -> bool {
        let n = (RESYNC as u64).min(frames - q) as usize;
        y.len() >= j + n && (0..n).all(|i| y[j + i] == probe_frame(q + i as u64))
    };
    // The probe frame the recording's frame `j` names, nearest to `p`, if within the probe.
    let named = |j: usize, p: u64| -> Option<u64> {
        let c = PROBE_CYCLE as i64;
        let r = i64::from(y[j][1] as u16);
        let d = (r - p as i64).rem_euclid(c);
        let q = p as i64 + if d >= c / 2 { d - c } else { d };
        u64::try_from(q).ok().filter(|&q| q < frames)
    };
    let mut audit = Audit::default();
    let mut p = 0u64; // the next probe frame expected
    let mut started = false;
    let mut j = 0usize;
    while j < y.len() && p < frames {
        if y[j] == probe_frame(p) && (started || matches(j, p)) {
            started = true;
            p += 1;
            j += 1;
            continue;
        }
        if !started && silent(&y[j]) {
            audit.lead += 1;
            j += 1;
            continue;
        }
        // A gap: find where the signal resumes.
        let at = j;
        let mut k = j;
        let resumed = loop {
            if k == y.len() {
                break None;
            }
            if let Some(q) = named(k, p).filter(|&q| matches(k, q)) {
                break Some(q);
            }
            k += 1;
        };
        audit.gaps.push(Gap {
            at,
            expected: p,
            frames: k - at,
            silent: y[at..k].iter().filter(|f| silent(f)).count(),
            resumed,
        });
        started = true;
        j = k;
        match resumed {
            Some(q) => p = q,
            None => return Ok(audit),
        }
    }
    if p < frames {
        // The file ended inside the signal.
        audit.gaps.push(Gap {
            at: y.len(),
            expected: p,
            frames: 0,
            silent: 0,
            resumed: None,
        });
        return Ok(audit);
    }
    audit.trailing = y.len() - j;
    let noisy = y[j..].iter().filter(|f| !silent(f)).count();
    if noisy > 0 {
        audit.gaps.push(Gap {
            at: j,
            expected: frames,
            frames: y.len() - j,
            silent: y.len() - j - noisy,
            resumed: None,
        });
    }
    Ok(audit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 48000;

    /// A recording: `lead` silent frames, then `parts` (probe frame ranges, or `None` for
    /// that many silent frames), then `trail` silent frames.
    fn recording(lead: usize, parts: &[(u64, u64)], trail: usize) -> Wav {
        let mut w = probe(RATE, 0);
        w.data.resize(lead * 4, 0);
        for &(from, to) in parts {
            if from == u64::MAX {
                w.data.resize(w.data.len() + to as usize * 4, 0);
                continue;
            }
            for p in from..to {
                for s in probe_frame(p) {
                    w.data.extend_from_slice(&s.to_le_bytes());
                }
            }
        }
        w.data.resize(w.data.len() + trail * 4, 0);
        w
    }

    /// `n` frames of silence inside a recording.
    const fn silence(n: u64) -> (u64, u64) {
        (u64::MAX, n)
    }

    #[test]
    fn the_probe_is_the_documented_signal() {
        // Left: 16384 sin(2 pi p / 64); right: p mod 65536.
        assert_eq!(probe_frame(0), [0, 0]);
        assert_eq!(probe_frame(8), [11585, 8]); // 16384 / sqrt 2
        assert_eq!(probe_frame(16), [16384, 16]);
        assert_eq!(probe_frame(32), [0, 32]);
        assert_eq!(probe_frame(48), [-16384, 48]);
        assert_eq!(probe_frame(32768), [0, i16::MIN]);
        assert_eq!(probe_frame(65535), [-1606, -1]); // 16384 sin(-2 pi / 64)
        assert_eq!(probe_frame(65536), [0, 0]);
        assert_eq!(probe_frame(65536 + 16), [16384, 16]);
        let w = probe(RATE, 3);
        assert_eq!((w.rate, w.channels, w.format), (RATE, 2, SampleFormat::S16));
        // Frames 1 and 2: 16384 sin(2 pi / 64) = 1606, 16384 sin(4 pi / 64) = 3196.
        assert_eq!(w.data, [0, 0, 0, 0, 0x46, 0x06, 1, 0, 0x7c, 0x0c, 2, 0]);
    }

    #[test]
    fn a_clean_recording_has_no_gaps() {
        // Lead-in silence, 200,000 frames (three probe cycles and more: the signal's own
        // silent frames at 0, 65536, 131072 and 196608, its zeros every 32 frames), then
        // the stop's silence.
        let w = recording(1000, &[(0, 200_000)], 960);
        let a = find_gaps(&w, 200_000).unwrap();
        assert_eq!(
            a,
            Audit {
                lead: 1000,
                trailing: 960,
                gaps: vec![]
            }
        );
        // No lead-in, no trailing silence.
        let a = find_gaps(&recording(0, &[(0, 5000)], 0), 5000).unwrap();
        assert_eq!((a.lead, a.trailing, a.gaps.len()), (0, 0, 0));
    }

    #[test]
    fn silence_inside_the_signal_is_a_gap_where_it_is() {
        // 480 silent frames at recording frame 100 + 10,000, the signal going on after them.
        let w = recording(100, &[(0, 10_000), silence(480), (10_000, 30_000)], 50);
        let a = find_gaps(&w, 30_000).unwrap();
        assert_eq!(a.lead, 100);
        assert_eq!(a.trailing, 50);
        assert_eq!(
            a.gaps,
            [Gap {
                at: 10_100,
                expected: 10_000,
                frames: 480,
                silent: 480,
                resumed: Some(10_000)
            }]
        );
        assert_eq!(
            a.gaps[0].to_string(),
            "at frame 10100: 480 frames not the signal (480 silent), then the signal went on \
             where it was"
        );
        // One silent frame is a gap too, also where the signal has a zero in one channel
        // (frame 32: left 0).
        let w = recording(0, &[(0, 32), silence(1), (32, 100)], 0);
        let a = find_gaps(&w, 100).unwrap();
        assert_eq!(
            a.gaps,
            [Gap {
                at: 32,
                expected: 32,
                frames: 1,
                silent: 1,
                resumed: Some(32)
            }]
        );
    }

    #[test]
    fn jumps_back_and_ahead_are_gaps() {
        // A stale buffer: 480 frames played again (the buffer before), then the signal goes
        // on from where it had been.
        let w = recording(0, &[(0, 2400), (1920, 2400), (2400, 5000)], 0);
        let a = find_gaps(&w, 5000).unwrap();
        assert_eq!(
            a.gaps,
            [Gap {
                at: 2400,
                expected: 2400,
                frames: 0,
                silent: 0,
                resumed: Some(1920)
            }]
        );
        assert_eq!(a.gaps[0].jump(), Some(-480));
        assert_eq!(
            a.gaps[0].to_string(),
            "at frame 2400, then 480 frames of the signal played again"
        );
        // 256 frames lost, across the probe's cycle (65,536).
        let w = recording(10, &[(0, 65_500), (65_756, 70_000)], 0);
        let a = find_gaps(&w, 70_000).unwrap();
        assert_eq!(
            a.gaps,
            [Gap {
                at: 65_510,
                expected: 65_500,
                frames: 0,
                silent: 0,
                resumed: Some(65_756)
            }]
        );
        assert_eq!(a.gaps[0].jump(), Some(256));
        // Noise of 7 frames, then the signal 100 frames on.
        let mut w = recording(0, &[(0, 1000)], 0);
        w.data.extend_from_slice(&[1, 2, 3, 4].repeat(7));
        w.data
            .extend_from_slice(&recording(0, &[(1100, 2000)], 0).data);
        let a = find_gaps(&w, 2000).unwrap();
        assert_eq!(
            a.gaps,
            [Gap {
                at: 1000,
                expected: 1000,
                frames: 7,
                silent: 0,
                resumed: Some(1100)
            }]
        );
    }

    #[test]
    fn a_signal_cut_short_or_followed_by_noise_is_a_gap() {
        // The file ends at probe frame 4000 of 5000.
        let a = find_gaps(&recording(5, &[(0, 4000)], 0), 5000).unwrap();
        assert_eq!(
            a.gaps,
            [Gap {
                at: 4005,
                expected: 4000,
                frames: 0,
                silent: 0,
                resumed: None
            }]
        );
        // Silence from probe frame 4000 to the end: a gap that never resumes.
        let a = find_gaps(&recording(5, &[(0, 4000)], 300), 5000).unwrap();
        assert_eq!(
            a.gaps,
            [Gap {
                at: 4005,
                expected: 4000,
                frames: 300,
                silent: 300,
                resumed: None
            }]
        );
        // The whole signal, then 3 silent and 2 stale frames.
        let w = recording(0, &[(0, 5000), silence(3), (4998, 5000)], 0);
        let a = find_gaps(&w, 5000).unwrap();
        assert_eq!(a.trailing, 5);
        assert_eq!(
            a.gaps,
            [Gap {
                at: 5000,
                expected: 5000,
                frames: 5,
                silent: 3,
                resumed: None
            }]
        );
        // The signal's first buffer lost: the start is a gap.
        let a = find_gaps(&recording(20, &[(480, 5000)], 0), 5000).unwrap();
        assert_eq!(a.lead, 20);
        assert_eq!(
            a.gaps,
            [Gap {
                at: 20,
                expected: 0,
                frames: 0,
                silent: 0,
                resumed: Some(480)
            }]
        );
    }

    #[test]
    fn only_stereo_16_bit_recordings_are_read() {
        let mut w = recording(0, &[(0, 10)], 0);
        w.channels = 1;
        assert!(find_gaps(&w, 10).unwrap_err().contains("1 channels"));
    }
}
