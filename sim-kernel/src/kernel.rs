//! `SimKernel`: the Haiku kernel services the driver uses, with every misuse written down.
//!
//! The driver core only sees the [`platform::Kernel`] trait. This implementation behaves like
//! Haiku where the driver can observe it (status codes, zeroed contiguous areas, semaphore
//! counts, `user_memcpy` refusing bad addresses) and adds the checks a KDEBUG kernel would do
//! and a few it cannot: blocking or allocating with interrupts disabled, spinlocks taken with
//! interrupts on or released twice, waits that can never end, leaked areas and semaphores.
//! Misuse never panics (the driver would not get to show its next bug); it is recorded, and
//! [`SimKernel::check_clean`] reports it together with leaks.
//!
//! Time comes from [`crate::clock`]: waiting is what moves it (or, with
//! [`KernelConfig::real_time`], the host's clock).

use std::cell::{Cell, RefCell, UnsafeCell};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;

use rustc_hash::FxHashMap;

use platform::{Area, InterruptState, KResult, Kernel, LogLevel, SemId, Status};
use spec::haiku_driver as hd;

use crate::clock::{Clock, SimThread, WaitOutcome, DEFAULT_START};
use crate::memory::{
    count_irq_allocs, Access, AreaInfo, DmaBacking, Memory, PhysMemory, SimCode,
    DEFAULT_MEMORY_SIZE, PAGE_SIZE,
};
use crate::report::{echo_enabled, lock, Failure, FailureLog, Locator};
use crate::user::{UserMapper, UserSpace};

/// How a kernel is built.
#[derive(Clone, Debug)]
pub struct KernelConfig {
    /// `system_time()` at boot, in µs.
    pub start_time: i64,
    /// Size of the physical memory arena behind all areas.
    pub memory_size: usize,
    /// Print log lines and failures to stderr as they happen (default: `SIM_LOG` is set).
    pub echo: bool,
    /// Follow the host's clock instead of simulated time (for a real device).
    pub real_time: bool,
    /// Carve areas from this memory (with its real bus addresses) instead of a private
    /// arena of `memory_size` bytes (for a real device).
    pub dma: Option<DmaMemory>,
}

/// A [`DmaBacking`] in a [`KernelConfig`].
#[derive(Clone)]
pub struct DmaMemory(pub Arc<dyn DmaBacking>);

impl fmt::Debug for DmaMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DmaMemory({} bytes at physical {:#x})",
            self.0.len(),
            self.0.phys_base()
        )
    }
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            start_time: DEFAULT_START,
            memory_size: DEFAULT_MEMORY_SIZE,
            echo: echo_enabled(),
            real_time: false,
            dma: None,
        }
    }
}

/// One captured `dprintf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub time: i64,
    pub level: LogLevel,
    pub message: String,
}

/// A semaphore as the tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SemInfo {
    pub id: i32,
    pub name: String,
    pub count: i32,
}

/// Live semaphores at most (more is `B_NO_MORE_SEMS`, as when Haiku's table is full).
const SEM_SLOTS: usize = 4096;

/// The semaphores. An id lives in slot `id % SEM_SLOTS`, as in Haiku
/// (`src/system/kernel/sem.cpp`: `slot = id % sMaxSems`, and an id whose slot holds another
/// id is `B_BAD_SEM_ID`), so finding one is an index, not a search under a lock.
struct SemTable {
    /// Per slot: the id of its live semaphore (high 32 bits; 0, which no semaphore has,
    /// when free) and its count (low 32 bits). One word, changed only by compare-exchange
    /// against the id the caller named, so an operation on a deleted id never touches the
    /// semaphore that takes the slot next.
    slots: Box<[AtomicU64; SEM_SLOTS]>,
    /// Names and the next id: only creation, deletion and reports take this lock.
    names: Mutex<SemNames>,
}

struct SemNames {
    names: FxHashMap<i32, String>,
    next_id: i32,
}

/// What [`SemTable::update`] found.
enum SemUpdate {
    /// No such semaphore.
    Gone,
    /// The change was declined (`f` returned `None`).
    Declined,
    /// The change was made.
    Done,
}

impl SemTable {
    fn new() -> SemTable {
        SemTable {
            slots: Box::new([const { AtomicU64::new(0) }; SEM_SLOTS]),
            names: Mutex::new(SemNames {
                names: FxHashMap::default(),
                next_id: 1,
            }),
        }
    }

    fn pack(id: i32, count: i32) -> u64 {
        (u64::from(id as u32) << 32) | u64::from(count as u32)
    }

    fn id_of(word: u64) -> i32 {
        (word >> 32) as u32 as i32
    }

    fn count_of(word: u64) -> i32 {
        word as u32 as i32
    }

    /// The slot `id` would live in (`None` for ids no semaphore ever has).
    fn slot(&self, id: i32) -> Option<&AtomicU64> {
        if id <= 0 {
            return None;
        }
        Some(&self.slots[id as usize % SEM_SLOTS])
    }

    /// A new semaphore with `count` units: its id, the next one whose slot is free.
    fn create(&self, count: i32, name: &str) -> Option<i32> {
        let mut n = lock(&self.names);
        for _ in 0..SEM_SLOTS {
            let id = n.next_id;
            n.next_id = n.next_id.checked_add(1).unwrap_or(1);
            let slot = self.slot(id)?;
            // Only creation (under `names`) fills a free slot; nothing else touches one.
            if slot
                .compare_exchange(0, Self::pack(id, count), SeqCst, SeqCst)
                .is_ok()
            {
                n.names.insert(id, name.to_owned());
                return Some(id);
            }
        }
        None
    }

    /// Deletes `id`; false if it does not exist.
    fn delete(&self, id: i32) -> bool {
        let mut n = lock(&self.names);
        let Some(slot) = self.slot(id) else {
            return false;
        };
        let mut word = slot.load(SeqCst);
        while Self::id_of(word) == id {
            match slot.compare_exchange_weak(word, 0, SeqCst, SeqCst) {
                Ok(_) => {
                    n.names.remove(&id);
                    return true;
                }
                Err(w) => word = w,
            }
        }
        false
    }

    /// The count of live semaphore `id`.
    fn count(&self, id: i32) -> Option<i32> {
        let word = self.slot(id)?.load(SeqCst);
        (Self::id_of(word) == id).then(|| Self::count_of(word))
    }

    /// Sets the count of live semaphore `id` to `f(count)`, unless `f` declines (`None`).
    fn update(&self, id: i32, f: impl Fn(i32) -> Option<i32>) -> SemUpdate {
        let Some(slot) = self.slot(id) else {
            return SemUpdate::Gone;
        };
        let mut word = slot.load(SeqCst);
        loop {
            if Self::id_of(word) != id {
                return SemUpdate::Gone;
            }
            let Some(count) = f(Self::count_of(word)) else {
                return SemUpdate::Declined;
            };
            match slot.compare_exchange_weak(word, Self::pack(id, count), SeqCst, SeqCst) {
                Ok(_) => return SemUpdate::Done,
                Err(w) => word = w,
            }
        }
    }

    /// Every live semaphore, by id.
    fn list(&self) -> Vec<SemInfo> {
        let n = lock(&self.names);
        let mut v: Vec<SemInfo> = n
            .names
            .iter()
            .filter_map(|(&id, name)| {
                Some(SemInfo {
                    id,
                    name: name.clone(),
                    count: self.count(id)?,
                })
            })
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    fn name(&self, id: i32) -> Option<String> {
        lock(&self.names).names.get(&id).cloned()
    }
}

/// What one simulated CPU (host thread) is doing.
#[derive(Default)]
struct CpuState {
    interrupts_disabled: bool,
    /// Nesting depth of interrupt handlers running on this thread.
    in_interrupt: u32,
    /// Addresses of the spinlocks this thread holds.
    spinlocks: Held,
    /// Consecutive endless waits; a driver that retries one in a loop would hang the test.
    endless_waits: u32,
    /// The current run of polls that found nothing (see [`SimKernel::busy_poll`]).
    spin: Spin,
}

/// Spinlocks held inline: more than a driver holds at once (the fast path needs no heap).
const HELD_INLINE: usize = 4;

/// The spinlocks one CPU holds, in the order it took them: the first [`HELD_INLINE`]
/// inline, any more after them in `more`.
#[derive(Default)]
struct Held {
    n: usize,
    inline: [usize; HELD_INLINE],
    more: Vec<usize>,
}

impl Held {
    fn len(&self) -> usize {
        self.n + self.more.len()
    }

    fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn contains(&self, addr: usize) -> bool {
        self.inline[..self.n].contains(&addr) || self.more.contains(&addr)
    }

    /// Takes note of one more, without the heap while there is room inline.
    #[inline]
    fn push_inline(&mut self, addr: usize) -> bool {
        if self.n == HELD_INLINE {
            return false;
        }
        self.inline[self.n] = addr;
        self.n += 1;
        true
    }

    fn push(&mut self, addr: usize) {
        if !self.push_inline(addr) {
            self.more.push(addr);
        }
    }

