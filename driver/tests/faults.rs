//! A misbehaving device at every injection point: init fails or degrades cleanly, nothing
//! waits past its timeout, nothing panics, nothing leaks.

mod common;

/// Reports any allocation the driver makes in an interrupt callback.
#[global_allocator]
static ALLOC: sim_kernel::memory::CheckingAllocator = sim_kernel::memory::CheckingAllocator;

use std::sync::Arc;

use common::*;
use driver::hmulti::Settings;
use driver::virtio::pcm::Command;
use driver::virtio::{Engine, Options};
use platform::{Kernel, Status};
use sim_kernel::SimKernel;
use snd_model::{Fault, FaultTarget, ModelConfig, SndModel, StreamConfig};
use spec::hmulti_audio as hm;
use spec::virtio_snd::RequestCode;

/// A device with jacks, chmaps and controls, so every init query is sent.
fn rich() -> ModelConfig {
    let mut c = ModelConfig {
        jacks: vec![snd_model::JackConfig {
            hda_fn_nid: 0,
            features: 0,
            hda_reg_defconf: 0,
            hda_reg_caps: 0,
            connected: true,
        }],
        chmaps: vec![snd_model::ChmapConfig {
            hda_fn_nid: 0,
            direction: spec::virtio_snd::Direction::Output,
            positions: vec![3, 4],
        }],
        offer_ctls: true,
        ..ModelConfig::default()
    };
    c.controls = vec![
        snd_model::ControlConfig::integer("Master Playback Volume", 1 << 1, 2, 0, 100, 50),
        snd_model::ControlConfig::enumerated("Capture Source", &["Mic", "Line"], 0),
    ];
    c
}

fn start(
    kernel: &Arc<SimKernel>,
    model: &Arc<SndModel>,
) -> (Result<Arc<Engine<SimKernel, SndModel>>, Status>, i64) {
    let t0 = kernel.system_time();
    let r = Engine::start(
        kernel.clone(),
        model.clone(),
        Options {
            control_timeout_micros: 200_000,
        },
    );
    (r, kernel.system_time() - t0)
}

fn end(kernel: &Arc<SimKernel>, engine: Option<Arc<Engine<SimKernel, SndModel>>>, leaked: &[&str]) {
    if let Some(e) = engine {
        Engine::shutdown(e);
    }
    kernel.user_free_all();
    expect_leaked_areas(kernel, leaked);
    if let Err(p) = kernel.check_clean() {
        panic!("not clean:\n{}", p.join("\n"));
    }
}

#[test]
fn every_init_query_with_every_fault() {
    let queries = [
        RequestCode::JackInfo,
        RequestCode::PcmInfo,
        RequestCode::ChmapInfo,
        RequestCode::CtlInfo,
        RequestCode::CtlEnumItems,
    ];
    let faults = [
        Fault::Status(0x8003),
        Fault::Status(0x8002),
        Fault::Status(0x8001),
        Fault::ShortReply(4),
        Fault::Oversized(64),
        Fault::Delay(50_000),
        Fault::Lost,
        Fault::ExtraItems(3),
        Fault::Garbage,
    ];
    for q in queries {
        for f in faults {
            let kernel = Arc::new(SimKernel::new());
            let model = Arc::new(SndModel::new(&kernel, rich()));
            model.set_fault(q, f);
            let (r, took) = start(&kernel, &model);
            assert!(took <= 2_000_000, "{q:?} {f:?}: init took {took} µs");
            let required = q == RequestCode::PcmInfo;
            // The status a failed init must give, from the virtio status codes
            // (IO_ERR 0x8003, NOT_SUPP 0x8002, BAD_MSG 0x8001) and the driver's rules (a
            // reply of the wrong length is bad data, no answer is a device timeout).
            let want = match f {
                Fault::Status(0x8003) => Status::IO_ERROR,
                Fault::Status(0x8002) => Status::NOT_SUPPORTED,
                Fault::Status(0x8001) => Status::BAD_VALUE,
                Fault::Lost => Status::DEV_TIMEOUT,
                _ => Status::BAD_DATA,
            };
            match (&r, f) {
                // A delay under the timeout is only slower.
                (Ok(_), Fault::Delay(_)) => {}
                (Err(e), Fault::Delay(_)) => panic!("{q:?} delayed: {e:?}"),
                // NOT_SUPP of an optional query degrades (QEMU answers jacks and chmaps so).
                (Ok(e), Fault::Status(0x8002)) if !required => {
                    assert!(q != RequestCode::JackInfo || e.jacks().is_empty());
                }
                // Garbage in item bytes is the device's business, as long as lengths hold.
                (Ok(_), Fault::Garbage) => {}
                // Enum item names are cosmetic: a failure only loses the names.
                (Ok(_), _) if q == RequestCode::CtlEnumItems => {}
                (Ok(_), _) => panic!("{q:?} {f:?}: init succeeded on a broken reply"),
                (Err(e), _) => assert_eq!(*e, want, "{q:?} {f:?}"),
            }
            // A request the device never answered is a chain it may still write: the
            // control slots are leaked, never freed.
            let leaked: &[&str] = if f == Fault::Lost {
                &["virtio_sound control"]
            } else {
                &[]
            };
            end(&kernel, r.ok(), leaked);
        }
    }
}

