//! Locks built from the kernel's spinlocks and semaphores (no mutexes: their symbols differ
//! between Haiku R1/beta5 and nightly).

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, Ordering};

use crate::{InterruptState, KResult, Kernel, SemId};

/// Data guarded by a spinlock taken with interrupts disabled, so the interrupt callback and
/// ioctl threads can share it. Hold it briefly: never block or allocate under it.
pub struct SpinLock<T> {
    lock: AtomicI32,
    data: UnsafeCell<T>,
}

// SAFETY: the lock gives exclusive access to `data` across threads, like a mutex.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the data; no thread-bound state.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> core::fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SpinLock")
    }
}

impl<T> SpinLock<T> {
    pub const fn new(data: T) -> Self {
        SpinLock {
            lock: AtomicI32::new(0),
            data: UnsafeCell::new(data),
        }
    }

    /// The data, from a lock nobody else can reach any more.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }

    /// Disables interrupts, takes the lock, and gives access until the guard drops.
    pub fn lock<'a, K: Kernel>(&'a self, kernel: &'a K) -> SpinGuard<'a, T, K> {
        let state = kernel.disable_interrupts();
        kernel.acquire_spinlock(&self.lock);
        SpinGuard {
            lock: self,
            kernel,
            state: ManuallyDrop::new(state),
        }
    }
}

/// Access to the data of a [`SpinLock`].
///
/// Not `Send`: it holds the interrupt state of the CPU that took the lock, which must be
/// restored there. `Sync` only when `T` is: a shared guard hands out `&T`.
///
/// ```compile_fail,E0277
/// fn send<T: Send>() {}
/// fn check<K: driver::Kernel>() {
///     send::<driver::sync::SpinGuard<'static, u32, K>>();
/// }
/// ```
///
/// ```compile_fail,E0277
/// fn sync<T: Sync>() {}
/// fn check<K: driver::Kernel>() {
///     sync::<driver::sync::SpinGuard<'static, core::cell::Cell<u32>, K>>();
/// }
/// ```
pub struct SpinGuard<'a, T, K: Kernel> {
    lock: &'a SpinLock<T>,
    kernel: &'a K,
    /// Taken out once, in `drop`.
    state: ManuallyDrop<InterruptState>,
}

// SAFETY: a `&SpinGuard` gives only `&T` (`Deref`), which is safe to share when `T: Sync`;
// the interrupt state is only touched by `drop`, through the owner.
unsafe impl<T: Sync, K: Kernel> Sync for SpinGuard<'_, T, K> {}

impl<T, K: Kernel> Deref for SpinGuard<'_, T, K> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the spinlock, so no other reference to the data exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T, K: Kernel> DerefMut for SpinGuard<'_, T, K> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only access through the guard.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T, K: Kernel> Drop for SpinGuard<'_, T, K> {
    fn drop(&mut self) {
        self.kernel.release_spinlock(&self.lock.lock);
        // SAFETY: `state` is taken exactly once, here, and never used again.
        let state = unsafe { ManuallyDrop::take(&mut self.state) };
        self.kernel.restore_interrupts(state);
    }
}

/// A kernel semaphore owned by the driver; deleted on `destroy`.
#[derive(Debug)]
pub struct Semaphore {
    id: SemId,
}

impl Semaphore {
    pub fn new<K: Kernel>(kernel: &K, count: i32, name: &str) -> KResult<Self> {
        Ok(Semaphore {
            id: kernel.create_sem(count, name)?,
        })
    }

    pub fn acquire<K: Kernel>(&self, kernel: &K, timeout_micros: i64) -> KResult {
        kernel.acquire_sem(&self.id, timeout_micros)
    }

    pub fn release<K: Kernel>(&self, kernel: &K, from_interrupt: bool) {
        kernel.release_sem(&self.id, from_interrupt)
    }

    pub fn destroy<K: Kernel>(self, kernel: &K) {
        kernel.delete_sem(self.id)
    }
}

/// A wake-up for one kind of event (a period came back), rung by the interrupt callback and
/// posted only while a thread sleeps on it or is about to: a release for every event nobody
/// waits for would cost the callback a kernel call, and leave counts that later sleeps
/// would return at once for.
///
/// A sleeper counts itself before it looks at what it waits for
/// ([`Doorbell::sleep_unless`]), and the ringer changes that before it looks for sleepers
/// ([`Doorbell::ring`]). Both sides are sequentially consistent, so either the ringer sees
/// the sleeper and posts, or the sleeper sees the change and does not sleep: no wake-up is
/// lost. A unit posted for a sleeper that no longer needed it (it saw the change, or another
/// unit woke it) is left over, and the next sleep returns at once for it; callers look at
/// their condition again after every sleep anyway. Left-over units never outnumber the
/// rings that came during one sleep.
#[derive(Debug)]
pub struct Doorbell {
    sem: Semaphore,
    sleepers: AtomicU32,
}

impl Doorbell {
    pub fn new<K: Kernel>(kernel: &K, name: &str) -> KResult<Self> {
        Ok(Doorbell {
            sem: Semaphore::new(kernel, 0, name)?,
            sleepers: AtomicU32::new(0),
        })
    }

