//! `PciSnd`: QEMU's (or any) virtio-snd PCI function driven from Linux user space through
//! sysfs, behind the driver crate's `VirtioDevice` trait.
//!
//! The function is taken from its kernel driver, its BAR is mapped from `resourceN`, and the
//! rings live in huge-page memory with known physical addresses ([`DmaRegion`]).
//!
//! Interrupts: when the kernel has `uio_pci_generic`, the function is bound to it and its
//! INTx line arrives through `/dev/uioN` (an interrupt thread waits on it, reads the ISR
//! status to lower the line, signals the queues whose used index moved, and unmasks INTx
//! again in the command register: the kernel's handler masked it). Otherwise a poller
//! thread watches the used rings every [`POLL_INTERVAL`].
//!
//! Hot removal: when the function leaves the guest (QEMU's `device_del`, which the guest
//! kernel's PCI hotplug driver carries out), its driver is unbound first, so `/dev/uioN`
//! wakes with an error (`uio_unregister_device`, Linux `drivers/uio/uio.c`), and then the
//! function leaves sysfs. The interrupt thread (or the poller, which looks at sysfs about
//! every 100 ms) sees it, stops delivering, and from then on nothing touches the BAR: a
//! register read gives all ones, as on a PCI bus with nothing behind the address, a write
//! goes nowhere, a reset fails (so the rings, which the device may have held, are kept,
//! never given back). [`PciSnd::wait_removed`] tells the owner.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use platform::{KResult, PhysEntry, QueueHandler, Status, VirtioDevice};

use super::caps::{parse_caps, VirtioCap, VirtioCaps};
use super::dma::DmaRegion;
use super::ring::{RingLayout, SharedMem, SplitRing, Word};
use sim_kernel::memory::SimCode;

/// Red Hat / virtio vendor id.
pub const VIRTIO_VENDOR: u16 = 0x1af4;
/// Modern virtio-snd: 0x1040 + device id 25.
pub const VIRTIO_SND_PCI_DEVICE: u16 = 0x1059;

/// `VIRTIO_F_VERSION_1`.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Device-type feature bits (0-23): the ones the driver may negotiate freely. Transport bits
/// (24-40) need support in this file, and only VERSION_1 has it (no indirect descriptors,
/// no event index, no packed ring, no IOMMU).
const DEVICE_FEATURES: u64 = (1 << 24) - 1;

// Device status bits (virtio 1.x §2.1).
pub const STATUS_ACKNOWLEDGE: u8 = 1;
pub const STATUS_DRIVER: u8 = 2;
pub const STATUS_DRIVER_OK: u8 = 4;
pub const STATUS_FEATURES_OK: u8 = 8;
pub const STATUS_NEEDS_RESET: u8 = 64;
pub const STATUS_FAILED: u8 = 128;

/// `VIRTIO_MSI_NO_VECTOR`.
const NO_VECTOR: u16 = 0xffff;

/// `virtio_pci_common_cfg` offsets (virtio 1.x §4.1.4.3).
mod common {
    pub const DEVICE_FEATURE_SELECT: usize = 0;
    pub const DEVICE_FEATURE: usize = 4;
    pub const DRIVER_FEATURE_SELECT: usize = 8;
    pub const DRIVER_FEATURE: usize = 12;
    pub const MSIX_CONFIG: usize = 16;
    pub const NUM_QUEUES: usize = 18;
    pub const DEVICE_STATUS: usize = 20;
    pub const CONFIG_GENERATION: usize = 21;
    pub const QUEUE_SELECT: usize = 22;
    pub const QUEUE_SIZE: usize = 24;
    pub const QUEUE_MSIX_VECTOR: usize = 26;
    pub const QUEUE_ENABLE: usize = 28;
    pub const QUEUE_NOTIFY_OFF: usize = 30;
    pub const QUEUE_DESC: usize = 32;
    pub const QUEUE_DRIVER: usize = 40;
    pub const QUEUE_DEVICE: usize = 48;
    /// Bytes the fields above span.
    pub const LEN: usize = 56;
}

/// The PCI command register's offset in configuration space.
const CMD_OFFSET: u64 = 4;
/// PCI command register bits.
const CMD_MEMORY: u16 = 1 << 1;
const CMD_BUS_MASTER: u16 = 1 << 2;
const CMD_INTX_DISABLE: u16 = 1 << 10;

/// How often the poller looks at the used rings.
pub const POLL_INTERVAL: Duration = Duration::from_micros(500);
/// How long the interrupt thread waits for an interrupt before it looks at its stop flag,
/// the device status and the used rings (a safety net against a lost interrupt).
const INTX_TIMEOUT_MS: libc::c_int = 50;
/// ISR status bits (virtio 1.x §4.1.4.5): a queue interrupt, a configuration change.
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;
/// The kernel driver that hands a PCI function's INTx to user space.
const UIO_DRIVER: &str = "uio_pci_generic";
/// Its sysfs directory (present when the module is loaded).
const UIO_DRIVER_DIR: &str = "/sys/bus/pci/drivers/uio_pci_generic";
/// Polls between two looks at the device status (NEEDS_RESET): about every 100 ms.
const STATUS_EVERY: u32 = 200;
/// How long a reset may take to read back as 0.
const RESET_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the function may take to leave sysfs after its uio file failed, before the
/// failure is taken for something else than a removal.
const REMOVAL_CONFIRM: Duration = Duration::from_secs(2);
/// Error messages kept for [`PciSnd::errors`].
const MAX_ERRORS: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_lock<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// A BAR mapped from sysfs `resourceN`; unmapped on drop.
struct BarMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping of device registers owned by this value; it is only reached through
// `SharedMem` windows (volatile accesses), which are sound from any thread.
unsafe impl Send for BarMap {}
// SAFETY: as above; `&BarMap` exposes nothing but the address.
unsafe impl Sync for BarMap {}

