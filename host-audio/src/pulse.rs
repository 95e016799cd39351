//! A private, headless PulseAudio server for one run.
//!
//! Started as `pulseaudio --daemonize=no -n -F FILE` in a fresh directory: `-n` loads no
//! `default.pa`, so only our modules run (no device detection, no stored volumes: every
//! stream stays at 100 %, which PulseAudio passes through untouched when its sample spec and
//! channel map equal the sink's, `src/pulsecore/sink.c` `pa_sink_render`). Running as root
//! without `--system` only logs a warning (`src/daemon/main.c`). It must not see a D-Bus
//! session bus: with one whose `org.PulseAudio1` name is taken by the user's own server, it
//! exits (`main.c`), so it gets no `DBUS_SESSION_BUS_ADDRESS` and no `DISPLAY`. Its runtime
//! and state directories (`PULSE_RUNTIME_PATH`, `PULSE_STATE_PATH`) and `HOME` are the run's
//! directory.
//!
//! Two null sinks at the stream's rate, 16-bit, stereo (`module-null-sink`, clocked by the
//! system clock; `norewinds=1` keeps its blocks small):
//! - `vsnd_out`: QEMU plays into it; `parec` records its monitor source into a WAV file;
//! - `vsnd_cap`: `paplay` plays the microphone's input into it; QEMU records its monitor.
//!   (`module-pipe-source` would be simpler but has no clock: it posts whatever arrives.)
//!
//! Clients (QEMU, `parec`, `paplay`) get `PULSE_SERVER`-style explicit server addresses and
//! a `client.conf` with `autospawn = no`: libpulse would otherwise start, or reach, the
//! user's own server when ours is not there (`src/pulse/context.c`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::Daemon;
use crate::{need, server_dir, Result};

/// The sink QEMU plays into.
pub const OUT_SINK: &str = "vsnd_out";
/// The sink the microphone's input is played into; QEMU records its monitor.
pub const CAP_SINK: &str = "vsnd_cap";

/// How long the server has to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running private PulseAudio server. Dropping it stops the server and removes its
/// directory.
pub struct PulseServer {
    // Dropped first: the server ends before its directory goes.
    daemon: Daemon,
    dir: tempfile::TempDir,
    pub rate: u32,
    pub channels: u16,
}

impl PulseServer {
    /// An error naming the Debian package of a missing binary.
    pub fn check_installed() -> Result {
        need("pulseaudio", "pulseaudio")?;
        need("parec", "pulseaudio-utils")?;
        need("paplay", "pulseaudio-utils")?;
        need("pactl", "pulseaudio-utils")?;
        Ok(())
    }

    /// Starts a server whose two sinks run at `rate` Hz with `channels` channels, 16-bit.
    pub fn start(rate: u32, channels: u16) -> Result<PulseServer> {
        if !(1..=32).contains(&channels) {
            return Err(format!("{channels} channels: PulseAudio takes 1 to 32").into());
        }
        Self::check_installed()?;
        let bin = need("pulseaudio", "pulseaudio")?;
        let dir = server_dir("vsnd-pa-")?;
        let d = dir.path();
        let map = match channels {
            1 => "mono".to_owned(),
            2 => "front-left,front-right".to_owned(),
            n => (0..n)
                .map(|i| format!("aux{i}"))
                .collect::<Vec<_>>()
                .join(","),
        };
        let sink = |name: &str| {
            format!(
                "load-module module-null-sink sink_name={name} format=s16le rate={rate} \
                 channels={channels} channel_map={map} norewinds=1\n"
            )
        };
        let script = format!(
            "load-module module-native-protocol-unix socket={} auth-anonymous=1\n{}{}",
            d.join("native").display(),
            sink(OUT_SINK),
            sink(CAP_SINK)
        );
        let write = |name: &str, text: &str| {
            let p = d.join(name);
            std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
        };
        write("vsnd.pa", &script)?;
        write("client.conf", "autospawn = no\n")?;
        let mut cmd = Command::new(bin);
        cmd.arg("--daemonize=no")
            .arg("-n")
            .arg("-F")
            .arg(d.join("vsnd.pa"))
            .args([
                "--exit-idle-time=-1",
                "--realtime=no",
                "--high-priority=no",
                "--disable-shm=yes",
                "--log-target=stderr",
            ])
            .current_dir(d);
        let run = d.join("runtime");
        let state = d.join("state");
        let daemon = Daemon::spawn(
            "pulseaudio",
            cmd,
            &[
                ("HOME", d.to_path_buf()),
                ("PULSE_RUNTIME_PATH", run),
                ("PULSE_STATE_PATH", state),
            ],
            &d.join("pulseaudio.log"),
        )?;
        let mut server = PulseServer {
            daemon,
            dir,
            rate,
            channels,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.daemon.check_alive()?;
            // A module that fails to load does not end the daemon.
            let log = self.daemon.log_tail(50);
            if log.contains("Failed to load module") {
                return Err(format!("pulseaudio could not load its modules:\n{log}").into());
            }
            let sinks = self.pactl(&["list", "short", "sinks"]);
            if let Ok(text) = &sinks {
                if text.contains(OUT_SINK) && text.contains(CAP_SINK) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "pulseaudio did not offer its sinks within {} s{}; the end of its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    sinks.err().map_or_else(String::new, |e| format!(" ({e})")),
                    self.daemon.log_tail(15)
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's directory (its socket, logs, the client configuration).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's address for clients.
    pub fn address(&self) -> String {
        format!("unix:{}", self.dir().join("native").display())
    }

    /// The server's pid.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// An error with the log's tail if the server has died.
    pub fn check_alive(&mut self) -> Result {
        self.daemon.check_alive()
    }

    /// The end of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.daemon.log_tail(lines)
    }

    /// The environment a client of this server needs (and nothing that reaches another).
    pub fn client_env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("HOME", self.dir().to_path_buf()),
            ("PULSE_CLIENTCONFIG", self.dir().join("client.conf")),
            ("PULSE_RUNTIME_PATH", self.dir().join("runtime")),
        ]
    }

