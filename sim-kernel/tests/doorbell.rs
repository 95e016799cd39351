//! `platform::sync::Doorbell` on the simulated kernel: posted only while someone sleeps on
//! it, and no wake-up lost on either side of a sleeper's look at its condition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use platform::sync::Doorbell;
use platform::{Kernel, Status};
use sim_kernel::SimKernel;

fn count(k: &SimKernel) -> i32 {
    let s = k.sems();
    s.iter()
        .find(|s| s.name == "bell")
        .expect("the bell's semaphore")
        .count
}

#[test]
fn a_ring_with_nobody_asleep_posts_nothing() {
    let k = SimKernel::new();
    let bell = Doorbell::new(&k, "bell").unwrap();
    for _ in 0..10 {
        bell.ring(&k, false);
    }
    assert_eq!(count(&k), 0);
    // So a sleep after them waits for a ring of its own.
    let t0 = Kernel::system_time(&k);
    assert_eq!(bell.sleep_unless(&k, 500, || false), Err(Status::TIMED_OUT));
    assert_eq!(Kernel::system_time(&k) - t0, 500);
    bell.destroy(&k);
    k.assert_clean();
}

#[test]
fn a_sleeper_whose_condition_holds_does_not_sleep() {
    let k = SimKernel::new();
    let bell = Doorbell::new(&k, "bell").unwrap();
    let t0 = Kernel::system_time(&k);
    // The event came before the sleeper counted itself: its look sees it.
    let arrived = AtomicBool::new(false);
    arrived.store(true, Ordering::SeqCst);
    bell.ring(&k, false);
    assert_eq!(
        bell.sleep_unless(&k, 1_000_000, || arrived.load(Ordering::SeqCst)),
        Ok(false)
    );
    assert_eq!(Kernel::system_time(&k), t0);
    assert_eq!(count(&k), 0);
    bell.destroy(&k);
    k.assert_clean();
}

#[test]
fn a_ring_while_the_sleeper_looks_wakes_it() {
    let k = SimKernel::new();
    let bell = Doorbell::new(&k, "bell").unwrap();
    let t0 = Kernel::system_time(&k);
    // The event comes after the sleeper counted itself and before it sleeps (here: while
    // its look runs, which then misses it): the ring must post, and the sleep end at once.
    let r = bell.sleep_unless(&k, 1_000_000, || {
        bell.ring(&k, false);
        false
    });
    assert_eq!(r, Ok(true));
    assert_eq!(
        Kernel::system_time(&k),
        t0,
        "woken at once, not at the timeout"
    );
    assert_eq!(count(&k), 0);
    bell.destroy(&k);
    k.assert_clean();
}

#[test]
fn a_sleeper_wakes_at_the_ring_and_a_left_over_unit_ends_one_sleep() {
    let k = SimKernel::new();
    let bell = Arc::new(Doorbell::new(&k, "bell").unwrap());
    let t0 = Kernel::system_time(&k);
    let ringer = {
        let (k2, bell) = (k.clone(), bell.clone());
        k.spawn("ringer", move || {
            Kernel::snooze(&k2, 300);
            // Two rings during one sleep: one unit wakes the sleeper, one is left over.
            bell.ring(&k2, true);
            bell.ring(&k2, true);
        })
    };
    assert_eq!(bell.sleep_unless(&k, 1_000_000, || false), Ok(true));
    assert_eq!(Kernel::system_time(&k) - t0, 300);
    ringer.join();
    assert_eq!(count(&k), 1);
    assert_eq!(bell.sleep_unless(&k, 1_000_000, || false), Ok(true));
    assert_eq!(
        Kernel::system_time(&k) - t0,
        300,
        "the left-over unit, at once"
    );
    assert_eq!(count(&k), 0);
    let bell = Arc::try_unwrap(bell).unwrap_or_else(|_| panic!("the ringer is gone"));
    bell.destroy(&k);
    k.assert_clean();
}