    /// Sleeps at most `timeout_micros` for a ring, unless `ready`, asked once this thread
    /// counts as a sleeper, says what it waits for is there already. `Ok(true)`: a ring (or
    /// a left-over unit) woke it; `Ok(false)`: `ready` said so; `Err(TIMED_OUT)`: neither.
    pub fn sleep_unless<K: Kernel>(
        &self,
        kernel: &K,
        timeout_micros: i64,
        ready: impl FnOnce() -> bool,
    ) -> KResult<bool> {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let r = if ready() {
            Ok(false)
        } else {
            self.sem.acquire(kernel, timeout_micros).map(|()| true)
        };
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// Wakes a sleeper, if there is one. What sleepers wait for must have changed before:
    /// stored `SeqCst`, or under a lock their `ready` takes. From an interrupt callback
    /// `from_interrupt` is true (the release does not reschedule).
    pub fn ring<K: Kernel>(&self, kernel: &K, from_interrupt: bool) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.sem.release(kernel, from_interrupt);
        }
    }

    pub fn destroy<K: Kernel>(self, kernel: &K) {
        self.sem.destroy(kernel)
    }
}

/// A sleeping lock made of a semaphore of count 1: serialises ioctls and control requests.
#[derive(Debug)]
pub struct SemLock {
    sem: Semaphore,
}

impl SemLock {
    pub fn new<K: Kernel>(kernel: &K, name: &str) -> KResult<Self> {
        Ok(SemLock {
            sem: Semaphore::new(kernel, 1, name)?,
        })
    }

    /// Runs `f` holding the lock; waits at most `timeout_micros` for it.
    pub fn with<K: Kernel, R>(
        &self,
        kernel: &K,
        timeout_micros: i64,
        f: impl FnOnce() -> R,
    ) -> KResult<R> {
        self.sem.acquire(kernel, timeout_micros)?;
        let r = f();
        self.sem.release(kernel, false);
        Ok(r)
    }

    pub fn destroy<K: Kernel>(self, kernel: &K) {
        self.sem.destroy(kernel)
    }
}

/// A value filled in once, after its owner is already shared (the engine learns its streams
/// from control requests whose completions arrive through the shared engine).
pub struct Late<T> {
    state: core::sync::atomic::AtomicU8,
    value: UnsafeCell<core::mem::MaybeUninit<T>>,
}

const LATE_EMPTY: u8 = 0;
const LATE_WRITING: u8 = 1;
const LATE_READY: u8 = 2;

// SAFETY: the value is written once, by the one thread that wins the EMPTY -> WRITING
// transition, and only read after READY is published with Release/Acquire ordering.
unsafe impl<T: Send + Sync> Sync for Late<T> {}
// SAFETY: owning a Late is owning a T.
unsafe impl<T: Send> Send for Late<T> {}

impl<T> Default for Late<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Late<T> {
    pub const fn new() -> Self {
        Late {
            state: core::sync::atomic::AtomicU8::new(LATE_EMPTY),
            value: UnsafeCell::new(core::mem::MaybeUninit::uninit()),
        }
    }

    /// Stores the value; gives it back if one was already stored.
    pub fn set(&self, v: T) -> Result<(), T> {
        use core::sync::atomic::Ordering;
        if self
            .state
            .compare_exchange(
                LATE_EMPTY,
                LATE_WRITING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Err(v);
        }
        // SAFETY: winning the compare-exchange makes this thread the only writer, and no
        // reader looks at the value before READY is stored below.
        unsafe { (*self.value.get()).write(v) };
        self.state.store(LATE_READY, Ordering::Release);
        Ok(())
    }

