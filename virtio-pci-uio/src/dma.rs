//! Physically contiguous memory for DMA from Linux user space: huge pages, locked, with their
//! physical addresses read from `/proc/self/pagemap`.
//!
//! Huge pages reserved at boot (`hugepages=N`) form a mostly contiguous pool, but the kernel
//! hands them out in no useful order (in a QEMU guest: every other page, descending), so a
//! region of more than one huge page is assembled: map, read the frames, pick a contiguous
//! run (from all free huge pages if need be) and `mremap` its pages into physical order.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;

/// The huge page size the region is made of (x86_64's default huge page).
pub const HUGE_PAGE: usize = 2 << 20;

/// Bit 63 of a pagemap entry: the page is present in RAM.
const PM_PRESENT: u64 = 1 << 63;
/// Bit 62: the page is swapped out (then bits 0-54 are not a frame number).
const PM_SWAPPED: u64 = 1 << 62;
/// Bits 0-54: the page frame number.
const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// The frame number of one `/proc/self/pagemap` entry, `None` when the page is not present
/// (or swapped out).
pub fn pagemap_pfn(entry: u64) -> Option<u64> {
    if entry & PM_PRESENT == 0 || entry & PM_SWAPPED != 0 {
        None
    } else {
        Some(entry & PM_PFN_MASK)
    }
}

/// Checks that `entries` (the pagemap entries of consecutive `page_size` pages) describe
/// physically contiguous memory; returns the physical address of the first page.
pub fn contiguous_phys(entries: &[u64], page_size: u64) -> Result<u64, String> {
    let first = *entries.first().ok_or("no pages")?;
    let pfn0 = pagemap_pfn(first)
        .ok_or_else(|| format!("page 0 is not present (pagemap entry {first:#018x})"))?;
    if pfn0 == 0 {
        return Err(
            "pagemap reports frame number 0: reading physical addresses needs \
             CAP_SYS_ADMIN (run as root)"
                .into(),
        );
    }
    for (i, &e) in entries.iter().enumerate().skip(1) {
        let pfn = pagemap_pfn(e)
            .ok_or_else(|| format!("page {i} is not present (pagemap entry {e:#018x})"))?;
        let want = pfn0 + i as u64;
        if pfn != want {
            return Err(format!(
                "not physically contiguous: page {i} is at {:#x}, expected {:#x} \
                 (region starts at {:#x}; frame runs: {})",
                pfn * page_size,
                want * page_size,
                pfn0 * page_size,
                frame_runs(entries, page_size)
            ));
        }
    }
    Ok(pfn0 * page_size)
}

/// The region's physical runs, `start+len` each, for an error message.
fn frame_runs(entries: &[u64], page_size: u64) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &e in entries {
        let pfn = pagemap_pfn(e).unwrap_or(0);
        match runs.last_mut() {
            Some((start, n)) if *start + *n == pfn => *n += 1,
            _ => runs.push((pfn, 1)),
        }
    }
    let shown: Vec<String> = runs
        .iter()
        .take(8)
        .map(|(s, n)| format!("{:#x}+{:#x}", s * page_size, n * page_size))
        .collect();
    let more = runs.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

fn errno_text(call: &str) -> String {
    format!("{call}: {}", io::Error::last_os_error())
}

/// Reads the huge page counters from `/proc/meminfo` for an error hint.
fn hugepage_hint() -> String {
    let nr = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable ({e})"));
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .map(|l| l["HugePages_Free:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    format!(
        "/proc/sys/vm/nr_hugepages is {nr}, HugePages_Free {free}; reserve huge pages with \
         `echo N > /proc/sys/vm/nr_hugepages` or `hugepages=N` on the kernel command line"
    )
}

/// Picks `need` huge pages that are physically contiguous out of `pfns` (the frame number of
/// each mapped huge page, in virtual order; `frames` 4 KiB frames per huge page). Returns
/// their indices in ascending physical order, or `None` when no such run exists.
pub fn contiguous_run(pfns: &[u64], need: usize, frames: u64) -> Option<Vec<usize>> {
    if need == 0 || need > pfns.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..pfns.len()).collect();
    order.sort_by_key(|&i| pfns[i]);
    let mut run_start = 0;
    for k in 0..order.len() {
        if k > run_start && pfns[order[k]] != pfns[order[k - 1]] + frames {
            run_start = k;
        }
        if k + 1 - run_start == need {
            return Some(order[run_start..=k].to_vec());
        }
    }
    None
}

