//! A client that drives a card the way Haiku's multi_audio media add-on does, on a simulated
//! kernel and a virtio-snd device model. Structures are filled with garbage where the media
//! add-on leaves them uninitialised.
#![allow(dead_code)]

use std::sync::Arc;

use driver::hmulti::{cards_for, Card, Settings};
use driver::virtio::{Engine, Options};
use driver::Status;
use sim::{ModelConfig, SimKernel, SndModel};
use spec::hmulti_audio as hm;
use spec::UserPtr;
use zerocopy::{FromBytes, Immutable, IntoBytes};

pub type TestCard = Card<SimKernel, SndModel>;

/// Garbage the media add-on leaves in fields it does not set.
pub const GARBAGE: u8 = 0xa5;

pub struct Rig {
    pub kernel: Arc<SimKernel>,
    pub model: Arc<SndModel>,
    pub engine: Option<Arc<Engine<SimKernel, SndModel>>>,
}

impl Rig {
    pub fn new(config: ModelConfig) -> Rig {
        let kernel = Arc::new(SimKernel::new());
        let model = Arc::new(SndModel::new(&kernel, config));
        Rig {
            kernel,
            model,
            engine: None,
        }
    }

    pub fn start(&mut self) -> Result<Arc<Engine<SimKernel, SndModel>>, Status> {
        let e = Engine::start(self.kernel.clone(), self.model.clone(), Options::default())?;
        self.engine = Some(e.clone());
        Ok(e)
    }

    pub fn card(&mut self, settings: Settings) -> TestCard {
        let engine = match &self.engine {
            Some(e) => e.clone(),
            None => self.start().expect("engine starts"),
        };
        let (o, i) = cards_for(&engine)[0];
        Card::new(engine, o, i, settings).expect("card")
    }

    /// Shuts everything down and checks nothing leaked and the device saw no violation.
    pub fn finish(mut self, card: Option<TestCard>) {
        if let Some(c) = card {
            c.shutdown();
        }
        if let Some(e) = self.engine.take() {
            Engine::shutdown(e);
        }
        self.kernel.user_free_all();
        self.model.assert_no_violations();
        if let Err(problems) = self.kernel.check_clean() {
            panic!("kernel not clean:\n{}", problems.join("\n"));
        }
    }
}

/// User memory holding a `T`, filled with garbage first.
pub fn user_value<T: IntoBytes + Immutable>(k: &SimKernel, v: &T) -> u64 {
    let size = core::mem::size_of::<T>();
    let addr = k.user_alloc(size);
    k.user_write(addr, &vec![GARBAGE; size]);
    k.user_write_value(addr, v);
    addr
}

/// Runs one ioctl with `arg` in user memory and reads it back.
pub fn ioctl<T: IntoBytes + FromBytes + Immutable>(
    card: &TestCard,
    op: u32,
    arg: &mut T,
) -> Result<(), Status> {
    let k = card.kernel();
    let addr = user_value(k, arg);
    let r = card.dispatch(op, addr, core::mem::size_of::<T>());
    *arg = k.user_read_value(addr);
    k.user_free(addr);
    r
}

/// A struct of garbage, as the media add-on's heap objects start.
pub fn garbage<T: FromBytes>() -> T {
    T::read_from_bytes(&vec![GARBAGE; core::mem::size_of::<T>()]).unwrap()
}

/// The media add-on's view of a card after its init sequence.
pub struct Client {
    pub desc: hm::MultiDescription,
    pub channels: Vec<hm::MultiChannelInfo>,
    pub format: hm::MultiFormatInfo,
    pub list: hm::MultiBufferList,
    pub play: Vec<Vec<hm::BufferDesc>>,
    pub rec: Vec<Vec<hm::BufferDesc>>,
    pub controls: Vec<hm::MultiMixControl>,
    pub info: hm::MultiBufferInfo,
    pub info_addr: u64,
}