impl BarMap {
    fn map(dev: &Path, bar: u8) -> Result<BarMap, String> {
        let path = dev.join(format!("resource{bar}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let len = file
            .metadata()
            .map_err(|e| format!("stat {}: {e}", path.display()))?
            .len();
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| format!("{}: BAR {bar} has size {len}", path.display()))?;
        // SAFETY: a new shared mapping of the BAR at an address the kernel picks; it aliases
        // no Rust object. The result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "mmap {} ({len} bytes): {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or("mmap returned null")?;
        Ok(BarMap { ptr, len })
    }
}

impl Drop for BarMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped only here, after every window on it
        // (each holds an `Arc<BarMap>`) is gone.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The function left the guest (hot removal): when it was noticed and how.
#[derive(Clone, Debug)]
pub struct Removed {
    pub at: Instant,
    pub how: String,
}

/// Whether the function is gone, shared by the windows on its BAR and the owner.
#[derive(Default)]
struct Removal {
    gone: AtomicBool,
    what: Mutex<Option<Removed>>,
    changed: std::sync::Condvar,
}

impl Removal {
    fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Marks the function gone (the first call wins) and wakes [`PciSnd::wait_removed`].
    fn mark(&self, how: String) {
        let mut w = lock(&self.what);
        if w.is_none() {
            *w = Some(Removed {
                at: Instant::now(),
                how,
            });
        }
        self.gone.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }
}

/// One virtio structure: `len` bytes of registers inside a mapped BAR.
struct Window {
    regs: SharedMem,
    _bar: Arc<BarMap>,
    /// Once set, the registers are not touched any more.
    removal: Arc<Removal>,
}

impl Window {
    fn new(
        bars: &[(u8, Arc<BarMap>)],
        cap: &VirtioCap,
        what: &str,
        removal: &Arc<Removal>,
    ) -> Result<Window, String> {
        let (_, bar) = bars
            .iter()
            .find(|(b, _)| *b == cap.bar)
            .ok_or_else(|| format!("{what}: BAR {} is not mapped", cap.bar))?;
        let off = cap.offset as usize;
        let len = cap.length as usize;
        if off.checked_add(len).is_none_or(|end| end > bar.len) {
            return Err(format!(
                "{what} structure at {off:#x}+{len:#x} is outside BAR {} ({:#x} bytes)",
                cap.bar, bar.len
            ));
        }
        // SAFETY: `off + len <= bar.len` (checked above), so the range lies inside the BAR
        // mapping, which stays mapped while this window holds its `Arc`. Register memory is
        // never referenced by Rust references, only through `SharedMem`'s volatile accesses.
        let regs = unsafe { SharedMem::new(bar.ptr.add(off), len) };
        Ok(Window {
            regs,
            _bar: bar.clone(),
            removal: removal.clone(),
        })
    }

    fn len(&self) -> usize {
        self.regs.len()
    }

    /// A register; all ones once the function is gone.
    fn read<T: Word + Default>(&self, off: usize) -> T {
        if self.removal.is_gone() {
            return T::ONES;
        }
        self.regs.read(off)
    }

    /// Writes a register; nothing once the function is gone.
    fn write<T: Word>(&self, off: usize, v: T) {
        if !self.removal.is_gone() {
            self.regs.write(off, v)
        }
    }

    /// A 64-bit register as two 32-bit halves, low first (as Linux's
    /// `vp_iowrite64_twopart`; the spec allows devices to require it).
    fn write64(&self, off: usize, v: u64) {
        self.write::<u32>(off, v as u32);
        self.write::<u32>(off + 4, (v >> 32) as u32);
    }
}

/// One allocated virtqueue.
struct Queue {
    ring: SplitRing,
    /// Byte offset of this queue's notify register in the notify window.
    notify_off: usize,
    /// The used index the poller last signalled.
    reported: u16,
}

/// The rings and the memory they live in. `list` is declared first so it is dropped before
/// `_region` (the device has been reset by then).
#[derive(Default)]
struct Queues {
    list: Vec<Mutex<Queue>>,
    _region: Option<DmaRegion>,
}

struct Inner {
    bdf: String,
    common: Window,
    notify: Window,
    notify_off_multiplier: u32,
    isr: Option<Window>,
    device: Window,
    num_queues: u16,
    /// Serialises multi-register sequences in the common configuration (feature and queue
    /// select, status read-modify-write).
    regs: Mutex<()>,
    queues: RwLock<Queues>,
    errors: Mutex<Vec<String>>,
    needs_reset_seen: AtomicBool,
    /// The interrupt thread is inside the driver's queue handler.
    in_handler: AtomicBool,
    /// `uio_pci_generic`'s files when the function's INTx reaches us through it (then the
    /// rings ask for interrupts); `None`: the poller.
    uio: Option<Uio>,
    /// Set when `/dev/uioN` failed and the interrupt thread went over to polling.
    intx_failed: AtomicBool,
    /// The function's sysfs directory, which goes when the function leaves the guest.
    sysfs: PathBuf,
    removal: Arc<Removal>,
}

impl Inner {
    fn error(&self, msg: String) {
        let mut e = lock(&self.errors);
        if e.len() < MAX_ERRORS {
            e.push(msg);
        }
    }

    /// Records NEEDS_RESET (once) if the device status has it.
    fn check_needs_reset(&self) {
        if self.status() & STATUS_NEEDS_RESET != 0
            && !self.needs_reset_seen.swap(true, Ordering::SeqCst)
        {
            self.error(format!("{}: the device set NEEDS_RESET", self.bdf));
        }
    }

    /// Signals each queue whose used index moved since it was last signalled: like an
    /// interrupt, one call per change; the handler dequeues.
    fn signal_moved(&self, stop: &AtomicBool, handler: &dyn QueueHandler) {
        let count = read_lock(&self.queues).list.len();
        for q in 0..count {
            let moved = {
                let qs = read_lock(&self.queues);
                qs.list.get(q).is_some_and(|m| {
                    let mut m = lock(m);
                    let idx = m.ring.device_used_idx();
                    let moved = idx != m.reported;
                    m.reported = idx;
                    moved
                })
            };
            if moved && !stop.load(Ordering::SeqCst) {
                self.in_handler.store(true, Ordering::SeqCst);
                handler.queue_interrupt(q as u16);
                self.in_handler.store(false, Ordering::SeqCst);
            }
        }
    }