    /// Forgets the last-taken note of `addr`; false if there is none.
    #[inline]
    fn remove(&mut self, addr: usize) -> bool {
        if self.more.is_empty() && self.n > 0 && self.inline[self.n - 1] == addr {
            self.n -= 1;
            return true;
        }
        self.remove_slow(addr)
    }

    /// [`Held::remove`] of a lock that is not the last one taken (or with more held than
    /// fit inline): out of line, so the common release stays small.
    #[cold]
    #[inline(never)]
    fn remove_slow(&mut self, addr: usize) -> bool {
        if let Some(i) = self.more.iter().rposition(|&a| a == addr) {
            self.more.remove(i);
            return true;
        }
        let Some(i) = self.inline[..self.n].iter().rposition(|&a| a == addr) else {
            return false;
        };
        self.inline.copy_within(i + 1..self.n, i);
        if self.more.is_empty() {
            self.n -= 1;
        } else {
            self.inline[self.n - 1] = self.more.remove(0);
        }
        true
    }
}

/// A run of polls that found nothing: `count` of them at simulated time `at`. Once the
/// caller spins, `advanced_to` is where its last wait ended and `since` when the spin began;
/// a poll right at `advanced_to` continues the spin, anything else starts a new one.
#[derive(Default)]
struct Spin {
    at: i64,
    count: u32,
    advanced_to: Option<i64>,
    since: i64,
    /// Consecutive advances with no device event pending (the quantum doubles each time).
    idle_steps: u32,
}

/// What a caller polled and found unchanged, for [`SimKernel::busy_poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// `system_time()`.
    Clock,
    /// A virtqueue whose `queue_dequeue` came back empty.
    Queue,
}

/// Polls at one simulated instant after which the caller counts as spinning. Far above
/// what an interrupt-driven driver makes (a few per exchange), so its timing is untouched.
pub const SPIN_POLLS: u32 = 1000;
/// How far a spinning clock poll moves time (µs).
pub const SPIN_QUANTUM_US: i64 = 10;
/// Simulated time a queue may be polled in vain before the simulator calls it endless.
pub const SPIN_FOREVER_US: i64 = 10_000_000;

/// What one simulated CPU is doing, per kernel: each host thread keeps its own in a
/// thread-local list (a kernel's key, whether the kernel is alive, the state), so the
/// checks behind every spinlock and interrupt call take no lock and hash nothing. The
/// state a thread used last is also in `FRONT`, a plain thread-local pair (key, pointer)
/// that needs no lazy initialisation and no borrow flag: every call but a thread's first
/// with another kernel finds its state there with one comparison. A dead kernel's state is
/// dropped when the thread first meets another kernel.
struct CpuSlot {
    key: u64,
    alive: Weak<()>,
    /// Boxed: `FRONT` points at it while the list moves its slots around.
    state: Box<CpuCell>,
}

/// One CPU state, lent out by [`Cpu::with`].
struct CpuCell {
    state: UnsafeCell<CpuState>,
    /// Set while lent out: a nested `with` is a bug in this file (checked in debug
    /// builds, which the tests use).
    #[cfg(debug_assertions)]
    busy: Cell<bool>,
}

/// The calling thread's CPU in one kernel ([`SimKernel::cpu`]): the checks behind every
/// interrupt, spinlock, clock and semaphore call read and write its state here, with no
/// lock and no search. A caller that makes many calls on one thread (the Haiku
/// environment, for each call into an add-on) finds it once and keeps it as a [`RawCpu`].
/// Not `Send`: a CPU state is its thread's alone.
#[derive(Clone, Copy)]
pub struct Cpu<'k> {
    kernel: &'k SimKernel,
    cell: &'k CpuCell,
}

/// A [`Cpu`] kept between calls on its thread ([`Cpu::raw`], [`SimKernel::cpu_from_raw`]).
/// Not `Send`, like the state it points to.
#[derive(Clone, Copy, Debug)]
pub struct RawCpu {
    cell: NonNull<CpuCell>,
    /// Its kernel's key, for the check debug builds make.
    key: u64,
}

/// A thread's CPU states; as it goes (thread exit) `FRONT` forgets its pointer.
struct CpuList(Vec<CpuSlot>);

impl Drop for CpuList {
    fn drop(&mut self) {
        let _ = FRONT.try_with(|f| f.set((0, std::ptr::null())));
    }
}

thread_local! {
    static CPUS: RefCell<CpuList> = const { RefCell::new(CpuList(Vec::new())) };
    /// (key, state) of the kernel this thread used last; key 0 (no kernel has it) when none.
    static FRONT: Cell<(u64, *const CpuCell)> = const { Cell::new((0, std::ptr::null())) };
}

/// Keys of kernels, never reused (an address could be, by the next kernel).
static NEXT_CPU_KEY: AtomicU64 = AtomicU64::new(1);

/// Allocation failures a test asked for.
#[derive(Default)]
struct Faults {
    area_after: Option<u32>,
    sem_after: Option<u32>,
}

struct Inner {
    clock: Clock,
    memory: Arc<Memory>,
    /// The client's address space: every `user_memcpy` takes this lock, so it is
    /// `parking_lot`'s (one compare-exchange each way, no poisoning to check).
    user: parking_lot::Mutex<UserSpace>,
    sems: SemTable,
    /// This kernel's key in every thread's [`CPUS`].
    cpu_key: u64,
    /// Alive while the kernel is: how a thread's [`CPUS`] tells a dead kernel's state.
    alive: Arc<()>,
    log: Mutex<Vec<LogRecord>>,
    failures: FailureLog,
    echo: bool,
    faults: Mutex<Faults>,
    /// µs the machine stops for as the next timed wait begins ([`SimKernel::stall_next_wait`]).
    stall: std::sync::atomic::AtomicI64,
    /// How late each of the next timed waits that time out returns, and for how many
    /// ([`SimKernel::set_timer_slack`]).
    slack: std::sync::atomic::AtomicI64,
    slack_waits: std::sync::atomic::AtomicU32,
}

/// The client's address space while [`SimKernel::with_user_memory`] holds it.
pub struct UserMemory<'a>(&'a UserSpace);

impl UserMemory<'_> {
    /// Where `[addr, addr + len)` is in the host: `Ok(Some(p))` for client memory wholly
    /// inside one mapping (`p` its first byte, readable and writable for `len` bytes until
    /// [`SimKernel::with_user_memory`] returns), `Ok(None)` for an address that is not client
    /// memory ([`SimKernel::is_user_address`] false: kernel memory, for the caller to reach
    /// without faulting), `Err(BAD_ADDRESS)` for client memory the range does not fit in.
    #[inline]
    pub fn host(&self, addr: u64, len: usize) -> KResult<Option<NonNull<u8>>> {
        self.0.host(addr, len)
    }
}

/// The simulated kernel. Cheap to clone: clones are handles to one kernel, so a test keeps
/// one while the driver owns another.
#[derive(Clone)]
pub struct SimKernel {
    inner: Arc<Inner>,
}

impl Default for SimKernel {
    fn default() -> Self {
        SimKernel::new()
    }
}

/// How many endless waits in a row one thread may hit before the simulator gives up on it.
const ENDLESS_WAIT_LIMIT: u32 = 1000;

impl SimKernel {
    /// `delete_area`, safe here: the arena outlives every area (a deleted one is poisoned,
    /// not unmapped), and deleting an area a device chain still points into is recorded as
    /// a failure when it happens, which is what the trait's contract forbids.
    pub fn delete_area(&self, area: &Area) {
        let _sim = SimCode::enter();
        self.forbid_in_interrupt(&format!("delete_area({})", area.id));
        if let Err(e) = self.inner.memory.delete(area) {
            self.record_failure(e);
        }
    }

    /// A kernel with the default configuration; the calling thread is its first CPU.
    pub fn new() -> Self {
        SimKernel::with_config(KernelConfig::default())
    }

    pub fn with_config(config: KernelConfig) -> Self {
        let failures = FailureLog::new();
        let clock = if config.real_time {
            Clock::real_time(config.start_time, failures.clone())
        } else {
            Clock::with_failures(config.start_time, failures.clone())
        };
        let memory = match config.dma {
            Some(DmaMemory(backing)) => Memory::over(backing, failures.clone()),
            None => Memory::new(config.memory_size, failures.clone()),
        };
        SimKernel {
            inner: Arc::new(Inner {
                clock,
                memory,
                user: parking_lot::Mutex::new(UserSpace::new()),
                sems: SemTable::new(),
                cpu_key: NEXT_CPU_KEY.fetch_add(1, Ordering::Relaxed),
                alive: Arc::new(()),
                log: Mutex::new(Vec::new()),
                failures,
                echo: config.echo,
                faults: Mutex::new(Faults::default()),
                stall: std::sync::atomic::AtomicI64::new(0),
                slack: std::sync::atomic::AtomicI64::new(0),
                slack_waits: std::sync::atomic::AtomicU32::new(0),
            }),
        }
    }

