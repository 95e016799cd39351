//! A client that drives an hmulti device the way Haiku's multi_audio media add-on does
//! (`src/add-ons/media/media-add-ons/multi_audio/MultiAudioDevice.cpp` in Haiku): the init
//! sequence with garbage in the fields it leaves unset, 32 channels and 32 buffers requested,
//! the exchange loop that fills buffer (cycle − 1) mod N and ignores errors, format changes
//! between exchanges, FORCE_STOP then resume with the same buffers, and the mix-control walk.
//!
//! It talks to any [`Hmulti`]: a loaded add-on's `control` hook (`haiku-sim`), or a driver's
//! card called directly (the driver's tests). It never depends on a driver: what it expects
//! comes from hmulti's definitions and the driver's documented behaviour.
#![forbid(unsafe_code)]

pub mod wav;

use spec::hmulti_audio as hm;
use spec::UserPtr;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Garbage the media add-on leaves in fields it does not set.
pub const GARBAGE: u8 = 0xa5;

/// An hmulti device and the client's memory.
pub trait Hmulti {
    /// The device's `control` hook: a Haiku status.
    fn ioctl(&self, op: u32, buffer: u64, length: usize) -> i32;
    fn user_alloc(&self, len: usize) -> u64;
    fn user_free(&self, addr: u64);
    fn user_write(&self, addr: u64, bytes: &[u8]);
    fn user_read(&self, addr: u64, len: usize) -> Vec<u8>;
    /// Writes into the audio buffers (the driver's user-visible area) at an address the
    /// driver reported in a `buffer_desc`.
    fn buffer_write(&self, addr: u64, bytes: &[u8]) -> Result<(), String>;
    fn buffer_read(&self, addr: u64, len: usize) -> Result<Vec<u8>, String>;
}

fn read_value<T: FromBytes, D: Hmulti + ?Sized>(d: &D, addr: u64) -> T {
    T::read_from_bytes(&d.user_read(addr, core::mem::size_of::<T>()))
        .unwrap_or_else(|_| T::new_zeroed())
}

fn garbage<T: FromBytes>() -> T {
    T::read_from_bytes(&vec![GARBAGE; core::mem::size_of::<T>()])
        .unwrap_or_else(|_| T::new_zeroed())
}

/// Runs one ioctl with `arg` in fresh user memory (pre-filled with garbage), reads it back.
pub fn ioctl<T: IntoBytes + FromBytes + Immutable, D: Hmulti + ?Sized>(
    d: &D,
    op: u32,
    arg: &mut T,
) -> i32 {
    let size = core::mem::size_of::<T>();
    let addr = d.user_alloc(size);
    d.user_write(addr, arg.as_bytes());
    let r = d.ioctl(op, addr, size);
    *arg = read_value(d, addr);
    d.user_free(addr);
    r
}

/// One direction's buffers as GET_BUFFERS returned them: playback or record.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Per buffer, each channel's descriptor (`base` and `stride`).
    pub descs: Vec<Vec<hm::BufferDesc>>,
    /// Frames per buffer (`return_playback_buffer_size` or `return_record_buffer_size`).
    pub frames: usize,
}

impl Buffers {
    /// Reads `count` buffers of `channels` descriptors from the blocks the client handed over.
    fn read_table<D: Hmulti + ?Sized>(
        d: &D,
        blocks: &[u64],
        count: i32,
        channels: i32,
        frames: u32,
    ) -> Buffers {
        let descs = (0..count.clamp(0, 32) as usize)
            .map(|b| {
                (0..channels.clamp(0, 32) as u64)
                    .map(|c| read_value(d, blocks[b] + c * 24))
                    .collect()
            })
            .collect();
        Buffers {
            descs,
            frames: frames as usize,
        }
    }

    /// How many buffers there are.
    pub fn len(&self) -> usize {
        self.descs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.descs.is_empty()
    }

