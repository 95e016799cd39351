//! `xtask-addon memcheck-session` (hidden; for the memcheck test, which runs it under
//! valgrind): the built add-on loaded by the simulator, one device per channel count, and on
//! each open device a run per format (a format change between runs), each run playing and
//! recording, ended by FORCE_STOP and then restarted after it, playback checked bit for bit;
//! then close and unload, with the simulator's misuse and leak checks.

use std::path::PathBuf;

use hmulti_client::wav::SampleFormat;
use hmulti_client::{self as client, play, Choice, Session};
use snd_model::ModelConfig;

use crate::Result;

/// Options of `memcheck-session`.
#[derive(Debug, Clone, clap::Args)]
pub struct MemcheckArgs {
    /// The add-on to load (default: build it with `cargo xtask build-haiku`).
    #[arg(long)]
    pub addon: Option<PathBuf>,
    /// Milliseconds of audio per run.
    #[arg(long, default_value_t = 100)]
    pub millis: u32,
    /// One device: `CHANNELS=RATE:FORMAT,RATE:FORMAT,...` (formats u8, s16, s32,
    /// float), each pair a run on the same open device.
    #[arg(
        long = "device",
        value_name = "CHANNELS=RATE:FORMAT,...",
        required = true
    )]
    pub devices: Vec<String>,
}

/// `CHANNELS=RATE:FORMAT,...` as (channels, [(rate bit, format bit, name)]).
#[allow(clippy::type_complexity)]
fn parse_device(s: &str) -> Result<(u8, Vec<(u32, u32, String)>)> {
    let (ch, runs) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected CHANNELS=RATE:FORMAT,..."))?;
    let channels: u8 = ch
        .parse()
        .map_err(|_| format!("{s:?}: bad channel count"))?;
    let mut out = Vec::new();
    for run in runs.split(',') {
        let (rate, fmt) = run
            .split_once(':')
            .ok_or_else(|| format!("{run:?}: expected RATE:FORMAT"))?;
        let hz: u32 = rate.parse().map_err(|_| format!("{run:?}: bad rate"))?;
        let rate_bit = client::rate_bit(hz).ok_or_else(|| format!("{hz} Hz has no hmulti bit"))?;
        let sample = SampleFormat::from_name(fmt).ok_or_else(|| format!("{fmt:?}: no format"))?;
        let fmt_bit =
            client::format_bit(sample).ok_or_else(|| format!("{fmt:?}: no hmulti bit"))?;
        out.push((rate_bit, fmt_bit, run.to_string()));
    }
    Ok((channels, out))
}

pub fn run(args: &MemcheckArgs) -> Result {
    let addon = match &args.addon {
        Some(p) => p.clone(),
        None => crate::haiku::build()?,
    };
    for device in &args.devices {
        let (channels, runs) = parse_device(device)?;
        let host = haiku_sim::addon::Addon::load_in(
            &addon,
            ModelConfig::hmulti_full(channels),
            None,
            haiku_sim::EnvConfig::default(),
            |_| {},
        )
        .map_err(|e| format!("loading {}: {e}", addon.display()))?;
        let dev = host.open_first()?;
        for (rate, format, name) in &runs {
            let what = format!("{channels} ch, {name}");
            let mut s = Session::init(
                &dev,
                Choice {
                    rate: Some(*rate),
                    format: Some(*format),
                },
            )
            .map_err(|e| format!("{what}: {e}"))?;
            if (s.format.output.rate, s.format.output.format) != (*rate, *format) {
                return Err(format!("{what}: the device chose another format").into());
            }
            let hz = u64::from(s.output_hz());
            let frames = (hz * u64::from(args.millis) / 1000) as usize;
            let bytes = (frames * s.play.frame_bytes()).max(s.play.bytes());
            // Twice: the second run restarts the stream the first one's FORCE_STOP stopped.
            for round in 0..2u8 {
                let before = host.model().played(0).len();
                let input: Vec<u8> = (0..bytes)
                    .map(|i| (i.wrapping_mul(131) as u8) ^ round)
                    .collect();
                let p = play(&dev, &mut s, &input);
                if p.errors != 0 {
                    return Err(format!("{what}: {} exchanges failed", p.errors).into());
                }
                let played = host.model().played(0);
                // The lead-in: every buffer the driver queues before the client wrote one.
                let whole = input.len().div_ceil(s.play.bytes()) * s.play.bytes();
                let mut padded = input.clone();
                padded.resize(whole, 0);
                s.check_played(&played[before..], p.buffers * s.play.bytes(), &padded)
                    .map_err(|e| format!("{what}, run {round}: {e}"))?;
                if p.recorded.is_empty() {
                    return Err(format!("{what}, run {round}: nothing recorded").into());
                }
            }
            println!("{what}: played and recorded twice, bit-exact");
            s.release(&dev);
        }
        if dev.close() != 0 {
            return Err(format!("{channels} ch: close failed").into());
        }
        let kernel = host.kernel().clone();
        host.unload().map_err(|v| v.join("\n"))?;
        let failures = kernel.failures();
        if !failures.is_empty() {
            return Err(format!("the add-on misused the kernel:\n{}", failures.join("\n")).into());
        }
    }
    Ok(())
}
