//! A virtio-snd device model: the device the driver talks to in tests.
//!
//! It plays three roles. It is a *device*: [`SndModel`] implements [`VirtioDevice`], reads
//! requests from and writes answers to simulated physical memory, and raises virtqueue
//! interrupts. It is a *referee*: everything the virtio spec forbids the driver to do is
//! answered as a strict device would and written to [`SndModel::violations`]. And it is the
//! *ground truth*: it records what was played and when each period ended, and what it
//! captured, so tests can judge the driver's timestamps and data path against reality.
//!
//! Interrupts are delivered only from clock events (see [`sim_kernel::clock`]), never while a
//! driver call into the model is on the stack: a completion becomes visible in the used ring
//! at its simulated time, and the driver's `queue_interrupt` runs on whichever thread moved
//! time there, inside [`SimKernel::run_in_interrupt`]. The model's state sits behind one
//! mutex that is never held while the driver's handler runs, so the handler can dequeue and
//! requeue freely.

mod config;
mod control;
mod fault;
mod hostile;
mod pcm;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{self, ThreadId};

use platform::{KResult, PhysEntry, QueueHandler, Status, VirtioDevice};
use spec::haiku_driver::VIRTIO_FEATURE_VERSION_1;
use spec::virtio_snd::{
    self as vs, CtlValue, DeviceEvent, Direction, PcmFeature, RequestCode, VIRTIO_SND_S_BAD_MSG,
};

use sim_kernel::clock::EventSource;
use sim_kernel::memory::{HoldId, PhysMemory, SimCode};
use sim_kernel::report::lock;
use sim_kernel::SimKernel;

pub use config::{
    frame_bits, rw_access, sample_bytes, CaptureCompletion, ChmapConfig, ControlConfig, CtlRange,
    JackConfig, ModelConfig, PlaybackCompletion, StreamConfig, QEMU_FORMATS, QEMU_RATES,
};
pub use fault::{Fault, FaultTarget};
pub use hostile::Hostile;
pub use pcm::{capture_pattern, PcmState, PeriodRecord, StreamParams};

/// A stream's ground truth taken out of the model ([`SndModel::take_records`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamRecords {
    /// The bytes played, in order.
    pub played: Vec<u8>,
    /// The bytes captured, in order.
    pub recorded: Vec<u8>,
    /// The completed periods, in order.
    pub periods: Vec<PeriodRecord>,
}

use control::{code_name, queue_direction, Reply, OK};
use fault::{garbage, FaultSpec};
use pcm::{IoBuf, IoMode, Stream};

/// The four virtqueues of a virtio-snd device.
const QUEUES: usize = 4;

/// The largest tx/rx payload the model accepts in one chain. Far above any sane period, and
/// low enough that a hostile length cannot make the model allocate the host out of memory.
const MAX_IO_BYTES: u64 = 16 << 20;

/// Empty `queue_dequeue` results in a row, at one simulated instant, after which the model
/// concludes the driver is busy-polling: time cannot move while it spins, so it would hang.
const BUSY_POLL_LIMIT: u64 = 10_000_000;

/// One control request the device has answered, for tests that check the driver's sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlRecord {
    /// When the device acted on it.
    pub time: i64,
    /// The request code (raw, so unknown codes show too).
    pub code: u32,
    /// The stream, jack or control id the request names, if it has one.
    pub target: Option<u32>,
    /// The status the device wrote.
    pub status: u32,
}

/// A chain as the driver queued it.
struct Chain {
    entries: Vec<PhysEntry>,
    readable: usize,
    cookie: u64,
    ticket: Ticket,
}

impl Chain {
    fn readable(&self) -> &[PhysEntry] {
        &self.entries[..self.readable]
    }
    fn writable(&self) -> &[PhysEntry] {
        &self.entries[self.readable..]
    }
}

/// What a queued chain takes until it is used: ring slots, and its hold on memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    /// Ring slots it occupies.
    weight: usize,
    hold: HoldId,
}

fn total_len(entries: &[PhysEntry]) -> u64 {
    entries.iter().fold(0u64, |a, e| a.saturating_add(e.size))
}

#[derive(Default)]
struct Queue {
    /// Ring slots in use: chains queued and not yet dequeued.
    in_flight: usize,
    /// `(cookie, used_len, ring slots, invented by a Hostile)`.
    used: VecDeque<(u64, u32, usize, bool)>,
    /// Cookies of the chains the device holds (queued, not yet on the used ring), counted.
    posted: HashMap<u64, u32>,
    /// The cookies most recently put on the used ring, oldest first.
    returned: VecDeque<u64>,
    /// Chains the device dropped on purpose (`Fault::Lost`, headers too short to answer).
    lost: usize,
    interrupts: u64,
}

/// A control request waiting for its completion time.
struct CtlJob {
    due: i64,
    chain: Chain,
    /// The readable part, copied when queued; `None` if that DMA failed.
    readable: Option<Vec<u8>>,
    fault: Option<Fault>,
}

/// A completion whose time has not come yet.
struct Deferred {
    due: i64,
    seq: u64,
    queue: u16,
    cookie: u64,
    ticket: Ticket,
    used_len: u32,
    /// `(writable entries, offset in them, bytes)` to write when it fires.
    writes: Vec<(Vec<PhysEntry>, usize, Vec<u8>)>,
}

#[derive(Clone)]
struct JackState {
    config: JackConfig,
    remap: Option<(u32, u32)>,
}

/// Everything behind the model's mutex.
pub(crate) struct State {
    config: ModelConfig,
    mem: PhysMemory,
    echo: bool,
    features: Option<u64>,
    queues_ready: bool,
    driver_ok: bool,
    queues: [Queue; QUEUES],
    ctl_jobs: VecDeque<CtlJob>,
    last_ctl_due: i64,
    deferred: Vec<Deferred>,
    seq: u64,
    streams: Vec<Stream>,
    jacks: Vec<JackState>,
    controls: Vec<ControlConfig>,
    event_buffers: VecDeque<Chain>,
    events_pending: VecDeque<DeviceEvent>,
    faults: HashMap<FaultTarget, FaultSpec>,
    violations: Vec<String>,
    control_log: Vec<ControlRecord>,
    /// The device left the bus ([`SndModel::unplug`]).
    unplugged: bool,
    tlv_commands: Vec<(u32, Vec<u8>)>,
    /// Queues with new used entries, in the order they got them.
    irq_pending: Vec<u16>,
    /// (instant, count) of consecutive empty `queue_dequeue`s.
    empty_polls: (i64, u64),
    /// XRUN events not sent for want of an event buffer.
    events_dropped: u64,
    /// Rewrites every answer when set (`SndModel::set_hostile`).
    hostile: Option<Box<dyn Hostile>>,
}