    /// The next `waits` timed `acquire_sem`s that time out return `micros` µs after their
    /// deadline, as on a real kernel, where a timed wait always ends a little late (timer
    /// slack, the scheduler): the machine stops for that long ([`Clock::freeze_for`]) as
    /// the wait ends. Bounded by `waits` so that a test of code that would wait for ever
    /// under it fails on its own simulated clock instead of hanging.
    pub fn set_timer_slack(&self, micros: i64, waits: u32) {
        use std::sync::atomic::Ordering::SeqCst;
        self.inner.slack.store(micros.max(0), SeqCst);
        self.inner.slack_waits.store(waits, SeqCst);
    }

    /// As the next `acquire_sem` with a timeout starts to block, the whole machine stops for
    /// `micros` µs ([`Clock::freeze_for`]): the host did not run the virtual machine. A wait
    /// whose deadline passed meanwhile then times out at once (the timer's interrupt is taken
    /// first), and the device completions that fell due are delivered at the next wait, as
    /// the interrupts a resumed machine finds pending.
    pub fn stall_next_wait(&self, micros: i64) {
        self.inner
            .stall
            .store(micros.max(0), std::sync::atomic::Ordering::SeqCst);
    }

    /// The clock shared with device models.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The device's view of the areas, by physical address.
    pub fn phys_memory(&self) -> PhysMemory {
        PhysMemory::new(self.inner.memory.clone())
    }

    /// Records a failure (used by device models too, so one list tells the whole story).
    pub fn record_failure(&self, message: impl Into<String>) {
        self.inner.failures.record(message);
    }

    /// Every failure recorded so far.
    pub fn failures(&self) -> Vec<String> {
        self.inner.failures.snapshot()
    }

    /// The recorded failures with the code address of each call, where known.
    pub fn failure_entries(&self) -> Vec<Failure> {
        self.inner.failures.entries()
    }

    /// Sets what names the calling code of each failure (see [`FailureLog::set_locator`]).
    pub fn set_failure_locator(&self, locator: Option<Locator>) {
        self.inner.failures.set_locator(locator);
    }

    /// Removes and returns the recorded failures (after provoking one on purpose).
    pub fn take_failures(&self) -> Vec<String> {
        self.inner.failures.take()
    }

