//! "Physical memory": one page-aligned host allocation behind every area and every DMA.
//!
//! The driver dereferences an area's `addr` directly (that is the point of a kernel area), so
//! `addr` must be real host memory; the device model must only ever reach memory by physical
//! address, the way a device does, so that a driver handing it a wrong or stale address is a
//! recorded failure instead of a silent success. Carving every area out of one arena gives
//! both: `addr` is a host pointer into the arena and `phys` is a fake bus address
//! ([`PHYS_BASE`] + offset) that is only meaningful through [`PhysMemory`], which refuses
//! anything that is not wholly inside one live area.
//!
//! With `pci/` (real device memory) and the guest's exit device, the only `unsafe` code of
//! the crate.

use std::alloc::{alloc_zeroed, dealloc, GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use platform::{Area, PhysEntry, Status};

use crate::report::{lock, FailureLog};

/// Haiku's `B_PAGE_SIZE` on x86_64.
pub const PAGE_SIZE: usize = 4096;

/// The fake bus address of the arena's first byte. Deliberately unlike any host address, so
/// a driver that confuses `addr` and `phys` is caught by the first DMA.
pub const PHYS_BASE: u64 = 0x4000_0000;

/// Default arena size: enough for many driver lifetimes of audio buffers, and free until
/// touched because the host hands out zeroed pages lazily.
pub const DEFAULT_MEMORY_SIZE: usize = 64 << 20;

/// Byte written over a deleted area, so a driver that keeps reading freed DMA memory sees
/// nonsense rather than its old data.
const POISON: u8 = 0xDD;

/// Memory with real bus addresses for the arena (DMA memory a real device can reach, such
/// as huge pages in a Linux guest): `base()` is `len()` host bytes, zero-initialised or not,
/// physically contiguous from `phys_base()`. It must stay mapped for as long as it lives.
#[allow(clippy::len_without_is_empty)] // an empty backing is no use
pub trait DmaBacking: Send + Sync {
    fn base(&self) -> *mut u8;
    fn len(&self) -> usize;
    fn phys_base(&self) -> u64;
}

/// Who owns the arena's bytes.
enum Owner {
    /// `alloc_zeroed` with this layout.
    Heap(Layout),
    /// Someone else's mapping, kept alive (mapped) by the arena.
    External { _mapping: Arc<dyn DmaBacking> },
}

/// The host allocation. Owned by [`Memory`]; never moved, freed only when no area is live.
struct Arena {
    base: NonNull<u8>,
    len: usize,
    owner: Owner,
}

// SAFETY: `Arena` is a pointer to plain bytes owned by the arena itself; nothing in it is tied
// to the thread that allocated it, and every access goes through `Memory`, which serialises
// its own accesses with the area table lock.
unsafe impl Send for Arena {}
// SAFETY: as above; shared access only hands out copies made under the area table lock.
unsafe impl Sync for Arena {}

impl Arena {
    fn new(len: usize) -> Arena {
        let layout = Layout::from_size_align(len.max(PAGE_SIZE), PAGE_SIZE)
            .expect("arena size overflows a Layout");
        // SAFETY: the layout has a non-zero size (at least one page).
        let ptr = unsafe { alloc_zeroed(layout) };
        let base = NonNull::new(ptr).expect("out of host memory for the simulated arena");
        Arena {
            base,
            len: layout.size(),
            owner: Owner::Heap(layout),
        }
    }

    /// An arena over `backing`'s bytes (whole pages only).
    fn external(backing: Arc<dyn DmaBacking>) -> Arena {
        let base = NonNull::new(backing.base()).expect("a DMA backing at address 0");
        let len = backing.len() / PAGE_SIZE * PAGE_SIZE;
        Arena {
            base,
            len,
            owner: Owner::External { _mapping: backing },
        }
    }

    /// Copies `out.len()` bytes from arena offset `offset`.
    ///
    /// The caller has checked `offset + out.len() <= self.len`.
    fn copy_out(&self, offset: usize, out: &mut [u8]) {
        debug_assert!(offset + out.len() <= self.len);
        // SAFETY: the range lies inside the allocation (checked by every caller against a
        // live area, which lies inside the arena), `out` is a distinct Rust buffer so the
        // regions do not overlap, and u8 has no invalid bit patterns. The driver may write
        // the same bytes through its own pointer; it only does so while it owns the buffer,
        // and ownership changes hands through the model's mutex, which orders the accesses.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
    }

    /// Copies `data` to arena offset `offset`; the caller has checked the bounds.
    fn copy_in(&self, offset: usize, data: &[u8]) {
        debug_assert!(offset + data.len() <= self.len);
        // SAFETY: as in `copy_out`, with the roles of the two buffers swapped.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.as_ptr().add(offset), data.len())
        };
    }

    /// Sets `len` bytes at `offset` to `byte`; the caller has checked the bounds.
    fn fill(&self, offset: usize, len: usize, byte: u8) {
        debug_assert!(offset + len <= self.len);
        // SAFETY: the range is inside the allocation (checked by the caller) and writing
        // bytes into it cannot break any invariant of the memory it holds.
        unsafe { std::ptr::write_bytes(self.base.as_ptr().add(offset), byte, len) };
    }

    fn host_addr(&self, offset: usize) -> u64 {
        self.base.as_ptr() as u64 + offset as u64
    }
}

