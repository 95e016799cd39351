//! User memory the add-on cannot touch (the simulator's SMAP), and fault-safe copies of
//! kernel memory for `user_memcpy`.
//!
//! On Haiku with SMAP a kernel add-on that dereferences a user pointer faults; only
//! `user_memcpy` and friends may reach user memory. Here a range of Haiku's user space is
//! reserved in the host process with `PROT_NONE` ([`user_range`]), and every client mapping
//! inside it is a memfd mapped twice: `PROT_NONE` at its user address, so a load or store by
//! the add-on faults, and read/write at another host address, through which the client (the
//! test) and `user_memcpy` reach the bytes. A `SIGSEGV`/`SIGBUS` handler turns a fault inside
//! the reserved range into a report naming the address and the faulting instruction, and then
//! ends the process: the faulting instruction cannot be resumed or skipped safely, and
//! unwinding out of a signal handler through the add-on's frames is not possible. Faults
//! anywhere else go to the handler that was installed before (Rust's stack-overflow
//! handler, or the default action).
//!
//! Kernel memory, on the other hand, is any host address outside the user space. Haiku's
//! `user_memcpy` survives a bad kernel address too (it returns `B_BAD_ADDRESS`); the
//! simulator gets the same as Haiku does, with a copy routine whose faults the handler
//! turns into a failure return ([`fault_copy`]).

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use sim_kernel::memory::PAGE_SIZE;
use sim_kernel::user::{UserBacking, UserMapper};

/// Size of the reserved user range: room for any test's client memory.
pub const USER_RANGE_SIZE: u64 = 1 << 30;

/// Where the reservation goes if it can: the address `SimKernel::user_alloc` starts at.
pub const PREFERRED_USER_BASE: u64 = sim_kernel::user::USER_ALLOC_BASE;

/// Other bases inside Haiku's user range, tried in order when the preferred one is taken.
const FALLBACK_BASES: [u64; 4] = [
    0x2_0000_0000,
    0x10_0000_0000,
    0x100_0000_0000,
    0x1000_0000_0000,
];

/// Exit status of a process ended by an SMAP violation.
pub const SMAP_EXIT_CODE: i32 = 86;

static RANGE_START: AtomicU64 = AtomicU64::new(0);
static RANGE_END: AtomicU64 = AtomicU64::new(0);
static RESERVATION: OnceLock<Result<(u64, u64), String>> = OnceLock::new();

/// The reserved user range `[start, end)`, reserving it (and installing the fault handler)
/// on first use. `Err` if no base could be reserved; then user memory stays plain host
/// bytes and a direct access is not caught.
pub fn user_range() -> Result<(u64, u64), String> {
    RESERVATION.get_or_init(reserve).clone()
}

