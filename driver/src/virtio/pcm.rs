//! One PCM stream: the spec's state machine, enforced before any request reaches the device,
//! and the ring of periods on the tx or rx queue.
//!
//! The hmulti buffers of a stream are its periods, in order: period `p` lives in buffer
//! `p % periods`. A period may be queued only once the client has been told the previous use
//! of its buffer completed (so it has refilled it, or read it): `queued < reported + periods`.
//! The interrupt callback timestamps completions; the ioctl thread reports them one by one.

use spec::virtio_snd::{
    requests, Direction, PcmFeature, PcmFormat, PcmHdr, PcmInfo, PcmRate, PcmSetParams, QueueIndex,
    Request,
};
use zerocopy::little_endian::U32 as Le32;

use core::sync::atomic::{AtomicU64, Ordering};

use platform::dma::{BufferArea, DmaRegion};
use platform::sync::{Doorbell, SpinLock};
use platform::{KResult, Kernel, LogLevel, PhysEntry, Status, VirtioDevice};

/// How late a timed wait must return to count as a stall of this thread (see
/// `PcmStream::next_completion`): well above a kernel's timer slack and scheduling latency
/// (tens of µs), well below the stalls it is for (a virtual machine descheduled for tens to
/// hundreds of ms).
pub const STALL_MICROS: i64 = 2_000;

/// The most stalls one wait for a completion makes up for.
pub const MAX_STALLS: u32 = 4;

/// Most periods (hmulti buffers) per stream: the media add-on never asks for more than 32.
pub const MAX_PERIODS: usize = 32;
/// Bytes of per-period headers: the 4-byte xfer header at 0, the 8-byte status at 8.
const HEADER_STRIDE: usize = 16;
/// Silence requests that may be in flight at once while a drained stream is padded.
const PAD_SLOTS: usize = 8;
/// Where the silence requests' headers start, after the periods'.
const PAD_HEADERS: usize = MAX_PERIODS * HEADER_STRIDE;
/// Where the zeroed silence a padding request carries starts (page-aligned).
const ZEROS_AT: usize = 4096;
/// Bytes of silence one padding request carries (at most).
const ZEROS: usize = 16384;
/// The low cookie bits of padding request `k` (never a period's sequence number in
/// practice: that would take 2^32 periods of one run).
const PAD_COOKIE: u32 = 0xffff_ff00;

/// The states of the spec's PCM command lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcmState {
    /// Nothing sent yet (the spec treats it like SET_PARAMETERS).
    Initial,
    ParamsSet,
    Prepared,
    Running,
    Stopped,
    Released,
}

impl PcmState {
    /// Whether `step` may be taken in this state (virtio 1.3 §5.14.6.6.1).
    pub fn allows(self, step: Step) -> bool {
        use PcmState::*;
        match step {
            Step::SetParams => matches!(self, Initial | ParamsSet | Prepared | Released),
            Step::Prepare => matches!(self, ParamsSet | Prepared | Released),
            Step::Start => matches!(self, Prepared | Stopped),
            Step::Stop => matches!(self, Running),
            Step::Release => matches!(self, Prepared | Stopped),
        }
    }

    fn after(step: Step) -> PcmState {
        match step {
            Step::SetParams => PcmState::ParamsSet,
            Step::Prepare => PcmState::Prepared,
            Step::Start => PcmState::Running,
            Step::Stop => PcmState::Stopped,
            Step::Release => PcmState::Released,
        }
    }
}

/// A request of a stream's state machine (the PCM control requests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    SetParams,
    Prepare,
    Start,
    Stop,
    Release,
}

/// The steps whose request carries nothing but the stream id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Prepare,
    Start,
    Stop,
    Release,
}

impl Command {
    pub fn step(self) -> Step {
        match self {
            Command::Prepare => Step::Prepare,
            Command::Start => Step::Start,
            Command::Stop => Step::Stop,
            Command::Release => Step::Release,
        }
    }
}

/// What a stream is configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcmParams {
    pub channels: u8,
    pub format: PcmFormat,
    pub rate: PcmRate,
    /// Bytes of one period (one hmulti buffer).
    pub period_bytes: u32,
    /// Periods in the ring (hmulti buffers), 1..=MAX_PERIODS.
    pub periods: u32,
}

impl PcmParams {
    pub fn frame_bytes(&self) -> u32 {
        self.channels as u32 * self.format.phys_width().div_ceil(8)
    }

    pub fn period_frames(&self) -> u32 {
        self.period_bytes / self.frame_bytes().max(1)
    }

    /// Microseconds one period lasts.
    pub fn period_micros(&self) -> i64 {
        let hz = i64::from(self.rate.hz());
        self.period_frames() as i64 * 1_000_000 / hz
    }
}

