//! Simulated time, shared by the kernel and the device model.
//!
//! Audio drivers are all about time: periods complete at the stream's rate, control requests
//! time out, BUFFER_EXCHANGE waits. Real time would make tests slow and flaky, so time here is
//! a counter of microseconds that moves only when every thread that takes part in the
//! simulation is waiting (in `acquire_sem` with a timeout, `snooze`, or joining another
//! simulated thread). The last thread to block becomes the one that moves time: it jumps
//! straight to the earliest thing that can happen (a device event or a waiter's deadline),
//! runs the device events due then (which deliver virtio interrupts into the driver, which
//! release semaphores), and lets every waiter look again. A test therefore runs as fast as the
//! host can execute it, and the same inputs always give the same simulated timestamps.
//!
//! Device models plug in as [`EventSource`]s. They are polled, not pushed: a source answers
//! "when is your next event?" from its own state, which keeps a model's timing rules (a period
//! ends when its last frame has been consumed) in one place instead of in a timer queue.
//!
//! A clock can also follow real time ([`Clock::real_time`]): then `now` is the host's
//! monotonic clock, waits are real waits with real deadlines, and event sources are never
//! polled. That is the mode for a real device (QEMU's, driven from a Linux guest), whose
//! completions arrive from a polling thread whenever the device gets to them.
//!
//! Single-threaded use (a test calling the driver, which waits in the kernel) is the common
//! case and needs nothing special. Extra threads must be started with [`Clock::spawn`] (or
//! `SimKernel::spawn`), so the clock knows they might still release a semaphore and does not
//! move time while they run.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crate::report::{lock, FailureLog};

/// Where simulated time starts: one second after "boot", so that timestamps near zero in a
/// driver (an uninitialised time) stand out.
pub const DEFAULT_START: i64 = 1_000_000;

/// Real time a waiter tolerates without anything happening in the simulation.
const STALL: Duration = Duration::from_secs(20);

/// How many rounds of events one instant may hold before the clock calls it a livelock.
const ROUNDS_PER_INSTANT: usize = 100_000;

/// Something that has work to do at simulated times: the device model.
///
/// Both methods are called without any clock lock held, but a source must never wait for
/// another thread, and its `next_event` must not block on anything a `run_due` of another
/// source might hold.
pub trait EventSource: Send + Sync {
    /// The earliest time (µs) at which the source has something to do; `None` if nothing is
    /// pending. A time at or before now means "as soon as time is allowed to move".
    fn next_event(&self) -> Option<i64>;
    /// Runs everything due at or before `now`. This is where interrupts get delivered.
    fn run_due(&self, now: i64);
}

/// How a [`Clock::wait`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitOutcome<T> {
    /// The condition became true; its value.
    Ready(T),
    /// The deadline passed first.
    TimedOut,
    /// Nothing could ever make the condition true: no device event is pending, no waiter has
    /// a deadline, and no simulated thread is running.
    Forever,
}

struct Waiter {
    deadline: Option<i64>,
    /// The `Sched::gen` this waiter last evaluated its condition at.
    seen_gen: u64,
}

struct Sched {
    participants: HashSet<ThreadId>,
    /// Participants not currently blocked in a simulated wait.
    active: usize,
    /// Bumped by everything that may make some waiter's condition true; time moves only when
    /// every waiter has looked at the current value.
    gen: u64,
    waiters: BTreeMap<u64, Waiter>,
    next_waiter: u64,
    /// A thread is stepping time (without the lock held).
    advancing: bool,
    /// Waiters found stuck forever; each leaves with `Forever` when it next looks.
    doomed: HashSet<u64>,
}

thread_local! {
    /// The clock whose [`Clock::step`] this thread is running events of, if any.
    static STEPPING: Cell<*const Inner> = const { Cell::new(std::ptr::null()) };
}