fn reserve() -> Result<(u64, u64), String> {
    let len = USER_RANGE_SIZE as usize;
    for base in std::iter::once(PREFERRED_USER_BASE).chain(FALLBACK_BASES) {
        // SAFETY: an anonymous PROT_NONE reservation; MAP_FIXED_NOREPLACE makes the kernel
        // refuse instead of replacing anything already mapped there.
        let p = unsafe {
            libc::mmap(
                base as *mut c_void,
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_NORESERVE
                    | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            continue;
        }
        if p as u64 != base {
            // A kernel without MAP_FIXED_NOREPLACE treats it as a hint.
            // SAFETY: the mapping just made, which nothing else knows about.
            unsafe { libc::munmap(p, len) };
            continue;
        }
        if base != PREFERRED_USER_BASE {
            eprintln!(
                "sim: the user range {PREFERRED_USER_BASE:#x} is taken in this process; \
                 client memory lives at {base:#x}..{:#x} instead",
                base + USER_RANGE_SIZE
            );
        }
        RANGE_START.store(base, Ordering::SeqCst);
        RANGE_END.store(base + USER_RANGE_SIZE, Ordering::SeqCst);
        install_fault_handler();
        return Ok((base, base + USER_RANGE_SIZE));
    }
    Err("no base for the simulated user range could be reserved".into())
}

/// Places client mappings in the reserved range as double-mapped memfds.
pub struct SmapMapper {
    start: u64,
    end: u64,
}

impl SmapMapper {
    /// The mapper over the reserved range (reserving it if needed).
    pub fn new() -> Result<SmapMapper, String> {
        let (start, end) = user_range()?;
        Ok(SmapMapper { start, end })
    }
}

impl UserMapper for SmapMapper {
    fn alloc_base(&self) -> u64 {
        self.start
    }

    fn range(&self) -> std::ops::Range<u64> {
        self.start..self.end
    }

    fn map(&self, addr: u64, len: usize) -> Option<Box<dyn UserBacking>> {
        let end = addr.checked_add(len as u64)?;
        if len == 0 || addr < self.start || end > self.end {
            return None;
        }
        DoubleMapping::new(addr, len).map(|m| Box::new(m) as Box<dyn UserBacking>)
    }
}

/// One client mapping: a memfd, `PROT_NONE` at its (page-rounded) user address, read/write
/// at `alias`.
struct DoubleMapping {
    page: u64,
    span: usize,
    alias: *mut u8,
    offset: usize,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; the raw pointer is into memory it maps
// and unmaps itself, usable from any thread.
unsafe impl Send for DoubleMapping {}

impl DoubleMapping {
    fn new(addr: u64, len: usize) -> Option<DoubleMapping> {
        let page = addr & !(PAGE_SIZE as u64 - 1);
        let offset = (addr - page) as usize;
        let span = (offset + len).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        // SAFETY: a fresh anonymous file; the name is a NUL-terminated literal.
        let fd = unsafe { libc::memfd_create(c"sim-user".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let close = |fd| {
            // SAFETY: our own descriptor; the mappings keep the file alive.
            unsafe { libc::close(fd) };
        };
        // SAFETY: sizing our own memfd.
        if unsafe { libc::ftruncate(fd, span as libc::off_t) } != 0 {
            close(fd);
            return None;
        }
        // SAFETY: replaces pages of our own PROT_NONE reservation (the caller checked the
        // range lies inside it) with a PROT_NONE view of the memfd: still inaccessible.
        let user = unsafe {
            libc::mmap(
                page as *mut c_void,
                span,
                libc::PROT_NONE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd,
                0,
            )
        };
        // SAFETY: a new read/write view of the memfd wherever the kernel likes.
        let alias = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        close(fd);
        if user == libc::MAP_FAILED || alias == libc::MAP_FAILED {
            if alias != libc::MAP_FAILED {
                // SAFETY: the alias just made.
                unsafe { libc::munmap(alias, span) };
            }
            restore_reservation(page, span);
            return None;
        }
        Some(DoubleMapping {
            page,
            span,
            alias: alias.cast(),
            offset,
            len,
        })
    }
}

impl UserBacking for DoubleMapping {
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `alias` maps `span` bytes read/write for as long as `self` lives, and
        // `offset + len <= span`; `&mut self` makes this the only slice over it.
        unsafe { std::slice::from_raw_parts_mut(self.alias.add(self.offset), self.len) }
    }
}

impl Drop for DoubleMapping {
    fn drop(&mut self) {
        // SAFETY: the alias mapping this value made; no slice of it outlives `&mut self`.
        unsafe { libc::munmap(self.alias.cast(), self.span) };
        restore_reservation(self.page, self.span);
    }
}

/// Puts plain `PROT_NONE` reservation back over `[page, page + span)`.
fn restore_reservation(page: u64, span: usize) {
    // SAFETY: the range lies inside our own reservation; MAP_FIXED replaces only our own
    // mapping there with an inaccessible one.
    unsafe {
        libc::mmap(
            page as *mut c_void,
            span,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
}

// ---- the fault handler ----

struct OldActions {
    segv: libc::sigaction,
    bus: libc::sigaction,
}

static OLD_ACTIONS: OnceLock<OldActions> = OnceLock::new();

pub(crate) fn install_fault_handler() {
    OLD_ACTIONS.get_or_init(|| {
        let mut segv = empty_sigaction();
        let mut bus = empty_sigaction();
        let mut action = empty_sigaction();
        action.sa_sigaction = on_fault as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: installing a handler with a valid sigaction and out pointers to locals;
        // the old actions are published (OnceLock) before any fault can need them, since
        // the reserved range has no accessible pages to fault on before this returns.
        unsafe {
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGSEGV, &action, &mut segv);
            libc::sigaction(libc::SIGBUS, &action, &mut bus);
        }
        OldActions { segv, bus }
    });
}

fn empty_sigaction() -> libc::sigaction {
    // SAFETY: sigaction is a plain C struct for which all-zero is a valid (default) value.
    unsafe { std::mem::zeroed() }
}

/// Set while the report is being written, so a fault inside the handler does not recurse.
static REPORTING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    if recover_fault_copy(ctx) {
        return;
    }
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as u64;
    let start = RANGE_START.load(Ordering::Relaxed);
    let end = RANGE_END.load(Ordering::Relaxed);
    if start != 0 && (start..end).contains(&addr) && !REPORTING.swap(true, Ordering::SeqCst) {
        let rip = instruction_pointer(ctx);
        let mut line = Line::new();
        line.push(b"\nsim: SMAP violation: the add-on touched user address ");
        line.hex(addr);
        line.push(b" from code address ");
        line.hex(rip);
        line.push(
            b" (a kernel add-on must reach user memory only through user_memcpy); \
                    the faulting access cannot be resumed, so the simulator ends the process\n",
        );
        // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is on our stack.
        unsafe {
            libc::write(2, line.buf.as_ptr().cast(), line.len);
            libc::_exit(SMAP_EXIT_CODE);
        }
    }
    chain(sig, info, ctx);
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn instruction_pointer(ctx: *mut c_void) -> u64 {
    if ctx.is_null() {
        return 0;
    }
    // SAFETY: for an SA_SIGINFO handler the third argument is the interrupted context.
    unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] as u64 }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn instruction_pointer(_ctx: *mut c_void) -> u64 {
    0
}

/// Hands a fault that is not ours to whatever handled it before.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let Some(old) = OLD_ACTIONS.get() else {
        reset_to_default(sig);
        return;
    };
    let action = if sig == libc::SIGBUS {
        &old.bus
    } else {
        &old.segv
    };
    let handler = action.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Returning re-executes the faulting instruction, which now gets the default action.
        reset_to_default(sig);
    } else if action.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous SA_SIGINFO handler, called as the kernel would have.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the previous plain handler, called as the kernel would have.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

fn reset_to_default(sig: libc::c_int) {
    let mut action = empty_sigaction();
    action.sa_sigaction = libc::SIG_DFL;
    // SAFETY: installing the default action for the signal.
    unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) };
}

