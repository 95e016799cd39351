//! The virtio bus manager's `virtio_device_interface` over the device model.
//!
//! What `get_driver` returns for the virtio device node: a C table whose calls reach the
//! device (the [`SndModel`], or a real one: any [`BusDevice`]) through its [`VirtioDevice`](platform::VirtioDevice)
//! implementation, with the bus manager's own
//! rules on top (Haiku's `VirtioDevice.cpp`/`VirtioQueue.cpp`): `negotiate_features` adds
//! VERSION_1 and masks to what the bus lets through, and calls the name callback for every
//! feature bit the bus manager has no name for (on R1/beta5 without a NULL check, so there a
//! NULL callback is a recorded failure); `alloc_queues` takes three arguments on beta5 and
//! four on nightly, as the environment's [`HaikuRelease`] says; `setup_interrupt` must follow
//! `alloc_queues`; a queue's callback gets the driver cookie and the queue cookie. Queue interrupts come from the model's clock events, already
//! inside `SimKernel::run_in_interrupt`, so the kernel's misuse checks apply to the callback.

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use platform::{PhysEntry, QueueHandler};
use spec::haiku_driver::{
    self as hd, status_t, virtio_callback_func, virtio_device, virtio_intr_func, virtio_queue,
    DriverModuleInfo, ModuleInfo, PhysicalEntry, VirtioDeviceInterface,
};

use super::meter::{self, Site};
use super::user::kernel_read;
use super::{current, Core, HaikuRelease, Interrupts};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use sim_kernel::clock::EventSource;
use sim_kernel::kernel::Poll;
use sim_kernel::memory::SimCode;
use sim_kernel::report::lock;
use sim_kernel::Cpu;

/// Queues a virtio device can have (`VIRTIO_VIRTQUEUES_MAX_COUNT`).
const MAX_QUEUES: usize = hd::VIRTIO_VIRTQUEUES_MAX_COUNT as usize;

/// Feature bits the bus manager has names for (`virtio_get_feature_name`, the same on
/// R1/beta5 and nightly); it calls the driver's name callback for every other bit
/// (VERSION_1 included).
const KNOWN_TO_BUS: u64 = hd::VIRTIO_FEATURE_NOTIFY_ON_EMPTY
    | hd::VIRTIO_FEATURE_ANY_LAYOUT
    | hd::VIRTIO_FEATURE_RING_INDIRECT_DESC
    | hd::VIRTIO_FEATURE_RING_EVENT_IDX
    | hd::VIRTIO_FEATURE_BAD_FEATURE;

/// One queue's slot; a `virtio_queue` cookie is the address of one. A power of two in
/// size, so a cookie becomes its index with a shift.
#[repr(align(64))]
pub(crate) struct QueueSlot {
    /// (callback, its cookie) from `queue_setup_interrupt`.
    callback: Mutex<Option<(usize, usize)>>,
    /// The ring's size, read from the device when `alloc_queues` made the queue: Haiku's
    /// `VirtioQueue` keeps it (`fRingSize`) and checks each request against it.
    size: AtomicU16,
}

#[derive(Default)]
struct BusState {
    features: Option<u64>,
    queues: usize,
    interrupts: bool,
    driver_cookie: usize,
    config_handler: usize,
}

/// The bus side of one virtio device; a `virtio_device` cookie is its address.
pub(crate) struct Bus {
    queues: [QueueSlot; MAX_QUEUES],
    state: Mutex<BusState>,
    delivery: Interrupts,
    /// In shared delivery, the source of spurious interrupts while interrupts are set up.
    spurious: Mutex<Option<Arc<Spurious>>>,
    /// `state.queues`, for the queue calls to check a cookie against without a lock.
    allocated: AtomicUsize,
    /// What [`Bus::stats`] reports: [`InterruptStats`]' fields, counted as they happen.
    device_interrupts: AtomicU64,
    spurious_interrupts: AtomicU64,
    callbacks_run: AtomicU64,
}

