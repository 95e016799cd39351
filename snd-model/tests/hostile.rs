//! A driver that does everything wrong, at random: the device model and the kernel must
//! record it and carry on, never panic, never touch memory outside an area.

use std::sync::Arc;

use platform::dma::DmaRegion;
use platform::{Kernel, PhysEntry, QueueHandler, VirtioDevice};
use sim_kernel::SimKernel;
use snd_model::{ChmapConfig, ControlConfig, JackConfig};
use snd_model::{Fault, FaultTarget, ModelConfig, SndModel, StreamConfig};
use spec::haiku_driver::VIRTIO_FEATURE_VERSION_1;
use spec::virtio_snd::{
    self as vs, ControlRequest, DeviceEvent, Direction, PcmFeature, RequestCode,
};

/// A small deterministic generator, so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Drains every queue it is told about, as a handler should.
struct Drain {
    model: std::sync::Mutex<Option<SndModel>>,
}

impl QueueHandler for Drain {
    fn queue_interrupt(&self, queue: u16) {
        if let Some(m) = self.model.lock().unwrap().as_ref() {
            while m.queue_dequeue(queue).is_some() {}
        }
    }
}

fn config() -> ModelConfig {
    ModelConfig {
        streams: vec![
            StreamConfig::output().with_features(&[PcmFeature::EvtXruns]),
            StreamConfig::input(),
            StreamConfig::output().with_channels(1, 8),
        ],
        jacks: vec![JackConfig {
            features: 1,
            ..JackConfig::default()
        }],
        chmaps: vec![ChmapConfig {
            hda_fn_nid: 0,
            direction: Direction::Input,
            positions: vec![2],
        }],
        controls: vec![
            ControlConfig::integer("Volume", 2, 2, -10, 10, 0).with_tlv(1, &[0; 16]),
            ControlConfig::enumerated("Mode", &["A", "B", "C"], 0),
            ControlConfig::integer64("Big", 3, -5, 5, 1),
            ControlConfig::boolean("Mute", 4, 1, true),
        ],
        offer_ctls: true,
        queue_size: 32,
        ..ModelConfig::default()
    }
}

