//! `cargo xtask qemu`: play through the built add-on on QEMU's real `virtio-sound-pci`
//! device (in a Linux guest, see [`crate::qemu`]), compare QEMU's recording with the input,
//! and print the numbers: start-up latency, xruns, CPU per second of audio, drift.

use std::path::PathBuf;
use std::time::Duration;

use hmulti_client::wav::{SampleFormat, Wav};
use serde_json::{json, Value};

use crate::qemu::backend::{self, Backend, ServerBoot, ServerRun};
use crate::qemu::vhost::Backend as VhostBackend;
use crate::qemu::{read_qemu_wav, run_dir, Audiodev, Guest, GuestRun, GUEST_ADDON, GUEST_INPUT};
use crate::simcmd::{check_rate, StreamArgs};
use crate::vhostcmd::{vhost_rates, DeviceKind, Vhost};
use crate::Result;

/// Options of `cargo xtask qemu`: those of `cargo xtask sim`, and what only a real device
/// has.
#[derive(Debug, Clone, clap::Args)]
pub struct QemuArgs {
    /// What to play, as for `cargo xtask sim`. QEMU's device is stereo; another channel
    /// count is set up by preparing its streams with it first.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// QEMU's audio backend: `wav` (a file; no capture), `none` (silence in, nothing out),
    /// or a private sound server started for the run and stopped after it: `pa` (headless
    /// PulseAudio) or `jack` (jackd with its dummy driver), which record what the device
    /// plays and feed its microphone.
    #[arg(long, value_enum, default_value_t = Backend::Wav)]
    pub backend: Backend,
    /// Where to write what the backend received (16-bit; with `wav` at least two channels:
    /// QEMU's mixer would sum a mono stream's two copies into a mono file).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With `--backend pa|jack`: record through the add-on while the server plays
    /// `--capture-input` into QEMU's input, and write what the add-on recorded here. Without
    /// `--duplex` the add-on plays silence meanwhile.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// With `--backend pa|jack`: what the server plays into QEMU's input (16-bit, the
    /// stream's rate and channels; default: `--seconds` of noise).
    #[arg(long, value_name = "CAP.wav")]
    pub capture_input: Option<PathBuf>,
    /// With `--backend pa|jack`: play the input and record at the same time, in one session,
    /// as a media application with a microphone and speakers does.
    #[arg(long)]
    pub duplex: bool,
    /// Not available here: the device is QEMU's (see --channels).
    #[arg(long)]
    pub device_config: Option<PathBuf>,
    /// The driver's settings file for the run (as in
    /// `~/config/settings/kernel/drivers/virtio_sound`: frames_per_buffer, buffer_count...).
    #[arg(long, value_name = "FILE")]
    pub driver_settings: Option<PathBuf>,
    /// Play random noise at 44.1, 48, 96, 192 and 384 kHz (or `--rates`), one boot each,
    /// and print a table; `--seconds` long each.
    #[arg(long)]
    pub sweep: bool,
    /// The rates of `--sweep`, comma-separated (e.g. 8000,22050).
    #[arg(long, value_delimiter = ',', requires = "sweep")]
    pub rates: Vec<u32>,
    /// Record (through `-audiodev none`, which captures silence) while playing silence,
    /// and report the capture's pace and timestamps.
    #[arg(long)]
    pub capture: bool,
    /// In one boot: play, stop, play again, reconfigure to this rate and play, close,
    /// reopen and play.
    #[arg(long, value_name = "RATE2")]
    pub cycle: Option<u32>,
    /// Write everything measured as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Seconds before QEMU is killed (default: 120 plus twice the audio's length: an
    /// emulated guest boots in tens of seconds and plays in real time).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// The sound device: QEMU's own virtio-sound-pci, or rust-vmm's vhost-device-sound
    /// behind vhost-user-snd-pci (8 to 48 kHz).
    #[arg(long, value_enum, default_value_t = DeviceKind::Qemu)]
    pub device: DeviceKind,
    /// Remove the sound device (QMP `device_del`, ACPI hotplug on a PCIe root port) after
    /// this many seconds of playing silence, and report how the guest and the add-on came
    /// through: the blocked exchange's status and time, `device_removed`, the unload.
    #[arg(long, value_name = "SECONDS", conflicts_with_all = [
        "sweep", "capture", "cycle", "out", "record", "duplex", "capture_input"
    ])]
    pub unplug_after: Option<f64>,
    #[command(flatten)]
    pub latency: crate::latency::LatencyArgs,
}

