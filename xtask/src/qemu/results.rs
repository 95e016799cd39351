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

/// Sets the RIFF and `data` sizes of a WAV file QEMU did not finish (its wav backend writes
/// them only at a clean exit) from the file's length: a `data` chunk whose size is 0 or runs
/// past the end holds the rest of the file.
fn fix_wav_sizes(b: &mut [u8]) {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return;
    }
    let riff = (b.len() - 8) as u32;
    b[4..8].copy_from_slice(&riff.to_le_bytes());
    let mut pos = 12;
    while pos + 8 <= b.len() {
        let len = u32::from_le_bytes([b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7]]) as usize;
        let rest = b.len() - pos - 8;
        if &b[pos..pos + 4] == b"data" {
            if len == 0 || len > rest {
                b[pos + 4..pos + 8].copy_from_slice(&(rest as u32).to_le_bytes());
            }
            return;
        }
        pos += 8 + len + (len & 1);
    }
}

/// Reads a WAV file written by QEMU's wav audio backend, also one whose sizes were never
/// written because QEMU was killed or left through isa-debug-exit.
pub fn read_qemu_wav(path: &Path) -> Result<Wav> {
    let mut b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    fix_wav_sizes(&mut b);
    Ok(Wav::parse(&b).map_err(|e| format!("{}: {e}", path.display()))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_qemu_wavs_read() {
        let w = Wav::sine(997.0, 48000, 2, hmulti_client::wav::SampleFormat::S16, 0.01);
        let good = w.to_bytes();
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
}
