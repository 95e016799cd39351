//! The driver on devices as they really are (`snd_model::CaptureCompletion`,
//! `PlaybackCompletion`): QEMU on `-audiodev wav`, whose capture buffers come back only at
//! RELEASE, empty; vhost-device-sound's null backend, which completes playback the moment it
//! is queued and never hands capture back. Playback stays bit-exact, reports keep to real
//! time, and nothing waits for ever.

mod common;

/// Reports any allocation the driver makes in an interrupt callback.
#[global_allocator]
static ALLOC: sim_kernel::memory::CheckingAllocator = sim_kernel::memory::CheckingAllocator;

use common::*;
use driver::hmulti::Settings;
use platform::{Kernel, Status};
use snd_model::{CaptureCompletion, ModelConfig};
use spec::hmulti_audio as hm;

const HEADERS: &str = "virtio_sound pcm headers";
const BUFFERS: &str = "virtio_sound buffers";

/// What one exchange told the client, and when it returned.
#[derive(Clone, Copy, Debug)]
struct Exchange {
    returned: i64,
    played_time: i64,
    played_frames: i64,
    record_cycle: i32,
    recorded_time: i64,
    recorded_frames: i64,
}

/// One run: exchanges until `input` is handed over, then FORCE_STOP. Returns the exchanges,
/// the time the first one was called, and how long FORCE_STOP took.
fn run(card: &TestCard, c: &mut Client, input: &[u8], what: &str) -> (Vec<Exchange>, i64, i64) {
    let k = card.kernel();
    let n = c.list.return_playback_buffers as usize;
    let pb = c.play.bytes();
    let began = k.system_time();
    let mut seen = Vec::new();
    for (i, chunk) in input.chunks(pb).enumerate() {
        if let Err(e) = c.exchange(card) {
            panic!("{what}: exchange {i}: {e:?}");
        }
        seen.push(Exchange {
            returned: k.system_time(),
            played_time: c.info.played_real_time,
            played_frames: c.info.played_frames_count,
            record_cycle: c.info.record_buffer_cycle,
            recorded_time: c.info.recorded_real_time,
            recorded_frames: c.info.recorded_frames_count,
        });
        let cycle = c.info.playback_buffer_cycle as usize;
        assert!(cycle < n);
        c.fill(card, (cycle + n - 1) % n, chunk);
    }
    let t0 = k.system_time();
    let r = card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1);
    let stop = k.system_time() - t0;
    // The media add-on ignores FORCE_STOP's status; what matters is that it returns.
    let _ = r;
    (seen, began, stop)
}

/// `played` is silence, `inputs[0]`, silence, `inputs[1]`, ... silence: every run's input is
/// heard whole and bit for bit, in order, and nothing else but silence.
fn assert_heard(played: &[u8], inputs: &[&[u8]], quiet: u8, what: &str) {
    let mut at = 0;
    for (i, input) in inputs.iter().enumerate() {
        let start = played[at..]
            .iter()
            .position(|&b| b != quiet)
            .map(|p| at + p)
            .unwrap_or_else(|| panic!("{what}: run {i} is missing"));
        // The input may itself begin with silent bytes.
        let lead = input.iter().position(|&b| b != quiet).unwrap_or(0);
        let start = start - lead;
        if played.len() < start + input.len() || played[start..start + input.len()] != **input {
            let bad = played[start..]
                .iter()
                .zip(input.iter())
                .position(|(a, b)| a != b);
            panic!(
                "{what}: run {i} is not heard bit for bit from byte {start}: {} bytes played \
                 from there for {} of input; first difference at input byte {bad:?}",
                played.len() - start,
                input.len()
            );
        }
        at = start + input.len();
    }
    assert!(
        played[at..].iter().all(|&b| b == quiet),
        "{what}: only silence after the last run"
    );
}

fn capture_never(config: ModelConfig) -> ModelConfig {
    ModelConfig {
        capture: CaptureCompletion::Never,
        ..config
    }
}