/// One completed period, as reported to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Sequence number since the stream started.
    pub seq: u64,
    /// The buffer it used.
    pub buffer: u32,
    /// `system_time()` when the interrupt saw it.
    pub time: i64,
    /// Bytes of audio it carried (playback: the period; capture: what the device wrote).
    pub bytes: u32,
    /// Whether the device reported OK for it.
    pub ok: bool,
    /// The device's latency when it completed the period (`latency_bytes`), advisory.
    pub latency_bytes: u32,
    /// The earliest instant it can have been played or captured: its last frame, counted at
    /// the stream's rate from the moment START was sent (a device that completes it sooner
    /// has not played it yet), read with it under one lock.
    pub earliest_end: i64,
}

#[derive(Debug)]
struct Ring {
    params: Option<PcmParams>,
    /// The memory the periods live in, and where period 0 starts in it. Held while any
    /// period may be with the device (see [`BufferArea`]); replaced only when none is.
    data: Option<(BufferArea, u64)>,
    /// Bumped on every start, so completions of an earlier run are recognised.
    generation: u16,
    queued: u64,
    completed: u64,
    reported: u64,
    /// Periods after `completed` that came back early (bit 0 = completed + 1).
    early: u64,
    /// Silence requests queued and not yet back.
    padding: u32,
    /// `system_time()` when the device was told to START this run.
    started_at: i64,
    /// The most frames the device was seen to hold ahead of real time in this run.
    max_lead: u64,
    /// The device did not hand back every chain within the grace after RELEASE: it keeps
    /// them (vhost-device-sound's null backend keeps capture buffers for ever). Later halts
    /// do not wait for them again.
    kept: bool,
    times: [i64; MAX_PERIODS],
    used: [u32; MAX_PERIODS],
}

impl Ring {
    const fn new() -> Self {
        Ring {
            params: None,
            data: None,
            generation: 0,
            queued: 0,
            completed: 0,
            reported: 0,
            early: 0,
            padding: 0,
            started_at: 0,
            max_lead: 0,
            kept: false,
            times: [0; MAX_PERIODS],
            used: [0; MAX_PERIODS],
        }
    }

    /// Chains of this stream the device may hold: periods and silence requests.
    fn outstanding(&self) -> u64 {
        self.queued - self.completed + u64::from(self.padding)
    }

    /// Periods queued and not yet back.
    fn in_flight(&self) -> u64 {
        self.queued - self.completed
    }

    /// The earliest instant period `seq` of this run can have been played or captured: its
    /// last frame, counted at the stream's rate from the moment START was sent, rounded
    /// down to the µs. A device that completes a period before then (one that completes
    /// buffers as they are queued, or takes them ahead into a buffer of its own) has not
    /// played it yet; one that keeps time completes it at this instant or later.
    fn earliest_end(&self, seq: u64) -> Option<i64> {
        let p = self.params?;
        let frames = u128::from(seq + 1) * u128::from(p.period_frames());
        let us = frames * 1_000_000 / u128::from(p.rate.hz().max(1));
        Some(
            self.started_at
                .saturating_add(i64::try_from(us).unwrap_or(i64::MAX)),
        )
    }
}

/// A PCM stream of the device.
pub struct PcmStream {
    pub id: u32,
    pub info: PcmInfo,
    headers: DmaRegion,
    ring: SpinLock<Ring>,
    /// `completed - reported` of the ring, stored under its lock whenever either changes:
    /// a waiter reads it without the lock to learn whether a completion is there to take,
    /// and `wake` rings after each store.
    unreported: AtomicU64,
    state: SpinLock<PcmState>,
    /// Rung by every completion, for a thread waiting for one.
    wake: Doorbell,
}

impl core::fmt::Debug for PcmStream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PcmStream").field("id", &self.id).finish()
    }
}

/// Frames of silence that `micros` of stop padding is at `hz` (rounded up).
pub fn padding_frames(micros: u32, hz: u32) -> u64 {
    (u64::from(micros) * u64::from(hz)).div_ceil(1_000_000)
}

/// The byte that makes a silent sample in `format`.
pub fn silence_byte(format: PcmFormat) -> u8 {
    if format == PcmFormat::U8 {
        0x80
    } else {
        0
    }
}

/// Frames a playback device holds that it took ahead of real time: `taken` frames
/// completed over `elapsed_us` at `hz` (at most one second's worth is believed).
pub fn held_ahead(taken: u64, elapsed_us: u64, hz: u32) -> u64 {
    let played = elapsed_us.saturating_mul(u64::from(hz)) / 1_000_000;
    taken.saturating_sub(played).min(u64::from(hz))
}

fn cookie(stream: u32, generation: u16, seq: u64) -> u64 {
    ((stream as u64 & 0xffff) << 48) | ((generation as u64) << 32) | (seq & 0xffff_ffff)
}

/// The stream a tx/rx cookie belongs to.
pub fn cookie_stream(cookie: u64) -> u32 {
    (cookie >> 48) as u32
}

