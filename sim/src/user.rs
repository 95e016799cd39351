//! User memory of the simulated ioctl caller.
//!
//! In Haiku the driver may reach a caller's memory only through `user_memcpy`, which fails
//! cleanly on a bad address. Here user memory lives at fake addresses in Haiku's user range
//! that map to nothing in the host process: a driver that dereferences one crashes the test at
//! once (the simulator's SMAP), and one that uses `copy_from_user`/`copy_to_user` gets exactly
//! the bytes the test (playing the client) put there, or `B_BAD_ADDRESS` for anything that is
//! not wholly inside one live mapping.

use std::collections::BTreeMap;

use driver::platform::Status;
use spec::haiku_driver::{USER_BASE, USER_TOP};

use crate::memory::PAGE_SIZE;

/// Where `SimKernel::user_alloc` starts handing out addresses: well inside the user range and far
/// from both ends, so boundary tests can map their own pages near `USER_BASE`/`USER_TOP`.
pub const USER_ALLOC_BASE: u64 = 0x1000_0000;

/// One mapping: a page-rounded range backed by host bytes.
struct Mapping {
    bytes: Vec<u8>,
}

/// The client's address space.
pub(crate) struct UserSpace {
    maps: BTreeMap<u64, Mapping>,
    next: u64,
}

impl UserSpace {
    pub(crate) fn new() -> Self {
        UserSpace {
            maps: BTreeMap::new(),
            next: USER_ALLOC_BASE,
        }
    }

    /// Maps `len` zeroed bytes (rounded up to pages) and returns the address. Consecutive
    /// mappings keep an unmapped guard page between them, so a copy that runs off the end of
    /// one is refused rather than landing in the next.
    pub(crate) fn alloc(&mut self, len: usize) -> u64 {
        let size = len.div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
        let addr = self.next;
        self.next += (size + PAGE_SIZE) as u64;
        self.maps.insert(
            addr,
            Mapping {
                bytes: vec![0; size],
            },
        );
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
            .maps
            .range(..end)
            .next_back()
            .is_some_and(|(&a, m)| a + m.bytes.len() as u64 > addr);
        if overlaps {
            return Err(format!("{addr:#x}..{end:#x} overlaps a mapping"));
        }
        self.maps.insert(
            addr,
            Mapping {
                bytes: vec![0; len],
            },
        );
        Ok(())
    }

    /// Unmaps the mapping starting at `addr`.
    pub(crate) fn free(&mut self, addr: u64) -> bool {
        self.maps.remove(&addr).is_some()
    }

    pub(crate) fn clear(&mut self) {
        self.maps.clear();
    }

    /// `(start, len)` of every live mapping.
    pub(crate) fn live(&self) -> Vec<(u64, usize)> {
        self.maps.iter().map(|(&a, m)| (a, m.bytes.len())).collect()
    }

    /// The mapping and offset holding `[addr, addr + len)` entirely.
    fn locate(&mut self, addr: u64, len: usize) -> Result<(&mut Mapping, usize), Status> {
        if addr == 0 || addr < USER_BASE {
            return Err(Status::BAD_ADDRESS);
        }
        let end = addr.checked_add(len as u64).ok_or(Status::BAD_ADDRESS)?;
        if len > 0 && end - 1 > USER_TOP {
            return Err(Status::BAD_ADDRESS);
        }
        let (&start, map) = self
            .maps
            .range_mut(..=addr)
            .next_back()
            .ok_or(Status::BAD_ADDRESS)?;
        let off = (addr - start) as usize;
        if off.checked_add(len).is_none_or(|e| e > map.bytes.len()) {
            return Err(Status::BAD_ADDRESS);
        }
        Ok((map, off))
    }

    pub(crate) fn read(&mut self, addr: u64, out: &mut [u8]) -> Result<(), Status> {
        let (map, off) = self.locate(addr, out.len())?;
        out.copy_from_slice(&map.bytes[off..off + out.len()]);
        Ok(())
    }

    pub(crate) fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Status> {
        let (map, off) = self.locate(addr, data.len())?;
        map.bytes[off..off + data.len()].copy_from_slice(data);
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