    /// Bytes of one buffer (all channels, interleaved).
    pub fn bytes(&self) -> usize {
        self.descs
            .first()
            .and_then(|b| b.first())
            .map_or(0, |d| self.frames * d.stride as usize)
    }

    /// Bytes of one frame (all channels).
    pub fn frame_bytes(&self) -> usize {
        self.bytes() / self.frames.max(1)
    }

    /// Whether a buffer's descriptors are plain interleaved frames: channel c at
    /// `base + c * sample`, all with the stride of a whole frame.
    fn interleaved(descs: &[hm::BufferDesc], sample: usize) -> bool {
        let Some(first) = descs.first() else {
            return false;
        };
        let stride = first.stride as usize;
        stride == sample * descs.len()
            && descs.iter().enumerate().all(|(c, d)| {
                d.stride as usize == stride
                    && d.base.addr() == first.base.addr() + (c * sample) as u64
            })
    }

    /// Writes interleaved frames into buffer `b` through each channel's base/stride.
    pub fn write<D: Hmulti + ?Sized>(&self, d: &D, b: usize, frames: &[u8]) -> Result<(), String> {
        let descs = self.descs.get(b).ok_or("no such buffer")?;
        let first = descs.first().ok_or("no channels")?;
        let stride = first.stride as usize;
        let sample = stride / descs.len();
        // Build the buffer's bytes as the descriptors lay them out, then write once.
        let span = self.bytes();
        if Self::interleaved(descs, sample) && frames.len() <= span {
            // Channel c at base + c * sample, every stride the same: the frames as they are.
            let mut image = frames.to_vec();
            image.resize(span, 0);
            return d.buffer_write(first.base.addr(), &image);
        }
        let mut image = vec![0u8; span];
        for (f, frame) in frames.chunks(stride).enumerate() {
            for (c, dsc) in descs.iter().enumerate() {
                let off = (dsc.base.addr() - first.base.addr()) as usize + f * dsc.stride as usize;
                if let (Some(dst), Some(src)) = (
                    image.get_mut(off..off + sample),
                    frame.get(c * sample..(c + 1) * sample),
                ) {
                    dst.copy_from_slice(src);
                }
            }
        }
        d.buffer_write(first.base.addr(), &image)
    }

    /// Buffer `b` as interleaved frames.
    pub fn read<D: Hmulti + ?Sized>(&self, d: &D, b: usize) -> Result<Vec<u8>, String> {
        let descs = self.descs.get(b).ok_or("no such buffer")?;
        let first = descs.first().ok_or("no channels")?;
        let span = self.bytes();
        let raw = d.buffer_read(first.base.addr(), span)?;
        let sample = first.stride as usize / descs.len();
        if Self::interleaved(descs, sample) {
            return Ok(raw);
        }
        let mut out = Vec::with_capacity(span);
        for f in 0..self.frames {
            for dsc in descs {
                let off = (dsc.base.addr() - first.base.addr()) as usize + f * dsc.stride as usize;
                out.extend_from_slice(
                    raw.get(off..off + sample)
                        .ok_or("descriptor outside the buffer")?,
                );
            }
        }
        Ok(out)
    }
}

/// What the init sequence learned, and the exchange state.
#[derive(Debug)]
pub struct Session {
    pub desc: hm::MultiDescription,
    pub channels: Vec<hm::MultiChannelInfo>,
    pub format: hm::MultiFormatInfo,
    pub list: hm::MultiBufferList,
    /// The playback buffers: what the client fills.
    pub play: Buffers,
    /// The record buffers: what the client reads.
    pub rec: Buffers,
    pub controls: Vec<hm::MultiMixControl>,
    /// The values GET_MIX gave for the parameter web (gains, enables, muxes), by control id.
    pub mix: Vec<(i32, hm::MultiMixValue)>,
    pub info: hm::MultiBufferInfo,
    info_addr: u64,
    allocations: Vec<u64>,
    /// The blocks of the buffer tables the last GET_BUFFERS filled: freed when the next one
    /// replaces them (a session that changes format for hours would otherwise pile up 66
    /// mappings per change) or at release.
    tables: Vec<u64>,
}

