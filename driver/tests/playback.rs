//! Playback and recording through a card, driven like the media add-on drives it, against the
//! device model: the samples the device receives equal the client's, bit for bit, with no gap.

mod common;

/// Reports any allocation the driver makes in an interrupt callback.
#[global_allocator]
static ALLOC: sim_kernel::memory::CheckingAllocator = sim_kernel::memory::CheckingAllocator;

use common::*;
use driver::hmulti::Settings;
use snd_model::{Fault, FaultTarget, ModelConfig, StreamConfig};
use spec::hmulti_audio as hm;
use spec::virtio_snd::PcmRate;

fn config(channels: u8) -> ModelConfig {
    ModelConfig::hmulti_full(channels)
}

/// The rate in Hz the model's stream was set to: the device's ground truth, read from the
/// raw `PcmRate` number of its SET_PARAMS with the spec's table.
fn model_hz(rig: &Rig, stream: u32) -> Option<u32> {
    let params = rig.model.stream_params(stream)?;
    PcmRate::from_raw(params.rate).map(PcmRate::hz)
}

/// Plays `periods` buffers of a known signal and checks what the device received.
fn play(channels: u8, rate: u32, format: u32, periods: usize) {
    let mut rig = Rig::new(config(channels));
    let card = rig.card(Settings::default());
    let mut c = Client::init(&card, Some(rate), Some(format));
    assert_eq!(c.format.output.rate, rate);
    assert_eq!(c.format.output.format, format);
    assert_eq!(c.desc.output_channel_count, channels as i32);
    let n = c.list.return_playback_buffers as usize;
    let pb = c.play.bytes();
    let input = signal(pb * periods, rate ^ format ^ channels as u32);
    let mut recorded = Vec::new();
    let mut last_rec_cycle = -1;
    for chunk in input.chunks(pb) {
        c.exchange(&card).expect("exchange");
        let cycle = c.info.playback_buffer_cycle as usize;
        assert!(cycle < n);
        c.fill(&card, (cycle + n - 1) % n, chunk);
        let rc = c.info.record_buffer_cycle;
        if rc != last_rec_cycle && (0..n as i32).contains(&rc) {
            recorded.extend(c.read_record(&card, rc as usize));
        }
        last_rec_cycle = rc;
    }
    card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
        .expect("FORCE_STOP");
    // The rate the client hears (the Hz hmulti's `B_SR_*` name gives) is the rate the device
    // plays and records at.
    let hz = hmulti_client::rate_hz(rate);
    assert!(hz.is_some(), "rate bit {rate:#x} is one hmulti rate");
    assert_eq!(
        model_hz(&rig, 0),
        hz,
        "rate bit {rate:#x}: the output's rate"
    );
    assert_eq!(
        model_hz(&rig, 1),
        hz,
        "rate bit {rate:#x}: the input's rate"
    );
    let played = rig.model.played(0);
    let pad = c.stop_padding_bytes();
    assert_eq!(
        played.len(),
        n * pb + input.len() + pad,
        "{channels} ch, rate bit {rate:#x}, format {format:#x}: played length"
    );
    // Silence is 0x80 in unsigned 8-bit samples.
    let quiet = if format == hm::B_FMT_8BIT_U { 0x80 } else { 0 };
    assert!(
        played[n * pb + input.len()..].iter().all(|&b| b == quiet),
        "the stop padding is silence"
    );
    assert!(
        played[..n * pb].iter().all(|&b| b == quiet),
        "the initial buffers hold the format's silence"
    );
    assert!(
        played[n * pb..n * pb + input.len()] == input[..],
        "{channels} ch, rate bit {rate:#x}, format {format:#x}: not bit-exact"
    );
    // Recording: what the client read is what the device produced, in order, no gap.
    let produced = rig.model.recorded(1);
    assert!(
        recorded.len() >= pb * (periods - 2),
        "recorded only {} bytes",
        recorded.len()
    );
    assert!(produced.len() >= recorded.len());
    if produced[..recorded.len()] != recorded[..] {
        let at = produced
            .iter()
            .zip(&recorded)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "recording differs at byte {at} of {} (period {} bytes); produced {:?} got {:?}",
            recorded.len(),
            pb,
            &produced[at..at + 8],
            &recorded[at..at + 8]
        );
    }
    assert_eq!(card.stats().xruns, 0);
    assert_eq!(card.stats().starved, 0);
    rig.finish(Some(card));
}

