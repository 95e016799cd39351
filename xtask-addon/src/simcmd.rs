//! `cargo xtask sim`: play a WAV file (or a 997 Hz sine) through the built add-on in the
//! Haiku kernel simulator and write exactly what the device received.

use std::path::{Path, PathBuf};

use hmulti_client::wav::{SampleFormat, Wav};
use hmulti_client::{self as client, play, Choice, Session};
use snd_model::{CaptureCompletion, ModelConfig, PlaybackCompletion, StreamConfig};
use spec::hmulti_audio as hm;
use spec::virtio_snd::{PcmFormat, PcmRate};

use crate::Result;

/// Most channels a card publishes per direction, as clap takes a range.
const MOST_CHANNELS: i64 = driver::hmulti::MAX_CHANNELS as i64;

/// What to play: the options `cargo xtask sim` and `cargo xtask qemu` share.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamArgs {
    /// Sample rate in Hz, one with an hmulti bit (default: the input file's, else 48000).
    #[arg(long)]
    pub rate: Option<u32>,
    /// Sample format: s16, s32, float or u8 (default: the input file's, else s16).
    #[arg(long)]
    pub format: Option<String>,
    /// Channels, 1 to 16 (default: the input file's, else 2).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=MOST_CHANNELS))]
    pub channels: Option<u16>,
    /// Seconds of the default sine, 0.001 to 600 (ignored with --input).
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// A WAV file to play (default: a 997 Hz sine).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// The add-on to load (default: build it with `cargo xtask build-haiku`).
    #[arg(long)]
    pub addon: Option<PathBuf>,
}

/// Channels a card publishes per direction: what `--channels` may ask for.
pub const CHANNELS: std::ops::RangeInclusive<u16> = 1..=driver::hmulti::MAX_CHANNELS as u16;

/// What `--seconds` may be: at least a millisecond, at most ten minutes (the sine is made in
/// memory: ten minutes of 16 channels at 384 kHz are 15 GB).
pub const SECONDS: std::ops::RangeInclusive<f64> = 0.001..=600.0;

/// The rates in Hz that have an hmulti bit (`B_SR_*`) and a virtio rate (`PcmRate`), ascending:
/// what a card can publish, from the two ABIs' own tables, not the driver's.
pub fn hmulti_rates() -> Vec<u32> {
    let mut v: Vec<u32> = client::RATES
        .iter()
        .map(|&(_, hz)| hz)
        .filter(|&hz| PcmRate::from_hz(hz).is_some())
        .collect();
    v.sort_unstable();
    v
}

/// Refuses a rate that is not in `valid`, naming `option` and every valid rate.
pub fn check_rate(option: &str, hz: u32, valid: &[u32], what: &str) -> Result {
    if valid.contains(&hz) {
        return Ok(());
    }
    let list: Vec<String> = valid.iter().map(u32::to_string).collect();
    Err(format!(
        "{option} {hz}: not {what}; use one of {} (Hz)",
        list.join(", ")
    )
    .into())
}

/// Refuses a channel count the driver cannot publish; `what` names where it came from.
pub fn check_channels(what: &str, channels: u16) -> Result {
    if CHANNELS.contains(&channels) {
        return Ok(());
    }
    Err(format!(
        "{what}: {channels} channels is out of range; the driver publishes {} to {} per \
         direction",
        CHANNELS.start(),
        CHANNELS.end()
    )
    .into())
}

impl StreamArgs {
    /// Refuses every option out of range, with the valid range, before anything runs.
    /// `rates`: the rates the device can play (`hmulti_rates()` for the simulator's).
    pub fn check(&self, rates: &[u32], what: &str) -> Result {
        if let Some(hz) = self.rate {
            check_rate("--rate", hz, rates, what)?;
        }
        if let Some(f) = &self.format {
            parse_format(f)?;
        }
        if let Some(c) = self.channels {
            check_channels("--channels", c)?;
        }
        if !SECONDS.contains(&self.seconds) {
            return Err(format!(
                "--seconds {}: out of range; use {} to {}",
                self.seconds,
                SECONDS.start(),
                SECONDS.end()
            )
            .into());
        }
        Ok(())
    }