impl PcmStream {
    pub fn new<K: Kernel>(kernel: &K, id: u32, info: PcmInfo) -> KResult<Self> {
        // Period headers, then padding headers, then a page-aligned run of zeros.
        let headers = DmaRegion::new(kernel, "virtio_sound pcm headers", ZEROS_AT + ZEROS)?;
        let wake = match Doorbell::new(kernel, "virtio_sound period") {
            Ok(s) => s,
            Err(e) => {
                // SAFETY: nothing was ever queued from the region.
                unsafe { headers.free(kernel) };
                return Err(e);
            }
        };
        for i in 0..MAX_PERIODS + PAD_SLOTS {
            if let Err(e) = headers.write(i * HEADER_STRIDE, &id.to_le_bytes()) {
                wake.destroy(kernel);
                // SAFETY: nothing was ever queued from the region.
                unsafe { headers.free(kernel) };
                return Err(e);
            }
        }
        Ok(PcmStream {
            id,
            info,
            headers,
            ring: SpinLock::new(Ring::new()),
            unreported: AtomicU64::new(0),
            state: SpinLock::new(PcmState::Initial),
            wake,
        })
    }

    /// Frees the stream after the device was reset (`reset`: `free_queues` returned `Ok`).
    /// Memory a chain of the stream still points into is leaked, never freed: the device
    /// was asked for its buffers back (RELEASE) and did not give them, so a reset it may
    /// ignore as well is no proof either.
    pub fn destroy<K: Kernel>(self, kernel: &K, reset: bool) {
        self.wake.destroy(kernel);
        let ring = self.ring.into_inner();
        let outstanding = ring.outstanding();
        if outstanding > 0 || !reset {
            let id = self.id;
            self.headers.leak(
                kernel,
                format_args!("stream {id}: the device holds {outstanding} chains (reset: {reset})"),
            );
            if let Some((data, _)) = ring.data {
                data.leak(format_args!(
                    "stream {id}: the device holds {outstanding} chains (reset: {reset})"
                ));
            }
            return;
        }
        // SAFETY: every chain of the stream came back (none outstanding) and the device was
        // reset; headers and period data are the only memory its chains point into.
        unsafe { self.headers.free(kernel) };
        drop(ring.data);
    }

    pub fn is_output(&self) -> bool {
        self.info.direction() == Ok(Direction::Output)
    }

    pub fn state<K: Kernel>(&self, kernel: &K) -> PcmState {
        *self.state.lock(kernel)
    }

    pub fn params<K: Kernel>(&self, kernel: &K) -> Option<PcmParams> {
        self.ring.lock(kernel).params
    }

    /// Whether the device advertised this format, rate and channel count.
    pub fn supports(&self, p: &PcmParams) -> bool {
        self.info.formats().contains(p.format)
            && self.info.rates().contains(p.rate)
            && (self.info.channels_min..=self.info.channels_max).contains(&p.channels)
            && p.channels > 0
    }

    /// Sends one lifecycle command, refusing what the state machine forbids.
    pub fn command<K: Kernel, V: VirtioDevice>(&self, io: &Io<'_, K, V>, op: Command) -> KResult {
        let state = self.state(io.kernel);
        if !state.allows(op.step()) {
            io.kernel.log(
                LogLevel::Error,
                format_args!(
                    "stream {}: {op:?} is not allowed in state {state:?}",
                    self.id
                ),
            );
            return Err(Status::BAD_VALUE);
        }
        let hdr = PcmHdr {
            stream_id: Le32::new(self.id),
            ..Default::default()
        };
        match op {
            Command::Prepare => io.control(&requests::PcmPrepare { request: hdr }),
            Command::Start => io.control(&requests::PcmStart { request: hdr }),
            Command::Stop => io.control(&requests::PcmStop { request: hdr }),
            Command::Release => io.control(&requests::PcmRelease { request: hdr }),
        }?;
        *self.state.lock(io.kernel) = PcmState::after(op.step());
        Ok(())
    }

    /// SET_PARAMS for `p` with the periods in `memory` from `offset` on, moving the stream
    /// to a state that allows it first. The stream keeps a handle to `memory` from now on;
    /// the memory of its previous periods is let go only here, once the device gave every
    /// chain into it back (`halt` succeeded).
    pub fn set_params<K: Kernel, V: VirtioDevice>(
        &self,
        io: &Io<'_, K, V>,
        p: PcmParams,
        memory: &BufferArea,
        offset: u64,
    ) -> KResult {
        if !self.supports(&p)
            || p.periods == 0
            || p.periods as usize > MAX_PERIODS
            || p.period_bytes == 0
            || !p.period_bytes.is_multiple_of(p.frame_bytes())
        {
            return Err(Status::BAD_VALUE);
        }
        let buffer_bytes = p
            .period_bytes
            .checked_mul(p.periods)
            .ok_or(Status::BAD_VALUE)?;
        memory.entry(offset, u64::from(buffer_bytes))?;
        self.halt(io, None)?;
        self.send_params(io, &p, buffer_bytes)?;
        self.replace_periods(io.kernel, Some(p), Some((memory.clone(), offset)))
    }