/// Counts a thread in [`Inner::waiting`] for as long as it is inside [`Clock::wait`].
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Inner {
    now: AtomicI64,
    /// Threads inside [`Clock::wait`] (see [`Clock::notify`]).
    waiting: AtomicUsize,
    sched: Mutex<Sched>,
    cv: Condvar,
    sources: Mutex<Vec<Weak<dyn EventSource>>>,
    failures: FailureLog,
    /// Set when a source livelocked; its events are ignored from then on.
    wedged: AtomicBool,
    /// Real-time mode: the instant that stands for `start`.
    real: Option<(Instant, i64)>,
}

/// A handle to the simulated clock; clones share it.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

impl Clock {
    /// A clock at `start` µs whose only participant is the calling thread.
    pub fn new(start: i64) -> Clock {
        Clock::with_failures(start, FailureLog::new())
    }

    /// As [`Clock::new`], recording livelocks into `failures`.
    pub fn with_failures(start: i64, failures: FailureLog) -> Clock {
        Clock::build(start, failures, None)
    }

    /// A clock that follows the host's monotonic clock from `start` µs on: time passes on
    /// its own, waits block for real, and event sources are not used.
    pub fn real_time(start: i64, failures: FailureLog) -> Clock {
        Clock::build(start, failures, Some((Instant::now(), start)))
    }

    /// Whether this clock follows real time.
    pub fn is_real_time(&self) -> bool {
        self.inner.real.is_some()
    }

    fn build(start: i64, failures: FailureLog, real: Option<(Instant, i64)>) -> Clock {
        let mut participants = HashSet::new();
        participants.insert(thread::current().id());
        Clock {
            inner: Arc::new(Inner {
                now: AtomicI64::new(start),
                waiting: AtomicUsize::new(0),
                sched: Mutex::new(Sched {
                    participants,
                    active: 1,
                    gen: 0,
                    waiters: BTreeMap::new(),
                    next_waiter: 0,
                    advancing: false,
                    doomed: HashSet::new(),
                }),
                cv: Condvar::new(),
                sources: Mutex::new(Vec::new()),
                failures,
                wedged: AtomicBool::new(false),
                real,
            }),
        }
    }

    /// The current simulated time in µs.
    #[inline]
    pub fn now(&self) -> i64 {
        match self.inner.real {
            Some((epoch, start)) => Self::real_now(epoch, start),
            None => self.inner.now.load(Ordering::SeqCst),
        }
    }

    /// [`Clock::now`] of a simulated clock, `None` for one that follows the host's: a
    /// caller with a cheap path for the one and out-of-line work for the other.
    #[inline]
    pub fn simulated_now(&self) -> Option<i64> {
        match self.inner.real {
            Some(_) => None,
            None => Some(self.inner.now.load(Ordering::SeqCst)),
        }
    }

    /// [`Clock::now`] following the host's clock: out of line, so the simulated clock's
    /// read (every `system_time()`) stays a load.
    #[cold]
    #[inline(never)]
    fn real_now(epoch: Instant, start: i64) -> i64 {
        start.saturating_add(i64::try_from(epoch.elapsed().as_micros()).unwrap_or(i64::MAX))
    }

    pub fn failures(&self) -> &FailureLog {
        &self.inner.failures
    }

    /// Registers a device model. Held weakly: a dropped model simply stops having events.
    pub fn add_source(&self, source: Weak<dyn EventSource>) {
        lock(&self.inner.sources).push(source);
    }

    fn live_sources(&self) -> Vec<Arc<dyn EventSource>> {
        let mut list = lock(&self.inner.sources);
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    }

    /// The earliest pending device event, if any.
    pub fn next_event_time(&self) -> Option<i64> {
        if self.inner.wedged.load(Ordering::SeqCst) || self.is_real_time() {
            return None;
        }
        self.live_sources()
            .iter()
            .filter_map(|s| s.next_event())
            .min()
    }

    /// Lets time run to `t` (if it is in the future), running every device event on the way.
    /// The caller counts as waiting meanwhile, like a thread in `snooze_until`.
    pub fn advance_to(&self, t: i64) {
        let _ = self.wait(Some(t), || None::<()>);
    }

