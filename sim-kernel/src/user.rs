//! User memory of the simulated ioctl caller.
//!
//! In Haiku the driver may reach a caller's memory only through `user_memcpy`, which fails
//! cleanly on a bad address. Here user memory lives at fake addresses in Haiku's user range
//! that map to nothing in the host process: a driver that dereferences one crashes the test at
//! once (the simulator's SMAP), and one that uses `copy_from_user`/`copy_to_user` gets exactly
//! the bytes the test (playing the client) put there, or `B_BAD_ADDRESS` for anything that is
//! not wholly inside one live mapping.
//!
//! A [`UserMapper`] (the Haiku environment installs one, `haiku_sim::user`) places the
//! mappings at their user addresses in the host process, inaccessible there, so that a
//! direct access is caught and reported as an SMAP violation rather than as a plain crash.

use std::cell::Cell;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::Arc;

use platform::Status;
use spec::haiku_driver::{USER_BASE, USER_TOP};

use crate::memory::PAGE_SIZE;

/// Where `SimKernel::user_alloc` starts handing out addresses: well inside the user range and far
/// from both ends, so boundary tests can map their own pages near `USER_BASE`/`USER_TOP`.
pub const USER_ALLOC_BASE: u64 = 0x1000_0000;

/// Host memory behind one user mapping that a [`UserMapper`] placed.
pub trait UserBacking: Send {
    /// The mapping's bytes, through the host view the client and `user_memcpy` use.
    fn bytes(&mut self) -> &mut [u8];
}

/// Places user mappings in the host address space, so that the user address itself is
/// something the process can watch (see `haiku_sim::user`: the add-on faults on it).
/// Without a mapper a mapping is plain host bytes at no particular address.
pub trait UserMapper: Send + Sync {
    /// Where `user_alloc` should start handing out addresses.
    fn alloc_base(&self) -> u64;
    /// The range this mapper owns, mapped or not (fixed for the mapper's life).
    fn range(&self) -> Range<u64>;
    /// Backs `[addr, addr + len)`, or `None` if the range is not the mapper's.
    fn map(&self, addr: u64, len: usize) -> Option<Box<dyn UserBacking>>;
}

enum Backing {
    Heap(Vec<u8>),
    Mapped(Box<dyn UserBacking>),
}

/// One mapping: a page-rounded range backed by host bytes.
struct Mapping {
    len: usize,
    /// The first of the `len` host bytes behind it (read once from `backing`, which never
    /// moves or resizes them).
    ptr: NonNull<u8>,
    /// Owns the bytes `ptr` points at.
    _backing: Backing,
}

// SAFETY: `ptr` points into `_backing`, which the mapping owns and which is `Send` (a
// `Vec`, or a `UserBacking`, whose trait requires it); nothing else holds the pointer
// beyond a borrow of the mapping.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(len: usize, mut backing: Backing) -> Mapping {
        let bytes = match &mut backing {
            Backing::Heap(v) => &mut v[..],
            Backing::Mapped(m) => m.bytes(),
        };
        assert_eq!(bytes.len(), len, "a user backing of another size");
        Mapping {
            len,
            ptr: NonNull::new(bytes.as_mut_ptr()).unwrap_or(NonNull::dangling()),
            _backing: backing,
        }
    }
}

/// The client's address space. A client has a handful of mappings, and `user_memcpy`
/// looks one up on every call: a sorted vector searched by bisection beats a tree there.
pub(crate) struct UserSpace {
    /// Mappings by start address, ascending, never overlapping.
    maps: Vec<(u64, Mapping)>,
    next: u64,
    mapper: Option<Arc<dyn UserMapper>>,
    /// `mapper`'s range (empty without one), asked once.
    mapper_range: Range<u64>,
    /// The index of the mapping [`UserSpace::host`] found last: a client's copies mostly go
    /// to the one it found before, checked with one comparison before any search.
    last: Cell<usize>,
    /// The smallest range holding `mapper_range` and every mapping (from the first one's
    /// start to the last one's end): an address outside it is kernel memory, told with one
    /// range check. One inside it may still be kernel memory (between the mappings and the
    /// mapper's range), which the search tells.
    hull: Range<u64>,
}

impl UserSpace {
    pub(crate) fn new() -> Self {
        UserSpace {
            maps: Vec::new(),
            next: USER_ALLOC_BASE,
            mapper: None,
            mapper_range: 0..0,
            last: Cell::new(0),
            hull: 0..0,
        }
    }