    /// Gives the ring new parameters and period memory, letting go of the old memory: only
    /// while no chain is outstanding (`halt` makes sure first; this never swaps under one).
    fn replace_periods<K: Kernel>(
        &self,
        kernel: &K,
        params: Option<PcmParams>,
        data: Option<(BufferArea, u64)>,
    ) -> KResult {
        let old = {
            let mut r = self.ring.lock(kernel);
            if r.outstanding() > 0 {
                return Err(Status::BUSY);
            }
            r.params = params;
            core::mem::replace(&mut r.data, data)
        };
        // Dropped here, not under the spinlock: the last handle deletes its area.
        drop(old);
        Ok(())
    }

    /// The SET_PARAMS request itself.
    fn send_params<K: Kernel, V: VirtioDevice>(
        &self,
        io: &Io<'_, K, V>,
        p: &PcmParams,
        buffer_bytes: u32,
    ) -> KResult {
        if !self.state(io.kernel).allows(Step::SetParams) {
            return Err(Status::BAD_VALUE);
        }
        // The one stream feature the driver uses, where offered.
        let features = if self.info.features().contains(PcmFeature::EvtXruns) {
            1u32 << PcmFeature::EvtXruns.raw()
        } else {
            0
        };
        let request = PcmSetParams {
            hdr: PcmHdr {
                stream_id: Le32::new(self.id),
                ..Default::default()
            },
            buffer_bytes: Le32::new(buffer_bytes),
            period_bytes: Le32::new(p.period_bytes),
            features: Le32::new(features),
            channels: p.channels,
            format: p.format.raw(),
            rate: p.rate.raw(),
            padding: 0,
        };
        io.control(&requests::PcmSetParams { request })?;
        *self.state.lock(io.kernel) = PcmState::ParamsSet;
        Ok(())
    }

    /// Stops the stream and lets go of its period memory (the last close). When the device
    /// keeps buffers, the memory stays with the stream until they come back (`Err`).
    pub fn detach<K: Kernel, V: VirtioDevice>(&self, io: &Io<'_, K, V>) -> KResult {
        if let Err(e) = self.halt(io, None) {
            io.kernel.log(
                LogLevel::Error,
                format_args!(
                    "stream {}: the device keeps {} buffers; their memory stays allocated",
                    self.id,
                    self.ring.lock(io.kernel).outstanding()
                ),
            );
            return Err(e);
        }
        self.replace_periods(io.kernel, None, None)
    }

    /// PREPARE, queue every period, START. The counters restart at zero.
    pub fn start<K: Kernel, V: VirtioDevice>(&self, io: &Io<'_, K, V>) -> KResult {
        if self.params(io.kernel).is_none() {
            return Err(Status::NO_INIT);
        }
        if self.state(io.kernel) == PcmState::Running {
            return Ok(());
        }
        if self.state(io.kernel) != PcmState::Stopped {
            // A new run forgets the old one's counters: first get back every chain the
            // device holds (after a START that failed, periods are queued in PREPARED).
            if self.ring.lock(io.kernel).outstanding() > 0 {
                self.halt(io, None)?;
            }
            if self.state(io.kernel) == PcmState::Released {
                // Some devices forget the parameters with the resources: send them again.
                if let Some(p) = self.params(io.kernel) {
                    self.send_params(io, &p, p.period_bytes * p.periods)?;
                }
            }
            self.command(io, Command::Prepare)?;
            let mut r = self.ring.lock(io.kernel);
            if r.outstanding() > 0 {
                return Err(Status::BUSY);
            }
            r.generation = r.generation.wrapping_add(1);
            r.kept = false;
            r.queued = 0;
            r.completed = 0;
            r.reported = 0;
            r.early = 0;
            self.publish(&r);
        }
        self.refill(io)?;
        {
            // Before START: a device may complete periods before START's answer arrives.
            let mut r = self.ring.lock(io.kernel);
            r.started_at = io.kernel.system_time();
            r.max_lead = 0;
        }
        self.command(io, Command::Start)
    }