/// One live area as the tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AreaInfo {
    pub id: i32,
    pub name: String,
    pub addr: u64,
    pub phys: u64,
    pub size: usize,
    /// Created with user protection (an hmulti audio buffer area).
    pub user: bool,
}

impl AreaInfo {
    /// The `Area` the driver was given for it (to delete a leaked one in a test).
    pub fn to_area(&self) -> Area {
        Area {
            id: self.id,
            addr: self.addr,
            phys: self.phys,
            size: self.size,
        }
    }
}

#[derive(Clone, Debug)]
struct AreaRecord {
    id: i32,
    name: String,
    offset: usize,
    size: usize,
    user: bool,
}

#[derive(Default)]
struct AreaTable {
    /// Live areas by arena offset: first-fit allocation and address lookups both want order.
    by_offset: BTreeMap<usize, AreaRecord>,
    next_id: i32,
}

impl AreaTable {
    /// The live area holding `[offset, offset + len)` entirely, if any.
    fn containing(&self, offset: usize, len: usize) -> Option<&AreaRecord> {
        let (_, rec) = self.by_offset.range(..=offset).next_back()?;
        let end = offset.checked_add(len)?;
        (end <= rec.offset + rec.size).then_some(rec)
    }
}

/// Names one chain the device holds (see [`PhysMemory::hold`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HoldId(u64);

/// A chain the device holds: the memory it may still read or write.
#[derive(Clone, Debug)]
struct Hold {
    queue: u16,
    cookie: u64,
    /// `(physical address, length)` of each entry.
    ranges: Vec<(u64, u64)>,
}

#[derive(Default)]
struct Holds {
    by_id: BTreeMap<HoldId, Hold>,
    next: u64,
}

/// The arena and its area table. Shared by the kernel (which creates and deletes areas) and
/// every [`PhysMemory`] handle (which the device model uses).
pub(crate) struct Memory {
    arena: Arena,
    /// The bus address of the arena's first byte.
    phys_base: u64,
    areas: Mutex<AreaTable>,
    /// Chains the device holds, so that deleting an area under one is caught when it happens
    /// rather than when the device next touches the memory (which may be never, or after
    /// the pages were handed to someone else).
    holds: Mutex<Holds>,
    failures: FailureLog,
}

impl Memory {
    pub(crate) fn new(size: usize, failures: FailureLog) -> Arc<Memory> {
        let size = size.div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
        Memory::with_arena(Arena::new(size), PHYS_BASE, failures)
    }

    /// Areas carved from `backing`, with its real bus addresses.
    pub(crate) fn over(backing: Arc<dyn DmaBacking>, failures: FailureLog) -> Arc<Memory> {
        let phys = backing.phys_base();
        Memory::with_arena(Arena::external(backing), phys, failures)
    }

    fn with_arena(arena: Arena, phys_base: u64, failures: FailureLog) -> Arc<Memory> {
        Arc::new(Memory {
            arena,
            phys_base,
            areas: Mutex::new(AreaTable {
                next_id: 1,
                ..AreaTable::default()
            }),
            holds: Mutex::new(Holds::default()),
            failures,
        })
    }

