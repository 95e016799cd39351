//! `cargo xtask soak`: hours of simulated duplex audio through the built add-on, as the
//! multi_audio media add-on drives it, with a format change every minute (while streaming,
//! as the frequency parameter does it) and FORCE_STOP then a restart every ten. What the
//! device model records (its ground truth) is checked every hundred exchanges and then
//! dropped, so memory stays flat however long it runs (the largest piece held is about a
//! second of audio):
//!
//! - the kernel heap (the add-on's live blocks and their bytes), areas and semaphores are
//!   the same at every format change: the same counts throughout, the same bytes each time
//!   the same format comes back;
//! - frame counts are exact: every exchange reports exactly one more buffer played and
//!   recorded, across every format change and stop; what the device played is the lead-in
//!   silence then the client's data bit for bit (all of it and exactly the stop padding
//!   after a FORCE_STOP; a whole number of periods of it, missing at most what was still
//!   queued, after a change that stops the stream at once); what the client read is what
//!   the device captured, in order;
//! - the timing error (the reported `played_real_time` against the instant the device
//!   finished that period) is no worse, per format, than the first time that format ran;
//! - no exchange fails, the simulated kernel records no misuse, and the add-on unloads
//!   clean.
//!
//! Progress lines come every `--report-every` simulated seconds, and a summary at the end
//! with the speed (simulated hours per wall minute).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use haiku_sim::addon::{Addon, AddonDevice};
use hmulti_client::{self as client, Choice, Session};
use snd_model::ModelConfig;
use spec::hmulti_audio as hm;

use crate::Result;

/// Options of `cargo xtask soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Simulated hours to run (the goal is 24).
    #[arg(long, default_value_t = 24.0)]
    pub hours: f64,
    /// Simulated seconds between format changes.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub format_every: u64,
    /// Simulated seconds between FORCE_STOP/restarts (a multiple of --format-every).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub stop_every: u64,
    /// Simulated seconds between progress lines.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub report_every: u64,
    /// The add-on to load (default: build it with `cargo xtask build-haiku`).
    #[arg(long)]
    pub addon: Option<PathBuf>,
}

/// The formats the soak goes through, one per `--format-every`, in a circle: (rate in Hz,
/// hmulti rate bit, hmulti format bit, name). Every sample format hmulti plays, rates from
/// 8 to 96 kHz.
const FORMATS: [(u32, u32, u32, &str); 6] = [
    (48_000, hm::B_SR_48000, hm::B_FMT_16BIT, "48000 Hz S16"),
    (44_100, hm::B_SR_44100, hm::B_FMT_32BIT, "44100 Hz S32"),
    (96_000, hm::B_SR_96000, hm::B_FMT_FLOAT, "96000 Hz float"),
    (8_000, hm::B_SR_8000, hm::B_FMT_8BIT_U, "8000 Hz U8"),
    (22_050, hm::B_SR_22050, hm::B_FMT_16BIT, "22050 Hz S16"),
    (48_000, hm::B_SR_48000, hm::B_FMT_FLOAT, "48000 Hz float"),
];

const HOUR_US: f64 = 3_600_000_000.0;

/// What the kernel holds for the add-on at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resources {
    heap_blocks: usize,
    heap_bytes: usize,
    areas: usize,
    area_bytes: usize,
    sems: usize,
}

impl Resources {
    fn of(host: &Addon) -> Resources {
        let heap = host.env().heap_blocks();
        let areas = host.kernel().areas();
        Resources {
            heap_blocks: heap.len(),
            heap_bytes: heap.iter().map(|b| b.size).sum(),
            areas: areas.len(),
            area_bytes: areas.iter().map(|a| a.size).sum(),
            sems: host.kernel().sems().len(),
        }
    }

    fn counts(&self) -> (usize, usize, usize) {
        (self.heap_blocks, self.areas, self.sems)
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "heap {} blocks ({} B), areas {} ({} B), semaphores {}",
            self.heap_blocks, self.heap_bytes, self.areas, self.area_bytes, self.sems
        )
    }
}

/// The counters of the whole run.
#[derive(Default)]
struct Totals {
    exchanges: u64,
    failed: u64,
    /// The last `played_frames_count` / `recorded_frames_count` reported.
    played: i64,
    recorded: i64,
    /// Frames the device played and captured (its ground truth).
    device_played: u64,
    device_recorded: u64,
    segments: u64,
    stops: u64,
    /// Timing errors (µs) of the current report interval.
    errors: Vec<i64>,
}

