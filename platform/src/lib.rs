//! The seams between the driver and what it runs on: kernel services ([`Kernel`]) and a
//! virtio device shaped like Haiku's `virtio_device_interface` ([`VirtioDevice`]). The Haiku
//! add-on implements them over the real kernel; the simulator, QEMU's device from Linux
//! userspace and the tests implement them over models.
//!
//! Above the traits, the safe wrappers every implementation shares: [`dma`] (device-visible
//! memory and the counted audio buffer area), [`sync`] (spinlocks and semaphore locks built
//! from the kernel's primitives) and [`user`] (typed copies to and from user memory; a user
//! address is never dereferenced).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod dma;
pub mod sync;
pub mod user;

use alloc::sync::Arc;
use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::AtomicI32;

use spec::haiku_driver as hd;

/// A Haiku `status_t`: `B_OK` or a negative error code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Status(pub i32);

impl Status {
    pub const OK: Status = Status(hd::B_OK);
    pub const ERROR: Status = Status(hd::B_ERROR);
    pub const NO_MEMORY: Status = Status(hd::B_NO_MEMORY);
    pub const IO_ERROR: Status = Status(hd::B_IO_ERROR);
    pub const BAD_VALUE: Status = Status(hd::B_BAD_VALUE);
    pub const TIMED_OUT: Status = Status(hd::B_TIMED_OUT);
    pub const INTERRUPTED: Status = Status(hd::B_INTERRUPTED);
    pub const NO_INIT: Status = Status(hd::B_NO_INIT);
    pub const BUSY: Status = Status(hd::B_BUSY);
    pub const BAD_DATA: Status = Status(hd::B_BAD_DATA);
    pub const BAD_ADDRESS: Status = Status(hd::B_BAD_ADDRESS);
    pub const BUFFER_OVERFLOW: Status = Status(hd::B_BUFFER_OVERFLOW);
    pub const NOT_SUPPORTED: Status = Status(hd::B_NOT_SUPPORTED);
    pub const DEV_INVALID_IOCTL: Status = Status(hd::B_DEV_INVALID_IOCTL);
    pub const DEV_TIMEOUT: Status = Status(hd::B_DEV_TIMEOUT);
    pub const DEV_NOT_READY: Status = Status(hd::B_DEV_NOT_READY);

    pub fn is_ok(self) -> bool {
        self.0 == hd::B_OK
    }

    /// `Ok(())` for `B_OK`, the status as an error otherwise.
    pub fn to_result(self) -> Result<(), Status> {
        if self.is_ok() {
            Ok(())
        } else {
            Err(self)
        }
    }

    fn name(self) -> Option<&'static str> {
        hd::STATUS
            .iter()
            .find(|c| c.value == self.0)
            .map(|c| c.name)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "status {:#x}", self.0),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Result of a kernel or driver operation.
pub type KResult<T = ()> = Result<T, Status>;

/// How loud a log line is; the add-on filters by the level in its settings file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
    Trace = 4,
}

/// A semaphore the kernel created (`sem_id`), owned by whoever holds this value.
///
/// Neither `Copy` nor constructible from safe code: code that does not own a semaphore
/// cannot name it, so it cannot release a unit it never took (which would let two holders
/// into a [`SemMutex`](crate::sync::SemMutex)).
///
/// ```compile_fail,E0603
/// let forged = driver::platform::SemId(3);
/// ```
///
/// ```compile_fail,E0382
/// fn twice<K: driver::Kernel>(k: &K, id: driver::platform::SemId) {
///     let copy = id;
///     k.release_sem(&id, false);
/// }
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct SemId(i32);

impl SemId {
    /// Wraps an id `create_sem` returned.
    ///
    /// # Safety
    ///
    /// Only an implementation of [`Kernel::create_sem`] calls this, once per semaphore it
    /// creates, so the returned value is the only handle to it.
    pub unsafe fn from_raw(id: i32) -> SemId {
        SemId(id)
    }

    /// The kernel's id, for the implementation's own calls.
    pub fn raw(&self) -> i32 {
        self.0
    }
}