    /// Starts a thread that takes part in the simulation (see [`crate::clock`]).
    pub fn spawn<F, T>(&self, name: &str, f: F) -> SimThread<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.inner.clock.spawn(name, f)
    }

    /// Runs `f` as a virtio interrupt handler on this thread: interrupts disabled, blocking
    /// and allocating forbidden. Checks that the handler left no spinlock held and did not
    /// turn interrupts back on.
    pub fn run_in_interrupt<R>(&self, f: impl FnOnce() -> R) -> R {
        let (saved_disabled, held_before) = self.with_cpu(|c| {
            let saved = c.interrupts_disabled;
            c.interrupts_disabled = true;
            c.in_interrupt += 1;
            (saved, c.spinlocks.len())
        });
        let (r, allocs) = count_irq_allocs(f);
        let problems = self.with_cpu(|c| {
            let mut p = Vec::new();
            if allocs > 0 {
                p.push(format!(
                    "interrupt handler allocated or freed heap memory {allocs} time(s)"
                ));
            }
            if c.spinlocks.len() > held_before {
                p.push(format!(
                    "interrupt handler returned holding {} spinlock(s)",
                    c.spinlocks.len() - held_before
                ));
            }
            if !c.interrupts_disabled {
                p.push("interrupt handler returned with interrupts enabled".to_owned());
            }
            c.in_interrupt -= 1;
            c.interrupts_disabled = saved_disabled;
            p
        });
        for p in problems {
            self.record_failure(p);
        }
        r
    }

    /// Runs `f` on the calling thread's CPU state in this kernel ([`Cpu::with`]).
    #[inline]
    fn with_cpu<R>(&self, f: impl FnOnce(&mut CpuState) -> R) -> R {
        self.cpu().with(f)
    }

    /// The calling thread's CPU in this kernel. The state found last is in `FRONT`, so this
    /// is one comparison on every call but a thread's first with this kernel.
    #[inline]
    pub fn cpu(&self) -> Cpu<'_> {
        let (key, cell) = FRONT.with(Cell::get);
        let cell = if key == self.inner.cpu_key {
            cell
        } else {
            self.front_cpu()
        };
        // SAFETY: `FRONT` holds a pointer only next to the key of the kernel whose state it
        // is, set by `front_cpu` to a boxed `CpuCell` of this thread's `CPUS` list. That box
        // lives until the list drops it: `retain` drops only dead kernels' states, and no
        // live kernel (`self` is one, borrowed for the `Cpu`'s life) has a dead one's key
        // (keys are never reused); the list's own drop at thread exit resets `FRONT` to key
        // 0, which no kernel has. So a key equal to ours comes with a live state of ours,
        // and it is this thread's alone (`Cpu` is not `Send`).
        let cell = unsafe { &*cell };
        Cpu { kernel: self, cell }
    }

    /// The [`Cpu`] that `raw` keeps, without looking for it.
    ///
    /// # Safety
    ///
    /// `raw` is `self.cpu().raw()`, taken on this thread (a `RawCpu` cannot leave it) from
    /// this kernel: its state then lives as long as the kernel (see [`SimKernel::cpu`]).
    /// Debug builds check that it is this kernel's.
    #[inline]
    pub unsafe fn cpu_from_raw(&self, raw: RawCpu) -> Cpu<'_> {
        debug_assert_eq!(raw.key, self.inner.cpu_key, "a RawCpu of another kernel");
        Cpu {
            kernel: self,
            // SAFETY: the caller's promise: a state of this live kernel on this thread.
            cell: unsafe { raw.cell.as_ref() },
        }
    }

    /// Finds (or makes) this kernel's CPU state in the thread's list, after dropping dead
    /// kernels' states, and puts it in `FRONT`.
    #[cold]
    #[inline(never)]
    fn front_cpu(&self) -> *const CpuCell {
        let _sim = SimCode::enter();
        let key = self.inner.cpu_key;
        CPUS.with(|cpus| {
            let cpus = &mut cpus.borrow_mut().0;
            let at = match cpus.iter().position(|c| c.key == key) {
                Some(i) => i,
                None => {
                    cpus.retain(|c| c.alive.strong_count() > 0);
                    cpus.push(CpuSlot {
                        key,
                        alive: Arc::downgrade(&self.inner.alive),
                        state: Box::new(CpuCell {
                            state: UnsafeCell::new(CpuState::default()),
                            #[cfg(debug_assertions)]
                            busy: Cell::new(false),
                        }),
                    });
                    cpus.len() - 1
                }
            };
            let cell: *const CpuCell = &*cpus[at].state;
            FRONT.with(|f| f.set((key, cell)));
            cell
        })
    }

    /// Records each of `problems` (a misuse found on a fast path).
    #[cold]
    #[inline(never)]
    fn record_all(&self, problems: Vec<String>) {
        for p in problems {
            self.record_failure(p);
        }
    }

    /// A poll that found nothing new (a `system_time()` call, an empty `queue_dequeue`): the
    /// caller may be busy-waiting. On a real CPU time passes while it spins and the device
    /// answers meanwhile; here time moves only when threads wait. So after [`SPIN_POLLS`]
    /// polls at one instant with interrupts enabled the caller spins, and each of its polls
    /// then waits: a queue poll until the next device event (nothing changes before it), a
    /// clock poll [`SPIN_QUANTUM_US`] (its caller has a deadline of its own); a queue poll
    /// with no device event pending waits a step that doubles each time (up to 100 ms). Deterministic, like every wait. With interrupts disabled time
    /// cannot move here (the device model's own limit then reports the hang). A queue
    /// polled in vain for [`SPIN_FOREVER_US`] of simulated time is recorded, and `Err` says
    /// why: the spin would never end.
    pub fn busy_poll(&self, poll: Poll) -> Result<(), String> {
        self.cpu().poll_missed(poll)
    }

    /// [`SimKernel::busy_poll`] once the caller spins (at simulated time `now`): time moves.
    #[cold]
    #[inline(never)]
    fn busy_poll_spinning(&self, poll: Poll, now: i64) -> Result<(), String> {
        const MAX_IDLE_STEP_US: i64 = 100_000;
        let _sim = SimCode::enter();
        let clock = &self.inner.clock;
        // Only a spinning caller pays for looking at the device's next event.
        let next_event = clock.next_event_time();
        let (to, since) = self.with_cpu(|c| {
            let to = match (poll, next_event) {
                (Poll::Queue, Some(t)) if t > now => {
                    c.spin.idle_steps = 0;
                    t
                }
                (Poll::Queue, Some(_)) => now + 1,
                (Poll::Queue, None) => {
                    let k = c.spin.idle_steps.min(20);
                    c.spin.idle_steps += 1;
                    now + (SPIN_QUANTUM_US << k).min(MAX_IDLE_STEP_US)
                }
                (Poll::Clock, _) => now + SPIN_QUANTUM_US,
            };
            c.spin.advanced_to = Some(to);
            (to, c.spin.since)
        });
        if poll == Poll::Queue && now - since >= SPIN_FOREVER_US {
            self.with_cpu(|c| c.spin = Spin::default());
            let msg = format!(
                "a virtqueue polled in vain from {since} µs to {now} µs: the driver busy-polls \
                 a queue the device does not complete"
            );
            self.record_failure(msg.clone());
            return Err(msg);
        }
        clock.advance_to(to);
        Ok(())
    }

    /// `system_time()` as a poll ([`Cpu::poll_clock`]).
    #[inline]
    pub fn poll_clock(&self) -> i64 {
        self.cpu().poll_clock()
    }

    #[cold]
    #[inline(never)]
    fn poll_clock_slow(&self) -> i64 {
        let _sim = SimCode::enter();
        // `busy_poll` counts the poll as `Cpu::poll_clock` does, and waits once the caller
        // spins.
        let _ = self.busy_poll(Poll::Clock);
        self.inner.clock.now()
    }

    /// A queue poll found something ([`Cpu::poll_succeeded`]).
    pub fn poll_succeeded(&self) {
        self.cpu().poll_succeeded();
    }

    /// Whether interrupts are disabled on the calling thread (simulated CPU).
    pub fn interrupts_disabled(&self) -> bool {
        self.cpu().interrupts_disabled()
    }

    /// Records `what` as a misuse if interrupts are disabled on this thread; true if so.
    /// For kernel services that may block or allocate (the Haiku exports use it too).
    pub fn forbid_in_interrupt(&self, what: &str) -> bool {
        self.cpu().forbid_in_interrupt(what)
    }

    /// Records `what`, made with interrupts disabled (in a handler if `in_irq`).
    #[cold]
    #[inline(never)]
    fn forbidden(&self, what: &str, in_irq: bool) {
        let _sim = SimCode::enter();
        let ctx = if in_irq {
            "in an interrupt handler"
        } else {
            "with interrupts disabled"
        };
        self.record_failure(format!("{what} {ctx}"));
    }

    // ---- logging ----

    /// Every captured log line, as "LEVEL: message".
    pub fn log_lines(&self) -> Vec<String> {
        lock(&self.inner.log)
            .iter()
            .map(|r| format!("{:?}: {}", r.level, r.message))
            .collect()
    }

    pub fn log_records(&self) -> Vec<LogRecord> {
        lock(&self.inner.log).clone()
    }

    /// Whether any captured log message contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        lock(&self.inner.log)
            .iter()
            .any(|r| r.message.contains(needle))
    }

    // ---- areas ----

    /// The live areas.
    pub fn areas(&self) -> Vec<AreaInfo> {
        self.inner.memory.live()
    }

    /// Writes into a user-visible area by the address the driver reported (the client filling
    /// a playback buffer).
    pub fn area_user_write(&self, addr: u64, bytes: &[u8]) -> KResult {
        self.inner
            .memory
            .host_access(addr, bytes.len(), true, Access::Write(bytes))
    }

    /// Reads from a user-visible area by the address the driver reported (the client reading
    /// a capture buffer).
    pub fn area_user_read(&self, addr: u64, out: &mut [u8]) -> KResult {
        self.inner
            .memory
            .host_access(addr, out.len(), true, Access::Read(out))
    }

    /// Makes the `n`th next `create_area` fail with `B_NO_MEMORY` (0 = the very next one).
    pub fn fail_create_area_after(&self, n: u32) {
        lock(&self.inner.faults).area_after = Some(n);
    }

    /// Makes the `n`th next `create_sem` fail with `B_NO_MORE_SEMS` (0 = the very next one).
    pub fn fail_create_sem_after(&self, n: u32) {
        lock(&self.inner.faults).sem_after = Some(n);
    }

    // ---- semaphores ----

    pub fn sems(&self) -> Vec<SemInfo> {
        self.inner.sems.list()
    }

    /// The count of a live semaphore.
    #[inline]
    pub fn sem_count(&self, sem: i32) -> Option<i32> {
        self.inner.sems.count(sem)
    }

    #[inline]
    fn try_take(&self, sem: i32) -> Option<KResult> {
        match self.inner.sems.update(sem, |c| (c > 0).then(|| c - 1)) {
            SemUpdate::Gone => Some(Err(Status(hd::B_BAD_SEM_ID))),
            SemUpdate::Done => Some(Ok(())),
            SemUpdate::Declined => None,
        }
    }

    fn sem_name(&self, sem: i32) -> String {
        self.inner
            .sems
            .name(sem)
            .map_or_else(|| format!("#{sem}"), |n| format!("{n:?}"))
    }

    // ---- user memory (the client's side) ----

    /// Maps `len` zeroed bytes of client memory and returns its user address.
    pub fn user_alloc(&self, len: usize) -> u64 {
        self.inner.user.lock().alloc(len)
    }

    /// Maps `len` bytes at exactly `addr` (boundary tests); `Err` if not possible.
    pub fn user_map_at(&self, addr: u64, len: usize) -> Result<(), String> {
        self.inner.user.lock().map_at(addr, len)
    }

    /// Unmaps the mapping that starts at `addr`.
    pub fn user_free(&self, addr: u64) {
        if !self.inner.user.lock().free(addr) {
            panic!("user_free({addr:#x}): no mapping starts there");
        }
    }

    /// Backs later user mappings with `mapper` (`None`: plain host bytes again). The Haiku
    /// environment uses it to put client memory where a direct access by the add-on faults.
    pub fn set_user_mapper(&self, mapper: Option<Arc<dyn UserMapper>>) {
        self.inner.user.lock().set_mapper(mapper);
    }

    /// Whether `addr` is client memory (mapped, or in the user mapper's range): what
    /// `user_memcpy` must reach through the user space rather than as kernel memory.
    pub fn is_user_address(&self, addr: u64) -> bool {
        self.inner.user.lock().is_user(addr)
    }

    /// Unmaps all client memory.
    pub fn user_free_all(&self) {
        self.inner.user.lock().clear();
    }

    /// The client writes its own memory. Panics on an address the test did not map: that is
    /// a bug in the test, not in the driver.
    pub fn user_write(&self, addr: u64, bytes: &[u8]) {
        if let Err(e) = self.inner.user.lock().write(addr, bytes) {
            panic!("user_write({addr:#x}, {} bytes): {e:?}", bytes.len());
        }
    }

    /// The client reads its own memory (panics like [`SimKernel::user_write`]).
    pub fn user_read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        if let Err(e) = self.inner.user.lock().read(addr, &mut v) {
            panic!("user_read({addr:#x}, {len} bytes): {e:?}");
        }
        v
    }

    /// Reads client memory like `copy_from_user` but without the context checks (the
    /// caller made them): `Err(BAD_ADDRESS)` unless it lies inside one mapping.
    pub fn try_user_read(&self, addr: u64, out: &mut [u8]) -> KResult {
        self.inner.user.lock().read(addr, out)
    }

    /// Writes client memory like `copy_to_user` but without the context checks.
    pub fn try_user_write(&self, addr: u64, data: &[u8]) -> KResult {
        self.inner.user.lock().write(addr, data)
    }

    /// Runs `f` with the client's address space held still: `user_memcpy`'s every call
    /// finds both of its sides in it under one lock, and copies while the mappings it found
    /// cannot go away.
    pub fn with_user_memory<R>(&self, f: impl FnOnce(&UserMemory<'_>) -> R) -> R {
        f(&UserMemory(&self.inner.user.lock()))
    }

    /// Writes a plain-bytes value into client memory.
    pub fn user_write_value<T: zerocopy::IntoBytes + zerocopy::Immutable>(&self, addr: u64, v: &T) {
        self.user_write(addr, v.as_bytes());
    }

    /// Reads a plain-bytes value from client memory.
    pub fn user_read_value<T: zerocopy::FromBytes>(&self, addr: u64) -> T {
        let bytes = self.user_read(addr, std::mem::size_of::<T>());
        T::read_from_bytes(&bytes).unwrap_or_else(|_| unreachable!("sized read"))
    }

    // ---- the end of a test ----

    /// `Ok` if nothing the driver made is still alive and nothing was misused; otherwise one
    /// line per leak or failure.
    pub fn check_clean(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        for a in self.areas() {
            problems.push(format!(
                "area {} {:?} ({} bytes{}) is still alive",
                a.id,
                a.name,
                a.size,
                if a.user { ", user" } else { "" }
            ));
        }
        for s in self.sems() {
            problems.push(format!("semaphore {} {:?} is still alive", s.id, s.name));
        }
        for (addr, len) in self.inner.user.lock().live() {
            problems.push(format!(
                "user mapping {addr:#x} ({len} bytes) is still mapped (the test's own; user_free it)"
            ));
        }
        problems.extend(self.failures());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Panics with the report of [`SimKernel::check_clean`] unless it is clean.
    pub fn assert_clean(&self) {
        if let Err(p) = self.check_clean() {
            panic!("the simulated kernel is not clean:\n  {}", p.join("\n  "));
        }
    }

    /// Haiku's `try_acquire_spinlock`: takes the lock if it is free, with the same checks
    /// and bookkeeping as [`Kernel::acquire_spinlock`].
    pub fn try_acquire_spinlock(&self, lock_word: &AtomicI32) -> bool {
        let _sim = SimCode::enter();
        let addr = lock_word as *const AtomicI32 as usize;
        if !self.interrupts_disabled() {
            self.record_failure(format!(
                "try_acquire_spinlock({addr:#x}) with interrupts enabled"
            ));
        }
        let taken = lock_word
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if taken {
            self.with_cpu(|c| c.spinlocks.push(addr));
        }
        taken
    }

    /// [`Kernel::acquire_spinlock`] off its fast path: interrupts enabled, the lock held by
    /// this CPU already, or held by another one (spin for it).
    #[cold]
    #[inline(never)]
    fn acquire_spinlock_slow(&self, lock_word: &AtomicI32) {
        let _sim = SimCode::enter();
        let addr = lock_word as *const AtomicI32 as usize;
        let (enabled, recursive) =
            self.with_cpu(|c| (!c.interrupts_disabled, c.spinlocks.contains(addr)));
        if enabled {
            self.record_failure(format!(
                "acquire_spinlock({addr:#x}) with interrupts enabled"
            ));
        }
        if recursive {
            // A real CPU would spin forever here.
            self.record_failure(format!(
                "acquire_spinlock({addr:#x}) of a spinlock this CPU already holds (deadlock)"
            ));
            return;
        }
        let mut spins = 0u64;
        while lock_word
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins == 50_000_000 {
                self.record_failure(format!(
                    "acquire_spinlock({addr:#x}) spun for a very long time: is it held across a wait?"
                ));
            }
            std::hint::spin_loop();
            if spins % 1024 == 0 {
                thread::yield_now();
            }
        }
        self.with_cpu(|c| c.spinlocks.push(addr));
    }

    /// [`Kernel::release_spinlock`] of a lock that is not the last one this CPU took (or
    /// with more held than fit inline): forgotten and released if held here, else misused.
    #[cold]
    #[inline(never)]
    fn release_spinlock_slow(&self, lock_word: &AtomicI32) {
        let addr = lock_word as *const AtomicI32 as usize;
        if self.with_cpu(|c| c.spinlocks.remove(addr)) {
            lock_word.store(0, Ordering::Release);
        } else {
            self.release_spinlock_misused(lock_word);
        }
    }

    /// A `release_spinlock` of a lock this CPU does not hold: recorded, the lock untouched.
    #[cold]
    #[inline(never)]
    fn release_spinlock_misused(&self, lock_word: &AtomicI32) {
        let _sim = SimCode::enter();
        let addr = lock_word as *const AtomicI32 as usize;
        let what = if lock_word.load(Ordering::Relaxed) == 0 {
            "that is not held (released twice?)"
        } else {
            "held by another CPU"
        };
        self.record_failure(format!("release_spinlock({addr:#x}) of a spinlock {what}"));
    }

    fn wait_ended_forever(&self, what: String) -> Status {
        self.record_failure(format!(
            "{what} would block forever: no device event is pending and no simulated thread \
             is running that could end it"
        ));
        let n = self.with_cpu(|c| {
            c.endless_waits += 1;
            c.endless_waits
        });
        if n >= ENDLESS_WAIT_LIMIT {
            panic!("{what}: {n} endless waits in a row on this thread; the driver retries a wait that can never end");
        }
        Status(hd::B_BAD_SEM_ID)
    }
}