    /// The stream to play: `--input` (checked against the other options) or a 997 Hz sine,
    /// and its hmulti format bit.
    pub fn wav(&self) -> Result<(Wav, u32)> {
        let input = match &self.input {
            Some(p) => {
                let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
                Some(Wav::parse(&bytes).map_err(|e| format!("{}: {e}", p.display()))?)
            }
            None => None,
        };
        let (sample, fmt_bit) = match (&self.format, &input) {
            (Some(f), _) => parse_format(f)?,
            (None, Some(w)) => (w.format, hmulti_format(w.format)?),
            (None, None) => (SampleFormat::S16, hm::B_FMT_16BIT),
        };
        let rate = self
            .rate
            .or(input.as_ref().map(|w| w.rate))
            .unwrap_or(48000);
        let channels = self
            .channels
            .or(input.as_ref().map(|w| w.channels))
            .unwrap_or(2);
        let from = if self.channels.is_none() && input.is_some() {
            "the input"
        } else {
            "--channels"
        };
        check_channels(from, channels)?;
        let wav = match input {
            Some(w) => {
                if w.rate != rate || w.channels != channels || w.format != sample {
                    return Err(format!(
                        "the input is {} Hz, {} channels, {:?}; the stream is {rate} Hz, \
                         {channels} channels, {sample:?}: pass matching \
                         --rate/--channels/--format",
                        w.rate, w.channels, w.format
                    )
                    .into());
                }
                w
            }
            None => Wav::sine(997.0, rate, channels, sample, self.seconds),
        };
        Ok((wav, fmt_bit))
    }
}

/// Options of `cargo xtask sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Where to write what the device received.
    #[arg(long, required_unless_present = "latency")]
    pub out: Option<PathBuf>,
    /// Where to write what the client recorded.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// A device description (TOML) instead of the default two-stream device.
    #[arg(long)]
    pub device_config: Option<PathBuf>,
    /// How the virtio bus delivers queue interrupts, as Haiku's virtio_pci does with the
    /// interrupts it gets: `per-queue` (MSI-X, a vector per queue) or `shared` (INTx or one
    /// MSI-X vector: every queue's callback on each interrupt, plus spurious ones).
    #[arg(long, default_value = "per-queue", value_name = "per-queue|shared")]
    pub interrupts: haiku_sim::Interrupts,
    /// The Haiku release whose ABI the simulated kernel presents: `nightly` or `beta5`
    /// (R1/beta5: its kernel exports, a three-argument `alloc_queues`, a `negotiate_features`
    /// that calls the name callback without a NULL check).
    #[arg(long, default_value = "nightly", value_name = "beta5|nightly", value_parser = haiku_release)]
    pub haiku: haiku_sim::HaikuRelease,
    /// Play even when the add-on misuses the kernel (double deletes, invalid ids, leaks:
    /// the report is printed either way), and exit 0 if the playback itself worked.
    #[arg(long)]
    pub allow_misuse: bool,
    #[command(flatten)]
    pub latency: crate::latency::LatencyArgs,
}

fn haiku_release(s: &str) -> std::result::Result<haiku_sim::HaikuRelease, String> {
    haiku_sim::HaikuRelease::from_name(s)
        .ok_or_else(|| format!("unknown Haiku release {s:?}: beta5 or nightly"))
}

fn parse_format(s: &str) -> Result<(SampleFormat, u32)> {
    let f = SampleFormat::from_name(s)
        .ok_or_else(|| format!("unknown --format {s:?}: use s16, s32, float or u8"))?;
    Ok((f, hmulti_format(f)?))
}

fn hmulti_format(f: SampleFormat) -> Result<u32> {
    Ok(client::format_bit(f).ok_or_else(|| {
        format!(
            "{f:?} WAV files cannot be played through hmulti; use 8-bit unsigned, 16/32-bit \
             or float"
        )
    })?)
}

