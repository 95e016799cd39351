//! `--latency`: per rate, the smallest buffering (frames per buffer x buffer count, set through
//! the driver's settings file) that plays a long run with 0 xruns, for `cargo xtask sim` (the
//! built add-on in the simulator, the client's wake-ups late by [`Jitter`]) and
//! `cargo xtask qemu` (the add-on on QEMU's device, real scheduling).
//!
//! The search ([`search`]) takes the buffer counts one at a time. For a fixed count, more
//! frames per buffer never make an xrun more likely (a longer period is more slack for a late
//! client), so it bisects the frames: the largest candidate below the best total so far is
//! tried first, and if it passes, smaller ones. The total alone is not such an order: 3 x 96
//! frames fails where 5 x 48, less in all, passes (capture's slack is about
//! `(count - 2)` periods, see docs/latency.md). The winner is the smallest total that passed;
//! within its count, the next smaller candidate was tried and failed, and every count was
//! searched below it.
//!
//! Start-up latency is measured as `sim-guest` does for QEMU: from the open to the
//! `played_real_time` of the first exchange that reports played frames (the device has taken
//! the first buffer).

use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;

use hmulti_client::{self as client, Choice, Session};
use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use spec::hmulti_audio as hm;

use crate::Result;

/// Options of `--latency`, shared by `cargo xtask sim` and `cargo xtask qemu`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LatencyArgs {
    /// Find, per rate, the smallest frames-per-buffer x buffer-count that plays a long run
    /// with 0 xruns (the driver's settings file sets each candidate), and print a table.
    #[arg(long)]
    pub latency: bool,
    /// The rates of `--latency`, comma-separated (default 44100,48000,96000).
    #[arg(long, value_delimiter = ',', requires = "latency")]
    pub latency_rates: Vec<u32>,
    /// The candidates of `--latency`, comma-separated FRAMESxCOUNT (e.g. 240x2,480x4);
    /// default: periods of 0.5 to 40 ms (whole 8 frames) x 2 to 8 buffers in the
    /// simulator, 256 to 2048 frames x 2 or 4 buffers on QEMU.
    #[arg(long, value_delimiter = ',', requires = "latency")]
    pub candidates: Vec<Candidate>,
    /// Seconds each candidate plays (default: 600 simulated seconds in the simulator, 60 s
    /// on QEMU).
    #[arg(long, requires = "latency")]
    pub latency_seconds: Option<f64>,
    /// The seed of the simulator's wake-up jitter (each run draws from its own stream:
    /// the seed, the rate and the candidate).
    #[arg(long, default_value_t = 1, requires = "latency")]
    pub jitter_seed: u64,
}

/// Rates of `--latency` when none are given.
pub const DEFAULT_RATES: [u32; 3] = [44100, 48000, 96000];

/// What `--latency-seconds` may be.
pub const SECONDS: std::ops::RangeInclusive<f64> = 0.05..=3600.0;

impl LatencyArgs {
    /// The rates to sweep, each checked against `valid`.
    pub fn rates(&self, valid: &[u32], what: &str) -> Result<Vec<u32>> {
        let rates = if self.latency_rates.is_empty() {
            DEFAULT_RATES.to_vec()
        } else {
            self.latency_rates.clone()
        };
        for &hz in &rates {
            crate::simcmd::check_rate("--latency-rates", hz, valid, what)?;
        }
        Ok(rates)
    }

    /// `--latency-seconds` or `default`, checked.
    pub fn seconds(&self, default: f64) -> Result<f64> {
        let s = self.latency_seconds.unwrap_or(default);
        if !SECONDS.contains(&s) {
            return Err(format!(
                "--latency-seconds {s}: out of range; use {} to {}",
                SECONDS.start(),
                SECONDS.end()
            )
            .into());
        }
        Ok(s)
    }

    /// `--candidates` (sorted as the search needs), or `default` at `rate`.
    pub fn candidates(&self, rate: u32, default: fn(u32) -> Vec<Candidate>) -> Vec<Candidate> {
        if self.candidates.is_empty() {
            default(rate)
        } else {
            sorted(self.candidates.clone())
        }
    }
}

/// One buffering to try: `buffers` buffers of `frames` frames per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    pub frames: u32,
    pub buffers: u32,
}

/// The driver's documented limits of the settings file's keys (README, "Settings"): frames
/// per buffer 16 to 65536, 2 to 32 buffers.
pub const FRAMES: std::ops::RangeInclusive<u32> = 16..=65536;
pub const BUFFERS: std::ops::RangeInclusive<u32> = 2..=32;

impl FromStr for Candidate {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Candidate, String> {
        let bad = || format!("candidate {s:?}: write FRAMESxCOUNT, e.g. 240x2");
        let (f, n) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let frames: u32 = f.trim().parse().map_err(|_| bad())?;
        let buffers: u32 = n.trim().parse().map_err(|_| bad())?;
        if !FRAMES.contains(&frames) {
            return Err(format!(
                "candidate {s:?}: {frames} frames per buffer; the driver takes {} to {}",
                FRAMES.start(),
                FRAMES.end()
            ));
        }
        if !BUFFERS.contains(&buffers) {
            return Err(format!(
                "candidate {s:?}: {buffers} buffers; the driver takes {} to {}",
                BUFFERS.start(),
                BUFFERS.end()
            ));
        }
        Ok(Candidate { frames, buffers })
    }
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} x {}", self.buffers, self.frames)
    }
}

