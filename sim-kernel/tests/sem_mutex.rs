//! `platform::sync::SemMutex` on the simulated kernel: a lock nobody contends touches no
//! semaphore, waiters get it in turn, and a wait that times out never lets two holders in.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use platform::sync::SemMutex;
use std::sync::atomic::AtomicI32;

use platform::{Area, InterruptState, KResult, Kernel, LogLevel, SemId, Status};
use sim_kernel::SimKernel;

fn sem_count(k: &SimKernel, name: &str) -> i32 {
    let s = k.sems();
    let sem = s
        .iter()
        .find(|s| s.name == name)
        .expect("the lock's semaphore");
    sem.count
}

#[test]
fn an_uncontended_lock_leaves_its_semaphore_alone() {
    let k = SimKernel::new();
    let m = SemMutex::new(&k, "lock", 0u32).unwrap();
    for _ in 0..100 {
        // A lock that waited on the semaphore (count 0) would time out here.
        *m.lock(&k, 1_000).unwrap() += 1;
        assert_eq!(sem_count(&k, "lock"), 0, "nothing posted to the semaphore");
    }
    assert_eq!(m.destroy(&k), 100);
    k.assert_clean();
}

/// Holds the lock for `hold` µs, checking nobody else is inside meanwhile.
fn hold<K: Kernel>(k: &K, m: &SemMutex<u32>, inside: &AtomicU32, hold: i64, timeout: i64) -> bool {
    let Ok(mut g) = m.lock(k, timeout) else {
        return false;
    };
    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
    k.snooze(hold);
    *g += 1;
    assert_eq!(inside.fetch_sub(1, Ordering::SeqCst), 1, "two holders");
    true
}

#[test]
fn waiters_take_turns_and_a_timed_out_wait_lets_no_second_holder_in() {
    let k = SimKernel::new();
    let m = Arc::new(SemMutex::new(&k, "lock", 0u32).unwrap());
    let inside = Arc::new(AtomicU32::new(0));
    let spawn = |name: &str, start: i64, held: i64, timeout: i64| {
        let (k2, m, inside) = (k.clone(), m.clone(), inside.clone());
        k.spawn(name, move || {
            k2.snooze(start);
            let t0 = k2.system_time();
            let got = hold(&k2, &m, &inside, held, timeout);
            (got, k2.system_time() - t0)
        })
    };
    // a holds 0-10 ms; b gives up at 2 ms (its claim is abandoned while a holds);
    // c waits and gets it when a lets go.
    let a = spawn("a", 0, 10_000, 1_000);
    let b = spawn("b", 1_000, 1_000, 1_000);
    let c = spawn("c", 1_500, 1_000, 100_000);
    assert!(a.join().0);
    assert_eq!(b.join(), (false, 1_000), "b times out after its 1 ms");
    let (got, took) = c.join();
    assert!(got);
    assert!(
        (9_500..=9_600).contains(&took),
        "c got the lock when a let go: {took}"
    );
    // After the abandoned claim the lock goes by the semaphore: still one holder at a
    // time, and nobody is kept waiting for a lock that is free.
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (k2, m, inside) = (k.clone(), m.clone(), inside.clone());
            k.spawn(&format!("w{i}"), move || {
                for _ in 0..25 {
                    assert!(hold(&k2, &m, &inside, 100, 1_000_000));
                    k2.snooze(50 * i);
                }
            })
        })
        .collect();
    for w in workers {
        w.join();
    }
    let t0 = k.system_time();
    assert!(
        hold(&k, &m, &inside, 0, 1_000),
        "a free lock is taken at once"
    );
    assert_eq!(k.system_time(), t0);
    let m = Arc::try_unwrap(m).unwrap_or_else(|_| panic!("the workers are gone"));
    assert_eq!(m.destroy(&k), 1 + 1 + 100 + 1);
    k.assert_clean();
}

/// The simulated kernel, except that a thread whose semaphore wait timed out runs again
/// only `late` µs later, other threads running meanwhile: what a busy scheduler does to any
/// thread whose timer fired.
struct LateAfterTimeout {
    k: SimKernel,
    late: i64,
}

