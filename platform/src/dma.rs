//! Memory the device reaches by physical address: kernel-only regions (control messages,
//! PCM headers and statuses, event buffers) and the user-visible audio buffers.
//!
//! The device reads and writes this memory by physical address while the driver holds it, so
//! the driver never forms a Rust reference into it: every access is a volatile copy at an
//! offset checked against the area's size.
//!
//! Freeing is where a driver can let the device write into somebody else's memory: an area
//! deleted while a chain into it is outstanding (see [`VirtioDevice`]). So a [`DmaRegion`] is
//! freed only by an `unsafe fn` whose contract is exactly that, or leaked; and a
//! [`BufferArea`] is counted, held by every stream that may have a chain into it, and deleted
//! only when the last holder lets go.
//!
//! [`VirtioDevice`]: crate::VirtioDevice

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::{Area, KResult, Kernel, LogLevel, PhysEntry, Status};

/// A kernel-only, physically contiguous area owned by the driver.
///
/// # Invariants
///
/// `area.addr .. area.addr + area.size` is mapped, writable, and used by no one but this
/// driver and the device, for as long as this value lives.
#[derive(Debug)]
pub struct DmaRegion {
    area: Area,
}

/// A zeroed area of at least `size` bytes (whole pages), refused (and deleted) if the kernel
/// handed back less or nothing mapped.
fn create_area<K: Kernel + ?Sized>(
    kernel: &K,
    name: &str,
    size: usize,
    user: bool,
) -> KResult<Area> {
    let size = size.div_ceil(4096).max(1) * 4096;
    let area = kernel.create_area(name, size, user)?;
    if area.size < size || area.addr == 0 {
        // SAFETY: the area was created just now and never given to the device.
        unsafe { kernel.delete_area(&area) };
        return Err(Status::NO_MEMORY);
    }
    Ok(area)
}

impl DmaRegion {
    /// Creates a zeroed kernel-only area of at least `size` bytes.
    pub fn new<K: Kernel>(kernel: &K, name: &str, size: usize) -> KResult<Self> {
        let area = create_area(kernel, name, size, false)?;
        // INVARIANT: `Kernel::create_area` guarantees the mapping (implementation safety)
        // and a kernel-only area is touched by no one else.
        Ok(DmaRegion { area })
    }

    pub fn len(&self) -> usize {
        self.area.size
    }

    pub fn is_empty(&self) -> bool {
        self.area.size == 0
    }

    /// The physical entry for `len` bytes at `offset`.
    pub fn entry(&self, offset: usize, len: usize) -> KResult<PhysEntry> {
        self.check(offset, len)?;
        Ok(PhysEntry {
            address: self.area.phys + offset as u64,
            size: len as u64,
        })
    }

    fn check(&self, offset: usize, len: usize) -> KResult {
        match offset.checked_add(len) {
            Some(end) if end <= self.area.size => Ok(()),
            _ => Err(Status::BAD_VALUE),
        }
    }

    /// Copies `bytes` into the region at `offset`.
    pub fn write(&self, offset: usize, bytes: &[u8]) -> KResult {
        self.check(offset, bytes.len())?;
        let base = self.area.addr as usize as *mut u8;
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: `check` keeps offset + i inside the area, which the type invariant says
            // is mapped and writable; a volatile write because the device may read it.
            unsafe { base.add(offset + i).write_volatile(*b) };
        }
        Ok(())
    }

    /// Copies `out.len()` bytes from the region at `offset`.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> KResult {
        self.check(offset, out.len())?;
        let base = self.area.addr as usize as *const u8;
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: as in `write`; volatile because the device writes this memory.
            *b = unsafe { base.add(offset + i).read_volatile() };
        }
        Ok(())
    }

    /// Releases the area.
    ///
    /// # Safety
    ///
    /// No chain with an entry from this region is outstanding (each came back from
    /// `queue_dequeue`, or `free_queues` returned `Ok` since): the contract of
    /// [`Kernel::delete_area`].
    pub unsafe fn free<K: Kernel>(self, kernel: &K) {
        // SAFETY: this function's own contract.
        unsafe { kernel.delete_area(&self.area) };
    }

    /// Gives the area up without deleting it: for memory a device kept and may still write.
    /// The leak is logged; the memory is never reused.
    pub fn leak<K: Kernel>(self, kernel: &K, why: core::fmt::Arguments<'_>) {
        kernel.log(
            LogLevel::Error,
            format_args!(
                "leaking {} bytes of DMA memory (area {}): {why}",
                self.area.size, self.area.id
            ),
        );
    }
}