    /// Lets `micros` µs of simulated time pass.
    pub fn advance_by(&self, micros: i64) {
        self.advance_to(self.now().saturating_add(micros.max(0)));
    }

    /// The whole machine stops for `micros` µs: time jumps ahead and nothing runs on the way
    /// (a virtual machine whose virtual CPUs the host did not schedule). Device events that
    /// fell due meanwhile run at the next wait, in their order, as the interrupts a stopped
    /// machine finds pending when it resumes. A real-time clock ignores it.
    pub fn freeze_for(&self, micros: i64) {
        if self.is_real_time() || micros <= 0 {
            return;
        }
        let mut s = lock(&self.inner.sched);
        let now = self.inner.now.load(Ordering::SeqCst);
        self.inner
            .now
            .store(now.saturating_add(micros), Ordering::SeqCst);
        s.gen += 1;
        self.inner.cv.notify_all();
    }

    /// Tells waiters that something they wait for may have changed (a semaphore release).
    ///
    /// The change must be made before this call (an atomic with `SeqCst`, or under a lock
    /// that a waiter's condition takes). Two cases need no wake-up, and are the common ones
    /// for a driver's releases: the calling thread is stepping time (an interrupt handler
    /// run by [`Clock::step`], which wakes every waiter when the step ends, after this
    /// change), or no thread is inside [`Clock::wait`]: a thread entering it counts itself
    /// in `waiting` before it first looks at its condition, so either this call sees it
    /// counted or its look sees the change (both sides are sequentially consistent).
    #[inline]
    pub fn notify(&self) {
        if STEPPING.with(Cell::get) == Arc::as_ptr(&self.inner) {
            return;
        }
        fence(Ordering::SeqCst);
        if self.inner.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.wake_waiters();
    }

    /// [`Clock::notify`] when a thread waits: out of line, so the common case stays inline.
    #[inline(never)]
    fn wake_waiters(&self) {
        let mut s = lock(&self.inner.sched);
        s.gen += 1;
        self.inner.cv.notify_all();
    }

