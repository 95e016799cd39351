//! The device model driven directly through `VirtioDevice`, by a fake driver a few lines
//! long, on a `SimKernel` with `DmaRegion` memory: what the real driver will see.

use std::sync::{Arc, Mutex};

use platform::dma::DmaRegion;
use platform::{Area, Kernel, PhysEntry, QueueHandler, Status, VirtioDevice};
use sim_kernel::SimKernel;
use snd_model::{
    capture_pattern, ControlConfig, CtlRange, JackConfig, PcmState, QEMU_FORMATS, QEMU_RATES,
};
use snd_model::{
    CaptureCompletion, Fault, FaultTarget, ModelConfig, PlaybackCompletion, SndModel, StreamConfig,
};
use spec::haiku_driver::VIRTIO_FEATURE_VERSION_1;
use spec::virtio_snd::{
    self as vs, ControlRequest, ControlResponse, CtlHdr, CtlValue, DeviceEvent, Direction, Hdr,
    PcmFeature, PcmHdr, PcmInfo, PcmSetParams, QueryInfo, RequestCode,
};
use zerocopy::little_endian::U32 as Le32;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// Counts heap use inside interrupt handlers: the fake driver's handler must not allocate,
/// like the real one.
#[global_allocator]
static ALLOC: sim_kernel::memory::CheckingAllocator = sim_kernel::memory::CheckingAllocator;

const CTL: u16 = vs::VIRTIO_SND_VQ_CONTROL;
const EVT: u16 = vs::VIRTIO_SND_VQ_EVENT;
const TX: u16 = vs::VIRTIO_SND_VQ_TX;
const RX: u16 = vs::VIRTIO_SND_VQ_RX;

const SECOND: i64 = 1_000_000;

/// Releases one semaphore per queue, like the driver's interrupt handler will, and notes
/// when it ran.
struct Irq {
    k: SimKernel,
    sems: [i32; 4],
    calls: Mutex<Vec<(u16, i64)>>,
}

impl QueueHandler for Irq {
    fn queue_interrupt(&self, queue: u16) {
        self.calls
            .lock()
            .unwrap()
            .push((queue, self.k.system_time()));
        self.k.release_sem(self.sems[queue as usize], true);
    }
}

/// A fake driver: one DMA region for headers, statuses and control messages.
struct Fake {
    k: SimKernel,
    m: SndModel,
    dma: DmaRegion,
    irq: Arc<Irq>,
}

// DMA region layout.
const REQ: usize = 0;
const RESP: usize = 0x4000;
const HDRS: usize = 0x1_0000;
const STATUSES: usize = 0x1_1000;
const EVENTS: usize = 0x1_2000;

impl Fake {
    fn new(config: ModelConfig) -> Fake {
        let k = SimKernel::new();
        let m = SndModel::new(&k, config);
        let dma = DmaRegion::new(&k, "fake dma", 0x1_3000).unwrap();
        let sems = [0, 1, 2, 3].map(|q| k.create_sem(0, &format!("q{q}")).unwrap());
        let irq = Arc::new(Irq {
            k: k.clone(),
            sems,
            // Room for every call up front: the handler must not allocate.
            calls: Mutex::new(Vec::with_capacity(100_000)),
        });
        Fake { k, m, dma, irq }
    }

    /// The spec's init sequence up to DRIVER_OK.
    fn init(config: ModelConfig) -> Fake {
        let f = Fake::new(config);
        let features =
            f.m.negotiate_features(VIRTIO_FEATURE_VERSION_1 | 1 << vs::VIRTIO_SND_F_CTLS)
                .unwrap();
        assert_ne!(features & VIRTIO_FEATURE_VERSION_1, 0);
        f.m.alloc_queues(4).unwrap();
        f.m.setup_interrupts(f.irq.clone()).unwrap();
        f
    }

    /// Waits (at most `timeout` µs of simulated time) for a used chain on `queue`.
    fn wait_used(&self, queue: u16, timeout: i64) -> Option<(u64, u32)> {
        let deadline = self.k.system_time() + timeout;
        loop {
            if let Some(u) = self.m.queue_dequeue(queue) {
                return Some(u);
            }
            let left = deadline - self.k.system_time();
            if left <= 0 {
                return None;
            }
            if self
                .k
                .acquire_sem(self.irq.sems[queue as usize], left)
                .is_err()
            {
                return self.m.queue_dequeue(queue);
            }
        }
    }

    /// Sends a control request; returns (used_len, the writable part as the device left it).
    fn control_raw(&self, request: &[u8], writable: usize) -> Option<(u32, Vec<u8>)> {
        self.dma.write(REQ, request).unwrap();
        self.dma.write(RESP, &vec![0xEE; writable]).unwrap();
        let entries = [
            self.dma.entry(REQ, request.len()).unwrap(),
            self.dma.entry(RESP, writable).unwrap(),
        ];
        self.m.queue_request(CTL, &entries, 1, 0xC0).unwrap();
        let (cookie, used) = self.wait_used(CTL, SECOND)?;
        assert_eq!(cookie, 0xC0);
        let mut out = vec![0; writable];
        self.dma.read(RESP, &mut out).unwrap();
        Some((used, out))
    }

    fn control(&self, req: &ControlRequest<'_>) -> (u32, Vec<u8>) {
        let mut bytes = vec![0; req.encoded_len()];
        req.encode(&mut bytes).unwrap();
        self.control_raw(&bytes, req.response_len())
            .expect("the control request completes")
    }

    /// The status of a control request that carries no payload.
    fn status(&self, req: &ControlRequest<'_>) -> u32 {
        let (used, reply) = self.control(req);
        assert_eq!(used, 4, "a bare status answer");
        u32::from_le_bytes(reply[..4].try_into().unwrap())
    }

    fn pcm(&self, code: RequestCode, stream: u32) -> u32 {
        let request = pcm_hdr(code, stream);
        let req = match code {
            RequestCode::PcmPrepare => ControlRequest::PcmPrepare { request },
            RequestCode::PcmStart => ControlRequest::PcmStart { request },
            RequestCode::PcmStop => ControlRequest::PcmStop { request },
            RequestCode::PcmRelease => ControlRequest::PcmRelease { request },
            _ => unreachable!(),
        };
        self.status(&req)
    }

    fn set_params(&self, stream: u32, p: Params) -> u32 {
        let mut request = PcmSetParams::new_zeroed();
        request.hdr = pcm_hdr(RequestCode::PcmSetParams, stream);
        request.buffer_bytes = Le32::new(p.buffer);
        request.period_bytes = Le32::new(p.period);
        request.features = Le32::new(p.features);
        request.channels = p.channels;
        request.format = p.format;
        request.rate = p.rate;
        self.status(&ControlRequest::PcmSetParams { request })
    }

    /// Queues a playback buffer: header and status from the DMA region, frames from `area`.
    fn queue_tx(
        &self,
        slot: usize,
        stream: u32,
        area: &Area,
        off: usize,
        len: usize,
    ) -> Result<(), Status> {
        self.dma
            .write(HDRS + slot * 16, &stream.to_le_bytes())
            .unwrap();
        self.dma.write(STATUSES + slot * 16, &[0xEE; 8]).unwrap();
        let entries = [
            self.dma.entry(HDRS + slot * 16, 4).unwrap(),
            PhysEntry {
                address: area.phys + off as u64,
                size: len as u64,
            },
            self.dma.entry(STATUSES + slot * 16, 8).unwrap(),
        ];
        self.m.queue_request(TX, &entries, 2, slot as u64)
    }