/// Every rate the spec defines, which the model offers all of: the card publishes exactly
/// those hmulti has a bit for (all but 5512 Hz), and each plays bit-exact at its own rate. The
/// expectations come from the spec (`PcmRate::hz`) and hmulti's `B_SR_*` names
/// (`hmulti_client::RATES`), never from the driver's rate table, so a wrong row there (a bit
/// sent as another virtio rate) fails here.
#[test]
fn every_rate_s16_stereo() {
    let mut with_a_bit = 0;
    for r in PcmRate::ALL {
        let hz = r.hz();
        match hmulti_client::rate_bit(hz) {
            Some(bit) => with_a_bit |= bit,
            None => assert_eq!(hz, 5512, "only 5512 Hz lacks a B_SR bit"),
        }
    }
    assert_eq!(with_a_bit.count_ones(), 15);
    let mut rig = Rig::new(config(2));
    let card = rig.card(Settings::default());
    let c = Client::init(&card, None, None);
    assert_eq!(
        (c.desc.output_rates, c.desc.input_rates),
        (with_a_bit, with_a_bit),
        "the published rates"
    );
    rig.finish(Some(card));
    for bit in (0..32).map(|i| 1u32 << i).filter(|b| with_a_bit & b != 0) {
        play(2, bit, hm::B_FMT_16BIT, 12);
    }
}

/// Every output and input stream of the device is reachable: card n pairs the n-th output
/// with the n-th input, and extra streams get cards of their own.
#[test]
fn every_stream_gets_a_card() {
    let cfg = ModelConfig {
        streams: vec![
            StreamConfig::output(),
            StreamConfig::input(),
            StreamConfig::output().with_channels(1, 1),
        ],
        ..ModelConfig::default()
    };
    let mut rig = Rig::new(cfg);
    let engine = rig.start().unwrap();
    let cards = driver::hmulti::cards_for(&engine);
    assert_eq!(cards, vec![(Some(0), Some(1)), (Some(2), None)]);
    let card =
        driver::hmulti::Card::new(engine.clone(), cards[1].0, cards[1].1, Settings::default())
            .unwrap();
    let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(hm::B_FMT_16BIT));
    assert_eq!(
        (c.desc.output_channel_count, c.desc.input_channel_count),
        (1, 0)
    );
    let n = c.list.return_playback_buffers as usize;
    let input = signal(c.play.bytes() * 5, 3);
    for chunk in input.chunks(c.play.bytes()) {
        c.exchange(&card).unwrap();
        let cycle = c.info.playback_buffer_cycle as usize;
        c.fill(&card, (cycle + n - 1) % n, chunk);
    }
    card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1).unwrap();
    let played = rig.model.played(2);
    let body = &played[n * c.play.bytes()..];
    assert!(body[..input.len()] == input[..]);
    assert_eq!(body.len(), input.len() + c.stop_padding_bytes());
    drop(engine);
    rig.finish(Some(card));
}

#[test]
fn formats_and_channel_counts() {
    for channels in [1u8, 2, 6, 8] {
        for format in [
            hm::B_FMT_16BIT,
            hm::B_FMT_32BIT,
            hm::B_FMT_FLOAT,
            hm::B_FMT_8BIT_U,
        ] {
            play(channels, hm::B_SR_48000, format, 8);
        }
    }
}

#[test]
fn high_rates_with_many_channels() {
    for rate in [hm::B_SR_176400, hm::B_SR_192000, hm::B_SR_384000] {
        play(8, rate, hm::B_FMT_32BIT, 6);
    }
}

