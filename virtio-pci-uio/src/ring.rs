//! A split virtqueue (virtio 1.x §2.7) seen from the driver side: descriptor table, available
//! ring and used ring in memory shared with the device, with the bookkeeping (free
//! descriptors, cookies, in-flight chains) kept in private memory the device cannot corrupt.

use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use platform::{PhysEntry, Status};

/// `VIRTQ_DESC_F_NEXT`: the chain continues in `next`.
pub const DESC_F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: the buffer is device-writable.
pub const DESC_F_WRITE: u16 = 2;
/// `VIRTQ_AVAIL_F_NO_INTERRUPT`: the driver polls, the device need not interrupt (set in a
/// new ring; [`SplitRing::set_interrupts`] clears it).
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Where the three parts of a split ring of `size` entries go in one block of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLayout {
    pub size: u16,
    /// Descriptor table: 16 bytes per entry, 16-byte aligned (offset 0).
    pub desc: usize,
    /// Available ring: flags, idx, `size` entries, used_event; 2-byte aligned.
    pub avail: usize,
    /// Used ring: flags, idx, `size` {id, len} pairs, avail_event; 4-byte aligned.
    pub used: usize,
    /// Total bytes, a multiple of 64.
    pub total: usize,
}

impl RingLayout {
    pub fn new(size: u16) -> RingLayout {
        let n = usize::from(size);
        let desc = 0;
        let avail = desc + 16 * n;
        // The used ring only needs 4-byte alignment; a cache line keeps the driver-written
        // and device-written parts apart.
        let used = (avail + 6 + 2 * n).next_multiple_of(64);
        let total = (used + 6 + 8 * n).next_multiple_of(64);
        RingLayout {
            size,
            desc,
            avail,
            used,
            total,
        }
    }
}

/// A primitive the ring memory holds (little-endian on the wire; x86_64 is little-endian, and
/// the conversions below make that explicit).
pub trait Word: Copy {
    const SIZE: usize;
    /// Every bit set: what a read of a PCI function that is no longer there returns.
    const ONES: Self;
    fn le_to_native(self) -> Self;
    fn native_to_le(self) -> Self;
}

macro_rules! word {
    ($($t:ty),*) => {$(
        impl Word for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            const ONES: Self = <$t>::MAX;
            fn le_to_native(self) -> Self { <$t>::from_le(self) }
            fn native_to_le(self) -> Self { <$t>::to_le(self) }
        }
    )*};
}
word!(u8, u16, u32, u64);