    /// Queues every period whose buffer the client has had back since its last use, and
    /// returns how many periods the device held before (0: it had run dry).
    ///
    /// One critical section reserves them all (`queued` moves past the last), which keeps
    /// the period memory from being let go until they come back and makes the interrupt
    /// accept their completions; each is then handed to the device in order. A request
    /// that fails gives back the reservation from itself on (nothing after it was queued).
    pub fn refill<K: Kernel, V: VirtioDevice>(&self, io: &Io<'_, K, V>) -> KResult<u64> {
        let mut data = [PhysEntry {
            address: 0,
            size: 0,
        }; MAX_PERIODS];
        let (first, end, generation, periods, before) = {
            let mut r = self.ring.lock(io.kernel);
            let (Some(p), Some((memory, offset))) = (r.params, r.data.as_ref()) else {
                return Err(Status::NO_INIT);
            };
            let before = r.in_flight();
            let end = r.reported + p.periods as u64;
            let first = r.queued;
            let period = u64::from(p.period_bytes);
            for seq in first..end {
                let idx = (seq % p.periods as u64) as usize;
                data[idx] = memory.entry(offset + idx as u64 * period, period)?;
            }
            r.queued = end.max(first);
            (first, end, r.generation, p.periods as u64, before)
        };
        for seq in first..end {
            let idx = (seq % periods) as usize;
            let at = idx * HEADER_STRIDE;
            let parts = self.headers.entry(at, 4).and_then(|hdr| {
                self.headers.write(at + 8, &[0xff; 8])?;
                Ok((hdr, self.headers.entry(at + 8, 8)?))
            });
            let (hdr, status) = match parts {
                Ok(p) => p,
                Err(e) => {
                    self.ring.lock(io.kernel).queued = seq;
                    return Err(e);
                }
            };
            let entries = [hdr, data[idx], status];
            let (readable, queue) = if self.is_output() {
                (2, QueueIndex::Tx)
            } else {
                (1, QueueIndex::Rx)
            };
            let r = {
                // SAFETY: the header and status are in `self.headers`, which lives as long as
                // the stream and is leaked, not freed, while a chain of it is outstanding
                // (`destroy`); the data is in the ring's `BufferArea`, which the stream holds
                // until no chain is outstanding (`set_params`, `detach`, `destroy`), and
                // `queued` already counts this chain as outstanding.
                unsafe {
                    io.dev.queue_request(
                        queue as u16,
                        &entries,
                        readable,
                        cookie(self.id, generation, seq),
                    )
                }
            };
            if let Err(e) = r {
                self.ring.lock(io.kernel).queued = seq;
                io.kernel.log(
                    LogLevel::Error,
                    format_args!("stream {}: cannot queue period {seq}: {e}", self.id),
                );
                return Err(e);
            }
        }
        Ok(before)
    }

    /// Interrupt side: one period came back.
    pub fn complete<K: Kernel>(&self, kernel: &K, cookie: u64, used_len: u32, now: i64) {
        let mut r = self.ring.lock(kernel);
        let Some(p) = r.params else { return };
        if (cookie >> 32) as u16 != r.generation {
            return;
        }
        let low = cookie as u32;
        if low >= PAD_COOKIE {
            r.padding = r.padding.saturating_sub(1);
            drop(r);
            self.wake.ring(kernel, true);
            return;
        }
        let seq = r.completed + (low.wrapping_sub(r.completed as u32)) as u64;
        if seq < r.completed || seq >= r.queued || seq - r.completed >= 64 {
            return;
        }
        let idx = (seq % p.periods as u64) as usize;
        r.times[idx] = now;
        r.used[idx] = used_len;
        r.early |= 1 << (seq - r.completed);
        while r.early & 1 != 0 {
            r.early >>= 1;
            r.completed += 1;
        }
        self.publish(&r);
        if self.is_output() {
            // How far the device is ahead of real time; the most it ever was is what the stop
            // padding must cover (a stall since START makes the current figure too small).
            let elapsed = (now - r.started_at).max(0) as u64;
            let hz = p.rate.hz();
            let lead = held_ahead(r.completed * p.period_frames() as u64, elapsed, hz);
            r.max_lead = r.max_lead.max(lead);
        }
        drop(r);
        self.wake.ring(kernel, true);
    }

    /// Takes the next completion not yet reported, waiting at most `timeout_micros` of the
    /// time this thread could run: a wait that returns later than it asked (the scheduler, or
    /// the host of a virtual machine, did not run us) moves the deadline by as much, because
    /// the interrupt that brings the completion may not have run either; after such a return
    /// it waits at least a quarter of the timeout more. Only a return at least
    /// [`STALL_MICROS`] late counts (a timed wait on a real kernel always returns a little
    /// after its deadline: moving the deadline for that would never end), and at most
    /// [`MAX_STALLS`] of them per call, so a device that never answers (or has left the
    /// machine) still times out.
    pub fn next_completion<K: Kernel>(
        &self,
        kernel: &K,
        timeout_micros: i64,
    ) -> KResult<Completion> {
        let mut deadline = None;
        let mut stalls = 0;
        // The last wait: when it began and how long it asked for. The clock is read after a
        // wait only if there is no completion to take then: as the next turn's `now`.
        let mut waited: Option<(i64, i64)> = None;
        loop {
            if let Some(c) = self.take_unreported(kernel) {
                return Ok(c);
            }
            let now = kernel.system_time();
            let deadline = deadline.get_or_insert(now.saturating_add(timeout_micros));
            if let Some((began, asked)) = waited.take() {
                let late = now - began - asked;
                if late >= STALL_MICROS && stalls < MAX_STALLS {
                    stalls += 1;
                    // At least a quarter of the timeout more after a late return: the
                    // interrupts that were pending while we did not run come first.
                    let grace = (timeout_micros / 4).max(1_000);
                    *deadline = deadline.saturating_add(late).max(now.saturating_add(grace));
                }
            }
            let left = *deadline - now;
            if left <= 0 {
                return Err(Status::TIMED_OUT);
            }
            let _ = self
                .wake
                .sleep_unless(kernel, left, || self.has_unreported());
            waited = Some((now, left));
        }
    }