#[test]
fn absurd_counts_in_config_are_refused() {
    for counts in [
        [0, 1_000_000, 0, 0],
        [u32::MAX, 2, 0, 0],
        [0, 2, 0, 100_000],
    ] {
        let kernel = Arc::new(SimKernel::new());
        let model = Arc::new(SndModel::new(
            &kernel,
            ModelConfig {
                advertised_counts: Some(counts),
                offer_ctls: true,
                ..ModelConfig::default()
            },
        ));
        let (r, _) = start(&kernel, &model);
        assert_eq!(r.err(), Some(Status::BAD_DATA), "{counts:?}");
        end(&kernel, None, &[]);
    }
    // More streams advertised than described: PCM_INFO fails and so does init.
    let kernel = Arc::new(SimKernel::new());
    let model = Arc::new(SndModel::new(
        &kernel,
        ModelConfig {
            advertised_counts: Some([0, 5, 0, 0]),
            ..ModelConfig::default()
        },
    ));
    let (r, _) = start(&kernel, &model);
    // The model cannot describe streams it advertised but has not: it answers NOT_SUPP
    // (0x8002), the driver's B_NOT_SUPPORTED, and PCM_INFO is required. The driver asked
    // only for what config space announced: no violation.
    assert_eq!(r.err(), Some(Status::NOT_SUPPORTED));
    expect_violations(model.take_violations(), &[]);
    end(&kernel, None, &[]);
}

#[test]
fn resource_exhaustion_during_init() {
    for n in 0..12 {
        let kernel = Arc::new(SimKernel::new());
        let model = Arc::new(SndModel::new(&kernel, rich()));
        kernel.fail_create_area_after(n);
        let (r, _) = start(&kernel, &model);
        end(&kernel, r.ok(), &[]);
        let kernel = Arc::new(SimKernel::new());
        let model = Arc::new(SndModel::new(&kernel, rich()));
        kernel.fail_create_sem_after(n);
        let (r, _) = start(&kernel, &model);
        end(&kernel, r.ok(), &[]);
    }
}

const CONTROL: &str = "virtio_sound control";
const HEADERS: &str = "virtio_sound pcm headers";
const BUFFERS: &str = "virtio_sound buffers";