/// What the bus delivered: the figures `cargo xtask sim` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterruptStats {
    /// Interrupts the device raised.
    pub device: u64,
    /// Spurious shared interrupts the simulator raised.
    pub spurious: u64,
    /// Queue callbacks run.
    pub callbacks: u64,
}

impl Bus {
    pub(crate) fn new(delivery: Interrupts) -> Bus {
        Bus {
            queues: std::array::from_fn(|_| QueueSlot {
                callback: Mutex::new(None),
                size: AtomicU16::new(0),
            }),
            state: Mutex::new(BusState::default()),
            delivery,
            spurious: Mutex::new(None),
            allocated: AtomicUsize::new(0),
            device_interrupts: AtomicU64::new(0),
            spurious_interrupts: AtomicU64::new(0),
            callbacks_run: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> InterruptStats {
        InterruptStats {
            device: self.device_interrupts.load(Ordering::Relaxed),
            spurious: self.spurious_interrupts.load(Ordering::Relaxed),
            callbacks: self.callbacks_run.load(Ordering::Relaxed),
        }
    }

    /// The callbacks one interrupt for `queue` runs, in the order the bus manager runs them:
    /// that queue's alone, or in shared delivery every queue's (`VirtioDevice::QueueInterrupt`
    /// with `INT16_MAX` loops over the queues in index order, skipping those without one).
    fn callbacks_for(&self, queue: Option<u16>) -> Vec<(usize, usize)> {
        let count = lock(&self.state).queues.min(MAX_QUEUES);
        let one = |i: usize| self.queues.get(i).and_then(|slot| *lock(&slot.callback));
        match (self.delivery, queue) {
            (Interrupts::PerQueue, Some(q)) => one(q as usize).into_iter().collect(),
            (Interrupts::PerQueue, None) => Vec::new(),
            (Interrupts::Shared { .. }, _) => (0..count).filter_map(one).collect(),
        }
    }

    /// The `virtio_device` cookie get_driver hands out.
    pub(crate) fn cookie(&self) -> usize {
        self as *const Bus as usize
    }

    /// Whether the queues are still set up (for the end-of-test report).
    pub(crate) fn leftovers(&self) -> Vec<String> {
        let st = lock(&self.state);
        let mut v = Vec::new();
        if st.interrupts {
            v.push("virtio: interrupts still set up (free_interrupts was not called)".into());
        }
        if st.queues > 0 {
            v.push("virtio: queues still allocated (free_queues was not called)".into());
        }
        v
    }
}

/// The interface table (the same for every environment: calls find theirs by cookie).
pub(crate) static INTERFACE: super::devmgr::Table<VirtioDeviceInterface> =
    super::devmgr::Table(VirtioDeviceInterface {
        info: DriverModuleInfo {
            info: ModuleInfo {
                name: hd::VIRTIO_DEVICE_MODULE_NAME.as_ptr(),
                flags: 0,
                std_ops: None,
            },
            supports_device: None,
            register_device: None,
            init_driver: None,
            uninit_driver: None,
            register_child_devices: None,
            rescan_child_devices: None,
            device_removed: None,
            suspend: None,
            resume: None,
        },
        negotiate_features: Some(negotiate_features),
        clear_feature: Some(clear_feature),
        read_device_config: Some(read_device_config),
        write_device_config: Some(write_device_config),
        alloc_queues: Some(alloc_queues),
        free_queues: Some(free_queues),
        setup_interrupt: Some(setup_interrupt),
        free_interrupts: Some(free_interrupts),
        queue_setup_interrupt: Some(queue_setup_interrupt),
        queue_request: Some(queue_request),
        queue_request_v: Some(queue_request_v),
        queue_is_full: Some(queue_is_full),
        queue_is_empty: Some(queue_is_empty),
        queue_size: Some(queue_size),
        queue_dequeue: Some(queue_dequeue),
    });

/// The environment whose bus `dev` is; a stranger is a recorded misuse.
fn device(site: Site, dev: virtio_device) -> Option<Arc<Core>> {
    let _sim = SimCode::enter();
    site.count();
    let what = site.name();
    let core = current()?;
    if dev as usize != core.bus.cookie() {
        core.record(format!(
            "virtio {what} with device cookie {:#x}, which the bus never handed out",
            dev as usize
        ));
        return None;
    }
    Some(core)
}

/// Runs `f` on the environment, this thread's CPU and the queue index of a queue cookie
/// from `alloc_queues`; a stranger is a recorded misuse, and then (as without an
/// environment) the answer is `dead`. The environment is found as for the hot kernel
/// exports ([`crate::with_env_cpu`]: outside a call into the add-on, `again` makes the call
/// again inside one).
#[inline(always)]
fn queue<R: Copy>(
    site: Site,
    q: virtio_queue,
    dead: R,
    again: impl FnOnce() -> R,
    f: impl FnOnce(&Core, Cpu<'_>, u16) -> R,
) -> R {
    crate::with_env_cpu(site, dead, again, move |core, cpu| {
        site.count();
        let base = core.bus.queues.as_ptr() as usize;
        let size = std::mem::size_of::<QueueSlot>();
        let off = (q as usize).wrapping_sub(base);
        let index = off / size;
        if off % size != 0 || index >= core.bus.allocated.load(Ordering::Acquire) {
            bad_queue(core, site, q);
            return dead;
        }
        f(core, cpu, index as u16)
    })
}

#[cold]
#[inline(never)]
fn bad_queue(core: &Core, site: Site, q: virtio_queue) {
    let _sim = SimCode::enter();
    core.record(format!(
        "virtio {} with queue cookie {:#x}, which alloc_queues never handed out",
        site.name(),
        q as usize
    ));
}

unsafe extern "C" fn negotiate_features(
    dev: virtio_device,
    supported: u64,
    negotiated: *mut u64,
    get_feature_name: Option<unsafe extern "C" fn(u64) -> *const c_char>,
) -> status_t {
    let Some(core) = device(const { Site::bus("negotiate_features") }, dev) else {
        return hd::B_BAD_VALUE;
    };
    if negotiated.is_null() {
        core.record("virtio negotiate_features with a NULL result pointer");
        return hd::B_BAD_VALUE;
    }
    // The bus asks for VERSION_1 itself on a modern device and never for NOTIFY_ON_EMPTY;
    // it lets through the device bits, the ring bits it implements and VERSION_1.
    let asked = (supported | hd::VIRTIO_FEATURE_VERSION_1) & !hd::VIRTIO_FEATURE_NOTIFY_ON_EMPTY;
    let passed = asked
        & (hd::VIRTIO_FEATURE_TRANSPORT_MASK
            | hd::VIRTIO_FEATURE_RING_INDIRECT_DESC
            | hd::VIRTIO_FEATURE_RING_EVENT_IDX
            | hd::VIRTIO_FEATURE_VERSION_1);
    let result = {
        let _sim = SimCode::enter();
        core.device.negotiate_features(passed)
    };
    let features = match result {
        Ok(f) => f,
        Err(e) => return e.0,
    };
    // _DumpFeatures: the name of every bit the bus does not know; unchecked on beta5,
    // skipped for a NULL callback on nightly (b57d5d2f41).
    let unknown = features & !KNOWN_TO_BUS;
    match get_feature_name {
        None if unknown != 0 && core.haiku == HaikuRelease::Beta5 => core.record(format!(
            "virtio negotiate_features with a NULL get_feature_name: R1/beta5 calls it for \
             features {unknown:#x} without a NULL check and would crash"
        )),
        None => {}
        Some(name_of) => {
            for bit in (0..64).map(|b| 1u64 << b).filter(|b| unknown & b != 0) {
                // SAFETY: the driver's callback, called as the bus manager does.
                let name = unsafe { name_of(bit) };
                let name = if name.is_null() {
                    "(unnamed)".to_owned()
                } else {
                    // SAFETY: a non-NULL answer is a NUL-terminated string.
                    unsafe { CStr::from_ptr(name) }
                        .to_string_lossy()
                        .into_owned()
                };
                core.log(&format!("[sim] virtio: feature {bit:#x} {name}"));
            }
        }
    }
    lock(&core.bus.state).features = Some(features);
    // SAFETY: checked non-NULL; the driver's out parameter.
    unsafe { *negotiated = features };
    hd::B_OK
}

unsafe extern "C" fn clear_feature(dev: virtio_device, feature: u64) -> status_t {
    let Some(core) = device(const { Site::bus("clear_feature") }, dev) else {
        return hd::B_BAD_VALUE;
    };
    let mut st = lock(&core.bus.state);
    if let Some(f) = st.features.as_mut() {
        *f &= !feature;
    }
    hd::B_OK
}

unsafe extern "C" fn read_device_config(
    dev: virtio_device,
    offset: u8,
    buffer: *mut c_void,
    size: u64,
) -> status_t {
    let Some(core) = device(const { Site::bus("read_device_config") }, dev) else {
        return hd::B_BAD_VALUE;
    };
    if buffer.is_null() && size > 0 {
        core.record("virtio read_device_config into a NULL buffer");
        return hd::B_BAD_VALUE;
    }
    if size > 256 {
        // The config offset is a uint8: nothing larger can be read.
        return hd::B_BAD_VALUE;
    }
    let mut bytes = vec![0u8; size as usize];
    let r = {
        let _sim = SimCode::enter();
        core.device.read_device_config(offset, &mut bytes)
    };
    if let Err(e) = r {
        return e.0;
    }
    // SAFETY: the driver's buffer of `size` bytes (checked non-NULL when size > 0).
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast(), bytes.len()) };
    hd::B_OK
}

/// virtio-snd's configuration space is read-only: a write is recorded (the device ignores
/// it) and reported as done, as the transport would.
unsafe extern "C" fn write_device_config(
    dev: virtio_device,
    offset: u8,
    _buffer: *const c_void,
    size: u64,
) -> status_t {
    let Some(core) = device(const { Site::bus("write_device_config") }, dev) else {
        return hd::B_BAD_VALUE;
    };
    core.record(format!(
        "virtio write_device_config({offset}, {size} bytes): the virtio-snd configuration is \
         read-only"
    ));
    hd::B_OK
}

/// `alloc_queues`: `(dev, count, queues)` on R1/beta5, `(dev, count, queues,
/// requestedSizes)` on nightly (b90dc7a4f3). The C function always has the fourth
/// parameter, which is the caller's rcx: on beta5 it is not read; on nightly it is NULL or an
/// array of `count` sizes (0 = the device maximum), read as the bus manager reads it, so a
/// caller built for beta5 gets whatever its stale rcx points at. An address that is not
/// mapped, where nightly would take a kernel page fault, is a recorded failure and
/// `B_BAD_ADDRESS`. The model has one ring size per queue: a request above it is
/// `B_BUFFER_OVERFLOW` (as on Haiku), a smaller one is accepted but the ring keeps the
/// model's size (recorded in the log).
unsafe extern "C" fn alloc_queues(
    dev: virtio_device,
    count: u64,
    queues: *mut virtio_queue,
    requested_sizes: *mut u16,
) -> status_t {
    let Some(core) = device(const { Site::bus("alloc_queues") }, dev) else {
        return hd::B_BAD_VALUE;
    };
    if count as usize > MAX_QUEUES || count == 0 {
        return hd::B_BAD_VALUE;
    }
    if queues.is_null() {
        core.record("virtio alloc_queues with a NULL queue array");
        return hd::B_BAD_VALUE;
    }
    if core.haiku == HaikuRelease::Nightly && !requested_sizes.is_null() {
        let mut raw = vec![0u8; count as usize * 2];
        if kernel_read(requested_sizes as u64, &mut raw).is_err() {
            core.record(format!(
                "virtio alloc_queues reads its fourth argument, requestedSizes = {:#x}, as an \
                 array of {count} queue sizes, and that memory is not mapped: nightly's bus \
                 manager takes a kernel page fault here. A caller built for R1/beta5's \
                 three-argument alloc_queues leaves a stale register in that place: pass NULL",
                requested_sizes as usize
            ));
            return hd::B_BAD_ADDRESS;
        }
        for (i, pair) in raw.chunks_exact(2).enumerate() {
            let want = u16::from_ne_bytes([pair[0], pair[1]]);
            let max = core.device.queue_size(i as u16);
            if want > max {
                return hd::B_BUFFER_OVERFLOW;
            }
            if want != 0 && want != max {
                core.log(&format!(
                    "[sim] virtio: queue {i} asked for {want} descriptors; the model keeps {max}"
                ));
            }
        }
    }
    let r = {
        let _sim = SimCode::enter();
        core.device.alloc_queues(count as usize)
    };
    if let Err(e) = r {
        return e.0;
    }
    lock(&core.bus.state).queues = count as usize;
    for i in 0..count as usize {
        let size = core.device.queue_size(i as u16);
        core.bus.queues[i].size.store(size, Ordering::Relaxed);
    }
    core.bus.allocated.store(count as usize, Ordering::Release);
    for i in 0..count as usize {
        *lock(&core.bus.queues[i].callback) = None;
        // SAFETY: the driver's array of `count` queue cookies.
        unsafe { *queues.add(i) = &core.bus.queues[i] as *const QueueSlot as virtio_queue };
    }
    hd::B_OK
}

/// Destroys the queues and resets the device. Freeing them while interrupts are still set
/// up is recorded: a queue interrupt would then reach freed queues on Haiku.
unsafe extern "C" fn free_queues(dev: virtio_device) {
    let Some(core) = device(const { Site::bus("free_queues") }, dev) else {
        return;
    };
    let interrupts = {
        let mut st = lock(&core.bus.state);
        st.queues = 0;
        core.bus.allocated.store(0, Ordering::Release);
        st.interrupts
    };
    if interrupts {
        core.record("virtio free_queues before free_interrupts");
    }
    for q in &core.bus.queues {
        *lock(&q.callback) = None;
    }
    let _sim = SimCode::enter();
    // The C interface returns nothing: whether the reset took is the device's to report.
    let _ = core.device.free_queues();
}

/// The model's interrupt handler: calls the stored callbacks the interrupt reaches.
struct Irq {
    core: Weak<Core>,
}

impl QueueHandler for Irq {
    fn queue_interrupt(&self, queue: u16) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        if let Some(spurious) = lock(&core.bus.spurious).clone() {
            spurious.after_interrupt(core.kernel.clock().now());
        }
        core.bus.device_interrupts.fetch_add(1, Ordering::Relaxed);
        run_callbacks(&core, Some(queue));
    }
}

