//! Fault injection: the ways a real device (or a buggy host) can answer badly.
//!
//! DESIGN §4 promises that a misbehaving device (wrong lengths, error statuses, huge counts,
//! buffers that never come back) gets a clean error or a timeout from the driver, never an
//! out-of-bounds access. These are the misbehaviours, one switch each, settable while the
//! driver runs so a test can break the device in the middle of a stream.

use spec::virtio_snd::RequestCode;

/// Which messages a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultTarget {
    /// Control requests with this code.
    Control(RequestCode),
    /// Control requests with this code naming this stream, jack or control id (checked
    /// before the code-only target): one stream's SET_PARAMS can fail while another's
    /// succeeds.
    ControlOf(RequestCode, u32),
    /// Every control request, whatever its code (checked after the code-specific one).
    AnyControl,
    /// Playback buffers on the tx queue.
    Tx,
    /// Capture buffers on the rx queue.
    Rx,
    /// Event buffers when an event is delivered.
    Event,
}

impl From<RequestCode> for FaultTarget {
    fn from(code: RequestCode) -> Self {
        FaultTarget::Control(code)
    }
}

/// What goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status code (e.g. 0x8003 IO_ERR) and nothing else: used_len 4 for
    /// a control request; for tx/rx the status field carries it (lengths stay normal).
    Status(u32),
    /// Write the normal answer but report this used_len (smaller than the answer).
    ShortReply(u32),
    /// Report a used_len this many bytes larger than the writable space of the chain.
    Oversized(u32),
    /// Complete this many µs later than normal. Control requests stay in order, so later
    /// requests wait behind a delayed one, as on a device that serves them one at a time.
    Delay(i64),
    /// Never complete: the chain stays with the device (and keeps its ring slot).
    Lost,
    /// For *_INFO requests: report a used_len that claims this many more items than were
    /// asked for (only the real items are written). Other messages: as `Oversized`.
    ExtraItems(u32),
    /// Status OK, but the payload is replaced by deterministic garbage (for tx: a garbage
    /// `latency_bytes`; for an event: an unknown event code).
    Garbage,
}

/// A fault and how many more messages it applies to (`None`: until cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FaultSpec {
    pub fault: Fault,
    pub remaining: Option<u32>,
}

/// Deterministic filler for [`Fault::Garbage`]: the same bytes in every run.
pub(crate) fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