/// Capture that never completes (QEMU on `-audiodev wav`, at RELEASE only; a device that
/// never hands it back at all, with paced or instant playback) costs playback nothing: two
/// runs with a FORCE_STOP between play bit-exact, no exchange fails, the record side reports
/// no buffer (cycle -1, 0 frames, time 0: the client reads nothing), and FORCE_STOP returns.
#[test]
fn capture_that_never_completes_leaves_playback_bit_exact() {
    let configs = [
        ("qemu-wav", ModelConfig::qemu_wav(), 0),
        (
            "never, paced playback",
            capture_never(ModelConfig::hmulti_full(2)),
            1,
        ),
        ("vhost-null", ModelConfig::vhost_null(), 1),
    ];
    let formats = [
        (hm::B_SR_8000, hm::B_FMT_8BIT_U),
        (hm::B_SR_44100, hm::B_FMT_16BIT),
        (hm::B_SR_48000, hm::B_FMT_32BIT),
    ];
    for (name, config, kept) in configs {
        for (rate, format) in formats {
            let what = format!("{name}, rate bit {rate:#x}, format {format:#x}");
            let mut rig = Rig::new(config.clone());
            let card = rig.card(Settings::default());
            let mut c = Client::init(&card, Some(rate), Some(format));
            assert_eq!(c.format.output.rate, rate, "{what}");
            assert_eq!(c.format.output.format, format, "{what}");
            assert!(c.desc.input_channel_count > 0, "{what}: a duplex card");
            let pb = c.play.bytes();
            let first = signal(pb * 20, rate ^ format);
            let second = signal(pb * 12, rate ^ format ^ 1);
            let mut stops = Vec::new();
            for input in [&first, &second] {
                let (seen, _, stop) = run(&card, &mut c, input, &what);
                for e in &seen {
                    assert_eq!(
                        (e.record_cycle, e.recorded_frames, e.recorded_time),
                        (-1, 0, 0),
                        "{what}: no record buffer is ever ready"
                    );
                }
                stops.push(stop);
            }
            // The first stop may wait out the grace the driver gives RELEASE (200 ms) on
            // top of the drain and the stop padding; the second finds nothing to wait for.
            assert!(
                stops[0] <= 500_000,
                "{what}: FORCE_STOP took {} µs",
                stops[0]
            );
            assert!(
                stops[1] <= 300_000,
                "{what}: FORCE_STOP took {} µs",
                stops[1]
            );
            let quiet = c.silence_byte();
            assert_heard(&rig.model.played(0), &[&first, &second], quiet, &what);
            assert!(rig.model.recorded(1).is_empty(), "{what}: nothing captured");
            let k = rig.kernel.clone();
            let t0 = k.system_time();
            card.shutdown();
            assert!(
                k.system_time() - t0 <= 300_000,
                "{what}: close took too long"
            );
            if kept == 0 {
                rig.finish(None);
            } else {
                // The capture buffers the device kept past RELEASE: their memory is leaked,
                // never freed (the input's headers and the card's buffers).
                let e = rig.engine.take().unwrap();
                driver::virtio::Engine::shutdown(e);
                k.user_free_all();
                rig.model.assert_no_violations();
                expect_leaked_areas(&k, &[HEADERS, BUFFERS]);
                k.assert_clean();
            }
        }
    }
}

/// Reports of a device that completes playback as soon as it is queued
/// (vhost-device-sound's null backend) keep to real time: the exchanges come one buffer
/// period apart, never early, `played_frames_count` never leads `played_real_time` (measured
/// from the moment the first exchange was called, which is before START), and the samples
/// arrive bit-exact. The tolerance is 1 µs: times are whole µs, and each report's time is
/// the period's end rounded down on its own.
#[test]
fn instant_playback_keeps_real_time() {
    for (rate, hz) in [
        (hm::B_SR_8000, 8000i64),
        (hm::B_SR_44100, 44100),
        (hm::B_SR_48000, 48000),
    ] {
        let mut rig = Rig::new(ModelConfig::vhost_null());
        let card = rig.card(Settings::default());
        let mut c = Client::init(&card, Some(rate), Some(hm::B_FMT_16BIT));
        let pb = c.play.bytes();
        let frames = c.play.frames as i64;
        let period = frames * 1_000_000 / hz;
        let input = signal(pb * 50, rate);
        let (seen, began, _) = run(&card, &mut c, &input, &format!("{hz} Hz"));
        let lead = seen
            .iter()
            .map(|e| e.played_frames * 1_000_000 / hz - (e.played_time - began))
            .max()
            .unwrap();
        assert!(
            lead <= 1,
            "{hz} Hz: played_frames_count leads played_real_time by up to {lead} µs"
        );
        for (i, e) in seen.iter().enumerate() {
            assert_eq!(
                e.played_frames,
                (i as i64 + 1) * frames,
                "{hz} Hz: exchange {i}"
            );
            assert!(
                e.returned - began >= e.played_frames * 1_000_000 / hz - 1,
                "{hz} Hz: exchange {i} returned before its period could have played"
            );
        }
        for w in seen.windows(2) {
            let gap = w[1].returned - w[0].returned;
            assert!(
                (gap - period).abs() <= 1,
                "{hz} Hz: exchanges {gap} µs apart, the period is {period} µs"
            );
        }
        let span = seen.last().unwrap().returned - seen[0].returned;
        let want = (seen.len() as i64 - 1) * frames * 1_000_000 / hz;
        assert!(
            (span - want).abs() <= 1,
            "{hz} Hz: {span} µs for {want} µs of audio"
        );
        assert_heard(&rig.model.played(0), &[&input], 0, &format!("{hz} Hz"));
        let k = rig.kernel.clone();
        card.shutdown();
        let e = rig.engine.take().unwrap();
        driver::virtio::Engine::shutdown(e);
        k.user_free_all();
        rig.model.assert_no_violations();
        expect_leaked_areas(&k, &[HEADERS, BUFFERS]);
        k.assert_clean();
    }
}