/// The data the client plays in one segment: byte `i` is `(131 i + 17 seed) mod 251`, a
/// sequence with period 251 (a prime, so no buffer size lines up with it).
struct Data {
    /// One period and enough of the next for any slice of `len` bytes.
    bytes: Vec<u8>,
}

impl Data {
    const PERIOD: usize = 251;

    fn new(seed: u64, len: usize) -> Data {
        let s = (seed % Self::PERIOD as u64) as usize * 17;
        let bytes = (0..Self::PERIOD + len)
            .map(|i| ((i % Self::PERIOD * 131 + s) % Self::PERIOD) as u8)
            .collect();
        Data { bytes }
    }

    /// Bytes `from .. from + len` (`len` at most the one given to `new`).
    fn slice(&self, from: usize, len: usize) -> &[u8] {
        let at = from % Self::PERIOD;
        &self.bytes[at..at + len]
    }
}

fn choice(f: usize) -> Choice {
    Choice {
        rate: Some(FORMATS[f].1),
        format: Some(FORMATS[f].2),
    }
}

pub fn run(args: &SoakArgs) -> Result {
    if !(args.hours > 0.0 && args.hours <= 10_000.0) {
        return Err(format!("--hours {}: use more than 0, at most 10000", args.hours).into());
    }
    if !args.stop_every.is_multiple_of(args.format_every) {
        return Err(format!(
            "--stop-every {} is not a multiple of --format-every {}",
            args.stop_every, args.format_every
        )
        .into());
    }
    let addon = match &args.addon {
        Some(p) => p.clone(),
        None => crate::haiku::build()?,
    };
    let host = Addon::load(&addon, ModelConfig::hmulti_full(2), None)
        .map_err(|e| format!("loading {}: {e}", addon.display()))?;
    let result = soak(&host, args);
    let kernel = host.kernel().clone();
    let unloaded = host.unload();
    result?;
    if let Err(left) = unloaded {
        return Err(format!("the add-on did not unload clean:\n  {}", left.join("\n  ")).into());
    }
    if !kernel.failures().is_empty() {
        return Err(format!("misuse: {}", kernel.failures().join("; ")).into());
    }
    println!("unloaded clean: nothing left behind, no misuse recorded");
    Ok(())
}