/// A message built without allocating (we are in a signal handler).
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }

    fn hex(&mut self, v: u64) {
        self.push(b"0x");
        let digits = b"0123456789abcdef";
        let mut started = false;
        for shift in (0..16).rev() {
            let d = ((v >> (shift * 4)) & 0xf) as usize;
            if d != 0 || started || shift == 0 {
                started = true;
                self.push(&[digits[d]]);
            }
        }
    }
}

// ---- kernel memory, copied without faulting ----

// The copy routine is in `shim.c` (`sim_haiku_fault_copy`): it copies forwards and returns 0,
// or 1 when the fault handler ([`on_fault`]) finds a fault inside it and resumes it at
// `sim_haiku_fault_copy_failed`, as Haiku's `user_memcpy` does with the thread's fault
// handler. No system call and no scratch buffer per copy.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
extern "C" {
    fn sim_haiku_fault_copy(dst: *mut u8, src: *const u8, len: usize) -> u32;
    fn sim_haiku_fault_copy_failed();
}

/// If the fault interrupted [`fault_copy`]'s copy, makes it resume where it returns its
/// failure; true if so.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn recover_fault_copy(ctx: *mut c_void) -> bool {
    let rip = instruction_pointer(ctx);
    let (start, failed) = (
        sim_haiku_fault_copy as *const () as u64,
        sim_haiku_fault_copy_failed as *const () as u64,
    );
    if !(start..failed).contains(&rip) {
        return false;
    }
    // SAFETY: `instruction_pointer` found a context (non-NULL) for an SA_SIGINFO handler;
    // its saved instruction pointer is what the thread resumes at, and the copy loop keeps
    // nothing on the stack, so resuming at its failure exit is a clean return.
    unsafe {
        (*(ctx as *mut libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] = failed as i64;
    }
    true
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn recover_fault_copy(_ctx: *mut c_void) -> bool {
    false
}

/// Copies `len` bytes from `src` to `dst` like a kernel `user_memcpy` would: `Err` instead
/// of a fault when either side is not mapped (readable at `src`, writable at `dst`). The
/// bytes before the fault may have been copied. The ranges must not overlap.
pub(crate) fn fault_copy(dst: *mut u8, src: *const u8, len: usize) -> Result<(), ()> {
    if len == 0 {
        return Ok(());
    }
    if (src as u64).checked_add(len as u64).is_none()
        || (dst as u64).checked_add(len as u64).is_none()
    {
        return Err(());
    }
    install_fault_handler();
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        // SAFETY: the routine only copies; a fault in it is caught by `on_fault` (installed
        // above) and turned into its failure return, so any addresses are safe to pass.
        match unsafe { sim_haiku_fault_copy(dst, src, len) } {
            0 => Ok(()),
            _ => Err(()),
        }
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        vm_copy(dst, src, len)
    }
}