impl Client {
    /// GET_DESCRIPTION, GET/SET_ENABLED_CHANNELS, SET/GET_GLOBAL_FORMAT, GET_BUFFERS and
    /// LIST_MIX_CONTROLS, exactly as `MultiAudioDevice::_InitDriver` does them.
    pub fn init(card: &TestCard, rate: Option<u32>, format: Option<u32>) -> Client {
        let k = card.kernel();
        // 1. GET_DESCRIPTION: only info_size, request_channel_count and channels are set.
        let chan_addr = k.user_alloc(32 * 32);
        k.user_write(chan_addr, &[GARBAGE; 32 * 32]);
        let mut desc: hm::MultiDescription = garbage();
        desc.info_size = core::mem::size_of::<hm::MultiDescription>() as u64;
        desc.request_channel_count = 32;
        desc.channels = UserPtr::from_addr(chan_addr);
        ioctl(card, hm::B_MULTI_GET_DESCRIPTION, &mut desc).expect("GET_DESCRIPTION");
        assert_eq!(
            desc.channels.addr(),
            chan_addr,
            "the channel pointer must survive"
        );
        assert_eq!(desc.request_channel_count, 32);
        let total = (2 * (desc.output_channel_count + desc.input_channel_count)) as usize;
        let channels: Vec<hm::MultiChannelInfo> = (0..32)
            .map(|i| k.user_read_value(chan_addr + i * 32))
            .collect();
        for (i, c) in channels.iter().enumerate().skip(total) {
            assert_eq!(
                c.as_bytes(),
                &[GARBAGE; 32],
                "channel {i} is past the list and must be untouched"
            );
        }
        // 2. GET_ENABLED_CHANNELS with a 4-byte enable word; connectors left as garbage.
        let bits_addr = k.user_alloc(4);
        let mut en: hm::MultiChannelEnable = garbage();
        en.info_size = core::mem::size_of::<hm::MultiChannelEnable>() as u64;
        en.enable_bits = UserPtr::from_addr(bits_addr);
        ioctl(card, hm::B_MULTI_GET_ENABLED_CHANNELS, &mut en).expect("GET_ENABLED_CHANNELS");
        // 3. SET_ENABLED_CHANNELS: everything on.
        let n = desc.output_channel_count + desc.input_channel_count;
        k.user_write(bits_addr, &((1u32 << n) - 1).to_le_bytes());
        en.lock_source = hm::B_MULTI_LOCK_INTERNAL;
        ioctl(card, hm::B_MULTI_SET_ENABLED_CHANNELS, &mut en).expect("SET_ENABLED_CHANNELS");
        // 4. SET_GLOBAL_FORMAT: highest rate, best integer format (or what the test wants).
        let mut f: hm::MultiFormatInfo = garbage();
        f.info_size = core::mem::size_of::<hm::MultiFormatInfo>() as u64;
        let pick_rate = |mask: u32| {
            rate.filter(|r| mask & r != 0)
                .or_else(|| driver::hmulti::format::best_rate(mask))
                .unwrap_or(0)
        };
        let pick_fmt = |mask: u32| {
            format
                .filter(|r| mask & r != 0)
                .or_else(|| driver::hmulti::format::best_format(mask))
                .unwrap_or(0)
        };
        f.output.rate = pick_rate(desc.output_rates);
        f.output.cvsr = 0.0;
        f.output.format = pick_fmt(desc.output_formats);
        f.input.rate = pick_rate(desc.input_rates);
        f.input.cvsr = 0.0;
        f.input.format = pick_fmt(desc.input_formats);
        let _ = ioctl(card, hm::B_MULTI_SET_GLOBAL_FORMAT, &mut f);
        // 5. GET_GLOBAL_FORMAT into the same struct.
        ioctl(card, hm::B_MULTI_GET_GLOBAL_FORMAT, &mut f).expect("GET_GLOBAL_FORMAT");
        let mut c = Client {
            desc,
            channels,
            format: f,
            list: garbage(),
            play: Vec::new(),
            rec: Vec::new(),
            controls: Vec::new(),
            info: garbage(),
            info_addr: 0,
        };
        // 6. GET_BUFFERS: 32 buffers of 32 descriptors each, size 0 = driver's default.
        c.get_buffers(card);
        // 7. LIST_MIX_CONTROLS with room for 128.
        let ctl_addr = k.user_alloc(128 * core::mem::size_of::<hm::MultiMixControl>());
        let mut m: hm::MultiMixControlInfo = garbage();
        m.info_size = core::mem::size_of::<hm::MultiMixControlInfo>() as u64;
        m.control_count = 128;
        m.controls = UserPtr::from_addr(ctl_addr);
        ioctl(card, hm::B_MULTI_LIST_MIX_CONTROLS, &mut m).expect("LIST_MIX_CONTROLS");
        c.controls = (0..m.control_count as u64)
            .map(|i| k.user_read_value(ctl_addr + i * 116))
            .collect();
        // The exchange loop reuses one structure; only info_size and the cycles are set.
        let mut info: hm::MultiBufferInfo = garbage();
        info.info_size = core::mem::size_of::<hm::MultiBufferInfo>() as u64;
        info.playback_buffer_cycle = 0;
        info.record_buffer_cycle = 0;
        c.info_addr = user_value(k, &info);
        c.info = info;
        c
    }

