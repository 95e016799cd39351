//! Races as Haiku makes them possible, against the built add-on (the file a Haiku user
//! installs) in the simulator: the multi_audio media add-on's exchange thread blocked in
//! BUFFER_EXCHANGE while another thread of the team calls GET_MIX, SET_MIX,
//! SET_GLOBAL_FORMAT, GET_BUFFERS or FORCE_STOP on the same file descriptor, or closes it
//! (devfs then runs the close hook at once and `free` when the exchange returns, as
//! Haiku's `fd.cpp` does), with interrupts arriving while the card is taken down.
//!
//! Each test repeats with randomised timing: the other thread's call lands after a random
//! simulated delay (any point of a period, any period of the run), and the interrupt
//! delivery alternates between a vector per queue and a shared line with spurious
//! interrupts at random moments. The randomness is seeded: every test prints its seed, and
//! `RACE_SEED=N` runs it again with the same one. Simulated time makes a run with a given
//! seed reproducible.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use haiku_sim::addon::{Addon, SharedDevice};
use haiku_sim::{EnvConfig, Interrupts};
use hmulti_client::{self as client, play, Choice, Hmulti, Session};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use snd_model::{ControlConfig, ModelConfig};
use spec::haiku_driver as hd;
use spec::hmulti_audio as hm;
use spec::virtio_snd::VIRTIO_SND_CTL_ROLE_VOLUME;
use spec::UserPtr;
use zerocopy::IntoBytes;

fn addon() -> &'static Path {
    common::built_addon()
}

/// The test's seed: `RACE_SEED` if set, else a fresh one; printed either way.
fn seed(test: &str) -> u64 {
    let seed = match std::env::var("RACE_SEED") {
        Ok(s) => s.parse().expect("RACE_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    eprintln!("{test}: seed {seed} (RACE_SEED={seed} repeats this run)");
    seed
}

/// A duplex device with a stereo volume control, so the mix calls reach the device.
fn device() -> ModelConfig {
    let mut cfg = ModelConfig::hmulti_full(2);
    cfg.offer_ctls = true;
    cfg.controls = vec![ControlConfig::integer(
        "Master Playback Volume",
        VIRTIO_SND_CTL_ROLE_VOLUME << 1,
        2,
        0,
        100,
        50,
    )];
    cfg
}

/// Interrupts for repetition `rep`: per queue, or shared with spurious ones seeded by `seed`.
fn interrupts(rep: u64, seed: u64) -> Interrupts {
    if rep.is_multiple_of(2) {
        Interrupts::PerQueue
    } else {
        Interrupts::Shared { seed }
    }
}

fn load(irq: Interrupts) -> Addon {
    let env = EnvConfig {
        interrupts: irq,
        ..EnvConfig::default()
    };
    Addon::load_in(addon(), device(), None, env, |_| {}).unwrap()
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 131 + seed * 17) % 251) as u8)
        .collect()
}

const CHOICE: Choice = Choice {
    rate: Some(hm::B_SR_48000),
    format: Some(hm::B_FMT_16BIT),
};

/// What an exchange thread saw.
#[derive(Debug, Default)]
struct Exchanges {
    /// (status, simulated µs it began at, µs it took) of each exchange.
    calls: Vec<(i32, i64, i64)>,
}

/// The media add-on's exchange loop on its own simulated thread: up to `count` exchanges,
/// each filling the buffer before the reported one, ignoring errors, until one answers
/// `B_FILE_ERROR` (the descriptor is closed). `inside` is set while an exchange is in the
/// driver.
fn exchange_thread(
    a: &Addon,
    d: Arc<SharedDevice>,
    mut s: Session,
    count: usize,
    inside: Arc<AtomicBool>,
) -> sim_kernel::SimThread<(Exchanges, Session)> {
    let clock = a.kernel().clock().clone();
    a.kernel().spawn("media add-on output thread", move || {
        let mut seen = Exchanges::default();
        let n = s.play.len().max(1);
        for k in 0..count {
            let t0 = clock.now();
            inside.store(true, Ordering::SeqCst);
            let r = s.exchange(&*d);
            inside.store(false, Ordering::SeqCst);
            seen.calls.push((r, t0, clock.now() - t0));
            if r == hd::B_FILE_ERROR {
                break;
            }
            let cycle = s.info.playback_buffer_cycle;
            if (0..n as i32).contains(&cycle) {
                let chunk = pattern(s.play.bytes(), k);
                let _ = s.play.write(&*d, (cycle as usize + n - 1) % n, &chunk);
            }
        }
        (seen, s)
    })
}