/// hmulti's fixed sample rates (`B_SR_*` in Haiku's `headers/private/audio/hmulti_audio.h`):
/// each bit and the rate in Hz its name gives. The client's own table, so a wrong row in a
/// driver's rate table cannot agree with it by construction.
pub const RATES: [(u32, u32); 16] = [
    (hm::B_SR_8000, 8_000),
    (hm::B_SR_11025, 11_025),
    (hm::B_SR_12000, 12_000),
    (hm::B_SR_16000, 16_000),
    (hm::B_SR_22050, 22_050),
    (hm::B_SR_24000, 24_000),
    (hm::B_SR_32000, 32_000),
    (hm::B_SR_44100, 44_100),
    (hm::B_SR_48000, 48_000),
    (hm::B_SR_64000, 64_000),
    (hm::B_SR_88200, 88_200),
    (hm::B_SR_96000, 96_000),
    (hm::B_SR_176400, 176_400),
    (hm::B_SR_192000, 192_000),
    (hm::B_SR_384000, 384_000),
    (hm::B_SR_1536000, 1_536_000),
];

/// The hmulti rate bit (`B_SR_*`) of a rate in Hz.
pub fn rate_bit(hz: u32) -> Option<u32> {
    RATES.iter().find(|(_, r)| *r == hz).map(|(b, _)| *b)
}

/// The rate in Hz of an hmulti rate bit (`None` for CVSR, a mask or no bit).
pub fn rate_hz(bit: u32) -> Option<u32> {
    RATES.iter().find(|(b, _)| *b == bit).map(|(_, r)| *r)
}

/// The least silence the virtio_sound driver plays after the last buffer at FORCE_STOP with
/// its settings file absent: the documented default of its `stop_padding_ms` key (the example
/// settings file `cargo xtask build-haiku` writes next to the add-on), in ms. A client that
/// checks the tail of a recording needs it; it is the driver's published behaviour, not read
/// from the driver's code.
pub const DRIVER_STOP_PADDING_MS: u32 = 20;

/// The hmulti format bit (`B_FMT_*`) of a WAV sample format hmulti plays (8-bit unsigned,
/// 16/32-bit signed, float).
pub fn format_bit(f: crate::wav::SampleFormat) -> Option<u32> {
    use crate::wav::SampleFormat;
    Some(match f {
        SampleFormat::S16 => hm::B_FMT_16BIT,
        SampleFormat::S32 => hm::B_FMT_32BIT,
        SampleFormat::F32 => hm::B_FMT_FLOAT,
        SampleFormat::U8 => hm::B_FMT_8BIT_U,
        _ => return None,
    })
}

/// Which rate and format to ask for; `None` picks what the media add-on would.
#[derive(Clone, Copy, Debug, Default)]
pub struct Choice {
    pub rate: Option<u32>,
    pub format: Option<u32>,
}

fn best_rate(mask: u32) -> u32 {
    (0..17)
        .rev()
        .map(|i| 1u32 << i)
        .find(|b| mask & b != 0)
        .unwrap_or(0)
}

fn best_format(mask: u32) -> u32 {
    [
        hm::B_FMT_32BIT,
        hm::B_FMT_24BIT,
        hm::B_FMT_20BIT,
        hm::B_FMT_18BIT,
        hm::B_FMT_16BIT,
        hm::B_FMT_8BIT_S,
        hm::B_FMT_8BIT_U,
    ]
    .into_iter()
    .find(|b| mask & b != 0)
    .unwrap_or(0)
}