/// A plausible request most of the time, so the deeper paths get exercised too.
fn request(rng: &mut Rng) -> Vec<u8> {
    let codes = RequestCode::ALL;
    let code = if rng.chance(90) {
        codes[rng.below(codes.len() as u64) as usize].raw()
    } else {
        rng.next() as u32
    };
    let mut b = code.to_le_bytes().to_vec();
    // Mostly the size the request really has.
    let exact = match RequestCode::from_raw(code) {
        Some(RequestCode::PcmSetParams) => 24,
        Some(
            RequestCode::PcmPrepare
            | RequestCode::PcmStart
            | RequestCode::PcmStop
            | RequestCode::PcmRelease
            | RequestCode::CtlEnumItems
            | RequestCode::CtlRead
            | RequestCode::CtlTlvRead,
        ) => 8,
        Some(RequestCode::CtlWrite) => 8 + 512,
        Some(RequestCode::CtlTlvWrite | RequestCode::CtlTlvCommand) => 8 + 8 + 4,
        _ => 16,
    };
    let len = match rng.below(6) {
        0 => 4,
        1 => rng.below(600) as usize,
        _ => exact,
    };
    while b.len() < len {
        // Small numbers make valid ids, counts and parameters likely.
        let v = if rng.chance(70) {
            rng.below(5) as u8
        } else {
            rng.next() as u8
        };
        b.push(v);
    }
    // Ids, starts and counts: small numbers, whole u32s.
    for field in [4usize, 8] {
        if b.len() >= field + 4 && rng.chance(85) {
            let v = rng.below(4) as u32;
            b[field..field + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    let item = match code {
        vs::VIRTIO_SND_R_JACK_INFO | vs::VIRTIO_SND_R_CHMAP_INFO => Some(24u32),
        vs::VIRTIO_SND_R_PCM_INFO => Some(32),
        vs::VIRTIO_SND_R_CTL_INFO => Some(96),
        _ => None,
    };
    if let (Some(size), 16) = (item, b.len()) {
        if rng.chance(70) {
            b[12..16].copy_from_slice(&size.to_le_bytes());
        }
    }
    if matches!(
        code,
        vs::VIRTIO_SND_R_CTL_TLV_WRITE | vs::VIRTIO_SND_R_CTL_TLV_COMMAND
    ) && b.len() == 20
        && rng.chance(70)
    {
        b[12..16].copy_from_slice(&4u32.to_le_bytes());
    }
    if code == vs::VIRTIO_SND_R_PCM_SET_PARAMS && b.len() >= 24 && rng.chance(60) {
        b[8..12].copy_from_slice(&8192u32.to_le_bytes());
        b[12..16].copy_from_slice(&2048u32.to_le_bytes());
        b[16..20].copy_from_slice(&0u32.to_le_bytes());
        b[20] = 2;
        b[21] = vs::VIRTIO_SND_PCM_FMT_S16;
        b[22] = vs::VIRTIO_SND_PCM_RATE_48000;
        b[23] = 0;
        b.truncate(24);
    }
    b
}

/// A correct SET_PARAMS, PREPARE, START burst, so streams really run now and then.
fn good_start(m: &SndModel, dma: &DmaRegion, stream: u32) {
    let mut set = vec![0u8; 24];
    set[..4].copy_from_slice(&vs::VIRTIO_SND_R_PCM_SET_PARAMS.to_le_bytes());
    set[4..8].copy_from_slice(&stream.to_le_bytes());
    set[8..12].copy_from_slice(&8192u32.to_le_bytes());
    set[12..16].copy_from_slice(&2048u32.to_le_bytes());
    set[20] = 2;
    set[21] = vs::VIRTIO_SND_PCM_FMT_S16;
    set[22] = vs::VIRTIO_SND_PCM_RATE_48000;
    let hdr = |code: u32| {
        let mut b = code.to_le_bytes().to_vec();
        b.extend_from_slice(&stream.to_le_bytes());
        b
    };
    for req in [
        set,
        hdr(vs::VIRTIO_SND_R_PCM_PREPARE),
        hdr(vs::VIRTIO_SND_R_PCM_START),
    ] {
        // The device copies the request when it is queued, so one spot serves all three.
        dma.write(0x100, &req).unwrap();
        let e = [
            dma.entry(0x100, req.len()).unwrap(),
            dma.entry(0x8000, 4).unwrap(),
        ];
        let _ = m.queue_request(vs::VIRTIO_SND_VQ_CONTROL, &e, 1, 0);
    }
}

#[test]
fn random_abuse_is_recorded_never_fatal() {
    for seed in 1..=6u64 {
        abuse(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
}

fn abuse(seed: u64) {
    let mut rng = Rng(seed | 1);
    let k = SimKernel::new();
    let m = SndModel::new(&k, config());
    let dma = DmaRegion::new(&k, "abuse", 64 * 1024).unwrap();
    let len = dma.len();
    let handler = Arc::new(Drain {
        model: std::sync::Mutex::new(Some(m.clone())),
    });
    m.negotiate_features(VIRTIO_FEATURE_VERSION_1 | 1).unwrap();
    m.alloc_queues(4).unwrap();
    m.setup_interrupts(handler.clone()).unwrap();

    let faults = [
        Fault::Status(vs::VIRTIO_SND_S_IO_ERR),
        Fault::ShortReply(3),
        Fault::Oversized(9999),
        Fault::Delay(300),
        Fault::Lost,
        Fault::ExtraItems(7),
        Fault::Garbage,
    ];
    let targets = [
        FaultTarget::AnyControl,
        FaultTarget::Tx,
        FaultTarget::Rx,
        FaultTarget::Event,
        FaultTarget::Control(RequestCode::PcmInfo),
    ];

    for step in 0..1500 {
        if step % 250 == 249 {
            // Dropped and lost chains fill the rings for good; a reset frees them.
            m.free_queues().expect("the model resets");
            m.negotiate_features(VIRTIO_FEATURE_VERSION_1 | 1).unwrap();
            m.alloc_queues(4).unwrap();
            m.setup_interrupts(handler.clone()).unwrap();
        }
        match rng.below(10) {
            0..=5 => {
                let queue = rng.below(5) as u16;
                let n = 1 + rng.below(4) as usize;
                let mut entries = Vec::new();
                for _ in 0..n {
                    if rng.chance(85) {
                        let off = rng.below(len as u64 - 1) as usize;
                        let size = 1 + rng.below((len - off) as u64) as usize;
                        entries.push(dma.entry(off, size.min(9000)).unwrap());
                    } else {
                        entries.push(PhysEntry {
                            address: rng.next(),
                            size: rng.next() >> rng.below(64),
                        });
                    }
                }
                let mut readable = rng.below(n as u64 + 2) as usize;
                if queue == vs::VIRTIO_SND_VQ_CONTROL && rng.chance(80) {
                    let req = request(&mut rng);
                    dma.write(0, &req).unwrap();
                    entries[0] = dma.entry(0, req.len()).unwrap();
                    // Mostly a well-formed chain: the reply buffer the request calls for.
                    if rng.chance(70) {
                        let want = ControlRequest::decode(&req, 9000)
                            .map_or(4, |r| r.response_len())
                            .min(9000);
                        entries.truncate(1);
                        entries.push(dma.entry(0x8000, want).unwrap());
                        readable = 1;
                    }
                } else if rng.chance(70) {
                    let stream = rng.below(4) as u32;
                    dma.write(0, &stream.to_le_bytes()).unwrap();
                    entries[0] = dma.entry(0, 4).unwrap();
                    if rng.chance(70) {
                        // A well-formed tx or rx chain of one period.
                        entries.truncate(1);
                        entries.push(dma.entry(0x4000, 2048).unwrap());
                        entries.push(dma.entry(0x3000 + 8 * rng.below(64) as usize, 8).unwrap());
                        readable = if queue == vs::VIRTIO_SND_VQ_TX { 2 } else { 1 };
                    }
                }
                let _ = m.queue_request(queue, &entries, readable, rng.next());
            }
            6 => k.snooze(rng.below(30_000) as i64),
            7 => {
                let _ = m.queue_dequeue(rng.below(5) as u16);
            }
            8 => {
                let t = targets[rng.below(targets.len() as u64) as usize];
                if rng.chance(50) {
                    m.set_fault_times(t, faults[rng.below(faults.len() as u64) as usize], 2);
                } else {
                    m.clear_fault(t);
                }
            }
            _ if rng.chance(50) => m.inject_event(DeviceEvent::PcmXrun {
                stream_id: rng.below(3) as u32,
            }),
            _ => good_start(&m, &dma, rng.below(3) as u32),
        }
    }
    k.snooze(1_000_000);

    m.free_interrupts();
    m.free_queues().expect("the model resets");
    *handler.model.lock().unwrap() = None;
    // SAFETY: the model was reset just above, so it holds no chain into `dma`.
    unsafe { dma.free(&k) };
    // Plenty was recorded; nothing may be left behind.
    assert!(!m.violations().is_empty());
    k.take_failures();
    k.assert_clean();
}