    /// Carves a zeroed, page-aligned area of `size` bytes (already a page multiple).
    pub(crate) fn create(&self, name: &str, size: usize, user: bool) -> Result<Area, Status> {
        if size == 0 || size % PAGE_SIZE != 0 {
            return Err(Status::BAD_VALUE);
        }
        let mut table = lock(&self.areas);
        // First fit over the gaps between live areas, in offset order.
        let mut cursor = 0usize;
        let mut found = None;
        for rec in table.by_offset.values() {
            if rec.offset - cursor >= size {
                found = Some(cursor);
                break;
            }
            cursor = rec.offset + rec.size;
        }
        let offset = match found {
            Some(o) => o,
            None if self.arena.len - cursor >= size => cursor,
            None => return Err(Status::NO_MEMORY),
        };
        self.arena.fill(offset, size, 0);
        let id = table.next_id;
        table.next_id += 1;
        table.by_offset.insert(
            offset,
            AreaRecord {
                id,
                name: name.to_owned(),
                offset,
                size,
                user,
            },
        );
        Ok(Area {
            id,
            addr: self.arena.host_addr(offset),
            phys: self.phys_base + offset as u64,
            size,
        })
    }

    /// Deletes an area the kernel handed out; `Err` says why the call was a misuse.
    pub(crate) fn delete(&self, area: &Area) -> Result<(), String> {
        let mut table = lock(&self.areas);
        let offset = table
            .by_offset
            .values()
            .find(|r| r.id == area.id)
            .map(|r| r.offset);
        let Some(offset) = offset else {
            return Err(format!(
                "delete_area of area {} ({:#x}) that is not live (deleted twice, or never created)",
                area.id, area.addr
            ));
        };
        let rec = table.by_offset.remove(&offset).expect("found above");
        drop(table);
        let (start, end) = (
            self.phys_base + rec.offset as u64,
            self.phys_base + (rec.offset + rec.size) as u64,
        );
        for h in lock(&self.holds).by_id.values() {
            for &(phys, len) in &h.ranges {
                if phys < end && phys.saturating_add(len) > start {
                    self.failures.record(format!(
                        "delete_area({} {:?}) while the device holds a chain into it \
                         (queue {}, cookie {:#x}, {len} bytes at physical {phys:#x}): \
                         the device may still write into freed memory",
                        rec.id, rec.name, h.queue, h.cookie
                    ));
                }
            }
        }
        if area.addr != self.arena.host_addr(rec.offset) || area.size != rec.size {
            // Still delete it: the id is what Haiku goes by.
            self.failures.record(format!(
                "delete_area({}) with a modified Area: addr {:#x} size {} but the area is at {:#x} size {}",
                rec.id,
                area.addr,
                area.size,
                self.arena.host_addr(rec.offset),
                rec.size
            ));
        }
        self.arena.fill(rec.offset, rec.size, POISON);
        Ok(())
    }

    pub(crate) fn live(&self) -> Vec<AreaInfo> {
        lock(&self.areas)
            .by_offset
            .values()
            .map(|r| self.info(r))
            .collect()
    }

    fn info(&self, r: &AreaRecord) -> AreaInfo {
        AreaInfo {
            id: r.id,
            name: r.name.clone(),
            addr: self.arena.host_addr(r.offset),
            phys: self.phys_base + r.offset as u64,
            size: r.size,
            user: r.user,
        }
    }

    /// Arena offset of host address `addr`, if it is inside the arena at all.
    fn offset_of_host(&self, addr: u64) -> Option<usize> {
        let base = self.arena.host_addr(0);
        let off = addr.checked_sub(base)?;
        (off < self.arena.len as u64).then_some(off as usize)
    }

    /// Arena offset of physical address `phys`, if it is inside the arena at all.
    fn offset_of_phys(&self, phys: u64) -> Option<usize> {
        let off = phys.checked_sub(self.phys_base)?;
        (off < self.arena.len as u64).then_some(off as usize)
    }

    /// Reads or writes through a host address inside a live area (`user_only`: only areas
    /// created with user protection, as a user-space client could).
    pub(crate) fn host_access(
        &self,
        addr: u64,
        len: usize,
        user_only: bool,
        access: Access<'_>,
    ) -> Result<(), Status> {
        let table = lock(&self.areas);
        let offset = self.offset_of_host(addr).ok_or(Status::BAD_ADDRESS)?;
        let rec = table.containing(offset, len).ok_or(Status::BAD_ADDRESS)?;
        if user_only && !rec.user {
            return Err(Status::BAD_ADDRESS);
        }
        match access {
            Access::Read(out) => self.arena.copy_out(offset, out),
            Access::Write(data) => self.arena.copy_in(offset, data),
        }
        Ok(())
    }