/// vhost-null both ways, over two opens of the device: the second open's card (a new card
/// over the same engine, whose input stream the device still holds) plays bit-exact too, and
/// FORCE_STOP and close return each time.
#[test]
fn vhost_null_plays_again_after_close() {
    let mut rig = Rig::new(ModelConfig::vhost_null());
    let k = rig.kernel.clone();
    for open in 0..2 {
        let card = rig.card(Settings::default());
        let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(hm::B_FMT_16BIT));
        let pb = c.play.bytes();
        let input = signal(pb * 10, 77 + open);
        let before = rig.model.played(0).len();
        let (_, _, stop) = run(&card, &mut c, &input, &format!("open {open}"));
        assert!(stop <= 500_000, "open {open}: FORCE_STOP took {stop} µs");
        assert_heard(
            &rig.model.played(0)[before..],
            &[&input],
            0,
            &format!("open {open}"),
        );
        let t0 = k.system_time();
        card.shutdown();
        assert!(k.system_time() - t0 <= 300_000, "open {open}: close");
    }
    let e = rig.engine.take().unwrap();
    driver::virtio::Engine::shutdown(e);
    k.user_free_all();
    rig.model.assert_no_violations();
    expect_leaked_areas(&k, &[HEADERS, BUFFERS]);
    k.assert_clean();
}

/// A virtual machine its host did not run for 300 ms while an exchange waited for a device
/// that completes each period at its end (30 periods at 48 kHz): the exchange's timeout (4
/// periods) passes while the machine is stopped, and the timer fires before the device's
/// interrupt is delivered. The exchange must not fail: the completion is there as soon as the
/// interrupt runs. (Seen on QEMU under TCG on a loaded host: a guest stopped for 640 ms.)
#[test]
fn a_stopped_virtual_machine_fails_no_exchange() {
    let mut rig = Rig::new(ModelConfig::hmulti_full(2));
    let card = rig.card(Settings::default());
    let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(hm::B_FMT_16BIT));
    let k = card.kernel().clone();
    for i in 0..20 {
        if i == 10 {
            k.stall_next_wait(300_000);
        }
        let before = k.system_time();
        if let Err(e) = c.exchange(&card) {
            panic!("exchange {i} failed after a stop of the machine: {e:?}");
        }
        if i == 10 {
            assert!(
                k.system_time() - before >= 300_000,
                "the machine was stopped for 300 ms"
            );
        }
    }
    let _ = card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1);
}

/// A device that stops answering (it left the machine, unannounced) while every timed
/// wait returns a little late, as on a real kernel: the exchange still fails with
/// `B_TIMED_OUT` after its timeout (4 periods, at least 50 ms), whether the lateness is timer slack
/// (100 µs: not a stall) or looks like a stall of the machine (3 ms: made up for at most
/// `MAX_STALLS` times). Making up for every late return kept it waiting for ever.
#[test]
fn an_exchange_times_out_when_every_wait_returns_late() {
    use driver::virtio::pcm::{MAX_STALLS, STALL_MICROS};
    for slack in [100, 3_000] {
        let mut rig = Rig::new(ModelConfig::hmulti_full(2));
        let card = rig.card(Settings::default());
        let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(hm::B_FMT_16BIT));
        let k = card.kernel().clone();
        let before = k.system_time();
        c.exchange(&card).expect("streaming");
        c.exchange(&card).expect("streaming");
        let period = (k.system_time() - before) / 2;
        rig.model.unplug();
        // Far more late returns than one exchange may make up for.
        k.set_timer_slack(slack, 10_000);
        let t = k.system_time();
        let r = c.exchange(&card);
        let took = k.system_time() - t;
        let timeout = (4 * period).max(50_000);
        // Each stall made up for moves the deadline by the lateness and waits at least a
        // quarter of the timeout more.
        let made_up = if slack >= STALL_MICROS {
            i64::from(MAX_STALLS) * (slack + timeout / 4)
        } else {
            0
        };
        assert_eq!(r, Err(Status::TIMED_OUT), "slack {slack} µs");
        assert!(
            took <= timeout + made_up + 2 * slack,
            "slack {slack} µs: the exchange took {took} µs (period {period} µs)"
        );
        k.set_timer_slack(0, 0);
        let _ = card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1);
    }
}