    /// The next completion not yet reported, if one is there; the ring is not locked to
    /// learn that none is.
    fn take_unreported<K: Kernel>(&self, kernel: &K) -> Option<Completion> {
        if !self.has_unreported() {
            return None;
        }
        self.take_completion(kernel)
    }

    /// Whether a completion is there to take (read without the ring lock).
    fn has_unreported(&self) -> bool {
        self.unreported.load(Ordering::SeqCst) > 0
    }

    /// Stores `unreported` from the ring (held locked by the caller), before `wake` rings.
    fn publish(&self, r: &Ring) {
        self.unreported
            .store(r.completed - r.reported, Ordering::SeqCst);
    }

    /// The next completion not yet reported, if one is there.
    pub fn take_completion<K: Kernel>(&self, kernel: &K) -> Option<Completion> {
        self.take_completion_due_by(kernel, i64::MAX)
    }

    /// The next completion not yet reported, if one is there and its earliest end
    /// ([`Completion::earliest_end`]) is at or before `now`.
    pub fn take_completion_due_by<K: Kernel>(&self, kernel: &K, now: i64) -> Option<Completion> {
        let mut r = self.ring.lock(kernel);
        let p = r.params?;
        if r.reported >= r.completed {
            return None;
        }
        let seq = r.reported;
        let earliest_end = r.earliest_end(seq)?;
        if earliest_end > now {
            return None;
        }
        let idx = (seq % p.periods as u64) as usize;
        r.reported += 1;
        self.publish(&r);
        let (time, used) = (r.times[idx], r.used[idx]);
        drop(r);
        let mut status = [0u8; 8];
        let ok = self
            .headers
            .read(idx * HEADER_STRIDE + 8, &mut status)
            .is_ok()
            && u32::from_le_bytes([status[0], status[1], status[2], status[3]])
                == spec::virtio_snd::VIRTIO_SND_S_OK;
        let bytes = if self.is_output() {
            p.period_bytes
        } else {
            used.saturating_sub(8).min(p.period_bytes)
        };
        let latency_bytes = if ok {
            u32::from_le_bytes([status[4], status[5], status[6], status[7]])
        } else {
            0
        };
        Some(Completion {
            seq,
            buffer: idx as u32,
            time,
            bytes,
            ok,
            latency_bytes,
            earliest_end,
        })
    }

    /// The input side of a duplex exchange: the next completion not yet reported, if it is
    /// there and can have been captured by `now` (the caller's last clock read); and if it
    /// is period `seq` (the one in step with the output period the exchange reports) and has
    /// not come yet, waits for it `max_wait` µs at most. A capture period handed to the
    /// client one exchange late is queued again only at the exchange after next, and with 2
    /// buffers the device then runs out of capture buffers whenever the client comes back
    /// later than the phase between the streams. There is no wait before the stream has completed a period in this run (a
    /// device that holds capture buffers while it runs, QEMU's `wav` backend or
    /// vhost-device-sound's null one, must not delay the run's first exchanges: on QEMU
    /// under TCG half a period less slack at start-up made playback run dry), nor for a
    /// stream that is not in step (it fell behind after an overrun, or its first period
    /// came after the first exchange): those are taken as they come.
    pub fn completion_in_step<K: Kernel>(
        &self,
        kernel: &K,
        mut now: i64,
        seq: u64,
        max_wait: i64,
    ) -> Option<Completion> {
        let limit = now.saturating_add(max_wait);
        loop {
            if let Some(c) = self.take_completion_due_by(kernel, now) {
                return Some(c);
            }
            let (next, any, arrived, end) = {
                let r = self.ring.lock(kernel);
                let end = r.earliest_end(r.reported)?;
                (r.reported, r.completed > 0, r.completed > r.reported, end)
            };
            if next != seq || !any || now >= limit {
                return None;
            }
            if arrived {
                // Back before it can have been captured: not before then.
                kernel.snooze(end.min(limit) - now);
            } else {
                let _ = self
                    .wake
                    .sleep_unless(kernel, limit - now, || self.has_unreported());
            }
            now = kernel.system_time();
        }
    }