    fn status(&self) -> u8 {
        self.common.read::<u8>(common::DEVICE_STATUS)
    }

    /// Whether the function left the guest: its sysfs directory is gone. Checks sysfs only
    /// (never the BAR, which may no longer be backed) and marks the removal with `why`.
    fn left_sysfs(&self, why: impl FnOnce() -> String) -> bool {
        if self.removal.is_gone() {
            return true;
        }
        if self.sysfs.exists() {
            return false;
        }
        self.removal.mark(why());
        true
    }

    /// After `/dev/uioN` failed with `e`: whether the function is leaving the guest. The
    /// kernel unbinds the driver (which wakes the uio file with an error) before it takes
    /// the function out of sysfs, so sysfs is watched for up to [`REMOVAL_CONFIRM`].
    fn removed_after_uio_error(&self, e: &std::io::Error) -> bool {
        let start = Instant::now();
        loop {
            let waited = start.elapsed();
            if self.left_sysfs(|| {
                format!(
                    "{}: /dev/uio failed ({e}) and the function left sysfs {} ms later",
                    self.bdf,
                    waited.as_millis()
                )
            }) {
                return true;
            }
            if waited > REMOVAL_CONFIRM {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn set_status(&self, s: u8) {
        self.common.write::<u8>(common::DEVICE_STATUS, s)
    }

    /// Adds status bits (read-modify-write; callers hold `regs`).
    fn add_status(&self, bits: u8) {
        let s = self.status();
        self.set_status(s | bits);
    }

    /// Writes 0 to the status and waits until the device reads back 0 (its reset is done,
    /// and it no longer touches the rings).
    fn reset(&self) -> Result<(), String> {
        if self.removal.is_gone() {
            return Err(format!(
                "{}: the function left the guest; it cannot be reset",
                self.bdf
            ));
        }
        self.set_status(0);
        let start = Instant::now();
        loop {
            let s = self.status();
            if s == 0 {
                return Ok(());
            }
            if start.elapsed() > RESET_TIMEOUT {
                return Err(format!(
                    "{}: device status still {s:#x} {RESET_TIMEOUT:?} after reset",
                    self.bdf
                ));
            }
            thread::sleep(Duration::from_micros(100));
        }
    }

    /// Reset, ACKNOWLEDGE, DRIVER (virtio 1.x §3.1.1 steps 1-3).
    fn init(&self) -> Result<(), String> {
        self.reset()?;
        self.set_status(STATUS_ACKNOWLEDGE);
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        let s = self.status();
        if s != STATUS_ACKNOWLEDGE | STATUS_DRIVER {
            return Err(format!(
                "{}: status reads {s:#x} after ACKNOWLEDGE|DRIVER",
                self.bdf
            ));
        }
        Ok(())
    }

    fn device_features(&self) -> u64 {
        self.common.write::<u32>(common::DEVICE_FEATURE_SELECT, 0);
        let lo = self.common.read::<u32>(common::DEVICE_FEATURE);
        self.common.write::<u32>(common::DEVICE_FEATURE_SELECT, 1);
        let hi = self.common.read::<u32>(common::DEVICE_FEATURE);
        u64::from(hi) << 32 | u64::from(lo)
    }

    fn set_driver_features(&self, f: u64) {
        self.common.write::<u32>(common::DRIVER_FEATURE_SELECT, 0);
        self.common.write::<u32>(common::DRIVER_FEATURE, f as u32);
        self.common.write::<u32>(common::DRIVER_FEATURE_SELECT, 1);
        self.common
            .write::<u32>(common::DRIVER_FEATURE, (f >> 32) as u32);
    }

    /// The queue's size as the device offers it (0: no such queue). Callers hold `regs`.
    fn device_queue_size(&self, q: u16) -> u16 {
        self.common.write::<u16>(common::QUEUE_SELECT, q);
        self.common.read::<u16>(common::QUEUE_SIZE)
    }

    /// Programs and enables every queue; returns them with their ring memory. Callers hold
    /// `regs`; on error the device may hold ring addresses and must be reset before the
    /// memory goes.
    fn setup_queues(&self, count: u16) -> Result<Queues, String> {
        let mut sizes = Vec::new();
        let mut total = 0usize;
        for q in 0..count {
            let size = self.device_queue_size(q);
            if size == 0 {
                return Err(format!(
                    "{}: queue {q} has size 0 (not available)",
                    self.bdf
                ));
            }
            if !size.is_power_of_two() || size > 32768 {
                return Err(format!("{}: queue {q} has size {size}", self.bdf));
            }
            let layout = RingLayout::new(size);
            sizes.push((size, total));
            total += layout.total.next_multiple_of(4096);
        }
        let region = DmaRegion::new(total)?;
        let mut list = Vec::new();
        for (q, &(size, off)) in (0u16..).zip(&sizes) {
            let layout = RingLayout::new(size);
            let ptr = NonNull::new(region.base().wrapping_add(off)).ok_or("null ring")?;
            // SAFETY: `off + layout.total <= total <= region.len()`: the ring's memory is
            // inside the region, which `Queues` keeps alive (and drops after the rings).
            // Ring memory is only ever reached through `SharedMem` (volatile) and by the
            // device.
            let mem = unsafe { SharedMem::new(ptr, layout.total) };
            let mut ring = SplitRing::new(mem, region.phys_base() + off as u64, size)?;
            ring.set_interrupts(self.uio.is_some());
            self.common.write::<u16>(common::QUEUE_SELECT, q);
            self.common
                .write::<u16>(common::QUEUE_MSIX_VECTOR, NO_VECTOR);
            let vector = self.common.read::<u16>(common::QUEUE_MSIX_VECTOR);
            if vector != NO_VECTOR {
                return Err(format!(
                    "{}: queue {q} MSI-X vector reads {vector:#x} after writing NO_VECTOR",
                    self.bdf
                ));
            }
            self.common.write64(common::QUEUE_DESC, ring.desc_phys());
            self.common.write64(common::QUEUE_DRIVER, ring.avail_phys());
            self.common.write64(common::QUEUE_DEVICE, ring.used_phys());
            let notify_off = usize::from(self.common.read::<u16>(common::QUEUE_NOTIFY_OFF))
                * self.notify_off_multiplier as usize;
            if notify_off + 2 > self.notify.len() {
                return Err(format!(
                    "{}: queue {q} notify offset {notify_off:#x} is outside the {:#x}-byte \
                     notify structure",
                    self.bdf,
                    self.notify.len()
                ));
            }
            self.common.write::<u16>(common::QUEUE_ENABLE, 1);
            if self.common.read::<u16>(common::QUEUE_ENABLE) != 1 {
                return Err(format!("{}: queue {q} did not enable", self.bdf));
            }
            list.push(Mutex::new(Queue {
                ring,
                notify_off,
                reported: 0,
            }));
        }
        self.common.write::<u16>(common::MSIX_CONFIG, NO_VECTOR);
        Ok(Queues {
            list,
            _region: Some(region),
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stop the device before the ring memory (dropped with the fields, after this) goes.
        if let Err(e) = self.reset() {
            eprintln!("virtio-pci: {e}; its ring memory is kept");
            // It may still write into the rings: never give their pages back.
            let queues = std::mem::take(self.queues.get_mut().unwrap_or_else(|e| e.into_inner()));
            std::mem::forget(queues);
        }
    }
}

/// The INTx path: `/dev/uioN` (an interrupt is an event to read; closing it makes the
/// kernel clear bus mastering, so it stays open while the device runs) and the function's
/// configuration space (to unmask INTx: `uio_pci_generic` has no unmask of its own).
struct Uio {
    dev: File,
    config: File,
}

/// The thread delivering queue interrupts: the INTx one, or the poller.
struct Poller {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    id: ThreadId,
}

/// A virtio-snd PCI function, driven from Linux user space (root, no kernel driver).
///
/// Implements [`VirtioDevice`] like the simulator's `SndModel`: DRIVER_OK is set by
/// `setup_interrupts` (Haiku's virtio bus sets it at the end of interrupt setup), a request's
/// cookie comes back from `queue_dequeue` with the used length, `Err(BUSY)` when the ring
/// has too few free descriptors. Each request takes one descriptor per entry (no indirect
/// descriptors). Errors behind a `Status` are kept in [`PciSnd::errors`].
pub struct PciSnd {
    inner: Arc<Inner>,
    poller: Mutex<Option<Poller>>,
    /// Why the INTx path is not used (`None` when it is).
    no_intx: Option<String>,
}

/// Sysfs directory of PCI functions.
const PCI_DEVICES: &str = "/sys/bus/pci/devices";

fn read_hex_id(path: &Path) -> Option<u16> {
    let s = fs::read_to_string(path).ok()?;
    u16::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// The sysfs directory of the function: the given BDF (`0000:00:03.0` or `00:03.0`), or
/// the first virtio-snd function found.
fn find_function(bdf: Option<&str>) -> Result<(String, PathBuf), String> {
    if let Some(b) = bdf {
        let b = if b.matches(':').count() == 1 {
            format!("0000:{b}")
        } else {
            b.to_string()
        };
        let dir = Path::new(PCI_DEVICES).join(&b);
        if !dir.exists() {
            return Err(format!("{} does not exist", dir.display()));
        }
        return Ok((b, dir));
    }
    let mut found = Vec::new();
    let entries = fs::read_dir(PCI_DEVICES).map_err(|e| format!("read_dir {PCI_DEVICES}: {e}"))?;
    for e in entries.flatten() {
        let dir = e.path();
        if read_hex_id(&dir.join("vendor")) == Some(VIRTIO_VENDOR)
            && read_hex_id(&dir.join("device")) == Some(VIRTIO_SND_PCI_DEVICE)
        {
            found.push((e.file_name().to_string_lossy().into_owned(), dir));
        }
    }
    found.sort();
    found.into_iter().next().ok_or_else(|| {
        format!(
            "no virtio-snd PCI function ({VIRTIO_VENDOR:04x}:{VIRTIO_SND_PCI_DEVICE:04x}) in \
             {PCI_DEVICES} (is QEMU run with -device virtio-sound-pci?)"
        )
    })
}

/// The name of the kernel driver the function is bound to.
fn driver_name(dir: &Path) -> Option<String> {
    let target = fs::read_link(dir.join("driver")).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Binds the function (bound to no driver, or already to `uio_pci_generic`) to
/// `uio_pci_generic` and opens its `/dev/uioN`. The error says why not (the module is not
/// loaded, the probe failed: e.g. INTx masking does not work, no IRQ, ...).
fn bind_uio(bdf: &str, dir: &Path) -> Result<File, String> {
    let drv = Path::new(UIO_DRIVER_DIR);
    if driver_name(dir).as_deref() != Some(UIO_DRIVER) {
        if !drv.is_dir() {
            return Err(format!(
                "{UIO_DRIVER} is not loaded ({UIO_DRIVER_DIR} is missing)"
            ));
        }
        // driver_override makes this function match the driver (which has no id table of
        // its own) and only it.
        let over = dir.join("driver_override");
        fs::write(&over, UIO_DRIVER).map_err(|e| format!("write {}: {e}", over.display()))?;
        let bind = drv.join("bind");
        if let Err(e) = fs::write(&bind, bdf) {
            let _ = fs::write(&over, "\n");
            return Err(format!(
                "binding {bdf} to {UIO_DRIVER}: write {}: {e} (see dmesg)",
                bind.display()
            ));
        }
        if driver_name(dir).as_deref() != Some(UIO_DRIVER) {
            return Err(format!("{bdf} is not bound to {UIO_DRIVER} after bind"));
        }
    }
    let irq = fs::read_to_string(dir.join("irq")).unwrap_or_default();
    if irq.trim().parse::<u32>().unwrap_or(0) == 0 {
        return Err(format!(
            "{bdf} has no legacy IRQ (irq reads {:?})",
            irq.trim()
        ));
    }
    let uio_dir = dir.join("uio");
    let name = fs::read_dir(&uio_dir)
        .map_err(|e| format!("read_dir {}: {e}", uio_dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("uio"))
        .ok_or_else(|| format!("no uioN in {}", uio_dir.display()))?;
    let dev = Path::new("/dev").join(&name);
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .map_err(|e| format!("open {}: {e}", dev.display()))
}

/// Detaches the function from its kernel driver, if one is bound.
fn unbind(bdf: &str, dir: &Path) -> Result<(), String> {
    let link = dir.join("driver");
    let Ok(target) = fs::read_link(&link) else {
        return Ok(());
    };
    let unbind = link.join("unbind");
    fs::write(&unbind, bdf).map_err(|e| {
        format!(
            "unbinding {bdf} from {}: write {}: {e}",
            target.display(),
            unbind.display()
        )
    })?;
    if dir.join("driver").exists() {
        return Err(format!("{bdf} is still bound to a driver after unbind"));
    }
    Ok(())
}

impl PciSnd {
    /// Finds the virtio-snd function (or `bdf`), takes it from its kernel driver (binding
    /// it to `uio_pci_generic` for its interrupt when that driver is loaded), enables memory
    /// decoding and bus mastering, maps its virtio structures and resets it to
    /// ACKNOWLEDGE|DRIVER.
    pub fn open(bdf: Option<&str>) -> Result<PciSnd, String> {
        let (bdf, dir) = find_function(bdf)?;
        if driver_name(&dir).as_deref() != Some(UIO_DRIVER) {
            unbind(&bdf, &dir)?;
        }
        let mut uio = bind_uio(&bdf, &dir);
        let cfg_path = dir.join("config");
        let cfg = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&cfg_path)
            .map_err(|e| format!("open {} (needs root): {e}", cfg_path.display()))?;
        let mut space = [0u8; 256];
        let n = cfg
            .read_at(&mut space, 0)
            .map_err(|e| format!("pread {}: {e}", cfg_path.display()))?;
        let vendor = u16::from_le_bytes([space[0], space[1]]);
        let device = u16::from_le_bytes([space[2], space[3]]);
        if vendor != VIRTIO_VENDOR || !(0x1040..=0x107f).contains(&device) {
            return Err(format!(
                "{bdf} is {vendor:04x}:{device:04x}, not a modern virtio device"
            ));
        }
        let caps = parse_caps(&space[..n]).map_err(|e| format!("{bdf}: {e}"))?;
        if caps.isr.is_none() && uio.is_ok() {
            uio = Err(format!("{bdf}: no virtio ISR capability"));
        }
        // With uio_pci_generic, INTx disable is the interrupt mask (its handler sets it, the
        // interrupt thread clears it); the poller keeps the line off.
        enable_command(&cfg, &cfg_path, uio.is_err())?;
        let mut inner = Self::map(&bdf, &dir, &caps)?;
        let no_intx = match uio {
            Ok(dev) => {
                inner.uio = Some(Uio { dev, config: cfg });
                None
            }
            Err(e) => Some(e),
        };
        inner.init()?;
        Ok(PciSnd {
            inner: Arc::new(inner),
            poller: Mutex::new(None),
            no_intx,
        })
    }

    /// How queue interrupts are delivered: `"intx"` (the INTx line through
    /// `uio_pci_generic`) or `"polling"` (a thread looking at the used rings every
    /// [`POLL_INTERVAL`]; also after `/dev/uioN` failed, see [`PciSnd::errors`]).
    pub fn interrupt_mode(&self) -> &'static str {
        if self.inner.uio.is_some() && !self.inner.intx_failed.load(Ordering::SeqCst) {
            "intx"
        } else {
            "polling"
        }
    }

    /// Why the INTx path is not used (`None` when it is).
    pub fn intx_unavailable(&self) -> Option<&str> {
        self.no_intx.as_deref()
    }

    fn map(bdf: &str, dir: &Path, caps: &VirtioCaps) -> Result<Inner, String> {
        let need = |c: Option<VirtioCap>, what: &str| {
            c.ok_or_else(|| format!("{bdf}: no virtio {what} capability"))
        };
        let common_cap = need(caps.common, "common configuration")?;
        let notify_cap = need(caps.notify, "notify")?;
        let device_cap = need(caps.device, "device configuration")?;
        let removal = Arc::new(Removal::default());
        let mut bars: Vec<(u8, Arc<BarMap>)> = Vec::new();
        for cap in [
            Some(common_cap),
            Some(notify_cap),
            Some(device_cap),
            caps.isr,
        ]
        .into_iter()
        .flatten()
        {
            if !bars.iter().any(|(b, _)| *b == cap.bar) {
                bars.push((cap.bar, Arc::new(BarMap::map(dir, cap.bar)?)));
            }
        }
        let common = Window::new(&bars, &common_cap, "common configuration", &removal)?;
        if common.len() < common::LEN {
            return Err(format!(
                "{bdf}: common configuration is {} bytes, needs {}",
                common.len(),
                common::LEN
            ));
        }
        let isr = match caps.isr {
            Some(c) => Some(Window::new(&bars, &c, "ISR", &removal)?),
            None => None,
        };
        let num_queues = common.read::<u16>(common::NUM_QUEUES);
        Ok(Inner {
            bdf: bdf.to_string(),
            notify: Window::new(&bars, &notify_cap, "notify", &removal)?,
            notify_off_multiplier: caps.notify_off_multiplier,
            isr,
            device: Window::new(&bars, &device_cap, "device configuration", &removal)?,
            common,
            num_queues,
            regs: Mutex::new(()),
            queues: RwLock::new(Queues::default()),
            errors: Mutex::new(Vec::new()),
            needs_reset_seen: AtomicBool::new(false),
            in_handler: AtomicBool::new(false),
            uio: None,
            intx_failed: AtomicBool::new(false),
            sysfs: dir.to_path_buf(),
            removal,
        })
    }

    /// Waits at most `timeout` for the function to leave the guest; when and how it was
    /// noticed, or `None`. Only a function whose interrupts are set up is watched.
    pub fn wait_removed(&self, timeout: Duration) -> Option<Removed> {
        let r = &self.inner.removal;
        let w = lock(&r.what);
        let (w, _) = r
            .changed
            .wait_timeout_while(w, timeout, |w| w.is_none())
            .unwrap_or_else(|e| e.into_inner());
        w.clone()
    }

    /// Whether the function has left the guest (see [`PciSnd::wait_removed`]).
    pub fn removed(&self) -> Option<Removed> {
        lock(&self.inner.removal.what).clone()
    }

    /// The function's PCI address, `0000:00:03.0`.
    pub fn bdf(&self) -> &str {
        &self.inner.bdf
    }

    /// `num_queues` from the common configuration.
    pub fn num_queues(&self) -> u16 {
        self.inner.num_queues
    }

    /// The device status register now.
    pub fn device_status(&self) -> u8 {
        self.inner.status()
    }

    /// The ISR status register (reading it clears it); 0 without an ISR structure.
    pub fn isr_status(&self) -> u8 {
        self.inner.isr.as_ref().map_or(0, |w| w.read::<u8>(0))
    }

    /// The device's 64-bit feature bits.
    pub fn device_features(&self) -> u64 {
        let _g = lock(&self.inner.regs);
        self.inner.device_features()
    }

    /// Requests posted on `queue` and not yet dequeued.
    pub fn in_flight(&self, queue: u16) -> usize {
        let qs = read_lock(&self.inner.queues);
        qs.list
            .get(usize::from(queue))
            .map_or(0, |q| lock(q).ring.in_flight())
    }

    /// What went wrong behind the `Status` codes the trait returns, oldest first.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.inner.errors).clone()
    }

    /// Device misbehaviour seen on the used rings (entries naming no posted chain), with
    /// the queue, and the total count.
    pub fn anomalies(&self) -> (Vec<String>, u64) {
        let qs = read_lock(&self.inner.queues);
        let mut msgs = Vec::new();
        let mut total = 0;
        for (i, q) in qs.list.iter().enumerate() {
            let q = lock(q);
            let (m, n) = q.ring.anomalies();
            msgs.extend(m.iter().map(|m| format!("queue {i}: {m}")));
            total += n;
        }
        (msgs, total)
    }

    fn fail(&self, status: Status, msg: String) -> Status {
        self.inner.error(msg);
        status
    }
}

/// Sets memory space and bus master in the command register, and INTx disable if
/// `intx_off` (when polling: the device must not raise a legacy interrupt nobody handles).
fn enable_command(cfg: &File, path: &Path, intx_off: bool) -> Result<(), String> {
    let mut cmd = [0u8; 2];
    cfg.read_exact_at(&mut cmd, CMD_OFFSET)
        .map_err(|e| format!("pread {} command register: {e}", path.display()))?;
    let old = u16::from_le_bytes(cmd);
    let intx = if intx_off { CMD_INTX_DISABLE } else { 0 };
    let new = old | CMD_MEMORY | CMD_BUS_MASTER | intx;
    if new != old {
        cfg.write_all_at(&new.to_le_bytes(), CMD_OFFSET)
            .map_err(|e| format!("pwrite {} command register: {e}", path.display()))?;
    }
    Ok(())
}

impl VirtioDevice for PciSnd {
    fn negotiate_features(&self, supported: u64) -> KResult<u64> {
        let _sim = SimCode::enter();
        let inner = &*self.inner;
        if !read_lock(&inner.queues).list.is_empty() {
            return Err(self.fail(
                Status::BAD_VALUE,
                "negotiate_features after alloc_queues".into(),
            ));
        }
        let _g = lock(&inner.regs);
        if inner.status() != STATUS_ACKNOWLEDGE | STATUS_DRIVER {
            // Renegotiating after free_queues (or a failed attempt): start over.
            inner.init().map_err(|e| self.fail(Status::IO_ERROR, e))?;
        }
        if supported & VIRTIO_F_VERSION_1 == 0 {
            return Err(self.fail(
                Status::NOT_SUPPORTED,
                "negotiate_features without VIRTIO_F_VERSION_1 (virtio-snd is modern-only)".into(),
            ));
        }
        let device = inner.device_features();
        if device & VIRTIO_F_VERSION_1 == 0 {
            inner.set_status(inner.status() | STATUS_FAILED);
            return Err(self.fail(
                Status::NOT_SUPPORTED,
                format!("device features {device:#x} lack VIRTIO_F_VERSION_1"),
            ));
        }
        let accepted = supported & device & (DEVICE_FEATURES | VIRTIO_F_VERSION_1);
        inner.set_driver_features(accepted);
        inner.add_status(STATUS_FEATURES_OK);
        let s = inner.status();
        if s & STATUS_FEATURES_OK == 0 {
            inner.set_status(s | STATUS_FAILED);
            return Err(self.fail(
                Status::NOT_SUPPORTED,
                format!("device refused features {accepted:#x} (status {s:#x})"),
            ));
        }
        Ok(accepted)
    }

    fn read_device_config(&self, offset: u8, buf: &mut [u8]) -> KResult {
        let _sim = SimCode::enter();
        let inner = &*self.inner;
        let start = usize::from(offset);
        let end = start + buf.len();
        if end > inner.device.len() {
            return Err(self.fail(
                Status::BAD_VALUE,
                format!(
                    "read_device_config({offset}, {} bytes) past the {}-byte device structure",
                    buf.len(),
                    inner.device.len()
                ),
            ));
        }
        for _ in 0..100 {
            let before = inner.common.read::<u8>(common::CONFIG_GENERATION);
            let mut at = start;
            while at < end {
                // Natural-width accesses: 32-bit for 32-bit fields, as the spec asks.
                let left = end - at;
                if at % 4 == 0 && left >= 4 {
                    let v = inner.device.read::<u32>(at);
                    buf[at - start..at - start + 4].copy_from_slice(&v.to_le_bytes());
                    at += 4;
                } else if at % 2 == 0 && left >= 2 {
                    let v = inner.device.read::<u16>(at);
                    buf[at - start..at - start + 2].copy_from_slice(&v.to_le_bytes());
                    at += 2;
                } else {
                    buf[at - start] = inner.device.read::<u8>(at);
                    at += 1;
                }
            }
            if inner.common.read::<u8>(common::CONFIG_GENERATION) == before {
                return Ok(());
            }
        }
        Err(self.fail(
            Status::IO_ERROR,
            "config_generation kept changing while reading the device configuration".into(),
        ))
    }

    fn alloc_queues(&self, count: usize) -> KResult {
        let _sim = SimCode::enter();
        let inner = &*self.inner;
        let _g = lock(&inner.regs);
        let mut qs = write_lock(&inner.queues);
        if !qs.list.is_empty() {
            return Err(self.fail(Status::BAD_VALUE, "alloc_queues called twice".into()));
        }
        let s = inner.status();
        if s & STATUS_FEATURES_OK == 0 {
            return Err(self.fail(
                Status::NO_INIT,
                format!("alloc_queues before negotiate_features (status {s:#x})"),
            ));
        }
        let count = match u16::try_from(count) {
            Ok(c) if c > 0 && c <= inner.num_queues => c,
            _ => {
                return Err(self.fail(
                    Status::BAD_VALUE,
                    format!(
                        "alloc_queues({count}): the device has {} queues",
                        inner.num_queues
                    ),
                ))
            }
        };
        match inner.setup_queues(count) {
            Ok(q) => {
                *qs = q;
                Ok(())
            }
            Err(e) => {
                // The device may hold addresses of the ring memory about to be dropped.
                if let Err(r) = inner.reset() {
                    inner.error(r);
                }
                Err(self.fail(Status::NO_MEMORY, e))
            }
        }
    }

    fn setup_interrupts(&self, handler: Arc<dyn QueueHandler>) -> KResult {
        let _sim = SimCode::enter();
        let inner = &self.inner;
        if read_lock(&inner.queues).list.is_empty() {
            return Err(self.fail(
                Status::NO_INIT,
                "setup_interrupts before alloc_queues".into(),
            ));
        }
        let mut poller = lock(&self.poller);
        if poller.is_some() {
            return Err(self.fail(Status::BAD_VALUE, "setup_interrupts called twice".into()));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let inner = inner.clone();
            let stop = stop.clone();
            let intx = inner.uio.is_some();
            thread::Builder::new()
                .name(
                    if intx {
                        "virtio-pci intx"
                    } else {
                        "virtio-pci poll"
                    }
                    .into(),
                )
                .spawn(move || {
                    if intx {
                        intx_thread(&inner, &stop, &*handler);
                    } else {
                        poll(&inner, &stop, &*handler);
                    }
                })
                .map_err(|e| self.fail(Status::NO_MEMORY, format!("spawn poller: {e}")))?
        };
        let id = thread.thread().id();
        *poller = Some(Poller { stop, thread, id });
        drop(poller);
        // DRIVER_OK last, as Haiku's bus does at the end of its interrupt setup: from here
        // on the device processes the queues.
        let _g = lock(&inner.regs);
        inner.add_status(STATUS_DRIVER_OK);
        let s = inner.status();
        if s & STATUS_DRIVER_OK == 0 || s & (STATUS_NEEDS_RESET | STATUS_FAILED) != 0 {
            drop(_g);
            self.free_interrupts();
            return Err(self.fail(
                Status::IO_ERROR,
                format!("status {s:#x} after setting DRIVER_OK"),
            ));
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
        let _sim = SimCode::enter();
        let inner = &*self.inner;
        let qs = read_lock(&inner.queues);
        if qs.list.is_empty() {
            return Err(self.fail(
                Status::NO_INIT,
                format!("queue_request on queue {queue} before alloc_queues"),
            ));
        }
        let Some(q) = qs.list.get(usize::from(queue)) else {
            return Err(self.fail(
                Status::BAD_VALUE,
                format!(
                    "queue_request on queue {queue}, there are {}",
                    qs.list.len()
                ),
            ));
        };
        if entries.iter().any(|e| e.size == 0) {
            inner.error(format!(
                "queue_request on queue {queue} with a zero-length entry"
            ));
        }
        if inner.removal.is_gone() {
            // Not a misuse: the driver learns of the removal after the fact.
            return Err(Status::IO_ERROR);
        }
        let mut q = lock(q);
        match q.ring.add(entries, readable, cookie) {
            Ok(()) => {}
            Err(s) if s == Status::BUSY => return Err(s),
            Err(s) => {
                return Err(self.fail(
                    s,
                    format!(
                        "queue_request on queue {queue}: {} entries, {readable} readable",
                        entries.len()
                    ),
                ))
            }
        }
        // `add` fenced after publishing the index; now tell the device.
        inner.notify.write::<u16>(q.notify_off, queue);
        Ok(())
    }

    fn queue_dequeue(&self, queue: u16) -> Option<(u64, u32)> {
        let _sim = SimCode::enter();
        let qs = read_lock(&self.inner.queues);
        let mut q = lock(qs.list.get(usize::from(queue))?);
        q.ring.pop_used()
    }

    fn queue_size(&self, queue: u16) -> u16 {
        let _sim = SimCode::enter();
        let inner = &*self.inner;
        {
            let qs = read_lock(&inner.queues);
            if !qs.list.is_empty() {
                return qs
                    .list
                    .get(usize::from(queue))
                    .map_or(0, |q| lock(q).ring.size());
            }
        }
        if queue >= inner.num_queues {
            return 0;
        }
        let _g = lock(&inner.regs);
        inner.device_queue_size(queue)
    }

    fn free_interrupts(&self) {
        let _sim = SimCode::enter();
        let Some(p) = lock(&self.poller).take() else {
            return;
        };
        p.stop.store(true, Ordering::SeqCst);
        if thread::current().id() == p.id {
            self.inner
                .error("free_interrupts called from the interrupt handler".into());
            return;
        }
        // The handler may run the driver's callback on another thread (the simulator's
        // interrupt thread) and wait for it: a free_interrupts from inside that callback
        // would wait for itself in the join. Give a running handler a second to return.
        let since = Instant::now();
        while self.inner.in_handler.load(Ordering::SeqCst) && !p.thread.is_finished() {
            if since.elapsed() > Duration::from_secs(1) {
                self.inner.error(
                    "free_interrupts while the queue handler has run for over a second (called \
                     from inside it?); the interrupt thread is left to end by itself"
                        .into(),
                );
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        if p.thread.join().is_err() {
            self.inner
                .error("the interrupt thread panicked (in the queue handler?)".into());
        }
    }

    fn free_queues(&self) -> KResult {
        let _sim = SimCode::enter();
        let inner = &*self.inner;
        let _g = lock(&inner.regs);
        let mut qs = write_lock(&inner.queues);
        // Reset first: the device must stop using the rings before their memory goes. A
        // device that does not reset may still write there: keep the memory (leak it) rather
        // than hand pages it can reach back to the system, and tell the driver so that it
        // keeps the memory its chains point into too.
        let old = std::mem::take(&mut *qs);
        match inner.reset() {
            Ok(()) => {
                drop(old);
                Ok(())
            }
            Err(e) => {
                // A function that left the guest is not a fault of the device; its rings
                // are kept all the same.
                if !inner.removal.is_gone() {
                    inner.error(format!("{e}; its ring memory is kept"));
                }
                std::mem::forget(old);
                Err(Status::DEV_TIMEOUT)
            }
        }
    }
}

impl Drop for PciSnd {
    fn drop(&mut self) {
        self.free_interrupts();
        // `Inner`'s drop resets the device before the rings and mappings go.
    }
}

/// The poller: every `POLL_INTERVAL`, signal each queue whose used index moved since it
/// was last signalled. Like an interrupt, one call per change; the handler dequeues.
fn poll(inner: &Inner, stop: &AtomicBool, handler: &dyn QueueHandler) {
    let mut round = 0u32;
    while !stop.load(Ordering::SeqCst) {
        thread::sleep(POLL_INTERVAL);
        round = round.wrapping_add(1);
        // The status register is MMIO (a trap into the device model under emulation):
        // look at it now and then, the rings (plain memory) every time.
        if round % STATUS_EVERY == 0 {
            if inner.left_sysfs(|| format!("{}: the function left sysfs", inner.bdf)) {
                return;
            }
            inner.check_needs_reset();
        }
        inner.signal_moved(stop, handler);
    }
}

/// What waiting on `/dev/uioN` gave.
enum Wait {
    /// An interrupt came (the kernel masked INTx; the event count was read).
    Interrupt,
    /// Nothing within `INTX_TIMEOUT_MS`.
    Timeout,
}

/// Waits for the next interrupt of `uio` (at most `INTX_TIMEOUT_MS`) and consumes its
/// event count.
fn wait_uio(uio: &Uio) -> std::io::Result<Wait> {
    let mut pfd = libc::pollfd {
        fd: uio.dev.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid pollfd for the duration of the call, and the fd
        // stays open (`uio` is borrowed).
        let n = unsafe { libc::poll(&mut pfd, 1, INTX_TIMEOUT_MS) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(Wait::Timeout);
        }
        if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return Err(std::io::Error::other(format!(
                "poll revents {:#x}",
                pfd.revents
            )));
        }
        // The total interrupt count; reading it is what acknowledges the event.
        let mut count = [0u8; 4];
        (&uio.dev).read_exact(&mut count)?;
        return Ok(Wait::Interrupt);
    }
}

/// Unmasks INTx: clears INTx disable in the command register's high byte (only that byte
/// is written, as the kernel's UIO documentation does: the low byte holds memory and bus
/// master enable). Only this thread clears the bit and the kernel's handler only sets it
/// while it is clear, so the read-modify-write races with nothing.
fn unmask_uio(uio: &Uio) -> std::io::Result<()> {
    let mut hi = [0u8; 1];
    uio.config.read_exact_at(&mut hi, CMD_OFFSET + 1)?;
    let mask = (CMD_INTX_DISABLE >> 8) as u8;
    if hi[0] & mask != 0 {
        uio.config.write_all_at(&[hi[0] & !mask], CMD_OFFSET + 1)?;
    }
    Ok(())
}

/// The interrupt thread: wait for the INTx interrupt through `/dev/uioN`, read the ISR
/// status (which lowers the line), signal the queues whose used index moved, unmask. The
/// ISR is read before the rings, so a completion after the look raises the line again and
/// is seen after the unmask. On a timeout the rings are looked at anyway (a lost interrupt
/// costs at most `INTX_TIMEOUT_MS`). If `/dev/uioN` fails, the thread falls back to
/// polling.
fn intx_thread(inner: &Inner, stop: &AtomicBool, handler: &dyn QueueHandler) {
    let Some(uio) = inner.uio.as_ref() else {
        return poll(inner, stop, handler);
    };
    let fallback = |what: &str, e: std::io::Error| {
        // Removed: no more interrupts, and the BAR is not touched again.
        if inner.removed_after_uio_error(&e) {
            return;
        }
        inner.intx_failed.store(true, Ordering::SeqCst);
        inner.error(format!("{}: {what}: {e}; polling from now on", inner.bdf));
        poll(inner, stop, handler);
    };
    // Masked since the last run (or by a previous owner): open the line.
    if let Err(e) = unmask_uio(uio) {
        return fallback("unmasking INTx", e);
    }
    while !stop.load(Ordering::SeqCst) {
        let fired = match wait_uio(uio) {
            Ok(Wait::Interrupt) => true,
            Ok(Wait::Timeout) => false,
            Err(e) => return fallback("waiting on /dev/uio", e),
        };
        if fired {
            // Read-to-clear: lowers the INTx line.
            let isr = inner.isr.as_ref().map_or(ISR_QUEUE, |w| w.read::<u8>(0));
            if isr & ISR_CONFIG != 0 {
                inner.check_needs_reset();
            }
        } else {
            if inner.left_sysfs(|| format!("{}: the function left sysfs", inner.bdf)) {
                return;
            }
            inner.check_needs_reset();
        }
        inner.signal_moved(stop, handler);
        if fired {
            if let Err(e) = unmask_uio(uio) {
                return fallback("unmasking INTx", e);
            }
        }
    }
}

impl sim_kernel::BusDevice for PciSnd {
    fn in_flight(&self, queue: u16) -> usize {
        PciSnd::in_flight(self, queue)
    }
    fn violations(&self) -> Vec<String> {
        self.errors()
    }
}
