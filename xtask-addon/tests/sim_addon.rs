//! The built add-on (`target/haiku/virtio_sound`, the file a Haiku user installs) loaded by
//! the simulator with Haiku's loader rules, probed and published by its device manager, and
//! driven through its device hooks the way the multi_audio media add-on drives it.

mod common;

use std::path::Path;

use haiku_sim::addon::Addon;
use haiku_sim::{EnvConfig, HaikuRelease, Interrupts};
use hmulti_client::{self as client, play, Choice, Hmulti, Session};
use snd_model::{ChmapConfig, ControlConfig, JackConfig};
use snd_model::{Fault, FaultTarget, ModelConfig, StreamConfig};
use spec::hmulti_audio::{self as hm, Opcode};
use spec::virtio_snd::{Direction, PcmRate, RequestCode, VIRTIO_SND_CTL_ROLE_VOLUME};

fn addon() -> &'static Path {
    common::built_addon()
}

fn device(channels: u8) -> ModelConfig {
    ModelConfig::hmulti_full(channels)
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 131 + seed * 17) % 251) as u8)
        .collect()
}

/// What a client saw of one run of the matrix: every exchange's reports and the data.
#[derive(Debug, PartialEq)]
struct Seen {
    reports: Vec<(i64, i64)>,
    rec_reports: Vec<(i64, i64)>,
    played: Vec<u8>,
    recorded: Vec<u8>,
}

/// One case of the bit-exact matrix in Haiku `haiku` with interrupts delivered as `irq`
/// says: plays a pattern and records, checks both bit for bit, and returns what the client
/// saw.
fn matrix_case(
    channels: u8,
    rate: u32,
    format: u32,
    seed: usize,
    irq: Interrupts,
    haiku: HaikuRelease,
) -> Seen {
    let env = EnvConfig {
        interrupts: irq,
        haiku,
        ..EnvConfig::default()
    };
    let a = Addon::load_in(addon(), device(channels), None, env, |_| {})
        .unwrap_or_else(|e| panic!("{haiku:?}: {e}"));
    assert_eq!(a.env().haiku(), haiku);
    let d = a.open_first().unwrap();
    let mut s = Session::init(
        &d,
        Choice {
            rate: Some(rate),
            format: Some(format),
        },
    )
    .unwrap();
    let what = format!("{channels} ch, rate bit {rate:#x}, format {format:#x}, {irq:?}, {haiku:?}");
    assert_eq!(
        (s.format.output.rate, s.format.output.format),
        (rate, format),
        "{what}"
    );
    let input = pattern(s.play.bytes() * 6, seed);
    let p = play(&d, &mut s, &input);
    assert_eq!(p.errors, 0, "{what}");
    let lead = p.buffers * s.play.bytes();
    let played = a.model().played(0);
    s.check_played(&played, lead, &input)
        .unwrap_or_else(|e| panic!("{what}: playback not bit-exact: {e}"));
    assert!(
        !p.recorded.is_empty() && a.model().recorded(1).starts_with(&p.recorded),
        "{what}: recording differs"
    );
    // Every exchange hands back exactly one more buffer, at a later time: a completion
    // counted twice, or a wake-up with nothing completed, would show here.
    for reports in [&p.reports, &p.rec_reports] {
        for w in reports.windows(2) {
            assert_eq!(w[1].1 - w[0].1, p.buffer_frames as i64, "{what}: {w:?}");
            assert!(
                w[1].0 > w[0].0,
                "{what}: time went backwards or stood: {w:?}"
            );
        }
    }
    // No underrun while streaming at the default buffer settings (the one at the very end
    // is the drained stream stopping).
    let last_report = p.reports.last().map_or(0, |r| r.0);
    assert!(
        a.model().xruns(0).iter().all(|&t| t > last_report),
        "{what}: xrun while streaming"
    );
    let stats = a.env().interrupt_stats();
    if let Interrupts::Shared { .. } = irq {
        // Really shared: every interrupt ran more than one queue's callback, and the
        // simulator raised spurious ones.
        assert!(
            stats.spurious > 0 && stats.callbacks >= 2 * stats.device,
            "{what}: {stats:?}"
        );
    } else {
        assert_eq!(
            (stats.spurious, stats.callbacks),
            (0, stats.device),
            "{what}"
        );
    }
    s.release(&d);
    assert_eq!(d.close(), 0);
    a.unload()
        .unwrap_or_else(|v| panic!("{what}: {}", v.join("\n")));
    Seen {
        reports: p.reports,
        rec_reports: p.rec_reports,
        played,
        recorded: p.recorded,
    }
}