/// After a race: FORCE_STOP, the buffers asked for again, and a run that must play bit
/// for bit: whatever the race did, the card is in a state the media add-on can use.
fn plays_bit_exact(a: &Addon, d: &dyn Hmulti, s: &mut Session, what: &str) {
    s.force_stop(d);
    s.format.output.rate = hm::B_SR_48000;
    s.format.input.rate = hm::B_SR_48000;
    s.format.output.format = hm::B_FMT_16BIT;
    s.format.input.format = hm::B_FMT_16BIT;
    let mut f = s.format;
    assert_eq!(
        client::ioctl(d, hm::B_MULTI_SET_GLOBAL_FORMAT, &mut f),
        0,
        "{what}"
    );
    s.get_buffers(d).unwrap();
    let before = a.model().played(0).len();
    let input = pattern(s.play.bytes() * 8, 99);
    let p = play(d, s, &input);
    assert_eq!(p.errors, 0, "{what}: exchanges failed after the race");
    s.check_played(
        &a.model().played(0)[before..],
        p.buffers * s.play.bytes(),
        &input,
    )
    .unwrap_or_else(|e| panic!("{what}: after the race: {e}"));
}

/// The one call the other thread makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    GetMix,
    SetMix,
    SetGlobalFormat,
    GetBuffers,
    ForceStop,
}

fn call(d: &dyn Hmulti, s: &Session, what: Call, rng: &mut SmallRng) -> i32 {
    match what {
        Call::GetMix | Call::SetMix => {
            let gain = s
                .controls
                .iter()
                .find(|c| c.flags == hm::B_MULTI_MIX_GAIN)
                .expect("a gain control");
            let mut v: hm::MultiMixValue = zerocopy::FromZeros::new_zeroed();
            v.id = gain.id;
            if what == Call::SetMix {
                v.u.set_gain(&(rng.random_range(-40..=0) as f32));
            }
            let addr = d.user_alloc(core::mem::size_of::<hm::MultiMixValue>());
            d.user_write(addr, v.as_bytes());
            let mut info: hm::MultiMixValueInfo = zerocopy::FromZeros::new_zeroed();
            info.item_count = 1;
            info.values = UserPtr::from_addr(addr);
            let op = if what == Call::GetMix {
                hm::B_MULTI_GET_MIX
            } else {
                hm::B_MULTI_SET_MIX
            };
            let r = client::ioctl(d, op, &mut info);
            d.user_free(addr);
            r
        }
        Call::SetGlobalFormat => {
            let mut f = s.format;
            let rate = [hm::B_SR_44100, hm::B_SR_96000, hm::B_SR_8000][rng.random_range(0..3)];
            f.output.rate = rate;
            f.input.rate = rate;
            client::ioctl(d, hm::B_MULTI_SET_GLOBAL_FORMAT, &mut f)
        }
        Call::GetBuffers => {
            // The client's own GET_BUFFERS on a session of its own, as a second thread of
            // the team asking for the buffers again.
            let mut other = Session::init(d, CHOICE).unwrap();
            let r = other.get_buffers(d).map_or(-1, |()| 0);
            other.release(d);
            r
        }
        Call::ForceStop => s.force_stop(d),
    }
}

