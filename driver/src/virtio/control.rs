//! The control queue: one request at a time, each in its own DMA slot, completed by the
//! interrupt callback and waited for on a semaphore with a timeout (no busy polling).
//!
//! A request the device never answers leaves its slot "abandoned" until the device hands it
//! back; the next request uses another slot, and when every slot is stuck requests fail at
//! once with `B_DEV_TIMEOUT` instead of hanging.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use spec::virtio_snd::{ControlRequest, QueueIndex, Request, RequestCode, StatusCode};
use spec::DecodeError;

use platform::dma::DmaRegion;
use platform::sync::{SemLock, Semaphore, SpinLock};
use platform::{KResult, Kernel, LogLevel, Status, VirtioDevice};

/// Slots that may be in flight (or abandoned) at once.
pub const SLOTS: usize = 4;
/// Bytes of one slot: the request part, then the reply part.
const SLOT_SIZE: usize = 16 * 1024;
/// Room for the device-readable part (header, a 512-byte value, or a small TLV).
pub const REQUEST_MAX: usize = 2 * 1024;
/// Room for the device-writable part: enough for 128 enum items of 64 bytes.
pub const REPLY_MAX: usize = SLOT_SIZE - REQUEST_MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Free,
    InFlight(u32),
    Done(u32, u32),
    /// Timed out; freed when the device finally returns it.
    Abandoned(u32),
}

/// The control channel of one device.
pub struct ControlChannel {
    region: DmaRegion,
    slots: SpinLock<([Slot; SLOTS], u32)>,
    done: Semaphore,
    serial: SemLock,
    timeout_micros: i64,
    /// The device is gone (`device_removed`): nothing will answer again.
    gone: AtomicBool,
}

impl core::fmt::Debug for ControlChannel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ControlChannel")
            .field("timeout_micros", &self.timeout_micros)
            .finish()
    }
}

fn cookie(slot: usize, seq: u32) -> u64 {
    ((seq as u64) << 8) | slot as u64
}

/// The status for a reply that did not decode, logged.
fn refused<K: Kernel>(kernel: &K, code: RequestCode, e: DecodeError) -> Status {
    match e {
        DecodeError::Status(s) => {
            kernel.log(
                LogLevel::Debug,
                format_args!("control {code:?}: device status {s:#x}"),
            );
            status_of(s)
        }
        e => {
            kernel.log(
                LogLevel::Error,
                format_args!("control {code:?}: malformed reply: {e}"),
            );
            Status::BAD_DATA
        }
    }
}

/// The Haiku status for a virtio status code.
pub fn status_of(code: u32) -> Status {
    match StatusCode::from_raw(code) {
        Some(StatusCode::NotSupp) => Status::NOT_SUPPORTED,
        Some(StatusCode::IoErr) => Status::IO_ERROR,
        Some(StatusCode::BadMsg) => Status::BAD_VALUE,
        // OK is no error, and a status the spec does not define is a device fault.
        Some(StatusCode::Ok) | None => Status::BAD_DATA,
    }
}

impl ControlChannel {
    pub fn new<K: Kernel>(kernel: &K, timeout_micros: i64) -> KResult<Self> {
        let region = DmaRegion::new(kernel, "virtio_sound control", SLOTS * SLOT_SIZE)?;
        let done = match Semaphore::new(kernel, 0, "virtio_sound control done") {
            Ok(s) => s,
            Err(e) => {
                // SAFETY: nothing was ever queued from the region.
                unsafe { region.free(kernel) };
                return Err(e);
            }
        };
        let serial = match SemLock::new(kernel, "virtio_sound control lock") {
            Ok(s) => s,
            Err(e) => {
                done.destroy(kernel);
                // SAFETY: nothing was ever queued from the region.
                unsafe { region.free(kernel) };
                return Err(e);
            }
        };
        Ok(ControlChannel {
            region,
            slots: SpinLock::new(([Slot::Free; SLOTS], 0)),
            done,
            serial,
            timeout_micros,
            gone: AtomicBool::new(false),
        })
    }