/// The interrupt state [`Kernel::disable_interrupts`] saved, to be handed back to
/// [`Kernel::restore_interrupts`] exactly once, on the same CPU: neither `Send` nor `Sync`
/// (a thread may move to another CPU only with interrupts on), and not constructible from
/// safe code.
///
/// ```compile_fail,E0277
/// fn send<T: Send>() {}
/// send::<driver::platform::InterruptState>();
/// ```
///
/// ```compile_fail,E0451
/// let forged = driver::platform::InterruptState { raw: 1, _this_cpu: core::marker::PhantomData };
/// ```
#[derive(Debug)]
pub struct InterruptState {
    raw: u64,
    _this_cpu: PhantomData<*const ()>,
}

impl InterruptState {
    /// Wraps a saved state.
    ///
    /// # Safety
    ///
    /// Only an implementation of [`Kernel::disable_interrupts`] calls this, with the state it
    /// just saved on the current CPU.
    pub unsafe fn from_raw(raw: u64) -> InterruptState {
        InterruptState {
            raw,
            _this_cpu: PhantomData,
        }
    }

    /// The saved state, for the implementation of `restore_interrupts`.
    pub fn into_raw(self) -> u64 {
        self.raw
    }
}

/// An area: physically contiguous memory with a kernel mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    pub id: i32,
    /// The kernel virtual address. For a user-visible area (the audio buffers) this is also
    /// the address the ioctl caller uses, and the driver never dereferences it.
    pub addr: u64,
    /// The physical address of the first byte (the area is contiguous).
    pub phys: u64,
    pub size: usize,
}

/// One scatter-gather entry, as in Haiku's `physical_entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct PhysEntry {
    pub address: u64,
    pub size: u64,
}

/// The kernel services the driver uses.
///
/// # Implementation safety
///
/// - `create_area` returns memory that stays valid, physically contiguous and mapped at
///   `addr` until `delete_area`; a kernel-only area (`user == false`) is never touched by
///   anything but the driver and the device (by physical address).
/// - `acquire_spinlock` / `release_spinlock` give mutual exclusion between CPUs on the lock
///   word and are only called with interrupts disabled.
/// - Semaphores count: `acquire_sem` returns `Ok` only after taking a unit, and only
///   `release_sem` adds one (the exclusion `SemMutex` is built on: a unit it posts lets exactly
///   one waiter in). `create_sem` returns a new id each time ([`SemId::from_raw`]).
/// - `disable_interrupts` returns the state it saved on this CPU, and `restore_interrupts`
///   puts exactly that back.
/// - `user_memcpy_*` never fault: a bad user address is `Err(BAD_ADDRESS)`.
pub unsafe trait Kernel: Send + Sync + 'static {
    /// Microseconds since boot (`system_time()`), monotonic.
    fn system_time(&self) -> i64;
    fn snooze(&self, micros: i64);
    fn log(&self, level: LogLevel, message: fmt::Arguments<'_>);

    fn create_sem(&self, count: i32, name: &str) -> KResult<SemId>;
    fn delete_sem(&self, sem: SemId);
    /// Waits for one unit; a negative `timeout_micros` waits forever.
    /// `Err(TIMED_OUT)` when the timeout passes.
    fn acquire_sem(&self, sem: &SemId, timeout_micros: i64) -> KResult;
    /// Releases one unit. From an interrupt callback `from_interrupt` is true: the release
    /// must not reschedule (`B_DO_NOT_RESCHEDULE`).
    fn release_sem(&self, sem: &SemId, from_interrupt: bool);

    /// Disables interrupts on this CPU and returns the previous state.
    fn disable_interrupts(&self) -> InterruptState;
    fn restore_interrupts(&self, state: InterruptState);
    fn acquire_spinlock(&self, lock: &AtomicI32);
    fn release_spinlock(&self, lock: &AtomicI32);

    /// A physically contiguous area of `size` bytes (a multiple of the page size), zeroed.
    /// `user` makes it readable and writable by user space (the hmulti audio buffers).
    fn create_area(&self, name: &str, size: usize, user: bool) -> KResult<Area>;
    /// Deletes an area made by `create_area`.
    ///
    /// # Safety
    ///
    /// No virtio chain points into the area any more: every chain queued with an entry in it
    /// has come back from [`VirtioDevice::queue_dequeue`], or the device was reset since
    /// ([`VirtioDevice::free_queues`] returned `Ok`). Otherwise the device may write into
    /// memory the kernel has given to someone else. Nothing uses `area.addr` afterwards.
    unsafe fn delete_area(&self, area: &Area);

    /// Copies from the ioctl caller's memory.
    fn copy_from_user(&self, dst: &mut [u8], src: u64) -> KResult;
    /// Copies to the ioctl caller's memory.
    fn copy_to_user(&self, dst: u64, src: &[u8]) -> KResult;
    /// Sets `len` bytes at `dst` to `value` (`user_memset`): for memory user space can touch,
    /// such as a user-visible area, which the kernel must not write directly (SMAP).
    fn user_memset(&self, dst: u64, value: u8, len: usize) -> KResult;
}

