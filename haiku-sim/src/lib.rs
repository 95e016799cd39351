//! The Haiku kernel a loaded add-on expects: kernel exports, device manager, virtio bus and
//! devfs, over a [`SimKernel`] and an [`SndModel`] (or a real device: [`BusDevice`]).
//!
//! An [`Environment`] is one simulated Haiku with one virtio sound device. The add-on's
//! imports are bound (by the loader) to [`exports::kernel_symbols_of`] its Haiku release
//! ([`EnvConfig::haiku`]); [`Environment::attach`]
//! then does what Haiku's module loader and device manager do with its `modules`: fills
//! `module_dependencies`, runs `std_ops(B_MODULE_INIT)`, probes the virtio device node,
//! registers the winning driver's node (which initialises it and publishes its devices);
//! [`Environment::open`] is devfs. [`Environment::detach`] takes it all down again and
//! [`Environment::check_clean`] says what was leaked or misused.
//!
//! The exported C functions cannot carry a context, so they find the environment through a
//! process-wide "current environment". Only one may be alive at a time: `Environment::new`
//! waits until the previous one is gone, so tests that use environments in parallel run
//! one after the other.
//!
//! - [`exports`]: every symbol of the import table (`shim.c` has the variadic ones).
//! - [`user`]: client memory the add-on cannot touch (the simulator's SMAP).
//! - `devmgr`: `device_manager_info`, the node tree and devfs.
//! - `virtio_bus`: `virtio_device_interface` over the model.
//! - `heap`, `settings`, `threads`: the kernel heap, driver settings, threads and timers.
//! - [`meter`]: the add-on's calls counted, and the markers `cargo xtask bench` profiles by.
//! - [`loader`]: Haiku's kernel add-on loader rules; [`addon`]: load, probe, open and unload
//!   of a built add-on, which is then an hmulti device for `hmulti-client`.

pub mod abi;
pub mod addon;
mod devmgr;
pub mod exports;
mod heap;
pub mod loader;
pub mod meter;
mod settings;
mod threads;
pub mod user;
mod virtio_bus;

pub use sim_kernel::BusDevice;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_void, CStr};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::{self, ThreadId};
use std::time::Duration;

use platform::{Kernel, LogLevel, Status};
use spec::haiku_driver::{self as hd, status_t, ModuleDependency, ModuleInfo};

pub use exports::{kernel_symbols, kernel_symbols_of, SymKind};
pub use heap::BlockInfo;
pub use spec::kernel_import::HaikuRelease;
pub use virtio_bus::InterruptStats;

use sim_kernel::memory::SimCode;
use sim_kernel::report::lock;
use sim_kernel::SimKernel;
use sim_kernel::{Cpu, RawCpu};
use snd_model::SndModel;

/// How an environment is set up.
#[derive(Clone, Debug)]
pub struct EnvConfig {
    /// `VIRTIO_DEVICE_TYPE_ITEM` of the virtio device node: 25 is sound; anything else is
    /// a device the driver must refuse.
    pub virtio_device_type: u16,
    /// Put client memory in the reserved user range, where a direct access by the add-on
    /// faults (see [`user`]). Off, client memory is plain host bytes.
    pub smap: bool,
    /// How the virtio bus delivers queue interrupts to the add-on.
    pub interrupts: Interrupts,
    /// The Haiku release whose ABI the add-on meets: its kernel exports, its virtio bus
    /// manager's `alloc_queues` (three arguments on R1/beta5, four on nightly) and
    /// `negotiate_features` (beta5 calls the name callback without a NULL check), and its
    /// device manager's `publish_device` (nightly adds `B_DEVICE_PUBLISHED_PATH`).
    pub haiku: HaikuRelease,
}

impl Default for EnvConfig {
    fn default() -> Self {
        EnvConfig {
            virtio_device_type: hd::VIRTIO_DEVICE_ID_SOUND,
            smap: true,
            interrupts: Interrupts::PerQueue,
            haiku: HaikuRelease::Nightly,
        }
    }
}