impl fmt::Debug for SimKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimKernel")
            .field("now", &self.inner.clock.now())
            .field("areas", &self.areas().len())
            .field("sems", &self.sems().len())
            .finish()
    }
}

/// Semaphores and interrupt state as the C ABI has them (plain ids and values): the
/// add-on's exports and the tests use these; the driver crate reaches them through the
/// `Kernel` trait's typed tokens.
impl SimKernel {
    /// `create_sem` as the C ABI has it: the id is a plain `sem_id`.
    pub fn create_sem(&self, count: i32, name: &str) -> KResult<i32> {
        let _sim = SimCode::enter();
        self.forbid_in_interrupt("create_sem (allocates)");
        if count < 0 {
            return Err(Status::BAD_VALUE);
        }
        {
            let mut f = lock(&self.inner.faults);
            match f.sem_after {
                Some(0) => {
                    f.sem_after = None;
                    return Err(Status(hd::B_NO_MORE_SEMS));
                }
                Some(n) => f.sem_after = Some(n - 1),
                None => {}
            }
        }
        self.inner
            .sems
            .create(count, name)
            .ok_or(Status(hd::B_NO_MORE_SEMS))
    }

    /// `delete_sem` of a plain `sem_id`.
    pub fn delete_sem(&self, sem: i32) {
        let _sim = SimCode::enter();
        self.forbid_in_interrupt("delete_sem");
        let existed = self.inner.sems.delete(sem);
        if !existed {
            self.record_failure(format!(
                "delete_sem({}) of a semaphore that does not exist (deleted twice?)",
                sem
            ));
        }
        // Waiters on it wake up and get B_BAD_SEM_ID.
        self.inner.clock.notify();
    }

    /// `acquire_sem_etc` of one unit of a plain `sem_id`, waiting at most `timeout_micros`
    /// (negative: for ever).
    pub fn acquire_sem(&self, sem: i32, timeout_micros: i64) -> KResult {
        self.cpu().acquire_sem(sem, timeout_micros)
    }

    /// [`Cpu::acquire_sem`] when no unit could be taken at once, or interrupts are disabled.
    #[cold]
    #[inline(never)]
    fn acquire_sem_slow(&self, sem: i32, timeout_micros: i64) -> KResult {
        let _sim = SimCode::enter();
        if self.interrupts_disabled() {
            let what = format!("acquire_sem({})", self.sem_name(sem));
            self.forbid_in_interrupt(&what);
            // Never block here: take it if it is free, as a KDEBUG-less kernel might get away
            // with, and otherwise fail instead of deadlocking the simulation.
            return self.try_take(sem).unwrap_or(Err(Status(hd::B_WOULD_BLOCK)));
        }
        if timeout_micros == 0 {
            if let Some(r) = self.try_take(sem) {
                return r;
            }
            // A poll that fails still costs a little time, so a polling loop terminates.
            self.inner.clock.advance_by(1);
            return Err(Status(hd::B_WOULD_BLOCK));
        }
        let clock = &self.inner.clock;
        let deadline = if timeout_micros < 0 || timeout_micros == hd::B_INFINITE_TIMEOUT {
            None
        } else {
            clock.now().checked_add(timeout_micros)
        };
        // Only a wait that blocks (the semaphore is not free) stalls.
        if let Some(d) =
            deadline.filter(|_| self.inner.stall.load(std::sync::atomic::Ordering::SeqCst) > 0)
        {
            if let Some(r) = self.try_take(sem) {
                return r;
            }
            let stall = self
                .inner
                .stall
                .swap(0, std::sync::atomic::Ordering::SeqCst);
            if stall > 0 {
                clock.freeze_for(stall);
                // The timer's interrupt comes first: the wait ends before the device's
                // interrupts that fell due are delivered.
                if clock.now() >= d {
                    return self.try_take(sem).unwrap_or(Err(Status::TIMED_OUT));
                }
            }
        }
        let r = match clock.wait(deadline, || self.try_take(sem)) {
            WaitOutcome::Ready(r) => r,
            WaitOutcome::TimedOut => {
                use std::sync::atomic::Ordering::SeqCst;
                let late = self
                    .inner
                    .slack_waits
                    .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if late {
                    clock.freeze_for(self.inner.slack.load(SeqCst));
                }
                Err(Status::TIMED_OUT)
            }
            WaitOutcome::Forever => {
                return Err(self.wait_ended_forever(format!("acquire_sem({})", self.sem_name(sem))))
            }
        };
        self.with_cpu(|c| c.endless_waits = 0);
        r
    }

    /// `release_sem_etc` of one unit of a plain `sem_id`.
    pub fn release_sem(&self, sem: i32, from_interrupt: bool) {
        let _sim = SimCode::enter();
        if !from_interrupt && self.interrupts_disabled() {
            self.forbid_in_interrupt(&format!(
                "release_sem({}) without B_DO_NOT_RESCHEDULE",
                self.sem_name(sem)
            ));
        }
        let released = self.inner.sems.update(sem, |c| Some(c.saturating_add(1)));
        if matches!(released, SemUpdate::Done) {
            self.inner.clock.notify();
        } else {
            self.record_failure(format!(
                "release_sem({}) of a semaphore that does not exist",
                sem
            ));
        }
    }