/// Rates of `--sweep`.
pub const SWEEP_RATES: [u32; 5] = [44100, 48000, 96000, 192000, 384000];

/// What `--timeout` may be, in seconds.
pub const TIMEOUT: std::ops::RangeInclusive<u64> = 1..=3600;

/// The rates in Hz QEMU's device offers that have an hmulti bit (QEMU has the fourteen
/// virtio 1.2 rates, 5512 to 384000 Hz; 5512 Hz has no bit), ascending.
pub fn qemu_rates() -> Vec<u32> {
    let mut v = crate::simcmd::hmulti_rates();
    v.retain(|&hz| {
        spec::virtio_snd::PcmRate::from_hz(hz)
            .is_some_and(|r| r.mask() & snd_model::QEMU_RATES != 0)
    });
    v
}

impl QemuArgs {
    /// `--timeout`, or 120 s plus twice `seconds` of audio.
    pub fn timeout_for(&self, seconds: f64) -> Duration {
        Duration::from_secs(
            self.timeout
                .unwrap_or(120 + (2.0 * seconds.max(0.0)).ceil() as u64),
        )
    }

    /// Refuses every option out of range, with the valid range, before anything runs.
    pub fn check(&self) -> Result {
        let (rates, what) = match self.device {
            DeviceKind::Qemu => (qemu_rates(), "a rate QEMU's device offers"),
            DeviceKind::Vhost => (vhost_rates(), "a rate vhost-device-sound offers"),
        };
        self.stream.check(&rates, what)?;
        for &hz in &self.rates {
            check_rate("--rates", hz, &rates, what)?;
        }
        if let Some(hz) = self.cycle {
            check_rate("--cycle", hz, &rates, what)?;
        }
        if let Some(s) = self
            .unplug_after
            .filter(|s| !crate::qemu::hotplug::UNPLUG_AFTER.contains(s))
        {
            let r = crate::qemu::hotplug::UNPLUG_AFTER;
            return Err(format!(
                "--unplug-after {s}: out of range; use {} to {} (seconds)",
                r.start(),
                r.end()
            )
            .into());
        }
        if let Some(t) = self.timeout.filter(|t| !TIMEOUT.contains(t)) {
            return Err(format!(
                "--timeout {t}: out of range; use {} to {} (seconds)",
                TIMEOUT.start(),
                TIMEOUT.end()
            )
            .into());
        }
        Ok(())
    }
}

/// Where the input turned up in what the device played.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Comparison {
    pub input_frames: usize,
    /// Frames before the input starts (the first buffers are the zeroed area).
    pub lead_frames: usize,
    /// Input frames found in order, sample for sample, from its start.
    pub matched_frames: usize,
    /// Frames after the input (the driver's stop padding, what QEMU let through of it).
    pub trailing_frames: usize,
    pub lead_silent: bool,
    pub trailing_silent: bool,
}

impl Comparison {
    /// The whole input, sample for sample, with nothing but silence around it.
    pub fn exact(&self) -> bool {
        self.matched_frames == self.input_frames && self.lead_silent && self.trailing_silent
    }
}