impl Session {
    /// `MultiAudioDevice::_InitDriver` and `_GetBuffers`, then LIST_MIX_CONTROLS. On an
    /// error the client memory it mapped is unmapped again.
    pub fn init<D: Hmulti + ?Sized>(d: &D, choice: Choice) -> Result<Session, String> {
        let mut allocations = Vec::new();
        let r = Self::init_into(d, choice, &mut allocations);
        if r.is_err() {
            for a in allocations {
                d.user_free(a);
            }
        }
        r
    }

    /// [`Session::init`]'s steps; every user mapping made before an error is in
    /// `allocations` when it returns one.
    fn init_into<D: Hmulti + ?Sized>(
        d: &D,
        choice: Choice,
        allocations: &mut Vec<u64>,
    ) -> Result<Session, String> {
        let chan_addr = d.user_alloc(32 * 32);
        allocations.push(chan_addr);
        d.user_write(chan_addr, &[GARBAGE; 32 * 32]);
        let mut desc: hm::MultiDescription = garbage();
        desc.info_size = core::mem::size_of::<hm::MultiDescription>() as u64;
        desc.request_channel_count = 32;
        desc.channels = UserPtr::from_addr(chan_addr);
        let r = ioctl(d, hm::B_MULTI_GET_DESCRIPTION, &mut desc);
        if r != 0 {
            return Err(format!("GET_DESCRIPTION failed: {r:#x}"));
        }
        let channels: Vec<hm::MultiChannelInfo> =
            (0..32).map(|i| read_value(d, chan_addr + i * 32)).collect();
        let bits = d.user_alloc(4);
        allocations.push(bits);
        let mut en: hm::MultiChannelEnable = garbage();
        en.info_size = core::mem::size_of::<hm::MultiChannelEnable>() as u64;
        en.enable_bits = UserPtr::from_addr(bits);
        let r = ioctl(d, hm::B_MULTI_GET_ENABLED_CHANNELS, &mut en);
        if r != 0 {
            return Err(format!("GET_ENABLED_CHANNELS failed: {r:#x}"));
        }
        let n = (desc.output_channel_count + desc.input_channel_count).clamp(0, 31);
        d.user_write(bits, &((1u32 << n) - 1).to_le_bytes());
        en.lock_source = hm::B_MULTI_LOCK_INTERNAL;
        let r = ioctl(d, hm::B_MULTI_SET_ENABLED_CHANNELS, &mut en);
        if r != 0 {
            return Err(format!("SET_ENABLED_CHANNELS failed: {r:#x}"));
        }
        let mut f: hm::MultiFormatInfo = garbage();
        f.info_size = core::mem::size_of::<hm::MultiFormatInfo>() as u64;
        f.output.rate = choice
            .rate
            .filter(|r| desc.output_rates & r != 0)
            .unwrap_or_else(|| best_rate(desc.output_rates));
        f.output.cvsr = 0.0;
        f.output.format = choice
            .format
            .filter(|x| desc.output_formats & x != 0)
            .unwrap_or_else(|| best_format(desc.output_formats));
        f.input.rate = choice
            .rate
            .filter(|r| desc.input_rates & r != 0)
            .unwrap_or_else(|| best_rate(desc.input_rates));
        f.input.cvsr = 0.0;
        f.input.format = choice
            .format
            .filter(|x| desc.input_formats & x != 0)
            .unwrap_or_else(|| best_format(desc.input_formats));
        // The media add-on only logs a failure here.
        let _ = ioctl(d, hm::B_MULTI_SET_GLOBAL_FORMAT, &mut f);
        let r = ioctl(d, hm::B_MULTI_GET_GLOBAL_FORMAT, &mut f);
        if r != 0 {
            return Err(format!("GET_GLOBAL_FORMAT failed: {r:#x}"));
        }
        let info_addr = d.user_alloc(core::mem::size_of::<hm::MultiBufferInfo>());
        allocations.push(info_addr);
        let mut s = Session {
            desc,
            channels,
            format: f,
            list: garbage(),
            play: Buffers::default(),
            rec: Buffers::default(),
            controls: Vec::new(),
            mix: Vec::new(),
            info: garbage(),
            info_addr,
            allocations: std::mem::take(allocations),
            tables: Vec::new(),
        };
        match s.finish_init(d) {
            Ok(()) => Ok(s),
            Err(e) => {
                allocations.append(&mut s.allocations);
                allocations.append(&mut s.tables);
                Err(e)
            }
        }
    }