/// Streams with a device that fails at runtime: exchanges return errors after waiting,
/// never at once, and shutting down still cleans up, except for the memory of chains the
/// device never gave back, which is leaked (never freed), exactly that and nothing else.
#[test]
fn runtime_faults_do_not_hang_or_spin() {
    use FaultTarget::{Control, Rx, Tx};
    // (where, what, areas leaked, violations the device must see)
    let cases: &[(FaultTarget, Fault, &[&str], &[&str])] = &[
        // Lost playback buffers: the output stream's headers and the buffers stay.
        (Tx, Fault::Lost, &[HEADERS, BUFFERS], &[]),
        (Tx, Fault::Status(0x8003), &[], &[]),
        (Tx, Fault::Delay(200_000), &[], &[]),
        (Tx, Fault::Oversized(100), &[], &[]),
        // The device started but answered IO_ERR: its state and the driver's part, and
        // the driver's RELEASE and PREPARE reach a started stream.
        (
            Control(RequestCode::PcmStart),
            Fault::Status(0x8003),
            &[],
            &["in state Started"],
        ),
        // Unanswered STARTs hold every control slot, so RELEASE cannot be sent: the
        // queued periods stay with the device too.
        (
            Control(RequestCode::PcmStart),
            Fault::Lost,
            &[CONTROL, HEADERS, BUFFERS],
            &[],
        ),
        (
            Control(RequestCode::PcmPrepare),
            Fault::ShortReply(2),
            &[],
            &[],
        ),
        (Control(RequestCode::PcmStop), Fault::Lost, &[CONTROL], &[]),
        (
            Control(RequestCode::PcmRelease),
            Fault::Lost,
            &[CONTROL],
            &[],
        ),
        (
            Control(RequestCode::PcmSetParams),
            Fault::Status(0x8001),
            &[],
            &[],
        ),
        (Rx, Fault::Lost, &[HEADERS, BUFFERS], &[]),
        (FaultTarget::Event, Fault::Garbage, &[], &[]),
    ];
    for &(target, fault, leaked, violations) in cases {
        let mut rig = Rig::new(ModelConfig {
            streams: vec![StreamConfig::output(), StreamConfig::input()],
            ..ModelConfig::default()
        });
        rig.start().unwrap();
        let card = rig.card(Settings::default());
        let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(hm::B_FMT_16BIT));
        rig.model.set_fault(target, fault);
        let k = card.kernel();
        for _ in 0..8 {
            let t0 = k.system_time();
            let r = c.exchange(&card);
            let took = k.system_time() - t0;
            if r.is_err() {
                assert!(
                    took >= 1_000,
                    "{target:?} {fault:?}: failed exchange returned after {took} µs"
                );
            }
            assert!(
                took <= 3_000_000,
                "{target:?} {fault:?}: exchange took {took} µs"
            );
        }
        let t0 = k.system_time();
        let _ = card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1);
        assert!(
            k.system_time() - t0 <= 3_000_000,
            "{target:?} {fault:?}: FORCE_STOP hung"
        );
        rig.model.clear_faults();
        card.shutdown();
        let engine = rig.engine.take().unwrap();
        Engine::shutdown(engine);
        rig.kernel.user_free_all();
        expect_violations(rig.model.take_violations(), violations);
        expect_leaked_areas(&rig.kernel, leaked);
        if let Err(p) = rig.kernel.check_clean() {
            panic!("{target:?} {fault:?}: not clean:\n{}", p.join("\n"));
        }
    }
}

#[test]
fn illegal_transitions_never_reach_the_device() {
    let mut rig = Rig::new(ModelConfig::default());
    let engine = rig.start().unwrap();
    let sent_before = rig.model.control_log().len();
    // Fresh stream: START, STOP and RELEASE are all illegal.
    for op in [
        Command::Start,
        Command::Stop,
        Command::Release,
        Command::Prepare,
    ] {
        assert_eq!(
            engine.stream_command(0, op),
            Err(Status::BAD_VALUE),
            "{op:?}"
        );
    }
    assert_eq!(
        rig.model.control_log().len(),
        sent_before,
        "nothing was sent"
    );
    drop(engine);
    rig.finish(None);
}

/// An output and an input stream at 48 kHz S16, three exchanges into a run.
fn duplex_running() -> (Rig, TestCard, Client) {
    let mut rig = Rig::new(ModelConfig {
        streams: vec![StreamConfig::output(), StreamConfig::input()],
        ..ModelConfig::default()
    });
    let card = rig.card(Settings::default());
    let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(hm::B_FMT_16BIT));
    for _ in 0..3 {
        c.exchange(&card).expect("exchange");
    }
    (rig, card, c)
}

/// The last close while the device keeps playback buffers (it never gives them back, even
/// at RELEASE): the buffer area stays allocated, since the device may still read and write
/// it, and when the driver goes the memory is leaked, never freed. The simulated memory
/// records a deletion under a chain the device holds at the moment it happens.
#[test]
fn a_device_that_keeps_buffers_never_sees_their_memory_freed() {
    let (mut rig, card, mut c) = duplex_running();
    // From now on every playback buffer stays with the device.
    rig.model.set_fault(FaultTarget::Tx, Fault::Lost);
    for _ in 0..6 {
        let _ = c.exchange(&card);
    }
    let k = rig.kernel.clone();
    card.shutdown();
    assert_eq!(
        k.take_failures(),
        Vec::<String>::new(),
        "nothing freed under the device"
    );
    assert!(
        k.areas().iter().any(|a| a.name == BUFFERS),
        "the buffer area outlives the card while the device holds buffers in it"
    );
    assert!(k.log_contains("the device keeps"), "{:#?}", k.log_lines());
    rig.model.clear_faults();
    let engine = rig.engine.take().unwrap();
    Engine::shutdown(engine);
    k.user_free_all();
    assert_eq!(
        k.take_failures(),
        Vec::<String>::new(),
        "nothing freed under the device"
    );
    expect_violations(rig.model.take_violations(), &[]);
    // The output stream's headers and the buffers; the input stream gave everything back.
    expect_leaked_areas(&k, &[HEADERS, BUFFERS]);
    k.assert_clean();
}

