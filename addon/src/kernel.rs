//! `Kernel` over the real Haiku kernel.

use core::ffi::{c_char, c_void};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicI32, AtomicU8, Ordering};

use spec::haiku_driver as hd;

use super::kernel_imports as ki;
use platform::{Area, InterruptState, KResult, Kernel, LogLevel, SemId, Status};

/// Lines above this level are dropped (set from the settings file).
pub static LOG_LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

/// The Haiku kernel. Zero-sized: every call goes straight to the kernel's exports.
#[derive(Debug, Default, Clone, Copy)]
pub struct HaikuKernel;

/// A NUL-terminated copy of a short string, truncated to fit.
struct CName([u8; 32]);

impl CName {
    fn new(s: &str) -> Self {
        let mut b = [0u8; 32];
        for (d, c) in b.iter_mut().zip(s.bytes().take(31)) {
            *d = c;
        }
        CName(b)
    }

    fn as_ptr(&self) -> *const c_char {
        self.0.as_ptr().cast()
    }
}

/// A fixed buffer a log line is formatted into (no allocation: logging works anywhere).
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if self.len + 2 >= self.buf.len() {
                break;
            }
            // A stray NUL or percent sign must not end the line or be read as a format.
            self.buf[self.len] = if b == 0 { b'?' } else { b };
            self.len += 1;
        }
        Ok(())
    }
}

/// `prefix` and `args` as a NUL-terminated line (truncated to fit).
pub fn format_line(prefix: &str, args: fmt::Arguments<'_>, newline: bool) -> [u8; 256] {
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    let _ = line.write_str(prefix);
    let _ = line.write_fmt(args);
    if newline {
        line.buf[line.len] = b'\n';
    }
    line.buf
}

/// Formats `args` and hands the line to `dprintf("%s")`.
pub fn log_line(prefix: &str, args: fmt::Arguments<'_>) {
    let line = format_line(prefix, args, true);
    // SAFETY: the format is a literal "%s" and the argument a NUL-terminated buffer that
    // lives across the call.
    unsafe { ki::dprintf(c"%s".as_ptr(), line.as_ptr()) };
}

// SAFETY: every method forwards to the kernel export with the same contract: areas are
// created B_CONTIGUOUS and stay mapped until deleted, spinlocks are the kernel's, and
// user_memcpy fails with B_BAD_ADDRESS instead of faulting.
unsafe impl Kernel for HaikuKernel {
    fn system_time(&self) -> i64 {
        // SAFETY: no arguments, no preconditions.
        unsafe { ki::system_time() }
    }

    fn snooze(&self, micros: i64) {
        // SAFETY: plain value argument.
        unsafe { ki::snooze(micros) };
    }

    fn log(&self, level: LogLevel, message: fmt::Arguments<'_>) {
        if level as u8 <= LOG_LEVEL.load(Ordering::Relaxed) {
            log_line("virtio_sound: ", message);
        }
    }

    fn create_sem(&self, count: i32, name: &str) -> KResult<SemId> {
        let n = CName::new(name);
        // SAFETY: `n` is NUL-terminated and outlives the call; the kernel copies the name.
        let id = unsafe { ki::create_sem(count, n.as_ptr()) };
        if id < 0 {
            Err(Status(id))
        } else {
            // SAFETY: the id create_sem just returned, wrapped once.
            Ok(unsafe { SemId::from_raw(id) })
        }
    }

    fn delete_sem(&self, sem: SemId) {
        // SAFETY: plain value argument; a stale id only returns an error.
        unsafe { ki::delete_sem(sem.raw()) };
    }

    fn acquire_sem(&self, sem: &SemId, timeout_micros: i64) -> KResult {
        let (flags, timeout) = if timeout_micros < 0 {
            (hd::B_CAN_INTERRUPT, 0)
        } else {
            (hd::B_CAN_INTERRUPT | hd::B_RELATIVE_TIMEOUT, timeout_micros)
        };
        // SAFETY: plain value arguments.
        Status(unsafe { ki::acquire_sem_etc(sem.raw(), 1, flags, timeout) }).to_result()
    }