    /// `program --server=ADDRESS`; [`Daemon::spawn`] gives it [`Self::client_env`].
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg(format!("--server={}", self.address()));
        cmd
    }

    /// `pactl ARGS` against this server; its output.
    pub fn pactl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.client("pactl");
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        let out = cmd
            .envs(self.client_env())
            .args(args)
            .output()
            .map_err(|e| format!("pactl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pactl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// QEMU's `-audiodev` option for this server, with id `id`: plays into [`OUT_SINK`],
    /// records [`CAP_SINK`]'s monitor, at the server's rate and channels in 16-bit with
    /// fixed settings (anything else and QEMU would convert or resample), and `latency_us`
    /// of buffering in the server each way (QEMU's default, 15 ms, underruns under TCG).
    pub fn qemu_audiodev(&self, id: &str, latency_us: u32, timer_period_us: u32) -> String {
        let (r, c) = (self.rate, self.channels);
        format!(
            "pa,id={id},server={},out.name={OUT_SINK},in.name={CAP_SINK}.monitor,\
             out.frequency={r},in.frequency={r},out.channels={c},in.channels={c},\
             out.format=s16,in.format=s16,out.fixed-settings=on,in.fixed-settings=on,\
             out.latency={latency_us},in.latency={latency_us},timer-period={timer_period_us}",
            self.address().replace(',', ",,")
        )
    }

    /// Starts recording what is played into [`OUT_SINK`] to `wav` (16-bit, the server's
    /// rate and channels). Stop it with [`Recorder::finish`].
    pub fn record_output(&self, wav: &Path) -> Result<Recorder> {
        self.record_sink(OUT_SINK, wav)
    }

    /// Starts recording what is played into `sink` to `wav`.
    pub fn record_sink(&self, sink: &str, wav: &Path) -> Result<Recorder> {
        let mut cmd = self.client("parec");
        cmd.arg(format!("--device={sink}.monitor"))
            .args(self.spec_args())
            .arg("--file-format=wav")
            .arg(wav);
        let daemon = Daemon::spawn(
            "parec",
            cmd,
            &self.client_env(),
            &self.dir().join("parec.log"),
        )?;
        Ok(Recorder {
            daemon,
            path: wav.to_path_buf(),
        })
    }

    /// Starts playing `wav` (16-bit at the server's rate and channels) into [`CAP_SINK`],
    /// which QEMU records.
    pub fn play_capture(&self, wav: &Path) -> Result<Daemon> {
        let mut cmd = self.client("paplay");
        cmd.arg(format!("--device={CAP_SINK}")).arg(wav);
        Daemon::spawn(
            "paplay",
            cmd,
            &self.client_env(),
            &self.dir().join("paplay.log"),
        )
    }

    fn spec_args(&self) -> [String; 3] {
        [
            "--format=s16le".into(),
            format!("--rate={}", self.rate),
            format!("--channels={}", self.channels),
        ]
    }
}

/// `parec` writing a WAV file.
pub struct Recorder {
    daemon: Daemon,
    path: PathBuf,
}

impl Recorder {
    /// Stops recording (SIGINT: `parec` then finishes its file, `src/utils/pacat.c`) and
    /// returns the file's path. What the server still buffered is lost: stop only after
    /// some silence.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.daemon.check_alive()?;
        self.daemon.signal(libc::SIGINT);
        if self.daemon.wait_timeout(crate::process::GRACE).is_none() {
            return Err(format!(
                "parec did not finish its file after SIGINT; its log:\n{}",
                self.daemon.log_tail(10)
            )
            .into());
        }
        Ok(self.path.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav16(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut w = Vec::new();
        let block = 2 * channels as u32;
        w.extend_from_slice(b"RIFF");
        w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        w.extend_from_slice(b"WAVEfmt ");
        w.extend_from_slice(&16u32.to_le_bytes());
        w.extend_from_slice(&1u16.to_le_bytes());
        w.extend_from_slice(&channels.to_le_bytes());
        w.extend_from_slice(&rate.to_le_bytes());
        w.extend_from_slice(&(rate * block).to_le_bytes());
        w.extend_from_slice(&(block as u16).to_le_bytes());
        w.extend_from_slice(&16u16.to_le_bytes());
        w.extend_from_slice(b"data");
        w.extend_from_slice(&(data.len() as u32).to_le_bytes());
        w.extend_from_slice(&data);
        w
    }

    /// The samples of a 16-bit WAV file parec wrote (its header is 44 bytes when the file
    /// was finished).
    fn samples(wav: &[u8]) -> Vec<i16> {
        let at = wav.windows(4).position(|w| w == b"data").unwrap() + 8;
        wav[at..]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect()
    }

    /// What paplay plays into the microphone's sink comes out of its monitor sample for
    /// sample, with silence around it; the server is gone afterwards and the clients never
    /// reached another server.
    #[test]
    fn a_private_server_passes_sixteen_bit_audio_through_and_leaves_nothing() {
        if crate::find_on_path("pulseaudio").is_none() && std::env::var_os("CI").is_none() {
            eprintln!("skipping: no pulseaudio");
            return;
        }
        let mut server = PulseServer::start(44100, 2).unwrap();
        let pid = server.pid().unwrap();
        let dir = server.dir().to_path_buf();
        let cap: Vec<i16> = (0..44100 * 2)
            .map(|i| (i * 13 % 65536 - 32768) as i16)
            .collect();
        let input = dir.join("cap.wav");
        std::fs::write(&input, wav16(44100, 2, &cap)).unwrap();
        let rec = server.record_sink(CAP_SINK, &dir.join("rec.wav")).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let mut player = server.play_capture(&input).unwrap();
        assert!(player
            .wait_timeout(Duration::from_secs(10))
            .is_some_and(|s| s.success()));
        std::thread::sleep(Duration::from_millis(300));
        let got = samples(&std::fs::read(rec.finish().unwrap()).unwrap());
        server.check_alive().unwrap();
        let at = got.iter().position(|&v| v != 0).expect("nothing recorded");
        assert_eq!(&got[at..at + cap.len()], &cap[..], "not exact");
        assert!(got[at + cap.len()..].iter().all(|&v| v == 0));
        assert!(server
            .qemu_audiodev("snd0", 50000, 10000)
            .contains(&format!(
                "server=unix:{}/native,out.name=vsnd_out,in.name=vsnd_cap.monitor",
                dir.display()
            )));
        drop(server);
        assert!(
            !crate::process::alive(pid),
            "pulseaudio {pid} still running"
        );
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn a_server_that_cannot_start_says_why() {
        if crate::find_on_path("pulseaudio").is_none() {
            return;
        }
        // A rate module-null-sink refuses (above PA_RATE_MAX).
        let t = Instant::now();
        let e = PulseServer::start(1_000_000, 2)
            .err()
            .expect("started")
            .to_string();
        assert!(e.contains("could not load its modules"), "{e}");
        assert!(e.contains("module-null-sink"), "{e}");
        assert!(t.elapsed() < START_TIMEOUT, "{:?}", t.elapsed());
        let e = PulseServer::start(48000, 0)
            .err()
            .expect("started")
            .to_string();
        assert!(e.contains("1 to 32"), "{e}");
    }
}