    /// `release_sem_etc` of `count` units ([`Cpu::release_sem_units`]).
    pub fn release_sem_units(&self, sem: i32, count: i32, from_interrupt: bool) -> KResult {
        self.cpu().release_sem_units(sem, count, from_interrupt)
    }

    /// A release that may reschedule with interrupts disabled: recorded.
    #[cold]
    #[inline(never)]
    fn release_sem_rescheduling(&self, sem: i32) {
        let _sim = SimCode::enter();
        self.forbid_in_interrupt(&format!(
            "release_sem({}) without B_DO_NOT_RESCHEDULE",
            self.sem_name(sem)
        ));
    }

    /// `disable_interrupts` as the C ABI has it ([`Cpu::disable_interrupts`]).
    pub fn disable_interrupts(&self) -> u64 {
        self.cpu().disable_interrupts()
    }

    /// `restore_interrupts` of a plain state value ([`Cpu::restore_interrupts`]).
    pub fn restore_interrupts(&self, state: u64) {
        self.cpu().restore_interrupts(state)
    }

    /// [`SimKernel::restore_interrupts`] when something is wrong: every misuse recorded, and
    /// the state set as asked anyway.
    #[cold]
    #[inline(never)]
    fn restore_interrupts_misused(&self, state: u64) {
        let _sim = SimCode::enter();
        let problems = self.with_cpu(|c| {
            let mut p = Vec::new();
            if state > 1 {
                p.push(format!(
                    "restore_interrupts({state}) with a state disable_interrupts never returned"
                ));
            }
            let enable = state != 0;
            if enable && !c.spinlocks.is_empty() {
                p.push(format!(
                    "interrupts re-enabled while holding {} spinlock(s)",
                    c.spinlocks.len()
                ));
            }
            if enable && c.in_interrupt > 0 {
                p.push("interrupts enabled inside an interrupt handler".to_owned());
            }
            c.interrupts_disabled = !enable;
            p
        });
        self.record_all(problems);
    }
}

/// The checks and bookkeeping of the calls every exchange makes, on one thread's CPU: each
/// touches the state once, and anything that records a misuse, waits or allocates is out
/// of line on the kernel (as the simulator's own work, [`SimCode`]).
impl<'k> Cpu<'k> {
    /// Runs `f` on the state. `f` must not lend it again: every closure passed here is in
    /// this file and only reads and writes the state (and the semaphore table).
    #[inline]
    fn with<R>(self, f: impl FnOnce(&mut CpuState) -> R) -> R {
        #[cfg(debug_assertions)]
        assert!(!self.cell.busy.replace(true), "Cpu::with re-entered");
        // SAFETY: the only reference to the state while `f` runs: the state is this
        // thread's alone (`Cpu` and `RawCpu` are not `Send`), `with` is its only way in, and
        // `f` does not call it again (see above).
        let r = f(unsafe { &mut *self.cell.state.get() });
        #[cfg(debug_assertions)]
        self.cell.busy.set(false);
        r
    }

    /// Kept for later calls on this thread ([`SimKernel::cpu_from_raw`]).
    pub fn raw(self) -> RawCpu {
        RawCpu {
            cell: NonNull::from(self.cell),
            key: self.kernel.inner.cpu_key,
        }
    }

    /// Whether interrupts are disabled on this CPU.
    #[inline]
    pub fn interrupts_disabled(self) -> bool {
        self.with(|c| c.interrupts_disabled)
    }

    /// Records `what` as a misuse if interrupts are disabled on this CPU; true if so. For
    /// kernel services that may block or allocate.
    #[inline]
    pub fn forbid_in_interrupt(self, what: &str) -> bool {
        let (disabled, in_irq) = self.with(|c| (c.interrupts_disabled, c.in_interrupt > 0));
        if disabled {
            self.kernel.forbidden(what, in_irq);
        }
        disabled
    }

    /// `disable_interrupts`: the previous state as a plain value (1 enabled, 0 disabled).
    #[inline]
    pub fn disable_interrupts(self) -> u64 {
        self.with(|c| {
            let was_enabled = !c.interrupts_disabled;
            c.interrupts_disabled = true;
            u64::from(was_enabled)
        })
    }

    /// `restore_interrupts` of a plain state value: anything but 0 or 1, and enabling while
    /// holding a spinlock or inside an interrupt handler, is recorded.
    #[inline]
    pub fn restore_interrupts(self, state: u64) {
        let fine = self.with(|c| {
            let enable = state != 0;
            let fine = state <= 1 && !(enable && (!c.spinlocks.is_empty() || c.in_interrupt > 0));
            if fine {
                c.interrupts_disabled = !enable;
            }
            fine
        });
        if !fine {
            self.kernel.restore_interrupts_misused(state);
        }
    }

    /// [`Kernel::acquire_spinlock`]: the common case (interrupts off, not held here, free)
    /// in one look at the state; anything else out of line.
    #[inline]
    pub fn acquire_spinlock(self, lock_word: &AtomicI32) {
        let addr = lock_word as *const AtomicI32 as usize;
        let taken = self.with(|c| {
            // A note that does not fit inline allocates: the slow path does that as the
            // simulator's own work, not an interrupt handler's.
            let held = &mut c.spinlocks;
            let n = held.n;
            let taken = c.interrupts_disabled
                && n < HELD_INLINE
                && !held.inline[..n].contains(&addr)
                && lock_word
                    .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok();
            if taken {
                held.inline[n] = addr;
                held.n = n + 1;
            }
            taken
        });
        if !taken {
            self.kernel.acquire_spinlock_slow(lock_word);
        }
    }

    /// [`Kernel::release_spinlock`]: a lock this CPU does not hold is recorded and left alone.
    #[inline]
    pub fn release_spinlock(self, lock_word: &AtomicI32) {
        let addr = lock_word as *const AtomicI32 as usize;
        // Locks are released in the reverse order of taking, nearly always: the last one
        // taken, with no more held than fit inline, is forgotten here, anything else out of
        // line.
        let last = self.with(|c| {
            let held = &mut c.spinlocks;
            let n = held.n;
            let last =
                held.more.is_empty() && n > 0 && n <= HELD_INLINE && held.inline[n - 1] == addr;
            if last {
                held.n = n - 1;
            }
            last
        });
        if !last {
            self.kernel.release_spinlock_slow(lock_word);
            return;
        }
        lock_word.store(0, Ordering::Release);
    }

    /// `system_time()` as a poll ([`SimKernel::busy_poll`] with [`Poll::Clock`]): the time
    /// after it, read once when the caller is not spinning.
    #[inline]
    pub fn poll_clock(self) -> i64 {
        // A clock that follows the host's moves by itself: out of line.
        let Some(now) = self.kernel.inner.clock.simulated_now() else {
            return self.kernel.poll_clock_slow();
        };
        if self.with(|c| {
            // What `busy_poll` does when the caller is not spinning; the rest is left to it.
            if c.interrupts_disabled {
                return true;
            }
            if c.spin.advanced_to == Some(now) {
                return false;
            }
            if c.spin.at == now {
                if c.spin.count >= SPIN_POLLS - 1 {
                    return false;
                }
                c.spin.count += 1;
                return true;
            }
            c.spin = Spin {
                at: now,
                count: 1,
                ..Spin::default()
            };
            true
        }) {
            return now;
        }
        self.kernel.poll_clock_slow()
    }

    /// A poll that found nothing new ([`SimKernel::busy_poll`]): counted here while the
    /// caller is not spinning, out of line once it is.
    #[inline]
    pub fn poll_missed(self, poll: Poll) -> Result<(), String> {
        let now = self.kernel.inner.clock.now();
        let spinning = self.with(|c| {
            if c.interrupts_disabled {
                return false;
            }
            if c.spin.advanced_to == Some(now) {
                return true;
            }
            if c.spin.at == now {
                c.spin.count = c.spin.count.saturating_add(1);
            } else {
                c.spin = Spin {
                    at: now,
                    count: 1,
                    ..Spin::default()
                };
            }
            if c.spin.count < SPIN_POLLS {
                return false;
            }
            c.spin.since = now;
            c.spin.idle_steps = 0;
            true
        });
        if !spinning {
            return Ok(());
        }
        self.kernel.busy_poll_spinning(poll, now)
    }

    /// A queue poll found something: the caller's spin, if any, is over.
    #[inline]
    pub fn poll_succeeded(self) {
        self.with(|c| c.spin = Spin::default());
    }

    /// `acquire_sem_etc` of one unit of a plain `sem_id`, waiting at most `timeout_micros`
    /// (negative: for ever; 0: a poll): [`Cpu::take_sem_at_once`], else the waiting way.
    #[inline]
    pub fn acquire_sem(self, sem: i32, timeout_micros: i64) -> KResult {
        match self.take_sem_at_once(sem, timeout_micros != 0) {
            Some(r) => r,
            None => self.kernel.acquire_sem_slow(sem, timeout_micros),
        }
    }