/// The user-visible area that holds the hmulti audio buffers: the media add-on reads and
/// writes it directly, the device by physical address.
///
/// A counted handle: the card holds one while the client may use the buffers, and every
/// stream whose periods point into the area holds one while any of them may be with the
/// device. The area is deleted when the last handle drops, unless a holder [`leak`]ed it
/// because its device never gave its chains back.
///
/// [`leak`]: BufferArea::leak
#[derive(Clone)]
pub struct BufferArea {
    owner: Arc<AreaOwner>,
}

/// # Invariants
///
/// While a chain into `area` is outstanding, a [`BufferArea`] handle to this owner exists
/// (held by the stream that queued it), so `drop` runs only when no chain is outstanding,
/// or after `leaked` was set.
struct AreaOwner {
    area: Area,
    kernel: Arc<dyn Kernel>,
    leaked: AtomicBool,
}

impl Drop for AreaOwner {
    fn drop(&mut self) {
        if !*self.leaked.get_mut() {
            // SAFETY: by the type invariant no chain into the area is outstanding when the
            // last handle goes without a leak, and no handle is left to reach `addr`.
            unsafe { self.kernel.delete_area(&self.area) };
        }
    }
}

impl core::fmt::Debug for BufferArea {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BufferArea")
            .field("area", &self.owner.area)
            .finish()
    }
}

impl BufferArea {
    /// A zeroed user-visible area of at least `size` bytes.
    pub fn new<K: Kernel>(kernel: &Arc<K>, name: &str, size: usize) -> KResult<Self> {
        let area = create_area(&**kernel, name, size, true)?;
        // INVARIANT: nothing has been queued from the area yet.
        let owner = Arc::new(AreaOwner {
            area,
            kernel: kernel.clone(),
            leaked: AtomicBool::new(false),
        });
        Ok(BufferArea { owner })
    }

    /// The address the client uses (never dereferenced by the driver).
    pub fn user_addr(&self) -> u64 {
        self.owner.area.addr
    }

    pub fn len(&self) -> usize {
        self.owner.area.size
    }

    pub fn is_empty(&self) -> bool {
        self.owner.area.size == 0
    }

    /// The physical entry for `len` bytes at `offset`.
    pub fn entry(&self, offset: u64, len: u64) -> KResult<PhysEntry> {
        match offset.checked_add(len) {
            Some(end) if end <= self.owner.area.size as u64 => Ok(PhysEntry {
                address: self.owner.area.phys + offset,
                size: len,
            }),
            _ => Err(Status::BAD_VALUE),
        }
    }

    /// Sets `len` bytes at `offset` to `value`, through `user_memset`: the area is mapped
    /// user-accessible, which the kernel must not write directly (SMAP).
    pub fn fill(&self, offset: u64, len: u64, value: u8) -> KResult {
        let entry = self.entry(offset, len)?;
        let len = usize::try_from(entry.size).map_err(|_| Status::BAD_VALUE)?;
        self.owner
            .kernel
            .user_memset(self.owner.area.addr + offset, value, len)
    }

    /// Lets go of a handle whose chains the device never gave back: the area is never
    /// deleted (by this or any other handle), and the leak is logged.
    pub fn leak(self, why: core::fmt::Arguments<'_>) {
        if !self.owner.leaked.swap(true, Ordering::AcqRel) {
            self.owner.kernel.log(
                LogLevel::Error,
                format_args!(
                    "leaking the {}-byte buffer area {}: {why}",
                    self.owner.area.size, self.owner.area.id
                ),
            );
        }
    }
}