    /// Frees the channel after the device was reset (`reset`: `free_queues` returned `Ok`).
    /// A slot the device never answered is a chain it may still write: then the region is
    /// leaked, not freed.
    pub fn destroy<K: Kernel>(self, kernel: &K, reset: bool) {
        self.serial.destroy(kernel);
        self.done.destroy(kernel);
        let held = self
            .slots
            .into_inner()
            .0
            .iter()
            .filter(|s| !matches!(s, Slot::Free | Slot::Done(..)))
            .count();
        if held > 0 || !reset {
            self.region.leak(
                kernel,
                format_args!("{held} control requests were never answered (reset: {reset})"),
            );
            return;
        }
        // SAFETY: every slot's chain came back (none is in flight or abandoned) and the
        // device was reset since; the slots are the only chains into the region.
        unsafe { self.region.free(kernel) };
    }

    /// Interrupt side: record one completion. Returns whether it matched a request.
    pub fn complete<K: Kernel>(&self, kernel: &K, cookie: u64, used_len: u32) -> bool {
        let slot = (cookie & 0xff) as usize;
        let seq = (cookie >> 8) as u32;
        let mut g = self.slots.lock(kernel);
        let matched = match g.0.get(slot).copied() {
            Some(Slot::InFlight(s)) if s == seq => {
                g.0[slot] = Slot::Done(seq, used_len);
                true
            }
            Some(Slot::Abandoned(s)) if s == seq => {
                g.0[slot] = Slot::Free;
                false
            }
            _ => false,
        };
        drop(g);
        if matched {
            self.done.release(kernel, true);
        }
        matched
    }

    /// The device has left the machine: no request is sent from now on, and one waiting
    /// for its answer stops waiting (its slot is abandoned: the region is leaked, never
    /// freed, as for any request the device did not answer). Each fails with
    /// `B_DEV_NOT_READY` at once instead of after the timeout.
    pub fn device_gone<K: Kernel>(&self, kernel: &K) {
        self.gone.store(true, Ordering::SeqCst);
        self.done.release(kernel, false);
    }

