//! The hmulti ioctl table: one handler per opcode, each with its typed argument, over the
//! virtio-snd engine. A [`Card`] is one published hmulti device: an output stream and/or an
//! input stream of the virtio device.
//!
//! Stream-to-device mapping: card `n` pairs the device's `n`-th output stream with its `n`-th
//! input stream (by stream id order); a device with more streams of one direction gets cards
//! with only that direction. [`cards_for`] computes it.

pub mod channels;
pub mod format;
pub mod mix;
pub mod servable;

use alloc::sync::Arc;
use alloc::vec::Vec;

use spec::hmulti_audio as hm;
use spec::UserPtr;

use crate::virtio::pcm::{silence_byte, Completion, PcmParams, MAX_PERIODS};
use crate::virtio::Engine;
use channels::Layout;
use format::Choice;
use platform::dma::BufferArea;
use platform::sync::SemMutex;
use platform::user;
use platform::{KResult, Kernel, LogLevel, Status, VirtioDevice};

/// How long an ioctl waits for the card's state lock before it gives up.
const LOCK_TIMEOUT: i64 = 5_000_000;
/// The frames per buffer a client may ask for.
const MIN_FRAMES: u32 = 16;
const MAX_FRAMES: u32 = 65536;
/// Most channels one direction publishes (the media add-on's arrays hold 32 in all).
pub const MAX_CHANNELS: u8 = 16;

/// Driver settings that shape the buffers (from the `virtio_sound` settings file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Frames per buffer; 0 picks about 10 ms at the current rate.
    pub frames_per_buffer: u32,
    /// Buffers per direction; 0 picks the default.
    pub buffer_count: u32,
    /// Highest rate to advertise, in Hz; `None` advertises everything.
    pub max_rate: Option<u32>,
    /// Least silence played after the last buffer when playback stops (FORCE_STOP), in µs,
    /// so that what the device holds inside is heard (more if the device holds more); 0
    /// plays none; `None` is [`DEFAULT_STOP_PADDING_US`].
    pub stop_padding_us: Option<u32>,
}

/// The least silence played at stop. The driver plays more when the device holds more (it
/// measures what the device took ahead of real time: QEMU holds about 1024 frames, 21 ms at
/// 48 kHz, 128 ms at 8 kHz).
pub const DEFAULT_STOP_PADDING_US: u32 = 20_000;

/// One direction of a card: its stream and what the stream can do, fixed for the card's
/// life (what changes as the client goes is in the locked state).
#[derive(Clone, Debug)]
pub struct Side {
    pub stream: u32,
    pub layout: Layout,
    /// `B_SR_*` bits the stream supports.
    pub rates: u32,
    /// `B_FMT_*` bits the stream supports.
    pub formats: u32,
}

/// The streams each card gets: `(output, input)` stream ids ([`servable`] leaves some out).
pub fn cards_for<K: Kernel, V: VirtioDevice>(
    engine: &Engine<K, V>,
) -> Vec<(Option<u32>, Option<u32>)> {
    let (outs, ins) = servable::streams(engine, MAX_CHANNELS);
    (0..outs.len().max(ins.len()))
        .map(|i| (outs.get(i).copied(), ins.get(i).copied()))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    /// Offset of buffer 0 in the area.
    offset: u64,
    period_bytes: u32,
    frame_bytes: u32,
    sample_bytes: u32,
}

#[derive(Debug)]
struct Buffers {
    /// The card's handle; each stream configured with the buffers holds its own.
    area: BufferArea,
    count: u32,
    frames: u32,
    /// Where each direction's buffers are in the area.
    output: Option<Region>,
    input: Option<Region>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Report {
    cycle: i32,
    time: i64,
    frames: i64,
}

/// What one direction of the card keeps under the card's lock, next to its fixed [`Side`].
#[derive(Debug, Default)]
struct SideState {
    /// The rate and format the direction runs at; `None` when the card lacks it.
    format: Option<Choice>,
    /// Frames of earlier runs, so the counts only grow across FORCE_STOP and format changes.
    base: i64,
    /// What the last exchange reported: frames played (output) or recorded (input).
    report: Report,
    /// Whether the direction's stream runs in the current run (a secondary direction whose
    /// device kept its buffers past RELEASE sits the runs out; see [`Card::exchange_start`]).
    live: bool,
}

impl SideState {
    /// A direction before its first run, at the format the media add-on would pick. No
    /// buffer is ready yet: cycle -1 is outside every ring, so the client reads nothing.
    fn new(side: Option<&Side>) -> Self {
        SideState {
            format: side.and_then(|s| {
                Choice::new(format::best_rate(s.rates)?, format::best_format(s.formats)?)
            }),
            base: 0,
            report: Report {
                cycle: -1,
                ..Default::default()
            },
            live: false,
        }
    }