/// A duplex client that comes back a fixed part of a period after each exchange returned (the
/// media add-on's thread is never woken at the instant the period ends), with `count` buffers
/// of 240 frames (5 ms at 48 kHz), on a device whose capture buffers come back
/// `capture_lag_us` after their last frame once the run is going: returns the xruns of the output and the input
/// stream while it ran, and checks that what was recorded is what the device captured, in
/// order.
fn duplex_late(count: u32, late_us: i64, capture_lag_us: i64) -> (usize, usize) {
    let mut rig = Rig::new(config(2));

    let card = rig.card(Settings {
        frames_per_buffer: 240,
        buffer_count: count,
        ..Settings::default()
    });
    let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(hm::B_FMT_16BIT));
    let n = c.list.return_playback_buffers as usize;
    assert_eq!(n, count as usize, "the settings' buffer count");
    let pb = c.play.bytes();
    assert_eq!(pb, 240 * 4, "the settings' buffer size");
    let input = signal(pb * 200, count);
    let mut recorded = Vec::new();
    let mut last_rec_cycle = -1;
    for (k, chunk) in input.chunks(pb).enumerate() {
        c.exchange(&card).expect("exchange");
        if k == 0 && capture_lag_us > 0 {
            // From the second period on, each capture buffer comes back that long after its
            // last frame (QEMU hands capture back on its audio timer); the device captures
            // on into the next one meanwhile.
            rig.model
                .set_fault(FaultTarget::Rx, Fault::Delay(capture_lag_us));
        }
        rig.kernel.clock().advance_by(late_us);
        let cycle = c.info.playback_buffer_cycle as usize;
        c.fill(&card, (cycle + n - 1) % n, chunk);
        let rc = c.info.record_buffer_cycle;
        if rc != last_rec_cycle && (0..n as i32).contains(&rc) {
            recorded.extend(c.read_record(&card, rc as usize));
        }
        last_rec_cycle = rc;
    }
    // Both streams run dry after the stop (the client reads no more, and playback ends
    // with padding before STOP): only the run itself counts.
    let xruns = (rig.model.xruns(0).len(), rig.model.xruns(1).len());
    // Each stream's semaphore is posted only while a thread sleeps on it, so at most a unit
    // for a second completion during one sleep is left over: a unit per completion, also for
    // those taken without a wait (the input's, a late client's), would pile up, and a later
    // wait would spin through them.
    for sem in rig.kernel.sems() {
        if sem.name == "virtio_sound period" {
            assert!(
                sem.count <= 1,
                "{count} buffers, {late_us} µs late, capture {capture_lag_us} µs late: \
                 semaphore {} holds {} counts after 200 exchanges",
                sem.id,
                sem.count
            );
        }
    }
    card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
        .expect("FORCE_STOP");
    let produced = rig.model.recorded(1);
    assert!(
        recorded.len() >= pb * 190,
        "{count} buffers, {late_us} µs late, capture {capture_lag_us} µs late: recorded only {} bytes",
        recorded.len()
    );
    assert!(
        produced.len() >= recorded.len() && produced[..recorded.len()] == recorded[..],
        "{count} buffers, {late_us} µs late, capture {capture_lag_us} µs late: the recording is not what the device captured"
    );
    rig.finish(Some(card));
    xruns
}

/// With N buffers the device holds N - 1 periods while the client works, in both directions:
/// a client late by less than a period never lets either stream run dry, with 2 buffers as
/// with more. A capture period must reach the client in the exchange of the playback period
/// it is in step with: handed over one exchange later, it is queued again only at the
/// exchange after next, and with 2 buffers the device runs out of capture buffers whenever
/// the client is later than the phase between the streams (as it did when playback was
/// started first, 0.2 ms late was enough). On a device that hands capture back late the
/// exchange waits for it (half a period at most, once the stream has completed a period),
/// so the client may then be late by the period less that lag.
#[test]
fn a_duplex_client_late_by_less_than_a_period_loses_nothing() {
    // 5 ms periods; the client late by 0.2, 1.5 and 3.5 ms; capture handed back at once or
    // 1 ms after its last frame.
    for count in [2, 3, 4] {
        for late_us in [200, 1_500, 3_500] {
            for capture_lag_us in [0, 1_000] {
                assert_eq!(
                    duplex_late(count, late_us, capture_lag_us),
                    (0, 0),
                    "{count} buffers, client {late_us} µs late, capture {capture_lag_us} µs \
                     late: xruns (output, input)"
                );
            }
        }
    }
}
