//! The media add-on's whole life with a card: format changes while streaming, FORCE_STOP and
//! resume with the same buffers, and many open/close cycles.

mod common;

/// Reports any allocation the driver makes in an interrupt callback.
#[global_allocator]
static ALLOC: sim_kernel::memory::CheckingAllocator = sim_kernel::memory::CheckingAllocator;

use common::*;
use driver::hmulti::{cards_for, Card, Settings};
use driver::virtio::{Engine, Options};
use snd_model::ModelConfig;
use spec::hmulti_audio as hm;

/// Runs `count` exchanges, filling each returned buffer from `input`; returns bytes used.
fn stream(card: &TestCard, c: &mut Client, input: &[u8], count: usize) -> usize {
    let n = c.list.return_playback_buffers as usize;
    let pb = c.play.bytes();
    let mut used = 0;
    for _ in 0..count {
        c.exchange(card).expect("exchange");
        let cycle = c.info.playback_buffer_cycle as usize;
        c.fill(card, (cycle + n - 1) % n, &input[used..used + pb]);
        used += pb;
    }
    used
}

#[test]
fn force_stop_then_resume_with_the_same_buffers() {
    let mut rig = Rig::new(ModelConfig::default());
    let card = rig.card(Settings::default());
    let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(hm::B_FMT_16BIT));
    let n = c.list.return_playback_buffers as usize;
    let pb = c.play.bytes();
    let input = signal(pb * 40, 7);
    let a = stream(&card, &mut c, &input, 10);
    let t1 = c.info.played_real_time;
    let f1 = c.info.played_frames_count;
    card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
        .expect("FORCE_STOP");
    // The media add-on writes zeros into the playback buffers after FORCE_STOP.
    for b in 0..n {
        c.fill(&card, b, &vec![0u8; pb]);
    }
    let played_before = rig.model.played(0);
    // Then the stop padding: silence that pushes the device's own buffer out. With no
    // settings file it is the documented default of `stop_padding_ms`, 20 ms: at 48 kHz
    // that is 960 frames, of 4 bytes in stereo S16.
    let pad = 960 * 4;
    assert_eq!(
        played_before.len(),
        n * pb + a + pad,
        "everything handed over before FORCE_STOP was played, then the padding"
    );
    assert!(played_before[n * pb..n * pb + a] == input[..a]);
    assert!(played_before[n * pb + a..].iter().all(|&x| x == 0));
    // Resume without GET_BUFFERS: the same buffers, counts keep growing.
    let b = stream(&card, &mut c, &input[a..], 10);
    assert!(
        c.info.played_real_time > t1 && c.info.played_frames_count > f1,
        "time and frames only grow"
    );
    card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
        .expect("FORCE_STOP");
    let played = rig.model.played(0);
    let second = &played[played_before.len()..];
    assert!(
        second[..n * pb].iter().all(|&x| x == 0),
        "the zeros written after FORCE_STOP play first"
    );
    assert!(
        second[n * pb..n * pb + b] == input[a..a + b],
        "resumed audio is bit-exact"
    );
    assert_eq!(second.len(), n * pb + b + pad);
    rig.finish(Some(card));
}