    /// Queues a capture buffer: frames go to `area`, the status to the DMA region.
    fn queue_rx(&self, slot: usize, stream: u32, area: &Area, off: usize, len: usize) {
        self.dma
            .write(HDRS + slot * 16, &stream.to_le_bytes())
            .unwrap();
        self.dma.write(STATUSES + slot * 16, &[0xEE; 8]).unwrap();
        let entries = [
            self.dma.entry(HDRS + slot * 16, 4).unwrap(),
            PhysEntry {
                address: area.phys + off as u64,
                size: len as u64,
            },
            self.dma.entry(STATUSES + slot * 16, 8).unwrap(),
        ];
        self.m.queue_request(RX, &entries, 1, slot as u64).unwrap();
    }

    fn io_status(&self, slot: usize) -> (u32, u32) {
        let mut s = [0u8; 8];
        self.dma.read(STATUSES + slot * 16, &mut s).unwrap();
        (
            u32::from_le_bytes(s[..4].try_into().unwrap()),
            u32::from_le_bytes(s[4..].try_into().unwrap()),
        )
    }

    fn queue_event_buffer(&self, slot: usize) {
        self.dma.write(EVENTS + slot * 8, &[0; 8]).unwrap();
        let e = [self.dma.entry(EVENTS + slot * 8, 8).unwrap()];
        self.m.queue_request(EVT, &e, 0, slot as u64).unwrap();
    }

    fn event(&self, slot: usize, used: u32) -> Result<DeviceEvent, spec::DecodeError> {
        let mut b = vec![0u8; used.min(8) as usize];
        self.dma.read(EVENTS + slot * 8, &mut b).unwrap();
        DeviceEvent::decode(&b)
    }

    /// Teardown as the driver does it, then the leak check.
    fn finish(self) {
        self.m.free_interrupts();
        self.m.free_queues().expect("the model resets");
        let Fake { k, m, dma, irq } = self;
        // SAFETY: the model was reset just above, so it holds no chain into `dma`.
        unsafe { dma.free(&k) };
        for s in irq.sems {
            k.delete_sem(s);
        }
        for a in k.areas() {
            k.delete_area(&a.to_area());
        }
        m.assert_no_violations();
        k.assert_clean();
    }
}

#[derive(Clone, Copy)]
struct Params {
    buffer: u32,
    period: u32,
    features: u32,
    channels: u8,
    format: u8,
    rate: u8,
}

/// 48 kHz stereo S16, periods of 1024 frames (4096 bytes), four of them.
const STEREO_48K: Params = Params {
    buffer: 4 * 4096,
    period: 4096,
    features: 0,
    channels: 2,
    format: vs::VIRTIO_SND_PCM_FMT_S16,
    rate: vs::VIRTIO_SND_PCM_RATE_48000,
};

fn pcm_hdr(code: RequestCode, stream: u32) -> PcmHdr {
    PcmHdr {
        hdr: Hdr {
            code: Le32::new(code.raw()),
        },
        stream_id: Le32::new(stream),
    }
}

fn query(code: RequestCode, start: u32, count: u32, size: usize) -> QueryInfo {
    QueryInfo {
        hdr: Hdr {
            code: Le32::new(code.raw()),
        },
        start_id: Le32::new(start),
        count: Le32::new(count),
        size: Le32::new(size as u32),
    }
}

fn pcm_info_request() -> ControlRequest<'static> {
    ControlRequest::PcmInfo {
        request: query(RequestCode::PcmInfo, 0, 2, 32),
    }
}

/// µs for `frames` at 48 kHz, rounded up like the model.
fn at_48k(frames: u64) -> i64 {
    (frames * 1_000_000).div_ceil(48_000) as i64
}