    fn release_sem(&self, sem: &SemId, from_interrupt: bool) {
        let flags = if from_interrupt {
            hd::B_DO_NOT_RESCHEDULE
        } else {
            0
        };
        // SAFETY: plain value arguments; B_DO_NOT_RESCHEDULE makes it legal with
        // interrupts disabled.
        unsafe { ki::release_sem_etc(sem.raw(), 1, flags) };
    }

    fn disable_interrupts(&self) -> InterruptState {
        // SAFETY: no preconditions; the state saved on this CPU becomes its one token.
        unsafe { InterruptState::from_raw(ki::disable_interrupts()) }
    }

    fn restore_interrupts(&self, state: InterruptState) {
        // SAFETY: a token only `disable_interrupts` makes, restored once (it is consumed) on
        // the CPU that made it (it is neither Send nor Sync).
        unsafe { ki::restore_interrupts(state.into_raw()) }
    }

    fn acquire_spinlock(&self, lock: &AtomicI32) {
        // SAFETY: a kernel spinlock is `struct { int32 lock; }`, the same layout as
        // AtomicI32, and the kernel only touches it atomically.
        unsafe { ki::acquire_spinlock(lock.as_ptr().cast()) }
    }

    fn release_spinlock(&self, lock: &AtomicI32) {
        // SAFETY: as in `acquire_spinlock`.
        unsafe { ki::release_spinlock(lock.as_ptr().cast()) }
    }

    fn create_area(&self, name: &str, size: usize, user: bool) -> KResult<Area> {
        let n = CName::new(name);
        let mut addr: *mut c_void = core::ptr::null_mut();
        let protection = if user {
            hd::B_READ_AREA | hd::B_WRITE_AREA
        } else {
            hd::B_KERNEL_READ_AREA | hd::B_KERNEL_WRITE_AREA
        };
        // SAFETY: `n` is NUL-terminated, `addr` a valid out pointer; the kernel picks the
        // address (B_ANY_KERNEL_ADDRESS) and backs it with contiguous, locked pages.
        let id = unsafe {
            ki::create_area(
                n.as_ptr(),
                &mut addr,
                hd::B_ANY_KERNEL_ADDRESS,
                size,
                hd::B_CONTIGUOUS,
                protection,
            )
        };
        if id < 0 {
            return Err(Status(id));
        }
        let mut entry = hd::PhysicalEntry {
            address: 0,
            size: 0,
        };
        // SAFETY: the area was just created at `addr` with `size` bytes; one entry is
        // enough for a contiguous area.
        let r = unsafe { ki::get_memory_map(addr, size, &mut entry, 1) };
        if r < 0 || entry.size < size as u64 {
            // SAFETY: `id` is the area created above.
            unsafe { ki::delete_area(id) };
            return Err(if r < 0 { Status(r) } else { Status::NO_MEMORY });
        }
        Ok(Area {
            id,
            addr: addr as u64,
            phys: entry.address,
            size,
        })
    }

    unsafe fn delete_area(&self, area: &Area) {
        // SAFETY: a plain value argument; that no chain points into the area any more is
        // this function's own contract.
        unsafe { ki::delete_area(area.id) };
    }

    fn copy_from_user(&self, dst: &mut [u8], src: u64) -> KResult {
        // SAFETY: `dst` is a valid kernel buffer of its length; user_memcpy checks `src`
        // and reports a bad address instead of faulting.
        Status(unsafe {
            ki::user_memcpy(
                dst.as_mut_ptr().cast(),
                src as usize as *const c_void,
                dst.len(),
            )
        })
        .to_result()
    }

    fn copy_to_user(&self, dst: u64, src: &[u8]) -> KResult {
        // SAFETY: as in `copy_from_user`, the other way round.
        Status(unsafe {
            ki::user_memcpy(dst as usize as *mut c_void, src.as_ptr().cast(), src.len())
        })
        .to_result()
    }

    fn user_memset(&self, dst: u64, value: u8, len: usize) -> KResult {
        // SAFETY: user_memset checks the range like user_memcpy and returns B_BAD_ADDRESS on
        // a fault instead of faulting.
        Status(unsafe { ki::user_memset(dst as usize as *mut c_void, value as c_char, len) })
            .to_result()
    }
}