/// The matrix of rates, formats and channel counts, bit-exact both ways, with interrupts as
/// MSI-X delivers them (a vector per queue) and as INTx or a single vector does (every
/// queue's callback on every interrupt, plus spurious ones): the client must see exactly
/// the same in both. And in R1/beta5's ABI (its kernel exports, its three-argument
/// `alloc_queues`, its unchecked name callback), with a vector per queue only (to keep the
/// test's time down: the interrupt delivery is the same code on both releases): the same
/// again.
#[test]
fn playback_and_recording_are_bit_exact() {
    let rates = [
        hm::B_SR_8000,
        hm::B_SR_44100,
        hm::B_SR_48000,
        hm::B_SR_96000,
        hm::B_SR_192000,
        hm::B_SR_384000,
    ];
    let formats = [hm::B_FMT_16BIT, hm::B_FMT_32BIT, hm::B_FMT_FLOAT];
    for channels in [1u8, 2, 6, 8] {
        for (ri, &rate) in rates.iter().enumerate() {
            for &format in &formats {
                let seed = ri + channels as usize;
                let case = |irq, haiku| matrix_case(channels, rate, format, seed, irq, haiku);
                let per_queue = case(Interrupts::PerQueue, HaikuRelease::Nightly);
                let shared = Interrupts::Shared { seed: seed as u64 };
                let shared = case(shared, HaikuRelease::Nightly);
                assert!(
                    per_queue == shared,
                    "{channels} ch, rate bit {rate:#x}, format {format:#x}: the client saw \
                     something else with shared interrupts"
                );
                let beta5 = case(Interrupts::PerQueue, HaikuRelease::Beta5);
                assert!(
                    per_queue == beta5,
                    "{channels} ch, rate bit {rate:#x}, format {format:#x}: the client saw \
                     something else on R1/beta5"
                );
            }
        }
    }
}

#[test]
fn the_media_addons_whole_life() {
    let a = Addon::load(addon(), device(2), None).unwrap();
    let d = a.open_first().unwrap();
    let mut s = Session::init(
        &d,
        Choice {
            rate: Some(hm::B_SR_48000),
            format: Some(hm::B_FMT_16BIT),
        },
    )
    .unwrap();
    // Several seconds of exchanges.
    let input = pattern(s.play.bytes() * 300, 1);
    let p = play(&d, &mut s, &input);
    assert_eq!(p.errors, 0);
    let t_end = p.reports.last().unwrap().0 - p.reports[0].0;
    assert!(t_end >= 2_900_000, "{t_end} µs of streaming");
    let played_before = a.model().played(0).len();
    // Resume with the same buffers after FORCE_STOP (play() ended with one).
    let more = pattern(s.play.bytes() * 10, 2);
    let p2 = play(&d, &mut s, &more);
    assert_eq!(p2.errors, 0);
    let after = &a.model().played(0)[played_before..];
    s.check_played(after, p2.buffers * s.play.bytes(), &more)
        .unwrap();
    // Format change between exchanges, as the frequency parameter does it.
    let mut f = s.format;
    f.output.rate = hm::B_SR_96000;
    f.input.rate = hm::B_SR_96000;
    assert_eq!(client::ioctl(&d, hm::B_MULTI_SET_GLOBAL_FORMAT, &mut f), 0);
    s.format = f;
    s.get_buffers(&d).unwrap();
    let at_change = a.model().played(0).len();
    let third = pattern(s.play.bytes() * 8, 3);
    let p3 = play(&d, &mut s, &third);
    assert_eq!(p3.errors, 0);
    assert_eq!(a.model().stream_params(0).unwrap().rate_hz(), 96000);
    s.check_played(
        &a.model().played(0)[at_change..],
        p3.buffers * s.play.bytes(),
        &third,
    )
    .unwrap();
    s.release(&d);
    assert_eq!(d.close(), 0);
    // Reopen, and 100 open/close cycles.
    for _ in 0..100 {
        let d = a.open_first().unwrap();
        let s = Session::init(&d, Choice::default()).unwrap();
        s.release(&d);
        assert_eq!(d.close(), 0);
    }
    a.unload().unwrap_or_else(|v| panic!("{}", v.join("\n")));
}