/// Runs, on the interrupt thread, the callbacks an interrupt for `queue` (`None`: the shared
/// vector with no queue in particular) reaches, with the cookies each asked for.
fn run_callbacks(core: &Arc<Core>, queue: Option<u16>) {
    let (callbacks, driver_cookie) = {
        let _sim = SimCode::enter();
        let callbacks = core.bus.callbacks_for(queue);
        (callbacks, lock(&core.bus.state).driver_cookie)
    };
    if callbacks.is_empty() {
        return;
    }
    core.bus
        .callbacks_run
        .fetch_add(callbacks.len() as u64, Ordering::Relaxed);
    let core = core.clone();
    on_interrupt_thread(move || {
        for (cb, cookie) in callbacks {
            // SAFETY: `cb` is a virtio_callback_func the driver stored with
            // queue_setup_interrupt and has not cleared (free_queues clears them); it is
            // called with the cookies it asked for, as on Haiku.
            let f: unsafe extern "C" fn(*mut c_void, *mut c_void) =
                unsafe { std::mem::transmute(cb) };
            // The exports it calls find `core` through `entered`.
            meter::driver_code(|| {
                // SAFETY: as above.
                crate::entered(&core, || unsafe {
                    f(driver_cookie as *mut c_void, cookie as *mut c_void)
                })
            });
        }
    });
}