/// Finds `input` in `output` (QEMU's 16-bit file). A mono input is expected in both
/// channels of a stereo file. `None` if the two cannot be compared sample for sample
/// (another format or rate: QEMU converted them).
pub fn compare(input: &Wav, output: &Wav) -> Option<Comparison> {
    if input.format != SampleFormat::S16
        || output.format != SampleFormat::S16
        || input.rate != output.rate
    {
        return None;
    }
    let expected: Vec<u8> = match (input.channels, output.channels) {
        (a, b) if a == b => input.data.clone(),
        (1, 2) => input
            .data
            .chunks_exact(2)
            .flat_map(|s| [s[0], s[1], s[0], s[1]])
            .collect(),
        _ => return None,
    };
    let fb = 2 * output.channels as usize;
    let input_frames = expected.len() / fb;
    let out = &output.data[..output.data.len() / fb * fb];
    // The first frames that are not silence anchor the search (an input that is all silence
    // cannot be found anywhere).
    let anchor_at = expected
        .chunks_exact(fb)
        .position(|f| f.iter().any(|&b| b != 0))?;
    let anchor_len = (input_frames - anchor_at).min(64) * fb;
    let anchor = &expected[anchor_at * fb..anchor_at * fb + anchor_len];
    let not_found = Comparison {
        input_frames,
        lead_frames: 0,
        matched_frames: 0,
        trailing_frames: out.len() / fb,
        lead_silent: true,
        trailing_silent: out.iter().all(|&b| b == 0),
    };
    if out.len() < anchor_at * fb + anchor_len {
        return Some(not_found);
    }
    let Some(found) = (anchor_at * fb..=out.len() - anchor_len)
        .step_by(fb)
        .find(|&o| out[o..o + anchor_len] == *anchor)
    else {
        return Some(not_found);
    };
    let start = found - anchor_at * fb;
    let matched_frames = out[start..]
        .chunks(fb)
        .zip(expected.chunks(fb))
        .take_while(|(a, b)| a == b)
        .count();
    let end = (start + input_frames * fb).min(out.len());
    Some(Comparison {
        input_frames,
        lead_frames: start / fb,
        matched_frames,
        trailing_frames: (out.len() - end) / fb,
        lead_silent: out[..start].iter().all(|&b| b == 0),
        trailing_silent: out[end..].iter().all(|&b| b == 0),
    })
}

/// Deterministic white noise (xorshift), 16-bit: a signal with no repeats, so it can be
/// found in the output at exactly one place.
pub fn noise(rate: u32, channels: u16, seconds: f64, seed: u64) -> Wav {
    let frames = (f64::from(rate) * seconds) as usize;
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(frames * channels as usize * 2);
    for _ in 0..frames * channels as usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&((x >> 24) as u16).to_le_bytes());
    }
    Wav {
        rate,
        channels,
        format: SampleFormat::S16,
        data,
    }
}

/// One playback boot: what the guest measured and what QEMU recorded.
pub struct Played {
    pub guest: Vec<Value>,
    pub output: Wav,
    pub comparison: Option<Comparison>,
    pub wall: Duration,
}

/// Boots the guest once to play `wav` (with QEMU's streams prepared with `channels` first
/// if that is not QEMU's 2).
pub fn play(guest: &Guest, wav: &Wav, timeout: Duration) -> Result<Played> {
    let dir = run_dir()?;
    let file = dir.path().join("played.wav");
    let mut args: Vec<String> = vec![
        "play".into(),
        "--addon".into(),
        GUEST_ADDON.into(),
        "--input".into(),
        GUEST_INPUT.into(),
    ];
    if wav.channels != 2 {
        args.extend(["--device-channels".into(), wav.channels.to_string()]);
    }
    let run = GuestRun {
        args,
        files: vec![(GUEST_INPUT.to_string(), wav.to_bytes()?)],
        audiodev: Audiodev::Wav {
            path: file.clone(),
            frequency: wav.rate,
            channels: wav.channels.max(2),
        },
        timeout,
        echo: false,
        debugcon: None,
        env: Vec::new(),
    };
    let out = guest.run(&run)?;
    let output = read_qemu_wav(&file)?;
    let comparison = compare(wav, &output);
    Ok(Played {
        guest: out.results,
        output,
        comparison,
        wall: out.wall,
    })
}

