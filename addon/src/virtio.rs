//! `VirtioDevice` over Haiku's `virtio_device_interface`.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::ffi::{c_char, c_void};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use spec::haiku_driver::{virtio_device, virtio_queue, PhysicalEntry, VirtioDeviceInterface};

use platform::sync::SpinLock;
use platform::{KResult, PhysEntry, QueueHandler, Status, VirtioDevice};

use super::kernel::HaikuKernel;

const QUEUES: usize = 4;

/// The virtio device our node sits on.
///
/// Haiku's bus does not serialise calls on one queue (`queue_request` and `queue_dequeue`
/// may race between an ioctl thread and the interrupt callback): each queue's calls go under
/// its own spinlock here, so callers need none. Dropping it frees what it still holds
/// (interrupts, then queues, which resets the device).
///
/// The queue handles are written only by `alloc_queues` and `free_queues`, which run when
/// no other call uses the queues (bring-up and teardown), so each is one atomic word read
/// without a lock: a lock around the read would not make a handle that `free_queues`
/// deletes meanwhile any safer to use, and it cost a spinlock round trip (interrupts off
/// and on again) on every request and dequeue. The interrupt handler is read the same way:
/// it is stored before the bus can call back and taken after the bus promised it no longer
/// will (see `handler`).
pub struct HaikuVirtio {
    iface: *const VirtioDeviceInterface,
    dev: virtio_device,
    queues: [AtomicPtr<c_void>; QUEUES],
    queue_locks: [SpinLock<()>; QUEUES],
    /// The handler the queue callback calls: null, or a box made by `setup_interrupts` and
    /// freed by `free_interrupts` only after the bus's `free_interrupts` returned, after
    /// which no callback runs (or never: leaked, without that promise).
    handler: AtomicPtr<Arc<dyn QueueHandler>>,
    /// `setup_interrupt` succeeded and `free_interrupts` has not run since.
    interrupts_set: AtomicBool,
    /// `alloc_queues` succeeded and `free_queues` has not run since.
    queues_allocated: AtomicBool,
}

impl core::fmt::Debug for HaikuVirtio {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HaikuVirtio")
            .field("dev", &self.dev)
            .finish()
    }
}

// SAFETY: the interface table and the device cookie are the bus manager's, valid for the
// driver's lifetime and usable from any thread; the mutable parts are behind spinlocks.
unsafe impl Send for HaikuVirtio {}
// SAFETY: as above.
unsafe impl Sync for HaikuVirtio {}

/// `negotiate_features` must get a name callback on R1/beta5, which calls it unchecked.
unsafe extern "C" fn feature_name(feature: u64) -> *const c_char {
    if feature == 1 << spec::virtio_snd::VIRTIO_SND_F_CTLS {
        c"CTLS".as_ptr()
    } else {
        core::ptr::null()
    }
}

/// The queue interrupt: the bus calls it with the cookie given to `setup_interrupt`
/// (`HaikuVirtio`) and the queue's own cookie (its index).
unsafe extern "C" fn queue_callback(driver: *mut c_void, queue: *mut c_void) {
    if driver.is_null() {
        return;
    }
    // SAFETY: `driver` is the `HaikuVirtio` passed to `setup_interrupt`, which outlives its
    // interrupts (`free_interrupts` runs before it is dropped).
    let this = unsafe { &*(driver as *const HaikuVirtio) };
    let h = this.handler.load(Ordering::Acquire);
    // SAFETY: null, or the box `setup_interrupts` stored before the bus could call back,
    // which `free_interrupts` frees only once the bus promised no callback runs any more.
    if let Some(h) = unsafe { h.as_ref() } {
        h.queue_interrupt(queue as usize as u16);
    }
}