impl State {
    fn violation(&mut self, message: String) {
        if self.echo {
            eprintln!("[sim device] violation: {message}");
        }
        self.violations.push(message);
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn take_fault(&mut self, target: FaultTarget) -> Option<Fault> {
        let spec = self.faults.get_mut(&target)?;
        let fault = spec.fault;
        match spec.remaining {
            Some(n) if n <= 1 => {
                self.faults.remove(&target);
            }
            Some(n) => spec.remaining = Some(n - 1),
            None => {}
        }
        Some(fault)
    }

    /// Puts a chain on its queue's used ring: from here on the device no longer touches
    /// its memory.
    fn push_used(&mut self, queue: u16, cookie: u64, used_len: u32, ticket: Ticket) {
        self.mem.release(ticket.hold);
        let q = &mut self.queues[queue as usize];
        if let Some(n) = q.posted.get_mut(&cookie) {
            *n -= 1;
            if *n == 0 {
                q.posted.remove(&cookie);
            }
        }
        if q.returned.len() == hostile::RETURNED_KEPT {
            q.returned.pop_front();
        }
        q.returned.push_back(cookie);
        q.used.push_back((cookie, used_len, ticket.weight, false));
        if let Some(h) = self.hostile.as_mut() {
            let q = &mut self.queues[queue as usize];
            let returned: Vec<u64> = q.returned.iter().copied().collect();
            for (cookie, used_len) in h.extra_used(queue, &returned) {
                q.used.push_back((cookie, used_len, 0, true));
            }
        }
        if !self.irq_pending.contains(&queue) {
            self.irq_pending.push(queue);
        }
    }

    fn defer(&mut self, d: Deferred) {
        self.deferred.push(d);
    }

    /// Completes a chain at `due` after writing `writes`.
    #[allow(clippy::too_many_arguments)]
    fn complete_at(
        &mut self,
        due: i64,
        queue: u16,
        cookie: u64,
        ticket: Ticket,
        used_len: u32,
        writes: Vec<(Vec<PhysEntry>, usize, Vec<u8>)>,
    ) {
        let seq = self.next_seq();
        self.defer(Deferred {
            due,
            seq,
            queue,
            cookie,
            ticket,
            used_len,
            writes,
        });
    }

    fn fire(&mut self, d: Deferred) {
        for (entries, offset, bytes) in &d.writes {
            // A failed DMA is already recorded by the memory; the chain still completes.
            let _ = scatter(&self.mem, entries, *offset, bytes);
        }
        self.push_used(d.queue, d.cookie, d.used_len, d.ticket);
    }

    // ---- control queue ----

    fn run_control(&mut self, job: CtlJob, now: i64) {
        let CtlJob {
            chain,
            readable,
            fault,
            ..
        } = job;
        let writable: Vec<PhysEntry> = chain.writable().to_vec();
        let wlen = usize::try_from(total_len(&writable)).unwrap_or(usize::MAX);
        let Some(readable) = readable else {
            self.violation("control request whose readable part is not in memory".into());
            self.push_used(vs::VIRTIO_SND_VQ_CONTROL, chain.cookie, 0, chain.ticket);
            return;
        };
        // Like QEMU: without a whole header there is nothing to answer.
        if readable.len() < 4 {
            self.violation(format!(
                "control request with {} readable bytes: dropped without an answer",
                readable.len()
            ));
            self.queues[vs::VIRTIO_SND_VQ_CONTROL as usize].lost += 1;
            return;
        }
        let reply = if wlen < 4 {
            self.violation(format!(
                "{} request with {wlen} writable bytes: no room for a status",
                code_name(u32::from_le_bytes([
                    readable[0],
                    readable[1],
                    readable[2],
                    readable[3]
                ]))
            ));
            Reply::status(VIRTIO_SND_S_BAD_MSG)
        } else {
            self.handle_control(&readable, wlen, now)
        };
        let code = u32::from_le_bytes([readable[0], readable[1], readable[2], readable[3]]);
        let target = (readable.len() >= 8)
            .then(|| u32::from_le_bytes([readable[4], readable[5], readable[6], readable[7]]));
        self.control_log.push(ControlRecord {
            time: now,
            code,
            target,
            status: reply.status_code(),
        });

        let (mut bytes, mut used_len) = self.apply_control_fault(reply, fault, wlen);
        if let Some(h) = self.hostile.as_mut() {
            h.control(&readable, &mut bytes, &mut used_len);
            bytes.truncate(wlen);
        }
        let _ = scatter(&self.mem, &writable, 0, &bytes);
        self.push_used(
            vs::VIRTIO_SND_VQ_CONTROL,
            chain.cookie,
            used_len,
            chain.ticket,
        );
    }

    /// The bytes to write and the used_len to report, after the fault (if any).
    fn apply_control_fault(
        &mut self,
        reply: Reply,
        fault: Option<Fault>,
        wlen: usize,
    ) -> (Vec<u8>, u32) {
        let mut bytes = reply.bytes;
        bytes.truncate(wlen);
        let normal = bytes.len() as u32;
        let oversized =
            |extra: u32| (wlen as u64 + u64::from(extra)).min(u64::from(u32::MAX)) as u32;
        match fault {
            None | Some(Fault::Delay(_)) | Some(Fault::Lost) => (bytes, normal),
            Some(Fault::Status(code)) => (code.to_le_bytes().to_vec(), wlen.min(4) as u32),
            Some(Fault::ShortReply(n)) => (bytes, n),
            Some(Fault::Oversized(extra)) => (bytes, oversized(extra)),
            Some(Fault::ExtraItems(extra)) => match reply.items {
                Some((count, size)) => {
                    let claimed = 4 + (u64::from(count) + u64::from(extra)) * size as u64;
                    (bytes, claimed.min(u64::from(u32::MAX)) as u32)
                }
                None => (bytes, oversized(extra)),
            },
            Some(Fault::Garbage) => {
                let seq = self.next_seq();
                let junk = garbage(seq, bytes.len().saturating_sub(4));
                bytes.truncate(4.min(bytes.len()));
                bytes.extend_from_slice(&junk);
                (bytes, normal)
            }
        }
    }

    // ---- tx / rx ----

    /// A chain arrived on the tx or rx queue at `now`.
    fn queue_io(&mut self, queue: u16, chain: Chain, now: i64) {
        let dir = queue_direction(queue).expect("tx or rx");
        let name = if dir == Direction::Output { "tx" } else { "rx" };
        let writable = chain.writable().to_vec();
        let wlen = usize::try_from(total_len(&writable)).unwrap_or(usize::MAX);
        let refuse = |st: &mut State, why: String| {
            st.violation(format!("{name} buffer refused: {why}"));
            let mut status = [0u8; 8];
            status[..4].copy_from_slice(&VIRTIO_SND_S_BAD_MSG.to_le_bytes());
            // Where the status goes: tx writes it at the start of the writable part (QEMU),
            // rx after the frame space.
            let at = if dir == Direction::Output {
                0
            } else {
                wlen.saturating_sub(8)
            };
            let used = if wlen >= 8 { 8 } else { 0 };
            let writes = if wlen >= 8 {
                vec![(writable.clone(), at, status.to_vec())]
            } else {
                Vec::new()
            };
            st.complete_at(now, queue, chain.cookie, chain.ticket, used, writes);
        };

        let rlen = total_len(chain.readable());
        if rlen > MAX_IO_BYTES + 4 || wlen as u64 > MAX_IO_BYTES + 8 {
            return refuse(
                self,
                format!("{rlen} readable / {wlen} writable bytes is absurd"),
            );
        }
        if dir == Direction::Input {
            // The device will write there later; find out now if it is not memory.
            if let Some(e) = writable
                .iter()
                .find(|e| self.mem.check(e.address, e.size).is_err())
            {
                let e = *e;
                return refuse(
                    self,
                    format!(
                        "writable entry {:#x}+{} is not in memory",
                        e.address, e.size
                    ),
                );
            }
        }
        let header = match gather(
            &self.mem,
            chain.readable(),
            if dir == Direction::Output {
                None
            } else {
                Some(64)
            },
        ) {
            Ok(b) => b,
            Err(()) => return refuse(self, "its readable part is not in memory".into()),
        };
        if header.len() < 4 {
            return refuse(
                self,
                format!("{} readable bytes, the xfer header is 4", header.len()),
            );
        }
        let stream_id = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let Some(stream) = self.streams.get(stream_id as usize) else {
            return refuse(self, format!("stream {stream_id} does not exist"));
        };
        if stream.cfg.direction != dir {
            return refuse(
                self,
                format!("stream {stream_id} does not have the {name} queue's direction"),
            );
        }
        if !matches!(stream.state, PcmState::Prepared | PcmState::Started) {
            let state = stream.state;
            return refuse(
                self,
                format!(
                    "stream {stream_id} is in state {state:?}, buffers are taken after PREPARE"
                ),
            );
        }
        if wlen < 8 {
            return refuse(self, format!("{wlen} writable bytes, the status is 8"));
        }
        let Some(params) = stream.prepared else {
            return refuse(
                self,
                format!("stream {stream_id} has no prepared parameters"),
            );
        };
        let fault_target = if dir == Direction::Output {
            FaultTarget::Tx
        } else {
            FaultTarget::Rx
        };
        let (data, capacity) = if dir == Direction::Output {
            if wlen > 8 {
                self.violation(format!(
                    "tx buffer for stream {stream_id} has {} device-writable bytes besides the status",
                    wlen - 8
                ));
            }
            (header[4..].to_vec(), 0)
        } else {
            if header.len() > 4 {
                self.violation(format!(
                    "rx buffer for stream {stream_id} has {} device-readable bytes after the header",
                    header.len() - 4
                ));
            }
            (Vec::new(), wlen - 8)
        };
        let bytes = if dir == Direction::Output {
            data.len()
        } else {
            capacity
        };
        let (frames, partial) = params.frames_in(bytes);
        if partial {
            self.violation(format!(
                "{name} buffer for stream {stream_id} holds {bytes} bytes, not a whole number of frames"
            ));
        }
        let fault = self.take_fault(fault_target);
        let buf = IoBuf {
            cookie: chain.cookie,
            ticket: chain.ticket,
            frames,
            data,
            writable,
            capacity,
            fault,
        };
        if self.streams[stream_id as usize].mode == IoMode::Instant {
            // Taken and handed back at once, whatever the state (vhost-device-sound's null
            // backend; see `PlaybackCompletion::Instant`).
            return self.finish_io(stream_id as usize, buf, now);
        }
        self.streams[stream_id as usize].push(buf, now);
    }

    /// Completes the head buffer of stream `idx`, which finished at `at`.
    fn complete_io(&mut self, idx: usize, at: i64) {
        if let Some(buf) = self.streams[idx].complete_head(at) {
            self.finish_io(idx, buf, at);
        }
    }

    /// Hands `buf` of stream `idx` back, done at `at`: what was played or captured is
    /// recorded, the status written, the chain used (after its fault, if any).
    fn finish_io(&mut self, idx: usize, buf: IoBuf, at: i64) {
        let s = &mut self.streams[idx];
        let instant = s.mode == IoMode::Instant;
        let output = s.cfg.direction == Direction::Output;
        let queue = if output {
            vs::VIRTIO_SND_VQ_TX
        } else {
            vs::VIRTIO_SND_VQ_RX
        };
        let mut status = [0u8; 8];
        status[..4].copy_from_slice(&OK.to_le_bytes());
        let mut writes = Vec::new();
        let wlen = usize::try_from(total_len(&buf.writable)).unwrap_or(usize::MAX);
        let seq = self.next_seq();
        let used_normal = if output {
            let s = &mut self.streams[idx];
            s.played.extend_from_slice(&buf.data);
            // Taken ahead, it plays when the frames before it and its own have played.
            let played_at = if instant { at } else { s.line_end().max(at) };
            s.periods.push(PeriodRecord {
                time: played_at,
                frames: buf.frames,
                bytes: buf.data.len(),
            });
            if buf.fault == Some(Fault::Garbage) {
                status[4..].copy_from_slice(&garbage(seq, 4));
            } else if instant {
                // vhost-device-sound: `latency_bytes` is the payload length.
                status[4..].copy_from_slice(&(buf.data.len() as u32).to_le_bytes());
            }
            8
        } else {
            let s = &mut self.streams[idx];
            let data = if buf.fault == Some(Fault::Garbage) {
                garbage(seq, buf.capacity)
            } else {
                s.pattern(s.capture_pos, buf.capacity)
            };
            s.capture_pos += buf.capacity as u64;
            s.recorded.extend_from_slice(&data);
            s.periods.push(PeriodRecord {
                time: at,
                frames: buf.frames,
                bytes: buf.capacity,
            });
            writes.push((buf.writable.clone(), 0, data));
            (buf.capacity + 8) as u32
        };
        if let Some(Fault::Status(code)) = buf.fault {
            status[..4].copy_from_slice(&code.to_le_bytes());
        }
        let status_at = if output { 0 } else { buf.capacity };
        let oversized =
            |extra: u32| (wlen as u64 + u64::from(extra)).min(u64::from(u32::MAX)) as u32;
        let (due, used_len) = match buf.fault {
            Some(Fault::Lost) => {
                self.queues[queue as usize].lost += 1;
                return;
            }
            Some(Fault::Delay(us)) => (at.saturating_add(us.max(0)), used_normal),
            Some(Fault::ShortReply(n)) => (at, n),
            Some(Fault::Oversized(extra)) | Some(Fault::ExtraItems(extra)) => {
                (at, oversized(extra))
            }
            _ => (at, used_normal),
        };
        let mut used_len = used_len;
        if let Some(h) = self.hostile.as_mut() {
            h.io(queue, &mut status, &mut used_len);
        }
        writes.push((buf.writable, status_at, status.to_vec()));
        self.complete_at(due, queue, buf.cookie, buf.ticket, used_len, writes);
    }

    /// Hands back every buffer of stream `idx` (RELEASE), before the RELEASE answer.
    fn flush_stream(&mut self, idx: usize) {
        let s = &mut self.streams[idx];
        let output = s.cfg.direction == Direction::Output;
        let queue = if output {
            vs::VIRTIO_SND_VQ_TX
        } else {
            vs::VIRTIO_SND_VQ_RX
        };
        s.dry_check = None;
        if s.mode == IoMode::Never {
            // Kept: RELEASE is answered with the buffers still held.
            return;
        }
        let empty_at_release = s.mode == IoMode::AtRelease;
        let bufs: Vec<IoBuf> = s.io.drain(..).collect();
        for buf in bufs {
            if buf.fault == Some(Fault::Lost) {
                self.queues[queue as usize].lost += 1;
                continue;
            }
            let mut status = [0u8; 8];
            status[..4].copy_from_slice(&OK.to_le_bytes());
            // QEMU writes the status after the bytes it captured: none, for a buffer that
            // only comes back at RELEASE (see `CaptureCompletion::AtRelease`).
            let at = if output || empty_at_release {
                0
            } else {
                buf.capacity
            };
            let mut used_len = 8;
            if let Some(h) = self.hostile.as_mut() {
                h.io(queue, &mut status, &mut used_len);
            }
            // Written now, not deferred: the spec orders these before the RELEASE answer.
            let _ = scatter(&self.mem, &buf.writable, at, &status);
            self.push_used(queue, buf.cookie, used_len, buf.ticket);
        }
    }

    /// The stream ran dry 1 µs ago and nothing came: an underrun (or overrun, for capture).
    fn dry(&mut self, idx: usize, now: i64) {
        let s = &mut self.streams[idx];
        s.dry_check = None;
        if !s.running || !s.io.is_empty() {
            return;
        }
        s.xrun_times.push(now);
        let wants_event = s
            .prepared
            .is_some_and(|p| p.features & PcmFeature::EvtXruns.mask() as u32 != 0);
        if wants_event {
            // Sent only if the driver left a buffer for it; a late XRUN would be misleading.
            let stream_id = s.id;
            if self.event_buffers.len() > self.events_pending.len() {
                self.events_pending
                    .push_back(DeviceEvent::PcmXrun { stream_id });
            } else {
                self.events_dropped += 1;
            }
        }
    }

    // ---- event queue ----

    fn deliver_events(&mut self, now: i64) -> bool {
        let mut progressed = false;
        while !self.events_pending.is_empty() && !self.event_buffers.is_empty() {
            let ev = self.events_pending.pop_front().expect("checked");
            let chain = self.event_buffers.pop_front().expect("checked");
            progressed = true;
            let mut bytes = [0u8; 8];
            let n = ev.encode(&mut bytes).unwrap_or(0);
            let writable = chain.writable().to_vec();
            let wlen = total_len(&writable);
            let mut used = n as u32;
            let mut due = now;
            match self.take_fault(FaultTarget::Event) {
                Some(Fault::Lost) => {
                    self.queues[vs::VIRTIO_SND_VQ_EVENT as usize].lost += 1;
                    continue;
                }
                Some(Fault::Garbage) => {
                    let seq = self.next_seq();
                    bytes.copy_from_slice(&garbage(seq, 8));
                }
                Some(Fault::ShortReply(l)) => used = l,
                Some(Fault::Oversized(extra)) | Some(Fault::ExtraItems(extra)) => {
                    used = (wlen + u64::from(extra)).min(u64::from(u32::MAX)) as u32
                }
                Some(Fault::Delay(us)) => due = now.saturating_add(us.max(0)),
                Some(Fault::Status(_)) | None => {}
            }
            if let Some(h) = self.hostile.as_mut() {
                h.event(&mut bytes, &mut used);
            }
            self.complete_at(
                due,
                vs::VIRTIO_SND_VQ_EVENT,
                chain.cookie,
                chain.ticket,
                used,
                vec![(writable, 0, bytes.to_vec())],
            );
        }
        progressed
    }

    // ---- the clock ----

    fn next_event(&self, now: i64) -> Option<i64> {
        if !self.driver_ok || self.unplugged {
            return None;
        }
        let mut next: Option<i64> = None;
        let mut consider = |t: Option<i64>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.ctl_jobs.front().map(|j| j.due));
        consider(self.deferred.iter().map(|d| d.due).min());
        for s in &self.streams {
            consider(s.head_due());
            consider(s.dry_check);
        }
        if !self.events_pending.is_empty() && !self.event_buffers.is_empty() {
            consider(Some(now));
        }
        next
    }

