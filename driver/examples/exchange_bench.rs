//! Benchmark driver for `cargo xtask bench` (not a test): runs the media add-on's exchange
//! loop against the device model and prints the error of `played_real_time` against the
//! model's ground truth (the simulated time each period's last frame was consumed).
//!
//! Usage: exchange_bench RATE_HZ EXCHANGES
//!
//! Under callgrind, `cargo xtask bench` runs it twice with different exchange counts and
//! divides the difference, so set-up cost cancels out.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use driver::hmulti::format;
use driver::hmulti::Settings;
use snd_model::ModelConfig;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let hz: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(48000);
    let exchanges: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rate = spec::virtio_snd::PcmRate::from_hz(hz).expect("a virtio rate");
    let bit = format::rate_bit(rate).expect("a B_SR rate");
    let mut rig = Rig::new(ModelConfig::default());
    let card = rig.card(Settings::default());
    let mut c = Client::init(&card, Some(bit), Some(spec::hmulti_audio::B_FMT_16BIT));
    let n = c.list.return_playback_buffers as usize;
    let frames = c.list.return_playback_buffer_size as i64;
    let chunk = vec![0x11u8; c.play.bytes()];
    let mut reports = Vec::with_capacity(exchanges);
    for _ in 0..exchanges {
        c.exchange(&card).expect("exchange");
        reports.push((c.info.played_real_time, c.info.played_frames_count));
        let cycle = c.info.playback_buffer_cycle as usize;
        c.fill(&card, (cycle + n - 1) % n, &chunk);
    }
    card.dispatch(spec::hmulti_audio::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
        .expect("FORCE_STOP");
    let truth = rig.model.periods(0);
    let mut errors: Vec<i64> = reports
        .iter()
        .filter_map(|&(t, f)| {
            let k = (f / frames - 1) as usize;
            truth.get(k).map(|p| (t - p.time).abs())
        })
        .collect();
    errors.sort();
    let pct = |p: f64| {
        errors
            .get(((errors.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let xruns = rig.model.xruns(0).len();
    println!(
        "rate {hz} Hz: {exchanges} exchanges, {frames} frames x {n} buffers; played_real_time error vs ground truth: p50 {} us, p99 {} us, max {} us; device xruns {xruns}",
        pct(0.5),
        pct(0.99),
        errors.last().copied().unwrap_or(0)
    );
    rig.finish(Some(card));
}