    /// Whether [`ControlChannel::device_gone`] was called.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Sends `req`, waits for the answer, and hands what it carries (the type the spec pairs
    /// with the request) to `f`.
    pub fn call<K: Kernel, V: VirtioDevice, Q: Request, R>(
        &self,
        kernel: &K,
        dev: &V,
        req: &Q,
        f: impl FnOnce(Q::Response<'_>) -> R,
    ) -> KResult<R> {
        // Only the typing is per request: the exchange and the error reports are not, so
        // the add-on carries one copy of them.
        let msg = req.message();
        if self.is_gone() {
            return Err(Status::DEV_NOT_READY);
        }
        let reply = self.serial.with(kernel, self.timeout_micros * 4, || {
            self.exchange(kernel, dev, &msg)
        })??;
        // Bound before `reply` goes: the response type borrows from it.
        let decoded = match req.decode_response(&reply) {
            Ok(resp) => Ok(f(resp)),
            Err(e) => Err(refused(kernel, msg.code(), e)),
        };
        decoded
    }

    /// Sends `msg` and returns the bytes the device wrote back (no more than it was offered).
    fn exchange<K: Kernel, V: VirtioDevice>(
        &self,
        kernel: &K,
        dev: &V,
        msg: &ControlRequest<'_>,
    ) -> KResult<Vec<u8>> {
        let code = msg.code();
        let reply_len = msg.response_len();
        if self.is_gone() {
            return Err(Status::DEV_NOT_READY);
        }
        if msg.encoded_len() > REQUEST_MAX || reply_len > REPLY_MAX {
            kernel.log(
                LogLevel::Error,
                format_args!(
                    "control {code:?}: message too large ({} + {reply_len} bytes)",
                    msg.encoded_len()
                ),
            );
            return Err(Status::BAD_VALUE);
        }
        let (slot, seq) = {
            let mut g = self.slots.lock(kernel);
            let Some(slot) = g.0.iter().position(|s| *s == Slot::Free) else {
                drop(g);
                kernel.log(
                    LogLevel::Error,
                    format_args!("control {code:?}: every slot is held by an unanswered request"),
                );
                return Err(Status::DEV_TIMEOUT);
            };
            g.1 = g.1.wrapping_add(1) & 0x00ff_ffff;
            let seq = g.1;
            g.0[slot] = Slot::InFlight(seq);
            (slot, seq)
        };
        let base = slot * SLOT_SIZE;
        let used = self.send_and_wait(kernel, dev, msg, base, slot, seq)?;
        // The slot is ours again: copy the reply out and free it.
        let mut reply = vec![0u8; (used as usize).min(reply_len)];
        let read = self.region.read(base + REQUEST_MAX, &mut reply);
        self.slots.lock(kernel).0[slot] = Slot::Free;
        read?;
        if used as usize > reply_len {
            kernel.log(LogLevel::Error, format_args!("control {code:?}: device claims {used} bytes written, {reply_len} were offered"));
            return Err(Status::BAD_DATA);
        }
        Ok(reply)
    }

    fn send_and_wait<K: Kernel, V: VirtioDevice>(
        &self,
        kernel: &K,
        dev: &V,
        msg: &ControlRequest<'_>,
        base: usize,
        slot: usize,
        seq: u32,
    ) -> KResult<u32> {
        let fail = |e: Status| {
            self.slots.lock(kernel).0[slot] = Slot::Free;
            Err(e)
        };
        let mut buf: Vec<u8> = vec![0u8; msg.encoded_len()];
        let n = match msg.encode(&mut buf) {
            Ok(n) => n,
            Err(_) => return fail(Status::BAD_VALUE),
        };
        let reply_len = msg.response_len();
        if let Err(e) = self.region.write(base, &buf[..n]) {
            return fail(e);
        }
        // Zero the reply area so a short answer cannot pass off stale bytes as fresh.
        if let Err(e) = self.region.write(base + REQUEST_MAX, &vec![0u8; reply_len]) {
            return fail(e);
        }
        let entries = match (
            self.region.entry(base, n),
            self.region.entry(base + REQUEST_MAX, reply_len),
        ) {
            (Ok(a), Ok(b)) => [a, b],
            (Err(e), _) | (_, Err(e)) => return fail(e),
        };
        let queued = {
            // SAFETY: both entries are in `self.region`, which lives as long as the channel
            // and is leaked, not freed, while a slot is in flight or abandoned (`destroy`);
            // the slot is marked in flight, so nothing else writes its request part until it
            // comes back.
            unsafe { dev.queue_request(QueueIndex::Control as u16, &entries, 1, cookie(slot, seq)) }
        };
        if let Err(e) = queued {
            return fail(e);
        }
        let deadline = kernel.system_time().saturating_add(self.timeout_micros);
        loop {
            if let Slot::Done(s, used) = self.slots.lock(kernel).0[slot] {
                if s == seq {
                    return Ok(used);
                }
            }
            let left = deadline - kernel.system_time();
            if left <= 0 || self.is_gone() {
                let mut g = self.slots.lock(kernel);
                if let Slot::Done(s, used) = g.0[slot] {
                    if s == seq {
                        return Ok(used);
                    }
                }
                g.0[slot] = Slot::Abandoned(seq);
                drop(g);
                if self.is_gone() {
                    // Whoever else waits looks again too.
                    self.done.release(kernel, false);
                    return Err(Status::DEV_NOT_READY);
                }
                kernel.log(
                    LogLevel::Error,
                    format_args!(
                        "control {:?}: no answer within {} ms",
                        msg.code(),
                        self.timeout_micros / 1000
                    ),
                );
                return Err(Status::DEV_TIMEOUT);
            }
            // A release left over from a late completion of an earlier request only makes
            // this loop look again.
            let _ = self.done.acquire(kernel, left);
        }
    }
}