/// Elsewhere: `process_vm_readv` on our own process, which reports `EFAULT` instead of
/// faulting (the remote side is the kernel address).
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn vm_copy(dst: *mut u8, src: *const u8, len: usize) -> Result<(), ()> {
    let mut bounce = vec![0u8; len];
    let mut io = |local: *mut u8, remote: u64, write: bool| {
        let l = libc::iovec {
            iov_base: local.cast(),
            iov_len: len,
        };
        let r = libc::iovec {
            iov_base: remote as *mut c_void,
            iov_len: len,
        };
        // SAFETY: the local iovec is our own buffer; the kernel checks the remote one.
        let n = unsafe {
            if write {
                libc::process_vm_writev(libc::getpid(), &l, 1, &r, 1, 0)
            } else {
                libc::process_vm_readv(libc::getpid(), &l, 1, &r, 1, 0)
            }
        };
        if n == len as isize {
            Ok(())
        } else {
            Err(())
        }
    };
    io(bounce.as_mut_ptr(), src as u64, false)?;
    io(bounce.as_mut_ptr(), dst as u64, true)
}

/// Reads host memory at `addr` like a kernel `user_memcpy` would: `Err` instead of a fault
/// when it is not mapped readable.
pub(crate) fn kernel_read(addr: u64, out: &mut [u8]) -> Result<(), ()> {
    fault_copy(out.as_mut_ptr(), addr as *const u8, out.len())
}

