//! The kernel calls the built add-on makes per BUFFER_EXCHANGE once both directions run
//! (what `cargo xtask bench` reports), against the table of what an exchange needs. Its own
//! test binary: the simulator's call counters are process-wide.

mod common;

use haiku_sim::addon::Addon;
use haiku_sim::meter;
use hmulti_client::{Choice, Session};
use snd_model::ModelConfig;
use spec::hmulti_audio as hm;
use spec::virtio_snd::Direction;

const EXCHANGES: u64 = 100;

/// Calls per exchange at 48 kHz, 2 channels, 16-bit, the client never late, after `mode`'s
/// streams are running: every kernel export and bus call the add-on made.
fn calls_per_exchange(duplex: bool) -> Vec<(&'static str, u64)> {
    let mut config = ModelConfig::hmulti_full(2);
    if !duplex {
        config.streams.retain(|s| s.direction == Direction::Output);
    }
    let host = Addon::load(common::built_addon(), config, None).unwrap();
    let dev = host.open_first().unwrap();
    let mut s = Session::init(
        &dev,
        Choice {
            rate: Some(hm::B_SR_48000),
            format: Some(hm::B_FMT_16BIT),
        },
    )
    .unwrap();
    let n = s.play.len();
    let chunk = vec![0x11u8; s.play.bytes()];
    let mut before = None;
    for k in 0..8 + EXCHANGES {
        if k == 8 {
            before = Some(meter::snapshot());
        }
        assert_eq!(s.exchange(&dev), 0, "exchange {k}");
        let cycle = s.info.playback_buffer_cycle as usize;
        s.play.write(&dev, (cycle + n - 1) % n, &chunk).unwrap();
        let rc = s.info.record_buffer_cycle;
        if (0..s.rec.len() as i32).contains(&rc) {
            s.rec.read(&dev, rc as usize).unwrap();
        }
    }
    let used = meter::snapshot().since(&before.unwrap());
    s.force_stop(&dev);
    s.release(&dev);
    dev.close();
    host.unload().unwrap_or_else(|v| panic!("{}", v.join("\n")));
    let mut calls: Vec<_> = used.calls.into_iter().filter(|(_, c)| *c > 0).collect();
    calls.sort();
    calls
}

/// What one exchange needs, per stream that runs (the other ioctls' lock is a benaphore: no
/// call when nobody else holds it):
/// - spinlock sections (each `disable_interrupts`, `acquire_spinlock`, `release_spinlock`,
///   `restore_interrupts`): the refill's ring and queue, the completion's take; in the
///   interrupt, the dequeue's queue (one for all the used chains) and the completion's ring;
///   the handler is read without a lock;
/// - `system_time`: the interrupt's timestamp; the wait's start (none when the completion is
///   there already); a duplex exchange's look for the capture period in step (the playback
///   completion's own timestamp shows it played by its earliest end, so no read for that);
/// - `queue_request_v`: the refill; `queue_dequeue`: the interrupt's, and its empty answer;
/// - semaphores: the wait for the playback period and the interrupt's post to it; capture
///   is taken as it comes, and a doorbell nobody sleeps on is not posted;
/// - `user_memcpy`: the argument in, and its three runs of driver-owned fields back.
fn needed(streams: u64, times: u64) -> Vec<(&'static str, u64)> {
    let mut t = vec![
        ("acquire_sem_etc", 1),
        ("acquire_spinlock", 5 * streams),
        ("disable_interrupts", 5 * streams),
        ("queue_dequeue", 2 * streams),
        ("queue_request_v", streams),
        ("release_sem_etc", 1),
        ("release_spinlock", 5 * streams),
        ("restore_interrupts", 5 * streams),
        ("system_time", times),
        ("user_memcpy", 4),
    ];
    for (_, n) in &mut t {
        *n *= EXCHANGES;
    }
    t
}

#[test]
fn an_exchange_makes_the_kernel_calls_it_needs_and_no_more() {
    assert_eq!(
        calls_per_exchange(false),
        needed(1, 2),
        "playback, {EXCHANGES} exchanges"
    );
    assert_eq!(
        calls_per_exchange(true),
        needed(2, 4),
        "duplex, {EXCHANGES} exchanges"
    );
}