impl Candidate {
    /// Frames of all the buffers of one direction.
    pub fn total_frames(&self) -> u64 {
        u64::from(self.frames) * u64::from(self.buffers)
    }

    /// The total buffering in ms at `rate`.
    pub fn ms(&self, rate: u32) -> f64 {
        self.total_frames() as f64 * 1000.0 / f64::from(rate.max(1))
    }

    /// The driver's settings file for this candidate (addon/src/settings.rs's keys).
    pub fn settings(&self) -> String {
        format!(
            "frames_per_buffer {}\nbuffer_count {}\n",
            self.frames, self.buffers
        )
    }
}

/// Sorted as the search needs: total buffering ascending, then fewer buffers first (of two
/// with the same total, more buffers leave the client more of it, so fewer is the harder).
/// Duplicates go.
pub fn sorted(mut c: Vec<Candidate>) -> Vec<Candidate> {
    c.sort_by_key(|c| (c.total_frames(), c.buffers));
    c.dedup();
    c
}

/// Frames of a period of `us` µs at `rate`, rounded up to whole 8 frames, within [`FRAMES`].
fn period_frames(rate: u32, us: u32) -> u32 {
    let f = (u64::from(rate) * u64::from(us)).div_ceil(1_000_000);
    (f.div_ceil(8) * 8).clamp(u64::from(*FRAMES.start()), u64::from(*FRAMES.end())) as u32
}

/// The simulator's default candidates at `rate`: periods of 0.5, 0.75, 1, 1.25, 1.5, 2, 2.5,
/// 3, 4, 5, 7.5, 10, 15, 20 and 40 ms, each as 2 to 8 buffers.
pub fn sim_candidates(rate: u32) -> Vec<Candidate> {
    let periods_us = [
        500, 750, 1000, 1250, 1500, 2000, 2500, 3000, 4000, 5000, 7500, 10_000, 15_000, 20_000,
        40_000,
    ];
    let mut c = Vec::new();
    for us in periods_us {
        for buffers in 2..=8 {
            c.push(Candidate {
                frames: period_frames(rate, us),
                buffers,
            });
        }
    }
    sorted(c)
}

/// QEMU's default candidates: 256, 512, 1024 and 2048 frames, 2 or 4 buffers (QEMU's wav
/// backend moves 1024 frames per tick, and the server tests need 4 x 2048 under TCG).
pub fn qemu_candidates(_rate: u32) -> Vec<Candidate> {
    let mut c = Vec::new();
    for frames in [256, 512, 1024, 2048] {
        for buffers in [2, 4] {
            c.push(Candidate { frames, buffers });
        }
    }
    sorted(c)
}

/// What one candidate's run gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub candidate: Candidate,
    /// Xruns seen (both directions); a simulator run stops at the first.
    pub xruns: u64,
    /// Where what the device played stopped being what the client played (QEMU's wav
    /// recording, [`crate::qemu::gaps`]); `None` where the sound is not judged (the
    /// simulator).
    pub gaps: Option<Vec<crate::qemu::gaps::Gap>>,
    /// Seconds of audio the run played (less than asked when it stopped at an xrun).
    pub seconds: f64,
    /// Open to the first frames reported played, µs.
    pub startup_us: Option<i64>,
    /// Anything worth a note (the first xrun's time, the guest's wake-up lateness).
    pub note: String,
}

impl Trial {
    /// No xrun, and no gap in the sound where it was judged.
    pub fn passed(&self) -> bool {
        self.xruns == 0 && self.gaps.as_ref().is_none_or(Vec::is_empty)
    }

    /// The gaps' count, `-` where the sound was not judged.
    fn gap_count(&self) -> String {
        self.gaps
            .as_ref()
            .map_or("-".into(), |g| g.len().to_string())
    }
}

/// The search's outcome: every trial in the order run, and the winner's index in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub rate: u32,
    pub trials: Vec<Trial>,
    pub winner: Option<usize>,
}

/// Finds the candidate with the smallest total buffering that `run` passes, bisecting the
/// frames per buffer of each buffer count (counts in ascending order) below the best total
/// found so far.
pub fn search(
    rate: u32,
    candidates: &[Candidate],
    mut run: impl FnMut(Candidate) -> Result<Trial>,
) -> Result<Sweep> {
    let mut trials: Vec<Trial> = Vec::new();
    let mut winner: Option<usize> = None;
    let mut counts: Vec<u32> = candidates.iter().map(|c| c.buffers).collect();
    counts.sort_unstable();
    counts.dedup();
    for n in counts {
        let best = winner.map(|w| trials[w].candidate.total_frames());
        // This count's candidates that would beat the best, by frames ascending.
        let mut group: Vec<Candidate> = candidates
            .iter()
            .copied()
            .filter(|c| c.buffers == n && best.is_none_or(|b| c.total_frames() < b))
            .collect();
        group.sort_by_key(|c| c.frames);
        group.dedup();
        let Some(last) = group.len().checked_sub(1) else {
            continue;
        };
        let t = run(group[last])?;
        let passed = t.passed();
        trials.push(t);
        if !passed {
            continue;
        }
        winner = Some(trials.len() - 1);
        // Invariant: group[hi] passed; everything before lo that was tried failed.
        let (mut lo, mut hi) = (0, last);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let t = run(group[mid])?;
            let passed = t.passed();
            trials.push(t);
            if passed {
                hi = mid;
                winner = Some(trials.len() - 1);
            } else {
                lo = mid + 1;
            }
        }
    }
    Ok(Sweep {
        rate,
        trials,
        winner,
    })
}