    pub fn get_buffers(&mut self, card: &TestCard) {
        let k = card.kernel();
        let table = |k: &SimKernel| -> (u64, Vec<u64>) {
            let blocks: Vec<u64> = (0..32)
                .map(|_| {
                    let a = k.user_alloc(32 * 24);
                    k.user_write(a, &[GARBAGE; 32 * 24]);
                    a
                })
                .collect();
            let t = k.user_alloc(32 * 8);
            for (i, b) in blocks.iter().enumerate() {
                k.user_write(t + i as u64 * 8, &b.to_le_bytes());
            }
            (t, blocks)
        };
        let (pt, pblocks) = table(k);
        let (rt, rblocks) = table(k);
        let mut l: hm::MultiBufferList = garbage();
        l.info_size = core::mem::size_of::<hm::MultiBufferList>() as u64;
        l.request_playback_buffer_size = 0;
        l.request_playback_buffers = 32;
        l.request_playback_channels = self.desc.output_channel_count;
        l.playback_buffers = UserPtr::from_addr(pt);
        l.request_record_buffer_size = 0;
        l.request_record_buffers = 32;
        l.request_record_channels = self.desc.input_channel_count;
        l.record_buffers = UserPtr::from_addr(rt);
        ioctl(card, hm::B_MULTI_GET_BUFFERS, &mut l).expect("GET_BUFFERS");
        let read = |blocks: &[u64], n: i32, ch: i32| -> Vec<Vec<hm::BufferDesc>> {
            (0..n.max(0) as usize)
                .map(|b| {
                    (0..ch.max(0) as u64)
                        .map(|c| k.user_read_value(blocks[b] + c * 24))
                        .collect()
                })
                .collect()
        };
        self.play = read(
            &pblocks,
            l.return_playback_buffers,
            self.desc.output_channel_count,
        );
        self.rec = read(
            &rblocks,
            l.return_record_buffers,
            self.desc.input_channel_count,
        );
        self.list = l;
    }

    pub fn exchange(&mut self, card: &TestCard) -> Result<(), Status> {
        let k = card.kernel();
        k.user_write_value(self.info_addr, &self.info);
        let r = card.dispatch(
            hm::B_MULTI_BUFFER_EXCHANGE,
            self.info_addr,
            core::mem::size_of::<hm::MultiBufferInfo>(),
        );
        self.info = k.user_read_value(self.info_addr);
        r
    }

    /// Writes one buffer's worth of interleaved frames into playback buffer `b` through the
    /// per-channel base/stride descriptors.
    pub fn fill(&self, card: &TestCard, b: usize, frames: &[u8]) {
        let k = card.kernel();
        let descs = &self.play[b];
        let channels = descs.len();
        let sample = (descs[0].stride as usize) / channels;
        for (f, frame) in frames.chunks(descs[0].stride as usize).enumerate() {
            for (c, d) in descs.iter().enumerate() {
                let addr = d.base.addr() + f as u64 * d.stride;
                k.area_user_write(addr, &frame[c * sample..(c + 1) * sample])
                    .expect("buffer memory");
            }
        }
    }

    /// Reads record buffer `b` back into interleaved frames.
    pub fn read_record(&self, card: &TestCard, b: usize) -> Vec<u8> {
        let k = card.kernel();
        let descs = &self.rec[b];
        let frames = self.list.return_record_buffer_size as usize;
        let sample = (descs[0].stride as usize) / descs.len();
        let mut out = Vec::new();
        for f in 0..frames {
            for d in descs {
                let mut s = vec![0u8; sample];
                k.area_user_read(d.base.addr() + f as u64 * d.stride, &mut s)
                    .expect("buffer memory");
                out.extend_from_slice(&s);
            }
        }
        out
    }

    pub fn play_bytes(&self) -> usize {
        let Some(d) = self.play.first().and_then(|b| b.first()) else {
            return 0;
        };
        self.list.return_playback_buffer_size as usize * d.stride as usize
    }
}

/// Deterministic test audio: `len` bytes that differ from frame to frame.
pub fn signal(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}
