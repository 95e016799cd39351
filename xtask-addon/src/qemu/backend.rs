//! A boot with a sound server as QEMU's audio backend (`--backend pa|jack`): the server
//! started for the run ([`host_audio`]), what it received from QEMU, what the add-on
//! recorded from it, and the server's own numbers.
//!
//! The order of one boot: the server starts (and, for PulseAudio, `parec` records the
//! output sink; for JACK, the tap records QEMU's output ports); QEMU boots the guest, whose
//! `sim-guest` prints `@@virtio_sound streaming` just before its first exchange; on that
//! line the microphone's input starts playing (`paplay`, or the tap's `cap_N` ports). The
//! guest plays for long enough to record all of it, then writes its recording to the debug
//! console, which QEMU puts in a file. Every [`super::run::WATCH_PERIOD`] the server is checked:
//! a server that died ends the run with its log's tail. Whatever happens, the server and its
//! clients are stopped when the boot's values are dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmulti_client::wav::{SampleFormat, Wav};
use host_audio::jack::{JackServer, Tap, TapStats};
use host_audio::process::Daemon;
use host_audio::pulse::{PulseServer, Recorder};
use serde_json::Value;

use super::results::read_qemu_wav;
use super::run::{run_dir, timer_period_us, Audiodev, Guest, GuestRun, Watcher};
use super::{GUEST_INPUT, STREAMING_MARK};
use crate::Result;

/// QEMU's audio backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// QEMU's wav backend: what the device plays goes to a file; nothing to record.
    Wav,
    /// QEMU's none backend: output discarded, input silence.
    None,
    /// A private, headless PulseAudio server.
    Pa,
    /// A private JACK server with its dummy driver.
    Jack,
}

impl Backend {
    /// Whether it is a sound server (which can record).
    pub fn is_server(self) -> bool {
        matches!(self, Backend::Pa | Backend::Jack)
    }
}

/// Buffering QEMU asks PulseAudio for each way, µs (QEMU's default, 15 ms, underruns when
/// the emulator is late; 50 ms still did under TCG on a loaded 2-core machine; a larger one
/// only delays the first frame).
pub const PA_LATENCY_US: u32 = 200_000;

/// Frames per JACK cycle (43 ms at 48 kHz: the dummy driver's late wake-ups are xruns).
pub const JACK_PERIOD: u32 = 2048;

/// From the streaming cue to the microphone's input reaching the guest, and after its end:
/// what the guest records beyond the input's length, seconds.
pub const CAPTURE_MARGIN_S: f64 = 1.5;

/// What one boot with a server does.
pub struct ServerBoot<'a> {
    pub backend: Backend,
    /// Played through the add-on; `None`: the guest plays silence and only records.
    pub play: Option<&'a Wav>,
    /// The microphone's input (16-bit at the stream's rate); `None`: nothing recorded.
    pub cap: Option<&'a Wav>,
    pub rate: u32,
    pub channels: u16,
    pub timeout: Duration,
}

/// What the server measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ServerStats {
    /// Xruns the server reported (JACK: to the tap's callback), in all and from the
    /// microphone's start to the end of the run.
    pub xruns: Option<u32>,
    pub xruns_while_streaming: Option<u32>,
    /// Xrun lines in the server's log (JACK).
    pub logged_xruns: Option<usize>,
    /// The server's frames against the host's monotonic clock, ppm (JACK's dummy driver).
    pub drift_ppm: Option<f64>,
    /// From the streaming cue to the microphone's input starting, µs.
    pub cue_to_cap_us: Option<u64>,
}

/// One boot's results.
pub struct ServerRun {
    pub guest: Vec<Value>,
    /// What the server received from QEMU (16-bit at the stream's rate).
    pub out: Option<Wav>,
    /// What the add-on recorded.
    pub rec: Option<Wav>,
    pub server: ServerStats,
    pub wall: Duration,
}

/// The server of one boot.
enum Server {
    Pa {
        server: PulseServer,
        recorder: Option<Recorder>,
        player: Option<Daemon>,
        cap_file: Option<PathBuf>,
    },
    /// The tap is dropped (closed) before its server.
    Jack { tap: Tap, server: JackServer },
}

