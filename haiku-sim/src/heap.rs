//! The kernel heap the add-on's `malloc`/`free` use, with the checks a debug heap makes.
//!
//! Blocks come from the host allocator. Every live block is in a table, so `free` of a
//! pointer the heap never handed out (or handed out and already took back) is a recorded
//! misuse instead of heap corruption, and what is still live at the end is a leak. Fresh
//! `malloc` blocks are filled with 0xCC and freed ones with 0xDE (as Haiku's paranoid heap
//! does), so reading uninitialised or freed memory shows. Freed blocks wait in a small
//! quarantine before going back to the host, so a double free is recognised as one even
//! when the next `malloc` would have reused the address.

use std::alloc::{self, Layout};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use sim_kernel::report::lock;

/// Smallest alignment handed out: what Haiku's kernel `malloc` guarantees on x86_64.
const MIN_ALIGN: usize = 16;
/// Freed blocks kept back before they return to the host allocator.
const QUARANTINE: usize = 256;
const FRESH: u8 = 0xCC;
const FREED: u8 = 0xDE;

struct Block {
    layout: Layout,
    size: usize,
    seq: u64,
}

#[derive(Default)]
struct Table {
    live: HashMap<usize, Block>,
    quarantine: VecDeque<(usize, Block)>,
    seq: u64,
    fail_after: Option<u32>,
}

/// A live block, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    pub addr: u64,
    pub size: usize,
    /// Which allocation it was (1 = the first).
    pub seq: u64,
}

/// Why a `free`/`realloc` was refused.
pub(crate) enum FreeError {
    /// The block was freed already (it is still in quarantine).
    Double,
    /// The heap never handed out this address (or freed it long ago).
    Unknown,
}

#[derive(Default)]
pub(crate) struct Heap {
    table: Mutex<Table>,
}

impl Heap {
    /// Makes the `n`th next allocation fail (0 = the very next one).
    pub(crate) fn fail_after(&self, n: u32) {
        lock(&self.table).fail_after = Some(n);
    }

    /// A block of `size` bytes aligned to `align` (a power of two), zeroed or filled with
    /// [`FRESH`]; null when out of memory or asked to fail.
    pub(crate) fn alloc(&self, size: usize, align: usize, zeroed: bool) -> *mut u8 {
        let mut t = lock(&self.table);
        match t.fail_after {
            Some(0) => {
                t.fail_after = None;
                return std::ptr::null_mut();
            }
            Some(n) => t.fail_after = Some(n - 1),
            None => {}
        }
        let Ok(layout) = Layout::from_size_align(size.max(1), align.max(MIN_ALIGN)) else {
            return std::ptr::null_mut();
        };
        // SAFETY: the layout has a non-zero size.
        let p = unsafe {
            if zeroed {
                alloc::alloc_zeroed(layout)
            } else {
                alloc::alloc(layout)
            }
        };
        if p.is_null() {
            return p;
        }
        if !zeroed {
            // SAFETY: `p` is a fresh block of `layout.size()` bytes.
            unsafe { std::ptr::write_bytes(p, FRESH, layout.size()) };
        }
        t.seq += 1;
        let seq = t.seq;
        t.live.insert(p as usize, Block { layout, size, seq });
        p
    }

    /// The size of the live block at `p`.
    pub(crate) fn size_of(&self, p: *mut u8) -> Result<usize, FreeError> {
        let t = lock(&self.table);
        match t.live.get(&(p as usize)) {
            Some(b) => Ok(b.size),
            None if t.quarantine.iter().any(|(a, _)| *a == p as usize) => Err(FreeError::Double),
            None => Err(FreeError::Unknown),
        }
    }

    /// Frees the live block at `p`.
    pub(crate) fn free(&self, p: *mut u8) -> Result<(), FreeError> {
        let mut t = lock(&self.table);
        let Some(block) = t.live.remove(&(p as usize)) else {
            return if t.quarantine.iter().any(|(a, _)| *a == p as usize) {
                Err(FreeError::Double)
            } else {
                Err(FreeError::Unknown)
            };
        };
        // SAFETY: `p` is a live block of `block.layout.size()` bytes, now ours again.
        unsafe { std::ptr::write_bytes(p, FREED, block.layout.size()) };
        t.quarantine.push_back((p as usize, block));
        if t.quarantine.len() > QUARANTINE {
            if let Some((a, b)) = t.quarantine.pop_front() {
                // SAFETY: allocated above with exactly this layout, freed by the add-on, and
                // no longer in the live table, so nothing hands it out again.
                unsafe { alloc::dealloc(a as *mut u8, b.layout) };
            }
        }
        Ok(())
    }

    /// Every live block, oldest first.
    pub(crate) fn live(&self) -> Vec<BlockInfo> {
        let t = lock(&self.table);
        let mut v: Vec<BlockInfo> = t
            .live
            .iter()
            .map(|(&a, b)| BlockInfo {
                addr: a as u64,
                size: b.size,
                seq: b.seq,
            })
            .collect();
        v.sort_by_key(|b| b.seq);
        v
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        let t = self.table.get_mut().unwrap_or_else(|e| e.into_inner());
        for (a, b) in t.quarantine.drain(..) {
            // SAFETY: quarantined blocks were freed by the add-on; nothing refers to them.
            unsafe { alloc::dealloc(a as *mut u8, b.layout) };
        }
        // Live (leaked) blocks are deliberately kept: the add-on that leaked them may still
        // hold their addresses (from a thread that outlived it, say).
    }
}