/// Memory shared with a device: reached only through volatile, bounds- and alignment-checked
/// accesses, never through Rust references (the device changes it behind our back).
pub struct SharedMem {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `SharedMem` is an address range outside every Rust object; every access is a
// volatile read or write of a primitive. The driver side's accesses are serialised by the
// queue's Mutex (the ring bookkeeping is behind it), so the only concurrent writer is the
// device, which Rust's memory model does not see; ordering with it is done by the fences
// the virtio protocol asks for.
unsafe impl Send for SharedMem {}
// SAFETY: as above.
unsafe impl Sync for SharedMem {}

impl SharedMem {
    /// # Safety
    ///
    /// `ptr..ptr+len` must be readable and writable (memory or device registers) and stay
    /// mapped for the life of the value; no Rust reference may point into it meanwhile
    /// (only raw, volatile accesses, by this or another `SharedMem`, or by a device).
    pub unsafe fn new(ptr: NonNull<u8>, len: usize) -> SharedMem {
        SharedMem { ptr, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether a `T` at `off` is inside the range and naturally aligned (as an address).
    fn in_bounds<T: Word>(&self, off: usize) -> bool {
        off.checked_add(T::SIZE).is_some_and(|e| e <= self.len)
            && (self.ptr.as_ptr() as usize).wrapping_add(off) % T::SIZE == 0
    }

    /// Reads a little-endian `T` at `off`; an out-of-range or misaligned offset (a bug in the
    /// caller, never the device's doing) reads as zero.
    pub fn read<T: Word + Default>(&self, off: usize) -> T {
        if !self.in_bounds::<T>(off) {
            debug_assert!(false, "shared memory read at {off} out of range");
            return T::default();
        }
        // SAFETY: `off + size_of::<T>() <= len` and the address is a multiple of T's size
        // (T's alignment), so the access lies inside the range `new`'s contract makes valid;
        // volatile because the device changes it concurrently (and for registers, each
        // access must happen exactly once, at exactly this width).
        unsafe { self.ptr.as_ptr().add(off).cast::<T>().read_volatile() }.le_to_native()
    }

    /// Writes a little-endian `T` at `off`; an out-of-range offset is ignored.
    pub fn write<T: Word>(&self, off: usize, value: T) {
        if !self.in_bounds::<T>(off) {
            debug_assert!(false, "shared memory write at {off} out of range");
            return;
        }
        // SAFETY: as in `read`: in bounds, aligned, valid by `new`'s contract.
        unsafe {
            self.ptr
                .as_ptr()
                .add(off)
                .cast::<T>()
                .write_volatile(value.native_to_le())
        }
    }
}

/// A request the device holds: its cookie and the length of its descriptor chain.
#[derive(Clone, Copy, Debug)]
struct Slot {
    cookie: u64,
    count: u16,
}

/// The driver side of one split virtqueue.
pub struct SplitRing {
    mem: SharedMem,
    phys: u64,
    layout: RingLayout,
    /// Free descriptor indices (a stack; capacity `size`, so pushes never allocate).
    free: Vec<u16>,
    /// Private copy of each descriptor's `next` link, so freeing a chain never trusts the
    /// shared table.
    next: Vec<u16>,
    /// By head descriptor: the request the device holds.
    slots: Vec<Option<Slot>>,
    /// The next available index the driver publishes.
    avail_idx: u16,
    /// The next used index the driver consumes.
    last_used: u16,
    in_flight: usize,
    anomalies: Vec<String>,
    anomaly_count: u64,
}

const MAX_ANOMALIES_KEPT: usize = 32;

impl SplitRing {
    /// Lays out an empty ring of `size` entries in `mem` (at least `RingLayout::new(size)
    /// .total` bytes), whose first byte is at physical address `phys`.
    pub fn new(mem: SharedMem, phys: u64, size: u16) -> Result<SplitRing, String> {
        if size == 0 || !size.is_power_of_two() || size > 32768 {
            return Err(format!(
                "queue size {size}: a split ring needs a power of two up to 32768"
            ));
        }
        let layout = RingLayout::new(size);
        if mem.len() < layout.total {
            return Err(format!(
                "ring of {size} entries needs {} bytes, got {}",
                layout.total,
                mem.len()
            ));
        }
        for off in (0..layout.total).step_by(8) {
            mem.write::<u64>(off, 0);
        }
        mem.write::<u16>(layout.avail, AVAIL_F_NO_INTERRUPT);
        let n = usize::from(size);
        Ok(SplitRing {
            mem,
            phys,
            layout,
            free: (0..size).rev().collect(),
            next: vec![0; n],
            slots: vec![None; n],
            avail_idx: 0,
            last_used: 0,
            in_flight: 0,
            anomalies: Vec::new(),
            anomaly_count: 0,
        })
    }

    pub fn size(&self) -> u16 {
        self.layout.size
    }

    /// Asks the device to interrupt when it uses buffers (`on`), or not
    /// (`VIRTQ_AVAIL_F_NO_INTERRUPT`, for a driver that polls). A hint the device may ignore.
    pub fn set_interrupts(&mut self, on: bool) {
        let flags = if on { 0 } else { AVAIL_F_NO_INTERRUPT };
        self.mem.write::<u16>(self.layout.avail, flags);
        fence(Ordering::SeqCst);
    }

    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    /// Physical address of the descriptor table (`queue_desc`).
    pub fn desc_phys(&self) -> u64 {
        self.phys + self.layout.desc as u64
    }

    /// Physical address of the available ring (`queue_driver`).
    pub fn avail_phys(&self) -> u64 {
        self.phys + self.layout.avail as u64
    }

    /// Physical address of the used ring (`queue_device`).
    pub fn used_phys(&self) -> u64 {
        self.phys + self.layout.used as u64
    }

    /// Chains posted and not yet taken back with `pop_used`.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Device misbehaviour seen so far (the first few messages, and the total count).
    pub fn anomalies(&self) -> (&[String], u64) {
        (&self.anomalies, self.anomaly_count)
    }

    fn anomaly(&mut self, msg: impl FnOnce() -> String) {
        self.anomaly_count += 1;
        if self.anomalies.len() < MAX_ANOMALIES_KEPT {
            self.anomalies.push(msg());
        }
    }

    /// Posts a chain: `entries[..readable]` device-readable, the rest device-writable.
    /// `Err(BUSY)` when there are not enough free descriptors, `Err(BAD_VALUE)` for a
    /// malformed request. Does not notify the device.
    pub fn add(
        &mut self,
        entries: &[PhysEntry],
        readable: usize,
        cookie: u64,
    ) -> Result<(), Status> {
        if entries.is_empty()
            || readable > entries.len()
            || entries.iter().any(|e| e.size > u64::from(u32::MAX))
        {
            return Err(Status::BAD_VALUE);
        }
        if entries.len() > self.free.len() {
            return Err(Status::BUSY);
        }
        let count = entries.len() as u16;
        // Take the descriptors first so every link is known when writing.
        let start = self.free.len() - entries.len();
        let head = self.free[self.free.len() - 1];
        // Pop in stack order: the last element is used first.
        let mut prev: Option<u16> = None;
        for (i, e) in entries.iter().enumerate() {
            let Some(d) = self.free.pop() else {
                return Err(Status::BUSY); // unreachable: checked above
            };
            if let Some(p) = prev {
                self.next[usize::from(p)] = d;
                self.mem.write::<u16>(self.desc_off(p) + 14, d);
            }
            let mut flags = if i >= readable { DESC_F_WRITE } else { 0 };
            if i + 1 < entries.len() {
                flags |= DESC_F_NEXT;
            }
            let off = self.desc_off(d);
            self.mem.write::<u64>(off, e.address);
            self.mem.write::<u32>(off + 8, e.size as u32);
            self.mem.write::<u16>(off + 12, flags);
            self.mem.write::<u16>(off + 14, 0);
            prev = Some(d);
        }
        debug_assert_eq!(self.free.len(), start);
        self.slots[usize::from(head)] = Some(Slot { cookie, count });
        let n = self.layout.size;
        let ring_off = self.layout.avail + 4 + 2 * usize::from(self.avail_idx % n);
        self.mem.write::<u16>(ring_off, head);
        // The entry (and the descriptors) must be visible before the index that publishes it.
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem.write::<u16>(self.layout.avail + 2, self.avail_idx);
        // The index must be visible before the notification the caller sends next.
        fence(Ordering::SeqCst);
        self.in_flight += 1;
        Ok(())
    }

    fn desc_off(&self, d: u16) -> usize {
        self.layout.desc + 16 * usize::from(d)
    }

    /// The device's used index as it is now.
    pub fn device_used_idx(&self) -> u16 {
        let idx = self.mem.read::<u16>(self.layout.used + 2);
        fence(Ordering::SeqCst);
        idx
    }

    /// Takes the next used chain: its cookie and the length the device reported (passed
    /// through as the device wrote it, as Haiku's bus does). Entries that name no posted
    /// chain are skipped and recorded as anomalies.
    pub fn pop_used(&mut self) -> Option<(u64, u32)> {
        let n = self.layout.size;
        let mut runaway_seen = false;
        loop {
            let dev_idx = self.device_used_idx();
            if dev_idx == self.last_used {
                return None;
            }
            let pending = dev_idx.wrapping_sub(self.last_used);
            if usize::from(pending) > self.in_flight && !runaway_seen {
                runaway_seen = true;
                // More used entries than chains posted: some are stale or invented. They are
                // still matched by descriptor id, but the device is not to be trusted.
                let in_flight = self.in_flight;
                self.anomaly(|| {
                    format!("used index moved {pending} ahead with only {in_flight} chains posted")
                });
            }
            let elem = self.layout.used + 4 + 8 * usize::from(self.last_used % n);
            let id = self.mem.read::<u32>(elem);
            let len = self.mem.read::<u32>(elem + 4);
            self.last_used = self.last_used.wrapping_add(1);
            let slot = usize::try_from(id)
                .ok()
                .and_then(|i| self.slots.get_mut(i))
                .and_then(Option::take);
            let Some(slot) = slot else {
                self.anomaly(|| {
                    format!("used element names descriptor {id}, which the device does not hold")
                });
                continue;
            };
            // Free the chain by the private links.
            let mut d = id as u16;
            for i in 0..slot.count {
                self.free.push(d);
                if i + 1 < slot.count {
                    d = self.next[usize::from(d)];
                }
            }
            self.in_flight -= 1;
            return Some((slot.cookie, len));
        }
    }

    /// Whether the device has used chains the driver has not taken.
    pub fn has_used(&self) -> bool {
        self.device_used_idx() != self.last_used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain memory standing in for the DMA region, 8-byte aligned.
    struct Mem {
        _buf: Vec<u64>,
        ptr: NonNull<u8>,
        len: usize,
    }

    impl Mem {
        fn new(len: usize) -> Mem {
            let mut buf = vec![0xa5a5_a5a5_a5a5_a5a5u64; len.div_ceil(8)];
            let ptr = NonNull::new(buf.as_mut_ptr().cast::<u8>()).unwrap();
            Mem {
                _buf: buf,
                ptr,
                len,
            }
        }

        fn shared(&self) -> SharedMem {
            // SAFETY: the Vec's buffer is valid, 8-byte aligned and outlives every test's
            // use of it; after taking the pointer no reference to the Vec is made.
            unsafe { SharedMem::new(self.ptr, self.len) }
        }
    }

    /// The device side: consumes available entries, answers on the used ring.
    struct FakeDevice {
        mem: SharedMem,
        layout: RingLayout,
        last_avail: u16,
        used_idx: u16,
    }

    #[derive(Debug, PartialEq)]
    struct Desc {
        addr: u64,
        len: u32,
        flags: u16,
    }

    impl FakeDevice {
        fn new(mem: SharedMem, layout: RingLayout) -> FakeDevice {
            FakeDevice {
                mem,
                layout,
                last_avail: 0,
                used_idx: 0,
            }
        }

        /// Every new chain: its head and descriptors.
        fn take(&mut self) -> Vec<(u16, Vec<Desc>)> {
            let n = self.layout.size;
            let idx = self.mem.read::<u16>(self.layout.avail + 2);
            let mut out = Vec::new();
            while self.last_avail != idx {
                let head = self
                    .mem
                    .read::<u16>(self.layout.avail + 4 + 2 * usize::from(self.last_avail % n));
                self.last_avail = self.last_avail.wrapping_add(1);
                let mut chain = Vec::new();
                let mut d = head;
                loop {
                    let off = 16 * usize::from(d);
                    let flags = self.mem.read::<u16>(off + 12);
                    chain.push(Desc {
                        addr: self.mem.read::<u64>(off),
                        len: self.mem.read::<u32>(off + 8),
                        flags,
                    });
                    assert!(chain.len() <= usize::from(n), "descriptor loop");
                    if flags & DESC_F_NEXT == 0 {
                        break;
                    }
                    d = self.mem.read::<u16>(off + 14);
                }
                out.push((head, chain));
            }
            out
        }

        fn complete(&mut self, id: u32, len: u32) {
            let n = self.layout.size;
            let elem = self.layout.used + 4 + 8 * usize::from(self.used_idx % n);
            self.mem.write::<u32>(elem, id);
            self.mem.write::<u32>(elem + 4, len);
            self.used_idx = self.used_idx.wrapping_add(1);
            self.mem.write::<u16>(self.layout.used + 2, self.used_idx);
        }
    }

    fn pe(address: u64, size: u64) -> PhysEntry {
        PhysEntry { address, size }
    }

    fn setup(size: u16) -> (Mem, SplitRing, FakeDevice) {
        let layout = RingLayout::new(size);
        let mem = Mem::new(layout.total);
        let ring = SplitRing::new(mem.shared(), 0x10_0000, size).unwrap();
        let dev = FakeDevice::new(mem.shared(), layout);
        (mem, ring, dev)
    }

    #[test]
    fn layout_matches_the_spec_sizes_and_alignments() {
        let l = RingLayout::new(64);
        assert_eq!(l.desc, 0);
        assert_eq!(l.avail, 16 * 64);
        assert!(l.used >= l.avail + 6 + 2 * 64 && l.used % 4 == 0);
        assert!(l.total >= l.used + 6 + 8 * 64);
        let (_m, ring, _d) = setup(64);
        assert_eq!(ring.desc_phys(), 0x10_0000);
        assert_eq!(ring.avail_phys(), 0x10_0000 + 1024);
        assert_eq!(ring.used_phys() % 4, 0);
        assert!(SplitRing::new(Mem::new(4096).shared(), 0, 3).is_err());
        assert!(SplitRing::new(Mem::new(64).shared(), 0, 64).is_err());
    }

    #[test]
    fn chains_are_written_as_the_device_reads_them() {
        let (_m, mut ring, mut dev) = setup(8);
        ring.add(&[pe(0x1000, 16), pe(0x2000, 8), pe(0x3000, 68)], 2, 77)
            .unwrap();
        ring.add(&[pe(0x4000, 8)], 0, 78).unwrap();
        assert_eq!(ring.in_flight(), 2);
        assert_eq!(ring.free_descriptors(), 4);
        let chains = dev.take();
        assert_eq!(chains.len(), 2);
        assert_eq!(
            chains[0].1,
            vec![
                Desc {
                    addr: 0x1000,
                    len: 16,
                    flags: DESC_F_NEXT
                },
                Desc {
                    addr: 0x2000,
                    len: 8,
                    flags: DESC_F_NEXT
                },
                Desc {
                    addr: 0x3000,
                    len: 68,
                    flags: DESC_F_WRITE
                },
            ]
        );
        assert_eq!(
            chains[1].1,
            vec![Desc {
                addr: 0x4000,
                len: 8,
                flags: DESC_F_WRITE
            }]
        );
        // A new ring asks not to be interrupted; `set_interrupts` switches the flag.
        assert_eq!(dev.mem.read::<u16>(dev.layout.avail), AVAIL_F_NO_INTERRUPT);
        ring.set_interrupts(true);
        assert_eq!(dev.mem.read::<u16>(dev.layout.avail), 0);
        ring.set_interrupts(false);
        assert_eq!(dev.mem.read::<u16>(dev.layout.avail), AVAIL_F_NO_INTERRUPT);
        assert!(!ring.has_used());
        assert_eq!(ring.pop_used(), None);

        // Completed out of order.
        dev.complete(u32::from(chains[1].0), 8);
        dev.complete(u32::from(chains[0].0), 68);
        assert!(ring.has_used());
        assert_eq!(ring.pop_used(), Some((78, 8)));
        assert_eq!(ring.pop_used(), Some((77, 68)));
        assert_eq!(ring.pop_used(), None);
        assert_eq!(ring.in_flight(), 0);
        assert_eq!(ring.free_descriptors(), 8);
        assert_eq!(ring.anomalies().1, 0);
    }

    #[test]
    fn busy_when_descriptors_run_out_and_bad_value_for_malformed_chains() {
        let (_m, mut ring, mut dev) = setup(4);
        ring.add(&[pe(1, 1), pe(2, 1), pe(3, 1)], 1, 1).unwrap();
        assert_eq!(ring.add(&[pe(4, 1), pe(5, 1)], 1, 2), Err(Status::BUSY));
        ring.add(&[pe(4, 1)], 1, 3).unwrap();
        assert_eq!(ring.add(&[pe(6, 1)], 1, 4), Err(Status::BUSY));
        assert_eq!(ring.add(&[pe(6, 1); 5], 1, 4), Err(Status::BUSY));
        assert_eq!(ring.add(&[], 0, 5), Err(Status::BAD_VALUE));
        assert_eq!(ring.add(&[pe(6, 1)], 2, 5), Err(Status::BAD_VALUE));
        assert_eq!(ring.add(&[pe(6, 1 << 32)], 1, 5), Err(Status::BAD_VALUE));
        let chains = dev.take();
        assert_eq!(chains.len(), 2, "failed adds publish nothing");
        dev.complete(u32::from(chains[0].0), 0);
        assert_eq!(ring.pop_used(), Some((1, 0)));
        ring.add(&[pe(4, 1), pe(5, 1)], 1, 2).unwrap();
        assert_eq!(ring.in_flight(), 2);
    }

    #[test]
    fn indices_wrap_around_u16() {
        let (_m, mut ring, mut dev) = setup(4);
        for i in 0..70_000u64 {
            ring.add(&[pe(i, 4), pe(i + 1, 4)], 1, i).unwrap();
            ring.add(&[pe(i, 4)], 0, i + 1_000_000).unwrap();
            let chains = dev.take();
            assert_eq!(chains.len(), 2, "iteration {i}");
            for (head, _) in chains.iter().rev() {
                dev.complete(u32::from(*head), 4);
            }
            assert_eq!(ring.pop_used(), Some((i + 1_000_000, 4)));
            assert_eq!(ring.pop_used(), Some((i, 4)));
            assert_eq!(ring.pop_used(), None);
        }
        assert_eq!(ring.free_descriptors(), 4);
        assert_eq!(ring.anomalies().1, 0);
    }

    #[test]
    fn a_misbehaving_device_is_recorded_not_trusted() {
        let (_m, mut ring, mut dev) = setup(4);
        ring.add(&[pe(1, 8), pe(2, 8)], 1, 10).unwrap();
        let chains = dev.take();
        let head = u32::from(chains[0].0);
        // Out of range, a descriptor it does not hold, then the real one (with a length
        // passed through as written, as Haiku's bus does).
        dev.complete(999, 1);
        dev.complete(u32::MAX, 1);
        dev.complete(head ^ 1, 1);
        dev.complete(head, 0xffff_ffff);
        // Scribble on the shared descriptor links: freeing uses the private copy.
        for d in 0..4 {
            dev.mem.write::<u16>(16 * d + 14, 0xffff);
        }
        assert_eq!(ring.pop_used(), Some((10, 0xffff_ffff)));
        assert_eq!(ring.pop_used(), None);
        // The same chain completed twice.
        dev.complete(head, 8);
        assert_eq!(ring.pop_used(), None);
        assert_eq!(ring.free_descriptors(), 4);
        let (msgs, count) = ring.anomalies();
        // Per pop: the used index ran ahead of what was posted (once), then each entry that
        // names nothing the device holds.
        assert_eq!(count, 6, "{msgs:?}");
        assert!(msgs[0].contains("4 ahead with only 1"), "{msgs:?}");
        assert!(msgs[1].contains("descriptor 999"), "{msgs:?}");
        // Still usable.
        ring.add(&[pe(3, 8)], 0, 11).unwrap();
        let c = dev.take();
        dev.complete(u32::from(c[0].0), 8);
        assert_eq!(ring.pop_used(), Some((11, 8)));
    }
}