    fn dma(&self, phys: u64, len: usize, access: Access<'_>) -> Result<(), DmaError> {
        let table = lock(&self.areas);
        let rec = self
            .offset_of_phys(phys)
            .and_then(|off| table.containing(off, len).map(|r| (off, r)));
        let Some((offset, _)) = rec else {
            let what = match access {
                Access::Read(_) => "read",
                Access::Write(_) => "write",
            };
            drop(table);
            self.failures.record(format!(
                "device DMA {what} of {len} bytes at physical {phys:#x} is not inside one live area"
            ));
            return Err(DmaError { phys, len });
        };
        match access {
            Access::Read(out) => self.arena.copy_out(offset, out),
            Access::Write(data) => self.arena.copy_in(offset, data),
        }
        Ok(())
    }

    fn hold(&self, queue: u16, cookie: u64, entries: &[PhysEntry]) -> HoldId {
        let mut holds = lock(&self.holds);
        holds.next += 1;
        let id = HoldId(holds.next);
        let ranges = entries.iter().map(|e| (e.address, e.size)).collect();
        holds.by_id.insert(
            id,
            Hold {
                queue,
                cookie,
                ranges,
            },
        );
        id
    }

    /// Whether any area is still live (then the arena must outlive us).
    fn any_live(&self) -> bool {
        !lock(&self.areas).by_offset.is_empty()
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // The Kernel contract says an area stays mapped until delete_area. A driver that
        // leaked one may still hold its address (the leak is reported by check_clean), so
        // keep the memory rather than turn a leak into a use-after-free.
        if self.any_live() {
            if let Owner::External { _mapping } = &self.arena.owner {
                // Keep someone else's mapping too: one reference that is never dropped.
                std::mem::forget(Arc::clone(_mapping));
            }
            return;
        }
        if let Owner::Heap(layout) = self.arena.owner {
            // SAFETY: `base` came from `alloc_zeroed` with exactly this layout and no area
            // (the only thing that hands out pointers into it) is live any more.
            unsafe { dealloc(self.arena.base.as_ptr(), layout) };
        }
        // An external backing is unmapped when its last Arc goes.
    }
}

/// Direction and buffer of one copy.
pub(crate) enum Access<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

/// A DMA that did not land wholly inside one live area. Already recorded as a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaError {
    pub phys: u64,
    pub len: usize,
}

/// The device's view of memory: bytes by physical address, bounds-checked against the live
/// areas, never a host pointer.
#[derive(Clone)]
pub struct PhysMemory {
    mem: Arc<Memory>,
}

impl PhysMemory {
    pub(crate) fn new(mem: Arc<Memory>) -> Self {
        PhysMemory { mem }
    }

    /// The device takes a chain: until [`PhysMemory::release`], deleting an area any of
    /// `entries` reaches into is recorded as a failure at the moment it happens.
    pub fn hold(&self, queue: u16, cookie: u64, entries: &[PhysEntry]) -> HoldId {
        self.mem.hold(queue, cookie, entries)
    }

    /// The device gave the chain back (put it on the used ring).
    pub fn release(&self, id: HoldId) {
        lock(&self.mem.holds).by_id.remove(&id);
    }

    /// The device was reset: it holds nothing any more.
    pub fn release_all(&self) {
        lock(&self.mem.holds).by_id.clear();
    }

    /// Chains the device holds now.
    pub fn holds(&self) -> usize {
        lock(&self.mem.holds).by_id.len()
    }

    /// Reads `out.len()` bytes at `phys`.
    pub fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), DmaError> {
        self.mem.dma(phys, out.len(), Access::Read(out))
    }

    /// Writes `data` at `phys`.
    pub fn write(&self, phys: u64, data: &[u8]) -> Result<(), DmaError> {
        self.mem.dma(phys, data.len(), Access::Write(data))
    }

    /// Checks that `len` bytes at `phys` lie inside one live area, without touching them
    /// (a device validating a buffer it will write later). A failure is recorded.
    pub fn check(&self, phys: u64, len: u64) -> Result<(), DmaError> {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let table = lock(&self.mem.areas);
        let ok = self
            .mem
            .offset_of_phys(phys)
            .is_some_and(|off| table.containing(off, len).is_some());
        drop(table);
        if ok {
            return Ok(());
        }
        self.mem.failures.record(format!(
            "device buffer of {len} bytes at physical {phys:#x} is not inside one live area"
        ));
        Err(DmaError { phys, len })
    }

    /// Reads `len` bytes at `phys` into a new vector. The bounds are checked before the
    /// vector is allocated, so a hostile length cannot exhaust host memory.
    pub fn read_vec(&self, phys: u64, len: u64) -> Result<Vec<u8>, DmaError> {
        let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
        if len_usize > self.mem.arena.len {
            self.mem.failures.record(format!(
                "device DMA read of {len} bytes at physical {phys:#x} is larger than all of memory"
            ));
            return Err(DmaError {
                phys,
                len: len_usize,
            });
        }
        let mut v = vec![0u8; len_usize];
        self.read(phys, &mut v)?;
        Ok(v)
    }
}