/// How Haiku's virtio_pci bus (src/add-ons/kernel/busses/virtio/virtio_pci/virtio_pci.cpp)
/// delivers queue interrupts, which depends on the interrupts the PCI function gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupts {
    /// MSI-X with a vector per queue (queues + 1 vectors): only the completed queue's
    /// callback runs.
    PerQueue,
    /// INTx, or MSI-X with fewer vectors than queues + 1 (one vector for every queue): the
    /// handler calls `queue_interrupt_handler(sim, INT16_MAX)`, and the bus manager's
    /// `VirtioDevice::QueueInterrupt` then runs *every* queue's callback, each between its
    /// queue's `DisableInterrupt`/`EnableInterrupt`. The simulator also raises the shared
    /// interrupt at random moments after real ones (seeded by `seed`, so runs reproduce):
    /// callbacks that find nothing completed, as another device on the line would cause.
    Shared {
        /// Seed of the spurious interrupts' times.
        seed: u64,
    },
}

impl Interrupts {
    /// The option's name for it (`--interrupts NAME`), which [`str::parse`] reads back.
    pub fn name(self) -> &'static str {
        match self {
            Interrupts::PerQueue => "per-queue",
            Interrupts::Shared { .. } => "shared",
        }
    }
}

impl std::str::FromStr for Interrupts {
    type Err = String;
    fn from_str(s: &str) -> Result<Interrupts, String> {
        [Interrupts::PerQueue, Interrupts::Shared { seed: 1 }]
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| format!("unknown interrupt delivery {s:?}: per-queue or shared"))
    }
}

/// The image's modules and the module references handed out.
#[derive(Default)]
struct Modules {
    /// (name, `module_info*`) of every entry of the image's `modules`.
    image: Vec<(String, usize)>,
    /// get_module minus put_module, per name.
    refs: BTreeMap<String, i64>,
    /// Dependencies `attach` got for the image (put back by `detach`).
    deps: Vec<String>,
}

#[derive(Default)]
struct Settings {
    texts: HashMap<String, String>,
    handles: HashMap<usize, Box<settings::Handle>>,
}

/// Everything the exports reach through the current environment.
pub(crate) struct Core {
    pub(crate) kernel: SimKernel,
    /// The device on the virtio bus.
    pub(crate) device: Arc<dyn BusDevice>,
    /// The same device when it is the model (for the tests' ground truth).
    model: Option<SndModel>,
    heap: heap::Heap,
    settings: Mutex<Settings>,
    modules: Mutex<Modules>,
    pub(crate) dm: devmgr::DeviceManager,
    pub(crate) bus: virtio_bus::Bus,
    pub(crate) threads: threads::Threads,
    pub(crate) timers: Arc<threads::Timers>,
    /// Whether client memory is in the reserved user range.
    smap: bool,
    /// The release whose ABI this kernel presents.
    pub(crate) haiku: HaikuRelease,
    /// Partial `dprintf` lines, per thread.
    lines: Mutex<HashMap<ThreadId, String>>,
}

static CURRENT: Mutex<Option<Arc<Core>>> = Mutex::new(None);
/// Bumped, with `CURRENT` locked, each time `CURRENT` changes.
static CURRENT_GEN: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// What [`current`] found last on this thread, and at which `CURRENT_GEN`: every kernel
    /// export asks, and a lock per call was most of what a spinlock cost. Held weakly, so
    /// a thread that called once keeps no environment alive.
    static SEEN: RefCell<(u64, Weak<Core>)> = const { RefCell::new((0, Weak::new())) };
}

/// The environment whose add-on code a thread is running ([`entered`]), and that thread's
/// CPU in its kernel: the exports called meanwhile reach both through one thread-local,
/// with no lookup and no reference count.
#[derive(Clone, Copy)]
struct Entered {
    env: *const Arc<Core>,
    /// `env`'s `Core`, and this thread's CPU in its kernel: set with `env`, or `None`.
    on: Option<(NonNull<Core>, RawCpu)>,
}

thread_local! {
    /// Set by [`entered`]; a null `env` outside such a call.
    static ENTERED: Cell<Entered> = const {
        Cell::new(Entered {
            env: std::ptr::null(),
            on: None,
        })
    };
}