/// GET_BUFFERS where the output stream accepts the new buffers and the input stream's
/// SET_PARAMS fails: the output stream's periods are in the new area, which must therefore
/// stay allocated, and the client, which was told nothing, gets no buffers until it asks
/// again (exchanges answer B_NO_INIT); asking again plays bit-exact.
#[test]
fn a_half_configured_buffer_change_never_leaves_a_stream_in_freed_memory() {
    let (rig, card, mut c) = duplex_running();
    // Stream 1 is the input stream: its SET_PARAMS answers IO_ERR (0x8003), once.
    rig.model.set_fault_times(
        FaultTarget::ControlOf(RequestCode::PcmSetParams, 1),
        Fault::Status(0x8003),
        1,
    );
    let err = c.try_get_buffers(&card).unwrap_err();
    assert_eq!(
        err,
        format!("GET_BUFFERS failed: {:#x}", spec::haiku_driver::B_IO_ERROR)
    );
    assert_eq!(rig.kernel.take_failures(), Vec::<String>::new());
    for _ in 0..3 {
        assert_eq!(c.exchange(&card), Err(Status::NO_INIT));
    }
    assert_eq!(
        rig.kernel.take_failures(),
        Vec::<String>::new(),
        "no period was queued from freed memory"
    );
    // The client asks again (as after any failed GET_BUFFERS) and plays.
    c.get_buffers(&card);
    let before = rig.model.played(0).len();
    let n = c.list.return_playback_buffers as usize;
    let pb = c.play.bytes();
    let input = signal(pb * 8, 7);
    for chunk in input.chunks(pb) {
        c.exchange(&card).expect("exchange");
        let cycle = c.info.playback_buffer_cycle as usize;
        c.fill(&card, (cycle + n - 1) % n, chunk);
    }
    card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
        .expect("FORCE_STOP");
    let played = rig.model.played(0);
    let start = before + n * pb;
    assert!(
        played[start..start + input.len()] == input[..],
        "not bit-exact after the failed GET_BUFFERS"
    );
    rig.finish(Some(card));
}

/// The device leaves the bus while streaming (`SndModel::unplug`), and the device manager
/// says so (`Engine::device_removed`) between two exchanges: every later exchange fails
/// with `B_DEV_NOT_READY` a period apart (never at once: the media add-on ignores errors
/// and would spin; one blocked at the removal is the add-on test's), and the last close and the teardown send nothing
/// and wait for nothing. What the device held when it went (the streams' headers, the
/// buffers) is leaked, never freed; nothing else.
#[test]
fn a_removed_device_fails_fast_and_is_let_go() {
    let mut rig = Rig::new(ModelConfig::hmulti_full(2));
    let card = rig.card(Settings::default());
    let mut c = Client::init(&card, Some(hm::B_SR_48000), None);
    for _ in 0..5 {
        c.exchange(&card).expect("streaming");
    }
    // A steady exchange takes one period.
    let k = rig.kernel.clone();
    let before = k.system_time();
    c.exchange(&card).expect("streaming");
    let period = k.system_time() - before;
    rig.model.unplug();
    rig.engine.as_ref().unwrap().device_removed();
    for _ in 0..5 {
        let t = k.system_time();
        assert_eq!(c.exchange(&card), Err(Status::DEV_NOT_READY));
        assert_eq!(k.system_time() - t, period, "one period apart");
    }
    let t = k.system_time();
    card.shutdown();
    Engine::shutdown(rig.engine.take().unwrap());
    assert_eq!(k.system_time(), t, "the teardown waited for a gone device");
    assert!(k.log_contains("the device was removed"));
    k.user_free_all();
    expect_leaked_areas(
        &k,
        &[
            "virtio_sound pcm headers",
            "virtio_sound pcm headers",
            "virtio_sound buffers",
        ],
    );
    if let Err(p) = k.check_clean() {
        panic!("not clean:\n{}", p.join("\n"));
    }
}