#[test]
fn features_and_config_space() {
    let f = Fake::new(ModelConfig::default());
    // QEMU offers no CTLS: asking for it gets only VERSION_1.
    let got =
        f.m.negotiate_features(VIRTIO_FEATURE_VERSION_1 | 1 << vs::VIRTIO_SND_F_CTLS)
            .unwrap();
    assert_eq!(got, VIRTIO_FEATURE_VERSION_1);
    let mut cfg = [0u8; 12];
    f.m.read_device_config(0, &mut cfg).unwrap();
    assert_eq!(cfg, [0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(f.m.queue_size(CTL), 64);
    f.m.assert_no_violations();

    // `controls` without CTLS negotiated, and past the end of config space.
    let mut four = [0u8; 4];
    f.m.read_device_config(12, &mut four).unwrap();
    assert_eq!(
        f.m.read_device_config(14, &mut four),
        Err(Status::BAD_VALUE),
        "past the 16-byte config space"
    );
    assert_eq!(f.m.take_violations().len(), 2);
    f.m.alloc_queues(4).unwrap();
    f.finish();

    let f = Fake::new(ModelConfig {
        offer_ctls: true,
        controls: vec![ControlConfig::integer("Master", 2, 2, 0, 100, 50)],
        ..ModelConfig::default()
    });
    let got =
        f.m.negotiate_features(VIRTIO_FEATURE_VERSION_1 | 1 << vs::VIRTIO_SND_F_CTLS)
            .unwrap();
    assert_ne!(got & 1 << vs::VIRTIO_SND_F_CTLS, 0);
    let mut cfg = [0u8; 16];
    f.m.read_device_config(0, &mut cfg).unwrap();
    assert_eq!(&cfg[12..], &[1, 0, 0, 0]);
    assert_eq!(f.m.negotiate_features(0), Err(Status::NOT_SUPPORTED));
    assert_eq!(f.m.take_violations().len(), 1, "VERSION_1 is required");
    f.m.alloc_queues(4).unwrap();
    f.finish();

    let f = Fake::new(ModelConfig {
        config_size: 12,
        ..ModelConfig::default()
    });
    f.m.negotiate_features(VIRTIO_FEATURE_VERSION_1).unwrap();
    assert_eq!(
        f.m.read_device_config(12, &mut four),
        Err(Status::BAD_VALUE),
        "past a 12-byte config space"
    );
    let v = f.m.take_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("past the 12-byte config space"), "{v:?}");
    f.m.alloc_queues(4).unwrap();
    f.finish();
}

#[test]
fn pcm_info_round_trip() {
    let f = Fake::init(ModelConfig::default());
    let t0 = f.k.system_time();
    let req = pcm_info_request();
    let (used, reply) = f.control(&req);
    assert_eq!(f.k.system_time(), t0 + 50, "the default control latency");
    assert_eq!(used, 4 + 2 * 32);
    let ControlResponse::PcmInfo(infos) = req.decode_response(&reply[..used as usize]).unwrap()
    else {
        panic!("not a PCM_INFO answer");
    };
    assert_eq!(infos.len(), 2);
    assert_eq!(infos[0].direction, Direction::Output.raw());
    assert_eq!(infos[1].direction, Direction::Input.raw());
    assert_eq!(infos[0].formats.get(), QEMU_FORMATS);
    assert_eq!(infos[0].formats.get(), 0x000E_0078);
    // QEMU's `supported_rates` (hw/audio/virtio-snd.c): every rate from 5512 to 384000 Hz,
    // written out here rather than taken from the model's constant.
    let qemu_rates = [
        vs::PcmRate::Rate5512,
        vs::PcmRate::Rate8000,
        vs::PcmRate::Rate11025,
        vs::PcmRate::Rate16000,
        vs::PcmRate::Rate22050,
        vs::PcmRate::Rate32000,
        vs::PcmRate::Rate44100,
        vs::PcmRate::Rate48000,
        vs::PcmRate::Rate64000,
        vs::PcmRate::Rate88200,
        vs::PcmRate::Rate96000,
        vs::PcmRate::Rate176400,
        vs::PcmRate::Rate192000,
        vs::PcmRate::Rate384000,
    ]
    .iter()
    .fold(0, |m, r| m | r.mask());
    assert_eq!(infos[0].rates.get(), qemu_rates);
    assert_eq!((infos[1].channels_min, infos[1].channels_max), (1, 2));
    assert_eq!(f.irq.calls.lock().unwrap().as_slice(), &[(CTL, t0 + 50)]);

    // Asking for more than config space advertises is the driver's fault.
    let (used, reply) = f.control(&ControlRequest::PcmInfo {
        request: query(RequestCode::PcmInfo, 1, 2, 32),
    });
    assert_eq!(
        (used, &reply[..4]),
        (4, &vs::VIRTIO_SND_S_BAD_MSG.to_le_bytes()[..])
    );
    assert_eq!(f.m.take_violations().len(), 1);
    f.finish();
}

#[test]
fn jacks_chmaps_and_controls_are_described() {
    let mut volume = ControlConfig::integer("PCM Playback Volume", 2, 2, 0, 255, 200);
    volume = volume.with_tlv(1, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let f = Fake::init(ModelConfig {
        jacks: vec![JackConfig {
            connected: true,
            features: 1 << vs::VIRTIO_SND_JACK_F_REMAP,
            ..JackConfig::default()
        }],
        chmaps: vec![snd_model::ChmapConfig {
            hda_fn_nid: 0,
            direction: Direction::Output,
            positions: vec![vs::VIRTIO_SND_CHMAP_FL, vs::VIRTIO_SND_CHMAP_FR],
        }],
        controls: vec![
            volume,
            ControlConfig::enumerated("Source", &["Mic", "Line"], 1),
        ],
        offer_ctls: true,
        ..ModelConfig::default()
    });

    let req = ControlRequest::JackInfo {
        request: query(RequestCode::JackInfo, 0, 1, 24),
    };
    let (used, reply) = f.control(&req);
    let Ok(ControlResponse::JackInfo(j)) = req.decode_response(&reply[..used as usize]) else {
        panic!("jack info");
    };
    assert_eq!(j[0].connected, 1);

    let req = ControlRequest::ChmapInfo {
        request: query(RequestCode::ChmapInfo, 0, 1, 24),
    };
    let (used, reply) = f.control(&req);
    let Ok(ControlResponse::ChmapInfo(c)) = req.decode_response(&reply[..used as usize]) else {
        panic!("chmap info");
    };
    assert_eq!(c[0].channels, 2);
    assert_eq!(&c[0].positions[..2], &[3, 4]);

    let req = ControlRequest::CtlInfo {
        request: query(RequestCode::CtlInfo, 0, 2, 96),
    };
    let (used, reply) = f.control(&req);
    let Ok(ControlResponse::CtlInfo(c)) = req.decode_response(&reply[..used as usize]) else {
        panic!("ctl info");
    };
    assert_eq!(&c[0].name[..19], b"PCM Playback Volume");
    assert_eq!(c[0].value.integer().max.get(), 255);
    assert_eq!(c[1].value.enumerated().items.get(), 2);

    let ctl = |id: u32, code: RequestCode| CtlHdr {
        hdr: Hdr {
            code: Le32::new(code.raw()),
        },
        control_id: Le32::new(id),
    };
    let req = ControlRequest::CtlEnumItems {
        request: ctl(1, RequestCode::CtlEnumItems),
        items: 2,
    };
    let (used, reply) = f.control(&req);
    let Ok(ControlResponse::CtlEnumItems(items)) = req.decode_response(&reply[..used as usize])
    else {
        panic!("enum items");
    };
    assert_eq!(&items[1].item[..5], b"Line\0");

    let req = ControlRequest::CtlRead {
        request: ctl(0, RequestCode::CtlRead),
    };
    let (used, reply) = f.control(&req);
    let Ok(ControlResponse::CtlRead(v)) = req.decode_response(&reply[..used as usize]) else {
        panic!("ctl read");
    };
    assert_eq!(v.value.integer()[1].get(), 200);

    let mut value = CtlValue::new_zeroed();
    let mut ints = [Le32::new(0); 128];
    ints[0] = Le32::new(10);
    ints[1] = Le32::new(20);
    value.value.set_integer(&ints);
    let status = f.status(&ControlRequest::CtlWrite {
        request: ctl(0, RequestCode::CtlWrite),
        payload: value,
    });
    assert_eq!(status, vs::VIRTIO_SND_S_OK);
    assert_eq!(f.m.ctl_value(0).unwrap().value.integer()[1].get(), 20);
    ints[1] = Le32::new(256);
    value.value.set_integer(&ints);
    let status = f.status(&ControlRequest::CtlWrite {
        request: ctl(0, RequestCode::CtlWrite),
        payload: value,
    });
    assert_eq!(status, vs::VIRTIO_SND_S_BAD_MSG, "out of range");
    assert_eq!(f.m.take_violations().len(), 1);

    // TLV truncated to the room the driver gave: 4 of its 8 value bytes.
    let req = ControlRequest::CtlTlvRead {
        request: ctl(0, RequestCode::CtlTlvRead),
        max_value_len: 4,
    };
    let (used, reply) = f.control(&req);
    let Ok(ControlResponse::CtlTlvRead { tlv }) = req.decode_response(&reply[..used as usize])
    else {
        panic!("tlv read");
    };
    assert_eq!(tlv, &[1, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]);

    let mut remap = vs::JackRemap::new_zeroed();
    remap.hdr.hdr.code = Le32::new(RequestCode::JackRemap.raw());
    remap.association = Le32::new(3);
    remap.sequence = Le32::new(1);
    assert_eq!(
        f.status(&ControlRequest::JackRemap { request: remap }),
        vs::VIRTIO_SND_S_OK
    );
    assert_eq!(f.m.jack_remap(0), Some((3, 1)));
    f.finish();
}

#[test]
fn the_pcm_state_machine_is_enforced() {
    let f = Fake::init(ModelConfig::default());
    let ok = vs::VIRTIO_SND_S_OK;
    let bad = vs::VIRTIO_SND_S_BAD_MSG;
    use RequestCode::*;

    // PREPARE of a fresh stream: parameters were never set.
    assert_eq!(f.pcm(PcmPrepare, 0), bad);
    assert_eq!(f.m.take_violations().len(), 1);

    assert_eq!(f.set_params(0, STEREO_48K), ok);
    assert_eq!(f.pcm(PcmPrepare, 0), ok);
    assert_eq!(f.pcm(PcmPrepare, 0), ok, "PREPARE again is legal");
    assert_eq!(f.pcm(PcmStart, 0), ok);
    assert_eq!(f.m.stream_state(0), Some(PcmState::Started));
    assert_eq!(f.pcm(PcmStop, 0), ok);
    assert_eq!(f.pcm(PcmStart, 0), ok, "STOP -> START");
    assert_eq!(f.pcm(PcmStop, 0), ok);
    f.m.assert_no_violations();

    // STOP -> SET_PARAMS is not in the table.
    assert_eq!(f.set_params(0, STEREO_48K), bad);
    let v = f.m.take_violations();
    assert_eq!(v.len(), 1);
    assert!(
        v[0].contains("PCM_SET_PARAMS") && v[0].contains("Stopped"),
        "{v:?}"
    );
    assert_eq!(f.m.stream_state(0), Some(PcmState::Stopped));

    assert_eq!(f.pcm(PcmRelease, 0), ok);
    assert_eq!(f.pcm(PcmStop, 0), bad, "STOP after RELEASE");
    assert_eq!(f.m.take_violations().len(), 1);
    assert_eq!(f.set_params(0, STEREO_48K), ok, "RELEASE -> SET_PARAMS");
    assert_eq!(f.pcm(PcmPrepare, 0), ok);
    assert_eq!(f.pcm(PcmRelease, 0), ok);

    // Invalid parameters: each one is refused and named.
    let cases = [
        Params {
            rate: vs::VIRTIO_SND_PCM_RATE_12000,
            ..STEREO_48K
        },
        Params {
            format: vs::VIRTIO_SND_PCM_FMT_S24,
            ..STEREO_48K
        },
        Params {
            channels: 3,
            ..STEREO_48K
        },
        Params {
            buffer: 4096 * 3 + 4,
            ..STEREO_48K
        },
        Params {
            period: 4098,
            buffer: 4098 * 2,
            ..STEREO_48K
        },
        Params {
            features: PcmFeature::EvtXruns.mask() as u32,
            ..STEREO_48K
        },
    ];
    for p in cases {
        assert_eq!(f.set_params(0, p), bad);
        // Three channels also make 4096 bytes a partial frame: two reasons, two lines.
        assert!(!f.m.take_violations().is_empty());
    }
    assert_eq!(f.set_params(7, STEREO_48K), bad, "no such stream");
    assert_eq!(f.m.take_violations().len(), 1);
    f.finish();
}

/// A distinct byte pattern per period, so misordered or repeated periods show.
fn input(periods: usize, period: usize) -> Vec<u8> {
    (0..periods * period)
        .map(|i| (i / period * 37 + i % 251) as u8)
        .collect()
}

#[test]
fn playback_completes_periods_at_the_stream_rate() {
    let f = Fake::init(ModelConfig::default());
    assert_eq!(f.set_params(0, STEREO_48K), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmPrepare, 0), vs::VIRTIO_SND_S_OK);
    let period = 4096usize;
    let total = 8;
    let area = f.k.create_area("tx buffers", total * period, true).unwrap();
    let data = input(total, period);
    f.k.area_user_write(area.addr, &data).unwrap();

    // Pre-fill four periods after PREPARE, then START.
    for i in 0..4 {
        f.queue_tx(i, 0, &area, i * period, period).unwrap();
    }
    assert_eq!(f.pcm(RequestCode::PcmStart, 0), vs::VIRTIO_SND_S_OK);
    let start = f.k.system_time();
    assert_eq!(f.m.control_log().last().unwrap().time, start);

    let mut seen = Vec::new();
    let mut next = 4;
    while seen.len() < total {
        let (slot, used) = f.wait_used(TX, SECOND).expect("a period completes");
        assert_eq!(used, 8);
        assert_eq!(f.io_status(slot as usize), (vs::VIRTIO_SND_S_OK, 0));
        seen.push(f.k.system_time());
        if next < total {
            f.queue_tx(slot as usize, 0, &area, next * period, period)
                .unwrap();
            next += 1;
        }
    }
    let expected: Vec<i64> = (1..=total as u64)
        .map(|k| start + at_48k(1024 * k))
        .collect();
    let truth: Vec<i64> = f.m.periods(0).iter().map(|p| p.time).collect();
    assert_eq!(
        truth, expected,
        "ground truth: one period per 1024 frames at 48 kHz"
    );
    assert_eq!(
        seen, expected,
        "the driver hears of each period when it ends"
    );
    assert_eq!(f.m.played(0), data);
    assert!(f.m.xruns(0).is_empty());

    // Nothing more queued: the stream runs dry 1 µs after its last period.
    f.k.snooze(1000);
    assert_eq!(f.m.xruns(0), vec![expected[total - 1] + 1]);
    assert_eq!(f.pcm(RequestCode::PcmStop, 0), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmRelease, 0), vs::VIRTIO_SND_S_OK);
    f.finish();
}