/// Runs `f`, a call into the add-on's code on behalf of `core` (an ioctl, a queue
/// interrupt's callbacks): every export the add-on calls from it on this thread finds
/// `core` and this thread's CPU at once ([`with_env`], [`with_env_cpu`]). The caller holds
/// `core` across the call, which is what keeps the pointer valid; the previous one is put
/// back after, even on a panic.
pub(crate) fn entered<R>(core: &Arc<Core>, f: impl FnOnce() -> R) -> R {
    struct Restore(Entered);
    impl Drop for Restore {
        fn drop(&mut self) {
            ENTERED.with(|e| e.set(self.0));
        }
    }
    let now = Entered {
        env: core,
        on: Some((NonNull::from(&**core), core.kernel.cpu().raw())),
    };
    let _restore = Restore(ENTERED.with(|e| e.replace(now)));
    f()
}

/// Runs `f` on the environment the exports serve: the one this thread entered
/// ([`entered`]) if it is inside such a call, else [`current`]'s.
#[inline]
pub(crate) fn with_env<R>(f: impl FnOnce(Option<&Arc<Core>>) -> R) -> R {
    let p = ENTERED.with(Cell::get).env;
    // SAFETY: `entered` set it to a reference its caller holds until `f` of `entered`
    // returns, and restores the previous one before that reference can end; this thread
    // is inside that call now (the pointer is not null), so the `Arc` is alive.
    if let Some(core) = unsafe { p.as_ref() } {
        return f(Some(core));
    }
    f(current().as_ref())
}