/// The NUL-terminated string at kernel address `addr`, read a byte at a time as Haiku's
/// `user_strlcpy` does, so nothing past the NUL is touched (a string at the end of a mapping
/// or of a heap block reads fine, and memcheck sees no read past the block); `Err` if it runs
/// into unmapped memory first. Stops after `limit` bytes without a NUL (returns what it read).
pub(crate) fn kernel_read_cstr(addr: u64, limit: usize) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    while out.len() < limit {
        let mut b = [0u8];
        kernel_read(addr.checked_add(out.len() as u64).ok_or(())?, &mut b)?;
        if b[0] == 0 {
            break;
        }
        out.push(b[0]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two fresh pages, the second made inaccessible as `prot` says, and their address.
    fn two_pages(second: libc::c_int) -> *mut u8 {
        // SAFETY: a fresh anonymous mapping of two pages, and a protection change of its
        // own second page.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                2 * PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(
                libc::mprotect(p.cast::<u8>().add(PAGE_SIZE).cast(), PAGE_SIZE, second),
                0
            );
            p.cast()
        }
    }

    #[test]
    fn fault_copy_copies_every_length_and_fails_instead_of_faulting() {
        let src: Vec<u8> = (0..40u8).collect();
        for len in 0..src.len() {
            let mut dst = [0xeeu8; 41];
            assert_eq!(fault_copy(dst.as_mut_ptr(), src.as_ptr(), len), Ok(()));
            assert_eq!(&dst[..len], &src[..len], "{len} bytes");
            assert!(
                dst[len..].iter().all(|&b| b == 0xee),
                "{len}: nothing past the end"
            );
        }
        let mut out = [0u8; 8];
        assert_eq!(
            fault_copy(out.as_mut_ptr(), 8 as *const u8, 8),
            Err(()),
            "page 0"
        );
        assert_eq!(fault_copy(8 as *mut u8, src.as_ptr(), 8), Err(()));
        // Running off a readable page into one that is not.
        let p = two_pages(libc::PROT_NONE);
        // SAFETY: inside the first page, which is readable and writable.
        let near_end = unsafe { p.add(PAGE_SIZE - 4) };
        assert_eq!(fault_copy(out.as_mut_ptr(), near_end, 4), Ok(()));
        assert_eq!(fault_copy(out.as_mut_ptr(), near_end, 5), Err(()));
        assert_eq!(fault_copy(near_end, src.as_ptr(), 12), Err(()));
        // A read-only page reads but does not write.
        let r = two_pages(libc::PROT_READ);
        // SAFETY: the second page of `r`, mapped read-only.
        let ro = unsafe { r.add(PAGE_SIZE) };
        assert_eq!(fault_copy(out.as_mut_ptr(), ro, 8), Ok(()));
        assert_eq!(out, [0; 8]);
        assert_eq!(fault_copy(ro, src.as_ptr(), 1), Err(()));
        // And the handler still lets a copy that works after a fault work.
        assert_eq!(fault_copy(out.as_mut_ptr(), src.as_ptr(), 8), Ok(()));
        assert_eq!(out[..], src[..8]);
        // SAFETY: the two mappings made above, no longer used.
        unsafe {
            libc::munmap(p.cast(), 2 * PAGE_SIZE);
            libc::munmap(r.cast(), 2 * PAGE_SIZE);
        }
    }

    /// A kernel string ending at the last byte of a mapping reads whole; one that runs into
    /// the unmapped page fails; `limit` cuts a string without a NUL.
    #[test]
    fn kernel_strings_stop_at_their_nul() {
        let p = two_pages(libc::PROT_NONE);
        // SAFETY: the last 4 bytes of the first page, which is readable and writable.
        let at = unsafe { p.add(PAGE_SIZE - 4) };
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(c"abc".as_ptr().cast(), at, 4) };
        assert_eq!(kernel_read_cstr(at as u64, 64), Ok(b"abc".to_vec()));
        assert_eq!(kernel_read_cstr(at as u64, 2), Ok(b"ab".to_vec()));
        // SAFETY: as above.
        unsafe { *at.add(3) = b'd' };
        assert_eq!(
            kernel_read_cstr(at as u64, 64),
            Err(()),
            "no NUL before the hole"
        );
        assert_eq!(kernel_read_cstr(0, 64), Err(()), "page 0");
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(p.cast(), 2 * PAGE_SIZE) };
    }
}