    /// Runs everything due at or before `now`.
    fn run_due(&mut self, now: i64) {
        loop {
            if !self.driver_ok || self.unplugged {
                return;
            }
            let mut progressed = false;
            while self.ctl_jobs.front().is_some_and(|j| j.due <= now) {
                let job = self.ctl_jobs.pop_front().expect("checked");
                self.run_control(job, now);
                progressed = true;
            }
            // Deferred completions in time order, ties in the order they were made.
            let mut due: Vec<Deferred> = Vec::new();
            let mut i = 0;
            while i < self.deferred.len() {
                if self.deferred[i].due <= now {
                    due.push(self.deferred.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            due.sort_by_key(|d| (d.due, d.seq));
            for d in due {
                self.fire(d);
                progressed = true;
            }
            for idx in 0..self.streams.len() {
                while let Some(t) = self.streams[idx].head_due().filter(|&t| t <= now) {
                    self.complete_io(idx, t);
                    progressed = true;
                }
                if self.streams[idx].dry_check.is_some_and(|t| t <= now) {
                    self.dry(idx, now);
                    progressed = true;
                }
            }
            progressed |= self.deliver_events(now);
            if !progressed {
                return;
            }
        }
    }

    /// Device reset: everything the driver gave the device is forgotten.
    fn reset(&mut self) {
        self.mem.release_all();
        self.features = None;
        self.queues_ready = false;
        self.driver_ok = false;
        for q in &mut self.queues {
            let interrupts = q.interrupts;
            *q = Queue {
                interrupts,
                ..Queue::default()
            };
        }
        self.ctl_jobs.clear();
        self.deferred.clear();
        self.event_buffers.clear();
        self.events_pending.clear();
        self.irq_pending.clear();
        for s in &mut self.streams {
            s.reset();
        }
    }
}

/// Writes `data` into the concatenation of `entries`, starting `offset` bytes in, as far as
/// the entries reach. Returns how much was written.
fn scatter(
    mem: &PhysMemory,
    entries: &[PhysEntry],
    offset: usize,
    data: &[u8],
) -> Result<usize, ()> {
    let mut skip = offset as u64;
    let mut rest = data;
    let mut written = 0;
    for e in entries {
        if rest.is_empty() {
            break;
        }
        if skip >= e.size {
            skip -= e.size;
            continue;
        }
        let room = e.size - skip;
        let n = (rest.len() as u64).min(room) as usize;
        let addr = e.address.checked_add(skip).ok_or(())?;
        mem.write(addr, &rest[..n]).map_err(|_| ())?;
        rest = &rest[n..];
        written += n;
        skip = 0;
    }
    Ok(written)
}

/// Reads the concatenation of `entries` (at most `limit` bytes of it, if given).
fn gather(mem: &PhysMemory, entries: &[PhysEntry], limit: Option<u64>) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    for e in entries {
        let take = match limit {
            Some(l) => e.size.min(l.saturating_sub(out.len() as u64)),
            None => e.size,
        };
        if take == 0 {
            continue;
        }
        let bytes = mem.read_vec(e.address, take).map_err(|_| ())?;
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

struct Irq {
    handler: Option<Arc<dyn QueueHandler>>,
    /// The thread inside the driver's handler right now.
    delivering: Option<ThreadId>,
}

struct Shared {
    kernel: SimKernel,
    state: Mutex<State>,
    irq: Mutex<Irq>,
    irq_done: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Calls the driver's handler once per queue, outside the state lock.
    fn deliver(&self, queues: Vec<u16>) {
        for q in queues {
            let handler = {
                let mut irq = lock(&self.irq);
                let Some(h) = irq.handler.clone() else {
                    return;
                };
                irq.delivering = Some(thread::current().id());
                h
            };
            self.state().queues[q as usize].interrupts += 1;
            self.kernel.run_in_interrupt(|| handler.queue_interrupt(q));
            lock(&self.irq).delivering = None;
            self.irq_done.notify_all();
        }
    }
}

impl EventSource for Shared {
    fn next_event(&self) -> Option<i64> {
        let now = self.kernel.clock().now();
        self.state().next_event(now)
    }

    fn run_due(&self, now: i64) {
        let irqs = {
            let mut st = self.state();
            st.run_due(now);
            std::mem::take(&mut st.irq_pending)
        };
        self.deliver(irqs);
    }
}

/// The simulated virtio-snd device. Clones are handles to the same device: give one to the
/// driver and keep one to inspect and to break it.
#[derive(Clone)]
pub struct SndModel {
    shared: Arc<Shared>,
}

impl SndModel {
    /// A device with `config`, driven by `kernel`'s clock and memory.
    pub fn new(kernel: &SimKernel, config: ModelConfig) -> SndModel {
        let streams = config
            .streams
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut s = Stream::new(i as u32, c.clone());
                s.ahead = config.takes_ahead_frames;
                s.mode = match (c.direction, config.playback, config.capture) {
                    (Direction::Output, PlaybackCompletion::Instant, _) => IoMode::Instant,
                    (Direction::Input, _, CaptureCompletion::AtRelease) => IoMode::AtRelease,
                    (Direction::Input, _, CaptureCompletion::Never) => IoMode::Never,
                    _ => IoMode::Paced,
                };
                s
            })
            .collect();
        let jacks = config
            .jacks
            .iter()
            .map(|j| JackState {
                config: j.clone(),
                remap: None,
            })
            .collect();
        let state = State {
            controls: config.controls.clone(),
            config,
            mem: kernel.phys_memory(),
            echo: sim_kernel::report::echo_enabled(),
            features: None,
            queues_ready: false,
            driver_ok: false,
            queues: Default::default(),
            ctl_jobs: VecDeque::new(),
            last_ctl_due: i64::MIN,
            deferred: Vec::new(),
            seq: 0,
            streams,
            jacks,
            event_buffers: VecDeque::new(),
            events_pending: VecDeque::new(),
            faults: HashMap::new(),
            violations: Vec::new(),
            control_log: Vec::new(),
            unplugged: false,
            tlv_commands: Vec::new(),
            irq_pending: Vec::new(),
            empty_polls: (0, 0),
            events_dropped: 0,
            hostile: None,
        };
        let shared = Arc::new(Shared {
            kernel: kernel.clone(),
            state: Mutex::new(state),
            irq: Mutex::new(Irq {
                handler: None,
                delivering: None,
            }),
            irq_done: Condvar::new(),
        });
        let as_source: Arc<dyn EventSource> = shared.clone();
        let weak: Weak<dyn EventSource> = Arc::downgrade(&as_source);
        kernel.clock().add_source(weak);
        SndModel { shared }
    }

    /// QEMU's `virtio-sound-pci` with its defaults.
    pub fn qemu(kernel: &SimKernel) -> SndModel {
        SndModel::new(kernel, ModelConfig::default())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }

    fn now(&self) -> i64 {
        self.shared.kernel.clock().now()
    }

    // ---- the referee ----

    /// Everything the driver did that the spec forbids, in order.
    pub fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// Removes and returns the violations (after provoking one on purpose).
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.state().violations)
    }