/// [`with_env`] for the exports every exchange calls, with this thread's CPU in the
/// environment's kernel. Inside a call into the add-on ([`entered`]) both come from one
/// thread-local and `f` runs with nothing around it. Elsewhere (an add-on thread, a timer)
/// the environment is looked up ([`current`]) and entered, as the simulator's own code
/// ([`SimCode`]), for `again`, which makes the same call again (and then finds it); without
/// one, says so (naming the export `what`) and returns `dead`. `f` is used once, so it is
/// inlined into its export whole.
#[inline(always)]
pub(crate) fn with_env_cpu<R>(
    what: meter::Site,
    dead: R,
    again: impl FnOnce() -> R,
    f: impl FnOnce(&Core, Cpu<'_>) -> R,
) -> R {
    match ENTERED.with(|e| e.get().on) {
        Some((core, raw)) => {
            // SAFETY: as in `with_env`: inside `entered`'s call, whose caller holds the
            // `Arc` of this `Core`.
            let core = unsafe { core.as_ref() };
            // SAFETY: `entered` took `raw` from this kernel's `cpu()` on this thread (a
            // `RawCpu` cannot leave it), and the kernel is alive (its environment is held).
            let cpu = unsafe { core.kernel.cpu_from_raw(raw) };
            f(core, cpu)
        }
        // By reference, made here: the fast path stores none of `again`'s captures.
        None => with_env_cpu_looked_up(what, dead, &mut Some(again)),
    }
}

/// [`with_env_cpu`] outside a call into the add-on.
#[cold]
#[inline(never)]
fn with_env_cpu_looked_up<R>(
    what: meter::Site,
    dead: R,
    again: &mut Option<impl FnOnce() -> R>,
) -> R {
    let _sim = SimCode::enter();
    match current() {
        // `again` is always there: the caller made it for this call.
        Some(core) => again.take().map_or(dead, |again| entered(&core, again)),
        None => {
            eprintln!(
                "sim: the add-on called {} while no Haiku environment is alive",
                what.name()
            );
            dead
        }
    }
}

/// Sets `CURRENT` (the caller holds its lock) and tells every thread's [`current`].
fn set_current(slot: &mut Option<Arc<Core>>, core: Option<Arc<Core>>) {
    *slot = core;
    CURRENT_GEN.fetch_add(1, Ordering::Release);
}

/// The environment alive in this process, if any.
pub(crate) fn current() -> Option<Arc<Core>> {
    let gen = CURRENT_GEN.load(Ordering::Acquire);
    let seen = SEEN.with(|s| {
        let s = s.borrow();
        (s.0 == gen).then(|| s.1.upgrade())
    });
    if let Some(core) = seen {
        return core;
    }
    let (gen, core) = {
        let cur = lock(&CURRENT);
        (CURRENT_GEN.load(Ordering::Acquire), cur.clone())
    };
    SEEN.with(|s| *s.borrow_mut() = (gen, core.as_ref().map_or_else(Weak::new, Arc::downgrade)));
    core
}

/// Who holds the process's one environment slot.
static SLOT: Mutex<Option<ThreadId>> = Mutex::new(None);
static SLOT_FREE: Condvar = Condvar::new();
/// How long `Environment::new` waits for the previous environment before it gives up.
const SLOT_PATIENCE: Duration = Duration::from_secs(300);

impl Core {
    pub(crate) fn record(&self, message: impl Into<String>) {
        let _sim = SimCode::enter();
        self.kernel.record_failure(message);
    }

    pub(crate) fn log(&self, message: &str) {
        self.kernel.log(LogLevel::Info, format_args!("{message}"));
    }

    /// `dprintf`/`kprintf` text: whole lines go to the kernel log.
    pub(crate) fn dprintf(&self, text: &str, kprintf: bool) {
        let mut lines = lock(&self.lines);
        let pending = lines.entry(thread::current().id()).or_default();
        pending.push_str(text);
        while let Some(n) = pending.find('\n') {
            let line: String = pending.drain(..=n).collect();
            let line = line.trim_end_matches('\n');
            if kprintf {
                self.log(&format!("[kprintf] {line}"));
            } else {
                self.log(line);
            }
        }
    }

    fn image_modules(&self) -> Vec<(String, usize)> {
        lock(&self.modules).image.clone()
    }

    fn image_module(&self, name: &str) -> Option<usize> {
        lock(&self.modules)
            .image
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, p)| p)
    }

    /// `get_module`: the kernel's own modules and the image's.
    fn get_module(&self, name: &str) -> Result<*const ModuleInfo, status_t> {
        let p = if name.as_bytes() == hd::B_DEVICE_MANAGER_MODULE_NAME.to_bytes() {
            &devmgr::DEVICE_MANAGER.0.info as *const ModuleInfo
        } else if name.as_bytes() == hd::VIRTIO_DEVICE_MODULE_NAME.to_bytes() {
            &virtio_bus::INTERFACE.0.info.info as *const ModuleInfo
        } else if let Some(p) = self.image_module(name) {
            p as *const ModuleInfo
        } else {
            return Err(hd::B_ENTRY_NOT_FOUND);
        };
        *lock(&self.modules).refs.entry(name.to_owned()).or_default() += 1;
        Ok(p)
    }

    fn put_module(&self, name: &str) -> status_t {
        let mut m = lock(&self.modules);
        match m.refs.get_mut(name) {
            Some(n) if *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    m.refs.remove(name);
                }
                hd::B_OK
            }
            _ => {
                drop(m);
                self.record(format!(
                    "put_module({name:?}) without a reference from get_module (Haiku panics: \
                     \"module has no references\")"
                ));
                hd::B_BAD_VALUE
            }
        }
    }

    fn load_settings(&self, name: &str) -> *mut c_void {
        let mut s = lock(&self.settings);
        let Some(text) = s.texts.get(name) else {
            return std::ptr::null_mut();
        };
        if text.is_empty() || text.len() >= settings::MAX_SETTINGS_SIZE {
            return std::ptr::null_mut();
        }
        let parameters = match settings::parse(text) {
            Ok(p) => p,
            Err(e) => {
                self.log(&format!(
                    "[sim] driver settings {name:?} do not parse: {}",
                    e.0
                ));
                return std::ptr::null_mut();
            }
        };
        let handle = Box::new(settings::Handle {
            name: name.to_owned(),
            parameters,
        });
        let p = &*handle as *const settings::Handle as *mut c_void;
        s.handles.insert(p as usize, handle);
        p
    }

    fn unload_settings(&self, handle: *mut c_void) -> status_t {
        if lock(&self.settings)
            .handles
            .remove(&(handle as usize))
            .is_some()
        {
            return hd::B_OK;
        }
        if !handle.is_null() {
            self.record(format!(
                "unload_driver_settings({:#x}) of a handle that is not loaded (unloaded twice?)",
                handle as usize
            ));
        }
        hd::B_BAD_VALUE
    }

    /// Runs `f` on a settings handle (`None` for NULL, as Haiku's `check_handle` fails it);
    /// a handle that is not loaded is also recorded.
    fn with_settings<R>(
        &self,
        handle: *mut c_void,
        what: &str,
        f: impl FnOnce(Option<&settings::Handle>) -> R,
    ) -> R {
        let s = lock(&self.settings);
        let h = s.handles.get(&(handle as usize));
        if h.is_none() && !handle.is_null() {
            self.record(format!(
                "{what} with settings handle {:#x}, which is not loaded",
                handle as usize
            ));
        }
        f(h.map(|b| &**b))
    }
}