/// The table of one rate: each candidate tried (smallest first), its xruns and gaps, its
/// total buffering, its start-up latency, the winner, and `reference` (the driver's
/// defaults' run) below.
pub fn table(s: &Sweep, seconds: f64, reference: Option<&Trial>) -> String {
    let mut order: Vec<usize> = (0..s.trials.len()).collect();
    order.sort_by_key(|&i| {
        let c = s.trials[i].candidate;
        (c.total_frames(), c.buffers)
    });
    let mut t = format!("{} Hz, {seconds} s per candidate:\n", s.rate);
    let _ = writeln!(
        t,
        "  {:<14} {:>10} {:>7} {:>5} {:>10}  note",
        "buffers", "buffering", "xruns", "gaps", "start-up"
    );
    let row = |t: &mut String, mark: &str, tr: &Trial| {
        let _ = writeln!(
            t,
            "{mark} {:<14} {:>7.2} ms {:>7} {:>5} {:>10}  {}",
            tr.candidate.to_string(),
            tr.candidate.ms(s.rate),
            tr.xruns,
            tr.gap_count(),
            tr.startup_us
                .map_or("-".into(), |u| format!("{:.2} ms", u as f64 / 1000.0)),
            tr.note
        );
    };
    for i in order {
        let mark = if Some(i) == s.winner { "*" } else { " " };
        row(&mut t, mark, &s.trials[i]);
    }
    match s.winner.map(|w| &s.trials[w]) {
        Some(w) => {
            let _ = writeln!(
                t,
                "  winner: {} frames ({:.2} ms of buffering), 0 xruns{} over {:.1} s",
                w.candidate,
                w.candidate.ms(s.rate),
                if w.gaps.is_some() { ", 0 gaps" } else { "" },
                w.seconds
            );
        }
        None => {
            let _ = writeln!(
                t,
                "  winner: none (the largest candidate had xruns or gaps; try larger ones)"
            );
        }
    }
    if let Some(r) = reference {
        let _ = write!(t, "  driver default: ");
        row(&mut t, "", r);
    }
    t
}

/// The client's wake-up lateness in the simulator: how long after a BUFFER_EXCHANGE returns
/// the media add-on's thread is really running again, drawn from a seeded generator
/// (xorshift, `rand_xorshift`: the same seed gives the same delays on every machine).
///
/// A delay is `base + Exp(mean)`, plus with probability `stall_chance` a stall uniform in
/// `0..stall_max`. Why these numbers ([`Jitter::HAIKU`]):
///
/// - Haiku runs the multi_audio node's exchange loop in a thread spawned at
///   `B_REAL_TIME_PRIORITY` (120) (`MultiAudioNode::_StartOutputThreadIfNeeded` in
///   `src/add-ons/media/media-add-ons/multi_audio/MultiAudioNode.cpp`). Threads at or above
///   `B_FIRST_REAL_TIME_PRIORITY` (100, `headers/os/kernel/OS.h`) never get the scheduler's
///   priority penalty (`ThreadData::_IncreasePenalty`, `src/system/kernel/scheduler/
///   scheduler_thread.h`), and a thread made ready with a higher priority than the running
///   one makes its CPU reschedule at once, by an inter-processor interrupt if it is another
///   CPU (`enqueue` in `src/system/kernel/scheduler/scheduler.cpp`); Haiku's own audio
///   drivers release the exchange's semaphore with `B_DO_NOT_RESCHEDULE` and return
///   `B_INVOKE_SCHEDULER` from the interrupt handler, so the switch happens as the interrupt
///   ends (`src/add-ons/kernel/drivers/audio/hda/hda_controller.cpp`). What still delays it:
///   interrupt and context-switch cost, and another real-time thread (the media
///   server's, other nodes') running; in the low-latency scheduler mode a quantum is 1 ms
///   (`gSchedulerLowLatencyMode`'s base quantum, `src/system/kernel/scheduler/
///   low_latency.cpp`), so a thread of equal priority can hold the CPU about that long.
/// - Measured (`clock_nanosleep` to an absolute deadline every 1 ms, the return's lateness)
///   on the 2-core build host (a virtual machine; 1.2 % of its CPU time is stolen by the
///   hypervisor) under load 6-8, with builds running niced: a SCHED_FIFO thread (Linux's
///   analogue of a real-time priority), 120,000 wake-ups: p50 15 µs, p90 23, p99 73,
///   p99.9 1365, p99.99 2244, max 5778 µs; later than 0.5 ms 0.27 %, than 1 ms 0.16 %, than
///   2 ms 0.03 %, than 5 ms once. A SCHED_OTHER thread beside it: p50 66 µs, p99 4.0 ms,
///   p99.9 10 ms, max 32 ms. In the QEMU guest under TCG the exchange's return after its
///   period's timestamp is worse (`cargo xtask qemu --latency` prints it): the guest's
///   virtual CPU is itself a host thread.
///
/// So, fitted to the real-time thread: a base of 10 µs (timer and switch cost), an
/// exponential body of mean 8 µs (p50 16, p90 28, p99 47 µs), and 3 wake-ups in 1000
/// stalled by up to 3 ms (uniform: 0.25 % beyond 0.5 ms, 0.2 % beyond 1 ms, 0.1 % beyond
/// 2 ms; Haiku's low-latency quantum is 1 ms, so that is up to three quanta of other
/// real-time threads). The single 5.8 ms wake-up in 120,000 is left out: a thread at the
/// highest priority on an idle-free host that still waits 5.8 ms was not scheduled by the
/// hypervisor, which a Haiku on bare metal does not have. The model is pessimistic for
/// Haiku on bare metal everywhere else.
#[derive(Debug, Clone)]
pub struct Jitter {
    pub params: JitterParams,
    rng: XorShiftRng,
}