#[test]
fn a_hostile_client_gets_status_codes() {
    let a = Addon::load(addon(), device(2), None).unwrap();
    let d = a.open_first().unwrap();
    let s = Session::init(&d, Choice::default()).unwrap();
    let kernel_ptr = 0xffff_ff00_1234_0000u64;
    let unmapped = 0x7000_0000_0000u64;
    for &op in Opcode::ALL {
        if op == Opcode::BufferForceStop {
            continue;
        }
        for (ptr, len) in [
            (0u64, 512usize),
            (kernel_ptr, 512),
            (unmapped, 512),
            (0x1000, 512),
        ] {
            let r = d.ioctl(op as u32, ptr, len);
            assert!(r < 0, "{op:?} with {ptr:#x} answered {r}");
        }
        let small = d.user_alloc(8);
        assert!(
            d.ioctl(op as u32, small, 3) < 0,
            "{op:?} with a 3-byte argument"
        );
        d.user_free(small);
    }
    assert!(d.ioctl(0, 0, 0) < 0 && d.ioctl(9000, 0, 0) < 0);
    // Nested pointers: a description whose channel array is not mapped.
    let mut desc: hm::MultiDescription = zerocopy::FromZeros::new_zeroed();
    desc.request_channel_count = 32;
    desc.channels = spec::UserPtr::from_addr(unmapped);
    assert!(client::ioctl(&d, hm::B_MULTI_GET_DESCRIPTION, &mut desc) < 0);
    s.release(&d);
    drop(d);
    a.unload().unwrap_or_else(|v| panic!("{}", v.join("\n")));
}

#[test]
fn a_faulty_device_gives_clean_errors() {
    // A device that swallows every playback buffer: exchanges fail, after a wait, and
    // nothing hangs.
    let cfg = device(2);
    let a = Addon::load(addon(), cfg.clone(), Some("log_level 0\n")).unwrap();
    a.model().set_fault(FaultTarget::Tx, Fault::Lost);
    let d = a.open_first().unwrap();
    let mut s = Session::init(
        &d,
        Choice {
            rate: Some(hm::B_SR_48000),
            format: None,
        },
    )
    .unwrap();
    let t0 = a.kernel().clock().now();
    let failed = (0..5).filter(|_| s.exchange(&d) != 0).count();
    let took = a.kernel().clock().now() - t0;
    assert!(failed >= 4, "{failed} of 5 exchanges failed");
    assert!(
        took >= failed as i64 * 50_000,
        "failing exchanges must wait, not spin: {took} µs for {failed}"
    );
    a.model().clear_faults();
    s.release(&d);
    // The last close (devfs `free`) while the device keeps the buffers: nothing is freed
    // under it (the memory records such a deletion as a failure when it happens) ...
    drop(d);
    let kernel = a.kernel().clone();
    assert!(
        kernel.log_contains("the device keeps"),
        "{:#?}",
        kernel.log_lines()
    );
    // ... and at unload the output stream's headers and the buffers are leaked, logged,
    // and nothing else is left behind or reported by the device.
    let problems = a.unload().unwrap_err();
    let leaked: Vec<&str> = problems
        .iter()
        .map(|p| {
            ["\"virtio_sound pcm headers\"", "\"virtio_sound buffers\""]
                .into_iter()
                .find(|name| p.contains(name) && p.ends_with("is still alive"))
                .unwrap_or_else(|| panic!("unexpected problem: {p}\n(all: {problems:#?})"))
        })
        .collect();
    assert_eq!(leaked.len(), 2, "{problems:#?}");
    assert_ne!(leaked[0], leaked[1], "{problems:#?}");
    let leak_lines = kernel
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("leaking"))
        .count();
    assert_eq!(leak_lines, 2, "{:#?}", kernel.log_lines());
    for (target, fault) in [
        (FaultTarget::Control(RequestCode::PcmInfo), Fault::Lost),
        (
            FaultTarget::Control(RequestCode::PcmInfo),
            Fault::Status(0x8003),
        ),
        (
            FaultTarget::Control(RequestCode::PcmInfo),
            Fault::ShortReply(8),
        ),
    ] {
        // The fault must be in place before the probe runs: load with a pre-faulted model.
        let r = Addon::load_with(addon(), cfg.clone(), None, |m| m.set_fault(target, fault));
        match r {
            Ok(a) => {
                assert!(
                    a.paths.is_empty(),
                    "{target:?} {fault:?}: published {:?}",
                    a.paths
                );
                a.unload().unwrap_or_else(|v| panic!("{}", v.join("\n")));
            }
            Err(e) => assert!(e.contains("init_driver"), "{target:?} {fault:?}: {e}"),
        }
    }
}