    /// The start of every `acquire_sem`: with interrupts enabled, a unit that is there is
    /// taken at once and a semaphore that does not exist is `Err(BAD_SEM_ID)`, without the
    /// clock (and, if the caller would have waited, `waits`, the run of endless waits on
    /// this CPU ends, as after any wait). `None` otherwise: the caller takes the waiting
    /// way, which also makes the checks for interrupts disabled.
    #[inline]
    pub fn take_sem_at_once(self, sem: i32, waits: bool) -> Option<KResult> {
        let sems = &self.kernel.inner.sems;
        self.with(|c| {
            if c.interrupts_disabled {
                return None;
            }
            let r = match sems.update(sem, |n| (n > 0).then(|| n - 1)) {
                SemUpdate::Done => Ok(()),
                SemUpdate::Gone => Err(Status(hd::B_BAD_SEM_ID)),
                SemUpdate::Declined => return None,
            };
            if waits {
                c.endless_waits = 0;
            }
            Some(r)
        })
    }

    /// `release_sem_etc` of `count` (at least 1) units of a plain `sem_id`, found once:
    /// `Err(BAD_SEM_ID)` if it does not exist (not recorded: the caller's status says it),
    /// else the checks of [`SimKernel::release_sem`] and one wake-up for all the units.
    #[inline]
    pub fn release_sem_units(self, sem: i32, count: i32, from_interrupt: bool) -> KResult {
        let units = count.max(1);
        let released = self
            .kernel
            .inner
            .sems
            .update(sem, |c| Some(c.saturating_add(units)));
        if !matches!(released, SemUpdate::Done) {
            return Err(Status(hd::B_BAD_SEM_ID));
        }
        if !from_interrupt && self.interrupts_disabled() {
            self.kernel.release_sem_rescheduling(sem);
        }
        self.kernel.inner.clock.notify();
        Ok(())
    }
}

// SAFETY: the implementation upholds the trait's contract:
// - `create_area` carves the area from the arena in `memory`, which is never moved, is zeroed
//   on creation, and is freed only when no area is live (even after the kernel is dropped), so
//   `addr .. addr + size` stays valid until `delete_area`; the device model reaches it only by
//   physical address, under the area table lock.
// - `acquire_spinlock`/`release_spinlock` are a real test-and-set lock on the caller's atomic
//   with acquire/release ordering, so they give mutual exclusion across threads.
// - `copy_from_user`/`copy_to_user` never touch host memory at the user address: user memory
//   is a table of host buffers, and an address outside it is `Err(BAD_ADDRESS)`.
unsafe impl Kernel for SimKernel {
    fn system_time(&self) -> i64 {
        self.inner.clock.now()
    }

    fn snooze(&self, micros: i64) {
        let _sim = SimCode::enter();
        if self.forbid_in_interrupt("snooze") {
            return;
        }
        if micros <= 0 {
            return;
        }
        let clock = &self.inner.clock;
        let deadline = clock.now().saturating_add(micros);
        let _ = clock.wait(Some(deadline), || None::<()>);
    }

    fn log(&self, level: LogLevel, message: fmt::Arguments<'_>) {
        let _sim = SimCode::enter();
        let record = LogRecord {
            time: self.inner.clock.now(),
            level,
            message: message.to_string(),
        };
        if self.inner.echo {
            eprintln!("[{:>12} µs] {:?}: {}", record.time, level, record.message);
        }
        lock(&self.inner.log).push(record);
    }

    fn create_sem(&self, count: i32, name: &str) -> KResult<SemId> {
        let id = SimKernel::create_sem(self, count, name)?;
        // SAFETY: the id was created just now and is wrapped once.
        Ok(unsafe { SemId::from_raw(id) })
    }

    fn delete_sem(&self, sem: SemId) {
        SimKernel::delete_sem(self, sem.raw())
    }

    fn acquire_sem(&self, sem: &SemId, timeout_micros: i64) -> KResult {
        SimKernel::acquire_sem(self, sem.raw(), timeout_micros)
    }

    fn release_sem(&self, sem: &SemId, from_interrupt: bool) {
        SimKernel::release_sem(self, sem.raw(), from_interrupt)
    }

    fn disable_interrupts(&self) -> InterruptState {
        let state = SimKernel::disable_interrupts(self);
        // SAFETY: the state this CPU just saved, made into a token once.
        unsafe { InterruptState::from_raw(state) }
    }

    fn restore_interrupts(&self, state: InterruptState) {
        SimKernel::restore_interrupts(self, state.into_raw())
    }

    #[inline]
    fn acquire_spinlock(&self, lock_word: &AtomicI32) {
        self.cpu().acquire_spinlock(lock_word)
    }

    #[inline]
    fn release_spinlock(&self, lock_word: &AtomicI32) {
        self.cpu().release_spinlock(lock_word)
    }

    fn create_area(&self, name: &str, size: usize, user: bool) -> KResult<Area> {
        let _sim = SimCode::enter();
        self.forbid_in_interrupt(&format!("create_area({name:?}) (allocates)"));
        {
            let mut f = lock(&self.inner.faults);
            match f.area_after {
                Some(0) => {
                    f.area_after = None;
                    return Err(Status::NO_MEMORY);
                }
                Some(n) => f.area_after = Some(n - 1),
                None => {}
            }
        }
        if size == 0 || size % PAGE_SIZE != 0 {
            self.log(
                LogLevel::Warn,
                format_args!("[sim] create_area({name:?}, {size}): size is not a page multiple"),
            );
            return Err(Status::BAD_VALUE);
        }
        self.inner.memory.create(name, size, user)
    }

    unsafe fn delete_area(&self, area: &Area) {
        SimKernel::delete_area(self, area)
    }

    fn copy_from_user(&self, dst: &mut [u8], src: u64) -> KResult {
        let _sim = SimCode::enter();
        self.forbid_in_interrupt("user_memcpy");
        self.try_user_read(src, dst)
    }

    fn copy_to_user(&self, dst: u64, src: &[u8]) -> KResult {
        let _sim = SimCode::enter();
        self.forbid_in_interrupt("user_memcpy");
        self.try_user_write(dst, src)
    }