#[test]
fn a_late_buffer_restarts_the_clock_and_counts_an_underrun() {
    let f = Fake::init(ModelConfig {
        streams: vec![StreamConfig::output().with_features(&[PcmFeature::EvtXruns])],
        ..ModelConfig::default()
    });
    let p = Params {
        features: PcmFeature::EvtXruns.mask() as u32,
        ..STEREO_48K
    };
    assert_eq!(f.set_params(0, p), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmPrepare, 0), vs::VIRTIO_SND_S_OK);
    f.queue_event_buffer(0);
    let area = f.k.create_area("tx", 2 * 4096, true).unwrap();
    f.queue_tx(0, 0, &area, 0, 4096).unwrap();
    assert_eq!(f.pcm(RequestCode::PcmStart, 0), vs::VIRTIO_SND_S_OK);
    let start = f.k.system_time();
    f.wait_used(TX, SECOND).unwrap();
    let first = start + at_48k(1024);
    assert_eq!(f.k.system_time(), first);

    // The XRUN event arrives 1 µs after the stream ran dry.
    let (slot, used) = f.wait_used(EVT, SECOND).expect("xrun event");
    assert_eq!(
        f.event(slot as usize, used),
        Ok(DeviceEvent::PcmXrun { stream_id: 0 })
    );
    assert_eq!(f.k.system_time(), first + 1);

    f.k.snooze(10_000);
    let late = f.k.system_time();
    f.queue_tx(1, 0, &area, 4096, 4096).unwrap();
    f.wait_used(TX, SECOND).unwrap();
    assert_eq!(
        f.k.system_time(),
        late + at_48k(1024),
        "consumption restarts on arrival"
    );
    f.k.snooze(10);
    assert_eq!(f.m.xruns(0).len(), 2, "dry again after the late one");
    assert_eq!(
        f.m.events_dropped(),
        1,
        "no event buffer for the second XRUN"
    );
    assert_eq!(f.pcm(RequestCode::PcmStop, 0), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmRelease, 0), vs::VIRTIO_SND_S_OK);
    f.finish();
}

#[test]
fn capture_produces_the_predicted_samples() {
    let f = Fake::init(ModelConfig::default());
    assert_eq!(f.set_params(1, STEREO_48K), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmPrepare, 1), vs::VIRTIO_SND_S_OK);
    let period = 4096;
    let area = f.k.create_area("rx buffers", 3 * period, true).unwrap();
    for i in 0..3 {
        f.queue_rx(i, 1, &area, i * period, period);
    }
    assert_eq!(f.pcm(RequestCode::PcmStart, 1), vs::VIRTIO_SND_S_OK);
    let start = f.k.system_time();
    for k in 1..=3u64 {
        let (slot, used) = f.wait_used(RX, SECOND).unwrap();
        assert_eq!(slot, k - 1);
        assert_eq!(used as usize, period + 8);
        assert_eq!(f.io_status(slot as usize), (vs::VIRTIO_SND_S_OK, 0));
        assert_eq!(f.k.system_time(), start + at_48k(1024 * k));
    }
    let mut got = vec![0u8; 3 * period];
    f.k.area_user_read(area.addr, &mut got).unwrap();
    assert_eq!(got, f.m.expected_capture(1, 0, 3 * period));
    assert_eq!(got, f.m.recorded(1));
    // Sample k of stream 1 is k + 0x100, as little-endian S16 (the model's documented
    // pattern, written out here rather than taken from the model).
    assert_eq!(&got[..6], &[0x00, 0x01, 0x01, 0x01, 0x02, 0x01]);
    let want: Vec<u8> = (0..3 * period as u16 / 2)
        .flat_map(|k| (k + 0x100).to_le_bytes())
        .collect();
    assert_eq!(got, want);
    assert_eq!(got, capture_pattern(1, 2, 0, 3 * period));
    assert_eq!(f.pcm(RequestCode::PcmStop, 1), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmRelease, 1), vs::VIRTIO_SND_S_OK);
    f.finish();
}