struct Watch<'s> {
    server: &'s mut Server,
    cue: Option<Instant>,
    cap_started: Option<Instant>,
}

impl Watch<'_> {
    fn check(&mut self) -> Result {
        match self.server {
            Server::Pa { server, .. } => server.check_alive(),
            Server::Jack { server, tap } => {
                server.check_alive()?;
                if tap.stats().shut_down {
                    return Err(format!(
                        "jackd shut the tap down; the end of its log:\n{}",
                        server.log_tail(15)
                    )
                    .into());
                }
                Ok(())
            }
        }
    }
}

impl Watcher for Watch<'_> {
    fn line(&mut self, line: &str) -> Result {
        // The console may carry a terminal's escape sequences before it.
        if !line.trim_end().ends_with(STREAMING_MARK) || self.cue.is_some() {
            return Ok(());
        }
        self.cue = Some(Instant::now());
        match self.server {
            Server::Pa {
                server,
                player,
                cap_file: Some(cap),
                ..
            } => *player = Some(server.play_capture(cap)?),
            Server::Jack { tap, .. } => tap.play(),
            Server::Pa { .. } => return Ok(()),
        }
        self.cap_started = Some(Instant::now());
        Ok(())
    }

    fn tick(&mut self) -> Result {
        self.check()
    }
}

/// The guest's arguments for a boot.
fn guest_args(boot: &ServerBoot<'_>) -> Vec<String> {
    let record_s = boot
        .cap
        .map(|c| c.frames() as f64 / f64::from(boot.rate.max(1)) + CAPTURE_MARGIN_S);
    let mut args: Vec<String> = match boot.play {
        Some(_) => vec!["play".into(), "--input".into(), GUEST_INPUT.into()],
        None => vec![
            "capture".into(),
            "--rate".into(),
            boot.rate.to_string(),
            "--format".into(),
            "s16".into(),
            "--seconds".into(),
            format!("{:.3}", record_s.unwrap_or(1.0)),
        ],
    };
    if let Some(s) = record_s {
        args.push("--record".into());
        if boot.play.is_some() {
            args.extend(["--min-seconds".into(), format!("{s:.3}")]);
        }
    }
    if boot.channels != 2 {
        args.extend(["--device-channels".into(), boot.channels.to_string()]);
    }
    args
}