    /// Counts a completed period: `seq` is its number in this run, `cycle` the buffer to
    /// report, `time` when it completed (reported times only grow).
    fn complete(&mut self, cycle: u32, time: i64, seq: u64, frames: i64) {
        self.report = Report {
            cycle: cycle as i32,
            time: time.max(self.report.time + 1),
            frames: self.base + (seq as i64 + 1) * frames,
        };
    }
}

#[derive(Debug, Default)]
struct State {
    output: SideState,
    input: SideState,
    enabled: u64,
    buffers: Option<Buffers>,
    /// Buffers the client got but whose layout no longer matches the format.
    stale: bool,
    running: bool,
    /// Exchanges that found the device starved.
    starved: u32,
    /// `starved` when the current run started (the log reports each run's count).
    starved_at_start: u32,
}

impl State {
    /// The rate the card runs at, in Hz: the output's, else the input's.
    fn hz(&self) -> Option<u32> {
        self.output.format.or(self.input.format).map(|c| c.hz())
    }
}

/// Counters a test or the simulator summary can read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub xruns: u32,
    pub starved: u32,
    pub running: bool,
}

/// One published hmulti device.
pub struct Card<K: Kernel, V: VirtioDevice> {
    engine: Arc<Engine<K, V>>,
    kernel: Arc<K>,
    pub output: Option<Side>,
    pub input: Option<Side>,
    settings: Settings,
    state: SemMutex<State>,
    mixer: mix::Mixer,
}

impl<K: Kernel, V: VirtioDevice> core::fmt::Debug for Card<K, V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Card")
            .field("output", &self.output)
            .field("input", &self.input)
            .finish()
    }
}

fn name_bytes<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    for (o, b) in out.iter_mut().zip(s.bytes().take(N - 1)) {
        *o = b;
    }
    out
}

fn single_bit(v: u32) -> bool {
    v != 0 && v & (v - 1) == 0
}

impl<K: Kernel, V: VirtioDevice> Card<K, V> {
    /// A card over the given streams; picks the format the media add-on would.
    pub fn new(
        engine: Arc<Engine<K, V>>,
        output: Option<u32>,
        input: Option<u32>,
        settings: Settings,
    ) -> KResult<Self> {
        let kernel = engine.kernel.clone();
        let side = |id: Option<u32>| -> KResult<Option<Side>> {
            let Some(id) = id else { return Ok(None) };
            let s = engine.stream(id).ok_or(Status::BAD_VALUE)?;
            let layout = match channels::layout(&s.info, engine.chmaps(), MAX_CHANNELS) {
                Ok(l) => l,
                Err(why) => {
                    kernel.log(
                        LogLevel::Warn,
                        format_args!("stream {id}: {why}; not published"),
                    );
                    return Ok(None);
                }
            };
            let rates = format::rate_bits(s.info.rates(), settings.max_rate);
            let formats = format::format_bits(s.info.formats());
            if rates == 0 || formats == 0 {
                kernel.log(
                    LogLevel::Warn,
                    format_args!("stream {id}: no rate or format Haiku can use; not published"),
                );
                return Ok(None);
            }
            Ok(Some(Side {
                stream: id,
                layout,
                rates,
                formats,
            }))
        };
        let output = side(output)?;
        let input = side(input)?;
        if output.is_none() && input.is_none() {
            return Err(Status::NOT_SUPPORTED);
        }
        let state = State {
            output: SideState::new(output.as_ref()),
            input: SideState::new(input.as_ref()),
            enabled: u64::MAX,
            ..Default::default()
        };
        let streams: Vec<u32> = output.iter().chain(&input).map(|s| s.stream).collect();
        let mixer = mix::Mixer::new(&engine, &streams);
        let state = SemMutex::new(&*kernel, "virtio_sound card", state)?;
        Ok(Card {
            engine,
            kernel,
            output,
            input,
            settings,
            state,
            mixer,
        })
    }

    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    pub fn engine(&self) -> &Arc<Engine<K, V>> {
        &self.engine
    }

    /// The directions the card has, the output first.
    fn sides(&self) -> impl Iterator<Item = &Side> {
        self.output.iter().chain(&self.input)
    }

    fn out_channels(&self) -> usize {
        self.output.as_ref().map_or(0, |s| s.layout.channels())
    }

    fn in_channels(&self) -> usize {
        self.input.as_ref().map_or(0, |s| s.layout.channels())
    }

    pub fn stats(&self) -> Stats {
        let xruns = self.sides().map(|s| self.engine.xruns(s.stream)).sum();
        match self.state.lock(&*self.kernel, LOCK_TIMEOUT) {
            Ok(st) => Stats {
                xruns,
                starved: st.starved,
                running: st.running,
            },
            Err(_) => Stats {
                xruns,
                ..Default::default()
            },
        }
    }

    /// Stops the streams and lets the buffers go: the last close. A stream whose device
    /// keeps buffers keeps its handle to their memory (logged), so the area outlives the
    /// card until the device gives them back, or for ever.
    pub fn shutdown(self) {
        let k = self.kernel.clone();
        let st = self.state.destroy(&*k);
        for s in self.output.iter().chain(&self.input) {
            let _ = self.engine.detach_stream(s.stream);
        }
        drop(st);
    }