#[test]
fn topology_through_the_addon() {
    let mut cfg = device(8);
    cfg.streams[0] = StreamConfig::output()
        .with_channels(1, 8)
        .with_rates(&[PcmRate::Rate48000]);
    cfg.jacks = vec![JackConfig {
        hda_fn_nid: 0,
        features: 0,
        hda_reg_defconf: 0,
        hda_reg_caps: 0,
        connected: true,
    }];
    cfg.chmaps = vec![ChmapConfig {
        hda_fn_nid: 0,
        direction: Direction::Output,
        positions: vec![3, 4, 7, 8, 5, 6, 9, 10],
    }];
    cfg.offer_ctls = true;
    cfg.controls = vec![ControlConfig::integer(
        "Master Playback Volume",
        VIRTIO_SND_CTL_ROLE_VOLUME << 1,
        2,
        0,
        100,
        50,
    )];
    let a = Addon::load(addon(), cfg, None).unwrap();
    let d = a.open_first().unwrap();
    let s = Session::init(&d, Choice::default()).unwrap();
    assert_eq!(s.desc.output_channel_count, 8);
    let sur = hm::B_CHANNEL_SURROUND_BUS;
    assert_eq!(s.channels[0].designations, hm::B_CHANNEL_LEFT | sur);
    assert_eq!(s.channels[3].designations, hm::B_CHANNEL_SUB | sur);
    assert_eq!(s.channels[7].designations, hm::B_CHANNEL_SIDE_RIGHT | sur);
    let gains: Vec<_> = s
        .controls
        .iter()
        .filter(|c| c.flags == hm::B_MULTI_MIX_GAIN)
        .collect();
    assert_eq!(gains.len(), 2);
    assert_eq!(gains[1].master, gains[0].id);
    // The parameter web's GET_MIX walk reads the element's value through the add-on.
    let left = s
        .mix
        .iter()
        .find(|(id, _)| *id == gains[0].id)
        .expect("a value for the gain");
    assert_eq!(left.1.u.gain(), 50.0);
    s.release(&d);
    drop(d);
    a.unload().unwrap_or_else(|v| panic!("{}", v.join("\n")));
}

/// `stop_padding_ms` in the settings file sets how much silence follows the last buffer
/// when playback stops (0: none, STOP right after the drain).
#[test]
fn the_stop_padding_follows_the_settings_file() {
    for (text, ms) in [
        ("stop_padding_ms 0\n", 0usize),
        ("stop_padding_ms 50\n", 50),
    ] {
        let a = Addon::load(addon(), device(2), Some(text)).unwrap();
        let d = a.open_first().unwrap();
        let mut s = Session::init(
            &d,
            Choice {
                rate: Some(hm::B_SR_48000),
                format: Some(hm::B_FMT_16BIT),
            },
        )
        .unwrap();
        let input = pattern(s.play.bytes() * 5, 9);
        let p = play(&d, &mut s, &input);
        assert_eq!(p.errors, 0);
        let lead = p.buffers * s.play.bytes();
        let played = a.model().played(0);
        assert!(played[lead..lead + input.len()] == input[..], "{text}");
        let tail = &played[lead + input.len()..];
        assert_eq!(tail.len(), ms * 48 * 4, "{text}: {ms} ms of stereo S16");
        assert!(tail.iter().all(|&b| b == 0), "{text}");
        s.release(&d);
        assert_eq!(d.close(), 0);
        a.unload().unwrap();
    }
}

/// `played` is silence, then `inputs[0]` bit for bit, silence, `inputs[1]`, ... silence.
fn assert_heard(played: &[u8], inputs: &[&[u8]], quiet: u8, what: &str) {
    let mut at = 0;
    for (i, input) in inputs.iter().enumerate() {
        let lead = input.iter().position(|&b| b != quiet).unwrap_or(0);
        let start = played[at..]
            .iter()
            .position(|&b| b != quiet)
            .map(|p| at + p - lead)
            .unwrap_or_else(|| panic!("{what}: run {i} is missing"));
        assert!(
            played.len() >= start + input.len() && played[start..start + input.len()] == **input,
            "{what}: run {i} is not heard bit for bit from byte {start}"
        );
        at = start + input.len();
    }
    assert!(played[at..].iter().all(|&b| b == quiet), "{what}: the tail");
}