/// The numbers of a [`Jitter`] model, in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterParams {
    pub base_us: f64,
    pub mean_us: f64,
    pub stall_chance: f64,
    pub stall_max_us: f64,
}

impl Jitter {
    /// The model of the media add-on's real-time thread on Haiku (see [`Jitter`]).
    pub const HAIKU: JitterParams = JitterParams {
        base_us: 10.0,
        mean_us: 8.0,
        stall_chance: 0.003,
        stall_max_us: 3000.0,
    };

    /// A model with `params`, its stream picked by `seed`.
    pub fn new(params: JitterParams, seed: u64) -> Jitter {
        Jitter {
            params,
            rng: XorShiftRng::seed_from_u64(seed),
        }
    }

    /// The stream of one run: `seed` mixed with the rate and the candidate, so that each
    /// run is reproducible alone.
    pub fn for_run(params: JitterParams, seed: u64, rate: u32, c: Candidate) -> Jitter {
        let mix = seed
            ^ u64::from(rate).rotate_left(32)
            ^ u64::from(c.frames).rotate_left(8)
            ^ u64::from(c.buffers).rotate_left(56);
        Jitter::new(params, mix)
    }

    /// The next wake-up delay in whole µs.
    pub fn next_us(&mut self) -> i64 {
        let p = self.params;
        // Exp(mean) by inversion; 1 - u is in (0, 1].
        let u: f64 = self.rng.random();
        let mut d = p.base_us - p.mean_us * (1.0 - u).ln();
        let s: f64 = self.rng.random();
        if s < p.stall_chance {
            let w: f64 = self.rng.random();
            d += w * p.stall_max_us;
        }
        d.round() as i64
    }
}

/// One simulator run of `c` at `rate` for `seconds` simulated seconds (stopped at the first
/// xrun), the client late by `jitter` after every exchange; `None` runs the driver's
/// defaults (no settings file) for the reference row.
pub fn sim_trial(
    addon: &Path,
    rate: u32,
    c: Option<Candidate>,
    seconds: f64,
    jitter: &mut Jitter,
) -> Result<Trial> {
    let settings = c.map(|c| c.settings());
    let config = snd_model::ModelConfig::hmulti_full(2);
    let host = haiku_sim::addon::Addon::load_in(
        addon,
        config,
        settings.as_deref(),
        haiku_sim::EnvConfig::default(),
        |_| {},
    )
    .map_err(|e| format!("loading {}: {e}", addon.display()))?;
    let r = sim_play(&host, rate, c, seconds, jitter);
    let unloaded = host.unload();
    let t = r?;
    if let Err(left) = unloaded {
        return Err(format!("{}: unload: {}", t.candidate, left.join("; ")).into());
    }
    Ok(t)
}