    /// Backs later mappings with `mapper` (where it covers them); `None` goes back to plain
    /// host bytes. Existing mappings keep their backing.
    pub(crate) fn set_mapper(&mut self, mapper: Option<Arc<dyn UserMapper>>) {
        if let Some(m) = &mapper {
            self.next = self.next.max(m.alloc_base());
        }
        self.mapper_range = mapper.as_ref().map_or(0..0, |m| m.range());
        self.mapper = mapper;
        self.respan();
    }

    /// The index of the last mapping starting at or below `addr`, if any. An address
    /// outside the span of all mappings (kernel memory, as a rule) is told at once.
    fn below(&self, addr: u64) -> Option<usize> {
        let (first, last) = (self.maps.first()?, self.maps.last()?);
        if addr < first.0 {
            return None;
        }
        if addr >= last.0 {
            return Some(self.maps.len() - 1);
        }
        self.maps
            .partition_point(|(a, _)| *a <= addr)
            .checked_sub(1)
    }

    /// Whether `addr` is client memory: inside a mapping, or in the mapper's range.
    pub(crate) fn is_user(&self, addr: u64) -> bool {
        self.mapper_range.contains(&addr)
            || self
                .below(addr)
                .is_some_and(|i| addr - self.maps[i].0 < self.maps[i].1.len as u64)
    }

    /// Inserts a mapping that overlaps none.
    fn insert(&mut self, addr: u64, mapping: Mapping) {
        let at = self.maps.partition_point(|(a, _)| *a < addr);
        self.maps.insert(at, (addr, mapping));
        self.respan();
    }

    /// Sets `hull` after the mappings or the mapper changed. The mappings are sorted and
    /// never overlap, so the last one ends last.
    fn respan(&mut self) {
        let span = match (self.maps.first(), self.maps.last()) {
            (Some(first), Some(last)) => first.0..last.0 + last.1.len as u64,
            _ => 0..0,
        };
        let m = &self.mapper_range;
        self.hull = match (span.is_empty(), m.is_empty()) {
            (true, _) => m.clone(),
            (false, true) => span,
            (false, false) => span.start.min(m.start)..span.end.max(m.end),
        };
    }

    fn new_mapping(&self, addr: u64, len: usize) -> Mapping {
        let backing = match self.mapper.as_ref().and_then(|m| m.map(addr, len)) {
            Some(b) => Backing::Mapped(b),
            None => Backing::Heap(vec![0; len]),
        };
        Mapping::new(len, backing)
    }

    /// Maps `len` zeroed bytes (rounded up to pages) and returns the address. Consecutive
    /// mappings keep an unmapped guard page between them, so a copy that runs off the end of
    /// one is refused rather than landing in the next.
    pub(crate) fn alloc(&mut self, len: usize) -> u64 {
        let size = len.div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
        let addr = self.next;
        self.next += (size + PAGE_SIZE) as u64;
        let mapping = self.new_mapping(addr, size);
        self.insert(addr, mapping);
        addr
    }

    /// Maps `len` bytes exactly at `addr` (for tests of the user-range boundaries).
    pub(crate) fn map_at(&mut self, addr: u64, len: usize) -> Result<(), String> {
        if len == 0 {
            return Err("empty mapping".into());
        }
        let end = addr
            .checked_add(len as u64)
            .ok_or_else(|| format!("mapping at {addr:#x} + {len} overflows"))?;
        if addr < USER_BASE || end - 1 > USER_TOP {
            return Err(format!("{addr:#x}..{end:#x} is not in the user range"));
        }
        let overlaps = self
            .below(end - 1)
            .is_some_and(|i| self.maps[i].0 + self.maps[i].1.len as u64 > addr);
        if overlaps {
            return Err(format!("{addr:#x}..{end:#x} overlaps a mapping"));
        }
        let mapping = self.new_mapping(addr, len);
        self.insert(addr, mapping);
        Ok(())
    }