/// The device the simulator offers: from a TOML description, or one output and one input
/// stream with exactly `channels` channels, every rate and the formats hmulti can use.
/// The description may name a device (`device = "qemu" | "qemu-wav" | "vhost-null"`,
/// `ModelConfig::preset`), say when it completes buffers (`capture`, `playback`) and list
/// streams, each replacing the default's or the named device's.
pub fn device_config(path: Option<&Path>, channels: u8) -> Result<ModelConfig> {
    let Some(path) = path else {
        return Ok(ModelConfig::hmulti_full(channels));
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        device: Option<toml::Spanned<String>>,
        capture: Option<toml::Spanned<String>>,
        playback: Option<toml::Spanned<String>>,
        #[serde(default)]
        stream: Vec<Stream>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Stream {
        direction: String,
        channels: [u8; 2],
        rates: Vec<u32>,
        formats: Vec<String>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let f: File = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    // A value none of `names` parses: the file, the line and the key, and what it may be.
    let pick = |key: &str, v: &toml::Spanned<String>, names: &[&str]| {
        let line = text[..v.span().start].matches('\n').count() + 1;
        format!(
            "{}:{line}: {key} = {:?}: use {}",
            path.display(),
            v.get_ref(),
            names.join(", ")
        )
    };
    let mut config = match &f.device {
        Some(d) => ModelConfig::preset(d.get_ref())
            .ok_or_else(|| pick("device", d, &ModelConfig::PRESETS))?,
        None => ModelConfig::hmulti_full(channels),
    };
    if let Some(c) = &f.capture {
        config.capture = CaptureCompletion::from_name(c.get_ref())
            .ok_or_else(|| pick("capture", c, &CaptureCompletion::NAMES))?;
    }
    if let Some(p) = &f.playback {
        config.playback = PlaybackCompletion::from_name(p.get_ref())
            .ok_or_else(|| pick("playback", p, &PlaybackCompletion::NAMES))?;
    }
    let mut streams = Vec::new();
    for s in f.stream {
        let rates: Vec<PcmRate> = s
            .rates
            .iter()
            .map(|hz| {
                PcmRate::from_hz(*hz)
                    .ok_or(format!("{}: no virtio rate of {hz} Hz", path.display()))
            })
            .collect::<std::result::Result<_, _>>()?;
        let formats: Vec<PcmFormat> = s
            .formats
            .iter()
            .map(|n| {
                PcmFormat::ALL
                    .iter()
                    .copied()
                    .find(|f| {
                        f.c_name()
                            .eq_ignore_ascii_case(&format!("VIRTIO_SND_PCM_FMT_{n}"))
                    })
                    .ok_or(format!("{}: unknown format {n:?}", path.display()))
            })
            .collect::<std::result::Result<_, _>>()?;
        let base = match s.direction.as_str() {
            "output" => StreamConfig::output(),
            "input" => StreamConfig::input(),
            d => {
                return Err(format!(
                    "{}: direction {d:?} is neither output nor input",
                    path.display()
                )
                .into())
            }
        };
        streams.push(
            base.with_channels(s.channels[0], s.channels[1])
                .with_rates(&rates)
                .with_formats(&formats),
        );
    }
    if !streams.is_empty() {
        config.streams = streams;
    }
    Ok(config)
}

/// Percentiles of absolute timing errors in µs.
pub fn percentiles(mut errors: Vec<i64>) -> (i64, i64, i64) {
    errors.sort();
    let p = |q: f64| {
        errors
            .get(((errors.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    (p(0.5), p(0.99), errors.last().copied().unwrap_or(0))
}

pub fn run(args: &SimArgs) -> Result {
    args.stream
        .check(&hmulti_rates(), "a rate hmulti has a bit for")?;
    if args.latency.latency {
        let addon = match &args.stream.addon {
            Some(p) => p.clone(),
            None => crate::haiku::build()?,
        };
        return crate::latency::run_sim(&args.latency, &addon);
    }
    let (wav, fmt_bit) = args.stream.wav()?;
    let (rate, channels) = (wav.rate, wav.channels);
    let rate_bit = client::rate_bit(rate).ok_or(format!("{rate} Hz has no hmulti rate bit"))?;
    let addon = match &args.stream.addon {
        Some(p) => p.clone(),
        None => crate::haiku::build()?,
    };
    let config = device_config(
        args.device_config.as_deref(),
        u8::try_from(channels).map_err(|_| "too many channels")?,
    )?;
    let env = haiku_sim::EnvConfig {
        interrupts: args.interrupts,
        haiku: args.haiku,
        ..haiku_sim::EnvConfig::default()
    };
    let host = haiku_sim::addon::Addon::load_in(&addon, config, None, env, |_| {})
        .map_err(|e| format!("loading {}: {e}", addon.display()))?;
    let kernel = host.kernel().clone();
    let played = play_through(&host, args, &wav, rate_bit, fmt_bit);
    let leftovers = host.unload().err().unwrap_or_default();
    let misuse = misuse_rows(&kernel, &leftovers);
    if !misuse.is_empty() {
        print!("{}", misuse_table(&misuse));
    }
    played?;
    if !misuse.is_empty() && !args.allow_misuse {
        return Err(format!(
            "the add-on misused the kernel {} time(s) (listed above; --allow-misuse to ignore)",
            misuse.len()
        )
        .into());
    }
    Ok(())
}

/// One row of the misuse report: the code address of the call (`None` for what is found
/// left over at unload) and what was wrong.
type MisuseRow = (Option<String>, String);

/// What the simulator found wrong: the failures it recorded during the run, each with the
/// code address of the add-on's call, then what was left over at unload.
fn misuse_rows(kernel: &sim_kernel::SimKernel, leftovers: &[String]) -> Vec<MisuseRow> {
    let recorded = kernel.failure_entries();
    let mut rows: Vec<MisuseRow> = recorded
        .iter()
        .map(|f| (f.site.clone(), f.message.clone()))
        .collect();
    rows.extend(
        leftovers
            .iter()
            .filter(|l| !recorded.iter().any(|f| &f.message == *l))
            .map(|l| (None, l.clone())),
    );
    rows
}

/// The misuse report as `cargo xtask sim` prints it: a table of code address and misuse.
fn misuse_table(rows: &[MisuseRow]) -> String {
    let site = |s: &Option<String>| s.clone().unwrap_or_else(|| "(at unload)".into());
    let width = rows
        .iter()
        .map(|(s, _)| site(s).len())
        .chain(["code address".len()])
        .max()
        .unwrap_or(0);
    let mut t = format!("misuse: {} found by the simulated kernel\n", rows.len());
    t += &format!("  {:width$}  what\n", "code address");
    for (s, what) in rows {
        t += &format!("  {:width$}  {what}\n", site(s));
    }
    t
}

/// Opens the add-on's device and plays `wav` through it, printing the run's figures.
fn play_through(
    host: &haiku_sim::addon::Addon,
    args: &SimArgs,
    wav: &Wav,
    rate_bit: u32,
    fmt_bit: u32,
) -> Result {
    let (rate, channels, sample) = (wav.rate, wav.channels, wav.format);
    let dev = host.open_first().map_err(|e| {
        // The add-on's log says why (each stream it leaves out has a line).
        let why: Vec<String> = host
            .kernel()
            .log_records()
            .into_iter()
            .filter(|r| r.message.starts_with("virtio_sound: "))
            .map(|r| format!("\n  {}", r.message.trim_end()))
            .collect();
        format!("opening the device: {e}{}", why.concat())
    })?;
    let found = host.kernel().failures().len();
    if found > 0 && !args.allow_misuse {
        return Err(format!(
            "the add-on misused the kernel {found} time(s) before playing (listed above); \
             --allow-misuse plays anyway"
        )
        .into());
    }
    let mut s = Session::init(
        &dev,
        Choice {
            rate: Some(rate_bit),
            format: Some(fmt_bit),
        },
    )?;
    if s.format.output.rate != rate_bit || s.format.output.format != fmt_bit {
        return Err(format!("the device does not offer {rate} Hz {sample:?} (it chose rate bit {:#x}, format bit {:#x})", s.format.output.rate, s.format.output.format).into());
    }
    if s.desc.output_channel_count != channels as i32 {
        return Err(format!(
            "the device publishes {} output channels, not {channels}",
            s.desc.output_channel_count
        )
        .into());
    }
    let p = play(&dev, &mut s, &wav.data);
    let played = host.model().played(0);
    let truth = host.model().periods(0);
    let frames = p.buffer_frames as i64;
    let errors: Vec<i64> = p
        .reports
        .iter()
        .filter(|(_, f)| *f > 0)
        .filter_map(|&(t, f)| {
            truth
                .get((f / frames - 1) as usize)
                .map(|g| (t - g.time).abs())
        })
        .collect();
    let (p50, p99, max) = percentiles(errors);
    let xruns = host.model().xruns(0).len();
    let out = Wav {
        rate,
        channels,
        format: sample,
        data: played,
    };
    let path = args.out.as_ref().ok_or("--out is needed")?;
    std::fs::write(path, out.to_bytes()?).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(r) = &args.record {
        let rec = Wav {
            rate,
            channels,
            format: sample,
            data: p.recorded.clone(),
        };
        std::fs::write(r, rec.to_bytes()?).map_err(|e| format!("{}: {e}", r.display()))?;
    }
    let lead = p.buffers * p.buffer_frames;
    println!(
        "Haiku {}: rate {rate} Hz, format {sample:?}, {channels} channels",
        args.haiku.name()
    );
    println!(
        "periods: {} buffers x {} frames; {} exchanges, {} failed",
        p.buffers,
        p.buffer_frames,
        p.reports.len(),
        p.errors
    );
    let frame_bytes = s.play.frame_bytes().max(1);
    let padding = s.stop_padding_bytes() / frame_bytes;
    let quiet = s.silence_byte();
    // "Silence" only where the bytes are the format's silence.
    let describe = |what: &str, bytes: &[u8]| match bytes.iter().position(|&b| b != quiet) {
        None => format!("{what} silence"),
        Some(at) => format!(
            "{what}, NOT silence (byte {at} is {:#04x}, silence is {quiet:#04x})",
            bytes[at]
        ),
    };
    let lead_bytes = (lead * frame_bytes).min(out.data.len());
    let pad_from = out.data.len().saturating_sub(padding * frame_bytes);
    println!(
        "output: {} frames ({lead} frames of {}, the input, then {padding} frames of {})",
        out.frames(),
        describe("lead-in", &out.data[..lead_bytes]),
        describe("stop padding", &out.data[pad_from.max(lead_bytes)..]),
    );
    println!("xruns: {xruns} (the device underruns once when a drained stream ends)");
    if host.model().config().playback == PlaybackCompletion::Instant {
        // The device completes buffers as they are queued: it has no time of its own.
        let gaps: Vec<i64> = p.reports.windows(2).map(|w| w[1].0 - w[0].0).collect();
        let (lo, hi) = (gaps.iter().min(), gaps.iter().max());
        println!(
            "played_real_time: no device ground truth (it completes playback as queued); \
             reports {} to {} us apart",
            lo.unwrap_or(&0),
            hi.unwrap_or(&0)
        );
    } else {
        println!(
            "played_real_time vs device ground truth: p50 {p50} us, p99 {p99} us, max {max} us"
        );
    }
    let irq = host.env().interrupt_stats();
    println!(
        "interrupts ({}): {} from the device, {} spurious, {} queue callbacks",
        args.interrupts.name(),
        irq.device,
        irq.spurious,
        irq.callbacks
    );
    s.release(&dev);
    dev.close();
    Ok(())
}