/// Boots the guest once with a private server as the audio backend.
pub fn boot(guest: &Guest, boot: &ServerBoot<'_>) -> Result<ServerRun> {
    let dir = run_dir()?;
    let rec_file = dir.path().join("recorded.wav");
    let out_file = dir.path().join("out.wav");
    let timer = timer_period_us(boot.rate);
    let (mut server, audiodev, env) = match boot.backend {
        Backend::Pa => {
            let server = PulseServer::start(boot.rate, boot.channels)?;
            let cap_file = match boot.cap {
                Some(cap) => {
                    let p = server.dir().join("cap.wav");
                    std::fs::write(&p, cap.to_bytes()?)
                        .map_err(|e| format!("{}: {e}", p.display()))?;
                    Some(p)
                }
                None => None,
            };
            let recorder = match boot.play {
                Some(_) => Some(server.record_output(&out_file)?),
                None => None,
            };
            let audiodev = server.qemu_audiodev("snd0", PA_LATENCY_US, timer);
            let env = server.client_env();
            (
                Server::Pa {
                    server,
                    recorder,
                    player: None,
                    cap_file,
                },
                audiodev,
                env,
            )
        }
        Backend::Jack => {
            let server = JackServer::start(boot.rate, JACK_PERIOD)?;
            let seconds = boot.timeout.as_secs_f64();
            let cap: Vec<i16> = boot.cap.map(samples16).unwrap_or_default();
            let tap = server.tap(boot.channels, seconds, cap)?;
            let audiodev = server.qemu_audiodev("snd0", boot.channels, timer);
            (Server::Jack { server, tap }, audiodev, Vec::new())
        }
        other => return Err(format!("{other:?} is not a sound server").into()),
    };
    let mut files = Vec::new();
    if let Some(w) = boot.play {
        files.push((GUEST_INPUT.to_string(), w.to_bytes()?));
    }
    let run = GuestRun {
        args: guest_args(boot),
        files,
        audiodev: Audiodev::Server(audiodev),
        timeout: boot.timeout,
        echo: false,
        debugcon: boot.cap.map(|_| rec_file.clone()),
        env,
    };
    let mut watch = Watch {
        server: &mut server,
        cue: None,
        cap_started: None,
    };
    let result = guest.run_watched(&run, &mut watch);
    let cue_to_cap_us = match (watch.cue, watch.cap_started) {
        (Some(a), Some(b)) => Some((b - a).as_micros() as u64),
        _ => None,
    };
    let out = result?;
    // What the server still carries reaches its recorder.
    std::thread::sleep(Duration::from_millis(300));
    let mut stats = ServerStats {
        cue_to_cap_us,
        ..ServerStats::default()
    };
    let out_wav = match server {
        Server::Pa {
            mut server,
            recorder,
            player,
            ..
        } => {
            server.check_alive()?;
            drop(player);
            match recorder {
                Some(r) => Some(read_qemu_wav(&r.finish()?)?),
                None => None,
            }
        }
        Server::Jack { mut server, tap } => {
            server.check_alive()?;
            let (recorded, s) = tap.finish();
            stats.xruns = Some(s.xruns);
            stats.xruns_while_streaming = Some(s.xruns_while_playing);
            stats.drift_ppm = s.server_drift_ppm;
            stats.logged_xruns = Some(server.logged_xruns());
            check_tap(&s)?;
            boot.play
                .map(|_| wav16(boot.rate, boot.channels, &recorded))
        }
    };
    let rec = match boot.cap {
        Some(_) => Some(read_recording(&rec_file)?),
        None => None,
    };
    Ok(ServerRun {
        guest: out.results,
        out: out_wav,
        rec,
        server: stats,
        wall: out.wall,
    })
}

fn check_tap(s: &TapStats) -> Result {
    if s.overflow_samples > 0 {
        return Err(format!(
            "the JACK tap had no room for {} samples (the run outlasted its timeout)",
            s.overflow_samples
        )
        .into());
    }
    Ok(())
}

/// The guest's recording, as QEMU's debug console wrote it.
fn read_recording(path: &Path) -> Result<Wav> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if b.is_empty() {
        return Err(format!(
            "{}: the guest sent no recording to the debug console",
            path.display()
        )
        .into());
    }
    Ok(Wav::parse(&b).map_err(|e| format!("the guest's recording: {e}"))?)
}

/// A 16-bit WAV's samples.
pub fn samples16(w: &Wav) -> Vec<i16> {
    w.data
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Interleaved 16-bit samples as a WAV.
pub fn wav16(rate: u32, channels: u16, samples: &[i16]) -> Wav {
    Wav {
        rate,
        channels,
        format: SampleFormat::S16,
        data: samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_arguments_per_mode() {
        let w = Wav {
            rate: 48000,
            channels: 2,
            format: SampleFormat::S16,
            data: vec![0; 48000 * 4],
        };
        let b = |play, cap| ServerBoot {
            backend: Backend::Pa,
            play,
            cap,
            rate: 48000,
            channels: 2,
            timeout: Duration::from_secs(60),
        };
        assert_eq!(
            guest_args(&b(Some(&w), None)),
            ["play", "--input", "/in.wav"]
        );
        assert_eq!(
            guest_args(&b(None, Some(&w))),
            [
                "capture",
                "--rate",
                "48000",
                "--format",
                "s16",
                "--seconds",
                "2.500",
                "--record"
            ]
        );
        assert_eq!(
            guest_args(&b(Some(&w), Some(&w))),
            [
                "play",
                "--input",
                "/in.wav",
                "--record",
                "--min-seconds",
                "2.500"
            ]
        );
        let mono = ServerBoot {
            channels: 1,
            ..b(Some(&w), None)
        };
        assert_eq!(guest_args(&mono)[3..], ["--device-channels", "1"]);
        assert_eq!(samples16(&wav16(8000, 1, &[1, -2, 300])), [1, -2, 300]);
    }
}