    /// Panics with the list unless the driver broke no rule.
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "the driver broke the virtio-snd spec:\n  {}",
            v.join("\n  ")
        );
    }

    /// Every control request answered so far.
    pub fn control_log(&self) -> Vec<ControlRecord> {
        self.state().control_log.clone()
    }

    // ---- breaking it ----

    /// Applies `fault` to every message of `target` until cleared.
    pub fn set_fault(&self, target: impl Into<FaultTarget>, fault: Fault) {
        self.state().faults.insert(
            target.into(),
            FaultSpec {
                fault,
                remaining: None,
            },
        );
    }

    /// Applies `fault` to the next `times` messages of `target`.
    pub fn set_fault_times(&self, target: impl Into<FaultTarget>, fault: Fault, times: u32) {
        if times == 0 {
            return;
        }
        self.state().faults.insert(
            target.into(),
            FaultSpec {
                fault,
                remaining: Some(times),
            },
        );
    }

    pub fn clear_fault(&self, target: impl Into<FaultTarget>) {
        self.state().faults.remove(&target.into());
    }

    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Puts every answer of the device through `hostile` from now on (`None`: honest again).
    pub fn set_hostile(&self, hostile: Option<Box<dyn Hostile>>) {
        self.state().hostile = hostile;
    }

    /// Queues an event for the next free event buffer.
    pub fn inject_event(&self, event: DeviceEvent) {
        self.state().events_pending.push_back(event);
    }

    /// Plugs or unplugs a jack: JACK_INFO changes and a jack event is sent.
    pub fn set_jack_connected(&self, jack: u32, connected: bool) {
        let mut st = self.state();
        if let Some(j) = st.jacks.get_mut(jack as usize) {
            j.config.connected = connected;
        }
        let ev = if connected {
            DeviceEvent::JackConnected { jack_id: jack }
        } else {
            DeviceEvent::JackDisconnected { jack_id: jack }
        };
        st.events_pending.push_back(ev);
    }

    /// Changes a control's value from the host side, optionally telling the driver.
    pub fn set_ctl_value(&self, control: u32, value: CtlValue, notify: bool) {
        let mut st = self.state();
        if let Some(c) = st.controls.get_mut(control as usize) {
            c.value = value;
            if notify {
                st.events_pending.push_back(DeviceEvent::CtlNotify {
                    control_id: control as u16,
                    mask: 1 << vs::VIRTIO_SND_CTL_EVT_MASK_VALUE,
                });
            }
        }
    }

    // ---- ground truth ----

    pub fn stream_state(&self, stream: u32) -> Option<PcmState> {
        self.state().streams.get(stream as usize).map(|s| s.state)
    }

    /// The parameters of the last PREPARE.
    pub fn stream_params(&self, stream: u32) -> Option<StreamParams> {
        self.state().streams.get(stream as usize)?.prepared
    }

    /// Every byte played on `stream`, in order.
    pub fn played(&self, stream: u32) -> Vec<u8> {
        self.state()
            .streams
            .get(stream as usize)
            .map(|s| s.played.clone())
            .unwrap_or_default()
    }

    /// Playback frames STOP threw away: taken ahead (`takes_ahead_frames`) and never played.
    pub fn dropped_frames(&self, stream: u32) -> u64 {
        self.state()
            .streams
            .get(stream as usize)
            .map_or(0, |s| s.dropped_frames)
    }

    /// XRUN events the device had to drop because no event buffer was free.
    pub fn events_dropped(&self) -> u64 {
        self.state().events_dropped
    }

    /// Every byte captured on `stream`, in order.
    pub fn recorded(&self, stream: u32) -> Vec<u8> {
        self.state()
            .streams
            .get(stream as usize)
            .map(|s| s.recorded.clone())
            .unwrap_or_default()
    }

    /// Every completed period of `stream`, with the time its last frame was done.
    pub fn periods(&self, stream: u32) -> Vec<PeriodRecord> {
        self.state()
            .streams
            .get(stream as usize)
            .map(|s| s.periods.clone())
            .unwrap_or_default()
    }

    /// Takes the device off the bus, as a surprise removal does (or QEMU's `device_del`
    /// once the guest has let the slot go): from now on nothing completes, no interrupt is
    /// raised, chains queued before or after stay with the device (and keep their memory
    /// held), and configuration reads answer all ones, as a PCI read of a missing function
    /// does. A reset (`free_queues`) still forgets what the device held.
    pub fn unplug(&self) {
        self.state().unplugged = true;
    }

    /// Whether [`SndModel::unplug`] took the device off the bus.
    pub fn is_unplugged(&self) -> bool {
        self.state().unplugged
    }

    /// Takes what `stream` played, captured and completed so far ([`SndModel::played`],
    /// [`SndModel::recorded`], [`SndModel::periods`]), leaving those records empty: a long
    /// run (the soak) checks its ground truth piece by piece instead of keeping hours of
    /// audio. The capture pattern goes on where it was. Take them while the stream is
    /// stopped: a STOP that throws away frames taken ahead removes them from `played`.
    pub fn take_records(&self, stream: u32) -> StreamRecords {
        let mut st = self.state();
        match st.streams.get_mut(stream as usize) {
            Some(s) => StreamRecords {
                played: std::mem::take(&mut s.played),
                recorded: std::mem::take(&mut s.recorded),
                periods: std::mem::take(&mut s.periods),
            },
            None => StreamRecords::default(),
        }
    }

    /// When `stream` ran dry while started (underruns for playback, overruns for capture).
    pub fn xruns(&self, stream: u32) -> Vec<i64> {
        self.state()
            .streams
            .get(stream as usize)
            .map(|s| s.xrun_times.clone())
            .unwrap_or_default()
    }

    /// The bytes the model captures at `byte_offset .. byte_offset + len` of `stream`'s
    /// capture (counted from the first captured byte), in the stream's current format.
    pub fn expected_capture(&self, stream: u32, byte_offset: u64, len: usize) -> Vec<u8> {
        let st = self.state();
        match st.streams.get(stream as usize) {
            Some(s) => s.pattern(byte_offset, len),
            None => Vec::new(),
        }
    }

    /// Chains the device holds on `queue` (queued, not yet used; lost ones excluded).
    pub fn held(&self, queue: u16) -> usize {
        let st = self.state();
        let waiting = match queue {
            vs::VIRTIO_SND_VQ_CONTROL => st.ctl_jobs.len(),
            vs::VIRTIO_SND_VQ_EVENT => st.event_buffers.len(),
            vs::VIRTIO_SND_VQ_TX | vs::VIRTIO_SND_VQ_RX => {
                let dir = queue_direction(queue);
                st.streams
                    .iter()
                    .filter(|s| Some(s.cfg.direction) == dir)
                    .map(|s| s.io.len())
                    .sum()
            }
            _ => 0,
        };
        waiting + st.deferred.iter().filter(|d| d.queue == queue).count()
    }

    /// Ring slots in use on `queue`: queued and not yet dequeued by the driver.
    pub fn in_flight(&self, queue: u16) -> usize {
        self.state()
            .queues
            .get(queue as usize)
            .map_or(0, |q| q.in_flight)
    }

    /// Used chains the driver has not dequeued yet.
    pub fn used_pending(&self, queue: u16) -> usize {
        self.state()
            .queues
            .get(queue as usize)
            .map_or(0, |q| q.used.len())
    }

    /// Chains dropped on purpose (lost faults, requests too short to answer).
    pub fn lost(&self, queue: u16) -> usize {
        self.state()
            .queues
            .get(queue as usize)
            .map_or(0, |q| q.lost)
    }

    /// How many times the driver's handler was called for `queue`.
    pub fn interrupts(&self, queue: u16) -> u64 {
        self.state()
            .queues
            .get(queue as usize)
            .map_or(0, |q| q.interrupts)
    }

    pub fn negotiated_features(&self) -> Option<u64> {
        self.state().features
    }

    /// Whether `setup_interrupts` ran (DRIVER_OK) since the last reset.
    pub fn is_driver_ok(&self) -> bool {
        self.state().driver_ok
    }

    pub fn ctl_value(&self, control: u32) -> Option<CtlValue> {
        self.state().controls.get(control as usize).map(|c| c.value)
    }

    /// TLV commands received, as (control id, TLV bytes).
    pub fn tlv_commands(&self) -> Vec<(u32, Vec<u8>)> {
        self.state().tlv_commands.clone()
    }

    /// The (association, sequence) a JACK_REMAP set on `jack`.
    pub fn jack_remap(&self, jack: u32) -> Option<(u32, u32)> {
        self.state().jacks.get(jack as usize)?.remap
    }

    pub fn config(&self) -> ModelConfig {
        self.state().config.clone()
    }
}

