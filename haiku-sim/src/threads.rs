//! Kernel threads and timers for the add-on, on the simulated clock.
//!
//! A thread from `spawn_kernel_thread` starts suspended; `resume_thread` runs it as a
//! simulated thread ([`sim_kernel::SimKernel::spawn`]), so simulated time waits for it like for
//! any other participant, and `wait_for_thread` joins it in simulated time. A timer from
//! `add_timer` is an event source on the clock: its hook runs at its simulated time, inside
//! `run_in_interrupt` (timer hooks run in interrupt context on Haiku).

use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, ThreadId};

use platform::Kernel;
use spec::haiku_driver::{self as hd, status_t, thread_func, thread_id, timer_hook, Timer};

use super::{current, Core};
use sim_kernel::clock::{EventSource, SimThread};
use sim_kernel::memory::SimCode;
use sim_kernel::report::lock;
use sim_kernel::SimKernel;

/// A C function pointer and argument handed to another thread.
struct Entry {
    function: unsafe extern "C" fn(*mut c_void) -> status_t,
    arg: *mut c_void,
}

// SAFETY: `spawn_kernel_thread`'s contract: the function may run on another thread with
// its argument; the simulator only moves the pair there.
unsafe impl Send for Entry {}

enum State {
    Suspended(Entry),
    Running(SimThread<status_t>),
    /// Being joined by some `wait_for_thread`.
    Joining,
}

struct ThreadRecord {
    name: String,
    state: State,
    done: Arc<AtomicBool>,
}

#[derive(Default)]
struct Table {
    next: thread_id,
    host: HashMap<ThreadId, thread_id>,
    spawned: HashMap<thread_id, ThreadRecord>,
}

#[derive(Default)]
pub(crate) struct Threads {
    table: Mutex<Table>,
}

impl Threads {
    fn next_id(t: &mut Table) -> thread_id {
        t.next += 1;
        t.next
    }

    /// The id of the calling host thread, handing it one the first time.
    pub(crate) fn current_id(&self) -> thread_id {
        let mut t = lock(&self.table);
        let me = thread::current().id();
        if let Some(&id) = t.host.get(&me) {
            return id;
        }
        let id = Self::next_id(&mut t);
        t.host.insert(me, id);
        id
    }

    pub(crate) fn find(&self, name: &str) -> thread_id {
        lock(&self.table)
            .spawned
            .iter()
            .find(|(_, r)| r.name == name)
            .map_or(hd::B_NAME_NOT_FOUND, |(&id, _)| id)
    }

    pub(crate) fn spawn(&self, function: thread_func, name: String, arg: *mut c_void) -> thread_id {
        let Some(function) = function else {
            return hd::B_BAD_VALUE;
        };
        let mut t = lock(&self.table);
        let id = Self::next_id(&mut t);
        t.spawned.insert(
            id,
            ThreadRecord {
                name,
                state: State::Suspended(Entry { function, arg }),
                done: Arc::new(AtomicBool::new(false)),
            },
        );
        id
    }

    pub(crate) fn resume(&self, core: &Arc<Core>, id: thread_id) -> status_t {
        let mut t = lock(&self.table);
        let Some(rec) = t.spawned.get_mut(&id) else {
            return hd::B_BAD_THREAD_ID;
        };
        let State::Suspended(_) = rec.state else {
            // Resuming a running thread is harmless on Haiku.
            return hd::B_OK;
        };
        let State::Suspended(entry) = std::mem::replace(&mut rec.state, State::Joining) else {
            unreachable!("checked above")
        };
        let done = rec.done.clone();
        let name = rec.name.clone();
        let weak: Weak<Core> = Arc::downgrade(core);
        let handle = core.kernel.spawn(&name, move || {
            if let Some(core) = weak.upgrade() {
                lock(&core.threads.table)
                    .host
                    .insert(thread::current().id(), id);
            }
            let entry = entry;
            // SAFETY: the add-on's thread function with its own argument, as it asked.
            let r = unsafe { (entry.function)(entry.arg) };
            done.store(true, Ordering::SeqCst);
            r
        });
        rec.state = State::Running(handle);
        hd::B_OK
    }

    /// Waits for a thread (resuming it first if it is still suspended, as Haiku does).
    pub(crate) fn wait(&self, core: &Arc<Core>, id: thread_id) -> Result<status_t, status_t> {
        let suspended = matches!(
            lock(&self.table).spawned.get(&id).map(|r| &r.state),
            Some(State::Suspended(_))
        );
        if suspended {
            self.resume(core, id);
        }
        let handle = {
            let mut t = lock(&self.table);
            let Some(rec) = t.spawned.get_mut(&id) else {
                return Err(hd::B_BAD_THREAD_ID);
            };
            match std::mem::replace(&mut rec.state, State::Joining) {
                State::Running(h) => h,
                other => {
                    rec.state = other;
                    return Err(hd::B_BAD_THREAD_ID);
                }
            }
        };
        let r = handle.join();
        lock(&self.table).spawned.remove(&id);
        Ok(r)
    }

