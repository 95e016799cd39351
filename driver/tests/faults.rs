//! A misbehaving device at every injection point: init fails or degrades cleanly, nothing
//! waits past its timeout, nothing panics, nothing leaks.

mod common;

/// Reports any allocation the driver makes in an interrupt callback.
#[global_allocator]
static ALLOC: sim::memory::CheckingAllocator = sim::memory::CheckingAllocator;

use std::sync::Arc;

use common::*;
use driver::hmulti::Settings;
use driver::virtio::{Engine, Options};
use driver::{Kernel, Status};
use sim::{Fault, FaultTarget, ModelConfig, SimKernel, SndModel, StreamConfig};
use spec::hmulti_audio as hm;
use spec::virtio_snd::RequestCode;

/// A device with jacks, chmaps and controls, so every init query is sent.
fn rich() -> ModelConfig {
    let mut c = ModelConfig {
        jacks: vec![sim::model::JackConfig {
            hda_fn_nid: 0,
            features: 0,
            hda_reg_defconf: 0,
            hda_reg_caps: 0,
            connected: true,
        }],
        chmaps: vec![sim::model::ChmapConfig {
            hda_fn_nid: 0,
            direction: spec::virtio_snd::Direction::Output,
            positions: vec![3, 4],
        }],
        offer_ctls: true,
        ..ModelConfig::default()
    };
    c.controls = vec![
        sim::model::ControlConfig::integer("Master Playback Volume", 1 << 1, 2, 0, 100, 50),
        sim::model::ControlConfig::enumerated("Capture Source", &["Mic", "Line"], 0),
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

fn end(kernel: &Arc<SimKernel>, engine: Option<Arc<Engine<SimKernel, SndModel>>>) {
    if let Some(e) = engine {
        Engine::shutdown(e);
    }
    kernel.user_free_all();
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
                (Err(_), _) => {}
            }
            end(&kernel, r.ok());
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
        end(&kernel, None);
    }
    // More streams advertised than described: PCM_INFO answers BAD_MSG and init fails.
    let kernel = Arc::new(SimKernel::new());
    let model = Arc::new(SndModel::new(
        &kernel,
        ModelConfig {
            advertised_counts: Some([0, 5, 0, 0]),
            ..ModelConfig::default()
        },
    ));
    let (r, _) = start(&kernel, &model);
    assert!(r.is_err());
    end(&kernel, None);
}

#[test]
fn resource_exhaustion_during_init() {
    for n in 0..12 {
        let kernel = Arc::new(SimKernel::new());
        let model = Arc::new(SndModel::new(&kernel, rich()));
        kernel.fail_create_area_after(n);
        let (r, _) = start(&kernel, &model);
        end(&kernel, r.ok());
        let kernel = Arc::new(SimKernel::new());
        let model = Arc::new(SndModel::new(&kernel, rich()));
        kernel.fail_create_sem_after(n);
        let (r, _) = start(&kernel, &model);
        end(&kernel, r.ok());
    }
}

/// Streams with a device that fails at runtime: exchanges return errors after waiting,
/// never at once, and shutting down still cleans up.
#[test]
fn runtime_faults_do_not_hang_or_spin() {
    for (target, fault) in [
        (FaultTarget::Tx, Fault::Lost),
        (FaultTarget::Tx, Fault::Status(0x8003)),
        (FaultTarget::Tx, Fault::Delay(200_000)),
        (FaultTarget::Tx, Fault::Oversized(100)),
        (
            FaultTarget::Control(RequestCode::PcmStart),
            Fault::Status(0x8003),
        ),
        (FaultTarget::Control(RequestCode::PcmStart), Fault::Lost),
        (
            FaultTarget::Control(RequestCode::PcmPrepare),
            Fault::ShortReply(2),
        ),
        (FaultTarget::Control(RequestCode::PcmStop), Fault::Lost),
        (FaultTarget::Control(RequestCode::PcmRelease), Fault::Lost),
        (
            FaultTarget::Control(RequestCode::PcmSetParams),
            Fault::Status(0x8001),
        ),
        (FaultTarget::Rx, Fault::Lost),
        (FaultTarget::Event, Fault::Garbage),
    ] {
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
        let _ = rig.model.take_violations();
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
        RequestCode::PcmStart,
        RequestCode::PcmStop,
        RequestCode::PcmRelease,
        RequestCode::PcmPrepare,
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