fn sim_play(
    host: &haiku_sim::addon::Addon,
    rate: u32,
    c: Option<Candidate>,
    seconds: f64,
    jitter: &mut Jitter,
) -> Result<Trial> {
    let clock = host.kernel().clock().clone();
    let rate_bit = client::rate_bit(rate).ok_or(format!("{rate} Hz has no hmulti bit"))?;
    let opened = clock.now();
    let dev = host.open_first()?;
    let mut s = Session::init(
        &dev,
        Choice {
            rate: Some(rate_bit),
            format: Some(hm::B_FMT_16BIT),
        },
    )?;
    let got = Candidate {
        frames: s.play.frames as u32,
        buffers: s.play.len() as u32,
    };
    if let Some(want) = c {
        if got != want {
            return Err(format!(
                "asked the driver for {want} frames through its settings file, got {got}"
            )
            .into());
        }
    }
    let n = s.play.len().max(1);
    // A 997 Hz tone, one buffer's worth, written again and again.
    let tone = hmulti_client::wav::Wav::sine(
        997.0,
        rate,
        2,
        hmulti_client::wav::SampleFormat::S16,
        got.frames as f64 / f64::from(rate),
    );
    let mut chunk = tone.data;
    chunk.resize(s.play.bytes(), 0);
    let model = host.model();
    let end = opened + (seconds * 1e6) as i64;
    let mut startup = None;
    let mut first_xrun = None;
    let mut exchanges = 0u64;
    let mut late_max = 0i64;
    let mut last_late = 0i64;
    while clock.now() < end {
        let _ = s.exchange(&dev);
        exchanges += 1;
        if startup.is_none() && s.info.played_frames_count > 0 {
            startup = Some(s.info.played_real_time - opened);
        }
        let xr = [(0, "playback"), (1, "capture")]
            .into_iter()
            .find_map(|(stream, what)| model.xruns(stream).first().map(|&t| (t, what)));
        if let Some(x) = xr {
            first_xrun = Some(x);
            break;
        }
        let late = jitter.next_us();
        late_max = late_max.max(late);
        last_late = late;
        clock.advance_by(late);
        let cycle = s.info.playback_buffer_cycle;
        if (0..n as i32).contains(&cycle) {
            let _ = s.play.write(&dev, (cycle as usize + n - 1) % n, &chunk);
        }
        if exchanges.is_multiple_of(1024) {
            // Long runs keep no records: memory stays flat.
            let _ = model.take_records(0);
            let _ = model.take_records(1);
        }
    }
    let played_s = (clock.now() - opened) as f64 / 1e6;
    let _ = s.force_stop(&dev);
    s.release(&dev);
    dev.close();
    let note = match first_xrun {
        Some((at, what)) => format!(
            "first xrun ({what}) at {:.3} s, exchange {exchanges}, the client late {last_late} us \
             before it: run stopped",
            (at - opened) as f64 / 1e6
        ),
        None => format!("{exchanges} exchanges, latest wake-up {late_max} us"),
    };
    Ok(Trial {
        candidate: got,
        xruns: u64::from(first_xrun.is_some()),
        gaps: None,
        seconds: played_s,
        startup_us: startup,
        note,
    })
}

/// `cargo xtask sim --latency`: the sweep of every rate, its tables printed as they come.
pub fn run_sim(args: &LatencyArgs, addon: &Path) -> Result {
    let rates = args.rates(
        &crate::simcmd::hmulti_rates(),
        "a rate hmulti has a bit for",
    )?;
    let seconds = args.seconds(600.0)?;
    let p = Jitter::HAIKU;
    println!(
        "client wake-up lateness: {} us + Exp(mean {} us), and 1 in {:.0} wake-ups up to {} \
         us more (seed {})",
        p.base_us,
        p.mean_us,
        1.0 / p.stall_chance,
        p.stall_max_us,
        args.jitter_seed
    );
    for rate in rates {
        let cands = args.candidates(rate, sim_candidates);
        let sweep = search(rate, &cands, |c| {
            let mut j = Jitter::for_run(p, args.jitter_seed, rate, c);
            sim_trial(addon, rate, Some(c), seconds, &mut j)
        })?;
        // The defaults' start-up (a short run: it only has to start).
        let mut j = Jitter::new(p, args.jitter_seed);
        let reference = sim_trial(addon, rate, None, seconds.min(2.0), &mut j)?;
        print!("{}", table(&sweep, seconds, Some(&reference)));
    }
    Ok(())
}

/// One QEMU boot playing `seconds` at `rate` with candidate `c` (`None`: the driver's
/// defaults), through QEMU's `wav` backend; xruns are the guest's: exchanges after which
/// more than one buffer had completed (the client late) and exchanges that found the device
/// with nothing queued (it ran dry). The guest plays the [`probe`](crate::qemu::gaps::probe)
/// throughout, and the gaps are where QEMU's recording of it stops being it.
pub fn qemu_trial(
    guest: &crate::qemu::Guest,
    rate: u32,
    c: Option<Candidate>,
    seconds: f64,
    timeout: std::time::Duration,
) -> Result<Trial> {
    use crate::qemu::{run_dir, Audiodev, GuestRun, GUEST_ADDON, GUEST_INPUT};
    let dir = run_dir()?;
    let mut guest = guest.clone();
    if let Some(c) = c {
        let path = dir.path().join("virtio_sound.settings");
        std::fs::write(&path, c.settings()).map_err(|e| format!("{}: {e}", path.display()))?;
        guest.settings = Some(path);
    } else {
        guest.settings = None;
    }
    // One cycle of the probe, repeated by the guest until `seconds` have passed
    // (sim-guest's --min-seconds with --repeat, which counts the frames as here): the
    // initramfs stays small however long the run, and the signal is known throughout.
    let frames = (seconds * f64::from(rate)) as usize;
    let wav = crate::qemu::gaps::probe(rate, frames.min(crate::qemu::gaps::PROBE_CYCLE));
    let frames = frames.max(wav.frames());
    let played = dir.path().join("played.wav");
    let run = GuestRun {
        args: vec![
            "play".into(),
            "--addon".into(),
            GUEST_ADDON.into(),
            "--input".into(),
            GUEST_INPUT.into(),
            "--min-seconds".into(),
            seconds.to_string(),
            "--repeat".into(),
        ],
        files: vec![(GUEST_INPUT.to_string(), wav.to_bytes()?)],
        audiodev: Audiodev::Wav {
            path: played.clone(),
            frequency: rate,
            channels: 2,
        },
        timeout,
        echo: false,
        debugcon: None,
        env: Vec::new(),
    };
    let out = guest.run(&run)?;
    let recording = crate::qemu::read_qemu_wav(&played)?;
    if recording.rate != rate {
        return Err(format!(
            "{}: QEMU recorded at {} Hz, the guest played {rate} Hz",
            played.display(),
            recording.rate
        )
        .into());
    }
    let audit = crate::qemu::gaps::find_gaps(&recording, frames as u64)
        .map_err(|e| format!("{}: {e}", played.display()))?;
    let g = out.results.first().ok_or("the guest printed no result")?;
    let num = |k: &str| g.get(k).and_then(serde_json::Value::as_f64);
    let got = Candidate {
        frames: num("buffer_frames").unwrap_or(0.0) as u32,
        buffers: num("buffers").unwrap_or(0.0) as u32,
    };
    if let Some(want) = c {
        if got != want {
            return Err(format!(
                "asked the driver for {want} frames through its settings file, got {got}"
            )
            .into());
        }
    }
    let late = num("xruns").unwrap_or(0.0) as u64;
    let dry = num("device_ran_dry").unwrap_or(0.0) as u64;
    let ms = |k: &str| num(k).map_or(f64::NAN, |u| u / 1000.0);
    let mut note = format!(
        "client late {late}, device ran dry {dry}, errors {}; the client ran after the \
         period's timestamp: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; recorded: {} frames \
         of lead-in, {frames} of the signal, {} after",
        num("errors").unwrap_or(f64::NAN),
        ms("wake_p50_us"),
        ms("wake_p99_us"),
        ms("wake_max_us"),
        audit.lead,
        audit.trailing,
    );
    for g in audit.gaps.iter().take(5) {
        let _ = write!(note, "; gap {g}");
    }
    if audit.gaps.len() > 5 {
        let _ = write!(note, "; {} more gaps", audit.gaps.len() - 5);
    }
    Ok(Trial {
        candidate: got,
        xruns: late + dry,
        gaps: Some(audit.gaps),
        seconds: num("played_time_us").unwrap_or(0.0) / 1e6,
        startup_us: num("startup_us").map(|u| u as i64),
        note,
    })
}