    /// Threads that were spawned and never finished (or never started).
    pub(crate) fn unfinished(&self) -> Vec<String> {
        lock(&self.table)
            .spawned
            .iter()
            .filter(|(_, r)| !r.done.load(Ordering::SeqCst))
            .map(|(id, r)| {
                let what = match r.state {
                    State::Suspended(_) => "was never resumed",
                    _ => "is still running",
                };
                format!("kernel thread {id} {:?} {what}", r.name)
            })
            .collect()
    }
}

// ---- timers ----

struct Armed {
    timer: usize,
    hook: unsafe extern "C" fn(*mut Timer) -> i32,
    due: i64,
    /// Zero for a one-shot timer.
    period: i64,
}

#[derive(Default)]
struct TimerTable {
    armed: Vec<Armed>,
    fired: HashSet<usize>,
}

/// The add-on's armed timers: an event source on the simulated clock.
pub(crate) struct Timers {
    kernel: SimKernel,
    table: Mutex<TimerTable>,
}

impl Timers {
    pub(crate) fn new(kernel: SimKernel) -> Arc<Timers> {
        let timers = Arc::new(Timers {
            kernel: kernel.clone(),
            table: Mutex::new(TimerTable::default()),
        });
        let source: Arc<dyn EventSource> = timers.clone();
        kernel.clock().add_source(Arc::downgrade(&source));
        timers
    }

    /// `add_timer`.
    ///
    /// # Safety
    ///
    /// `event` is NULL or a timer that stays valid until it fires or is cancelled.
    pub(crate) unsafe fn add(
        &self,
        core: &Core,
        event: *mut Timer,
        hook: timer_hook,
        period: i64,
        mode: i32,
    ) -> status_t {
        let Some(hook) = hook else {
            return hd::B_BAD_VALUE;
        };
        if event.is_null() {
            return hd::B_BAD_VALUE;
        }
        let now = self.kernel.system_time();
        let (due, repeat) = match mode {
            hd::B_ONE_SHOT_ABSOLUTE_TIMER => (period, 0),
            hd::B_ONE_SHOT_RELATIVE_TIMER => (now.saturating_add(period.max(0)), 0),
            hd::B_PERIODIC_TIMER if period > 0 => (now.saturating_add(period), period),
            _ => return hd::B_BAD_VALUE,
        };
        let mut t = lock(&self.table);
        if t.armed.iter().any(|a| a.timer == event as usize) {
            drop(t);
            core.record(format!(
                "add_timer({:#x}) of a timer that is already armed (Haiku's timer queue \
                 would be corrupted)",
                event as usize
            ));
            return hd::B_BAD_VALUE;
        }
        // SAFETY: the caller's timer; these are the kernel-owned fields Haiku fills in.
        unsafe {
            (*event).schedule_time = due;
            (*event).hook = Some(hook);
            (*event).period = repeat;
            (*event).flags = mode as u16;
        }
        t.fired.remove(&(event as usize));
        t.armed.push(Armed {
            timer: event as usize,
            hook,
            due,
            period: repeat,
        });
        drop(t);
        self.kernel.clock().notify();
        hd::B_OK
    }

    /// `cancel_timer`: true if the timer had already fired.
    pub(crate) fn cancel(&self, event: *mut Timer) -> bool {
        let mut t = lock(&self.table);
        let before = t.armed.len();
        t.armed.retain(|a| a.timer != event as usize);
        if t.armed.len() != before {
            return false;
        }
        t.fired.contains(&(event as usize))
    }

    /// Timers still armed; they are disarmed (the add-on is going away).
    pub(crate) fn disarm_all(&self) -> Vec<String> {
        let mut t = lock(&self.table);
        t.armed
            .drain(..)
            .map(|a| {
                format!(
                    "timer {:#x} was still armed (due at {} µs): Haiku would call its hook in an \
                     unloaded add-on",
                    a.timer, a.due
                )
            })
            .collect()
    }
}

impl EventSource for Timers {
    fn next_event(&self) -> Option<i64> {
        lock(&self.table).armed.iter().map(|a| a.due).min()
    }

    fn run_due(&self, now: i64) {
        loop {
            let fire = {
                let _sim = SimCode::enter();
                let mut t = lock(&self.table);
                let Some(i) = t.armed.iter().position(|a| a.due <= now) else {
                    return;
                };
                let a = t.armed.remove(i);
                if a.period > 0 {
                    t.armed.push(Armed {
                        due: a.due + a.period,
                        ..a
                    });
                } else {
                    t.fired.insert(a.timer);
                }
                (a.timer, a.hook)
            };
            if current().is_none() {
                return;
            }
            let (timer, hook) = fire;
            // SAFETY: the add-on's hook with the timer it armed, which stays valid until it
            // fires or is cancelled (add_timer's contract).
            self.kernel
                .run_in_interrupt(|| unsafe { hook(timer as *mut Timer) });
        }
    }
}