/// Another thread calls each of GET_MIX, SET_MIX, SET_GLOBAL_FORMAT, GET_BUFFERS and
/// FORCE_STOP while the exchange thread streams, at a random moment: the call succeeds,
/// every exchange returns within its timeout, the simulated kernel records no misuse, a
/// run afterwards plays bit for bit, and the add-on unloads clean.
#[test]
fn ioctls_while_an_exchange_is_blocked() {
    const REPS: u64 = 8;
    let base = seed("ioctls_while_an_exchange_is_blocked");
    let calls = [
        Call::GetMix,
        Call::SetMix,
        Call::SetGlobalFormat,
        Call::GetBuffers,
        Call::ForceStop,
    ];
    for what in calls {
        let mut overlapped = 0;
        let mut slowest = 0;
        for rep in 0..REPS {
            let seed = base.wrapping_add(rep * 31 + what as u64);
            let mut rng = SmallRng::seed_from_u64(seed);
            let irq = interrupts(rep, seed);
            let tag = format!("{what:?}, repetition {rep}, seed {seed}, {irq:?}");
            let a = load(irq);
            let path = a.paths[0].clone();
            let d = a.open_shared(&path).unwrap();
            // The other thread's view of the session (its controls and format), then the
            // exchange thread's session (whose buffers are the current ones).
            let view = Session::init(&*d, CHOICE).unwrap();
            let s = Session::init(&*d, CHOICE).unwrap();
            let period = s.play.frames as i64 * 1_000_000 / 48_000;
            let inside = Arc::new(AtomicBool::new(false));
            let t = exchange_thread(&a, d.clone(), s, 40, inside.clone());
            // Anywhere in the first 30 periods, not on a period boundary.
            a.kernel()
                .clock()
                .advance_by(rng.random_range(period..30 * period));
            let during = inside.load(Ordering::SeqCst);
            let r = call(&*d, &view, what, &mut rng);
            assert_eq!(r, 0, "{tag}: the call failed");
            let (seen, mut s) = t.join();
            if during {
                overlapped += 1;
            }
            for &(status, _, took) in &seen.calls {
                slowest = slowest.max(took);
                assert!(
                    took <= 4 * period + 100_000,
                    "{tag}: an exchange took {took} µs (status {status:#x})"
                );
            }
            assert!(
                a.kernel().failures().is_empty(),
                "{tag}: {:#?}",
                a.kernel().failures()
            );
            plays_bit_exact(&a, &*d, &mut s, &tag);
            s.release(&*d);
            view.release(&*d);
            assert_eq!(d.close(), 0, "{tag}");
            drop(d);
            a.unload()
                .unwrap_or_else(|v| panic!("{tag}: {}", v.join("\n")));
        }
        eprintln!(
            "{what:?}: {REPS} repetitions, {overlapped} landed while an exchange was blocked; \
             slowest exchange {slowest} µs"
        );
        assert!(
            overlapped * 2 >= REPS,
            "{what:?}: only {overlapped} of {REPS} calls landed during an exchange"
        );
    }
}