fn soak(host: &Addon, args: &SoakArgs) -> Result {
    let dev = host.open_first()?;
    let mut s = Session::init(&dev, choice(0))?;
    let clock = host.kernel().clock().clone();
    let start = clock.now();
    let end = start + (args.hours * HOUR_US) as i64;
    let wall = Instant::now();
    println!(
        "soak: {} simulated hours of duplex audio, 2 channels, a format change every {} s, \
         FORCE_STOP and restart every {} s",
        args.hours, args.format_every, args.stop_every
    );
    let mut totals = Totals::default();
    let mut first: Option<Resources> = None;
    // The area bytes each format had the first time (the buffers' size depends on it).
    let mut bytes_of: BTreeMap<usize, Resources> = BTreeMap::new();
    // The worst timing error of each format in its first report interval.
    let mut worst_first: BTreeMap<usize, i64> = BTreeMap::new();
    let mut worst_now: BTreeMap<usize, i64> = BTreeMap::new();
    let mut next_report = start + args.report_every as i64 * 1_000_000;
    let mut fmt = 0usize;
    let mut reports = 0u64;
    check_format(&s, fmt)?;
    loop {
        let seg = totals.segments;
        let seg_end = (start + (seg + 1) as i64 * args.format_every as i64 * 1_000_000).min(end);
        let last = seg_end >= end;
        let stop = last || ((seg + 1) * args.format_every).is_multiple_of(args.stop_every);
        let next = (fmt + 1) % FORMATS.len();
        let worst = segment(
            host,
            &dev,
            &mut s,
            seg_end,
            seg,
            stop,
            (!last).then_some(next),
            &mut totals,
        )
        .map_err(|e| format!("segment {seg} ({}): {e}", FORMATS[fmt].3))?;
        let w = worst_now.entry(fmt).or_default();
        *w = (*w).max(worst);
        let failures = host.kernel().failures();
        if !failures.is_empty() {
            return Err(format!(
                "segment {seg}: the simulated kernel recorded misuse:\n  {}",
                failures.join("\n  ")
            )
            .into());
        }
        if last {
            break;
        }
        fmt = next;
        check_format(&s, fmt)?;
        // Stopped, with the next format's buffers: what the add-on holds must not grow.
        let now = Resources::of(host);
        let base = *first.get_or_insert(now);
        if now.counts() != base.counts() {
            return Err(format!(
                "after segment {seg}: the kernel holds {now}; at the first change it held {base}"
            )
            .into());
        }
        let same = *bytes_of.entry(fmt).or_insert(now);
        if now != same {
            return Err(format!(
                "after segment {seg} ({}): the kernel holds {now}; the first time this format \
                 ran it held {same}",
                FORMATS[fmt].3
            )
            .into());
        }
        if clock.now() >= next_report {
            reports += 1;
            progress(&clock, start, wall, &now, &mut totals);
            for (&f, &w) in &worst_now {
                let first = *worst_first.entry(f).or_insert(w);
                if w > first + 1 {
                    return Err(format!(
                        "the timing error grew: {} at worst {w} µs in this interval, {first} µs \
                         in its first",
                        FORMATS[f].3
                    )
                    .into());
                }
            }
            worst_now.clear();
            next_report += args.report_every as i64 * 1_000_000;
        }
    }
    let now = Resources::of(host);
    if reports == 0 || !totals.errors.is_empty() {
        progress(&clock, start, wall, &now, &mut totals);
    }
    let simulated = (clock.now() - start) as f64 / HOUR_US;
    let minutes = wall.elapsed().as_secs_f64() / 60.0;
    println!(
        "done: {simulated:.3} simulated hours in {minutes:.2} wall minutes ({:.2} simulated \
         hours per wall minute); {} segments, {} FORCE_STOPs, {} exchanges, {} failed",
        simulated / minutes.max(1e-9),
        totals.segments,
        totals.stops,
        totals.exchanges,
        totals.failed
    );
    println!(
        "frames: reported {} played, {} recorded; the device played {} and captured {}",
        totals.played, totals.recorded, totals.device_played, totals.device_recorded
    );
    for (f, (_, _, _, name)) in FORMATS.iter().enumerate() {
        if let Some(r) = bytes_of.get(&f) {
            println!("  {name}: {r}");
        }
    }
    if totals.failed > 0 {
        return Err(format!("{} exchanges failed", totals.failed).into());
    }
    s.release(&dev);
    let closed = dev.close();
    if closed != 0 {
        return Err(format!("close: status {closed:#x}").into());
    }
    Ok(())
}

fn check_format(s: &Session, f: usize) -> Result {
    let want = (FORMATS[f].1, FORMATS[f].2);
    for (dir, got) in [("output", s.format.output), ("input", s.format.input)] {
        if (got.rate, got.format) != want {
            return Err(format!(
                "the {dir} runs at rate bit {:#x}, format bit {:#x}, not {}",
                got.rate, got.format, FORMATS[f].3
            )
            .into());
        }
    }
    Ok(())
}

fn progress(
    clock: &sim_kernel::Clock,
    start: i64,
    wall: Instant,
    now: &Resources,
    totals: &mut Totals,
) {
    let t = (clock.now() - start) / 1_000_000;
    let (p50, p99, max) = crate::simcmd::percentiles(std::mem::take(&mut totals.errors));
    println!(
        "{:>3}:{:02}:{:02} simulated ({:.1} s wall): {now}; frames {} played, {} recorded; \
         {} exchanges, {} failed; timing error p50 {p50} us, p99 {p99} us, max {max} us",
        t / 3600,
        t / 60 % 60,
        t % 60,
        wall.elapsed().as_secs_f64(),
        totals.played,
        totals.recorded,
        totals.exchanges,
        totals.failed
    );
}

/// Exchanges between two looks at the device's records: what a segment holds at once is a
/// second of audio, not a minute.
const CHECK_EVERY: u64 = 100;