    /// The steps of [`Session::init`] once the session exists.
    fn finish_init<D: Hmulti + ?Sized>(&mut self, d: &D) -> Result<(), String> {
        let s = self;
        s.get_buffers(d)?;
        let ctl = d.user_alloc(128 * core::mem::size_of::<hm::MultiMixControl>());
        s.allocations.push(ctl);
        let mut m: hm::MultiMixControlInfo = garbage();
        m.info_size = core::mem::size_of::<hm::MultiMixControlInfo>() as u64;
        m.control_count = 128;
        m.controls = UserPtr::from_addr(ctl);
        let r = ioctl(d, hm::B_MULTI_LIST_MIX_CONTROLS, &mut m);
        if r != 0 {
            return Err(format!("LIST_MIX_CONTROLS failed: {r:#x}"));
        }
        s.controls = (0..m.control_count.clamp(0, 128) as u64)
            .map(|i| read_value(d, ctl + i * 116))
            .collect();
        s.mix = s.walk_mix(d);
        s.info.info_size = core::mem::size_of::<hm::MultiBufferInfo>() as u64;
        s.info.playback_buffer_cycle = 0;
        s.info.record_buffer_cycle = 0;
        Ok(())
    }

    /// The parameter web's initial read: one GET_MIX per GAIN, ENABLE or MUX control, with
    /// only `values` and `item_count` set, like `MultiAudioNode::_GetParameterValue`; a
    /// failure is only logged there, so it is skipped here.
    fn walk_mix<D: Hmulti + ?Sized>(&self, d: &D) -> Vec<(i32, hm::MultiMixValue)> {
        let mut out = Vec::new();
        for c in &self.controls {
            let kind = c.flags & hm::B_MULTI_MIX_KIND_MASK;
            if ![
                hm::B_MULTI_MIX_GAIN,
                hm::B_MULTI_MIX_ENABLE,
                hm::B_MULTI_MIX_MUX,
            ]
            .contains(&kind)
            {
                continue;
            }
            let v_addr = d.user_alloc(24);
            let mut v: hm::MultiMixValue = garbage();
            v.id = c.id;
            d.user_write(v_addr, v.as_bytes());
            let mut info: hm::MultiMixValueInfo = garbage();
            info.item_count = 1;
            info.values = UserPtr::from_addr(v_addr);
            if ioctl(d, hm::B_MULTI_GET_MIX, &mut info) == 0 {
                out.push((c.id, read_value(d, v_addr)));
            }
            d.user_free(v_addr);
        }
        out
    }

    /// One direction's table for GET_BUFFERS: 32 pointers to blocks of 32 descriptors, the
    /// blocks full of garbage. Returns the table and the blocks.
    fn buffer_table<D: Hmulti + ?Sized>(&mut self, d: &D) -> (u64, Vec<u64>) {
        let blocks: Vec<u64> = (0..32)
            .map(|_| {
                let a = d.user_alloc(32 * 24);
                d.user_write(a, &[GARBAGE; 32 * 24]);
                a
            })
            .collect();
        let t = d.user_alloc(32 * 8);
        for (i, b) in blocks.iter().enumerate() {
            d.user_write(t + i as u64 * 8, &b.to_le_bytes());
        }
        self.tables.extend(blocks.iter().copied());
        self.tables.push(t);
        (t, blocks)
    }