impl SndModel {
    /// `queue_request`, safe here: the model reaches memory only by physical address
    /// through [`PhysMemory`], which refuses anything outside a live area, and it records
    /// the deletion of an area under a chain it holds as a failure.
    pub fn queue_request(
        &self,
        queue: u16,
        entries: &[PhysEntry],
        readable: usize,
        cookie: u64,
    ) -> KResult {
        // SAFETY: the model never dereferences an address it is given (see above), so no
        // lifetime of the entries' memory matters to it.
        unsafe { <Self as VirtioDevice>::queue_request(self, queue, entries, readable, cookie) }
    }
}

impl VirtioDevice for SndModel {
    fn negotiate_features(&self, supported: u64) -> KResult<u64> {
        let _sim = SimCode::enter();
        let mut st = self.state();
        if st.queues_ready {
            st.violation("negotiate_features after alloc_queues".into());
        }
        let mut offered = VIRTIO_FEATURE_VERSION_1;
        if st.config.offer_ctls {
            offered |= 1 << vs::VIRTIO_SND_F_CTLS;
        }
        if supported & VIRTIO_FEATURE_VERSION_1 == 0 {
            st.violation(
                "negotiate_features without VIRTIO_F_VERSION_1 (virtio-snd is modern-only)".into(),
            );
            return Err(Status::NOT_SUPPORTED);
        }
        let negotiated = supported & offered;
        st.features = Some(negotiated);
        Ok(negotiated)
    }

