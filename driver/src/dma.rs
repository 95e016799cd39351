//! Kernel-only DMA memory: control messages, PCM headers and statuses, event buffers.
//!
//! The device reads and writes this memory by physical address while the driver holds it, so
//! the driver never forms a Rust reference into it: every access is a volatile copy at an
//! offset checked against the area's size.

use crate::platform::{Area, KResult, Kernel, PhysEntry, Status};

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

impl DmaRegion {
    /// Creates a zeroed kernel-only area of at least `size` bytes.
    pub fn new<K: Kernel>(kernel: &K, name: &str, size: usize) -> KResult<Self> {
        let size = size.div_ceil(4096).max(1) * 4096;
        let area = kernel.create_area(name, size, false)?;
        if area.size < size || area.addr == 0 {
            kernel.delete_area(&area);
            return Err(Status::NO_MEMORY);
        }
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

    /// Releases the area. The caller guarantees the device holds no buffer in it any more.
    pub fn free<K: Kernel>(self, kernel: &K) {
        kernel.delete_area(&self.area);
    }
}