/// `close` on the descriptor while the exchange thread is blocked in BUFFER_EXCHANGE, at
/// a random moment, with interrupts per queue or shared (spurious ones at random moments):
/// close answers at once, the blocked exchange returns within its timeout, the next call
/// gets `B_FILE_ERROR` from devfs, and `free` runs when the exchange returns (on its
/// thread, as Haiku's `put_fd` does) while the device's interrupts keep arriving. Nothing
/// the card freed is used afterwards (the simulated kernel records a semaphore released or
/// deleted after its deletion, an area deleted under a chain the device holds, a DMA into a
/// deleted area), the card can be opened again and plays bit for bit, and the add-on unloads
/// clean.
#[test]
fn close_then_free_while_an_exchange_is_blocked() {
    const REPS: u64 = 16;
    let base = seed("close_then_free_while_an_exchange_is_blocked");
    let mut overlapped = 0;
    let mut during_teardown = 0;
    let mut slowest = 0;
    for rep in 0..REPS {
        let seed = base.wrapping_add(rep);
        let mut rng = SmallRng::seed_from_u64(seed);
        let irq = interrupts(rep, seed);
        let tag = format!("repetition {rep}, seed {seed}, {irq:?}");
        let a = load(irq);
        let path = a.paths[0].clone();
        let d = a.open_shared(&path).unwrap();
        let s = Session::init(&*d, CHOICE).unwrap();
        let period = s.play.frames as i64 * 1_000_000 / 48_000;
        let inside = Arc::new(AtomicBool::new(false));
        let t = exchange_thread(&a, d.clone(), s, 200, inside.clone());
        let clock = a.kernel().clock().clone();
        clock.advance_by(rng.random_range(period..30 * period));
        let during = inside.load(Ordering::SeqCst);
        let irqs_before = a.env().interrupt_stats().callbacks;
        assert_eq!(d.close(), 0, "{tag}: close");
        let (seen, s) = t.join();
        let irqs_after = a.env().interrupt_stats().callbacks;
        if during {
            overlapped += 1;
        }
        if irqs_after > irqs_before {
            during_teardown += 1;
        }
        let (last, rest) = seen.calls.split_last().unwrap();
        assert_eq!(
            last.0,
            hd::B_FILE_ERROR,
            "{tag}: the call after close: {last:?}"
        );
        if during {
            // The exchange in flight at close returned in time.
            let took = rest.last().map_or(0, |c| c.2);
            slowest = slowest.max(took);
            assert!(took <= 4 * period + 100_000, "{tag}: {took} µs");
        }
        assert!(
            a.kernel().failures().is_empty(),
            "{tag}: {:#?}",
            a.kernel().failures()
        );
        // free ran: the card's slot is free again (a card still open answers B_BUSY).
        let d2 = a
            .open_first()
            .unwrap_or_else(|e| panic!("{tag}: reopen: {e}"));
        s.release(&*d);
        let mut s2 = Session::init(&d2, CHOICE).unwrap();
        plays_bit_exact(&a, &d2, &mut s2, &tag);
        s2.release(&d2);
        assert_eq!(d2.close(), 0, "{tag}");
        drop(d);
        a.unload()
            .unwrap_or_else(|v| panic!("{tag}: {}", v.join("\n")));
    }
    eprintln!(
        "close: {REPS} repetitions, {overlapped} while an exchange was blocked, {during_teardown} \
         with interrupts delivered between close and the end of free; slowest exchange in \
         flight at close {slowest} µs"
    );
    assert!(overlapped * 2 >= REPS, "{overlapped} of {REPS}");
    assert!(during_teardown * 2 >= REPS, "{during_teardown} of {REPS}");
}