#[test]
fn release_returns_every_pending_buffer_before_answering() {
    let f = Fake::init(ModelConfig::default());
    assert_eq!(f.set_params(0, STEREO_48K), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmPrepare, 0), vs::VIRTIO_SND_S_OK);
    let area = f.k.create_area("tx", 3 * 4096, true).unwrap();
    for i in 0..3 {
        f.queue_tx(i, 0, &area, i * 4096, 4096).unwrap();
    }
    assert_eq!(f.m.held(TX), 3);
    // Started and stopped at once: STOP keeps the buffers (like QEMU).
    assert_eq!(f.pcm(RequestCode::PcmStart, 0), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmStop, 0), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.m.held(TX), 3);
    assert_eq!(f.pcm(RequestCode::PcmRelease, 0), vs::VIRTIO_SND_S_OK);
    // By the time RELEASE answered, all three were in the used ring.
    for i in 0..3 {
        assert_eq!(f.m.queue_dequeue(TX), Some((i, 8)));
        assert_eq!(f.io_status(i as usize), (vs::VIRTIO_SND_S_OK, 0));
    }
    assert_eq!(f.m.held(TX), 0);
    assert_eq!(f.m.in_flight(TX), 0);
    assert!(f.m.played(0).is_empty(), "released, not played");
    let calls = f.irq.calls.lock().unwrap().clone();
    let tx_irq = calls.iter().position(|c| c.0 == TX).unwrap();
    let last_ctl = calls.iter().rposition(|c| c.0 == CTL).unwrap();
    assert!(tx_irq < last_ctl, "tx interrupt first: {calls:?}");
    f.finish();
}

#[test]
fn buffers_outside_prepare_or_start_are_refused() {
    let f = Fake::init(ModelConfig::default());
    let area = f.k.create_area("tx", 4096, true).unwrap();
    f.queue_tx(0, 0, &area, 0, 4096).unwrap();
    f.queue_tx(1, 1, &area, 0, 4096).unwrap(); // stream 1 is capture
    f.queue_tx(2, 9, &area, 0, 4096).unwrap(); // no such stream
    for _ in 0..3 {
        let (slot, used) = f.wait_used(TX, SECOND).unwrap();
        assert_eq!(used, 8);
        assert_eq!(f.io_status(slot as usize).0, vs::VIRTIO_SND_S_BAD_MSG);
    }
    assert_eq!(f.m.take_violations().len(), 3);
    f.finish();
}

#[test]
fn malformed_chains_never_panic_the_device() {
    let f = Fake::init(ModelConfig::default());
    // A 2-byte control header: QEMU drops it without an answer.
    assert!(f.control_raw(&[1, 1], 64).is_none());
    assert_eq!(f.m.lost(CTL), 1);
    let v = f.m.take_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("2 readable bytes"), "{v:?}");
    // An unknown request code gets BAD_MSG.
    let (used, reply) = f.control_raw(&0x0999u32.to_le_bytes(), 4).unwrap();
    assert_eq!(
        (used, &reply[..4]),
        (4, &vs::VIRTIO_SND_S_BAD_MSG.to_le_bytes()[..])
    );
    // A response buffer too small for the items asked for.
    let mut q = vec![0; 16];
    pcm_info_request().encode(&mut q).unwrap();
    let (used, _) = f.control_raw(&q, 8).unwrap();
    assert_eq!(used, 4);
    assert_eq!(f.m.take_violations().len(), 2);

    // DMA to memory that is no area: recorded by the kernel, the chain still completes.
    let bogus = [
        f.dma.entry(REQ, 16).unwrap(),
        PhysEntry {
            address: 0xdead_0000,
            size: 68,
        },
    ];
    f.dma.write(REQ, &q).unwrap();
    f.m.queue_request(CTL, &bogus, 1, 7).unwrap();
    assert_eq!(f.wait_used(CTL, SECOND).map(|u| u.0), Some(7));
    assert!(f.k.take_failures()[0].contains("not inside one live area"));

    // Bad calls are refused with a status.
    assert_eq!(f.m.queue_request(9, &bogus, 1, 0), Err(Status::BAD_VALUE));
    assert_eq!(f.m.queue_request(CTL, &[], 0, 0), Err(Status::BAD_VALUE));
    assert_eq!(f.m.queue_request(CTL, &bogus, 3, 0), Err(Status::BAD_VALUE));
    assert_eq!(f.m.take_violations().len(), 3);
    // A readable event buffer.
    f.m.queue_request(EVT, &bogus[..1], 1, 5).unwrap();
    assert_eq!(f.wait_used(EVT, SECOND), Some((5, 0)));
    assert_eq!(f.m.take_violations().len(), 1);
    f.finish();
}

#[test]
fn a_full_ring_is_busy() {
    let f = Fake::init(ModelConfig {
        queue_size: 4,
        ..ModelConfig::default()
    });
    for i in 0..4 {
        f.queue_event_buffer(i);
    }
    let e = [f.dma.entry(EVENTS, 8).unwrap()];
    assert_eq!(f.m.queue_request(EVT, &e, 0, 9), Err(Status::BUSY));
    assert_eq!(f.m.in_flight(EVT), 4);
    f.finish();
}

#[test]
fn events_reach_the_event_queue() {
    let f = Fake::init(ModelConfig {
        jacks: vec![JackConfig::default()],
        ..ModelConfig::default()
    });
    f.m.set_jack_connected(0, true);
    f.k.snooze(100);
    assert_eq!(f.m.used_pending(EVT), 0, "held until a buffer is there");
    f.queue_event_buffer(0);
    f.queue_event_buffer(1);
    let (slot, used) = f.wait_used(EVT, SECOND).unwrap();
    assert_eq!(used, 8);
    assert_eq!(
        f.event(slot as usize, used),
        Ok(DeviceEvent::JackConnected { jack_id: 0 })
    );
    f.m.inject_event(DeviceEvent::CtlNotify {
        control_id: 3,
        mask: 1,
    });
    let (slot, used) = f.wait_used(EVT, SECOND).unwrap();
    assert_eq!(
        f.event(slot as usize, used),
        Ok(DeviceEvent::CtlNotify {
            control_id: 3,
            mask: 1
        })
    );
    f.finish();
}

#[test]
fn every_control_fault_is_observable() {
    let f = Fake::init(ModelConfig::default());
    let req = pcm_info_request();
    let normal = f.control(&req);
    assert_eq!(normal.0, 68);

    f.m.set_fault(RequestCode::PcmInfo, Fault::Status(vs::VIRTIO_SND_S_IO_ERR));
    let (used, reply) = f.control(&req);
    assert_eq!(used, 4);
    assert_eq!(
        req.decode_response(&reply[..4]),
        Err(spec::DecodeError::Status(vs::VIRTIO_SND_S_IO_ERR))
    );

    f.m.set_fault(RequestCode::PcmInfo, Fault::ShortReply(10));
    assert_eq!(f.control(&req).0, 10);

    f.m.set_fault(RequestCode::PcmInfo, Fault::Oversized(100));
    assert_eq!(f.control(&req).0, 68 + 100);

    f.m.set_fault(RequestCode::PcmInfo, Fault::ExtraItems(3));
    assert_eq!(f.control(&req).0, 4 + 5 * 32);

    f.m.set_fault(RequestCode::PcmInfo, Fault::Garbage);
    let (used, reply) = f.control(&req);
    assert_eq!(used, 68);
    assert_eq!(&reply[..4], &vs::VIRTIO_SND_S_OK.to_le_bytes());
    assert_ne!(reply[4..68], normal.1[4..68]);

    f.m.set_fault(RequestCode::PcmInfo, Fault::Delay(5000));
    let t0 = f.k.system_time();
    f.control(&req);
    assert_eq!(f.k.system_time(), t0 + 5050);

    // Lost: the driver's one-second timeout passes in no real time at all.
    f.m.set_fault_times(RequestCode::PcmInfo, Fault::Lost, 1);
    let t0 = f.k.system_time();
    let mut q = vec![0; 16];
    req.encode(&mut q).unwrap();
    assert!(f.control_raw(&q, 68).is_none());
    assert_eq!(f.k.system_time(), t0 + SECOND);
    assert_eq!(f.m.lost(CTL), 1);
    assert_eq!(f.m.in_flight(CTL), 1, "a lost chain keeps its ring slot");
    // The fault was for one request only.
    assert_eq!(f.control(&req), normal);

    // Faults by target other than a request code.
    f.m.set_fault(
        FaultTarget::AnyControl,
        Fault::Status(vs::VIRTIO_SND_S_NOT_SUPP),
    );
    assert_eq!(f.pcm(RequestCode::PcmPrepare, 0), vs::VIRTIO_SND_S_NOT_SUPP);
    f.m.clear_faults();
    let v = f.m.take_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("PCM_PREPARE"),
        "PREPARE of an unconfigured stream: {v:?}"
    );
    f.finish();
}