/// The device's records of one segment, checked as they come and then dropped.
struct Piece {
    /// Lead-in bytes (the buffers queued before the client wrote one), bytes per buffer.
    lead: usize,
    pb: usize,
    quiet: u8,
    data: Data,
    /// Bytes the device played so far in this segment.
    played: usize,
    /// Captured bytes the client has not read yet, and read bytes not yet matched with
    /// what was captured (none: the client reads only what the device completed).
    captured: Vec<u8>,
    read: Vec<u8>,
    /// Bytes captured, and read and matched, in this segment.
    captured_total: usize,
    matched: usize,
    /// When the device finished each period of this segment's playback (µs).
    periods: Vec<i64>,
}

impl Piece {
    /// Takes the model's records and checks them: played bytes are the lead-in's silence,
    /// then the client's data up to the `given` bytes it handed over, then silence (the
    /// stop padding); what the client read is what was captured, in order.
    fn take(&mut self, host: &Addon, given: usize, totals: &mut Totals) -> Result {
        let out = host.model().take_records(0);
        let inp = host.model().take_records(1);
        let mut at = self.played;
        for part in out.played.chunks(Data::PERIOD) {
            let end = at + part.len();
            // Split the part at the lead-in's end and at the end of the data given.
            let mut i = 0;
            while i < part.len() {
                let pos = at + i;
                let upto = if pos < self.lead {
                    self.lead.min(end)
                } else if pos < self.lead + given {
                    (self.lead + given).min(end)
                } else {
                    end
                };
                let got = &part[i..upto - at];
                let bad = if pos < self.lead || pos >= self.lead + given {
                    got.iter().position(|&b| b != self.quiet)
                } else {
                    let want = self.data.slice(pos - self.lead, got.len());
                    got.iter().zip(want).position(|(a, b)| a != b)
                };
                if let Some(j) = bad {
                    let pos = pos + j;
                    return Err(if pos < self.lead {
                        format!("the lead-in is not silence at byte {pos}")
                    } else if pos < self.lead + given {
                        format!("the data differs at byte {} on", pos - self.lead)
                    } else {
                        format!(
                            "the device played byte {} of data; the client handed over {given}",
                            pos - self.lead
                        )
                    }
                    .into());
                }
                i = upto - at;
            }
            at = end;
        }
        self.played = at;
        totals.device_played += out.periods.iter().map(|p| p.frames).sum::<u64>();
        totals.device_recorded += inp.periods.iter().map(|p| p.frames).sum::<u64>();
        self.periods.extend(out.periods.iter().map(|p| p.time));
        self.captured_total += inp.recorded.len();
        self.captured.extend_from_slice(&inp.recorded);
        let both = self.captured.len().min(self.read.len());
        if self.captured[..both] != self.read[..both] {
            return Err(format!(
                "the client read bytes {} to {} otherwise than the device captured them",
                self.matched,
                self.matched + both
            )
            .into());
        }
        self.captured.drain(..both);
        self.read.drain(..both);
        self.matched += both;
        Ok(())
    }
}

