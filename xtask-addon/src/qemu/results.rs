//! Step 5, the results: the guest's `@@virtio_sound result` and `exit` lines, the verdict of
//! a run, and the WAV file QEMU's wav audio backend wrote.

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use hmulti_client::wav::Wav;

use super::{EXIT_MARK, RESULT_MARK};
use crate::Result;

/// Console lines quoted in an error.
const TAIL: usize = 40;

/// What a guest run printed.
#[derive(Debug, Clone, Default)]
pub struct GuestOutput {
    /// The serial console, line by line (kernel messages included).
    pub console: Vec<String>,
    /// Every `@@virtio_sound result JSON` line, parsed.
    pub results: Vec<serde_json::Value>,
    /// `sim-guest`'s exit status, from `@@virtio_sound exit N`.
    pub exit: Option<i32>,
    /// From starting QEMU to its exit.
    pub wall: Duration,
    /// QEMU's own standard error.
    pub stderr: String,
}

impl GuestOutput {
    /// The last `n` console lines, one per line.
    pub fn tail(&self, n: usize) -> String {
        let from = self.console.len().saturating_sub(n);
        self.console[from..].join("\n")
    }
}

/// A run that did not end with `@@virtio_sound exit 0`: why, and everything it printed
/// (reachable from a `crate::Result` error by `downcast_ref::<GuestFailure>()`).
#[derive(Debug)]
pub struct GuestFailure {
    pub reason: String,
    pub output: GuestOutput,
}

impl std::fmt::Display for GuestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reason)?;
        if !self.output.stderr.trim().is_empty() {
            write!(f, "\nQEMU said:\n{}", self.output.stderr.trim_end())?;
        }
        write!(
            f,
            "\nlast {TAIL} console lines:\n{}",
            self.output.tail(TAIL)
        )
    }
}

impl std::error::Error for GuestFailure {}

/// The verdict of a QEMU run that ended (`status`, `None` when it was killed) or timed out:
/// the guest's result lines parsed into `out`, and `out` itself unless the guest failed.
pub fn verdict(
    mut out: GuestOutput,
    status: Option<ExitStatus>,
    timed_out: bool,
    timeout: Duration,
) -> Result<GuestOutput> {
    let fail = |reason: String, output: GuestOutput| -> Result<GuestOutput> {
        Err(Box::new(GuestFailure { reason, output }))
    };
    let mut bad_results = Vec::new();
    // isa-debug-exit: the guest writes its status + 1 (at most 127, see `sim-guest exit`),
    // QEMU exits with 2 * value + 1. QEMU's own failures exit with 1 (value 0), a power-off
    // with 0: neither is a guest verdict.
    let device_exit = status
        .and_then(|s| s.code())
        .filter(|c| c % 2 == 1 && *c >= 3)
        .map(|c| (c >> 1) - 1);
    for line in &out.console {
        if let Some(at) = line.find(RESULT_MARK) {
            let json = &line[at + RESULT_MARK.len()..];
            match serde_json::from_str(json) {
                Ok(v) => out.results.push(v),
                Err(e) => bad_results.push(format!("{e}: {line}")),
            }
        } else if let Some(at) = line.find(EXIT_MARK) {
            out.exit = line[at + EXIT_MARK.len()..].trim().parse().ok();
        }
    }
    if timed_out {
        let reason = format!(
            "QEMU did not finish within {} s and was killed{}",
            timeout.as_secs_f64(),
            match out.exit {
                Some(n) => format!(" (the guest had printed exit {n})"),
                None => String::new(),
            }
        );
        return fail(reason, out);
    }
    let qemu = status.map(|s| s.to_string()).unwrap_or_default();
    match (device_exit, out.exit) {
        (Some(d), Some(c)) if d != c => {
            let reason = format!(
                "the exit device said {d} but the console said {c}: the console is garbled"
            );
            return fail(reason, out);
        }
        (Some(d), None) => out.exit = Some(d),
        _ => {}
    }
    match out.exit {
        None => fail(
            format!("the guest never printed `{EXIT_MARK}N` (QEMU {qemu})"),
            out,
        ),
        Some(0) if !bad_results.is_empty() => fail(
            format!("unparsable result lines:\n{}", bad_results.join("\n")),
            out,
        ),
        Some(0) => Ok(out),
        Some(n) => fail(format!("sim-guest exited with status {n}"), out),
    }
}