/// A trial as JSON (`--report`).
fn trial_json(t: &Trial, rate: u32) -> serde_json::Value {
    serde_json::json!({
        "frames": t.candidate.frames,
        "buffers": t.candidate.buffers,
        "buffering_ms": t.candidate.ms(rate),
        "xruns": t.xruns,
        "gaps": t.gaps.as_ref().map(|g| g.iter().map(gap_json).collect::<Vec<_>>()),
        "seconds": t.seconds,
        "startup_us": t.startup_us,
        "note": t.note,
    })
}

/// A gap as JSON (`--report`).
fn gap_json(g: &crate::qemu::gaps::Gap) -> serde_json::Value {
    serde_json::json!({
        "at_frame": g.at,
        "expected_frame": g.expected,
        "frames": g.frames,
        "silent_frames": g.silent,
        "resumed_frame": g.resumed,
        "text": g.to_string(),
    })
}

/// A sweep as JSON (`--report`): its trials in the order run, the winner's index in them,
/// and the driver's defaults' run.
pub fn sweep_json(s: &Sweep, reference: &Trial) -> serde_json::Value {
    serde_json::json!({
        "rate": s.rate,
        "trials": s.trials.iter().map(|t| trial_json(t, s.rate)).collect::<Vec<_>>(),
        "winner": s.winner,
        "default": trial_json(reference, s.rate),
    })
}