// SAFETY: every call goes to `SimKernel`, which upholds the contract; the only addition is a
// snooze after a wait that timed out, which changes when the caller returns, not what any
// call does.
unsafe impl Kernel for LateAfterTimeout {
    fn system_time(&self) -> i64 {
        Kernel::system_time(&self.k)
    }
    fn snooze(&self, micros: i64) {
        Kernel::snooze(&self.k, micros)
    }
    fn log(&self, level: LogLevel, message: std::fmt::Arguments<'_>) {
        Kernel::log(&self.k, level, message)
    }
    fn create_sem(&self, count: i32, name: &str) -> KResult<SemId> {
        Kernel::create_sem(&self.k, count, name)
    }
    fn delete_sem(&self, sem: SemId) {
        Kernel::delete_sem(&self.k, sem)
    }
    fn acquire_sem(&self, sem: &SemId, timeout_micros: i64) -> KResult {
        let r = Kernel::acquire_sem(&self.k, sem, timeout_micros);
        if r == Err(Status::TIMED_OUT) {
            Kernel::snooze(&self.k, self.late);
        }
        r
    }
    fn release_sem(&self, sem: &SemId, from_interrupt: bool) {
        Kernel::release_sem(&self.k, sem, from_interrupt)
    }
    fn disable_interrupts(&self) -> InterruptState {
        Kernel::disable_interrupts(&self.k)
    }
    fn restore_interrupts(&self, state: InterruptState) {
        Kernel::restore_interrupts(&self.k, state)
    }
    fn acquire_spinlock(&self, lock: &AtomicI32) {
        Kernel::acquire_spinlock(&self.k, lock)
    }
    fn release_spinlock(&self, lock: &AtomicI32) {
        Kernel::release_spinlock(&self.k, lock)
    }
    fn create_area(&self, name: &str, size: usize, user: bool) -> KResult<Area> {
        Kernel::create_area(&self.k, name, size, user)
    }
    unsafe fn delete_area(&self, area: &Area) {
        // SAFETY: the caller's promise, passed on.
        unsafe { Kernel::delete_area(&self.k, area) }
    }
    fn copy_from_user(&self, dst: &mut [u8], src: u64) -> KResult {
        Kernel::copy_from_user(&self.k, dst, src)
    }
    fn copy_to_user(&self, dst: u64, src: &[u8]) -> KResult {
        Kernel::copy_to_user(&self.k, dst, src)
    }
    fn user_memset(&self, dst: u64, value: u8, len: usize) -> KResult {
        Kernel::user_memset(&self.k, dst, value, len)
    }
}

/// A wait that times out just before the holder lets go, and whose thread runs again only
/// after the holder posted a unit for it: that unit must not let a second holder in later
/// (taking the claim back on a timeout would leave the unit for the next waiter while the
/// lock is taken on the fast path).
#[test]
fn a_wait_that_times_out_as_the_holder_lets_go_lets_no_second_holder_in() {
    let k = Arc::new(LateAfterTimeout {
        k: SimKernel::new(),
        late: 1_000,
    });
    let m = Arc::new(SemMutex::new(&*k, "lock", 0u32).unwrap());
    let inside = Arc::new(AtomicU32::new(0));
    let t0 = k.system_time();
    let spawn = |name: &str, start: i64, held: i64, timeout: i64| {
        let (k2, m, inside) = (k.clone(), m.clone(), inside.clone());
        k.k.spawn(name, move || {
            k2.snooze(start);
            let got = hold(&*k2, &m, &inside, held, timeout);
            (got, k2.system_time() - t0)
        })
    };
    // h holds 0-2.5 ms; w's wait times out at 2 ms and w runs again at 3 ms, after h let
    // go at 2.5 ms with w's claim still counted; x and y then want the lock together.
    let h = spawn("h", 0, 2_500, 1_000);
    let w = spawn("w", 1_000, 1_000, 1_000);
    let x = spawn("x", 4_000, 1_000, 100_000);
    let y = spawn("y", 4_500, 1_000, 100_000);
    assert_eq!(h.join(), (true, 2_500));
    assert_eq!(
        w.join(),
        (false, 3_000),
        "w timed out at 2 ms and ran again at 3 ms"
    );
    assert_eq!(x.join(), (true, 5_000));
    assert_eq!(y.join(), (true, 6_000), "y got the lock when x let go");
    let m = Arc::try_unwrap(m).unwrap_or_else(|_| panic!("the threads are gone"));
    assert_eq!(m.destroy(&*k), 3);
    k.k.assert_clean();
}
