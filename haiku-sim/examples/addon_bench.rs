//! The workload `cargo xtask bench` profiles (not a test): a built add-on loaded in the
//! simulator, a device with one output stream (and one input stream for `duplex`), and the
//! media add-on's exchange loop at one rate and channel count in 16-bit samples.
//!
//! Usage: addon_bench ADDON RATE_HZ CHANNELS play|duplex EXCHANGES
//!
//! After start-up and a few exchanges it runs EXCHANGES more and prints, one `key value...`
//! per line: the add-on's code addresses (`code`), the periods (`periods`), the simulated
//! µs the measured exchanges took (`sim_us`), every kernel export and virtio bus function the
//! add-on called during them with its count (`call`), the bytes `user_memcpy` copied
//! (`user_copy_bytes`), the device's xruns before the stop (`xruns`) and the error of `played_real_time`
//! against the model's ground truth in µs (`timing p50 p99 max`). Under callgrind the bench
//! runs it twice with different EXCHANGES and subtracts, so start-up cancels out.

use std::path::PathBuf;

use haiku_sim::addon::Addon;
use haiku_sim::meter;
use hmulti_client::{rate_bit, Choice, Session};
use snd_model::ModelConfig;
use spec::hmulti_audio as hm;
use spec::virtio_snd::Direction;

/// Exchanges before the measured ones: the streams are running both ways by then.
const WARM_UP: usize = 8;

fn main() {
    if let Err(e) = run() {
        eprintln!("addon_bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addon, hz, channels, mode, exchanges] = &args[..] else {
        return Err("usage: addon_bench ADDON RATE_HZ CHANNELS play|duplex EXCHANGES".into());
    };
    let addon = PathBuf::from(addon);
    let hz: u32 = hz.parse().map_err(|_| format!("rate {hz:?}"))?;
    let channels: u8 = channels
        .parse()
        .map_err(|_| format!("channels {channels:?}"))?;
    let exchanges: usize = exchanges
        .parse()
        .map_err(|_| format!("exchanges {exchanges:?}"))?;
    let mut config = ModelConfig::hmulti_full(channels);
    match mode.as_str() {
        "duplex" => {}
        "play" => config.streams.retain(|s| s.direction == Direction::Output),
        m => return Err(format!("mode {m:?}: play or duplex")),
    }
    let bit = rate_bit(hz).ok_or(format!("{hz} Hz has no hmulti rate bit"))?;
    let host = Addon::load(&addon, config, None)
        .map_err(|e| format!("loading {}: {e}", addon.display()))?;
    let dev = host.open_first()?;
    let mut s = Session::init(
        &dev,
        Choice {
            rate: Some(bit),
            format: Some(hm::B_FMT_16BIT),
        },
    )?;
    let code = host.code();
    println!("code {:#x} {:#x}", code.start, code.end);
    let n = s.play.len().max(1);
    println!("periods {} {}", s.play.frames, n);
    let chunk = vec![0x11u8; s.play.bytes()];
    let mut reports = Vec::with_capacity(exchanges);
    let mut before = None;
    let mut t0 = 0;
    for k in 0..WARM_UP + exchanges {
        if k == WARM_UP {
            before = Some(meter::snapshot());
            t0 = host.kernel().clock().now();
        }
        if s.exchange(&dev) != 0 {
            return Err(format!("exchange {k} failed"));
        }
        reports.push((s.info.played_real_time, s.info.played_frames_count));
        let cycle = s.info.playback_buffer_cycle;
        if (0..n as i32).contains(&cycle) {
            s.play.write(&dev, (cycle as usize + n - 1) % n, &chunk)?;
        }
        let rc = s.info.record_buffer_cycle;
        if (0..s.rec.len() as i32).contains(&rc) {
            s.rec.read(&dev, rc as usize)?;
        }
    }
    let after = meter::snapshot();
    let sim_us = host.kernel().clock().now() - t0;
    let used = after.since(&before.unwrap_or_default());
    // Before FORCE_STOP, whose drained stream ends in one underrun.
    let xruns = host.model().xruns(0).len();
    s.force_stop(&dev);
    println!("sim_us {sim_us}");
    for (name, count) in used.calls.iter().filter(|(_, c)| *c > 0) {
        println!("call {name} {count}");
    }
    println!("user_copy_bytes {}", used.user_copy_bytes);
    println!("xruns {xruns}");
    let truth = host.model().periods(0);
    let frames = s.play.frames as i64;
    let mut errors: Vec<i64> = reports
        .iter()
        .filter(|(_, f)| *f > 0)
        .filter_map(|&(t, f)| {
            truth
                .get((f / frames.max(1) - 1) as usize)
                .map(|g| (t - g.time).abs())
        })
        .collect();
    errors.sort_unstable();
    let pct = |q: f64| {
        errors
            .get(((errors.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!("timing {} {} {}", pct(0.5), pct(0.99), pct(1.0));
    s.release(&dev);
    dev.close();
    host.unload().map_err(|l| l.join("\n"))
}