#[test]
fn io_and_event_faults_are_observable() {
    let f = Fake::init(ModelConfig::default());
    assert_eq!(f.set_params(0, STEREO_48K), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmPrepare, 0), vs::VIRTIO_SND_S_OK);
    let area = f.k.create_area("tx", 4 * 4096, true).unwrap();
    f.m.set_fault_times(FaultTarget::Tx, Fault::Status(vs::VIRTIO_SND_S_IO_ERR), 1);
    f.queue_tx(0, 0, &area, 0, 4096).unwrap();
    f.m.set_fault_times(FaultTarget::Tx, Fault::Lost, 1);
    f.queue_tx(1, 0, &area, 4096, 4096).unwrap();
    f.m.set_fault_times(FaultTarget::Tx, Fault::Oversized(1000), 1);
    f.queue_tx(2, 0, &area, 8192, 4096).unwrap();
    f.m.set_fault_times(FaultTarget::Tx, Fault::Delay(100_000), 1);
    f.queue_tx(3, 0, &area, 12288, 4096).unwrap();
    assert_eq!(f.pcm(RequestCode::PcmStart, 0), vs::VIRTIO_SND_S_OK);
    let start = f.k.system_time();

    assert_eq!(f.wait_used(TX, SECOND), Some((0, 8)));
    assert_eq!(f.io_status(0).0, vs::VIRTIO_SND_S_IO_ERR);
    // Slot 1 is lost; slot 2 comes with an impossible length.
    assert_eq!(f.wait_used(TX, SECOND), Some((2, 8 + 1000)));
    assert_eq!(f.k.system_time(), start + at_48k(3 * 1024));
    assert_eq!(f.wait_used(TX, SECOND), Some((3, 8)));
    assert_eq!(f.k.system_time(), start + at_48k(4 * 1024) + 100_000);
    assert_eq!(f.m.played(0).len(), 4 * 4096, "all four were consumed");
    assert_eq!(f.m.lost(TX), 1);

    f.m.set_fault_times(FaultTarget::Event, Fault::Garbage, 1);
    f.queue_event_buffer(0);
    f.m.inject_event(DeviceEvent::JackConnected { jack_id: 0 });
    let (slot, used) = f.wait_used(EVT, SECOND).unwrap();
    assert!(
        matches!(
            f.event(slot as usize, used),
            Err(spec::DecodeError::UnknownCode(_))
        ),
        "garbage is an unknown event code"
    );

    assert_eq!(f.pcm(RequestCode::PcmStop, 0), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmRelease, 0), vs::VIRTIO_SND_S_OK);
    f.finish();
}

#[test]
fn rx_faults_are_observable() {
    let f = Fake::init(ModelConfig::default());
    assert_eq!(f.set_params(1, STEREO_48K), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmPrepare, 1), vs::VIRTIO_SND_S_OK);
    let area = f.k.create_area("rx", 2 * 4096, true).unwrap();
    f.m.set_fault_times(FaultTarget::Rx, Fault::ShortReply(3), 1);
    f.queue_rx(0, 1, &area, 0, 4096);
    f.m.set_fault_times(FaultTarget::Rx, Fault::Garbage, 1);
    f.queue_rx(1, 1, &area, 4096, 4096);
    assert_eq!(f.pcm(RequestCode::PcmStart, 1), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.wait_used(RX, SECOND), Some((0, 3)));
    assert_eq!(f.wait_used(RX, SECOND), Some((1, 4096 + 8)));
    let mut got = vec![0u8; 4096];
    f.k.area_user_read(area.addr + 4096, &mut got).unwrap();
    assert_ne!(got, f.m.expected_capture(1, 4096, 4096));
    assert_eq!(
        f.m.recorded(1)[4096..],
        got[..],
        "recorded is what was written"
    );
    assert_eq!(f.pcm(RequestCode::PcmStop, 1), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmRelease, 1), vs::VIRTIO_SND_S_OK);
    f.finish();
}

#[test]
fn no_interrupt_before_setup_or_after_free() {
    let f = Fake::new(ModelConfig::default());
    f.m.negotiate_features(VIRTIO_FEATURE_VERSION_1).unwrap();
    f.m.alloc_queues(4).unwrap();
    f.m.inject_event(DeviceEvent::JackConnected { jack_id: 0 });
    f.queue_event_buffer(0);
    f.k.snooze(1000);
    assert_eq!(f.m.used_pending(EVT), 0, "the device waits for DRIVER_OK");
    f.m.setup_interrupts(f.irq.clone()).unwrap();
    f.k.snooze(1);
    assert_eq!(f.m.used_pending(EVT), 1);
    assert_eq!(f.m.interrupts(EVT), 1);
    f.m.free_interrupts();
    f.queue_event_buffer(1);
    f.m.inject_event(DeviceEvent::JackConnected { jack_id: 0 });
    f.k.snooze(1000);
    assert_eq!(f.m.used_pending(EVT), 2, "still completed");
    assert_eq!(
        f.m.interrupts(EVT),
        1,
        "but no handler call after free_interrupts"
    );
    f.finish();
}

#[test]
fn a_second_thread_can_wait_for_playback_while_the_first_sends_controls() {
    let f = Arc::new(Fake::init(ModelConfig::default()));
    assert_eq!(f.set_params(0, STEREO_48K), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmPrepare, 0), vs::VIRTIO_SND_S_OK);
    let area = f.k.create_area("tx", 2 * 4096, true).unwrap();
    f.queue_tx(0, 0, &area, 0, 4096).unwrap();
    f.queue_tx(1, 0, &area, 4096, 4096).unwrap();
    let f2 = f.clone();
    let waiter = f.k.spawn("exchange", move || {
        let a = f2.wait_used(TX, SECOND).map(|_| f2.k.system_time());
        let b = f2.wait_used(TX, SECOND).map(|_| f2.k.system_time());
        (a, b)
    });
    assert_eq!(f.pcm(RequestCode::PcmStart, 0), vs::VIRTIO_SND_S_OK);
    let start = f.k.system_time();
    // Meanwhile this thread keeps asking for PCM_INFO.
    for _ in 0..10 {
        assert_eq!(f.control(&pcm_info_request()).0, 68);
    }
    let (a, b) = waiter.join();
    assert_eq!(a, Some(start + at_48k(1024)));
    assert_eq!(b, Some(start + at_48k(2048)));
    assert_eq!(f.pcm(RequestCode::PcmStop, 0), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmRelease, 0), vs::VIRTIO_SND_S_OK);
    let f = Arc::into_inner(f).expect("the waiter is done");
    f.finish();
}

#[test]
fn a_config_space_that_lies_is_the_devices_fault() {
    let f = Fake::init(ModelConfig {
        advertised_counts: Some([0, 1000, 0, 0]),
        ..ModelConfig::default()
    });
    let mut cfg = [0u8; 4];
    f.m.read_device_config(4, &mut cfg).unwrap();
    assert_eq!(u32::from_le_bytes(cfg), 1000);
    let req = ControlRequest::PcmInfo {
        request: query(RequestCode::PcmInfo, 0, 1000, 32),
    };
    let (used, reply) = f.control(&req);
    assert_eq!(used, 4);
    assert_eq!(&reply[..4], &vs::VIRTIO_SND_S_NOT_SUPP.to_le_bytes());
    f.finish();
}