    fn params_for(side: &Side, choice: Choice, frames: u32, count: u32) -> KResult<PcmParams> {
        let channels = side.layout.channels() as u32;
        let period_bytes = frames
            .checked_mul(channels * format::sample_bytes(choice.format))
            .ok_or(Status::BAD_VALUE)?;
        Ok(PcmParams {
            channels: channels as u8,
            format: choice.format,
            rate: choice.rate,
            period_bytes,
            periods: count,
        })
    }

    fn region(side: &Side, choice: Choice, frames: u32, offset: u64) -> KResult<Region> {
        let sample_bytes = format::sample_bytes(choice.format);
        let frame_bytes = sample_bytes * side.layout.channels() as u32;
        Ok(Region {
            offset,
            period_bytes: frames * frame_bytes,
            frame_bytes,
            sample_bytes,
        })
    }

    /// Stops both streams; playback may finish what is queued first.
    fn halt(&self, st: &mut State, drain: bool) -> KResult {
        let mut result = Ok(());
        if st.running {
            let primary = self.primary_stream();
            for s in self.sides() {
                let padding = self
                    .settings
                    .stop_padding_us
                    .unwrap_or(DEFAULT_STOP_PADDING_US);
                if let Err(e) = self.engine.halt_stream(s.stream, drain.then_some(padding)) {
                    // A secondary direction whose device keeps its buffers (logged by the
                    // stream) sits the next runs out; the card's result is the primary's.
                    if Some(s.stream) == primary || !self.kept(s.stream) {
                        result = Err(e);
                    }
                }
            }
            st.running = false;
            st.output.live = false;
            st.input.live = false;
            let dry = st.starved - st.starved_at_start;
            st.starved_at_start = st.starved;
            if dry > 0 {
                // An xrun as the device would report it: at an exchange, nothing was queued.
                self.kernel.log(
                    LogLevel::Warn,
                    format_args!(
                        "the device ran dry {dry} times in this run (the client was late)"
                    ),
                );
            }
            for d in [&mut st.output, &mut st.input] {
                d.base = d.report.frames;
            }
            st.input.report.cycle = -1;
            if result.is_ok() {
                // The next run queues every buffer before the client writes one: they must
                // not hold the end of this run.
                if let Err(e) = self.fill_silence(st, false) {
                    self.kernel.log(
                        LogLevel::Warn,
                        format_args!("cannot silence the buffers after a stop: {e}"),
                    );
                }
            }
        }
        result
    }

    /// Fills each direction's buffers with its format's silence (0x80 in unsigned 8-bit
    /// samples, 0 in the others): what the device plays, and the client reads, until the
    /// client writes them. Called only while no period is with the device. `fresh`: the
    /// area was just created, and so is zeroed already.
    fn fill_silence(&self, st: &State, fresh: bool) -> KResult {
        let Some(b) = st.buffers.as_ref() else {
            return Ok(());
        };
        for (region, fmt) in [(b.output, st.output.format), (b.input, st.input.format)] {
            let (Some(r), Some(choice)) = (region, fmt) else {
                continue;
            };
            let byte = silence_byte(choice.format);
            if fresh && byte == 0 {
                continue;
            }
            b.area.fill(
                r.offset,
                u64::from(r.period_bytes) * u64::from(b.count),
                byte,
            )?;
        }
        Ok(())
    }

    /// Where each direction's `count` buffers of `frames` frames go in one area (input after
    /// output, 128-byte aligned), and the bytes the area needs.
    fn plan(
        &self,
        st: &State,
        frames: u32,
        count: u32,
    ) -> KResult<(Option<Region>, Option<Region>, u64)> {
        let mut size = 0u64;
        let mut place = |side: &Option<Side>, fmt: Option<Choice>| -> KResult<_> {
            let (Some(s), Some(f)) = (side, fmt) else {
                return Ok(None);
            };
            let offset = size.div_ceil(128) * 128;
            let r = Self::region(s, f, frames, offset)?;
            size = offset + r.period_bytes as u64 * count as u64;
            Ok(Some(r))
        };
        let out = place(&self.output, st.output.format)?;
        let inp = place(&self.input, st.input.format)?;
        Ok((out, inp, size))
    }