    /// GET_BUFFERS with 32 buffers of 32 descriptors per direction and the default size.
    pub fn get_buffers<D: Hmulti + ?Sized>(&mut self, d: &D) -> Result<(), String> {
        // The tables of the previous GET_BUFFERS: what was read from them is kept in
        // `play`/`rec`, and the driver never keeps a client's pointer.
        for a in std::mem::take(&mut self.tables) {
            d.user_free(a);
        }
        let (pt, pblocks) = self.buffer_table(d);
        let (rt, rblocks) = self.buffer_table(d);
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
        let r = ioctl(d, hm::B_MULTI_GET_BUFFERS, &mut l);
        if r != 0 {
            return Err(format!("GET_BUFFERS failed: {r:#x}"));
        }
        self.play = Buffers::read_table(
            d,
            &pblocks,
            l.return_playback_buffers,
            self.desc.output_channel_count,
            l.return_playback_buffer_size,
        );
        self.rec = Buffers::read_table(
            d,
            &rblocks,
            l.return_record_buffers,
            self.desc.input_channel_count,
            l.return_record_buffer_size,
        );
        self.list = l;
        Ok(())
    }

    /// One BUFFER_EXCHANGE with the struct the loop reuses; the status is returned but, like
    /// the media add-on, callers may ignore it.
    pub fn exchange<D: Hmulti + ?Sized>(&mut self, d: &D) -> i32 {
        d.user_write(self.info_addr, self.info.as_bytes());
        let r = d.ioctl(
            hm::B_MULTI_BUFFER_EXCHANGE,
            self.info_addr,
            core::mem::size_of::<hm::MultiBufferInfo>(),
        );
        self.info = read_value(d, self.info_addr);
        r
    }

    /// The output rate of the session's format in Hz (0 if the bit is not a rate).
    pub fn output_hz(&self) -> u32 {
        rate_hz(self.format.output.rate).unwrap_or(0)
    }

    /// Bytes of silence the driver plays after the last buffer when playback stops (its
    /// default stop padding) in the session's output format.
    pub fn stop_padding_bytes(&self) -> usize {
        // Whole frames covering the time, rounded up.
        (u64::from(DRIVER_STOP_PADDING_MS) * u64::from(self.output_hz())).div_ceil(1000) as usize
            * self.play.frame_bytes()
    }

    /// The byte of a silent sample in the output format: 0x80 in unsigned 8-bit, else 0.
    pub fn silence_byte(&self) -> u8 {
        if self.format.output.format == hm::B_FMT_8BIT_U {
            0x80
        } else {
            0
        }
    }

    /// Checks what a device received for one run of [`play`] ended by FORCE_STOP: `lead`
    /// bytes of lead-in (the buffers the driver queued before the client wrote any), silent,
    /// then `input` bit for bit, then exactly the stop padding, silent.
    pub fn check_played(&self, played: &[u8], lead: usize, input: &[u8]) -> Result<(), String> {
        let pad = self.stop_padding_bytes();
        let quiet = self.silence_byte();
        // Whole-slice comparisons first (memcmp), byte by byte only to name a difference:
        // the fuzz targets check every run, instrumented.
        let silent = |bytes: &[u8]| bytes == vec![quiet; bytes.len()].as_slice();
        let lead_in = &played[..lead.min(played.len())];
        if let Some(at) = (!silent(lead_in))
            .then(|| lead_in.iter().position(|&b| b != quiet))
            .flatten()
        {
            return Err(format!(
                "the lead-in is not silence: byte {at} is {:#04x}, silence is {quiet:#04x}",
                played[at]
            ));
        }
        if played.len() != lead + input.len() + pad {
            return Err(format!(
                "the device received {} bytes; {lead} of lead-in + {} of input + {pad} of \
                 stop padding expected",
                played.len(),
                input.len()
            ));
        }
        if played[lead..lead + input.len()] != *input {
            let at = played[lead..]
                .iter()
                .zip(input)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(format!("the input differs from byte {at} on"));
        }
        if !silent(&played[lead + input.len()..]) {
            return Err("the stop padding is not silence".into());
        }
        Ok(())
    }