#[test]
fn the_defaults_are_qemus() {
    let c = ModelConfig::default();
    assert_eq!(c.streams.len(), 2);
    assert_eq!(c.streams[0].direction, Direction::Output);
    assert_eq!(c.streams[1].direction, Direction::Input);
    assert_eq!(c.queue_size, 64);
    assert!(!c.offer_ctls && c.jacks.is_empty() && c.chmaps.is_empty());
    assert_eq!(c.config_size, 16);
    assert_eq!(QEMU_RATES.count_ones(), 14);
    let _ = (
        CtlRange::None,
        PcmInfo::new_zeroed(),
        ControlConfig::boolean("Mute", 4, 1, false),
    );
    let mut p = PcmInfo::new_zeroed();
    p.channels_max = 2;
    assert_eq!(
        PcmInfo::read_from_bytes(p.as_bytes()).unwrap().channels_max,
        2
    );
}

/// A handler that allocates, as the driver's must not.
struct Greedy {
    k: SimKernel,
    sem: i32,
}

impl QueueHandler for Greedy {
    fn queue_interrupt(&self, _queue: u16) {
        let v = vec![1u8; 64];
        std::hint::black_box(&v);
        self.k.release_sem(self.sem, true);
    }
}

#[test]
fn a_handler_that_allocates_is_caught() {
    let f = Fake::new(ModelConfig::default());
    let greedy = Arc::new(Greedy {
        k: f.k.clone(),
        sem: f.irq.sems[0],
    });
    f.m.negotiate_features(VIRTIO_FEATURE_VERSION_1).unwrap();
    f.m.alloc_queues(4).unwrap();
    f.m.setup_interrupts(greedy).unwrap();
    f.control(&pcm_info_request());
    let failures = f.k.take_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("allocated or freed heap memory 2 time(s)"),
        "{failures:?}"
    );
    f.finish();
}

/// QEMU on `-audiodev wav` (`ModelConfig::qemu_wav`): capture buffers wait through START and
/// STOP, and RELEASE hands them back with `used_len` 8 and the status (OK, latency 0) over
/// the first 8 bytes of the frame space, the status descriptor untouched
/// (`return_rx_buffer` in QEMU's `hw/audio/virtio-snd.c`, with `buffer->size` 0).
#[test]
fn qemu_wav_capture_comes_back_empty_only_at_release() {
    let f = Fake::init(ModelConfig::qemu_wav());
    assert_eq!(f.set_params(1, STEREO_48K), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmPrepare, 1), vs::VIRTIO_SND_S_OK);
    let period = 4096;
    let area = f.k.create_area("rx buffers", 3 * period, true).unwrap();
    f.k.area_user_write(area.addr, &vec![0x55; 3 * period])
        .unwrap();
    for i in 0..3 {
        f.queue_rx(i, 1, &area, i * period, period);
    }
    assert_eq!(f.pcm(RequestCode::PcmStart, 1), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.wait_used(RX, SECOND), None, "nothing while started");
    assert_eq!(f.pcm(RequestCode::PcmStop, 1), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.wait_used(RX, SECOND), None, "nothing at STOP");
    assert_eq!(f.m.held(RX), 3);
    assert_eq!(f.pcm(RequestCode::PcmRelease, 1), vs::VIRTIO_SND_S_OK);
    for i in 0..3u64 {
        assert_eq!(f.m.queue_dequeue(RX), Some((i, 8)));
        assert_eq!(f.io_status(i as usize), (0xEEEE_EEEE, 0xEEEE_EEEE));
    }
    let mut got = vec![0u8; 3 * period];
    f.k.area_user_read(area.addr, &mut got).unwrap();
    for i in 0..3 {
        let b = &got[i * period..(i + 1) * period];
        // VIRTIO_SND_S_OK (0x8000) and latency 0, little-endian.
        assert_eq!(&b[..8], &[0x00, 0x80, 0, 0, 0, 0, 0, 0], "buffer {i}");
        assert!(b[8..].iter().all(|&x| x == 0x55), "buffer {i}: no frames");
    }
    assert!(f.m.recorded(1).is_empty() && f.m.periods(1).is_empty());
    assert!(f.m.xruns(1).is_empty());
    assert_eq!(f.m.held(RX), 0);
    f.finish();
}

/// vhost-device-sound's null backend (`ModelConfig::vhost_null`): capture buffers are kept
/// through STOP and RELEASE (which still answers OK); only the reset lets them go.
#[test]
fn vhost_null_capture_is_never_handed_back() {
    let f = Fake::init(ModelConfig::vhost_null());
    assert_eq!(f.set_params(1, STEREO_48K), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmPrepare, 1), vs::VIRTIO_SND_S_OK);
    let area = f.k.create_area("rx buffers", 2 * 4096, true).unwrap();
    for i in 0..2 {
        f.queue_rx(i, 1, &area, i * 4096, 4096);
    }
    assert_eq!(f.pcm(RequestCode::PcmStart, 1), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.wait_used(RX, SECOND), None);
    assert_eq!(f.pcm(RequestCode::PcmStop, 1), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmRelease, 1), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.wait_used(RX, SECOND), None, "not even after RELEASE");
    assert_eq!((f.m.held(RX), f.m.in_flight(RX)), (2, 2));
    assert_eq!(f.io_status(0), (0xEEEE_EEEE, 0xEEEE_EEEE));
    assert!(f.m.xruns(1).is_empty());
    // `finish` resets the device, which forgets them.
    f.finish();
}

/// vhost-device-sound's null backend: a playback buffer completes the instant it is queued,
/// before START as after, with the status (OK, `latency_bytes` = the buffer's 4096 bytes);
/// no pacing, no underrun.
#[test]
fn vhost_null_playback_completes_as_queued() {
    let f = Fake::init(ModelConfig::vhost_null());
    assert_eq!(f.set_params(0, STEREO_48K), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmPrepare, 0), vs::VIRTIO_SND_S_OK);
    let period = 4096usize;
    let area = f.k.create_area("tx buffers", 8 * period, true).unwrap();
    let data = input(8, period);
    f.k.area_user_write(area.addr, &data).unwrap();
    let mut times = Vec::new();
    for i in 0..8 {
        if i == 4 {
            assert_eq!(f.pcm(RequestCode::PcmStart, 0), vs::VIRTIO_SND_S_OK);
        }
        let queued = f.k.system_time();
        f.queue_tx(i % 4, 0, &area, i * period, period).unwrap();
        let (slot, used) = f.wait_used(TX, SECOND).expect("completed");
        assert_eq!((slot, used), ((i % 4) as u64, 8));
        assert_eq!(f.k.system_time(), queued, "at once");
        assert_eq!(f.io_status(i % 4), (vs::VIRTIO_SND_S_OK, 4096));
        times.push(queued);
    }
    assert_eq!(f.m.played(0), data);
    let truth: Vec<i64> = f.m.periods(0).iter().map(|p| p.time).collect();
    assert_eq!(truth, times);
    f.k.snooze(SECOND);
    assert!(f.m.xruns(0).is_empty(), "an instant device never runs dry");
    assert_eq!(f.pcm(RequestCode::PcmStop, 0), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmRelease, 0), vs::VIRTIO_SND_S_OK);
    f.finish();
}