#[test]
fn format_change_while_running() {
    let mut rig = Rig::new(ModelConfig::default());
    let card = rig.card(Settings::default());
    let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(hm::B_FMT_16BIT));
    let input = signal(1 << 20, 9);
    stream(&card, &mut c, &input, 6);
    let frames_before = c.info.played_frames_count;
    let time_before = c.info.played_real_time;
    // As the media add-on's frequency parameter does: SET_GLOBAL_FORMAT with the whole
    // struct, then GET_BUFFERS, between two exchanges, no FORCE_STOP.
    let mut f = c.format;
    f.output.rate = hm::B_SR_96000;
    f.output.format = hm::B_FMT_32BIT;
    ioctl(&card, hm::B_MULTI_SET_GLOBAL_FORMAT, &mut f).expect("SET_GLOBAL_FORMAT");
    c.get_buffers(&card);
    let mut g = f;
    ioctl(&card, hm::B_MULTI_GET_GLOBAL_FORMAT, &mut g).expect("GET_GLOBAL_FORMAT");
    assert_eq!(
        (g.output.rate, g.output.format),
        (hm::B_SR_96000, hm::B_FMT_32BIT)
    );
    let played_at_change = rig.model.played(0).len();
    let n = c.list.return_playback_buffers as usize;
    let pb = c.play.bytes();
    let used = stream(&card, &mut c, &input, 8);
    assert!(c.info.played_frames_count > frames_before && c.info.played_real_time > time_before);
    card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
        .expect("FORCE_STOP");
    let params = rig.model.stream_params(0).expect("configured");
    assert_eq!(params.rate_hz(), 96000);
    let played = rig.model.played(0);
    let after = &played[played_at_change..];
    // The default stop padding, 20 ms: at 96 kHz 1920 frames, of 8 bytes in stereo S32.
    let pad = 1920 * 8;
    assert_eq!(after.len(), n * pb + used + pad);
    assert!(
        after[n * pb..n * pb + used] == input[..used],
        "audio after the change is bit-exact"
    );
    assert!(
        after[n * pb + used..].iter().all(|&x| x == 0),
        "then silence"
    );
    // An unsupported format is refused and changes nothing.
    let mut bad = f;
    bad.output.rate = hm::B_SR_96000 | hm::B_SR_48000;
    assert_eq!(
        ioctl(&card, hm::B_MULTI_SET_GLOBAL_FORMAT, &mut bad),
        Err(platform::Status::BAD_VALUE),
        "two rate bits"
    );
    bad.output.rate = hm::B_SR_1536000;
    assert_eq!(
        ioctl(&card, hm::B_MULTI_SET_GLOBAL_FORMAT, &mut bad),
        Err(platform::Status::BAD_VALUE),
        "a rate the device does not have"
    );
    ioctl(&card, hm::B_MULTI_GET_GLOBAL_FORMAT, &mut g).unwrap();
    assert_eq!(g.output.rate, hm::B_SR_96000);
    rig.finish(Some(card));
}

#[test]
fn a_hundred_open_close_cycles_leave_nothing() {
    let kernel = std::sync::Arc::new(sim_kernel::SimKernel::new());
    let model = std::sync::Arc::new(snd_model::SndModel::new(&kernel, ModelConfig::default()));
    for i in 0..100 {
        let engine =
            Engine::start(kernel.clone(), model.clone(), Options::default()).expect("start");
        let (o, inp) = cards_for(&engine)[0];
        let card = Card::new(engine.clone(), o, inp, Settings::default()).expect("card");
        let mut c = Client::init(&card, None, Some(hm::B_FMT_16BIT));
        if i % 10 == 0 {
            let input = signal(c.play.bytes() * 3, i);
            stream(&card, &mut c, &input, 3);
        }
        card.shutdown();
        Engine::shutdown(engine);
        kernel.user_free_all();
        if let Err(p) = kernel.check_clean() {
            panic!("cycle {i}: {}", p.join("\n"));
        }
    }
    model.assert_no_violations();
}

#[test]
fn exchange_before_get_buffers_is_slow_not_fast() {
    let mut rig = Rig::new(ModelConfig::default());
    let card = rig.card(Settings::default());
    let k = card.kernel();
    let info = user_value(k, &garbage::<hm::MultiBufferInfo>());
    let t0 = platform::Kernel::system_time(k);
    assert_eq!(
        card.dispatch(hm::B_MULTI_BUFFER_EXCHANGE, info, 112),
        Err(platform::Status::NO_INIT)
    );
    assert!(
        platform::Kernel::system_time(k) - t0 >= 5_000,
        "a failing exchange must not return at once"
    );
    rig.finish(Some(card));
}