    fn read_device_config(&self, offset: u8, buf: &mut [u8]) -> KResult {
        let _sim = SimCode::enter();
        let mut st = self.state();
        if st.unplugged {
            // A read of a function that is gone: the bus answers all ones.
            buf.fill(0xff);
            return Ok(());
        }
        let size = usize::from(st.config.config_size.min(16));
        let start = usize::from(offset);
        let end = start + buf.len();
        if end > size {
            st.violation(format!(
                "read_device_config({offset}, {} bytes) past the {size}-byte config space",
                buf.len()
            ));
            return Err(Status::BAD_VALUE);
        }
        let ctls = st
            .features
            .is_some_and(|f| f & (1 << vs::VIRTIO_SND_F_CTLS) != 0);
        if end > 12 && !ctls {
            st.violation(
                "read `controls` from config space without VIRTIO_SND_F_CTLS negotiated".into(),
            );
        }
        let mut space = [0u8; 16];
        for (i, c) in st.config.counts().iter().enumerate() {
            space[4 * i..4 * i + 4].copy_from_slice(&c.to_le_bytes());
        }
        if let Some(h) = st.hostile.as_mut() {
            h.config(&mut space);
        }
        buf.copy_from_slice(&space[start..end]);
        Ok(())
    }

    fn alloc_queues(&self, count: usize) -> KResult {
        let _sim = SimCode::enter();
        let mut st = self.state();
        if st.features.is_none() {
            st.violation("alloc_queues before negotiate_features".into());
        }
        if st.queues_ready {
            st.violation("alloc_queues called twice".into());
            return Err(Status::BAD_VALUE);
        }
        if count != QUEUES {
            st.violation(format!(
                "alloc_queues({count}): virtio-snd has exactly 4 queues"
            ));
            return Err(Status::BAD_VALUE);
        }
        st.queues_ready = true;
        Ok(())
    }