    fn user_memset(&self, dst: u64, value: u8, len: usize) -> KResult {
        let _sim = SimCode::enter();
        self.forbid_in_interrupt("user_memset");
        if dst.checked_add(len as u64).is_none() {
            return Err(Status::BAD_ADDRESS);
        }
        let bytes = vec![value; len];
        // Client memory, or a user-visible area (Haiku's user_memset reaches both; a
        // kernel-only area is not something the driver has a reason to memset this way).
        if self.is_user_address(dst) {
            self.try_user_write(dst, &bytes)
        } else {
            self.area_user_write(dst, &bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_slack_makes_the_next_timeouts_late() {
        let k = SimKernel::new();
        let s = k.create_sem(0, "s").unwrap();
        k.set_timer_slack(250, 2);
        for _ in 0..2 {
            let t = k.system_time();
            assert_eq!(k.acquire_sem(s, 1000), Err(Status::TIMED_OUT));
            assert_eq!(k.system_time(), t + 1250, "1000 µs asked, 250 late");
        }
        let t = k.system_time();
        assert_eq!(k.acquire_sem(s, 1000), Err(Status::TIMED_OUT));
        assert_eq!(k.system_time(), t + 1000, "only two waits were late");
        // A wait that is satisfied is not made late.
        k.set_timer_slack(250, 5);
        k.release_sem(s, false);
        let t = k.system_time();
        assert_eq!(k.acquire_sem(s, 1000), Ok(()));
        assert_eq!(k.system_time(), t);
        k.delete_sem(s);
        k.assert_clean();
    }

    #[test]
    fn semaphores_count_and_time_out_in_simulated_time() {
        let k = SimKernel::new();
        let s = k.create_sem(1, "s").unwrap();
        let t0 = k.system_time();
        assert_eq!(k.acquire_sem(s, -1), Ok(()));
        assert_eq!(k.acquire_sem(s, 1000), Err(Status::TIMED_OUT));
        assert_eq!(k.system_time(), t0 + 1000);
        assert_eq!(k.acquire_sem(s, 0), Err(Status(hd::B_WOULD_BLOCK)));
        k.release_sem(s, false);
        assert_eq!(k.acquire_sem(s, 0), Ok(()));
        k.delete_sem(s);
        assert_eq!(k.acquire_sem(s, 10), Err(Status(hd::B_BAD_SEM_ID)));
        k.assert_clean();
    }

    #[test]
    fn an_endless_wait_fails_instead_of_hanging() {
        let k = SimKernel::new();
        let s = k.create_sem(0, "never").unwrap();
        assert!(k.acquire_sem(s, -1).is_err());
        let f = k.take_failures();
        assert!(f[0].contains("would block forever"), "{f:?}");
        k.delete_sem(s);
        k.assert_clean();
    }

    #[test]
    fn semaphore_ids_share_slots_without_touching_each_other() {
        let k = SimKernel::new();
        let a = k.create_sem(2, "a").unwrap();
        assert_eq!(a, 1, "ids start at 1");
        k.delete_sem(a);
        // Fill every slot but one with semaphores, then wrap around to `a`'s slot: the id
        // after them lands there, and the dead id `a` does not reach it.
        let held: Vec<i32> = (0..SEM_SLOTS as i32 - 1)
            .map(|i| k.create_sem(i, "h").unwrap())
            .collect();
        assert_eq!(held[0], 2);
        let b = k.create_sem(5, "b").unwrap();
        assert_eq!(b, 1 + SEM_SLOTS as i32, "the next id, in the one free slot");
        assert_eq!(k.sem_count(a), None);
        assert_eq!(k.acquire_sem(a, 0), Err(Status(hd::B_BAD_SEM_ID)));
        k.release_sem(a, false);
        assert_eq!(
            k.take_failures().len(),
            1,
            "releasing the dead id is recorded"
        );
        assert_eq!(k.sem_count(b), Some(5), "untouched by the dead id");
        assert_eq!(k.create_sem(0, "full"), Err(Status(hd::B_NO_MORE_SEMS)));
        assert_eq!(k.sem_count(held[7]), Some(7));
        assert_eq!(k.sems().len(), SEM_SLOTS);
        assert_eq!(k.sems()[0].name, "h");
        for id in held.into_iter().chain([b]) {
            k.delete_sem(id);
        }
        assert!(k.sem_count(-3).is_none() && k.sem_count(0).is_none());
        k.assert_clean();
    }

    #[test]
    fn a_release_with_no_waiter_is_seen_by_the_next_wait() {
        // Nobody waits, so the release wakes nobody; a thread that waits afterwards, or
        // is entering its wait meanwhile, still finds the unit.
        for _ in 0..40 {
            let k = SimKernel::new();
            let s = k.create_sem(0, "s").unwrap();
            let k2 = k.clone();
            let t = k.spawn("taker", move || k2.acquire_sem(s, -1));
            k.release_sem(s, false);
            assert_eq!(t.join(), Ok(()));
            k.delete_sem(s);
            k.assert_clean();
        }
    }

    #[test]
    fn misuse_is_recorded() {
        let k = SimKernel::new();
        let word = AtomicI32::new(0);
        k.acquire_spinlock(&word); // interrupts still enabled
        k.release_spinlock(&word);
        k.release_spinlock(&word); // twice
        let st = k.disable_interrupts();
        let s = k.create_sem(0, "x").unwrap(); // allocating with interrupts off
        assert!(k.acquire_sem(s, 100).is_err()); // blocking with interrupts off
        k.release_sem(s, false); // may reschedule with interrupts off
        k.restore_interrupts(st);
        k.delete_sem(s);
        k.delete_sem(s); // twice
        let f = k.take_failures();
        assert_eq!(f.len(), 6, "{f:#?}");
        k.assert_clean();
    }

    #[test]
    fn a_well_behaved_lock_sequence_is_clean() {
        let k = SimKernel::new();
        let word = AtomicI32::new(0);
        let st = k.disable_interrupts();
        k.acquire_spinlock(&word);
        k.release_spinlock(&word);
        k.restore_interrupts(st);
        k.run_in_interrupt(|| {
            let st = k.disable_interrupts();
            assert_eq!(st, 0);
            k.acquire_spinlock(&word);
            k.release_spinlock(&word);
            k.restore_interrupts(st);
        });
        k.assert_clean();
    }

    #[test]
    fn areas_leak_and_user_copies_are_checked() {
        let k = SimKernel::new();
        let a = k.create_area("buf", 8192, true).unwrap();
        assert!(k.create_area("odd", 100, false).is_err());
        k.area_user_write(a.addr + 8190, &[1, 2]).unwrap();
        assert!(k.area_user_write(a.addr + 8191, &[1, 2]).is_err());
        let mut two = [0u8; 2];
        k.phys_memory().read(a.phys + 8190, &mut two).unwrap();
        assert_eq!(two, [1, 2]);
        let u = k.user_alloc(16);
        k.user_write(u, b"abcd");
        let mut got = [0u8; 4];
        k.copy_from_user(&mut got, u).unwrap();
        assert_eq!(&got, b"abcd");
        assert_eq!(k.copy_to_user(0, b"x"), Err(Status::BAD_ADDRESS));
        assert_eq!(k.copy_to_user(a.addr, b"x"), Err(Status::BAD_ADDRESS));
        let report = k.check_clean().unwrap_err();
        assert_eq!(report.len(), 2, "{report:#?}");
        k.delete_area(&a);
        k.user_free(u);
        k.fail_create_area_after(0);
        assert_eq!(k.create_area("x", 4096, false), Err(Status::NO_MEMORY));
        k.assert_clean();
    }

    #[test]
    fn a_kept_cpu_is_the_threads_state_with_every_check() {
        let k = SimKernel::new();
        let other = SimKernel::new();
        let raw = k.cpu().raw();
        // Another kernel on the same thread has a state of its own.
        let _ = other.disable_interrupts();
        // SAFETY: taken just now from `k` on this thread.
        let cpu = unsafe { k.cpu_from_raw(raw) };
        assert!(!cpu.interrupts_disabled(), "not the other kernel's state");
        let st = cpu.disable_interrupts();
        assert_eq!(st, 1);
        assert!(
            k.interrupts_disabled(),
            "the kernel sees what the kept CPU did"
        );
        // Five locks (one past the inline ones), released out of order and in order.
        let words: Vec<AtomicI32> = (0..5).map(|_| AtomicI32::new(0)).collect();
        for w in &words {
            cpu.acquire_spinlock(w);
            assert_eq!(w.load(Ordering::Relaxed), 1);
        }
        cpu.release_spinlock(&words[1]);
        for i in [4, 3, 2, 0] {
            cpu.release_spinlock(&words[i]);
        }
        assert!(words.iter().all(|w| w.load(Ordering::Relaxed) == 0));
        assert!(k.take_failures().is_empty());
        // The misuses the fast paths hand on: a lock taken twice, one released unheld,
        // interrupts enabled while holding one.
        cpu.acquire_spinlock(&words[0]);
        cpu.acquire_spinlock(&words[0]);
        cpu.release_spinlock(&words[1]);
        cpu.restore_interrupts(st);
        let f = k.take_failures();
        assert_eq!(f.len(), 3, "{f:#?}");
        assert!(f[0].contains("already holds"), "{f:#?}");
        assert!(f[1].contains("not held"), "{f:#?}");
        assert!(f[2].contains("while holding 1 spinlock"), "{f:#?}");
        let st = cpu.disable_interrupts();
        cpu.release_spinlock(&words[0]);
        cpu.restore_interrupts(st);
        assert!(!k.interrupts_disabled());
        other.restore_interrupts(1);
        k.assert_clean();
        other.assert_clean();
    }

    #[test]
    fn a_unit_that_is_there_is_taken_without_time_passing() {
        let k = SimKernel::new();
        let s = k.create_sem(2, "two").unwrap();
        let t0 = k.clock().now();
        assert_eq!(k.cpu().take_sem_at_once(s, true), Some(Ok(())));
        assert_eq!(k.acquire_sem(s, 0), Ok(()), "a poll takes the second");
        assert_eq!(
            k.cpu().take_sem_at_once(s, true),
            None,
            "none left: the caller waits"
        );
        assert_eq!(k.clock().now(), t0);
        assert_eq!(
            k.cpu().take_sem_at_once(s + 1, true),
            Some(Err(Status(hd::B_BAD_SEM_ID)))
        );
        // With interrupts disabled nothing is taken at once: the waiting way records it.
        k.release_sem(s, false);
        let st = k.disable_interrupts();
        assert_eq!(k.cpu().take_sem_at_once(s, true), None);
        assert_eq!(k.acquire_sem(s, 100), Ok(()));
        k.restore_interrupts(st);
        let f = k.take_failures();
        assert_eq!(f.len(), 1, "{f:#?}");
        assert!(f[0].contains("with interrupts disabled"), "{f:#?}");
        k.delete_sem(s);
        k.assert_clean();
    }

    #[test]
    fn held_spinlocks_keep_their_order_past_the_inline_ones() {
        let mut h = Held::default();
        for a in 1..=7 {
            h.push(a);
        }
        assert_eq!(h.len(), 7);
        assert!(h.contains(6) && h.contains(2) && !h.contains(8));
        assert!(h.remove(2), "from the middle of the inline ones");
        assert!(h.remove(6), "from the overflow");
        assert!(!h.remove(6), "only once");
        assert!(h.remove(7) && h.remove(5), "last taken first");
        assert_eq!(h.len(), 3);
        for a in [4, 3, 1] {
            assert!(h.remove(a), "{a}");
        }
        assert!(h.is_empty() && !h.contains(1) && !h.remove(1));
    }

    #[test]
    fn logs_are_captured() {
        let k = SimKernel::new();
        k.log(LogLevel::Info, format_args!("hello {}", 42));
        assert!(k.log_contains("hello 42"));
        assert_eq!(k.log_lines(), vec!["Info: hello 42".to_owned()]);
    }
}