/// A mapping owned by this value: unmapped on drop. Parts moved away by `mremap` or already
/// unmapped are fine (munmap of a range with holes is allowed).
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `len` bytes of huge pages, populated (every page faulted in now).
    fn huge(len: usize) -> Result<Mapping, String> {
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses; it aliases no
        // Rust object. The result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "{} mapping {len} bytes of huge pages; {}",
                errno_text("mmap(MAP_HUGETLB)"),
                hugepage_hint()
            ));
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Address space only (no memory): `len` bytes starting at a `HUGE_PAGE` boundary.
    fn reserve_aligned(len: usize) -> Result<Mapping, String> {
        let span = len + HUGE_PAGE;
        // SAFETY: as in `huge`: a fresh inaccessible mapping that aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(errno_text("mmap (address space for the DMA region)"));
        }
        let whole = Mapping {
            ptr: ptr.cast(),
            len: span,
        };
        let start = (whole.ptr as usize).next_multiple_of(HUGE_PAGE);
        let head = start - whole.ptr as usize;
        // SAFETY: the head and tail slack lie inside `whole`, which this function owns and
        // which nothing references; the middle part stays mapped.
        unsafe {
            if head > 0 {
                libc::munmap(whole.ptr.cast(), head);
            }
            let tail = span - head - len;
            if tail > 0 {
                libc::munmap((start + len) as *mut libc::c_void, tail);
            }
        }
        std::mem::forget(whole);
        Ok(Mapping {
            ptr: start as *mut u8,
            len,
        })
    }

    /// Moves the huge page at `from` (inside `self`) to `to` (inside `target`), replacing what
    /// was mapped there.
    fn move_page(&self, from: usize, target: &Mapping, to: usize) -> Result<(), String> {
        if from + HUGE_PAGE > self.len || to + HUGE_PAGE > target.len {
            return Err("move_page out of range".into());
        }
        // SAFETY: both ranges are huge-page aligned and inside mappings owned by the caller
        // that no Rust reference points into; MREMAP_FIXED replaces the reserved (PROT_NONE)
        // page at the destination, which belongs to `target`.
        let r = unsafe {
            libc::mremap(
                self.ptr.add(from).cast(),
                HUGE_PAGE,
                HUGE_PAGE,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                target.ptr.add(to).cast::<libc::c_void>(),
            )
        };
        if r == libc::MAP_FAILED {
            return Err(format!(
                "{} (moving huge pages into physical order needs Linux 5.17+)",
                errno_text("mremap of a huge page")
            ));
        }
        Ok(())
    }

    /// Unmaps `[from, len)`, keeping the first `from` bytes.
    fn truncate(&mut self, from: usize) {
        if from < self.len {
            // SAFETY: the range is the tail of this mapping, which this value owns.
            unsafe { libc::munmap(self.ptr.add(from).cast(), self.len - from) };
            self.len = from;
        }
    }

    /// The `/proc/self/pagemap` entry of every `page`-sized page of the mapping.
    fn pagemap(&self, page: usize) -> Result<Vec<u64>, String> {
        let file = File::open("/proc/self/pagemap")
            .map_err(|e| format!("open /proc/self/pagemap: {e}"))?;
        let mut raw = vec![0u8; self.len / page * 8];
        let first = (self.ptr as usize / page) as u64 * 8;
        file.read_exact_at(&mut raw, first)
            .map_err(|e| format!("pread /proc/self/pagemap at {first:#x}: {e}"))?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping (or what is left of it) belongs to this value.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// Huge-page memory with a known physical address, mapped read-write, zeroed, locked and
/// physically contiguous. Unmapped on drop.
pub struct DmaRegion {
    base: NonNull<u8>,
    len: usize,
    phys: u64,
}

// SAFETY: the region is plain memory owned by this value (no thread-affine state); the
// pointer is only handed out by `base()`, and whoever dereferences it takes on the
// synchronisation, exactly as with memory shared with a device.
unsafe impl Send for DmaRegion {}
// SAFETY: as above; `&DmaRegion` only gives out the address, length and physical address.
unsafe impl Sync for DmaRegion {}

impl DmaRegion {
    /// Maps `len` bytes (rounded up to 2 MiB) of huge pages and makes them physically
    /// contiguous. Needs root (the physical addresses) and reserved huge pages.
    ///
    /// The kernel hands out huge pages in no particular physical order, so the pages are
    /// mapped, their frames read from pagemap, and, when they are contiguous as a set but
    /// not in virtual order, moved (`mremap`) into physical order. When even the set is not
    /// contiguous, every free huge page is taken for a moment and a contiguous run of them
    /// kept.
    pub fn new(len: usize) -> Result<DmaRegion, String> {
        if len == 0 {
            return Err("DmaRegion::new(0): empty region".into());
        }
        let len = len
            .checked_next_multiple_of(HUGE_PAGE)
            .ok_or_else(|| format!("DmaRegion::new({len}): size overflows"))?;
        let need = len / HUGE_PAGE;
        match Self::from_pages(need, need) {
            Ok(r) => Ok(r),
            Err(first) if need > 1 => {
                let free = free_huge_pages();
                if free <= need {
                    return Err(first);
                }
                Self::from_pages(need, free).map_err(|e| {
                    format!("{first}; then, choosing among all {free} free huge pages: {e}")
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Maps `take` huge pages and keeps `need` physically contiguous ones.
    fn from_pages(need: usize, take: usize) -> Result<DmaRegion, String> {
        let page = page_size();
        let frames = (HUGE_PAGE / page) as u64;
        let mut scratch = Mapping::huge(take * HUGE_PAGE)?;
        let entries = scratch.pagemap(page)?;
        let mut pfns = Vec::with_capacity(take);
        for (i, huge) in entries.chunks_exact(frames as usize).enumerate() {
            let pfn = contiguous_phys(huge, page as u64)
                .map_err(|e| format!("huge page {i}: {e}"))?
                / page as u64;
            pfns.push(pfn);
        }
        let run = contiguous_run(&pfns, need, frames).ok_or_else(|| {
            let mut sorted = pfns.clone();
            sorted.sort_unstable();
            let shown: Vec<String> = sorted
                .iter()
                .map(|p| format!("{:#x}", p * page as u64))
                .collect();
            format!(
                "no {need} physically contiguous huge pages among the {take} mapped (at {})",
                shown.join(", ")
            )
        })?;
        let mapping = if run.iter().copied().eq(0..need) {
            scratch.truncate(need * HUGE_PAGE);
            scratch
        } else {
            let target = Mapping::reserve_aligned(need * HUGE_PAGE)?;
            for (k, &i) in run.iter().enumerate() {
                scratch.move_page(i * HUGE_PAGE, &target, k * HUGE_PAGE)?;
            }
            drop(scratch); // the pages not chosen go back to the pool
            target
        };
        Self::finish(mapping, page)
    }

    /// Locks and touches the mapping and checks (again, from pagemap) that it is contiguous.
    fn finish(mapping: Mapping, page: usize) -> Result<DmaRegion, String> {
        let len = mapping.len;
        // SAFETY: `mapping` is a live read-write mapping of `len` bytes owned here.
        if unsafe { libc::mlock(mapping.ptr.cast(), len) } != 0 {
            return Err(errno_text("mlock of the DMA region"));
        }
        for off in (0..len).step_by(page) {
            // SAFETY: `off < len`, inside the writable mapping, which nothing else references
            // yet. Writing zero keeps the (already zeroed) content.
            unsafe { mapping.ptr.add(off).write_volatile(0) };
        }
        let phys = contiguous_phys(&mapping.pagemap(page)?, page as u64)
            .map_err(|e| format!("DMA region of {len} bytes: {e}"))?;
        let base = NonNull::new(mapping.ptr).ok_or("null mapping")?;
        std::mem::forget(mapping); // now owned by the region
        Ok(DmaRegion { base, len, phys })
    }

    /// The first byte's virtual address.
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The size in bytes (a multiple of 2 MiB).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a region has at least one huge page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The physical address of byte 0; byte `o` is at `phys_base() + o`.
    pub fn phys_base(&self) -> u64 {
        self.phys
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` with this address and length and is
        // unmapped only here; the owner guarantees no device DMA is still aimed at it.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl std::fmt::Debug for DmaRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaRegion")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("phys", &format_args!("{:#x}", self.phys))
            .finish()
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// `HugePages_Free` from `/proc/meminfo` (0 when unreadable).
fn free_huge_pages() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("HugePages_Free:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 4096;

    #[test]
    fn pagemap_entries_decode() {
        assert_eq!(pagemap_pfn(0), None, "not present");
        assert_eq!(pagemap_pfn(PM_PRESENT | 0x1234), Some(0x1234));
        // Soft-dirty (55) and exclusive (56) bits are not part of the frame number.
        assert_eq!(pagemap_pfn(PM_PRESENT | (1 << 55) | (1 << 56) | 7), Some(7));
        assert_eq!(pagemap_pfn(PM_PRESENT | PM_SWAPPED | 7), None, "swapped");
        assert_eq!(pagemap_pfn(PM_PRESENT | PM_PFN_MASK), Some(PM_PFN_MASK));
    }

    #[test]
    fn a_contiguous_run_is_found_in_any_virtual_order() {
        const F: u64 = 512;
        // The order QEMU's guest kernel handed out 2 MiB pages in.
        let pfns = [0x1400, 0x1200, 0x1600, 0x1c00];
        assert_eq!(contiguous_run(&pfns, 3, F), Some(vec![1, 0, 2]));
        assert_eq!(contiguous_run(&pfns, 4, F), None);
        assert_eq!(contiguous_run(&pfns, 1, F), Some(vec![1]));
        assert_eq!(contiguous_run(&pfns, 0, F), None);
        assert_eq!(contiguous_run(&pfns, 5, F), None);
        // The first long-enough run wins, past a gap.
        let gap = [0x5000, 0x1000, 0x4e00, 0x1400, 0x5200];
        assert_eq!(contiguous_run(&gap, 3, F), Some(vec![2, 0, 4]));
        // Already in order.
        assert_eq!(contiguous_run(&[0x200, 0x400], 2, F), Some(vec![0, 1]));
    }

    #[test]
    fn new_either_works_or_says_why() {
        assert!(DmaRegion::new(0).is_err());
        match DmaRegion::new(1) {
            Ok(r) => {
                assert_eq!(r.len(), HUGE_PAGE);
                assert_eq!(r.phys_base() % HUGE_PAGE as u64, 0);
                // SAFETY: inside the fresh region, which nothing else uses.
                unsafe { r.base().add(HUGE_PAGE - 1).write_volatile(7) };
            }
            // Most hosts have no huge pages reserved, or run tests unprivileged.
            Err(e) => assert!(
                e.contains("nr_hugepages") || e.contains("CAP_SYS_ADMIN"),
                "{e}"
            ),
        }
    }

    #[test]
    fn contiguity_is_required() {
        let run: Vec<u64> = (0..4).map(|i| PM_PRESENT | (0x100 + i)).collect();
        assert_eq!(contiguous_phys(&run, P), Ok(0x100 * P));

        let mut gap = run.clone();
        gap[2] = PM_PRESENT | 0x900;
        let e = contiguous_phys(&gap, P).unwrap_err();
        assert!(e.contains("not physically contiguous"), "{e}");
        assert!(e.contains("page 2 is at 0x900000"), "{e}");
        assert!(e.contains("0x100000+0x2000, 0x900000+0x1000"), "{e}");

        let mut absent = run.clone();
        absent[1] = 0;
        assert!(contiguous_phys(&absent, P)
            .unwrap_err()
            .contains("page 1 is not present"));

        let unprivileged = vec![PM_PRESENT; 4];
        assert!(contiguous_phys(&unprivileged, P)
            .unwrap_err()
            .contains("CAP_SYS_ADMIN"));
        assert!(contiguous_phys(&[], P).is_err());
    }
}