/// Called when a virtqueue has used buffers. It runs in interrupt context: it must not block
/// or allocate.
pub trait QueueHandler: Send + Sync {
    fn queue_interrupt(&self, queue: u16);
}

/// The virtio bus as Haiku's `virtio_device_interface` offers it.
///
/// `queue_request` and `queue_dequeue` of one queue may be called from any thread and from
/// the queue's interrupt callback at once: the implementation serialises them (Haiku's bus
/// does not, so `HaikuVirtio` keeps a spinlock per queue). Callers hold no lock for it.
///
/// A chain is *outstanding* from `queue_request` until `queue_dequeue` hands its cookie back
/// or `free_queues` returns `Ok`: until then the device may read and write its memory by
/// physical address at any moment.
pub trait VirtioDevice: Send + Sync + 'static {
    /// Offers `supported` (device bits and VERSION_1); returns what was negotiated.
    fn negotiate_features(&self, supported: u64) -> KResult<u64>;
    fn read_device_config(&self, offset: u8, buf: &mut [u8]) -> KResult;
    /// Allocates `count` virtqueues at their default sizes.
    fn alloc_queues(&self, count: usize) -> KResult;
    /// Installs the interrupt handler for every queue and sets DRIVER_OK.
    fn setup_interrupts(&self, handler: Arc<dyn QueueHandler>) -> KResult;
    /// Adds a chain: `entries[..readable]` device-readable, the rest device-writable.
    /// `Err(BUSY)` when the ring is full. `cookie` comes back from `queue_dequeue`.
    ///
    /// # Safety
    ///
    /// On `Ok`, every entry lies in memory that stays allocated (no `delete_area`) for as
    /// long as the chain is outstanding, and whose readable part stays unchanged while the
    /// device may read it. The device reaches the memory by physical address; nothing the
    /// compiler can see keeps it alive.
    unsafe fn queue_request(
        &self,
        queue: u16,
        entries: &[PhysEntry],
        readable: usize,
        cookie: u64,
    ) -> KResult;
    /// One used chain: its cookie and the number of bytes the device wrote.
    fn queue_dequeue(&self, queue: u16) -> Option<(u64, u32)>;
    /// Used chains, in order, into `out` until it is full or the queue has none left: how
    /// many (fewer than `out.len()` means none was left). One call serialises once for all
    /// of them, where `queue_dequeue` would for each and once more for the empty answer.
    fn queue_dequeue_into(&self, queue: u16, out: &mut [(u64, u32)]) -> usize {
        let mut n = 0;
        while let Some(slot) = out.get_mut(n) {
            let Some(used) = self.queue_dequeue(queue) else {
                break;
            };
            *slot = used;
            n += 1;
        }
        n
    }
    fn queue_size(&self, queue: u16) -> u16;
    /// Disables interrupts; no handler call runs after this returns.
    fn free_interrupts(&self);
    /// Destroys the queues and resets the device. `Ok` means the device is reset: no chain
    /// is outstanding any more. `Err` means the reset is not confirmed: memory of chains that
    /// were outstanding must never be freed.
    fn free_queues(&self) -> KResult;
}