    fn setup_interrupts(&self, handler: Arc<dyn QueueHandler>) -> KResult {
        let _sim = SimCode::enter();
        let mut st = self.state();
        if !st.queues_ready {
            st.violation("setup_interrupts before alloc_queues".into());
            return Err(Status::NO_INIT);
        }
        lock(&self.shared.irq).handler = Some(handler);
        st.driver_ok = true;
        Ok(())
    }

    unsafe fn queue_request(
        &self,
        queue: u16,
        entries: &[PhysEntry],
        readable: usize,
        cookie: u64,
    ) -> KResult {
        let _sim = SimCode::enter();
        let now = self.now();
        let mut st = self.state();
        if queue as usize >= QUEUES {
            st.violation(format!("queue_request on queue {queue}, there are 4"));
            return Err(Status::BAD_VALUE);
        }
        if !st.queues_ready {
            st.violation(format!(
                "queue_request on queue {queue} before alloc_queues"
            ));
            return Err(Status::NO_INIT);
        }
        if entries.is_empty() || readable > entries.len() {
            st.violation(format!(
                "queue_request on queue {queue} with {} entries, {readable} readable",
                entries.len()
            ));
            return Err(Status::BAD_VALUE);
        }
        let weight = if st.config.count_descriptors {
            entries.len()
        } else {
            1
        };
        let size = usize::from(st.config.queue_size);
        if weight > size || st.queues[queue as usize].in_flight + weight > size {
            return Err(Status::BUSY);
        }
        if entries.iter().any(|e| e.size == 0) {
            st.violation(format!(
                "queue_request on queue {queue} with a zero-length entry"
            ));
        }
        st.queues[queue as usize].in_flight += weight;
        *st.queues[queue as usize].posted.entry(cookie).or_insert(0) += 1;
        // The device holds the chain's memory until it puts the chain on the used ring (or
        // is reset): deleting an area under it is flagged at once.
        let ticket = Ticket {
            weight,
            hold: st.mem.hold(queue, cookie, entries),
        };
        let chain = Chain {
            entries: entries.to_vec(),
            readable,
            cookie,
            ticket,
        };
        match queue {
            vs::VIRTIO_SND_VQ_CONTROL => {
                // The device reads the request when notified, i.e. now.
                let bytes = gather(&st.mem, chain.readable(), Some(16 + 8 + 65536)).ok();
                let code = bytes.as_ref().filter(|b| b.len() >= 4).and_then(|b| {
                    RequestCode::from_raw(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                });
                let target = bytes
                    .as_ref()
                    .filter(|b| b.len() >= 8)
                    .map(|b| u32::from_le_bytes([b[4], b[5], b[6], b[7]]));
                let fault = code
                    .zip(target)
                    .and_then(|(c, id)| st.take_fault(FaultTarget::ControlOf(c, id)))
                    .or_else(|| code.and_then(|c| st.take_fault(FaultTarget::Control(c))))
                    .or_else(|| st.take_fault(FaultTarget::AnyControl));
                let extra = match fault {
                    Some(Fault::Lost) => {
                        st.queues[queue as usize].lost += 1;
                        return Ok(());
                    }
                    Some(Fault::Delay(us)) => us.max(0),
                    _ => 0,
                };
                let latency = st.config.control_latency.max(0);
                let due = now
                    .saturating_add(latency)
                    .saturating_add(extra)
                    .max(st.last_ctl_due);
                st.last_ctl_due = due;
                st.ctl_jobs.push_back(CtlJob {
                    due,
                    chain,
                    readable: bytes,
                    fault,
                });
            }
            vs::VIRTIO_SND_VQ_EVENT => {
                let wlen = total_len(chain.writable());
                if chain.readable > 0 || wlen < 8 {
                    st.violation(format!(
                        "event buffer with {} readable entries and {wlen} writable bytes (needs 0 and >= 8)",
                        chain.readable
                    ));
                    st.complete_at(now, queue, cookie, ticket, 0, Vec::new());
                } else {
                    st.event_buffers.push_back(chain);
                }
            }
            _ => st.queue_io(queue, chain, now),
        }
        Ok(())
    }

    fn queue_dequeue(&self, queue: u16) -> Option<(u64, u32)> {
        let _sim = SimCode::enter();
        let now = self.now();
        let mut st = self.state();
        let q = st.queues.get_mut(queue as usize)?;
        // An invented entry naming a chain the device holds (again) is not handed out.
        while q
            .used
            .front()
            .is_some_and(|&(c, _, _, invented)| invented && q.posted.contains_key(&c))
        {
            q.used.pop_front();
        }
        let Some((cookie, len, weight, _)) = q.used.pop_front() else {
            let (at, n) = st.empty_polls;
            st.empty_polls = if at == now { (now, n + 1) } else { (now, 1) };
            if st.empty_polls.1 == BUSY_POLL_LIMIT {
                drop(st);
                let msg = format!(
                    "queue_dequeue({queue}) came back empty {BUSY_POLL_LIMIT} times at {now} µs: \
                     the driver busy-polls, and simulated time only moves when it waits"
                );
                self.shared.kernel.record_failure(msg.clone());
                panic!("{msg}");
            }
            return None;
        };
        q.in_flight = q.in_flight.saturating_sub(weight);
        st.empty_polls = (now, 0);
        Some((cookie, len))
    }

    fn queue_size(&self, queue: u16) -> u16 {
        let _sim = SimCode::enter();
        if (queue as usize) < QUEUES {
            self.state().config.queue_size
        } else {
            0
        }
    }

    fn free_interrupts(&self) {
        let _sim = SimCode::enter();
        let me = thread::current().id();
        let mut irq = lock(&self.shared.irq);
        irq.handler = None;
        if irq.delivering == Some(me) {
            drop(irq);
            self.state()
                .violation("free_interrupts called from the interrupt handler".into());
            return;
        }
        while irq.delivering.is_some() {
            irq = self
                .shared
                .irq_done
                .wait(irq)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn free_queues(&self) -> KResult {
        let _sim = SimCode::enter();
        self.state().reset();
        Ok(())
    }
}

impl sim_kernel::BusDevice for SndModel {
    fn in_flight(&self, queue: u16) -> usize {
        SndModel::in_flight(self, queue)
    }
    fn violations(&self) -> Vec<String> {
        SndModel::violations(self)
    }
}