    /// Blocks the calling thread until `ready` returns a value, the simulated `deadline`
    /// passes, or the wait is found to be endless.
    ///
    /// `ready` runs with the clock's lock held: it must only look at (and take) the thing
    /// waited for, never wait or call back into the clock.
    pub fn wait<T>(
        &self,
        deadline: Option<i64>,
        mut ready: impl FnMut() -> Option<T>,
    ) -> WaitOutcome<T> {
        let _counted = Waiting::enter(&self.inner.waiting);
        if self.is_real_time() {
            return self.wait_real(deadline, ready);
        }
        let me = thread::current().id();
        let mut s = lock(&self.inner.sched);
        if let Some(v) = ready() {
            return WaitOutcome::Ready(v);
        }
        let participant = s.participants.contains(&me);
        let id = s.next_waiter;
        s.next_waiter += 1;
        s.waiters.insert(
            id,
            Waiter {
                deadline,
                seen_gen: u64::MAX,
            },
        );
        if participant {
            s.active -= 1;
        }
        s.gen += 1;
        self.inner.cv.notify_all();

        let mut last_gen = s.gen;
        let mut quiet_since = Instant::now();
        let outcome = loop {
            if s.doomed.remove(&id) {
                break WaitOutcome::Forever;
            }
            if let Some(v) = ready() {
                break WaitOutcome::Ready(v);
            }
            let gen = s.gen;
            if let Some(w) = s.waiters.get_mut(&id) {
                w.seen_gen = gen;
            }
            let my_turn =
                s.active == 0 && !s.advancing && s.waiters.values().all(|w| w.seen_gen == gen);
            let now = self.now();
            let next_event = if my_turn {
                self.next_event_time()
            } else {
                None
            };
            // Events already due run before any deadline is judged, so a wait that ends
            // exactly when a device answers sees the answer.
            if next_event.is_some_and(|t| t <= now) {
                s = self.step(s, now);
                continue;
            }
            if deadline.is_some_and(|d| now >= d) {
                break WaitOutcome::TimedOut;
            }
            if my_turn {
                let next_deadline = s.waiters.values().filter_map(|w| w.deadline).min();
                let target = match (next_event, next_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                match target {
                    Some(t) => {
                        s = self.step(s, t.max(now));
                        continue;
                    }
                    None => {
                        // Every simulated thread waits for something no event will bring.
                        let others: Vec<u64> =
                            s.waiters.keys().copied().filter(|&w| w != id).collect();
                        s.doomed.extend(others);
                        break WaitOutcome::Forever;
                    }
                }
            }
            // Someone else must act first. If nothing at all happens for a long (real) time,
            // a participant is stuck outside the simulation (a plain `JoinHandle::join`, a
            // thread not started with `spawn`): fail rather than hang the test run.
            if s.gen != last_gen {
                last_gen = s.gen;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= STALL {
                self.inner.failures.record(format!(
                    "simulated time stalled for {STALL:?} of real time: a simulated thread is \
                     blocked outside the simulator (join simulated threads with SimThread::join \
                     and start them with spawn)"
                ));
                break WaitOutcome::Forever;
            }
            s = self
                .inner
                .cv
                .wait_timeout(s, STALL / 10)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        s.waiters.remove(&id);
        s.doomed.remove(&id);
        if participant {
            s.active += 1;
        }
        s.gen += 1;
        self.inner.cv.notify_all();
        outcome
    }

    /// [`Clock::wait`] in real time: sleep on the condition variable until `ready` holds
    /// or the deadline passes. A wait without a deadline on which nothing at all happens
    /// for [`STALL`] is reported as endless rather than hanging the run.
    fn wait_real<T>(
        &self,
        deadline: Option<i64>,
        mut ready: impl FnMut() -> Option<T>,
    ) -> WaitOutcome<T> {
        let mut s = lock(&self.inner.sched);
        let mut last_gen = s.gen;
        let mut quiet_since = Instant::now();
        loop {
            if let Some(v) = ready() {
                return WaitOutcome::Ready(v);
            }
            let now = self.now();
            let slice = match deadline {
                Some(d) if now >= d => return WaitOutcome::TimedOut,
                Some(d) => Duration::from_micros((d - now) as u64).min(STALL / 10),
                None => STALL / 10,
            };
            if s.gen != last_gen {
                last_gen = s.gen;
                quiet_since = Instant::now();
            } else if deadline.is_none() && quiet_since.elapsed() >= STALL {
                self.inner.failures.record(format!(
                    "a wait without a deadline saw nothing happen for {STALL:?}"
                ));
                return WaitOutcome::Forever;
            }
            s = self
                .inner
                .cv
                .wait_timeout(s, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Moves time to `target` or to the first device event before it, and runs the events of
    /// that one instant. One instant at a time, so that a thread woken by an interrupt runs
    /// before anything later happens.
    fn step<'a>(&'a self, mut s: MutexGuard<'a, Sched>, target: i64) -> MutexGuard<'a, Sched> {
        s.advancing = true;
        drop(s);
        let now = self.now();
        match self.next_event_time() {
            Some(t) if t <= target => {
                let t = t.max(now);
                self.inner.now.store(t, Ordering::SeqCst);
                let outer = STEPPING.with(|c| c.replace(Arc::as_ptr(&self.inner)));
                // Restores `outer` however `run_instant` ends.
                struct Restore(*const Inner);
                impl Drop for Restore {
                    fn drop(&mut self) {
                        STEPPING.with(|c| c.set(self.0));
                    }
                }
                let _restore = Restore(outer);
                self.run_instant(t);
            }
            _ => self.inner.now.store(target.max(now), Ordering::SeqCst),
        }
        let mut s = lock(&self.inner.sched);
        s.advancing = false;
        s.gen += 1;
        self.inner.cv.notify_all();
        s
    }

    fn run_instant(&self, t: i64) {
        for _ in 0..ROUNDS_PER_INSTANT {
            let due: Vec<_> = self
                .live_sources()
                .into_iter()
                .filter(|s| s.next_event().is_some_and(|e| e <= t))
                .collect();
            if due.is_empty() {
                return;
            }
            for s in due {
                s.run_due(t);
            }
        }
        self.inner.wedged.store(true, Ordering::SeqCst);
        self.inner.failures.record(format!(
            "device events at {t} µs kept scheduling more events at the same instant \
             ({ROUNDS_PER_INSTANT} rounds); device events are ignored from now on"
        ));
    }

    /// Starts a thread that takes part in the simulation: time does not move while it runs.
    pub fn spawn<F, T>(&self, name: &str, f: F) -> SimThread<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // Counted as running from now on, so time cannot move before it gets going.
        lock(&self.inner.sched).active += 1;
        let done = Arc::new(AtomicBool::new(false));
        let clock = self.clone();
        let child_done = done.clone();
        let handle = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                lock(&clock.inner.sched)
                    .participants
                    .insert(thread::current().id());
                let _exit = ExitGuard {
                    clock,
                    done: child_done,
                };
                f()
            })
            .expect("cannot spawn a simulated thread");
        SimThread {
            clock: self.clone(),
            done,
            handle,
        }
    }
}

/// Takes a finished (or panicking) simulated thread out of the count.
struct ExitGuard {
    clock: Clock,
    done: Arc<AtomicBool>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let mut s = lock(&self.clock.inner.sched);
        s.participants.remove(&thread::current().id());
        s.active -= 1;
        self.done.store(true, Ordering::SeqCst);
        s.gen += 1;
        self.clock.inner.cv.notify_all();
    }
}

/// A thread started by [`Clock::spawn`].
pub struct SimThread<T> {
    clock: Clock,
    done: Arc<AtomicBool>,
    handle: JoinHandle<T>,
}

impl<T> SimThread<T> {
    /// Waits (in simulated time) for the thread to finish and returns its result; a panic in
    /// the thread is re-raised here.
    pub fn join(self) -> T {
        for _ in 0..1000 {
            let done = &self.done;
            match self
                .clock
                .wait(None, || done.load(Ordering::SeqCst).then_some(()))
            {
                WaitOutcome::Ready(()) => break,
                WaitOutcome::TimedOut => unreachable!("no deadline"),
                WaitOutcome::Forever => self
                    .clock
                    .failures()
                    .record("joining a simulated thread that is blocked forever".to_owned()),
            }
        }
        match self.handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Fires at fixed times and counts.
    struct Ticks {
        at: Mutex<Vec<i64>>,
        fired: AtomicUsize,
    }

    impl EventSource for Ticks {
        fn next_event(&self) -> Option<i64> {
            lock(&self.at).first().copied()
        }
        fn run_due(&self, now: i64) {
            let mut at = lock(&self.at);
            while at.first().is_some_and(|&t| t <= now) {
                at.remove(0);
                self.fired.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn ticks(at: &[i64]) -> Arc<Ticks> {
        Arc::new(Ticks {
            at: Mutex::new(at.to_vec()),
            fired: AtomicUsize::new(0),
        })
    }

    #[test]
    fn time_jumps_to_deadlines_and_runs_events_on_the_way() {
        let clock = Clock::new(DEFAULT_START);
        let t = ticks(&[DEFAULT_START + 10, DEFAULT_START + 500]);
        let weak: Weak<dyn EventSource> = Arc::downgrade(&(t.clone() as Arc<dyn EventSource>));
        clock.add_source(weak);
        assert_eq!(clock.next_event_time(), Some(DEFAULT_START + 10));
        clock.advance_by(100);
        assert_eq!(clock.now(), DEFAULT_START + 100);
        assert_eq!(t.fired.load(Ordering::SeqCst), 1);
        clock.advance_by(1000);
        assert_eq!(t.fired.load(Ordering::SeqCst), 2);
        assert_eq!(clock.next_event_time(), None);
    }

    #[test]
    fn a_wait_ends_when_an_event_makes_it_ready() {
        let clock = Clock::new(0);
        let t = ticks(&[40]);
        clock.add_source(Arc::downgrade(&(t.clone() as Arc<dyn EventSource>)));
        let r = clock.wait(Some(1000), || {
            (t.fired.load(Ordering::SeqCst) > 0).then_some(7)
        });
        assert_eq!(r, WaitOutcome::Ready(7));
        assert_eq!(clock.now(), 40);
    }

    #[test]
    fn an_endless_wait_is_reported() {
        let clock = Clock::new(0);
        assert_eq!(clock.wait(None, || None::<()>), WaitOutcome::Forever);
        assert_eq!(clock.wait(Some(5), || None::<()>), WaitOutcome::TimedOut);
        assert_eq!(clock.now(), 5);
    }

    #[test]
    fn time_waits_for_running_threads() {
        let clock = Clock::new(0);
        let flag = Arc::new(AtomicBool::new(false));
        let f2 = flag.clone();
        let c2 = clock.clone();
        let th = clock.spawn("worker", move || {
            // Real time passes here, simulated time must not.
            std::thread::sleep(std::time::Duration::from_millis(20));
            let before = c2.now();
            f2.store(true, Ordering::SeqCst);
            c2.notify();
            c2.advance_by(50);
            (before, c2.now())
        });
        let r = clock.wait(Some(1_000_000), || {
            flag.load(Ordering::SeqCst).then_some(())
        });
        assert_eq!(r, WaitOutcome::Ready(()));
        assert_eq!(clock.now(), 0, "no time passed while the worker ran");
        let (before, after) = th.join();
        assert_eq!(before, 0);
        assert_eq!(after, 50);
    }

    #[test]
    fn two_threads_blocked_forever_both_hear_about_it() {
        let clock = Clock::new(0);
        let c2 = clock.clone();
        let th = clock.spawn("stuck", move || c2.wait(None, || None::<()>));
        let mine = clock.wait(None, || None::<()>);
        assert_eq!(mine, WaitOutcome::Forever);
        assert_eq!(th.join(), WaitOutcome::Forever);
    }

    #[test]
    fn real_time_follows_the_host_clock_and_times_out_for_real() {
        let clock = Clock::real_time(DEFAULT_START, FailureLog::new());
        assert!(clock.is_real_time());
        let t0 = clock.now();
        assert!(t0 >= DEFAULT_START);
        let started = Instant::now();
        assert_eq!(
            clock.wait(Some(t0 + 30_000), || None::<()>),
            WaitOutcome::TimedOut
        );
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert!(clock.now() >= t0 + 30_000);
        // Sources are never stepped in real time.
        let t = ticks(&[0]);
        clock.add_source(Arc::downgrade(&(t.clone() as Arc<dyn EventSource>)));
        assert_eq!(clock.next_event_time(), None);
        clock.advance_by(1_000);
        assert_eq!(t.fired.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_real_time_wait_wakes_on_notify_from_another_thread() {
        let clock = Clock::real_time(0, FailureLog::new());
        let flag = Arc::new(AtomicBool::new(false));
        let (f2, c2) = (flag.clone(), clock.clone());
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            f2.store(true, Ordering::SeqCst);
            c2.notify();
        });
        let before = clock.now();
        let r = clock.wait(Some(before + 10_000_000), || {
            flag.load(Ordering::SeqCst).then_some(())
        });
        assert_eq!(r, WaitOutcome::Ready(()));
        assert!(
            clock.now() - before < 5_000_000,
            "woken by the notify, not the deadline"
        );
        th.join().unwrap();
    }
}