/// The device leaves the machine while the exchange thread streams, at a random moment
/// (`Environment::remove_device`: the device stops answering, then the device manager
/// calls `device_removed`, with the driver cookie on nightly and the node on R1/beta5):
/// the blocked exchange and every later one return an error within the exchange timeout
/// (and none returns at once, which would make the media add-on spin), the device cannot
/// be opened again, `close` returns, `free` and `uninit_driver` run when the exchange
/// thread lets go, and nothing is misused; what the device kept is leaked (logged), never
/// freed.
#[test]
fn the_device_removed_during_playback() {
    const REPS: u64 = 8;
    let base = seed("the_device_removed_during_playback");
    let mut slowest_close = 0;
    let mut slowest_exchange = 0;
    let mut slowest_teardown = 0;
    for rep in 0..REPS {
        let seed = base.wrapping_add(rep);
        let mut rng = SmallRng::seed_from_u64(seed);
        let irq = interrupts(rep, seed);
        let haiku = if rep % 4 < 2 {
            haiku_sim::HaikuRelease::Nightly
        } else {
            haiku_sim::HaikuRelease::Beta5
        };
        let tag = format!("repetition {rep}, seed {seed}, {irq:?}, {haiku:?}");
        let env = EnvConfig {
            interrupts: irq,
            haiku,
            ..EnvConfig::default()
        };
        let a = Addon::load_in(addon(), device(), None, env, |_| {}).unwrap();
        let path = a.paths[0].clone();
        let d = a.open_shared(&path).unwrap();
        let s = Session::init(&*d, CHOICE).unwrap();
        let period = s.play.frames as i64 * 1_000_000 / 48_000;
        let inside = Arc::new(AtomicBool::new(false));
        let t = exchange_thread(&a, d.clone(), s, 100_000, inside.clone());
        let clock = a.kernel().clock().clone();
        clock.advance_by(rng.random_range(period..30 * period));
        let removed_at = clock.now();
        a.env().remove_device();
        assert!(
            a.kernel().log_contains("device removed"),
            "{tag}: {:#?}",
            a.kernel().log_lines()
        );
        // The media add-on notices a while later and closes.
        clock.advance_by(rng.random_range(10 * period..50 * period));
        assert!(a.open_first().is_err(), "{tag}: opened a removed device");
        let t_close = clock.now();
        assert_eq!(d.close(), 0, "{tag}: close");
        slowest_close = slowest_close.max(clock.now() - t_close);
        let (seen, s) = t.join();
        // The exchange in flight at close returns within a period, and free waits for no
        // answer that cannot come.
        let teardown = clock.now() - t_close;
        slowest_teardown = slowest_teardown.max(teardown);
        assert!(
            teardown <= 4 * period + 100_000,
            "{tag}: the exchange thread ended {teardown} µs after close"
        );
        let (last, rest) = seen.calls.split_last().unwrap();
        assert_eq!(last.0, hd::B_FILE_ERROR, "{tag}");
        // The exchanges after the removal: each an error, none at once, none for long.
        let after: Vec<(i32, i64)> = rest
            .iter()
            .filter(|&&(_, start, took)| start + took > removed_at)
            .map(|&(status, _, took)| (status, took))
            .collect();
        assert!(after.len() >= 5, "{tag}: {after:?}");
        for &(status, took) in &after {
            slowest_exchange = slowest_exchange.max(took);
            assert!(
                status != 0 && (1_000..=4 * period + 100_000).contains(&took),
                "{tag}: an exchange after the removal: status {status:#x} in {took} µs"
            );
        }
        assert!(
            a.kernel().failures().is_empty(),
            "{tag}: {:#?}",
            a.kernel().failures()
        );
        s.release(&*d);
        drop(d);
        // What the device held when it went (the streams' headers and the buffers) is
        // leaked, and nothing else is left behind.
        let problems = a.unload().unwrap_err();
        for p in &problems {
            assert!(
                ["\"virtio_sound pcm headers\"", "\"virtio_sound buffers\""]
                    .iter()
                    .any(|name| p.contains(name) && p.ends_with("is still alive")),
                "{tag}: {problems:#?}"
            );
        }
    }
    // Removed while nothing is open: the driver's own hook finds its driver by the cookie
    // (nightly) or the node (R1/beta5), and uninit_driver follows at once.
    for haiku in [
        haiku_sim::HaikuRelease::Nightly,
        haiku_sim::HaikuRelease::Beta5,
    ] {
        let env = EnvConfig {
            haiku,
            ..EnvConfig::default()
        };
        let a = Addon::load_in(addon(), device(), None, env, |_| {}).unwrap();
        a.env().remove_device();
        assert!(
            a.kernel().log_contains("the device was removed"),
            "{haiku:?}: {:#?}",
            a.kernel().log_lines()
        );
        assert!(a.open_first().is_err(), "{haiku:?}");
        a.unload()
            .unwrap_or_else(|v| panic!("{haiku:?}: {}", v.join("\n")));
    }
    eprintln!(
        "device removed: {REPS} repetitions; slowest close {slowest_close} µs, slowest \
         exchange after the removal {slowest_exchange} µs, slowest end of the exchange \
         thread after close {slowest_teardown} µs"
    );
}