    /// Whether the device kept chains of this stream past RELEASE and its grace (it may
    /// never give them back): the stream cannot be configured or started until they come.
    pub fn kept_after_release<K: Kernel>(&self, kernel: &K) -> bool {
        let r = self.ring.lock(kernel);
        r.kept && r.outstanding() > 0
    }

    /// Plays silence after the last period and waits until the device has taken it (a
    /// bounded wait: a device that keeps it only delays the STOP): `micros` worth, or as much
    /// as the device held if that is more: the most it was ever ahead of real time in this
    /// run, measured at each completion (`max_lead`: every period it completed since START,
    /// less what the time since START can have played; QEMU takes about 1024 frames ahead:
    /// 21 ms at 48 kHz, 128 ms at 8 kHz). Best
    /// effort: a queue that is full or a request that fails ends the padding early.
    fn pad<K: Kernel, V: VirtioDevice>(&self, io: &Io<'_, K, V>, p: &PcmParams, micros: u32) {
        let frame = p.frame_bytes().max(1) as u64;
        let hz = p.rate.hz();
        // Every completion updated the lead, and after the drain none is due: the lead now
        // is at most the last one measured, so the most measured covers it.
        let inside = self.ring.lock(io.kernel).max_lead;
        let frames = padding_frames(micros, hz).max(inside + inside / 4);
        let mut left = frames * frame;
        let micros = (frames * 1_000_000 / u64::from(hz.max(1))).min(u64::from(u32::MAX)) as u32;
        let chunk = (ZEROS as u64 / frame) * frame;
        if chunk == 0 {
            return;
        }
        // Silence is 0x80 in unsigned 8-bit samples, 0 in every other format.
        let quiet = [silence_byte(p.format); 256];
        for at in (0..ZEROS).step_by(quiet.len()) {
            if self.headers.write(ZEROS_AT + at, &quiet).is_err() {
                return;
            }
        }
        let generation = self.ring.lock(io.kernel).generation;
        // Long enough for all of it to play twice over, plus scheduling slack.
        let deadline = io.kernel.system_time() + 2 * micros as i64 + 100_000;
        let mut k = 0u32;
        loop {
            // Keep up to PAD_SLOTS requests in flight until the silence is all queued.
            while left > 0 && (self.ring.lock(io.kernel).padding as usize) < PAD_SLOTS {
                let slot = (k as usize) % PAD_SLOTS;
                let Ok(hdr) = self.headers.entry(PAD_HEADERS + slot * HEADER_STRIDE, 4) else {
                    return;
                };
                let Ok(status) = self
                    .headers
                    .entry(PAD_HEADERS + slot * HEADER_STRIDE + 8, 8)
                else {
                    return;
                };
                let size = left.min(chunk);
                let Ok(zeros) = self.headers.entry(ZEROS_AT, size as usize) else {
                    return;
                };
                self.ring.lock(io.kernel).padding += 1;
                let r = {
                    // SAFETY: every entry is in `self.headers`, which is leaked, not freed,
                    // while a chain of it is outstanding (`destroy`); `padding` already
                    // counts this one, and `halt` waits for it before it reports success.
                    unsafe {
                        io.dev.queue_request(
                            QueueIndex::Tx as u16,
                            &[hdr, zeros, status],
                            2,
                            cookie(self.id, generation, u64::from(PAD_COOKIE + slot as u32)),
                        )
                    }
                };
                if r.is_err() {
                    let mut ring = self.ring.lock(io.kernel);
                    ring.padding = ring.padding.saturating_sub(1);
                    left = 0;
                    break;
                }
                left -= size;
                k += 1;
            }
            let outstanding = self.ring.lock(io.kernel).padding;
            if outstanding == 0 && left == 0 {
                // Taken is not played: a device with room to spare in a buffer of its own
                // (QEMU's mixer, when less than its 1024 frames are queued ahead; a device
                // that completes buffers as it gets them) takes the silence at once and
                // would drop it, with the end of the audio before it, at STOP. So STOP
                // waits until the periods and the silence can have played at the stream's
                // rate from START (a device that keeps time is there already).
                let end = {
                    let r = self.ring.lock(io.kernel);
                    let all =
                        u128::from(r.queued) * u128::from(p.period_frames()) + u128::from(frames);
                    let us = all * 1_000_000 / u128::from(hz.max(1));
                    r.started_at
                        .saturating_add(i64::try_from(us).unwrap_or(i64::MAX))
                };
                // Bounded: the silence's own deadline plus the ring's length.
                let ring = i64::from(p.periods) * p.period_micros();
                let now = io.kernel.system_time();
                let wait = (end - now).min(deadline - now + ring);
                if wait > 0 {
                    io.kernel.snooze(wait);
                }
                return;
            }
            let now = io.kernel.system_time();
            if now >= deadline {
                io.kernel.log(
                    LogLevel::Warn,
                    format_args!(
                        "stream {}: {outstanding} silence requests still queued at STOP",
                        self.id
                    ),
                );
                return;
            }
            // Until a silence request comes back (only completions lower `padding`).
            let _ = self.wake.sleep_unless(io.kernel, deadline - now, || {
                self.ring.lock(io.kernel).padding != outstanding
            });
        }
    }