/// Boots the guest once with `-audiodev none` (its timer set for `rate`) and
/// `sim-guest ARGS`; its result lines.
pub fn boot_silent(
    guest: &Guest,
    args: &[String],
    rate: u32,
    timeout: Duration,
) -> Result<Vec<Value>> {
    let run = GuestRun {
        args: args.to_vec(),
        files: Vec::new(),
        audiodev: Audiodev::None { frequency: rate },
        timeout,
        echo: false,
        debugcon: None,
        env: Vec::new(),
    };
    Ok(guest.run(&run)?.results)
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// One line of numbers for a guest result.
fn numbers(v: &Value) -> String {
    format!(
        "start-up {:.1} ms, xruns {} (client late {}, device ran dry {}), errors {}, CPU {:.1} \
         ms per s of audio, drift {:+.0} ppm (max deviation {:.1} ms), {} buffers x {} frames",
        num(v, "startup_us") / 1000.0,
        num(v, "xruns") + num(v, "device_ran_dry"),
        num(v, "xruns"),
        num(v, "device_ran_dry"),
        num(v, "errors"),
        num(v, "cpu_us_per_audio_s") / 1000.0,
        num(v, "drift_ppm"),
        num(v, "jitter_max_us") / 1000.0,
        num(v, "buffers"),
        num(v, "buffer_frames"),
    )
}

fn describe(c: &Option<Comparison>, vhost: Option<&Vhost>) -> String {
    match c {
        None if vhost.is_some_and(|v| v.backend == VhostBackend::Null) => {
            "nothing to compare: vhost-device-sound's null backend keeps nothing".to_string()
        }
        None => "not comparable sample for sample (another format, rate or channel count than \
                  QEMU's 16-bit file, or a silent input)"
            .to_string(),
        Some(c) if c.exact() => format!(
            "bit-exact: {} frames of lead-in silence, the whole input ({} frames), then {} \
             frames of silence",
            c.lead_frames, c.input_frames, c.trailing_frames
        ),
        Some(c) if c.matched_frames == 0 => "the input is not in the output".into(),
        Some(c) => format!(
            "NOT exact: {} of {} input frames in order from frame {}; lead-in silent {}, \
             tail silent {}",
            c.matched_frames, c.input_frames, c.lead_frames, c.lead_silent, c.trailing_silent
        ),
    }
}

/// The device of a run, as the report names it: `qemu`, `vhost-null` or `vhost-alsa`.
fn device_name(args: &QemuArgs) -> String {
    match args.device {
        DeviceKind::Qemu => "qemu".into(),
        DeviceKind::Vhost => format!("vhost-{}", VhostBackend::Null.name()),
    }
}

pub fn run(args: &QemuArgs) -> Result {
    args.check()?;
    if args.latency.latency {
        if args.backend != Backend::Wav || args.device != DeviceKind::Qemu {
            return Err("--latency: runs on QEMU's device with the wav backend only".into());
        }
        if args.driver_settings.is_some() {
            return Err("--latency: each candidate is its own driver settings file".into());
        }
        let guest = Guest::prepare(args.stream.addon.as_deref())?;
        return crate::latency::run_qemu(
            &args.latency,
            &guest,
            args.timeout,
            args.report.as_deref(),
        );
    }
    if args.backend.is_server() {
        return run_server(args);
    }
    for (given, option) in [
        (args.record.is_some(), "--record"),
        (args.capture_input.is_some(), "--capture-input"),
        (args.duplex, "--duplex"),
    ] {
        if given {
            return Err(format!(
                "{option}: QEMU's wav backend cannot capture and `-audiodev none` captures \
                 only silence; use --backend pa or jack (`--capture` measures capture's \
                 timing through `none`)"
            )
            .into());
        }
    }
    if args.device_config.is_some() {
        return Err(
            "--device-config: the device is QEMU's; --channels sets up its channel \
                    count"
                .into(),
        );
    }
    if let Some(after) = args.unplug_after {
        return crate::qemu::hotplug::run_unplug(args, after);
    }
    let timeout = args.timeout_for(args.stream.seconds);
    if args.backend == Backend::None
        && args.device == DeviceKind::Qemu
        && !(args.capture || args.cycle.is_some())
    {
        return Err("--backend none: use --capture or --cycle (it records nothing played)".into());
    }
    if args.device == DeviceKind::Vhost && args.out.is_some() {
        return Err("--out: vhost-device-sound's null backend keeps nothing to write".into());
    }
    // Before anything is built: a missing daemon is said at once.
    let vhost = match args.device {
        DeviceKind::Qemu => None,
        DeviceKind::Vhost => Some(Vhost::find(VhostBackend::Null)?),
    };
    let guest = Guest {
        settings: args.driver_settings.clone(),
        ..Guest::prepare(args.stream.addon.as_deref())?
    };
    let mut report = Vec::new();
    if args.capture || args.cycle.is_some() {
        let (wav, _) = args.stream.wav()?;
        // `wav()` accepts only formats hmulti plays, which all have a name.
        let (rate, format) = (wav.rate, wav.format.name().unwrap_or("s16"));
        let mut a: Vec<String> = vec![
            if args.capture { "capture" } else { "cycle" }.into(),
            "--rate".into(),
            rate.to_string(),
            "--format".into(),
            format.into(),
            "--seconds".into(),
            args.stream.seconds.to_string(),
        ];
        if let Some(r2) = args.cycle {
            a.extend(["--rate2".into(), r2.to_string()]);
        }
        let fastest = args.cycle.map_or(rate, |r2| r2.max(rate));
        let results = match &vhost {
            None => boot_silent(&guest, &a, fastest, timeout)?,
            Some(v) => v.boot_silent(&guest, &a, timeout)?,
        };
        for v in &results {
            let what = v.get("what").and_then(Value::as_str).unwrap_or("?");
            println!("{what}: {} Hz: {}", num(v, "rate"), numbers(v));
            if args.capture {
                println!(
                    "  capture: {} frames recorded, {} bytes read, recorded_real_time \
                     monotonic: {}, capture drift {:+.0} ppm over {} exchanges",
                    num(v, "recorded_frames"),
                    num(v, "recorded_bytes"),
                    num(v, "record_time_monotonic") == 1.0,
                    num(v, "record_drift_ppm"),
                    num(v, "record_points"),
                );
            }
        }
        report.push(json!({ "mode": a[0], "guest": results, "device": device_name(args) }));
    } else {
        let runs: Vec<Wav> = if args.sweep {
            let rates = if args.rates.is_empty() {
                let offered = match args.device {
                    DeviceKind::Qemu => qemu_rates(),
                    DeviceKind::Vhost => vhost_rates(),
                };
                SWEEP_RATES
                    .into_iter()
                    .filter(|hz| offered.contains(hz))
                    .collect()
            } else {
                args.rates.clone()
            };
            rates
                .iter()
                .map(|&r| {
                    let (channels, seconds) =
                        (args.stream.channels.unwrap_or(2), args.stream.seconds);
                    noise(r, channels, seconds, u64::from(r))
                })
                .collect()
        } else {
            // `wav()` refuses a channel count outside 1..=16, which QEMU's device takes too.
            let (wav, _) = args.stream.wav()?;
            vec![wav]
        };
        if args.sweep {
            println!("rate      result");
        }
        for wav in runs {
            let p = match &vhost {
                None => play(&guest, &wav, timeout)?,
                Some(v) => v.play(&guest, &wav, timeout)?,
            };
            let g = p.guest.first().cloned().unwrap_or(Value::Null);
            println!(
                "{} Hz, {:?}, {} channels: {}",
                wav.rate,
                wav.format,
                wav.channels,
                describe(&p.comparison, vhost.as_ref())
            );
            println!("  {}", numbers(&g));
            if let Some(mode) = g.get("interrupts").and_then(Value::as_str) {
                println!("  completions: {mode}");
            }
            if let (Some(out), false) = (&args.out, args.sweep) {
                std::fs::write(out, p.output.to_bytes()?)
                    .map_err(|e| format!("{}: {e}", out.display()))?;
                println!(
                    "  QEMU's recording ({} frames at {} Hz, {} channels) -> {}",
                    p.output.frames(),
                    p.output.rate,
                    p.output.channels,
                    out.display()
                );
            }
            report.push(json!({
                "mode": "play",
                "rate": wav.rate,
                "channels": wav.channels,
                "format": format!("{:?}", wav.format),
                "comparison": p.comparison,
                "exact": p.comparison.as_ref().is_some_and(Comparison::exact),
                "guest": p.guest,
                "boot_seconds": p.wall.as_secs_f64(),
                "device": device_name(args),
            }));
        }
    }
    write_report(args, &report)
}

pub fn write_report(args: &QemuArgs, report: &[Value]) -> Result {
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// The microphone's input: `--capture-input`, checked against the stream, or noise.
fn capture_input(args: &QemuArgs, rate: u32, channels: u16) -> Result<Wav> {
    let Some(path) = &args.capture_input else {
        return Ok(noise(rate, channels, args.stream.seconds, 0xcab));
    };
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let w = Wav::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if w.format != SampleFormat::S16 || w.rate != rate || w.channels != channels {
        return Err(format!(
            "{}: {} Hz, {} channels, {:?}; the server records {rate} Hz, {channels} channels, \
             16-bit: convert it, or pass matching --rate/--channels",
            path.display(),
            w.rate,
            w.channels,
            w.format
        )
        .into());
    }
    if w.data.iter().all(|&b| b == 0) {
        return Err(format!(
            "{}: all silence; it could not be found in a recording",
            path.display()
        )
        .into());
    }
    Ok(w)
}

/// `--backend pa|jack`: one boot with a private server.
fn run_server(args: &QemuArgs) -> Result {
    let backend = args.backend;
    if args.device == DeviceKind::Vhost {
        return Err(format!(
            "--backend {}: the sound server is QEMU's audio backend; vhost-device-sound has \
             its own (--device vhost runs with its null backend)",
            format!("{backend:?}").to_lowercase()
        )
        .into());
    }
    for (given, option) in [
        (args.sweep, "--sweep"),
        (args.capture, "--capture"),
        (args.cycle.is_some(), "--cycle"),
        (args.device_config.is_some(), "--device-config"),
    ] {
        if given {
            return Err(format!(
                "{option} runs with --backend wav or none; with a sound server use --record \
                 or --duplex"
            )
            .into());
        }
    }
    let (wav, _) = args.stream.wav()?;
    if wav.format != SampleFormat::S16 {
        return Err(format!(
            "--format {:?}: through a sound server only 16-bit can be compared sample for \
             sample (QEMU converts other formats, JACK carries float); use s16",
            wav.format
        )
        .into());
    }
    let records = args.record.is_some() || args.duplex || args.capture_input.is_some();
    let cap = if records {
        Some(capture_input(args, wav.rate, wav.channels)?)
    } else {
        None
    };
    let plays = args.duplex || !records;
    // The server's binaries before the (long) build.
    match backend {
        Backend::Pa => host_audio::pulse::PulseServer::check_installed()?,
        _ => host_audio::jack::JackServer::check_installed()?,
    }
    let guest = Guest {
        settings: args.driver_settings.clone(),
        ..Guest::prepare(args.stream.addon.as_deref())?
    };
    let boot = ServerBoot {
        backend,
        play: plays.then_some(&wav),
        cap: cap.as_ref(),
        rate: wav.rate,
        channels: wav.channels,
        timeout: args.timeout_for(
            (wav.frames() as f64 / f64::from(wav.rate)).max(
                cap.as_ref()
                    .map_or(0.0, |c| c.frames() as f64 / f64::from(c.rate)),
            ) + backend::CAPTURE_MARGIN_S,
        ),
    };
    let run = backend::boot(&guest, &boot)?;
    let out_cmp = run.out.as_ref().and_then(|o| compare(&wav, o));
    let rec_cmp = match (&cap, &run.rec) {
        (Some(c), Some(r)) => compare(c, r),
        _ => None,
    };
    let g = run.guest.first().cloned().unwrap_or(Value::Null);
    let mode = match (plays, records) {
        (true, true) => "duplex",
        (true, false) => "play",
        _ => "record",
    };
    println!(
        "{mode} through {backend:?} at {} Hz, {} channels, 16-bit",
        wav.rate, wav.channels
    );
    if plays {
        println!(
            "  played (the server's recording): {}",
            describe(&out_cmp, None)
        );
        println!("    {}", numbers(&g));
    }
    if let Some(c) = &cap {
        println!(
            "  recorded ({} frames of the microphone's input): {}",
            c.frames(),
            describe(&rec_cmp, None)
        );
        println!("    {}", record_numbers(&g));
    }
    let s = &run.server;
    println!(
        "  server: xruns {}, clock {} against the host's, microphone started {} after the cue",
        match (s.xruns, s.xruns_while_streaming) {
            (Some(x), Some(w)) => format!("{w} while streaming ({x} in all)"),
            _ => "not reported".into(),
        },
        s.drift_ppm
            .map_or("not measured".into(), |d| format!("{d:+.0} ppm")),
        s.cue_to_cap_us
            .map_or("-".into(), |us| format!("{:.1} ms", us as f64 / 1000.0)),
    );
    if let Some(server) = s.drift_ppm {
        // The guest's clock follows the host's (kvmclock, or TCG's host-based clock), so
        // the device's rate against the server's clock is the difference.
        println!(
            "  against the server's clock: playback {:+.0} ppm, capture {:+.0} ppm",
            num(&g, "drift_ppm") - server,
            num(&g, "record_drift_ppm") - server
        );
    }
    save(
        args.out.as_deref(),
        run.out.as_ref(),
        "the server's recording",
    )?;
    save(
        args.record.as_deref(),
        run.rec.as_ref(),
        "the add-on's recording",
    )?;
    let report = server_report(mode, &wav, &run, out_cmp, rec_cmp);
    write_report(args, &[report])
}

fn save(path: Option<&std::path::Path>, wav: Option<&Wav>, what: &str) -> Result {
    if let (Some(path), Some(w)) = (path, wav) {
        std::fs::write(path, w.to_bytes()?).map_err(|e| format!("{}: {e}", path.display()))?;
        println!(
            "  {what} ({} frames at {} Hz, {} channels) -> {}",
            w.frames(),
            w.rate,
            w.channels,
            path.display()
        );
    }
    Ok(())
}

/// The capture side of a guest result.
fn record_numbers(v: &Value) -> String {
    format!(
        "start-up {:.1} ms, xruns {}, drift {:+.0} ppm over {} exchanges, {} frames recorded",
        num(v, "record_startup_us") / 1000.0,
        num(v, "record_xruns"),
        num(v, "record_drift_ppm"),
        num(v, "record_points"),
        num(v, "recorded_frames"),
    )
}

fn server_report(
    mode: &str,
    wav: &Wav,
    run: &ServerRun,
    out: Option<Comparison>,
    rec: Option<Comparison>,
) -> Value {
    json!({
        "mode": mode,
        "rate": wav.rate,
        "channels": wav.channels,
        "played": out,
        "played_exact": out.as_ref().is_some_and(Comparison::exact),
        "recorded": rec,
        "recorded_exact": rec.as_ref().is_some_and(Comparison::exact),
        "server": run.server,
        "guest": run.guest,
        "boot_seconds": run.wall.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(channels: u16, data: Vec<u8>) -> Wav {
        Wav {
            rate: 48000,
            channels,
            format: SampleFormat::S16,
            data,
        }
    }

    #[test]
    fn finds_the_input_and_judges_what_surrounds_it() {
        let input = noise(48000, 2, 0.01, 7);
        let mut out = vec![0u8; 400 * 4];
        out.extend_from_slice(&input.data);
        out.extend(vec![0u8; 100 * 4]);
        let c = compare(&input, &wav(2, out.clone())).unwrap();
        assert!(c.exact(), "{c:?}");
        assert_eq!((c.lead_frames, c.trailing_frames), (400, 100));
        assert_eq!(c.matched_frames, 480);
        // A lost tail.
        let short = wav(2, out[..out.len() - 200 * 4].to_vec());
        let c = compare(&input, &short).unwrap();
        assert!(!c.exact());
        assert_eq!(c.matched_frames, 380);
        // A glitch in the middle.
        let mut bad = out.clone();
        bad[400 * 4 + 1000] ^= 1;
        let c = compare(&input, &wav(2, bad)).unwrap();
        assert_eq!(c.matched_frames, 250);
        // Noise in the lead-in.
        let mut noisy = out;
        noisy[8] = 1;
        assert!(!compare(&input, &wav(2, noisy)).unwrap().lead_silent);
        // Nowhere to be found, or an output shorter than the search needs: not found.
        for out in [vec![0; 4000], vec![], vec![1; 40]] {
            let c = compare(&input, &wav(2, out)).unwrap();
            assert_eq!(c.matched_frames, 0);
            assert!(!c.exact());
        }
        // A silent input cannot be found at all.
        assert_eq!(compare(&wav(2, vec![0; 400]), &wav(2, vec![0; 4000])), None);
    }

    #[test]
    fn a_mono_input_is_expected_in_both_channels() {
        let input = noise(48000, 1, 0.005, 3);
        let mut out = vec![0u8; 16];
        for s in input.data.chunks(2) {
            out.extend_from_slice(&[s[0], s[1], s[0], s[1]]);
        }
        let c = compare(&input, &wav(2, out.clone())).unwrap();
        assert!(c.exact(), "{c:?}");
        // Doubled (QEMU's mono file mixing) is not exact.
        let mut doubled = out;
        doubled[16 + 400] = doubled[16 + 400].wrapping_add(1);
        assert!(!compare(&input, &wav(2, doubled)).unwrap().exact());
        // Another rate cannot be compared.
        let mut other = input.clone();
        other.rate = 44100;
        assert_eq!(compare(&other, &wav(1, input.data.clone())), None);
    }

    #[test]
    fn noise_is_deterministic_and_not_silent() {
        let a = noise(8000, 2, 0.1, 5);
        assert_eq!(a.data, noise(8000, 2, 0.1, 5).data);
        assert_ne!(a.data, noise(8000, 2, 0.1, 6).data);
        assert_eq!(a.frames(), 800);
        assert!(a.data.chunks(4).all(|f| f != [0, 0, 0, 0]));
    }
}