/// The built add-on on devices as they really are (`ModelConfig::qemu_wav`: capture comes
/// back only at RELEASE, empty; `ModelConfig::vhost_null`: playback completes as queued,
/// capture never): two runs with FORCE_STOP between play bit-exact at a few rates and
/// formats, no exchange fails, the record side never reports a buffer, and close returns.
/// On vhost-null the exchanges come one buffer period apart (1 µs: times are whole µs,
/// each period's end rounded down) and `played_frames_count` never leads the time.
#[test]
fn devices_as_they_really_are() {
    let cases = [
        (hm::B_SR_8000, hm::B_FMT_8BIT_U, 8000i64),
        (hm::B_SR_44100, hm::B_FMT_16BIT, 44100),
        (hm::B_SR_48000, hm::B_FMT_32BIT, 48000),
    ];
    for (name, config) in [
        ("qemu-wav", ModelConfig::qemu_wav()),
        ("vhost-null", ModelConfig::vhost_null()),
    ] {
        for (rate, format, hz) in cases {
            let what = format!("{name}, {hz} Hz, format {format:#x}");
            let a = Addon::load(addon(), config.clone(), None).unwrap();
            let d = a.open_first().unwrap();
            let choice = Choice {
                rate: Some(rate),
                format: Some(format),
            };
            let mut s = Session::init(&d, choice).unwrap();
            assert_eq!(
                (s.format.output.rate, s.format.output.format),
                (rate, format),
                "{what}"
            );
            let first = pattern(s.play.bytes() * 30, hz as usize);
            let second = pattern(s.play.bytes() * 10, hz as usize + 1);
            for input in [&first, &second] {
                let p = play(&d, &mut s, input);
                assert_eq!(p.errors, 0, "{what}");
                assert!(p.recorded.is_empty(), "{what}: nothing to read");
                assert!(p.rec_reports.iter().all(|&r| r == (0, 0)), "{what}");
                if name == "vhost-null" {
                    let frames = p.buffer_frames as i64;
                    let period = frames * 1_000_000 / hz;
                    for w in p.reports.windows(2) {
                        assert!((w[1].0 - w[0].0 - period).abs() <= 1, "{what}: {w:?}");
                    }
                    let (t0, f0) = p.reports[0];
                    for &(t, f) in &p.reports {
                        assert!((f - f0) * 1_000_000 / hz <= t - t0 + 1, "{what}: ahead");
                    }
                }
            }
            assert_heard(
                &a.model().played(0),
                &[&first, &second],
                s.silence_byte(),
                &what,
            );
            s.release(&d);
            let t0 = a.kernel().clock().now();
            assert_eq!(d.close(), 0, "{what}");
            assert!(a.kernel().clock().now() - t0 <= 300_000, "{what}: close");
            match a.unload() {
                Ok(()) => assert_eq!(name, "qemu-wav", "{what}: nothing kept"),
                Err(problems) => {
                    // vhost-null keeps the capture buffers past RELEASE: their memory (the
                    // input's headers, the card's buffers) is leaked, never freed.
                    assert_eq!(name, "vhost-null", "{what}: {problems:#?}");
                    assert_eq!(problems.len(), 2, "{what}: {problems:#?}");
                    for name in ["\"virtio_sound pcm headers\"", "\"virtio_sound buffers\""] {
                        assert!(
                            problems.iter().any(|p| p.contains(name)),
                            "{what}: {problems:#?}"
                        );
                    }
                }
            }
        }
    }
}

/// One interrupt can find more used chains than the add-on takes under one hold of the
/// queue (eight): it takes them all in that interrupt and posts every event buffer again.
#[test]
fn one_interrupt_takes_every_used_event_buffer() {
    let a = Addon::load(addon(), device(2), None).unwrap();
    let d = a.open_first().unwrap();
    let event = spec::virtio_snd::VIRTIO_SND_VQ_EVENT;
    let k = a.kernel().clone();
    k.clock().advance_by(1_000);
    let stocked = a.model().held(event);
    assert_eq!(stocked, 16, "the add-on stocks 16 event buffers");
    for round in 1..=2 {
        let before = a.model().interrupts(event);
        for _ in 0..16 {
            a.model()
                .inject_event(spec::virtio_snd::DeviceEvent::PcmXrun { stream_id: 0 });
        }
        k.clock().advance_by(1_000);
        assert_eq!(a.model().interrupts(event) - before, 1, "round {round}");
        assert_eq!(a.model().used_pending(event), 0, "round {round}");
        assert_eq!(a.model().held(event), 16, "round {round}");
    }
    assert_eq!(a.model().events_dropped(), 0);
    drop(d);
    a.unload().unwrap_or_else(|v| panic!("{}", v.join("\n")));
}