    /// Periods queued and not yet back.
    pub fn in_flight<K: Kernel>(&self, kernel: &K) -> u64 {
        self.ring.lock(kernel).in_flight()
    }

    /// Chains of this stream the device may hold (periods and silence requests).
    pub fn outstanding<K: Kernel>(&self, kernel: &K) -> u64 {
        self.ring.lock(kernel).outstanding()
    }

    /// Stops the stream and gets every buffer back: optionally (`drain`) lets queued
    /// playback finish first and then plays `padding_us` of silence, so that audio the device
    /// took but still holds (a device completes a period when it has *taken* the data; QEMU's
    /// holds about 1024 frames and drops them at STOP) is heard; then STOP and RELEASE.
    pub fn halt<K: Kernel, V: VirtioDevice>(
        &self,
        io: &Io<'_, K, V>,
        drain: Option<u32>,
    ) -> KResult {
        let state = self.state(io.kernel);
        if state == PcmState::Running {
            if let (Some(padding_us), true) = (drain, self.is_output()) {
                if let Some(p) = self.params(io.kernel) {
                    let wait = (self.in_flight(io.kernel) as i64 + 2) * p.period_micros() + 100_000;
                    let deadline = io.kernel.system_time() + wait;
                    while self.in_flight(io.kernel) > 0 && io.kernel.system_time() < deadline {
                        let _ = self.wake.sleep_unless(
                            io.kernel,
                            deadline - io.kernel.system_time(),
                            || self.in_flight(io.kernel) == 0,
                        );
                    }
                    if self.in_flight(io.kernel) == 0 && padding_us > 0 {
                        self.pad(io, &p, padding_us);
                    }
                }
            }
            self.command(io, Command::Stop)?;
        }
        if matches!(
            self.state(io.kernel),
            PcmState::Prepared | PcmState::Stopped
        ) {
            self.command(io, Command::Release)?;
        }
        // RELEASE returns every pending buffer before it completes; a device that does not
        // gets a grace period (once: a device that kept them past it is not waited for
        // again), after which the buffers are reported as still held.
        if self.ring.lock(io.kernel).kept {
            return match self.outstanding(io.kernel) {
                0 => Ok(()),
                _ => Err(Status::DEV_TIMEOUT),
            };
        }
        let deadline = io.kernel.system_time() + 200_000;
        while self.outstanding(io.kernel) > 0 && io.kernel.system_time() < deadline {
            let _ = self
                .wake
                .sleep_unless(io.kernel, deadline - io.kernel.system_time(), || {
                    self.outstanding(io.kernel) == 0
                });
        }
        if self.outstanding(io.kernel) > 0 {
            self.ring.lock(io.kernel).kept = true;
            io.kernel.log(
                LogLevel::Error,
                format_args!(
                    "stream {}: device kept {} buffers after RELEASE",
                    self.id,
                    self.outstanding(io.kernel)
                ),
            );
            return Err(Status::DEV_TIMEOUT);
        }
        Ok(())
    }
}

/// What a stream needs to talk to the device: the kernel, the device and the control
/// channel.
pub struct Io<'a, K: Kernel, V: VirtioDevice> {
    pub kernel: &'a K,
    pub dev: &'a V,
    pub control: &'a super::control::ControlChannel,
}

impl<K: Kernel, V: VirtioDevice> Io<'_, K, V> {
    /// Sends a control request and hands what its answer carries to `f`.
    pub fn call<Q: Request, R>(&self, req: &Q, f: impl FnOnce(Q::Response<'_>) -> R) -> KResult<R> {
        self.control.call(self.kernel, self.dev, req, f)
    }

    /// Sends a control request whose answer matters only by its status.
    pub fn control<Q: Request>(&self, req: &Q) -> KResult {
        self.call(req, |_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_device_holds_ahead_of_real_time() {
        // 10 periods of 480 frames taken in 50 ms at 48 kHz: 2400 played, 2400 held.
        assert_eq!(held_ahead(4800, 50_000, 48000), 2400);
        // A device that completes as it plays (or late) holds nothing.
        assert_eq!(held_ahead(4800, 100_000, 48000), 0);
        assert_eq!(held_ahead(4800, 200_000, 48000), 0);
        // Never more than a second's worth is believed.
        assert_eq!(held_ahead(1 << 40, 0, 8000), 8000);
        assert_eq!(padding_frames(20_000, 44100), 882);
        assert_eq!(padding_frames(1, 8000), 1, "rounded up");
        assert_eq!(silence_byte(PcmFormat::U8), 0x80);
        assert_eq!(silence_byte(PcmFormat::S16), 0);
    }
}