/// `cargo xtask qemu --latency`: the sweep of every rate on QEMU's device under real
/// scheduling, its tables printed as they come, and with `report` written as JSON.
pub fn run_qemu(
    args: &LatencyArgs,
    guest: &crate::qemu::Guest,
    timeout: Option<u64>,
    report: Option<&Path>,
) -> Result {
    let rates = args.rates(&crate::qemucmd::qemu_rates(), "a rate QEMU's device offers")?;
    let seconds = args.seconds(60.0)?;
    let timeout =
        std::time::Duration::from_secs(timeout.unwrap_or(120 + 2 * seconds.ceil() as u64));
    let mut all = Vec::new();
    for rate in rates {
        let cands = args.candidates(rate, qemu_candidates);
        let sweep = search(rate, &cands, |c| {
            qemu_trial(guest, rate, Some(c), seconds, timeout)
        })?;
        let reference = qemu_trial(guest, rate, None, seconds.min(5.0), timeout)?;
        print!("{}", table(&sweep, seconds, Some(&reference)));
        all.push(sweep_json(&sweep, &reference));
    }
    if let Some(path) = report {
        let text = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(frames: u32, buffers: u32) -> Candidate {
        Candidate { frames, buffers }
    }

    fn trial(c: Candidate, xruns: u64) -> Trial {
        Trial {
            candidate: c,
            xruns,
            gaps: None,
            seconds: 1.0,
            startup_us: Some(1000),
            note: String::new(),
        }
    }

    #[test]
    fn candidates_parse_and_refuse_what_the_driver_does_not_take() {
        assert_eq!("240x2".parse::<Candidate>(), Ok(c(240, 2)));
        assert_eq!(" 480X4 ".parse::<Candidate>(), Ok(c(480, 4)));
        for bad in [
            "240", "x2", "240x", "8x2", "240x1", "240x33", "70000x2", "ax2",
        ] {
            let e = bad.parse::<Candidate>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert_eq!(
            c(240, 2).settings(),
            "frames_per_buffer 240\nbuffer_count 2\n"
        );
        assert_eq!(c(120, 2).ms(48000), 5.0);
    }

    #[test]
    fn the_default_grids_are_sorted_by_total_then_count() {
        let g = sim_candidates(48000);
        // 0.5 ms at 48 kHz is 24 frames; 40 ms is 1920.
        assert_eq!(g.first(), Some(&c(24, 2)));
        assert_eq!(g.last(), Some(&c(1920, 8)));
        assert!(g
            .windows(2)
            .all(|w| (w[0].total_frames(), w[0].buffers) < (w[1].total_frames(), w[1].buffers)));
        // 2.5 ms x 2 = 5 ms: the target buffering is a candidate.
        assert!(g.contains(&c(120, 2)));
        let q = qemu_candidates(48000);
        assert_eq!(
            q,
            // 512, 1024 (two), 2048 (two), 4096 (two) and 8192 frames in all.
            [
                c(256, 2),
                c(512, 2),
                c(256, 4),
                c(1024, 2),
                c(512, 4),
                c(2048, 2),
                c(1024, 4),
                c(2048, 4)
            ]
        );
        // 384 kHz: 0.5 ms is 192 frames; 8 kHz: 0.5 ms is 4 frames, raised to the driver's
        // least, 16; 44.1 kHz: 2.5 ms is 110.25 frames, rounded up to 112.
        assert_eq!(sim_candidates(384_000)[0], c(192, 2));
        assert_eq!(sim_candidates(8000)[0], c(16, 2));
        assert!(sim_candidates(44100).contains(&c(112, 2)));
    }

    /// A device that passes a candidate whose slack, `(buffers - 2)` periods plus a tenth
    /// of one (capture's, see docs/latency.md), is at least `need` frames.
    fn slack(need: u64) -> impl FnMut(Candidate) -> Result<Trial> {
        move |c| {
            let slack = u64::from(c.buffers - 2) * u64::from(c.frames) + u64::from(c.frames) / 10;
            Ok(trial(c, u64::from(slack < need)))
        }
    }

    /// The smallest total whose slack reaches `need`, by trying every candidate.
    fn smallest(g: &[Candidate], need: u64) -> Option<Candidate> {
        g.iter()
            .copied()
            .filter(|c| {
                u64::from(c.buffers - 2) * u64::from(c.frames) + u64::from(c.frames) / 10 >= need
            })
            .min_by_key(|c| (c.total_frames(), c.buffers))
    }

    #[test]
    fn the_search_finds_the_smallest_passing_candidate() {
        let g = sim_candidates(48000);
        for need in [1, 10, 64, 100, 144, 145, 200, 241, 1000, 5760, 11520] {
            let s = search(48000, &g, slack(need)).unwrap();
            let expect = smallest(&g, need);
            let got = s.winner.map(|w| s.trials[w].candidate);
            assert_eq!(
                got.map(|c| c.total_frames()),
                expect.map(|c| c.total_frames()),
                "need {need}: {got:?} vs {expect:?}"
            );
            assert_eq!(s.winner.map(|w| s.trials[w].xruns), expect.map(|_| 0));
            // Far fewer runs than candidates, never a run twice.
            assert!(s.trials.len() <= 40, "{} runs", s.trials.len());
            let mut tried: Vec<_> = s.trials.iter().map(|t| t.candidate).collect();
            tried.sort_by_key(|c| (c.total_frames(), c.buffers));
            tried.dedup();
            assert_eq!(tried.len(), s.trials.len());
        }
        // 3 x 96 fails where 5 x 48 (less in all) passes: found all the same.
        let s = search(48000, &[c(96, 3), c(48, 5), c(480, 4)], slack(144)).unwrap();
        assert_eq!(s.trials[s.winner.unwrap()].candidate, c(48, 5));
        // Nothing passes: only each count's largest is tried.
        let s = search(48000, &g, slack(u64::MAX)).unwrap();
        assert_eq!((s.trials.len(), s.winner), (7, None));
        assert_eq!(s.trials[6].candidate, c(1920, 8));
        // No candidates, no runs.
        let s = search(48000, &[], slack(0)).unwrap();
        assert!(s.trials.is_empty() && s.winner.is_none());
        // A run's error ends the search.
        assert!(search(48000, &g, |_| Err("boom".into())).is_err());
    }

    #[test]
    fn the_table_lists_each_trial_smallest_first_and_the_winner() {
        let s = Sweep {
            rate: 48000,
            trials: vec![
                trial(c(480, 4), 0),
                trial(c(96, 2), 1),
                trial(c(240, 2), 0),
                trial(c(120, 2), 0),
            ],
            winner: Some(3),
        };
        let reference = trial(c(480, 4), 0);
        let t = table(&s, 600.0, Some(&reference));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "48000 Hz, 600 s per candidate:");
        assert!(
            lines[2].contains("2 x 96") && lines[2].contains("4.00 ms"),
            "{t}"
        );
        assert!(lines[2].trim_end().contains(" 1 "), "{t}");
        assert!(
            lines[3].starts_with('*') && lines[3].contains("2 x 120"),
            "{t}"
        );
        assert!(
            lines[3].contains("5.00 ms") && lines[3].contains("1.00 ms"),
            "{t}"
        );
        assert!(
            lines[4].contains("2 x 240") && lines[5].contains("4 x 480"),
            "{t}"
        );
        assert!(lines[5].contains("40.00 ms"), "{t}");
        assert_eq!(
            lines[6],
            "  winner: 2 x 120 frames (5.00 ms of buffering), 0 xruns over 1.0 s"
        );
        assert!(lines[7].starts_with("  driver default:") && lines[7].contains("4 x 480"));
        let none = Sweep {
            rate: 48000,
            trials: vec![trial(c(480, 4), 2)],
            winner: None,
        };
        assert!(table(&none, 1.0, None).contains("winner: none"));
    }

    #[test]
    fn a_gap_in_the_sound_fails_a_trial_without_xruns() {
        use crate::qemu::gaps::Gap;
        let gap = Gap {
            at: 5000,
            expected: 4800,
            frames: 480,
            silent: 480,
            resumed: Some(4800),
        };
        let judged = |c: Candidate, gaps: Vec<Gap>| Trial {
            gaps: Some(gaps),
            ..trial(c, 0)
        };
        assert!(!judged(c(1024, 2), vec![gap.clone()]).passed());
        assert!(judged(c(1024, 2), vec![]).passed());
        assert!(trial(c(1024, 2), 0).passed(), "not judged: xruns decide");
        // 2 x 1024 has a gap and no xrun, 2 x 2048 is clean: the search goes on to it.
        let s = search(48000, &[c(1024, 2), c(2048, 2)], |x| {
            Ok(judged(
                x,
                if x.frames == 1024 {
                    vec![gap.clone()]
                } else {
                    vec![]
                },
            ))
        })
        .unwrap();
        assert_eq!(s.trials[s.winner.unwrap()].candidate, c(2048, 2));
        assert_eq!(s.trials.len(), 2);
        let t = table(&s, 60.0, None);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].contains("xruns  gaps"), "{t}");
        // "2 x 1024", 42.67 ms, 0 xruns, 1 gap; the winner 0 and 0.
        let cells = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            cells(lines[2])[..7],
            ["2", "x", "1024", "42.67", "ms", "0", "1"]
        );
        assert_eq!(
            cells(lines[3])[..8],
            ["*", "2", "x", "2048", "85.33", "ms", "0", "0"]
        );
        assert!(t.contains("0 xruns, 0 gaps over"), "{t}");
        // Not judged: a dash.
        let s = Sweep {
            rate: 48000,
            trials: vec![trial(c(480, 4), 0)],
            winner: Some(0),
        };
        let t = table(&s, 1.0, None);
        let row = cells(t.lines().nth(2).unwrap());
        assert_eq!(
            row[..8],
            ["*", "4", "x", "480", "40.00", "ms", "0", "-"],
            "{t}"
        );
        // JSON: the gaps with where they are.
        let j = trial_json(&judged(c(1024, 2), vec![gap]), 48000);
        assert_eq!(j["gaps"][0]["at_frame"], 5000);
        assert_eq!(j["gaps"][0]["silent_frames"], 480);
        assert_eq!(j["gaps"][0]["resumed_frame"], 4800);
        assert!(trial_json(&trial(c(480, 4), 0), 48000)["gaps"].is_null());
    }

    #[test]
    fn the_jitter_is_seeded_and_shaped_as_documented() {
        let p = Jitter::HAIKU;
        let draw = |seed| {
            let mut j = Jitter::new(p, seed);
            (0..200_000).map(|_| j.next_us()).collect::<Vec<i64>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7), "same seed, same delays");
        assert_ne!(a, draw(8));
        let base = p.base_us as i64;
        assert!(a.iter().all(|&d| d >= base));
        let max = (p.base_us + p.mean_us * 20.0 + p.stall_max_us) as i64;
        assert!(a.iter().all(|&d| d <= max), "{:?}", a.iter().max());
        // Mean: base + mean + chance x stall_max / 2 (= 10 + 8 + 4.5 µs), within 1 µs.
        let mean = a.iter().sum::<i64>() as f64 / a.len() as f64;
        let expect = p.base_us + p.mean_us + p.stall_chance * p.stall_max_us / 2.0;
        assert!(
            (mean - expect).abs() < 1.0,
            "mean {mean}, expected {expect}"
        );
        // Stalls: delays beyond the exponential body's reach (base + 15 means: e^-15 of
        // draws) are stalls, about 3 in 1000 of them (of which 96 % add more than 120 µs).
        let body = (p.base_us + 15.0 * p.mean_us) as i64;
        let stalls = a.iter().filter(|&&d| d > body).count();
        assert!((450..=700).contains(&stalls), "{stalls} stalls");
        // Each run's stream is its own.
        let mut r1 = Jitter::for_run(p, 1, 48000, c(120, 2));
        let mut r2 = Jitter::for_run(p, 1, 48000, c(240, 2));
        let d1: Vec<i64> = (0..10).map(|_| r1.next_us()).collect();
        let d2: Vec<i64> = (0..10).map(|_| r2.next_us()).collect();
        assert_ne!(d1, d2);
    }
}