    /// FORCE_STOP as the media add-on sends it: NULL argument, length 1.
    pub fn force_stop<D: Hmulti + ?Sized>(&self, d: &D) -> i32 {
        d.ioctl(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
    }

    /// Frees the client memory this session allocated.
    pub fn release<D: Hmulti + ?Sized>(self, d: &D) {
        for a in self.allocations.into_iter().chain(self.tables) {
            d.user_free(a);
        }
    }
}

/// The result of playing a stream through a device.
#[derive(Debug, Default)]
pub struct Played {
    /// (`played_real_time`, `played_frames_count`) after every exchange.
    pub reports: Vec<(i64, i64)>,
    /// (`recorded_real_time`, `recorded_frames_count`) after every exchange.
    pub rec_reports: Vec<(i64, i64)>,
    /// Interleaved capture data the client read, in order.
    pub recorded: Vec<u8>,
    /// Exchanges that returned an error.
    pub errors: usize,
    pub buffers: usize,
    pub buffer_frames: usize,
}

/// Plays `input` (interleaved, in the session's output format) and reads what the inputs
/// record, one buffer per exchange, then FORCE_STOP.
pub fn play<D: Hmulti + ?Sized>(d: &D, s: &mut Session, input: &[u8]) -> Played {
    play_observed(d, s, input, |_| {})
}

/// [`play`], calling `after` with the exchange's index after each exchange (the first one
/// returns when the device is running both ways).
///
/// A buffer is filled only when the playback cycle is one the client has not filled yet, as
/// `MultiAudioNode::_OutputThread` (src/add-ons/media/media-add-ons/multi_audio/
/// MultiAudioNode.cpp) fills one only when `playback_buffer_cycle` differs from the input's
/// `fOldBufferCycle` (or there is a single buffer): an exchange that fails leaves the cycle
/// as it was, and writing the next piece of the input into the buffer just filled, before
/// the driver queued it, would lose a buffer of sound. The media add-on exchanges until it
/// is stopped; this client gives up once as many exchanges as the input has buffers brought
/// it no new one.
pub fn play_observed<D: Hmulti + ?Sized>(
    d: &D,
    s: &mut Session,
    input: &[u8],
    mut after: impl FnMut(usize),
) -> Played {
    let n = s.play.len().max(s.rec.len()).max(1);
    let pb = s.play.bytes();
    let mut out = Played {
        buffers: n,
        buffer_frames: s.play.frames,
        ..Default::default()
    };
    let mut last_rec = -1;
    let mut last_play = -1;
    let chunks = if pb == 0 { 0 } else { input.len().div_ceil(pb) };
    let (mut filled, mut exchanges) = (0, 0);
    while filled < chunks && exchanges - filled < chunks {
        if s.exchange(d) != 0 {
            out.errors += 1;
        }
        out.reports
            .push((s.info.played_real_time, s.info.played_frames_count));
        out.rec_reports
            .push((s.info.recorded_real_time, s.info.recorded_frames_count));
        after(exchanges);
        exchanges += 1;
        let cycle = s.info.playback_buffer_cycle;
        if (0..n as i32).contains(&cycle) && (cycle != last_play || n == 1) {
            let k = filled;
            let mut chunk = input[k * pb..((k + 1) * pb).min(input.len())].to_vec();
            chunk.resize(pb, 0);
            let _ = s.play.write(d, (cycle as usize + n - 1) % n, &chunk);
            filled += 1;
            last_play = cycle;
        }
        let rc = s.info.record_buffer_cycle;
        if rc != last_rec && (0..s.rec.len() as i32).contains(&rc) {
            if let Ok(r) = s.rec.read(d, rc as usize) {
                out.recorded.extend(r);
            }
        }
        last_rec = rc;
    }
    let _ = s.force_stop(d);
    out
}