/// The presets a device config names, and what each sets.
#[test]
fn presets_are_the_devices_they_name() {
    assert_eq!(ModelConfig::preset("qemu"), Some(ModelConfig::default()));
    assert_eq!(ModelConfig::preset("vhost"), None);
    let wav = ModelConfig::preset("qemu-wav").unwrap();
    assert_eq!(wav.capture, CaptureCompletion::AtRelease);
    assert_eq!(wav.playback, PlaybackCompletion::Paced);
    assert_eq!(wav.takes_ahead_frames, 1024);
    assert_eq!(wav.streams, ModelConfig::default().streams);
    let null = ModelConfig::preset("vhost-null").unwrap();
    assert_eq!(null.capture, CaptureCompletion::Never);
    assert_eq!(null.playback, PlaybackCompletion::Instant);
    assert_eq!(null.counts(), [0, 2, 1, 0]);
    for s in &null.streams {
        assert_eq!((s.channels_min, s.channels_max), (1, 6));
        // U8, S16, S24, S32 (virtio format numbers 4, 5, 15, 17).
        assert_eq!(s.formats, (1 << 4) | (1 << 5) | (1 << 15) | (1 << 17));
        // 8000 .. 48000 Hz (virtio rate numbers 1 to 7).
        assert_eq!(s.rates, 0b1111_1110);
    }
    for (names, parse) in [
        (
            &CaptureCompletion::NAMES[..],
            (|n| CaptureCompletion::from_name(n).is_some()) as fn(&str) -> bool,
        ),
        (&PlaybackCompletion::NAMES[..], |n| {
            PlaybackCompletion::from_name(n).is_some()
        }),
        (&ModelConfig::PRESETS[..], |n| {
            ModelConfig::preset(n).is_some()
        }),
    ] {
        assert!(names.iter().all(|n| parse(n)), "{names:?}");
        assert!(!parse("Paced"));
    }
}

/// A device that takes playback 1024 frames ahead (QEMU's mixer) completes each period when
/// it takes it; the ground truth is when the period plays, 1024 frames (21334 µs at 48 kHz)
/// later.
#[test]
fn taken_ahead_periods_are_recorded_when_they_play() {
    let f = Fake::init(ModelConfig {
        takes_ahead_frames: 1024,
        ..ModelConfig::default()
    });
    assert_eq!(f.set_params(0, STEREO_48K), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmPrepare, 0), vs::VIRTIO_SND_S_OK);
    let area = f.k.create_area("tx", 3 * 4096, true).unwrap();
    for i in 0..3 {
        f.queue_tx(i, 0, &area, i * 4096, 4096).unwrap();
    }
    assert_eq!(f.pcm(RequestCode::PcmStart, 0), vs::VIRTIO_SND_S_OK);
    let start = f.k.system_time();
    let mut completed = Vec::new();
    for _ in 0..3 {
        f.wait_used(TX, SECOND).unwrap();
        completed.push(f.k.system_time() - start);
    }
    assert_eq!(completed, vec![0, 21334, 42667]);
    let played: Vec<i64> = f.m.periods(0).iter().map(|p| p.time - start).collect();
    assert_eq!(played, vec![21334, 42667, 64000]);
    assert_eq!(f.pcm(RequestCode::PcmStop, 0), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmRelease, 0), vs::VIRTIO_SND_S_OK);
    f.finish();
}

/// A `Hostile` that rewrites every kind of answer in a way a test can see, and invents used
/// entries: a never-queued cookie, and a replay of every cookie just returned.
struct Liar;

impl snd_model::Hostile for Liar {
    fn control(&mut self, _request: &[u8], reply: &mut Vec<u8>, used_len: &mut u32) {
        reply[..4].copy_from_slice(&vs::VIRTIO_SND_S_IO_ERR.to_le_bytes());
        *used_len = 3;
    }
    fn event(&mut self, bytes: &mut [u8; 8], used_len: &mut u32) {
        *bytes = [0xAB; 8];
        *used_len = 1000;
    }
    fn config(&mut self, space: &mut [u8; 16]) {
        space[4..8].copy_from_slice(&77u32.to_le_bytes());
    }
    fn extra_used(&mut self, queue: u16, returned: &[u64]) -> Vec<(u64, u32)> {
        let mut v = vec![(0xDEAD_0000 + u64::from(queue), 5)];
        v.extend(returned.last().map(|&c| (c, 6)));
        v
    }
}

#[test]
fn a_hostile_rewrites_answers_and_invents_used_entries() {
    let f = Fake::init(ModelConfig {
        jacks: vec![JackConfig::default()],
        ..ModelConfig::default()
    });
    f.m.set_hostile(Some(Box::new(Liar)));
    let mut cfg = [0u8; 8];
    f.m.read_device_config(0, &mut cfg).unwrap();
    assert_eq!(cfg[4..8], 77u32.to_le_bytes(), "the streams count it chose");

    let (used, reply) = f.control(&pcm_info_request());
    assert_eq!(used, 3);
    assert_eq!(reply[..4], vs::VIRTIO_SND_S_IO_ERR.to_le_bytes());
    // After the real entry: the invented cookie, then the replay of 0xC0 (not held now).
    assert_eq!(f.m.queue_dequeue(CTL), Some((0xDEAD_0000, 5)));
    assert_eq!(f.m.queue_dequeue(CTL), Some((0xC0, 6)));
    assert_eq!(f.m.queue_dequeue(CTL), None);

    // An event buffer queued again before the replay of its cookie is dequeued: the device
    // holds it, so the replay is dropped.
    f.queue_event_buffer(0);
    f.m.set_jack_connected(0, true);
    let (slot, used) = f.wait_used(EVT, SECOND).unwrap();
    assert_eq!((slot, used), (0, 1000));
    assert_eq!(
        f.event(0, 8),
        Err(spec::DecodeError::UnknownCode(0xABAB_ABAB))
    );
    f.queue_event_buffer(0);
    assert_eq!(f.m.queue_dequeue(EVT), Some((0xDEAD_0001, 5)));
    assert_eq!(f.m.queue_dequeue(EVT), None, "cookie 0 is held again");
    f.m.set_hostile(None);
    f.finish();
}

/// `take_records` hands over what was played and completed so far and starts afresh;
/// `unplug` takes the device off the bus: the chains it holds never complete, no interrupt
/// comes, configuration reads answer all ones, and a reset still takes everything back.
#[test]
fn records_are_taken_and_an_unplugged_device_answers_nothing() {
    let f = Fake::init(ModelConfig::default());
    assert_eq!(f.set_params(0, STEREO_48K), vs::VIRTIO_SND_S_OK);
    assert_eq!(f.pcm(RequestCode::PcmPrepare, 0), vs::VIRTIO_SND_S_OK);
    let period = 4096usize;
    let area = f.k.create_area("tx buffers", 3 * period, true).unwrap();
    let data = input(3, period);
    f.k.area_user_write(area.addr, &data).unwrap();
    for i in 0..3 {
        f.queue_tx(i, 0, &area, i * period, period).unwrap();
    }
    assert_eq!(f.pcm(RequestCode::PcmStart, 0), vs::VIRTIO_SND_S_OK);
    f.wait_used(TX, SECOND).expect("the first period completes");
    let first = f.m.take_records(0);
    assert_eq!(first.played, data[..period]);
    assert_eq!(first.periods.len(), 1);
    assert!(first.recorded.is_empty());
    assert!(f.m.played(0).is_empty() && f.m.periods(0).is_empty());
    f.wait_used(TX, SECOND)
        .expect("the second period completes");
    assert_eq!(f.m.take_records(0).played, data[period..2 * period]);

    f.m.unplug();
    assert!(f.m.is_unplugged());
    let interrupts = f.irq.calls.lock().unwrap().len();
    assert_eq!(f.wait_used(TX, SECOND), None, "nothing completes");
    assert_eq!(
        f.irq.calls.lock().unwrap().len(),
        interrupts,
        "no interrupt"
    );
    assert!(f.m.played(0).is_empty());
    let mut config = [0u8; 12];
    f.m.read_device_config(0, &mut config).unwrap();
    assert_eq!(config, [0xff; 12]);
    assert_eq!(f.m.held(TX), 1, "the third period stays with the device");
    f.finish();
}