impl HaikuVirtio {
    /// # Safety
    ///
    /// `iface` and `dev` are what `get_driver` returned for the virtio parent node, and stay
    /// valid while the driver is loaded.
    pub unsafe fn new(iface: *const VirtioDeviceInterface, dev: virtio_device) -> Self {
        HaikuVirtio {
            iface,
            dev,
            queues: [const { AtomicPtr::new(core::ptr::null_mut()) }; QUEUES],
            queue_locks: [const { SpinLock::new(()) }; QUEUES],
            handler: AtomicPtr::new(core::ptr::null_mut()),
            interrupts_set: AtomicBool::new(false),
            queues_allocated: AtomicBool::new(false),
        }
    }

    fn iface(&self) -> &VirtioDeviceInterface {
        // SAFETY: `new`'s contract: the table is the bus manager's and lives as long as we do.
        unsafe { &*self.iface }
    }

    fn queue(&self, q: u16) -> KResult<virtio_queue> {
        match self
            .queues
            .get(q as usize)
            .map(|p| p.load(Ordering::Acquire))
        {
            Some(p) if !p.is_null() => Ok(p),
            _ => Err(Status::BAD_VALUE),
        }
    }
}

fn call<T>(f: Option<T>) -> KResult<T> {
    f.ok_or(Status::NOT_SUPPORTED)
}

impl VirtioDevice for HaikuVirtio {
    fn negotiate_features(&self, supported: u64) -> KResult<u64> {
        let f = call(self.iface().negotiate_features)?;
        let mut negotiated = 0u64;
        // SAFETY: the bus's own function with its device cookie, an out pointer to a local
        // and a callback that never fails.
        Status(unsafe { f(self.dev, supported, &mut negotiated, Some(feature_name)) })
            .to_result()?;
        Ok(negotiated)
    }

    fn read_device_config(&self, offset: u8, buf: &mut [u8]) -> KResult {
        let f = call(self.iface().read_device_config)?;
        // SAFETY: `buf` is valid for its length.
        Status(unsafe { f(self.dev, offset, buf.as_mut_ptr().cast(), buf.len() as u64) })
            .to_result()
    }

    fn alloc_queues(&self, count: usize) -> KResult {
        if count > QUEUES {
            return Err(Status::BAD_VALUE);
        }
        let f = call(self.iface().alloc_queues)?;
        let mut qs: [virtio_queue; QUEUES] = [core::ptr::null_mut(); QUEUES];
        // SAFETY: room for `count` queue pointers; the 4th argument (requested sizes) is
        // NULL, which both R1/beta5 (3 arguments) and nightly accept.
        Status(unsafe {
            f(
                self.dev,
                count as u64,
                qs.as_mut_ptr(),
                core::ptr::null_mut(),
            )
        })
        .to_result()?;
        for (slot, q) in self.queues.iter().zip(qs) {
            slot.store(q, Ordering::Release);
        }
        self.queues_allocated.store(true, Ordering::Release);
        Ok(())
    }

    fn setup_interrupts(&self, handler: Arc<dyn QueueHandler>) -> KResult {
        let boxed = Box::into_raw(Box::new(handler));
        if let Err(_set) = self.handler.compare_exchange(
            core::ptr::null_mut(),
            boxed,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // Set up already and not freed since: callbacks may be using the one there.
            // SAFETY: `boxed` was made above and never shared.
            drop(unsafe { Box::from_raw(boxed) });
            return Err(Status::BUSY);
        }
        let this = self as *const HaikuVirtio as *mut c_void;
        let setup = call(self.iface().setup_interrupt)?;
        // SAFETY: no config-change handler; `this` outlives the interrupts (see callback).
        Status(unsafe { setup(self.dev, None, this) }).to_result()?;
        self.interrupts_set.store(true, Ordering::Release);
        let per_queue = call(self.iface().queue_setup_interrupt)?;
        for q in 0..QUEUES as u16 {
            let queue = self.queue(q)?;
            // SAFETY: `queue` came from alloc_queues; the cookie is the queue index.
            Status(unsafe { per_queue(queue, Some(queue_callback), q as usize as *mut c_void) })
                .to_result()?;
        }
        Ok(())
    }