/// A client that changes the format but does not ask for new buffers: the old area is laid
/// out again when the new format fits it, and refused (after a wait) when it does not.
#[test]
fn format_change_without_get_buffers() {
    let mut rig = Rig::new(ModelConfig::default());
    let card = rig.card(Settings::default());
    let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(hm::B_FMT_16BIT));
    let input = signal(1 << 20, 5);
    stream(&card, &mut c, &input, 4);
    // Same sample size, other rate: the buffers are reused in place.
    let mut f = c.format;
    f.output.rate = hm::B_SR_44100;
    f.input.rate = hm::B_SR_44100;
    ioctl(&card, hm::B_MULTI_SET_GLOBAL_FORMAT, &mut f).unwrap();
    c.exchange(&card).expect("relaid out in place");
    assert_eq!(rig.model.stream_params(0).unwrap().rate_hz(), 44100);
    // Twice the bytes per frame: the old area is too small.
    f.output.format = hm::B_FMT_32BIT;
    f.input.format = hm::B_FMT_32BIT;
    ioctl(&card, hm::B_MULTI_SET_GLOBAL_FORMAT, &mut f).unwrap();
    let k = card.kernel();
    let t0 = platform::Kernel::system_time(k);
    assert_eq!(
        c.exchange(&card),
        Err(platform::Status::NO_INIT),
        "32-bit frames do not fit the 16-bit buffers"
    );
    assert!(
        platform::Kernel::system_time(k) - t0 >= 1_000,
        "not a fast error"
    );
    // GET_BUFFERS makes it right.
    c.get_buffers(&card);
    c.exchange(&card).expect("new buffers");
    card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1).unwrap();
    rig.finish(Some(card));
}

/// A client that comes back later than the whole ring lasts finds the device dry; the stop
/// reports how many times in the log (the simulator's and QEMU's run reports read it).
#[test]
fn a_late_client_is_counted_and_reported_at_stop() {
    let mut rig = Rig::new(ModelConfig::default());
    let card = rig.card(Settings::default());
    let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(hm::B_FMT_16BIT));
    let pb = c.play.bytes();
    let input = signal(pb * 40, 11);
    stream(&card, &mut c, &input, 5);
    assert_eq!(card.stats().starved, 0);
    // Away for longer than every queued buffer lasts (4 x 10 ms), twice.
    for _ in 0..2 {
        rig.kernel.clock().advance_by(100_000);
        stream(&card, &mut c, &input, 1);
    }
    // Both streams (playback and capture) were found dry each time.
    assert_eq!(card.stats().starved, 4);
    card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
        .expect("FORCE_STOP");
    assert!(
        rig.kernel
            .log_contains("the device ran dry 4 times in this run"),
        "{:?}",
        rig.kernel.log_lines()
    );
    // The next run starts counting again, and a run without a miss says nothing.
    stream(&card, &mut c, &input, 5);
    card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
        .expect("FORCE_STOP");
    let dry = rig
        .kernel
        .log_lines()
        .iter()
        .filter(|l| l.contains("ran dry"))
        .count();
    assert_eq!(dry, 1);
    rig.finish(Some(card));
}

/// A device that completes playback buffers when it *takes* them, ~1024 frames before it
/// plays them, and throws away what it holds at STOP (QEMU): the stop padding grows to what
/// the device holds, and STOP waits until the input and the padding can have played, so the
/// whole input is played at 8 kHz (1024 frames = 128 ms) as at 48 kHz and nothing is thrown
/// away; without padding the tail is lost.
#[test]
fn a_device_that_takes_ahead_loses_nothing_at_stop() {
    for (rate, hz) in [(hm::B_SR_8000, 8000u32), (hm::B_SR_48000, 48000)] {
        for padding in [None, Some(0)] {
            let config = ModelConfig {
                takes_ahead_frames: 1024,
                ..ModelConfig::hmulti_full(2)
            };
            let mut rig = Rig::new(config);
            let card = rig.card(Settings {
                stop_padding_us: padding,
                ..Settings::default()
            });
            let mut c = Client::init(&card, Some(rate), Some(hm::B_FMT_16BIT));
            let n = c.list.return_playback_buffers as usize;
            let pb = c.play.bytes();
            let input = signal(pb * 30, hz);
            let used = stream(&card, &mut c, &input, 30);
            card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
                .expect("FORCE_STOP");
            let played = rig.model.played(0);
            let heard = played.len().saturating_sub(n * pb).min(used);
            match padding {
                None => {
                    assert!(
                        played.len() >= n * pb + used,
                        "{hz} Hz: {} of {used} input bytes heard",
                        played.len().saturating_sub(n * pb)
                    );
                    assert!(
                        played[n * pb..n * pb + used] == input[..used],
                        "{hz} Hz: the whole input is heard"
                    );
                    assert!(played[n * pb + used..].iter().all(|&b| b == 0));
                    // STOP comes once the input and the silence can have played, counted
                    // from when the driver sent START, which the device acts on 50 µs later
                    // (the model's control latency): at most 3 frames at 48 kHz, of silence.
                    let dropped = rig.model.dropped_frames(0);
                    assert!(dropped <= 3, "{hz} Hz: STOP threw away {dropped} frames");
                }
                Some(_) => assert!(
                    heard < used,
                    "{hz} Hz without padding: the device's tail is lost ({heard} of {used})"
                ),
            }
            rig.finish(Some(card));
        }
    }
}