// ---- heap allocations in interrupt context ----
//
// Haiku forbids malloc in an interrupt handler, and the driver's Rust code could allocate
// there without calling any kernel function (a `Vec::push`, a `format!`). A test binary that
// installs [`CheckingAllocator`] as its global allocator lets the kernel count those: every
// allocation made while a virtio interrupt handler runs, outside the simulator's own code, is
// reported after the handler returns.

thread_local! {
    /// Interrupt handlers running on this thread.
    static IRQ_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Simulator calls on the stack (their own allocations are not the driver's).
    static SIM_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Allocations counted so far on this thread.
    static IRQ_ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note_alloc() {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    let counting = IRQ_DEPTH.try_with(|d| d.get() > 0).unwrap_or(false)
        && SIM_DEPTH.try_with(|d| d.get() == 0).unwrap_or(false);
    if counting {
        let _ = IRQ_ALLOCS.try_with(|c| c.set(c.get() + 1));
    }
}

/// The system allocator, counting driver allocations in interrupt context. Install it in a
/// test binary with `#[global_allocator] static A: sim_kernel::memory::CheckingAllocator =
/// sim_kernel::memory::CheckingAllocator;` to have the kernel report them.
pub struct CheckingAllocator;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it
// upholds `GlobalAlloc`'s contract exactly as `System` does; the counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CheckingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_alloc();
        // SAFETY: forwarded unchanged; `ptr` came from this allocator, which is `System`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged; `ptr` came from this allocator, which is `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Marks simulator code on the stack: its allocations are not counted.
pub struct SimCode(());

impl SimCode {
    pub fn enter() -> SimCode {
        SIM_DEPTH.with(|d| d.set(d.get() + 1));
        SimCode(())
    }
}

impl Drop for SimCode {
    fn drop(&mut self) {
        SIM_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Runs `f` (the driver's interrupt handler) counting its heap allocations and frees; the
/// simulator code the handler calls into is excluded by its own `SimCode` guards.
pub(crate) fn count_irq_allocs<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = IRQ_ALLOCS.with(Cell::get);
    let saved_sim = SIM_DEPTH.with(|d| d.replace(0));
    IRQ_DEPTH.with(|d| d.set(d.get() + 1));
    let r = f();
    IRQ_DEPTH.with(|d| d.set(d.get() - 1));
    SIM_DEPTH.with(|d| d.set(saved_sim));
    (r, IRQ_ALLOCS.with(Cell::get) - before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> (Arc<Memory>, FailureLog) {
        let f = FailureLog::new();
        (Memory::new(1 << 20, f.clone()), f)
    }

    #[test]
    fn areas_are_zeroed_page_aligned_and_reused_first_fit() {
        let (m, _) = mem();
        let a = m.create("a", PAGE_SIZE, false).unwrap();
        let b = m.create("b", 2 * PAGE_SIZE, true).unwrap();
        assert_eq!(a.addr % PAGE_SIZE as u64, 0);
        assert_eq!(a.phys, PHYS_BASE);
        assert_eq!(b.phys, PHYS_BASE + PAGE_SIZE as u64);
        let p = PhysMemory::new(m.clone());
        p.write(a.phys + 10, &[1, 2, 3]).unwrap();
        m.delete(&a).unwrap();
        let c = m.create("c", PAGE_SIZE, false).unwrap();
        assert_eq!(c.phys, a.phys, "first fit reuses the hole");
        let mut buf = [9u8; 3];
        p.read(c.phys + 10, &mut buf).unwrap();
        assert_eq!(buf, [0, 0, 0], "a new area is zeroed");
        assert!(m.create("odd", 100, false).is_err());
        assert!(m.create("huge", 2 << 20, false).is_err());
    }

    #[test]
    fn dma_outside_live_areas_is_refused_and_recorded() {
        let (m, f) = mem();
        let a = m.create("a", PAGE_SIZE, false).unwrap();
        let b = m.create("b", PAGE_SIZE, false).unwrap();
        let p = PhysMemory::new(m.clone());
        let mut buf = [0u8; 8];
        // Straddles two live areas: still refused.
        assert!(p.read(b.phys - 4, &mut buf).is_err());
        assert!(p.read(0, &mut buf).is_err());
        assert!(p.read(u64::MAX - 2, &mut buf).is_err());
        assert!(p.read_vec(a.phys, u64::MAX).is_err());
        m.delete(&a).unwrap();
        assert!(p.write(a.phys, &buf).is_err(), "deleted area");
        assert_eq!(f.snapshot().len(), 5);
        assert!(m.delete(&a).is_err(), "double delete");
    }

    #[test]
    fn deleting_an_area_under_a_held_chain_is_recorded_when_it_happens() {
        let (m, f) = mem();
        let a = m.create("held", PAGE_SIZE, false).unwrap();
        let b = m.create("neighbour", PAGE_SIZE, false).unwrap();
        let c = m.create("released", PAGE_SIZE, false).unwrap();
        let p = PhysMemory::new(m.clone());
        let entry = |phys, size| PhysEntry {
            address: phys,
            size,
        };
        // One chain reaches the last byte of `held`, another into `released`.
        let held = p.hold(2, 0x77, &[entry(a.phys + 4095, 1)]);
        let gone = p.hold(3, 0x78, &[entry(c.phys, 16)]);
        assert_eq!(p.holds(), 2);
        p.release(gone);
        m.delete(&b).unwrap();
        m.delete(&c).unwrap();
        assert!(f.snapshot().is_empty(), "{:?}", f.snapshot());
        m.delete(&a).unwrap();
        let failures = f.snapshot();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].contains("\"held\"")
                && failures[0].contains("queue 2")
                && failures[0].contains("cookie 0x77"),
            "{failures:?}"
        );
        p.release(held);
        // After a reset nothing is held.
        let d = m.create("after reset", PAGE_SIZE, false).unwrap();
        p.hold(2, 1, &[entry(d.phys, 8)]);
        p.release_all();
        m.delete(&d).unwrap();
        assert_eq!(f.snapshot().len(), 1);
    }

    /// A backing over a leaked heap buffer with a made-up bus address.
    struct FakeDma {
        buf: &'static mut [u8],
        phys: u64,
    }

    impl DmaBacking for FakeDma {
        fn base(&self) -> *mut u8 {
            self.buf.as_ptr() as *mut u8
        }
        fn len(&self) -> usize {
            self.buf.len()
        }
        fn phys_base(&self) -> u64 {
            self.phys
        }
    }

    #[test]
    fn an_external_backing_gives_its_own_bus_addresses() {
        let mut v = vec![0xA5u8; 16 * PAGE_SIZE + 100];
        let start = v.as_ptr().align_offset(PAGE_SIZE);
        let buf: &'static mut [u8] = Vec::leak(std::mem::take(&mut v));
        let buf = &mut buf[start..start + 8 * PAGE_SIZE];
        let host = buf.as_ptr() as u64;
        let backing = Arc::new(FakeDma {
            buf,
            phys: 0x7_0000_0000,
        });
        let f = FailureLog::new();
        let m = Memory::over(backing, f.clone());
        let a = m.create("a", 2 * PAGE_SIZE, false).unwrap();
        assert_eq!(a.phys, 0x7_0000_0000);
        assert_eq!(a.addr, host);
        let b = m.create("b", PAGE_SIZE, false).unwrap();
        assert_eq!(b.phys, 0x7_0000_0000 + 2 * PAGE_SIZE as u64);
        let p = PhysMemory::new(m.clone());
        let mut out = [1u8; 4];
        p.read(a.phys + 8, &mut out).unwrap();
        assert_eq!(
            out, [0; 4],
            "areas are zeroed even over someone else's bytes"
        );
        assert!(
            p.read(PHYS_BASE, &mut out).is_err(),
            "the fake base means nothing here"
        );
        assert!(m.create("too big", 8 * PAGE_SIZE, false).is_err());
        m.delete(&a).unwrap();
        m.delete(&b).unwrap();
    }
}