    /// Unmaps the mapping starting at `addr`.
    pub(crate) fn free(&mut self, addr: u64) -> bool {
        match self.maps.binary_search_by_key(&addr, |(a, _)| *a) {
            Ok(i) => {
                self.maps.remove(i);
                self.respan();
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.maps.clear();
        self.respan();
    }

    /// `(start, len)` of every live mapping.
    pub(crate) fn live(&self) -> Vec<(u64, usize)> {
        self.maps.iter().map(|(a, m)| (*a, m.len)).collect()
    }

    /// Where `[addr, addr + len)` is in the host, in one look: `Ok(Some(p))` for client
    /// memory wholly inside one mapping (`p` its first byte, valid while the mapping lives),
    /// `Ok(None)` for an address that is not client memory (neither mapped nor in the
    /// mapper's range: kernel memory), `Err(BAD_ADDRESS)` for client memory the range does
    /// not fit in (unmapped, or running off its mapping's end).
    #[inline]
    pub(crate) fn host(&self, addr: u64, len: usize) -> Result<Option<NonNull<u8>>, Status> {
        // Kernel memory is told by the hull, without looking at a mapping (a copy has a
        // kernel side as a rule). Mappings never overlap, so the one that holds `addr` is
        // the one `below` finds, whichever way it was found: first the one found last, then
        // a search.
        if !self.hull.contains(&addr) {
            return Ok(None);
        }
        if let Some((start, map)) = self.maps.get(self.last.get()) {
            let off = addr.wrapping_sub(*start);
            if off < map.len as u64 {
                return Self::within(map, off as usize, len);
            }
        }
        self.host_searched(addr, len)
    }

    /// [`UserSpace::host`] past its first looks: a search (which `last` then remembers).
    #[inline(never)]
    fn host_searched(&self, addr: u64, len: usize) -> Result<Option<NonNull<u8>>, Status> {
        let found = self.below(addr).and_then(|i| {
            let (start, map) = self.maps.get(i)?;
            let off = addr.wrapping_sub(*start);
            (off < map.len as u64).then(|| {
                self.last.set(i);
                (map, off as usize)
            })
        });
        match found {
            Some((map, off)) => Self::within(map, off, len),
            // Client memory (the mapper's range) that is not mapped.
            None if self.mapper_range.contains(&addr) => Err(Status::BAD_ADDRESS),
            None => Ok(None),
        }
    }

    /// `len` bytes at `off` (inside it) of `map`, if they fit.
    #[inline]
    fn within(map: &Mapping, off: usize, len: usize) -> Result<Option<NonNull<u8>>, Status> {
        if len > map.len - off {
            return Err(Status::BAD_ADDRESS);
        }
        // SAFETY: `off < map.len` (the caller found it so): inside the mapping's bytes.
        Ok(Some(unsafe { map.ptr.add(off) }))
    }

    /// The client memory `[addr, addr + len)`, wholly inside one mapping.
    fn locate(&mut self, addr: u64, len: usize) -> Result<&mut [u8], Status> {
        match self.host(addr, len)? {
            // SAFETY: `host` found `len` bytes of one mapping at `p`, which `&mut self`
            // keeps alive and unshared for the slice's life.
            Some(p) => Ok(unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), len) }),
            None => Err(Status::BAD_ADDRESS),
        }
    }

    pub(crate) fn read(&mut self, addr: u64, out: &mut [u8]) -> Result<(), Status> {
        out.copy_from_slice(self.locate(addr, out.len())?);
        Ok(())
    }

    pub(crate) fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Status> {
        self.locate(addr, data.len())?.copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_must_fit_one_live_mapping() {
        let mut u = UserSpace::new();
        let a = u.alloc(100);
        let b = u.alloc(PAGE_SIZE);
        assert_eq!(a, USER_ALLOC_BASE);
        assert!(b >= a + 2 * PAGE_SIZE as u64, "guard page between mappings");
        u.write(a + 10, b"hello").unwrap();
        let mut out = [0u8; 5];
        u.read(a + 10, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        // The whole page is mapped, one byte past it is not.
        assert!(u.read(a + PAGE_SIZE as u64 - 5, &mut out).is_ok());
        assert_eq!(
            u.read(a + PAGE_SIZE as u64 - 4, &mut out),
            Err(Status::BAD_ADDRESS)
        );
        assert_eq!(u.read(0, &mut out), Err(Status::BAD_ADDRESS));
        assert_eq!(
            u.read(0xffff_ff00_0000_0000, &mut out),
            Err(Status::BAD_ADDRESS)
        );
        assert_eq!(u.read(u64::MAX - 1, &mut out), Err(Status::BAD_ADDRESS));
        assert!(u.free(a));
        assert_eq!(u.read(a + 10, &mut out), Err(Status::BAD_ADDRESS));
    }

    #[test]
    fn mappings_made_out_of_order_are_found_and_freed() {
        let mut u = UserSpace::new();
        let page = PAGE_SIZE as u64;
        let (a, b, c) = (
            USER_BASE + 8 * page,
            USER_BASE + 2 * page,
            USER_BASE + 5 * page,
        );
        for at in [a, b, c] {
            u.map_at(at, PAGE_SIZE).unwrap();
        }
        assert_eq!(
            u.live(),
            vec![(b, PAGE_SIZE), (c, PAGE_SIZE), (a, PAGE_SIZE)]
        );
        assert!(u.map_at(c + page - 1, 2).is_err(), "overlaps c");
        let mut out = [0u8; 4];
        for at in [a, b, c] {
            u.write(at + 4, &at.to_le_bytes()[..4]).unwrap();
            assert!(u.is_user(at) && u.is_user(at + page - 1));
            assert!(!u.is_user(at + page), "the page after {at:#x}");
        }
        assert!(!u.is_user(b - 1) && !u.is_user(a + 100 * page));
        assert!(u.free(c));
        assert!(!u.free(c), "freed twice");
        assert_eq!(u.read(c + 4, &mut out), Err(Status::BAD_ADDRESS));
        u.read(a + 4, &mut out).unwrap();
        assert_eq!(out, a.to_le_bytes()[..4]);
        u.read(b + 4, &mut out).unwrap();
        assert_eq!(out, b.to_le_bytes()[..4]);
    }

    #[test]
    fn host_tells_client_memory_from_kernel_memory() {
        let mut u = UserSpace::new();
        let page = PAGE_SIZE as u64;
        assert_eq!(u.host(USER_ALLOC_BASE, 1), Ok(None), "nothing mapped yet");
        let a = u.alloc(PAGE_SIZE);
        let b = u.alloc(PAGE_SIZE);
        let pa = u.host(a + 8, 8).unwrap().expect("a is client memory");
        let pb = u.host(b, 8).unwrap().expect("b is client memory");
        // Back to `a` after `b` was found last, and its bytes are the same ones.
        assert_eq!(u.host(a + 8, 8).unwrap(), Some(pa));
        assert_ne!(pa, pb);
        assert_eq!(
            u.host(b + page - 4, 8),
            Err(Status::BAD_ADDRESS),
            "off b's end"
        );
        // Below, between (the guard page: no mapper claims it) and past the mappings.
        for kernel in [a - 1, a + page, b + page, u64::MAX - 8] {
            assert_eq!(u.host(kernel, 8), Ok(None), "{kernel:#x}");
        }
        assert!(u.free(b));
        assert_eq!(u.host(b, 8), Ok(None), "b's span is gone with it");
        let pa0 = u.host(a, 8).unwrap().map(|p| p.as_ptr() as usize);
        assert_eq!(pa0, Some(pa.as_ptr() as usize - 8));
        u.clear();
        assert_eq!(u.host(a, 8), Ok(None));
    }

    #[test]
    fn kernel_memory_between_the_mappings_and_the_mappers_range_is_kernel_memory() {
        /// Claims a range and backs nothing itself (mappings get plain host bytes).
        struct Claims(Range<u64>);
        impl UserMapper for Claims {
            fn alloc_base(&self) -> u64 {
                self.0.start
            }
            fn range(&self) -> Range<u64> {
                self.0.clone()
            }
            fn map(&self, _: u64, _: usize) -> Option<Box<dyn UserBacking>> {
                None
            }
        }
        let page = PAGE_SIZE as u64;
        let mut u = UserSpace::new();
        let low = USER_BASE + 2 * page;
        u.map_at(low, PAGE_SIZE).unwrap();
        let claimed = USER_ALLOC_BASE..USER_ALLOC_BASE + 64 * page;
        u.set_mapper(Some(Arc::new(Claims(claimed.clone()))));
        let high = u.alloc(PAGE_SIZE);
        assert!(claimed.contains(&high));
        assert!(u.host(low, 8).unwrap().is_some());
        assert!(u.host(high, 8).unwrap().is_some());
        // Between the low mapping and the claimed range: neither, so kernel memory.
        assert_eq!(u.host(low + page, 8), Ok(None));
        assert_eq!(u.host(claimed.start - 8, 8), Ok(None));
        // Claimed but not mapped: client memory that is not there.
        assert_eq!(u.host(high + page, 8), Err(Status::BAD_ADDRESS));
        assert_eq!(u.host(claimed.end - 8, 8), Err(Status::BAD_ADDRESS));
        // Past everything, and below everything.
        assert_eq!(u.host(claimed.end, 8), Ok(None));
        assert_eq!(u.host(low - 1, 1), Ok(None));
        // Without the mapper the claimed range is kernel memory again, mapped pages aside.
        u.set_mapper(None);
        assert_eq!(u.host(claimed.end - 8, 8), Ok(None));
        assert!(u.host(high, 8).unwrap().is_some());
    }

    #[test]
    fn mappings_at_the_top_of_the_user_range() {
        let mut u = UserSpace::new();
        let top_page = (USER_TOP + 1) - PAGE_SIZE as u64;
        u.map_at(top_page, PAGE_SIZE).unwrap();
        let mut out = [0u8; 8];
        assert!(u.read(USER_TOP - 7, &mut out).is_ok());
        assert_eq!(u.read(USER_TOP - 6, &mut out), Err(Status::BAD_ADDRESS));
        assert!(u.map_at(USER_TOP, 2).is_err());
        assert!(u.map_at(top_page, 1).is_err(), "overlap");
    }
}