    pub fn get(&self) -> Option<&T> {
        if self.state.load(core::sync::atomic::Ordering::Acquire) == LATE_READY {
            // SAFETY: READY is stored only after the value was fully written, and the value
            // is never written again while `self` is borrowed.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }

    /// Takes the value out of an owned cell.
    pub fn into_inner(self) -> Option<T> {
        let me = core::mem::ManuallyDrop::new(self);
        if me.state.load(core::sync::atomic::Ordering::Acquire) == LATE_READY {
            // SAFETY: READY means initialised; `me` is never dropped, so the value is read
            // out exactly once.
            Some(unsafe { (*me.value.get()).assume_init_read() })
        } else {
            None
        }
    }
}

impl<T> Drop for Late<T> {
    fn drop(&mut self) {
        if *self.state.get_mut() == LATE_READY {
            // SAFETY: READY means initialised, and `drop` runs once.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}

/// Data guarded by a sleeping lock for ioctl-side state (never taken in an interrupt
/// callback): a benaphore, an atomic count of claims with a semaphore that only a
/// contended claim waits on, so a lock nobody else wants costs no kernel call.
///
/// A wait for the lock that times out leaves its claim behind: taking it back could not
/// be told apart from the unit a release may already have handed it, and that unit would
/// later let a second holder in. An abandoned claim keeps the count above 0 for good, so
/// from then on every `lock` waits on the semaphore and every release posts to it: the
/// lock is then a plain semaphore of count 1, slower, never wrong. Haiku's `BLocker` does
/// the same for the same reason (`BLocker::AcquireLock` in `src/kits/support/Locker.cpp`
/// keeps the count of a timed-out wait, and the lock goes the semaphore's way from then
/// on).
///
/// # Invariants
///
/// `sem` was created with count 0 and is reachable only through this value (its `SemId`
/// cannot be copied or forged). `claims` = holders + threads waiting for the lock + claims
/// abandoned by a timed-out wait; only `lock` adds to it, only a guard's drop takes one
/// back, and a drop posts a unit to `sem` exactly when claims remained after its own
/// (someone waits, or one was abandoned). A `lock` holds the lock when it found no claim
/// (no holder, no waiter, nothing abandoned: every unit ever posted was taken) or when it
/// took a unit (posted by a holder that has just let go). So holders plus units are at
/// most one, and at most one guard exists.
pub struct SemMutex<T> {
    claims: AtomicI64,
    sem: Semaphore,
    data: UnsafeCell<T>,
}

// SAFETY: by the type invariant at most one guard, on one thread, reaches `data` at a time.
unsafe impl<T: Send> Sync for SemMutex<T> {}
// SAFETY: owning the lock owns the data.
unsafe impl<T: Send> Send for SemMutex<T> {}

impl<T> core::fmt::Debug for SemMutex<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SemMutex").field("sem", &self.sem).finish()
    }
}

impl<T> SemMutex<T> {
    pub fn new<K: Kernel>(kernel: &K, name: &str, data: T) -> KResult<Self> {
        // INVARIANT: no claim, and a new semaphore of count 0 owned by this value alone.
        Ok(SemMutex {
            claims: AtomicI64::new(0),
            sem: Semaphore::new(kernel, 0, name)?,
            data: UnsafeCell::new(data),
        })
    }

    /// Waits at most `timeout_micros` for the lock (no kernel call when nobody else has it
    /// or waits for it).
    pub fn lock<'a, K: Kernel>(
        &'a self,
        kernel: &'a K,
        timeout_micros: i64,
    ) -> KResult<SemGuard<'a, T, K>> {
        if self.claims.fetch_add(1, Ordering::AcqRel) != 0 {
            // INVARIANT: on a timeout the claim stays, abandoned (see the type's doc).
            self.sem.acquire(kernel, timeout_micros)?;
        }
        Ok(SemGuard {
            lock: self,
            kernel,
            _not_send: PhantomData,
        })
    }

    pub fn destroy<K: Kernel>(self, kernel: &K) -> T {
        self.sem.destroy(kernel);
        self.data.into_inner()
    }
}

/// Access to the data of a [`SemMutex`].
///
/// Not `Send` (the thread that took the lock releases it), and `Sync` only when `T` is.
///
/// ```compile_fail,E0277
/// fn send<T: Send>() {}
/// fn check<K: driver::Kernel>() {
///     send::<driver::sync::SemGuard<'static, u32, K>>();
/// }
/// ```
///
/// ```compile_fail,E0277
/// fn sync<T: Sync>() {}
/// fn check<K: driver::Kernel>() {
///     sync::<driver::sync::SemGuard<'static, core::cell::Cell<u32>, K>>();
/// }
/// ```
pub struct SemGuard<'a, T, K: Kernel> {
    lock: &'a SemMutex<T>,
    kernel: &'a K,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a `&SemGuard` gives only `&T`, which is safe to share when `T: Sync`.
unsafe impl<T: Sync, K: Kernel> Sync for SemGuard<'_, T, K> {}

impl<T, K: Kernel> Deref for SemGuard<'_, T, K> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, and at most one guard exists (the invariant).
        unsafe { &*self.lock.data.get() }
    }
}

impl<T, K: Kernel> DerefMut for SemGuard<'_, T, K> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` is the only path to the data.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T, K: Kernel> Drop for SemGuard<'_, T, K> {
    fn drop(&mut self) {
        // INVARIANT: this guard's claim goes; a unit for the next claim if one remains.
        if self.lock.claims.fetch_sub(1, Ordering::AcqRel) > 1 {
            self.lock.sem.release(self.kernel, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Late, SemGuard, SpinGuard};
    use crate::Kernel;

    /// The positive half of the `compile_fail` examples on the guards: with a `Sync` payload
    /// the guards are `Sync`, so those examples fail for the reason they name.
    #[allow(dead_code)]
    fn guards_are_sync_for_sync_data<K: Kernel>() {
        fn sync<T: Sync>() {}
        sync::<SpinGuard<'static, u32, K>>();
        sync::<SemGuard<'static, u32, K>>();
    }

    #[test]
    fn late_is_set_once() {
        let l = Late::new();
        assert!(l.get().is_none());
        assert!(l.set(alloc::vec![1, 2]).is_ok());
        assert_eq!(l.set(alloc::vec![3]), Err(alloc::vec![3]));
        assert_eq!(l.get(), Some(&alloc::vec![1, 2]));
        assert_eq!(l.into_inner(), Some(alloc::vec![1, 2]));
        let empty: Late<alloc::string::String> = Late::new();
        assert!(empty.into_inner().is_none());
    }
}