/// One simulated Haiku with one virtio sound device (see the module documentation).
pub struct Environment {
    core: Arc<Core>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("kernel", &self.core.kernel)
            .finish()
    }
}

impl Environment {
    /// An environment with the default configuration (a sound device, SMAP on). Waits until
    /// no other environment is alive in the process.
    pub fn new(kernel: SimKernel, model: SndModel) -> Arc<Environment> {
        Environment::with_config(kernel, model, EnvConfig::default())
    }

    /// An environment as `config` says.
    ///
    /// # Panics
    ///
    /// If the calling thread already holds an environment (waiting would never end).
    pub fn with_config(kernel: SimKernel, model: SndModel, config: EnvConfig) -> Arc<Environment> {
        let device: Arc<dyn BusDevice> = Arc::new(model.clone());
        Environment::build(kernel, device, Some(model), config)
    }

    /// An environment whose virtio bus has `device` (a real device behind a transport)
    /// instead of the model.
    ///
    /// # Panics
    ///
    /// As [`Environment::with_config`].
    pub fn with_device(
        kernel: SimKernel,
        device: Arc<dyn BusDevice>,
        config: EnvConfig,
    ) -> Arc<Environment> {
        Environment::build(kernel, device, None, config)
    }

    fn build(
        kernel: SimKernel,
        device: Arc<dyn BusDevice>,
        model: Option<SndModel>,
        config: EnvConfig,
    ) -> Arc<Environment> {
        let me = thread::current().id();
        {
            let mut slot = lock(&SLOT);
            assert!(
                *slot != Some(me),
                "this thread already has a Haiku environment alive; drop it first"
            );
            let since = std::time::Instant::now();
            while slot.is_some() {
                assert!(
                    since.elapsed() < SLOT_PATIENCE,
                    "another Haiku environment has been alive for {SLOT_PATIENCE:?}: was one \
                     leaked (an Arc<Environment> never dropped)?"
                );
                slot = SLOT_FREE
                    .wait_timeout(slot, Duration::from_secs(1))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            *slot = Some(me);
        }
        exports::install_sink();
        let smap = config.smap
            && match user::SmapMapper::new() {
                Ok(m) => {
                    kernel.set_user_mapper(Some(Arc::new(m)));
                    true
                }
                Err(e) => {
                    eprintln!("sim: {e}; client memory is not protected from the add-on");
                    false
                }
            };
        let core = Arc::new(Core {
            timers: threads::Timers::new(kernel.clone()),
            kernel,
            device,
            model,
            heap: heap::Heap::default(),
            settings: Mutex::new(Settings::default()),
            modules: Mutex::new(Modules::default()),
            dm: devmgr::DeviceManager::new(config.virtio_device_type),
            bus: virtio_bus::Bus::new(config.interrupts),
            threads: threads::Threads::default(),
            smap,
            haiku: config.haiku,
            lines: Mutex::new(HashMap::new()),
        });
        set_current(&mut lock(&CURRENT), Some(core.clone()));
        Arc::new(Environment { core })
    }

    pub fn kernel(&self) -> &SimKernel {
        &self.core.kernel
    }

    /// How many interrupts and queue callbacks the virtio bus has delivered.
    pub fn interrupt_stats(&self) -> InterruptStats {
        self.core.bus.stats()
    }

    /// The device model.
    ///
    /// # Panics
    ///
    /// If the environment runs a real device ([`Environment::with_device`]).
    pub fn model(&self) -> &SndModel {
        self.core
            .model
            .as_ref()
            .expect("this environment runs a real device, not the model")
    }

    /// Every kernel symbol this environment's Haiku release exports, with its address and
    /// ELF type.
    pub fn kernel_symbols(&self) -> Vec<(String, u64, SymKind)> {
        kernel_symbols_of(self.core.haiku)
    }

    /// The Haiku release whose ABI this environment presents.
    pub fn haiku(&self) -> HaikuRelease {
        self.core.haiku
    }

    /// The text of the `virtio_sound` driver settings file.
    pub fn settings(&self, text: &str) {
        self.settings_for("virtio_sound", text);
    }

    /// The text of driver `name`'s settings file (`load_driver_settings(name)`).
    pub fn settings_for(&self, name: &str, text: &str) {
        lock(&self.core.settings)
            .texts
            .insert(name.to_owned(), text.to_owned());
    }

    /// Makes the `n`th next kernel `malloc` (or calloc, realloc, memalign) return NULL.
    pub fn fail_malloc_after(&self, n: u32) {
        self.core.heap.fail_after(n);
    }

    /// The add-on's live heap blocks.
    pub fn heap_blocks(&self) -> Vec<BlockInfo> {
        self.core.heap.live()
    }

    /// `(path, device module)` of every published device.
    pub fn published(&self) -> Vec<(String, String)> {
        self.core.dm.published()
    }

    /// Loads the add-on's modules as Haiku would and probes the virtio device: fills
    /// `deps` (the image's `module_dependencies`, may be NULL) by `get_module`, calls each
    /// module's `std_ops(B_MODULE_INIT)`, then lets the best `driver_v1` module register its
    /// node below the virtio device node (which initialises the driver and publishes its
    /// devices). Returns the published paths, relative to /dev; an empty list when no
    /// driver wants the device. An error names the hook that failed and its status.
    ///
    /// # Safety
    ///
    /// `modules` is a NULL-terminated array of valid `module_info` pointers (the image's
    /// `modules`), driver modules point to `driver_module_info` and device modules to
    /// `device_module_info`, and they stay valid, like `deps`, until `detach` returns.
    pub unsafe fn attach(
        &self,
        modules: *const *const ModuleInfo,
        deps: *mut ModuleDependency,
    ) -> Result<Vec<String>, String> {
        let core = &self.core;
        if modules.is_null() {
            return Err("the image has no `modules` array".into());
        }
        let mut image = Vec::new();
        for i in 0..256 {
            // SAFETY: the NULL-terminated array (the caller's contract).
            let m = unsafe { *modules.add(i) };
            if m.is_null() {
                break;
            }
            // SAFETY: a valid module_info (the caller's contract).
            let name = unsafe { exports::c_string((*m).name) }
                .ok_or_else(|| format!("module {i} has no name"))?;
            image.push((name, m as usize));
        }
        lock(&core.modules).image = image.clone();
        if !deps.is_null() {
            for i in 0..256 {
                // SAFETY: the {NULL, NULL}-terminated array (the caller's contract).
                let d = unsafe { &mut *deps.add(i) };
                if d.name.is_null() {
                    break;
                }
                // SAFETY: a dependency name is a string.
                let name = unsafe { CStr::from_ptr(d.name) }
                    .to_string_lossy()
                    .into_owned();
                let p = core.get_module(&name).map_err(|e| {
                    format!(
                        "module_dependencies: get_module({name:?}) failed: {:?}",
                        Status(e)
                    )
                })?;
                if !d.info.is_null() {
                    // SAFETY: where the loader stores the module (the caller's contract).
                    unsafe { *d.info = p.cast_mut() };
                }
                lock(&core.modules).deps.push(name);
            }
        }
        for (name, m) in &image {
            // SAFETY: a valid module_info.
            if let Some(std_ops) = unsafe { (*(*m as *const ModuleInfo)).std_ops } {
                // SAFETY: the module's hook, called with one argument as Haiku does.
                let r = unsafe { std_ops(hd::B_MODULE_INIT) };
                if r != hd::B_OK {
                    return Err(format!(
                        "std_ops(B_MODULE_INIT) of {name} failed: {:?}",
                        Status(r)
                    ));
                }
            }
        }
        let virtio = core.dm.virtio_node() as usize;
        match core.dm.probe(core, virtio)? {
            Some(_) => {}
            None => core.log("[sim] no driver supports the virtio device"),
        }
        Ok(core.dm.published().into_iter().map(|(p, _)| p).collect())
    }

    /// Opens a published device (`path` relative to /dev, or starting with "/dev/") as
    /// devfs does: `init_device` on its first open, then the device module's `open`.
    pub fn open(self: &Arc<Self>, path: &str, mode: i32) -> Result<Device, status_t> {
        let id = self.core.dm.open(&self.core, path, mode)?;
        Ok(Device {
            env: Arc::downgrade(self),
            id,
            path: path.trim_start_matches("/dev/").to_owned(),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Takes the add-on down as Haiku would when its device goes away: closes what is
    /// still open (recorded), `uninit_driver` on every node it registered (deepest first),
    /// removes those nodes with their devices, `std_ops(B_MODULE_UNINIT)`, puts the
    /// dependencies; then records what the add-on kept: device-manager references and ids,
    /// module references, settings handles, armed timers, unfinished threads.
    ///
    /// # Safety
    ///
    /// The image given to `attach` is still mapped.
    pub unsafe fn detach(&self) {
        let core = &self.core;
        let mut problems = core.dm.detach(core);
        let image = std::mem::take(&mut lock(&core.modules).image);
        for (name, m) in image.iter().rev() {
            // SAFETY: a module of the still-mapped image.
            if let Some(std_ops) = unsafe { (*(*m as *const ModuleInfo)).std_ops } {
                // SAFETY: the module's hook, called as Haiku does before unloading it.
                let r = unsafe { std_ops(hd::B_MODULE_UNINIT) };
                if r != hd::B_OK {
                    problems.push(format!(
                        "std_ops(B_MODULE_UNINIT) of {name}: {:?}",
                        Status(r)
                    ));
                }
            }
        }
        let deps = std::mem::take(&mut lock(&core.modules).deps);
        for d in deps {
            core.put_module(&d);
        }
        let refs = std::mem::take(&mut lock(&core.modules).refs);
        for (name, n) in refs {
            problems.push(format!(
                "module {name:?}: {n} get_module without put_module"
            ));
        }
        let handles: Vec<String> = lock(&core.settings)
            .handles
            .drain()
            .map(|(_, h)| h.name.clone())
            .collect();
        for h in handles {
            problems.push(format!(
                "driver settings {h:?} were loaded and never unloaded"
            ));
        }
        problems.extend(core.timers.disarm_all());
        problems.extend(core.threads.unfinished());
        let _sim = SimCode::enter();
        for p in problems {
            core.record(p);
        }
    }

    /// The sound device leaves the machine while the add-on drives it: the model stops
    /// answering ([`SndModel::unplug`]: nothing completes, no interrupt, config reads all
    /// ones), then the device manager tells the add-on as Haiku's does when a bus loses a
    /// device (`device_removed` of its devices and its driver; `uninit_driver` once none
    /// of its devices is open; see the device manager's `device_removed`). Open handles
    /// stay usable until closed; new opens fail with `ENODEV`.
    ///
    /// # Panics
    ///
    /// If the environment runs a real device ([`Environment::with_device`]).
    pub fn remove_device(&self) {
        self.model().unplug();
        self.core.dm.device_removed(&self.core);
    }

    /// A real device ([`Environment::with_device`]) has left the machine (its transport
    /// saw it go, as QEMU's `device_del` on the PCI function): the device manager tells
    /// the add-on as in [`Environment::remove_device`], without touching the device.
    pub fn real_device_removed(&self) {
        self.core.dm.device_removed(&self.core);
    }

    /// `Ok` if the add-on left nothing behind and misused nothing: the kernel's own check
    /// (areas, semaphores, client mappings, every recorded failure), the add-on's heap
    /// blocks, device-manager references, ids and open devices, module references,
    /// settings handles, virtio queues and interrupts still set up, unfinished threads,
    /// armed timers, and the device model's violations.
    pub fn check_clean(&self) -> Result<(), Vec<String>> {
        let core = &self.core;
        let mut v = match core.kernel.check_clean() {
            Ok(()) => Vec::new(),
            Err(v) => v,
        };
        for b in core.heap.live() {
            v.push(format!(
                "heap block {:#x} of {} bytes (allocation #{}) was never freed",
                b.addr, b.size, b.seq
            ));
        }
        v.extend(core.dm.leftovers());
        for (name, n) in &lock(&core.modules).refs {
            v.push(format!("module {name:?}: {n} reference(s) from get_module"));
        }
        for h in lock(&core.settings).handles.values() {
            v.push(format!("driver settings {:?} are still loaded", h.name));
        }
        v.extend(core.bus.leftovers());
        v.extend(core.threads.unfinished());
        v.extend(
            core.device
                .violations()
                .into_iter()
                .map(|m| format!("device: {m}")),
        );
        if v.is_empty() {
            Ok(())
        } else {
            Err(v)
        }
    }

    /// Panics with [`Environment::check_clean`]'s report unless it is clean.
    pub fn assert_clean(&self) {
        if let Err(p) = self.check_clean() {
            panic!("the Haiku environment is not clean:\n  {}", p.join("\n  "));
        }
    }

    // ---- the client's memory (see SimKernel's helpers of the same names) ----

    /// The reserved user range client memory lives in, if SMAP is on.
    pub fn user_range(&self) -> Option<(u64, u64)> {
        if self.core.smap {
            user::user_range().ok()
        } else {
            None
        }
    }

    pub fn user_alloc(&self, len: usize) -> u64 {
        self.core.kernel.user_alloc(len)
    }

    pub fn user_map_at(&self, addr: u64, len: usize) -> Result<(), String> {
        self.core.kernel.user_map_at(addr, len)
    }

    pub fn user_free(&self, addr: u64) {
        self.core.kernel.user_free(addr)
    }

    pub fn user_write(&self, addr: u64, bytes: &[u8]) {
        self.core.kernel.user_write(addr, bytes)
    }

    pub fn user_read(&self, addr: u64, len: usize) -> Vec<u8> {
        self.core.kernel.user_read(addr, len)
    }

    pub fn user_write_value<T: zerocopy::IntoBytes + zerocopy::Immutable>(&self, addr: u64, v: &T) {
        self.core.kernel.user_write_value(addr, v)
    }

    pub fn user_read_value<T: zerocopy::FromBytes>(&self, addr: u64) -> T {
        self.core.kernel.user_read_value(addr)
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        {
            let mut cur = lock(&CURRENT);
            if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.core)) {
                set_current(&mut cur, None);
            }
        }
        self.core.kernel.set_user_mapper(None);
        *lock(&SLOT) = None;
        SLOT_FREE.notify_all();
    }
}

/// An open device (a devfs file handle). It does not keep its environment alive: once the
/// environment is gone, every call answers `B_FILE_ERROR`.
pub struct Device {
    env: Weak<Environment>,
    id: u64,
    path: String,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("path", &self.path).finish()
    }
}

impl Device {
    /// The path it was opened by, relative to /dev.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// ioctl: the device module's `control` with the caller's raw (user) pointer;
    /// `B_UNSUPPORTED` when the module has none.
    pub fn ioctl(&self, op: u32, buffer: u64, length: usize) -> status_t {
        match self.env.upgrade() {
            Some(env) => env.core.dm.control(&env.core, self.id, op, buffer, length),
            None => hd::B_FILE_ERROR,
        }
    }

    /// close, then free, then `uninit_device` after the last handle. Returns close's status
    /// if it failed, otherwise free's. Another thread may be in [`Device::ioctl`] on the
    /// same handle (one file descriptor of a team): then, as on Haiku, the close hook runs
    /// now and `free` when that call returns (on its thread), and close's status is
    /// returned. A second close answers `B_FILE_ERROR`.
    pub fn close(&self) -> status_t {
        if self.closed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return hd::B_FILE_ERROR;
        }
        match self.env.upgrade() {
            Some(env) => env.core.dm.close(&env.core, self.id),
            None => hd::B_FILE_ERROR,
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if !self.closed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // A file handle dropped without close: devfs closes it when the team exits.
            if let Some(env) = self.env.upgrade() {
                env.core.dm.close(&env.core, self.id);
            }
        }
    }
}