    /// SET_PARAMS for both directions with their periods in `area`.
    fn configure(
        &self,
        st: &State,
        frames: u32,
        count: u32,
        area: &BufferArea,
        out: Option<Region>,
        inp: Option<Region>,
    ) -> KResult {
        for (side, fmt, region) in [
            (&self.output, st.output.format, out),
            (&self.input, st.input.format, inp),
        ] {
            if let (Some(s), Some(f), Some(r)) = (side, fmt, region) {
                let p = Self::params_for(s, f, frames, count)?;
                if let Err(e) = self.engine.set_params(s.stream, p, area, r.offset) {
                    // The client still gets this direction's buffers; its reports say no
                    // buffer is ready (cycle -1) while the stream sits the runs out.
                    if Some(s.stream) == self.primary_stream() || !self.kept(s.stream) {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Lays out `count` buffers of `frames` frames for both directions in one area, tells the
    /// device, and keeps the area. Each stream holds the memory its periods are in, so an
    /// area goes only when neither the card nor a stream the device may be using needs it.
    fn build_buffers(&self, st: &mut State, frames: u32, count: u32) -> KResult {
        self.halt(st, false)?;
        let (out, inp, size) = self.plan(st, frames, count)?;
        if size == 0 || size > 64 << 20 {
            return Err(Status::BAD_VALUE);
        }
        let area = BufferArea::new(&self.kernel, "virtio_sound buffers", size as usize)?;
        if let Err(e) = self.configure(st, frames, count, &area, out, inp) {
            // One direction may now have its periods in the new area and the other in the
            // old: neither matches what the client was told, so the client gets no buffers
            // until it asks again. Each stream keeps the memory it is configured with.
            st.buffers = None;
            st.stale = false;
            return Err(e);
        }
        st.buffers = Some(Buffers {
            area,
            count,
            frames,
            output: out,
            input: inp,
        });
        st.stale = false;
        if let Err(e) = self.fill_silence(st, true) {
            st.buffers = None;
            return Err(e);
        }
        Ok(())
    }

    fn frames_for(&self, st: &State, requested: u32) -> u32 {
        if (MIN_FRAMES..=MAX_FRAMES).contains(&requested) {
            return requested;
        }
        if self.settings.frames_per_buffer != 0 {
            return self
                .settings
                .frames_per_buffer
                .clamp(MIN_FRAMES, MAX_FRAMES);
        }
        // With no direction there is nothing to size: the smallest buffer will do.
        st.hz().map_or(MIN_FRAMES, format::default_frames)
    }

    fn write_descs(
        &self,
        table: UserPtr<UserPtr<hm::BufferDesc>>,
        b: &Buffers,
        r: Region,
        channels: usize,
    ) -> KResult {
        for i in 0..b.count as usize {
            let descs: UserPtr<hm::BufferDesc> = user::read_at(&*self.kernel, table, i)?;
            for c in 0..channels {
                let base = b.area.user_addr()
                    + r.offset
                    + i as u64 * r.period_bytes as u64
                    + c as u64 * r.sample_bytes as u64;
                let d = hm::BufferDesc {
                    base: UserPtr::from_addr(base),
                    stride: r.frame_bytes as u64,
                    ..Default::default()
                };
                user::write_fields(
                    &*self.kernel,
                    user::element(descs, c)?,
                    &d,
                    hm::BufferDesc::DRIVER_WRITES,
                )?;
            }
        }
        Ok(())
    }

    /// Whether the device kept `stream`'s buffers past RELEASE (and its grace).
    fn kept(&self, stream: u32) -> bool {
        self.engine
            .stream(stream)
            .is_some_and(|s| s.kept_after_release(&*self.kernel))
    }

    fn primary_stream(&self) -> Option<u32> {
        self.output
            .as_ref()
            .or(self.input.as_ref())
            .map(|s| s.stream)
    }
}

#[macros::ioctl_table]
impl<K: Kernel, V: VirtioDevice> Card<K, V> {
    #[ioctl(GetDescription)]
    fn get_description(&self, d: &mut hm::MultiDescription) -> KResult {
        let (o, i) = (self.out_channels(), self.in_channels());
        let mut list = Vec::with_capacity(2 * (o + i));
        let designs = |s: &Option<Side>| {
            s.as_ref()
                .map(|s| s.layout.designations.clone())
                .unwrap_or_default()
        };
        let (od, id) = (designs(&self.output), designs(&self.input));
        // Channels numbered in order: output channels, input channels, output buses, input
        // buses.
        for (designations, kind, connectors) in [
            (&od, hm::B_MULTI_OUTPUT_CHANNEL, 0),
            (&id, hm::B_MULTI_INPUT_CHANNEL, 0),
            (&od, hm::B_MULTI_OUTPUT_BUS, hm::B_CHANNEL_MINI_JACK_STEREO),
            (&id, hm::B_MULTI_INPUT_BUS, hm::B_CHANNEL_MINI_JACK_STEREO),
        ] {
            for d in designations {
                let n = list.len() as i32;
                list.push(channels::channel_info(n, kind, *d, connectors));
            }
        }
        let room = d.request_channel_count.max(0) as usize;
        if room > 0 && d.channels.is_null() {
            return Err(Status::BAD_ADDRESS);
        }
        for (n, c) in list.iter().take(room).enumerate() {
            user::write_fields(
                &*self.kernel,
                user::element(d.channels, n)?,
                c,
                hm::MultiChannelInfo::DRIVER_WRITES,
            )?;
        }
        let st = self.state.lock(&*self.kernel, LOCK_TIMEOUT)?;
        d.interface_version = hm::B_CURRENT_INTERFACE_VERSION;
        d.interface_minimum = hm::B_MINIMUM_INTERFACE_VERSION;
        d.friendly_name = name_bytes("Virtio Sound");
        d.vendor_info = name_bytes("virtio-snd");
        d.output_channel_count = o as i32;
        d.input_channel_count = i as i32;
        d.output_bus_channel_count = o as i32;
        d.input_bus_channel_count = i as i32;
        d.aux_bus_channel_count = 0;
        d.output_rates = self.output.as_ref().map_or(0, |s| s.rates);
        d.input_rates = self.input.as_ref().map_or(0, |s| s.rates);
        d.min_cvsr_rate = 0.0;
        d.max_cvsr_rate = 0.0;
        d.output_formats = self.output.as_ref().map_or(0, |s| s.formats);
        d.input_formats = self.input.as_ref().map_or(0, |s| s.formats);
        d.lock_sources = hm::B_MULTI_LOCK_INTERNAL;
        d.timecode_sources = 0;
        d.interface_flags = (if o > 0 {
            hm::B_MULTI_INTERFACE_PLAYBACK
        } else {
            0
        }) | (if i > 0 {
            hm::B_MULTI_INTERFACE_RECORD
        } else {
            0
        });
        let frames = self.frames_for(&st, 0) as i64;
        d.start_latency = st.hz().map_or(0, |hz| frames * 1_000_000 / i64::from(hz));
        d.control_panel = [0; 64];
        Ok(())
    }

    #[ioctl(GetEnabledChannels)]
    fn get_enabled_channels(&self, e: &mut hm::MultiChannelEnable) -> KResult {
        let n = self.out_channels() + self.in_channels();
        let st = self.state.lock(&*self.kernel, LOCK_TIMEOUT)?;
        let bits = st.enabled.to_le_bytes();
        drop(st);
        if n > 0 {
            let bytes = n.div_ceil(8);
            if e.enable_bits.is_null() || !e.enable_bits.is_user_range(bytes as u64) {
                return Err(Status::BAD_ADDRESS);
            }
            let mut out = [0u8; 8];
            out[..bytes].copy_from_slice(&bits[..bytes]);
            if !n.is_multiple_of(8) {
                out[bytes - 1] &= (1u8 << (n % 8)) - 1;
            }
            self.kernel
                .copy_to_user(e.enable_bits.addr(), &out[..bytes])?;
        }
        e.lock_source = hm::B_MULTI_LOCK_INTERNAL;
        e.lock_data = 0;
        e.timecode_source = 0;
        Ok(())
    }

    #[ioctl(SetEnabledChannels)]
    fn set_enabled_channels(&self, e: &hm::MultiChannelEnable) -> KResult {
        let n = self.out_channels() + self.in_channels();
        let bytes = n.div_ceil(8);
        let mut bits = [0u8; 8];
        if bytes > 0 {
            if e.enable_bits.is_null() || !e.enable_bits.is_user_range(bytes as u64) {
                return Err(Status::BAD_ADDRESS);
            }
            self.kernel
                .copy_from_user(&mut bits[..bytes], e.enable_bits.addr())?;
        }
        // Every channel is carried in the interleaved stream either way; the bits are kept
        // so GET_ENABLED_CHANNELS answers what was set.
        let mut st = self.state.lock(&*self.kernel, LOCK_TIMEOUT)?;
        st.enabled = u64::from_le_bytes(bits);
        Ok(())
    }

    #[ioctl(GetGlobalFormat)]
    fn get_global_format(&self, f: &mut hm::MultiFormatInfo) -> KResult {
        let st = self.state.lock(&*self.kernel, LOCK_TIMEOUT)?;
        let fill = |fmt: Option<Choice>| hm::MultiFormat {
            rate: fmt.map_or(0, |c| c.rate_bit),
            cvsr: 0.0,
            format: fmt.map_or(0, |c| c.format_bit),
            ..Default::default()
        };
        f.output = fill(st.output.format);
        f.input = fill(st.input.format);
        let latency = |fmt: Option<Choice>| -> i64 {
            let Some(choice) = fmt else {
                return 0;
            };
            let hz = i64::from(choice.hz());
            let (frames, count) = st
                .buffers
                .as_ref()
                .map_or((self.frames_for(&st, 0), format::DEFAULT_BUFFERS), |b| {
                    (b.frames, b.count)
                });
            frames as i64 * count as i64 * 1_000_000 / hz
        };
        f.output_latency = latency(st.output.format);
        f.input_latency = latency(st.input.format);
        f.timecode_kind = 0;
        Ok(())
    }

    #[ioctl(SetGlobalFormat)]
    fn set_global_format(&self, f: &hm::MultiFormatInfo) -> KResult {
        let check = |side: &Option<Side>, fmt: &hm::MultiFormat| -> KResult<Option<Choice>> {
            let Some(s) = side else { return Ok(None) };
            if !single_bit(fmt.rate)
                || s.rates & fmt.rate == 0
                || !single_bit(fmt.format)
                || s.formats & fmt.format == 0
            {
                return Err(Status::BAD_VALUE);
            }
            Choice::new(fmt.rate, fmt.format)
                .map(Some)
                .ok_or(Status::BAD_VALUE)
        };
        let out = check(&self.output, &f.output)?;
        let inp = check(&self.input, &f.input)?;
        let mut st = self.state.lock(&*self.kernel, LOCK_TIMEOUT)?;
        if out == st.output.format && inp == st.input.format {
            return Ok(());
        }
        // A new format while streaming: stop, and keep the buffers until the client asks
        // for new ones (it does, right after).
        let halted = self.halt(&mut st, false);
        st.output.format = out;
        st.input.format = inp;
        if st.buffers.is_some() {
            st.stale = true;
        }
        halted
    }

    #[ioctl(GetBuffers)]
    fn get_buffers(&self, l: &mut hm::MultiBufferList) -> KResult {
        let mut st = self.state.lock(&*self.kernel, LOCK_TIMEOUT)?;
        let requested = if self.output.is_some() {
            l.request_playback_buffer_size
        } else {
            l.request_record_buffer_size
        };
        let frames = self.frames_for(&st, requested);
        let room = |n: i32| n.clamp(0, MAX_PERIODS as i32) as u32;
        let mut count = if self.settings.buffer_count != 0 {
            self.settings.buffer_count.clamp(2, MAX_PERIODS as u32)
        } else {
            format::DEFAULT_BUFFERS
        };
        if self.output.is_some() {
            count = count.min(room(l.request_playback_buffers));
            if (l.request_playback_channels.max(0) as usize) < self.out_channels() {
                return Err(Status::BAD_VALUE);
            }
        }
        if self.input.is_some() {
            count = count.min(room(l.request_record_buffers));
            if (l.request_record_channels.max(0) as usize) < self.in_channels() {
                return Err(Status::BAD_VALUE);
            }
        }
        if count < 2 {
            return Err(Status::BAD_VALUE);
        }
        self.build_buffers(&mut st, frames, count)?;
        let Some(b) = st.buffers.as_ref() else {
            return Err(Status::ERROR);
        };
        let written = [
            (l.playback_buffers, b.output, self.out_channels()),
            (l.record_buffers, b.input, self.in_channels()),
        ]
        .into_iter()
        .try_for_each(|(table, region, channels)| {
            region.map_or(Ok(()), |r| self.write_descs(table, b, r, channels))
        });
        if let Err(e) = written {
            // The client cannot know these buffers: drop them rather than stream into them.
            st.buffers = None;
            return Err(e);
        }
        let Some(b) = st.buffers.as_ref() else {
            return Err(Status::ERROR);
        };
        l.return_playback_buffers = if b.output.is_some() {
            b.count as i32
        } else {
            0
        };
        l.return_playback_channels = self.out_channels() as i32;
        l.return_playback_buffer_size = if b.output.is_some() { b.frames } else { 0 };
        l.return_record_buffers = if b.input.is_some() { b.count as i32 } else { 0 };
        l.return_record_channels = self.in_channels() as i32;
        l.return_record_buffer_size = if b.input.is_some() { b.frames } else { 0 };
        Ok(())
    }

    #[ioctl(BufferExchange)]
    fn buffer_exchange(&self, info: &mut hm::MultiBufferInfo) -> KResult {
        let k = &*self.kernel;
        let mut st = self.state.lock(k, LOCK_TIMEOUT)?;
        // Buffers are laid out only for a direction with a rate.
        let (Some(b), Some(hz)) = (st.buffers.as_ref(), st.hz()) else {
            drop(st);
            // The client ignores errors and would spin: never fail fast.
            k.snooze(10_000);
            return Err(Status::NO_INIT);
        };
        let (count, frames) = (b.count, b.frames as i64);
        let period = frames * 1_000_000 / i64::from(hz);
        if self.engine.is_removed() {
            // Nothing will complete again; the client ignores errors: fail, a period apart.
            drop(st);
            k.snooze(period.clamp(1_000, 100_000));
            return Err(Status::DEV_NOT_READY);
        }
        if let Err(e) = self.exchange_start(&mut st) {
            drop(st);
            k.snooze(period.clamp(1_000, 100_000));
            return Err(e);
        }
        let (c, due, now) = self.exchange_wait(period)?;
        self.exchange_report(&mut st, (c, due, now), (count, frames, period), info);
        Ok(())
    }

    /// An exchange's first step: lays the buffers out again after a format change, then
    /// starts the streams (the run's first exchange; starting queues every buffer) or queues
    /// the buffer the client filled since the last exchange, counting the exchanges that
    /// found the device with nothing queued. A stream that cannot start or be refilled
    /// halts the run.
    fn exchange_start(&self, st: &mut State) -> KResult {
        if st.stale {
            // New format, old buffers: lay them out again in place if they fit.
            // (relayout refuses when the new layout does not fit the old area.)
            self.relayout(st)?;
        }
        let primary = self.primary_stream();
        let result = if !st.running {
            let mut r = Ok(());
            // Capture starts first: on a device that keeps time its periods then end just
            // before the playback periods of the same number, and each exchange finds the
            // capture period in step with the playback period that woke it already there.
            for s in self.input.iter().chain(&self.output) {
                let live = if Some(s.stream) != primary && self.kept(s.stream) {
                    // The device still holds this direction's buffers from an earlier run
                    // (vhost-device-sound's null backend never hands capture back): the
                    // run goes without it rather than fail or wait for them.
                    self.kernel.log(
                        LogLevel::Warn,
                        format_args!(
                            "stream {}: the device still holds its buffers; this run goes without it",
                            s.stream
                        ),
                    );
                    false
                } else if let Err(e) = self.engine.start_stream(s.stream) {
                    r = Err(e);
                    break;
                } else {
                    true
                };
                if self.output.as_ref().is_some_and(|o| o.stream == s.stream) {
                    st.output.live = live;
                } else {
                    st.input.live = live;
                }
            }
            if r.is_ok() {
                st.running = true;
            }
            r
        } else {
            let mut r = Ok(());
            let live = [(&self.output, st.output.live), (&self.input, st.input.live)];
            for (side, live) in live {
                let Some(s) = side.as_ref().filter(|_| live) else {
                    continue;
                };
                // The refill says how many periods the device still had.
                match self.engine.refill(s.stream) {
                    Ok(0) => st.starved += 1,
                    Ok(_) => {}
                    Err(e) => r = Err(e),
                }
            }
            r
        };
        if result.is_err() {
            let _ = self.halt(st, false);
        }
        result
    }

    /// An exchange's second step: waits for the next period of the primary stream (the
    /// output's, else the input's) to complete, for four periods and at least 50 ms, and
    /// then, if it came early, until the earliest instant it can have been played
    /// ([`Completion::earliest_end`], which it also returns). A device that completes
    /// buffers as soon as it has them (vhost-device-sound's null backend completes
    /// playback as it is queued) would otherwise hand the client buffers as fast as it can
    /// fill them, and `played_frames_count` would run ahead of real time without bound.
    /// This is how Haiku's own `null` audio driver keeps time without hardware
    /// (`null_fake_interrupt` in `src/add-ons/kernel/drivers/audio/null/null_hardware.c`
    /// exchanges one buffer per buffer length of `snooze`). A device that keeps time
    /// completes each period at that instant or later, and is never held back. Also returns
    /// the time it is then, if it read the clock: it does not when the interrupt's timestamp
    /// of the completion is already past the earliest end (the common case), since the time
    /// now is later still.
    ///
    /// [`Completion::earliest_end`]: crate::virtio::pcm::Completion::earliest_end
    fn exchange_wait(&self, period: i64) -> KResult<(Completion, i64, Option<i64>)> {
        let k = &*self.kernel;
        let primary = self.primary_stream().ok_or(Status::NO_INIT)?;
        let stream = self.engine.stream(primary).ok_or(Status::NO_INIT)?;
        let timeout = (4 * period).max(50_000);
        let c = stream.next_completion(k, timeout)?;
        let due = c.earliest_end;
        if due <= c.time {
            return Ok((c, due, None));
        }
        // Never more than the completion timeout (the wait is one period in practice).
        let now = k.system_time();
        let wait = (due - now).min(timeout);
        if wait <= 0 {
            return Ok((c, due, Some(now)));
        }
        k.snooze(wait);
        Ok((c, due, Some(k.system_time())))
    }

    /// An exchange's last step, at `now` if the caller read the clock: counts the completed
    /// period `c` of the primary stream (and,
    /// on a duplex card, the input's next one, if it has come and can have been captured
    /// by now; the one in step with `c` is waited for, half a `period` at most:
    /// [`completion_in_step`]) in each direction's report, and fills `info` from
    /// the reports. `count` buffers of `frames` frames last `period` µs each. Playback
    /// reports the buffer after the completed one (the one the client fills next) and its
    /// time plus the device's latency, but never before `due`, the earliest instant the
    /// period can have been played. A direction that is not live reports what it last did
    /// (cycle -1 after a stop: no buffer for the client to read).
    ///
    /// [`completion_in_step`]: crate::virtio::pcm::PcmStream::completion_in_step
    fn exchange_report(
        &self,
        st: &mut State,
        (c, due, now): (Completion, i64, Option<i64>),
        (count, frames, period): (u32, i64, i64),
        info: &mut hm::MultiBufferInfo,
    ) {
        if self.output.is_some() {
            let fb = st
                .buffers
                .as_ref()
                .and_then(|b| b.output)
                .map_or(0, |r| r.frame_bytes);
            let latency = match st.output.format {
                Some(choice) if fb > 0 => {
                    c.latency_bytes as i64 / fb as i64 * 1_000_000 / i64::from(choice.hz())
                }
                _ => 0,
            };
            let cycle = (c.buffer + 1) % count;
            st.output
                .complete(cycle, (c.time + latency).max(due), c.seq, frames);
        }
        if let Some(inp) = self.input.as_ref().filter(|_| st.input.live) {
            let rc = if self.output.is_none() {
                Some((c, due))
            } else {
                // A device may complete capture a little after playback: QEMU fills capture
                // buffers in `virtio_snd_pcm_in_cb` (hw/audio/virtio-snd.c), the capture
                // voice's callback, which `audio_run_in` (audio/audio.c) calls from the
                // audio timer (every `timer-period` µs, 10 ms by default). Wait for the
                // capture period in step with this playback period, half a period at most.
                let k = &*self.kernel;
                let now = now.unwrap_or_else(|| k.system_time());
                self.engine.stream(inp.stream).and_then(|s| {
                    let rc = s.completion_in_step(k, now, c.seq, period / 2)?;
                    Some((rc, rc.earliest_end))
                })
            };
            if let Some((rc, due)) = rc {
                st.input
                    .complete(rc.buffer, rc.time.max(due), rc.seq, frames);
            }
        }
        if self.output.is_some() {
            info.played_real_time = st.output.report.time;
            info.played_frames_count = st.output.report.frames;
            info.playback_buffer_cycle = st.output.report.cycle;
        }
        if self.input.is_some() {
            info.recorded_real_time = st.input.report.time;
            info.recorded_frames_count = st.input.report.frames;
            info.record_buffer_cycle = st.input.report.cycle;
        }
    }

    #[ioctl(BufferForceStop)]
    fn buffer_force_stop(&self) -> KResult {
        let mut st = self.state.lock(&*self.kernel, LOCK_TIMEOUT)?;
        // The client filled one more buffer after its last exchange: queue it, let all it
        // handed over play out, then stop. The buffers stay for the next exchange.
        if st.running {
            if let Some(o) = &self.output {
                let _ = self.engine.refill(o.stream);
            }
        }
        self.halt(&mut st, true)
    }

    #[ioctl(ListMixControls)]
    fn list_mix_controls(&self, m: &mut hm::MultiMixControlInfo) -> KResult {
        let controls = self.mixer.controls();
        if m.control_count < 0 || (m.control_count as usize) < controls.len() {
            return Err(Status::BAD_VALUE);
        }
        if !controls.is_empty() && m.controls.is_null() {
            return Err(Status::BAD_ADDRESS);
        }
        for (i, c) in controls.iter().enumerate() {
            user::write_at(&*self.kernel, m.controls, i, c)?;
        }
        m.control_count = controls.len() as i32;
        Ok(())
    }

    #[ioctl(GetMix)]
    fn get_mix(&self, v: &hm::MultiMixValueInfo) -> KResult {
        if !(0..=mix::MAX_VALUES).contains(&v.item_count) {
            return Err(Status::BAD_VALUE);
        }
        for i in 0..v.item_count as usize {
            let p = user::element(v.values, i)?;
            let mut value: hm::MultiMixValue = user::read(&*self.kernel, p)?;
            self.mixer.get(&self.engine, &mut value)?;
            user::write_fields(&*self.kernel, p, &value, hm::MultiMixValue::DRIVER_WRITES)?;
        }
        Ok(())
    }

    #[ioctl(SetMix)]
    fn set_mix(&self, v: &hm::MultiMixValueInfo) -> KResult {
        if !(0..=mix::MAX_VALUES).contains(&v.item_count) {
            return Err(Status::BAD_VALUE);
        }
        for i in 0..v.item_count as usize {
            let value: hm::MultiMixValue = user::read_at(&*self.kernel, v.values, i)?;
            self.mixer.set(&self.engine, &value)?;
        }
        Ok(())
    }

    #[ioctl(ListMixChannels)]
    fn list_mix_channels(&self, m: &mut hm::MultiMixChannelInfo) -> KResult {
        // Controls are not tied to channels here; the client never asks.
        m.actual_count = 0;
        Ok(())
    }

    #[ioctl(ListMixConnections)]
    fn list_mix_connections(&self, m: &mut hm::MultiMixConnectionInfo) -> KResult {
        m.actual_count = 0;
        Ok(())
    }
}

impl<K: Kernel, V: VirtioDevice> Card<K, V> {
    /// Applies the current format to the existing buffers (same area, same frames and count).
    fn relayout(&self, st: &mut State) -> KResult {
        let Some(b) = st.buffers.take() else {
            return Err(Status::NO_INIT);
        };
        let planned = self.plan(st, b.frames, b.count);
        let result = planned.and_then(|(out, inp, size)| {
            if size > b.area.len() as u64 {
                return Err(Status::NO_INIT);
            }
            self.configure(st, b.frames, b.count, &b.area, out, inp)?;
            Ok((out, inp))
        });
        let (out, inp) = match result {
            Ok(regions) => regions,
            Err(e) => {
                st.buffers = Some(b);
                return Err(e);
            }
        };
        st.buffers = Some(Buffers {
            output: out,
            input: inp,
            ..b
        });
        st.stale = false;
        // The buffers hold samples of the old format: noise in the new one.
        self.fill_silence(st, false)
    }
}