/// The bytes of a silent sample, by hmulti format (virtio 1.3 §5.14.6.6: U8 is unsigned,
/// its zero level is 0x80; the signed and float formats' is all-zero bytes).
const SILENCE: [(u32, u8); 4] = [
    (hm::B_FMT_8BIT_U, 0x80),
    (hm::B_FMT_16BIT, 0),
    (hm::B_FMT_32BIT, 0),
    (hm::B_FMT_FLOAT, 0),
];

/// Buffers hold the format's silence whenever the client has not written them: at creation
/// (playback and record), after FORCE_STOP (the next run queues every buffer before the
/// client writes one), and after a format change laid the same area out again.
#[test]
fn buffers_hold_the_formats_silence() {
    for (format, quiet) in SILENCE {
        let mut rig = Rig::new(ModelConfig::hmulti_full(2));
        let card = rig.card(Settings::default());
        let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(format));
        let n = c.list.return_playback_buffers as usize;
        let pb = c.play.bytes();
        for b in 0..c.list.return_record_buffers as usize {
            assert!(
                c.read_record(&card, b).iter().all(|&x| x == quiet),
                "format {format:#x}: record buffer {b} before the device wrote it"
            );
        }
        let input = signal(pb * 20, format);
        let a = stream(&card, &mut c, &input, 6);
        card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
            .expect("FORCE_STOP");
        let first = rig.model.played(0);
        assert!(
            first[..n * pb].iter().all(|&x| x == quiet),
            "format {format:#x}: the first run's lead-in"
        );
        // Resume without writing anything: the buffers must not replay the last run.
        stream(&card, &mut c, &input[a..], 6);
        card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
            .expect("FORCE_STOP");
        let second = &rig.model.played(0)[first.len()..];
        assert!(
            second[..n * pb].iter().all(|&x| x == quiet),
            "format {format:#x}: the lead-in after FORCE_STOP is silence"
        );
        rig.finish(Some(card));
    }
    // 16-bit to unsigned 8-bit without GET_BUFFERS: the area is laid out again in place,
    // and what the device plays first is the new format's silence, not 16-bit samples.
    let mut rig = Rig::new(ModelConfig::hmulti_full(2));
    let card = rig.card(Settings::default());
    let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(hm::B_FMT_16BIT));
    let n = c.list.return_playback_buffers as usize;
    let input = signal(c.play.bytes() * 10, 3);
    stream(&card, &mut c, &input, 6);
    let mut f = c.format;
    f.output.format = hm::B_FMT_8BIT_U;
    f.input.format = hm::B_FMT_8BIT_U;
    ioctl(&card, hm::B_MULTI_SET_GLOBAL_FORMAT, &mut f).expect("SET_GLOBAL_FORMAT");
    let before = rig.model.played(0).len();
    c.exchange(&card).expect("laid out again in place");
    card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
        .expect("FORCE_STOP");
    // The client was told nothing new: its buffers are still 16-bit sized, so in 8-bit
    // frames each holds half as many bytes.
    let pb8 = c.play.bytes() / 2;
    let after = &rig.model.played(0)[before..];
    assert!(after.len() >= n * pb8);
    assert!(
        after[..n * pb8].iter().all(|&x| x == 0x80),
        "8-bit silence after the change"
    );
    rig.finish(Some(card));
}