/// Makes the header of a WAV file written by QEMU's wav audio backend (audio/wavaudio.c,
/// `wav_init_out` and `wav_fini_out`) say what the file holds, for a reader that takes it at
/// its word:
///
/// - QEMU writes the RIFF and `data` sizes only at a clean exit: killed, or left through
///   isa-debug-exit, it leaves them 0 (a crash may leave them past the end). A `data` chunk
///   whose size is 0 or runs past the end holds the rest of the file, in whole frames.
/// - QEMU computes the byte rate and frame size as for one or two channels
///   (`1 << (bits16 + stereo)`, where `stereo` is `nchannels == 2`): they are set from the
///   channels and bits per sample, which it writes right.
fn fix_qemu_header(b: &mut [u8]) {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return;
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let riff = (b.len() - 8) as u32;
    b[4..8].copy_from_slice(&riff.to_le_bytes());
    let mut frame = 1;
    let mut pos = 12;
    while pos + 8 <= b.len() {
        let len = u32_at(b, pos + 4) as usize;
        let body = pos + 8;
        let rest = b.len() - body;
        match &b[pos..pos + 4] {
            // WAVE_FORMAT_PCM: tag, channels, rate, byte rate, frame size, bits per sample.
            b"fmt " if len >= 16 && rest >= 16 && u16_at(b, body) == 1 => {
                let block = u32::from(u16_at(b, body + 2)) * u32::from(u16_at(b, body + 14)) / 8;
                if let Ok(block16) = u16::try_from(block) {
                    let rate = u32_at(b, body + 4);
                    b[body + 8..body + 12].copy_from_slice(&rate.wrapping_mul(block).to_le_bytes());
                    b[body + 12..body + 14].copy_from_slice(&block16.to_le_bytes());
                    frame = block.max(1) as usize;
                }
            }
            b"data" => {
                if len == 0 || len > rest {
                    let whole = (rest / frame * frame) as u32;
                    b[pos + 4..pos + 8].copy_from_slice(&whole.to_le_bytes());
                }
                return;
            }
            _ => {}
        }
        pos = body + len + (len & 1);
    }
}

/// Reads a WAV file written by QEMU's wav audio backend, also one whose sizes were never
/// written because QEMU was killed or left through isa-debug-exit.
pub fn read_qemu_wav(path: &Path) -> Result<Wav> {
    let mut b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    fix_qemu_header(&mut b);
    Ok(Wav::parse(&b).map_err(|e| format!("{}: {e}", path.display()))?)
}

#[cfg(test)]
mod tests {
    use hmulti_client::wav::SampleFormat;

    use super::*;

    #[test]
    fn unfinished_qemu_wavs_read() {
        let w = Wav::sine(997.0, 48000, 2, SampleFormat::S16, 0.01);
        let good = w.to_bytes().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.wav");
        // As QEMU leaves it when killed: both sizes 0.
        let mut zero = good.clone();
        zero[4..8].fill(0);
        zero[40..44].fill(0);
        std::fs::write(&path, &zero).unwrap();
        assert_eq!(read_qemu_wav(&path).unwrap(), w);
        // A size larger than the file (written, then truncated by a crash).
        let mut long = good.clone();
        long[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &long).unwrap();
        assert_eq!(read_qemu_wav(&path).unwrap(), w);
        // A complete file is left alone.
        std::fs::write(&path, &good).unwrap();
        assert_eq!(read_qemu_wav(&path).unwrap(), w);
        // A half frame at the end is dropped.
        let mut odd = zero.clone();
        odd.push(7);
        std::fs::write(&path, &odd).unwrap();
        assert_eq!(read_qemu_wav(&path).unwrap(), w);
    }

    /// The header `wav_init_out` (QEMU's audio/wavaudio.c) writes for 4 channels of 16-bit at
    /// 48 kHz: byte rate `freq << 1` and frame size `1 << 1`, as for mono; sizes 0.
    #[test]
    fn qemu_headers_of_more_than_two_channels_read() {
        let mut b: Vec<u8> = [
            *b"RIFF",
            [0, 0, 0, 0],
            *b"WAVE",
            *b"fmt ",
            [16, 0, 0, 0],
            [1, 0, 4, 0],           // PCM, 4 channels
            48000u32.to_le_bytes(), // rate
            96000u32.to_le_bytes(), // byte rate
            [2, 0, 16, 0],          // frame size 2, 16 bits
            *b"data",
            [0, 0, 0, 0],
        ]
        .concat();
        let frames: Vec<u8> = (1..=16).collect(); // two frames of four 16-bit samples
        b.extend_from_slice(&frames);
        b.push(99); // a partial frame
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.wav");
        std::fs::write(&path, &b).unwrap();
        let w = read_qemu_wav(&path).unwrap();
        assert_eq!(
            (w.rate, w.channels, w.format),
            (48000, 4, SampleFormat::S16)
        );
        assert_eq!(w.data, frames);
    }
}
