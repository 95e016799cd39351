//! A device under an outside party's control: every answer the model is about to give passes
//! through a [`Hostile`] first, which may rewrite it (the fuzz targets' seam).
//!
//! [`Fault`](crate::Fault) is a fixed list of misbehaviours a test switches on; a `Hostile`
//! decides message by message and byte by byte: the status, payload and `used_len` of every
//! control answer (PCM_INFO, CHMAP_INFO, CTL_INFO, ENUM_ITEMS and TLV payloads included),
//! the status and `used_len` of every tx/rx completion, every event's bytes, the config space,
//! and used-ring entries the driver never queued or already got back.
//!
//! What stays true whatever it says: the model writes only into the writable part of a chain
//! the driver queued (its scatter stops at the chain's end), and it never hands back a chain
//! it still holds before its time. That last rule is not the device being kind: a device that
//! returns a descriptor early and keeps writing its memory defeats any driver (only an IOMMU
//! stops it), so it tests nothing. Used entries a `Hostile` invents are checked against the
//! chains outstanding and dropped if they name one.

/// Rewrites the device's answers. Every method's default leaves the answer as the model made
/// it; each is called with the model's state locked, so it must not call back into the model.
pub trait Hostile: Send {
    /// The answer to the control request whose readable bytes are `request`: `reply` is what
    /// the device writes into the writable part (cut to its length afterwards) and
    /// `used_len` what it reports.
    fn control(&mut self, request: &[u8], reply: &mut Vec<u8>, used_len: &mut u32) {
        let _ = (request, reply, used_len);
    }

    /// A tx (`queue` 2) or rx (3) buffer completing: its 8-byte `virtio_snd_pcm_status` and
    /// the `used_len` reported. For rx the captured frames are written before the status.
    fn io(&mut self, queue: u16, status: &mut [u8; 8], used_len: &mut u32) {
        let _ = (queue, status, used_len);
    }

    /// An event written into an event buffer: its bytes and the `used_len` reported.
    fn event(&mut self, bytes: &mut [u8; 8], used_len: &mut u32) {
        let _ = (bytes, used_len);
    }

    /// The 16 bytes of config space (`jacks`, `streams`, `chmaps`, `controls`) the driver
    /// reads from.
    fn config(&mut self, space: &mut [u8; 16]) {
        let _ = space;
    }

    /// After the device put a chain on `queue`'s used ring: more used entries to put after
    /// it, as `(cookie, used_len)`. `returned` are the cookies this queue handed back most
    /// recently (oldest first; a replay of one is a descriptor used twice). Entries naming
    /// a chain the device still holds are dropped (see the module's documentation).
    fn extra_used(&mut self, queue: u16, returned: &[u64]) -> Vec<(u64, u32)> {
        let _ = (queue, returned);
        Vec::new()
    }
}

/// How many returned cookies per queue are kept for [`Hostile::extra_used`].
pub(crate) const RETURNED_KEPT: usize = 32;