/// One piece of the soak: exchanges until `until`, then FORCE_STOP if `stop`, then the
/// change to format `next` (SET_GLOBAL_FORMAT and GET_BUFFERS, the stream stopping at once
/// if it still runs); the device's records are checked as they come. Returns the worst
/// timing error (µs).
#[allow(clippy::too_many_arguments)]
fn segment(
    host: &Addon,
    dev: &AddonDevice<'_>,
    s: &mut Session,
    until: i64,
    seed: u64,
    stop: bool,
    next: Option<usize>,
    totals: &mut Totals,
) -> Result<i64> {
    let clock = host.kernel().clock();
    let n = s.play.len().max(s.rec.len()).max(1);
    let (pb, frames) = (s.play.bytes(), s.play.frames as i64);
    if pb == 0 || frames == 0 {
        return Err("no playback buffers".into());
    }
    let base = totals.played;
    let mut piece = Piece {
        lead: n * pb,
        pb,
        quiet: s.silence_byte(),
        data: Data::new(seed, pb.max(Data::PERIOD)),
        played: 0,
        captured: Vec::new(),
        read: Vec::new(),
        captured_total: 0,
        matched: 0,
        periods: Vec::new(),
    };
    let mut reports = Vec::new();
    let mut last_rec = -1;
    let mut k = 0u64;
    while clock.now() < until {
        if s.exchange(dev) != 0 {
            totals.failed += 1;
        }
        totals.exchanges += 1;
        let (played, recorded) = (s.info.played_frames_count, s.info.recorded_frames_count);
        // A run's first exchange may come before its first capture period can have been
        // captured: then it reports no recording yet (cycle -1 after a stop).
        let rec_ok =
            recorded == totals.recorded + frames || (k == 0 && recorded == totals.recorded);
        if played != totals.played + frames || !rec_ok {
            return Err(format!(
                "exchange {k}: {played} frames played and {recorded} recorded reported after \
                 {} and {}: not one buffer ({frames} frames) more",
                totals.played, totals.recorded
            )
            .into());
        }
        (totals.played, totals.recorded) = (played, recorded);
        reports.push((s.info.played_real_time, played));
        let cycle = s.info.playback_buffer_cycle;
        if !(0..n as i32).contains(&cycle) {
            return Err(format!("exchange {k}: playback cycle {cycle} of {n} buffers").into());
        }
        let chunk = piece.data.slice(k as usize * pb, pb);
        s.play.write(dev, (cycle as usize + n - 1) % n, chunk)?;
        let rc = s.info.record_buffer_cycle;
        if rc != last_rec && (0..s.rec.len() as i32).contains(&rc) {
            piece.read.extend(s.rec.read(dev, rc as usize)?);
        }
        last_rec = rc;
        k += 1;
        if k.is_multiple_of(CHECK_EVERY) {
            piece.take(host, k as usize * pb, totals)?;
        }
    }
    let pad = s.stop_padding_bytes();
    if stop {
        let r = s.force_stop(dev);
        if r != 0 {
            return Err(format!("FORCE_STOP: status {r:#x}").into());
        }
        totals.stops += 1;
    }
    let rb = s.rec.bytes().max(1);
    if let Some(f) = next {
        let mut format = s.format;
        for side in [&mut format.output, &mut format.input] {
            side.rate = FORMATS[f].1;
            side.format = FORMATS[f].2;
        }
        let r = client::ioctl(dev, hm::B_MULTI_SET_GLOBAL_FORMAT, &mut format);
        if r != 0 {
            return Err(format!("SET_GLOBAL_FORMAT to {}: status {r:#x}", FORMATS[f].3).into());
        }
        s.format = format;
        s.get_buffers(dev)?;
    }
    totals.segments += 1;
    let given = k as usize * pb;
    piece.take(host, given, totals)?;
    let lead = piece.lead;
    let data = piece.played.saturating_sub(lead);
    if stop {
        // All of it, then exactly the stop padding (checked silent by `take`).
        if piece.played != lead + given + pad {
            return Err(format!(
                "the device played {} bytes: {lead} of lead-in + {given} of data + {pad} of \
                 stop padding expected",
                piece.played
            )
            .into());
        }
    } else {
        // Stopped at once: what was still queued (n - 1 buffers) and the buffer written
        // after the last exchange are not played; nothing else is missing.
        let least = given.saturating_sub(n * pb);
        if piece.played < lead || !data.is_multiple_of(piece.pb) || data < least || data > given {
            return Err(format!(
                "the device played {data} bytes of data of the {given} handed over ({pb} per \
                 buffer, {n} buffers): at least {least} expected, in whole buffers"
            )
            .into());
        }
    }
    // The client read only what the device captured, missing at most what was still
    // with it.
    if !piece.read.is_empty() || piece.matched + n * rb < piece.captured_total.min(k as usize * rb)
    {
        return Err(format!(
            "the client read {} bytes, {} of them as captured, of the {} the device captured",
            piece.matched + piece.read.len(),
            piece.matched,
            piece.captured_total
        )
        .into());
    }
    // Timing: each report against the instant the device finished that period.
    let mut worst = 0;
    for &(t, f) in &reports {
        let index = ((f - base) / frames - 1) as usize;
        let truth = piece.periods.get(index).ok_or_else(|| {
            format!(
                "a report of {f} frames, but the device completed only {} periods",
                piece.periods.len()
            )
        })?;
        let e = (t - truth).abs();
        worst = worst.max(e);
        totals.errors.push(e);
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::Data;

    #[test]
    fn the_data_is_its_formula() {
        let d = Data::new(7, 1000);
        let formula = |i: usize| ((i * 131 + 7 * 17) % 251) as u8;
        for from in [0, 1, 250, 251, 252, 5000] {
            let got = d.slice(from, 1000);
            assert!(got.iter().enumerate().all(|(j, &b)| b == formula(from + j)));
        }
    }
}