/// Spurious shared interrupts: after a real interrupt, with probability 1/2, one more at a
/// random moment up to 2 ms later. They come only after real ones, so an idle device has
/// none pending and the clock can still tell a wait that never ends.
struct Spurious {
    core: Weak<Core>,
    state: Mutex<(SmallRng, Option<i64>)>,
}

impl Spurious {
    const MAX_DELAY_US: i64 = 2000;

    fn after_interrupt(&self, now: i64) {
        let mut st = lock(&self.state);
        let (rng, next) = &mut *st;
        if next.is_none() && rng.random_bool(0.5) {
            *next = Some(now + rng.random_range(1..=Self::MAX_DELAY_US));
        }
    }
}

impl EventSource for Spurious {
    fn next_event(&self) -> Option<i64> {
        lock(&self.state).1
    }

    fn run_due(&self, now: i64) {
        let due = {
            let mut st = lock(&self.state);
            match st.1 {
                Some(t) if t <= now => st.1.take(),
                _ => None,
            }
        };
        if due.is_some() {
            if let Some(core) = self.core.upgrade() {
                core.bus.spurious_interrupts.fetch_add(1, Ordering::Relaxed);
                run_callbacks(&core, None);
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;
/// A job for the interrupt thread and the channel it signals when done.
type IrqRequest = (Job, std::sync::mpsc::SyncSender<()>);

thread_local! {
    static ON_IRQ_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `job` on the simulator's interrupt thread — a separate OS thread standing for the
/// CPU that takes the hardware interrupt, as on Haiku where the callback interrupts whatever
/// thread was running — inside that thread's interrupt context, and waits for it. The wait
/// keeps the simulation deterministic: time does not move while the handler runs.
fn on_interrupt_thread(job: impl FnOnce() + Send + 'static) {
    use std::sync::mpsc;
    use std::sync::OnceLock;
    static IRQ: OnceLock<Mutex<mpsc::Sender<IrqRequest>>> = OnceLock::new();
    // A handler that raises another interrupt (it cannot, today) runs it in place.
    if ON_IRQ_THREAD.with(|f| f.get()) {
        job();
        return;
    }
    let tx = IRQ.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<IrqRequest>();
        std::thread::Builder::new()
            .name("sim interrupt".into())
            .spawn(move || {
                ON_IRQ_THREAD.with(|f| f.set(true));
                for (job, done) in rx {
                    job();
                    let _ = done.send(());
                }
            })
            .expect("spawn the simulator's interrupt thread");
        Mutex::new(tx)
    });
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let kernel = crate::current().map(|c| c.kernel.clone());
    let wrapped: Job = Box::new(move || match kernel {
        Some(k) => k.run_in_interrupt(job),
        None => job(),
    });
    if lock(tx).send((wrapped, done_tx)).is_ok() {
        let _ = done_rx.recv();
    }
}

unsafe extern "C" fn setup_interrupt(
    dev: virtio_device,
    config_handler: virtio_intr_func,
    driver_cookie: *mut c_void,
) -> status_t {
    let Some(core) = device(const { Site::bus("setup_interrupt") }, dev) else {
        return hd::B_BAD_VALUE;
    };
    if lock(&core.bus.state).queues == 0 {
        core.record("virtio setup_interrupt before alloc_queues (it sizes the interrupts by the queue count)");
    }
    {
        let mut st = lock(&core.bus.state);
        st.driver_cookie = driver_cookie as usize;
        st.config_handler = config_handler.map_or(0, |f| f as usize);
    }
    let handler: Arc<dyn QueueHandler> = Arc::new(Irq {
        core: Arc::downgrade(&core),
    });
    let r = {
        let _sim = SimCode::enter();
        core.device.setup_interrupts(handler)
    };
    match r {
        Ok(()) => {
            lock(&core.bus.state).interrupts = true;
            if let Interrupts::Shared { seed } = core.bus.delivery {
                let spurious = Arc::new(Spurious {
                    core: Arc::downgrade(&core),
                    state: Mutex::new((SmallRng::seed_from_u64(seed), None)),
                });
                let source: Arc<dyn EventSource> = spurious.clone();
                core.kernel.clock().add_source(Arc::downgrade(&source));
                *lock(&core.bus.spurious) = Some(spurious);
            }
            hd::B_OK
        }
        Err(e) => e.0,
    }
}

unsafe extern "C" fn free_interrupts(dev: virtio_device) -> status_t {
    let Some(core) = device(const { Site::bus("free_interrupts") }, dev) else {
        return hd::B_BAD_VALUE;
    };
    {
        let _sim = SimCode::enter();
        core.device.free_interrupts();
    }
    lock(&core.bus.state).interrupts = false;
    *lock(&core.bus.spurious) = None;
    hd::B_OK
}

unsafe extern "C" fn queue_setup_interrupt(
    q: virtio_queue,
    handler: virtio_callback_func,
    cookie: *mut c_void,
) -> status_t {
    queue(
        const { Site::bus("queue_setup_interrupt") },
        q,
        hd::B_BAD_VALUE,
        // SAFETY: the caller's arguments, passed on.
        move || unsafe { queue_setup_interrupt(q, handler, cookie) },
        move |core, _, index| {
            *lock(&core.bus.queues[index as usize].callback) =
                handler.map(|f| (f as usize, cookie as usize));
            hd::B_OK
        },
    )
}

fn post(
    core: &Core,
    index: u16,
    entries: &[PhysEntry],
    readable: usize,
    cookie: *mut c_void,
) -> status_t {
    // SAFETY: the entries are the add-on's, and whether they stay valid is what is under
    // test: the simulated kernel hands out memory only from its arena, which stays mapped
    // while any area is live or the device may still use it (a deleted area is poisoned,
    // not unmapped), and the model flags a deleted area under a chain it holds.
    let queued = meter::device_code(|| unsafe {
        let _sim = SimCode::enter();
        core.device
            .queue_request(index, entries, readable, cookie as usize as u64)
    });
    match queued {
        Ok(()) => hd::B_OK,
        Err(e) => e.0,
    }
}

fn entry(p: &PhysicalEntry) -> PhysEntry {
    PhysEntry {
        address: p.address,
        size: p.size,
    }
}

// Haiku's `physical_entry` and the device's `PhysEntry` have one layout, so
// `queue_request_v` hands the driver's vector on as it is.
const _: () = assert!(
    std::mem::size_of::<PhysicalEntry>() == std::mem::size_of::<PhysEntry>()
        && std::mem::align_of::<PhysicalEntry>() == std::mem::align_of::<PhysEntry>()
        && std::mem::offset_of!(PhysicalEntry, address) == std::mem::offset_of!(PhysEntry, address)
        && std::mem::offset_of!(PhysicalEntry, size) == std::mem::offset_of!(PhysEntry, size)
);

unsafe extern "C" fn queue_request(
    q: virtio_queue,
    read_entry: *const PhysicalEntry,
    written_entry: *const PhysicalEntry,
    cookie: *mut c_void,
) -> status_t {
    queue(
        const { Site::bus("queue_request") },
        q,
        hd::B_BAD_VALUE,
        // SAFETY: the caller's arguments, passed on.
        move || unsafe { queue_request(q, read_entry, written_entry, cookie) },
        move |core, _, index| {
            let mut entries = [PhysEntry {
                address: 0,
                size: 0,
            }; 2];
            let mut n = 0;
            // SAFETY: each is NULL or one entry the driver owns for the call.
            unsafe {
                if let Some(r) = read_entry.as_ref() {
                    entries[n] = entry(r);
                    n += 1;
                }
                let readable = n;
                if let Some(w) = written_entry.as_ref() {
                    entries[n] = entry(w);
                    n += 1;
                }
                if n == 0 {
                    return hd::B_BAD_VALUE;
                }
                post(core, index, &entries[..n], readable, cookie)
            }
        },
    )
}

unsafe extern "C" fn queue_request_v(
    q: virtio_queue,
    vector: *const PhysicalEntry,
    read_count: u64,
    written_count: u64,
    cookie: *mut c_void,
) -> status_t {
    queue(
        const { Site::bus("queue_request_v") },
        q,
        hd::B_BAD_VALUE,
        // SAFETY: the caller's arguments, passed on.
        move || unsafe { queue_request_v(q, vector, read_count, written_count, cookie) },
        move |core, _, index| {
            let Some(total) = read_count.checked_add(written_count) else {
                return hd::B_BAD_VALUE;
            };
            if total == 0 {
                return hd::B_BAD_VALUE;
            }
            let ring = core.bus.queues[usize::from(index)]
                .size
                .load(Ordering::Relaxed);
            if total > u64::from(ring) {
                // More descriptors than the ring has (no indirect descriptors are
                // negotiated): Haiku refuses before it reads the vector.
                return hd::B_BUSY;
            }
            if vector.is_null() {
                null_vector(core);
                return hd::B_BAD_VALUE;
            }
            // SAFETY: the driver's vector of `total` entries (bounded above), read as the
            // device's entries: both types are the same two `u64` fields in the same order
            // (`repr(C)`, checked at compile time above), so each `physical_entry` is a `PhysEntry`.
            let entries =
                unsafe { std::slice::from_raw_parts(vector.cast::<PhysEntry>(), total as usize) };
            post(core, index, entries, read_count as usize, cookie)
        },
    )
}

#[cold]
#[inline(never)]
fn null_vector(core: &Core) {
    let _sim = SimCode::enter();
    core.record("virtio queue_request_v with a NULL vector");
}

unsafe extern "C" fn queue_is_full(q: virtio_queue) -> bool {
    queue(
        const { Site::bus("queue_is_full") },
        q,
        true,
        // SAFETY: the caller's argument, passed on.
        move || unsafe { queue_is_full(q) },
        |core, _, index| core.device.in_flight(index) >= usize::from(core.device.queue_size(index)),
    )
}

unsafe extern "C" fn queue_is_empty(q: virtio_queue) -> bool {
    queue(
        const { Site::bus("queue_is_empty") },
        q,
        true,
        // SAFETY: the caller's argument, passed on.
        move || unsafe { queue_is_empty(q) },
        |core, _, index| core.device.in_flight(index) == 0,
    )
}

unsafe extern "C" fn queue_size(q: virtio_queue) -> u16 {
    queue(
        const { Site::bus("queue_size") },
        q,
        0,
        // SAFETY: the caller's argument, passed on.
        move || unsafe { queue_size(q) },
        |core, _, index| core.device.queue_size(index),
    )
}

unsafe extern "C" fn queue_dequeue(
    q: virtio_queue,
    cookie: *mut *mut c_void,
    used_length: *mut u32,
) -> bool {
    queue(
        const { Site::bus("queue_dequeue") },
        q,
        false,
        // SAFETY: the caller's arguments, passed on.
        move || unsafe { queue_dequeue(q, cookie, used_length) },
        move |core, cpu, index| {
            let got = meter::device_code(|| {
                let _sim = SimCode::enter();
                core.device.queue_dequeue(index)
            });
            let Some((c, len)) = got else {
                // A driver that spins on the queue lets time pass, as a real CPU would.
                if let Err(why) = cpu.poll_missed(Poll::Queue) {
                    queue_polled_forever(&why);
                }
                return false;
            };
            cpu.poll_succeeded();
            // SAFETY: each is NULL or the driver's out parameter.
            unsafe {
                if !cookie.is_null() {
                    *cookie = c as usize as *mut c_void;
                }
                if !used_length.is_null() {
                    *used_length = len;
                }
            }
            true
        },
    )
}

/// A queue polled in vain for ever: the simulation cannot go on.
#[cold]
#[inline(never)]
fn queue_polled_forever(why: &str) -> ! {
    let _sim = SimCode::enter();
    panic!("{why}");
}

#[cfg(test)]
mod irq_thread_tests {
    use super::on_interrupt_thread;

    #[test]
    fn interrupts_run_on_another_thread_and_are_waited_for() {
        let me = std::thread::current().id();
        let (tx, rx) = std::sync::mpsc::channel();
        on_interrupt_thread(move || {
            let t = std::thread::current();
            tx.send((t.id(), t.name().map(str::to_owned))).unwrap();
        });
        // The job has finished when on_interrupt_thread returns.
        let (id, name) = rx.try_recv().expect("ran before returning");
        assert_ne!(id, me);
        assert_eq!(name.as_deref(), Some("sim interrupt"));
    }
}
