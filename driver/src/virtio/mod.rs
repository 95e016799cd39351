//! The virtio-snd engine: feature negotiation, the init queries in the spec's order, the
//! event queue, interrupt dispatch, and the device's streams, jacks, channel maps and
//! control elements.

pub mod control;
pub mod pcm;

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use spec::virtio_snd::{
    requests, ChmapInfo, Config, CtlAccess, CtlHdr, CtlInfo, CtlType, CtlValue, DeviceEvent,
    JackInfo, PcmInfo, QueryInfo, QueueIndex, Request,
};
use zerocopy::little_endian::U32 as Le32;
use zerocopy::IntoBytes;

use control::ControlChannel;
use pcm::{Io, PcmStream};
use platform::dma::DmaRegion;
use platform::sync::Late;
use platform::{KResult, Kernel, LogLevel, QueueHandler, Status, VirtioDevice};

/// `VIRTIO_F_VERSION_1`.
pub const FEATURE_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_SND_F_CTLS`.
pub const FEATURE_CTLS: u64 = 1 << spec::virtio_snd::VIRTIO_SND_F_CTLS;

/// More items than any real device has: a config claiming more is refused as garbage.
pub const MAX_ITEMS: u32 = 256;
/// Event buffers kept posted.
const EVENT_BUFFERS: usize = 16;
/// The reply room of one control slot bounds a batch of info items.
const BATCH_BYTES: usize = control::REPLY_MAX - 4;

/// Tunables of the engine.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// How long a control request may take before it fails with `B_DEV_TIMEOUT`.
    pub control_timeout_micros: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            control_timeout_micros: 1_000_000,
        }
    }
}

/// One control element: its description, enum item names, TLV metadata and cached value.
#[derive(Debug)]
pub struct Control {
    pub id: u32,
    pub info: CtlInfo,
    pub name: String,
    pub items: Vec<String>,
    pub tlv: Option<Vec<u8>>,
    /// Set by a CTL_NOTIFY event: the cached value is stale.
    pub stale: AtomicBool,
}

impl Control {
    pub fn kind(&self) -> Option<CtlType> {
        self.info.r#type().ok()
    }
}

/// The device after initialisation.
pub struct Engine<K: Kernel, V: VirtioDevice> {
    pub kernel: Arc<K>,
    pub dev: Arc<V>,
    pub features: u64,
    /// The device's config space (virtio spec 5.14.4, `struct virtio_snd_config`): how many
    /// jacks, PCM streams, channel maps and control elements it has; `controls` is 0 unless
    /// `VIRTIO_SND_F_CTLS` was negotiated.
    pub config: Config,
    control: ControlChannel,
    events: DmaRegion,
    topology: Late<Topology>,
    bad_events: AtomicU32,
}

/// What the info queries found; fixed once the engine is up.
#[derive(Debug, Default)]
pub struct Topology {
    pub jacks: Vec<JackInfo>,
    jack_connected: Vec<AtomicBool>,
    pub chmaps: Vec<ChmapInfo>,
    pub streams: Vec<PcmStream>,
    xruns: Vec<AtomicU32>,
    pub controls: Vec<Control>,
}

impl<K: Kernel, V: VirtioDevice> core::fmt::Debug for Engine<K, V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("features", &self.features)
            .field("config", &self.config)
            .finish()
    }
}

/// Hands queue interrupts to the engine without keeping it alive: the device holds this,
/// and the engine outlives every interrupt because it frees the interrupts before it goes.
struct Dispatch<K: Kernel, V: VirtioDevice> {
    engine: alloc::sync::Weak<Engine<K, V>>,
}

impl<K: Kernel, V: VirtioDevice> QueueHandler for Dispatch<K, V> {
    fn queue_interrupt(&self, queue: u16) {
        if let Some(e) = self.engine.upgrade() {
            e.interrupt(queue);
        }
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes[..end]
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

impl<K: Kernel, V: VirtioDevice> Engine<K, V> {
    /// Brings the device up: negotiate, read the config, set up queues and interrupts, run
    /// the info queries, and stock the event queue. On any failure everything is undone.
    pub fn start(kernel: Arc<K>, dev: Arc<V>, options: Options) -> KResult<Arc<Self>> {
        let k = &*kernel;
        let features = dev.negotiate_features(FEATURE_VERSION_1 | FEATURE_CTLS)?;
        if features & FEATURE_VERSION_1 == 0 {
            k.log(
                LogLevel::Error,
                format_args!("device does not offer VIRTIO_F_VERSION_1"),
            );
            return Err(Status::NOT_SUPPORTED);
        }
        // Without VIRTIO_SND_F_CTLS the config space is 12 bytes and `controls` stays 0.
        let mut config = Config::default();
        let len = if features & FEATURE_CTLS != 0 { 16 } else { 12 };
        dev.read_device_config(0, &mut config.as_mut_bytes()[..len])?;
        let counts = [
            config.jacks.get(),
            config.streams.get(),
            config.chmaps.get(),
            config.controls.get(),
        ];
        let [jacks, streams, chmaps, controls] = counts;
        k.log(
            LogLevel::Info,
            format_args!(
                "virtio_sound: {jacks} jacks, {streams} streams, {chmaps} chmaps, {controls} controls"
            ),
        );
        if counts.iter().any(|&n| n > MAX_ITEMS) {
            k.log(
                LogLevel::Error,
                format_args!(
                    "device config is not plausible: ({jacks}, {streams}, {chmaps}, {controls})"
                ),
            );
            return Err(Status::BAD_DATA);
        }
        dev.alloc_queues(4)?;
        let control = match ControlChannel::new(k, options.control_timeout_micros) {
            Ok(c) => c,
            Err(e) => {
                // Nothing was queued yet: whether the reset is confirmed changes nothing.
                let _ = dev.free_queues();
                return Err(e);
            }
        };
        let events = match DmaRegion::new(k, "virtio_sound events", EVENT_BUFFERS * 8) {
            Ok(r) => r,
            Err(e) => {
                let reset = dev.free_queues().is_ok();
                control.destroy(k, reset);
                return Err(e);
            }
        };
        let engine = Arc::new(Engine {
            kernel: kernel.clone(),
            dev: dev.clone(),
            features,
            config,
            control,
            events,
            topology: Late::new(),
            bad_events: AtomicU32::new(0),
        });
        let handler: Arc<dyn QueueHandler> = Arc::new(Dispatch {
            engine: Arc::downgrade(&engine),
        });
        if let Err(e) = dev.setup_interrupts(handler) {
            Self::teardown(engine);
            return Err(e);
        }
        match engine.query_all() {
            Ok(()) => {}
            Err(e) => {
                Self::teardown(engine);
                return Err(e);
            }
        }
        if let Err(e) = engine.post_events() {
            Self::teardown(engine);
            return Err(e);
        }
        Ok(engine)
    }

    fn io(&self) -> Io<'_, K, V> {
        Io {
            kernel: &*self.kernel,
            dev: &*self.dev,
            control: &self.control,
        }
    }

    fn query_all(&self) -> KResult {
        let engine = self;
        let cfg = &engine.config;
        let jack_list: Vec<JackInfo> = engine.query_items(
            |request| requests::JackInfo { request },
            cfg.jacks.get(),
            true,
        )?;
        let pcm: Vec<PcmInfo> = engine.query_items(
            |request| requests::PcmInfo { request },
            cfg.streams.get(),
            false,
        )?;
        let maps: Vec<ChmapInfo> = engine.query_items(
            |request| requests::ChmapInfo { request },
            cfg.chmaps.get(),
            true,
        )?;
        let ctls: Vec<CtlInfo> = if engine.features & FEATURE_CTLS != 0 {
            engine.query_items(
                |request| requests::CtlInfo { request },
                cfg.controls.get(),
                true,
            )?
        } else {
            Vec::new()
        };
        let mut ctl_list = Vec::new();
        for (i, info) in ctls.into_iter().enumerate() {
            ctl_list.push(engine.describe_control(i as u32, info));
        }
        let k = engine.kernel.clone();
        let mut stream_list = Vec::new();
        for (i, info) in pcm.into_iter().enumerate() {
            match PcmStream::new(&*k, i as u32, info) {
                Ok(s) => stream_list.push(s),
                Err(e) => {
                    for s in stream_list {
                        // Nothing was queued yet, and the reset comes later in teardown.
                        PcmStream::destroy(s, &*k, true);
                    }
                    return Err(e);
                }
            }
        }
        let topology = Topology {
            jack_connected: jack_list
                .iter()
                .map(|j| AtomicBool::new(j.connected != 0))
                .collect(),
            jacks: jack_list,
            xruns: stream_list.iter().map(|_| AtomicU32::new(0)).collect(),
            streams: stream_list,
            chmaps: maps,
            controls: ctl_list,
        };
        if let Err(t) = self.topology.set(topology) {
            for s in t.streams {
                PcmStream::destroy(s, &*k, true);
            }
            return Err(Status::ERROR);
        }
        Ok(())
    }

    /// An info query for `total` items, in batches that fit one reply. With `optional`, a
    /// device that does not support the query (QEMU's jacks and chmaps) gives no items.
    fn query_items<Q, T>(
        &self,
        query: impl Fn(QueryInfo) -> Q,
        total: u32,
        optional: bool,
    ) -> KResult<Vec<T>>
    where
        Q: for<'r> Request<Response<'r> = &'r [T]>,
        T: Copy + 'static,
    {
        let code = query(QueryInfo::default()).message().code();
        let size = core::mem::size_of::<T>();
        let per_batch = (BATCH_BYTES / size) as u32;
        let mut out = Vec::new();
        let mut start = 0;
        while start < total {
            let count = per_batch.min(total - start);
            let q = QueryInfo {
                start_id: Le32::new(start),
                count: Le32::new(count),
                size: Le32::new(size as u32),
                ..Default::default()
            };
            let io = self.io();
            let got = io.call(&query(q), |items| items.to_vec());
            match got {
                Ok(items) => out.extend(items),
                Err(Status::NOT_SUPPORTED) if optional => {
                    self.kernel.log(
                        LogLevel::Warn,
                        format_args!("{code:?} not supported by the device; assuming none"),
                    );
                    return Ok(Vec::new());
                }
                Err(e) => {
                    self.kernel.log(
                        LogLevel::Error,
                        format_args!("{code:?} {start}+{count} failed: {e}"),
                    );
                    return Err(e);
                }
            }
            start += count;
        }
        Ok(out)
    }

    fn describe_control(&self, id: u32, info: CtlInfo) -> Control {
        let name = c_string(&info.name);
        let mut items = Vec::new();
        let hdr = CtlHdr {
            control_id: Le32::new(id),
            ..Default::default()
        };
        if info.r#type() == Ok(CtlType::Enumerated) {
            let n = info.value.enumerated().items.get().min(128);
            let io = self.io();
            let req = requests::CtlEnumItems {
                request: hdr,
                items: n,
            };
            match io.call(&req, |list| {
                list.iter().map(|i| c_string(&i.item)).collect()
            }) {
                Ok(list) => items = list,
                Err(e) => self.kernel.log(
                    LogLevel::Warn,
                    format_args!("control {id} ({name}): enum items: {e}"),
                ),
            }
        }
        let mut tlv = None;
        if info.access().contains(CtlAccess::TlvRead) {
            let io = self.io();
            let req = requests::CtlTlvRead {
                request: hdr,
                max_value_len: 256,
            };
            match io.call(&req, |t| t.to_vec()) {
                Ok(t) => tlv = Some(t),
                Err(e) => self.kernel.log(
                    LogLevel::Warn,
                    format_args!("control {id} ({name}): TLV: {e}"),
                ),
            }
        }
        Control {
            id,
            info,
            name,
            items,
            tlv,
            stale: AtomicBool::new(true),
        }
    }

    fn topo(&self) -> &Topology {
        static EMPTY: Topology = Topology {
            jacks: Vec::new(),
            jack_connected: Vec::new(),
            chmaps: Vec::new(),
            streams: Vec::new(),
            xruns: Vec::new(),
            controls: Vec::new(),
        };
        self.topology.get().unwrap_or(&EMPTY)
    }

    pub fn jacks(&self) -> &[JackInfo] {
        &self.topo().jacks
    }

    pub fn chmaps(&self) -> &[ChmapInfo] {
        &self.topo().chmaps
    }

    pub fn streams(&self) -> &[PcmStream] {
        &self.topo().streams
    }

    pub fn controls(&self) -> &[Control] {
        &self.topo().controls
    }

    /// Reads a control element's value.
    pub fn read_control(&self, id: u32) -> KResult<CtlValue> {
        let c = self.controls().get(id as usize).ok_or(Status::BAD_VALUE)?;
        let io = self.io();
        let req = requests::CtlRead {
            request: CtlHdr {
                control_id: Le32::new(id),
                ..Default::default()
            },
        };
        let v = io.call(&req, |v| *v)?;
        c.stale.store(false, Ordering::Relaxed);
        Ok(v)
    }

    /// Writes a control element's value.
    pub fn write_control(&self, id: u32, value: &CtlValue) -> KResult {
        if self.controls().get(id as usize).is_none() {
            return Err(Status::BAD_VALUE);
        }
        let io = self.io();
        io.control(&requests::CtlWrite {
            request: CtlHdr {
                control_id: Le32::new(id),
                ..Default::default()
            },
            payload: *value,
        })
    }

    fn post_events(&self) -> KResult {
        let qsize = self.dev.queue_size(QueueIndex::Event as u16) as usize;
        for slot in 0..EVENT_BUFFERS.min(qsize.max(1)) {
            self.post_event(slot)?;
        }
        Ok(())
    }

    fn post_event(&self, slot: usize) -> KResult {
        let entry = self.events.entry(slot * 8, 8)?;
        // SAFETY: the entry is in `self.events`, which is freed only in `teardown`, after
        // `free_queues` reset the device (and leaked if the reset is not confirmed).
        unsafe {
            self.dev
                .queue_request(QueueIndex::Event as u16, &[entry], 0, slot as u64)
        }
    }

    /// The queue interrupt: drain the used ring, record, wake. Never blocks or allocates.
    fn interrupt(&self, queue: u16) {
        let k = &*self.kernel;
        let Some(q) = QueueIndex::from_raw(queue) else {
            return;
        };
        // A few at a time: the queue is serialised once per batch (one interrupt brings one
        // period in the common case), and each chain is handled outside that.
        let mut batch = [(0u64, 0u32); 8];
        loop {
            let n = self.dev.queue_dequeue_into(queue, &mut batch);
            for &(cookie, used) in &batch[..n] {
                match q {
                    QueueIndex::Control => {
                        self.control.complete(k, cookie, used);
                    }
                    QueueIndex::Event => {
                        self.handle_event(cookie as usize, used);
                    }
                    QueueIndex::Tx | QueueIndex::Rx => {
                        let now = k.system_time();
                        if let Some(s) = self.streams().get(pcm::cookie_stream(cookie) as usize) {
                            s.complete(k, cookie, used, now);
                        }
                    }
                }
            }
            if n < batch.len() {
                break;
            }
        }
    }

    fn handle_event(&self, slot: usize, used: u32) {
        if slot >= EVENT_BUFFERS {
            self.bad_events.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut buf = [0u8; 8];
        let n = (used as usize).min(8);
        if self.events.read(slot * 8, &mut buf[..n]).is_ok() {
            match DeviceEvent::decode(&buf[..n]) {
                Ok(DeviceEvent::JackConnected { jack_id }) => self.set_jack(jack_id, true),
                Ok(DeviceEvent::JackDisconnected { jack_id }) => self.set_jack(jack_id, false),
                Ok(DeviceEvent::PcmXrun { stream_id }) => {
                    if let Some(x) = self.topo().xruns.get(stream_id as usize) {
                        x.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(DeviceEvent::PcmPeriodElapsed { .. }) => {}
                Ok(DeviceEvent::CtlNotify { control_id, .. }) => {
                    if let Some(c) = self.controls().get(control_id as usize) {
                        c.stale.store(true, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    self.bad_events.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Give the buffer back at once so the queue stays stocked.
        let _ = self.events.write(slot * 8, &[0; 8]);
        if self.post_event(slot).is_err() {
            self.bad_events.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn set_jack(&self, id: u32, connected: bool) {
        match self.topo().jack_connected.get(id as usize) {
            Some(j) => j.store(connected, Ordering::Relaxed),
            None => {
                self.bad_events.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn jack_connected(&self, id: u32) -> Option<bool> {
        self.topo()
            .jack_connected
            .get(id as usize)
            .map(|j| j.load(Ordering::Relaxed))
    }

    /// The device has left the machine (the device manager's `device_removed`): from now
    /// on every control request fails at once with `B_DEV_NOT_READY` instead of waiting
    /// for its timeout, so stopping and releasing the streams, and the teardown, do not
    /// wait seconds for a device that cannot answer. What the device held stays leaked,
    /// never freed, as for any device that keeps its buffers.
    pub fn device_removed(&self) {
        if !self.control.is_gone() {
            self.kernel
                .log(LogLevel::Warn, format_args!("the device was removed"));
        }
        self.control.device_gone(&*self.kernel);
    }

    /// Whether [`Engine::device_removed`] was called.
    pub fn is_removed(&self) -> bool {
        self.control.is_gone()
    }

    /// Underruns (output) or overruns (input) the device reported for a stream.
    pub fn xruns(&self, stream: u32) -> u32 {
        self.topo()
            .xruns
            .get(stream as usize)
            .map_or(0, |x| x.load(Ordering::Relaxed))
    }

    /// Events that could not be decoded.
    pub fn bad_events(&self) -> u32 {
        self.bad_events.load(Ordering::Relaxed)
    }

    pub fn stream(&self, id: u32) -> Option<&PcmStream> {
        self.streams().get(id as usize)
    }

    /// SET_PARAMS with the periods in `memory` from `offset` on (see [`PcmStream::set_params`]).
    pub fn set_params(
        &self,
        stream: u32,
        p: pcm::PcmParams,
        memory: &platform::dma::BufferArea,
        offset: u64,
    ) -> KResult {
        self.stream(stream)
            .ok_or(Status::BAD_VALUE)?
            .set_params(&self.io(), p, memory, offset)
    }

    /// Stops a stream and lets go of its period memory, unless the device keeps buffers.
    pub fn detach_stream(&self, stream: u32) -> KResult {
        self.stream(stream)
            .ok_or(Status::BAD_VALUE)?
            .detach(&self.io())
    }

    pub fn start_stream(&self, stream: u32) -> KResult {
        self.stream(stream)
            .ok_or(Status::BAD_VALUE)?
            .start(&self.io())
    }

    /// Queues what the client gave back (see [`pcm::PcmStream::refill`]); returns how many
    /// periods the device held before.
    pub fn refill(&self, stream: u32) -> KResult<u64> {
        self.stream(stream)
            .ok_or(Status::BAD_VALUE)?
            .refill(&self.io())
    }

    /// Stops a stream; `drain`: let playback finish, then play that many µs of silence.
    pub fn halt_stream(&self, stream: u32, drain: Option<u32>) -> KResult {
        self.stream(stream)
            .ok_or(Status::BAD_VALUE)?
            .halt(&self.io(), drain)
    }

    /// Sends a command straight to a stream's state machine (tests use it to prove illegal
    /// transitions never reach the device).
    pub fn stream_command(&self, stream: u32, op: pcm::Command) -> KResult {
        self.stream(stream)
            .ok_or(Status::BAD_VALUE)?
            .command(&self.io(), op)
    }

    /// Stops every stream, frees interrupts and queues (resetting the device), then every
    /// resource. Buffers the device held are gone with the reset.
    pub fn shutdown(engine: Arc<Self>) {
        for s in engine.streams() {
            let _ = s.halt(&engine.io(), None);
        }
        Self::teardown(engine);
    }

    fn teardown(engine: Arc<Self>) {
        let kernel = engine.kernel.clone();
        engine.dev.free_interrupts();
        let reset = match engine.dev.free_queues() {
            Ok(()) => true,
            Err(e) => {
                kernel.log(
                    LogLevel::Error,
                    format_args!("virtio_sound: device reset not confirmed ({e})"),
                );
                false
            }
        };
        match Arc::try_unwrap(engine) {
            Ok(e) => {
                if let Some(t) = e.topology.into_inner() {
                    for s in t.streams {
                        s.destroy(&*kernel, reset);
                    }
                }
                if reset {
                    // SAFETY: the event buffers are the only chains into the region, and the
                    // reset took every one of them back.
                    unsafe { e.events.free(&*kernel) };
                } else {
                    e.events.leak(
                        &*kernel,
                        format_args!("the device did not confirm its reset"),
                    );
                }
                e.control.destroy(&*kernel, reset);
            }
            Err(_) => kernel.log(
                LogLevel::Error,
                format_args!("virtio_sound: engine still referenced at shutdown; leaking it"),
            ),
        }
    }
}