    unsafe fn queue_request(
        &self,
        queue: u16,
        entries: &[PhysEntry],
        readable: usize,
        cookie: u64,
    ) -> KResult {
        if readable > entries.len() || entries.is_empty() {
            return Err(Status::BAD_VALUE);
        }
        let q = self.queue(queue)?;
        let f = call(self.iface().queue_request_v)?;
        // PhysEntry and physical_entry have the same layout (two u64).
        let vec = entries.as_ptr() as *const PhysicalEntry;
        let _serial = self.queue_locks[usize::from(queue)].lock(&HaikuKernel);
        // SAFETY: `vec` points to `entries.len()` entries of the kernel's layout; the bus
        // copies them into the ring before it returns. The memory they describe outlives
        // the chain: this function's own contract, passed on to its callers.
        Status(unsafe {
            f(
                q,
                vec,
                readable as u64,
                (entries.len() - readable) as u64,
                cookie as usize as *mut c_void,
            )
        })
        .to_result()
    }

    fn queue_dequeue(&self, queue: u16) -> Option<(u64, u32)> {
        let mut one = [(0, 0)];
        (self.queue_dequeue_into(queue, &mut one) == 1).then_some(one[0])
    }

    fn queue_dequeue_into(&self, queue: u16, out: &mut [(u64, u32)]) -> usize {
        let (Ok(q), Some(f)) = (self.queue(queue), self.iface().queue_dequeue) else {
            return 0;
        };
        let _serial = self.queue_locks[usize::from(queue)].lock(&HaikuKernel);
        let mut n = 0;
        while let Some(slot) = out.get_mut(n) {
            let mut cookie: *mut c_void = core::ptr::null_mut();
            let mut len = 0u32;
            // SAFETY: out pointers to locals.
            if !unsafe { f(q, &mut cookie, &mut len) } {
                break;
            }
            *slot = (cookie as usize as u64, len);
            n += 1;
        }
        n
    }

    fn queue_size(&self, queue: u16) -> u16 {
        match (self.queue(queue), self.iface().queue_size) {
            // SAFETY: a queue from alloc_queues.
            (Ok(q), Some(f)) => unsafe { f(q) },
            _ => 0,
        }
    }

    fn free_interrupts(&self) {
        let mut quiet = true;
        if self.interrupts_set.swap(false, Ordering::AcqRel) {
            if let Some(f) = self.iface().free_interrupts {
                // SAFETY: the device cookie; after this returns no callback runs.
                unsafe { f(self.dev) };
            } else {
                // Nothing stopped the callbacks: one may be running or come later.
                quiet = false;
            }
        }
        let old = self.handler.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if quiet && !old.is_null() {
            // SAFETY: the box `setup_interrupts` made, taken out above so nothing else frees
            // it; no callback runs any more (the bus's free_interrupts returned, or
            // interrupts were never set up), so none still reads it.
            drop(unsafe { Box::from_raw(old) });
        }
    }

    fn free_queues(&self) -> KResult {
        if !self.queues_allocated.swap(false, Ordering::AcqRel) {
            // Nothing was allocated (or it was freed already): no chain can be outstanding.
            return Ok(());
        }
        let Some(f) = self.iface().free_queues else {
            // Without the bus's free_queues nothing reset the device.
            return Err(Status::NOT_SUPPORTED);
        };
        // SAFETY: the device cookie; the bus resets the device (RESET, then DRIVER) before
        // it deletes the queues (VirtioDevice::FreeQueues), and that is all a reset can be
        // known by: the interface returns nothing.
        unsafe { f(self.dev) };
        for slot in &self.queues {
            slot.store(core::ptr::null_mut(), Ordering::Release);
        }
        Ok(())
    }
}

impl Drop for HaikuVirtio {
    fn drop(&mut self) {
        self.free_interrupts();
        // Nothing to tell anyone: whatever the driver kept for chains is already leaked.
        let _ = self.free_queues();
    }
}

const _: () = assert!(core::mem::size_of::<PhysEntry>() == core::mem::size_of::<PhysicalEntry>());
