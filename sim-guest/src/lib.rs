//! The simulator inside a Linux guest, on QEMU's real virtio-snd device: what the
//! `sim-guest` binary runs (`cargo xtask qemu` boots it).
//!
//! The add-on is loaded exactly as in the simulator, but the kernel follows real time, its
//! areas are carved from huge pages with real physical addresses, and the virtio bus has
//! [`virtio_pci_uio::PciSnd`] (QEMU's device, driven from userspace) instead of the model. The
//! client is the media add-on's ([`hmulti_client`]). Results are printed as single lines
//! `@@virtio_sound result {json}` on the console, which the host collects.
//!
//! Modes:
//! - `play --input W [--rate R] [--format F]`: play a WAV once, stop (FORCE_STOP), report.
//! - `capture --rate R --seconds S`: play silence and record; report the capture's pace.
//! - `cycle --rate R --rate2 R2 --seconds S`: play, stop, reconfigure to R2 and play, close,
//!   reopen and play again, in one boot.
//! - `unplug --rate R --unplug-after S`: play silence; after S seconds of exchanges print
//!   [`UNPLUG_MARK`] (the host's cue to `device_del` the device) and keep exchanging until
//!   the device leaves the guest; then tell the add-on as Haiku's device manager does
//!   (`device_removed`), see the blocked exchange return, close, unload, report.
//!
//! Every mode also takes `--addon PATH` (default `/virtio_sound`), `--settings FILE` (the
//! driver's settings file, as Haiku's `load_driver_settings` would give it) and
//! `--device-channels N`
//! (prepare QEMU's streams with N channels first: QEMU reports the channel count of the
//! last PREPARE as the streams' maximum, so a 1 here makes it a mono device).
//!
//! `play` and `capture` also take `--record` (after the run, write what the add-on recorded
//! as a WAV file to QEMU's `isa-debugcon` port [`RECORD_PORT`], which the host sends to a
//! file) and `--min-seconds S` (`play`: continue with silence after the input until S
//! seconds have passed, so a recording can outlast it; with `--repeat`, continue with the
//! input again from its first frame instead, so a long run plays a known signal throughout). When the first exchange of a stream
//! has returned (the device then runs both ways, and QEMU's audio backend has its input
//! open) they print [`STREAMING_MARK`], the host's cue to start feeding the microphone: what
//! a server plays into an input nobody has opened yet is lost.

use std::fmt::Write as _;

use spec::hmulti_audio as hm;

use hmulti_client::wav::{SampleFormat, Wav};
use hmulti_client::{self as client, format_bit, play_observed, rate_bit, Choice, Session};

/// Prefix of every result line on the console.
pub const RESULT_PREFIX: &str = "@@virtio_sound result ";

/// The line printed when a stream's first exchange has returned.
pub const STREAMING_MARK: &str = "@@virtio_sound streaming";

/// The line printed when a `unplug` run wants its device removed.
pub const UNPLUG_MARK: &str = "@@virtio_sound unplug";

/// How long an `unplug` run waits for the device to go after its cue.
pub const REMOVAL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The I/O port of QEMU's `isa-debugcon` device (its default `iobase`), where `--record`
/// writes the recording: each byte written there goes to the device's character backend.
pub const RECORD_PORT: u16 = 0xe9;

/// Options of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Args {
    pub mode: Mode,
    pub addon: String,
    pub input: Option<String>,
    pub rate: u32,
    pub rate2: u32,
    pub format: SampleFormat,
    pub seconds: f64,
    pub device_channels: Option<u8>,
    /// Write the recording to [`RECORD_PORT`] as a WAV file.
    pub record: bool,
    /// `play`: the least the stream lasts, in seconds (silence after the input).
    pub min_seconds: f64,
    /// `play`: reach `min_seconds` by repeating the input instead of with silence.
    pub repeat: bool,
    /// The driver's settings file (`~/config/settings/kernel/drivers/virtio_sound`).
    pub settings: Option<String>,
    /// `unplug`: seconds of exchanges before [`UNPLUG_MARK`].
    pub unplug_after: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Play,
    Capture,
    Cycle,
    Unplug,
}

const USAGE: &str = "usage: sim-guest play|capture|cycle|unplug [--addon PATH] [--input WAV] \
                     [--rate HZ] [--rate2 HZ] [--format s16|s32|float|u8] [--seconds S] \
                     [--device-channels N] [--record] [--min-seconds S] [--repeat] \
                     [--settings FILE] [--unplug-after S]";

impl Args {
    pub fn parse(argv: &[String]) -> Result<Args, String> {
        let mut it = argv.iter();
        let mode = match it.next().map(String::as_str) {
            Some("play") => Mode::Play,
            Some("capture") => Mode::Capture,
            Some("cycle") => Mode::Cycle,
            Some("unplug") => Mode::Unplug,
            Some(other) => return Err(format!("unknown mode {other:?}\n{USAGE}")),
            None => return Err(USAGE.to_owned()),
        };
        let mut a = Args {
            mode,
            addon: "/virtio_sound".into(),
            input: None,
            rate: 48000,
            rate2: 96000,
            format: SampleFormat::S16,
            seconds: 2.0,
            device_channels: None,
            record: false,
            min_seconds: 0.0,
            repeat: false,
            settings: None,
            unplug_after: 1.0,
        };
        while let Some(flag) = it.next() {
            if flag == "--record" && matches!(a.mode, Mode::Cycle | Mode::Unplug) {
                return Err(format!("--record: this mode records nothing\n{USAGE}"));
            }
            if flag == "--repeat" && a.mode != Mode::Play {
                return Err(format!("--repeat: only in play mode\n{USAGE}"));
            }
            if flag == "--unplug-after" && a.mode != Mode::Unplug {
                return Err(format!("--unplug-after: only in unplug mode\n{USAGE}"));
            }
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
            };
            let number = |v: String| -> Result<f64, String> {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| format!("{flag}: {v:?} is not a positive number"))
            };
            match flag.as_str() {
                "--record" => a.record = true,
                "--repeat" => a.repeat = true,
                "--settings" => a.settings = Some(value()?),
                "--min-seconds" => a.min_seconds = number(value()?)?,
                "--unplug-after" => a.unplug_after = number(value()?)?,
                "--addon" => a.addon = value()?,
                "--input" => a.input = Some(value()?),
                "--rate" => a.rate = number(value()?)? as u32,
                "--rate2" => a.rate2 = number(value()?)? as u32,
                "--seconds" => a.seconds = number(value()?)?,
                "--device-channels" => {
                    let v = value()?;
                    a.device_channels = Some(
                        v.parse::<u8>()
                            .ok()
                            .filter(|n| (1..=16).contains(n))
                            .ok_or_else(|| format!("--device-channels: {v:?} is not 1..16"))?,
                    )
                }
                "--format" => {
                    let v = value()?;
                    a.format = SampleFormat::from_name(&v)
                        .ok_or_else(|| format!("unknown --format {v:?}"))?;
                }
                other => return Err(format!("unknown option {other:?}\n{USAGE}")),
            }
        }
        Ok(a)
    }
}

/// A flat JSON object, written by hand (the guest runner carries no serializer).
#[derive(Default, Debug, Clone)]
pub struct Json(Vec<(String, String)>);

impl Json {
    pub fn num(mut self, k: &str, v: impl Into<f64>) -> Json {
        let v: f64 = v.into();
        let s = if v.is_finite() {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{}", v as i64)
            } else {
                format!("{v:.3}")
            }
        } else {
            "null".to_owned()
        };
        self.0.push((k.to_owned(), s));
        self
    }
    pub fn str(mut self, k: &str, v: &str) -> Json {
        let mut s = String::from("\"");
        for c in v.chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(s, "\\u{:04x}", c as u32);
                }
                c => s.push(c),
            }
        }
        s.push('"');
        self.0.push((k.to_owned(), s));
        self
    }
    pub fn render(&self) -> String {
        let body: Vec<String> = self.0.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }
}

/// What a stream's exchanges say about its timing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timing {
    /// From the open to the first exchange that reports played frames (µs).
    pub startup_us: i64,
    /// Exchanges after which more than one buffer had completed since the previous one,
    /// or whose count went backwards: the client (or the device) fell behind.
    pub xruns: usize,
    /// The stream's rate measured from (real time, frames) against the nominal rate, ppm.
    pub drift_ppm: f64,
    /// Largest distance of a report from the fitted line (µs).
    pub jitter_max_us: f64,
    /// Reports used (those with frames > 0).
    pub points: usize,
}

/// `data` made at least `least` bytes long: with `fill` as a byte of silence, by that
/// silence; with `None`, by `data` again from its start, as often as it takes (an empty
/// `data` is left as it is).
pub fn extend_to(mut data: Vec<u8>, least: usize, fill: Option<u8>) -> Vec<u8> {
    match fill {
        Some(b) if data.len() < least => data.resize(least, b),
        None if !data.is_empty() => {
            let one = data.len();
            while data.len() < least {
                let take = one.min(least - data.len());
                data.extend_from_within(..take);
            }
        }
        _ => {}
    }
    data
}

/// Timing of a stream at `rate` Hz from its (real_time, frames) reports, one buffer of
/// `buffer_frames` per exchange, the device opened at `opened` (same clock).
pub fn timing(reports: &[(i64, i64)], rate: u32, buffer_frames: usize, opened: i64) -> Timing {
    let pts: Vec<(f64, f64)> = reports
        .iter()
        .filter(|&&(_, f)| f > 0)
        .map(|&(t, f)| (t as f64, f as f64))
        .collect();
    let startup_us = reports
        .iter()
        .find(|&&(_, f)| f > 0)
        .map_or(-1, |&(t, _)| t - opened);
    let mut xruns = 0;
    for w in reports.windows(2) {
        let step = w[1].1 - w[0].1;
        if step < 0 || step > buffer_frames as i64 {
            xruns += 1;
        }
    }
    let mut out = Timing {
        startup_us,
        xruns,
        points: pts.len(),
        ..Timing::default()
    };
    if pts.len() < 3 {
        return out;
    }
    // Least squares of frames against time.
    let n = pts.len() as f64;
    let (mt, mf) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = pts.iter().map(|p| (p.0 - mt) * (p.0 - mt)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mt) * (p.1 - mf)).sum();
    if sxx <= 0.0 {
        return out;
    }
    let slope = sxy / sxx; // frames per µs
    out.drift_ppm = (slope * 1e6 / f64::from(rate) - 1.0) * 1e6;
    out.jitter_max_us = pts
        .iter()
        .map(|p| ((p.1 - mf) / slope - (p.0 - mt)).abs())
        .fold(0.0, f64::max);
    out
}

/// How late the client ran after each period it was told of: the time each exchange
/// returned to it (`returned`, same clock) less the period's `played_real_time` (the
/// driver's timestamp of the completion), over the exchanges that reported played frames;
/// (p50, p99, max) in µs. The interrupt, the semaphore and the thread's wake-up are all in
/// it: the real scheduling of this machine.
pub fn wake_lateness(reports: &[(i64, i64)], returned: &[i64]) -> (i64, i64, i64) {
    let mut late: Vec<i64> = reports
        .iter()
        .zip(returned)
        .filter(|(r, _)| r.1 > 0)
        .map(|(r, &t)| (t - r.0).max(0))
        .collect();
    late.sort_unstable();
    let at = |q: f64| {
        late.get(((late.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    (at(0.5), at(0.99), late.last().copied().unwrap_or(0))
}

/// CPU time (user + system) this process has used, µs.
#[cfg(target_os = "linux")]
fn cpu_time_us() -> i64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF covers every thread of the process.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// QEMU's `isa-debug-exit` device at I/O port 0xf4: writing `code` there ends QEMU with
/// exit status `2 * code + 1` (after it has finished its audio files, as at a shutdown).
/// Returns only if the port cannot be reached or no such device is there.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub fn exit_device(code: u8) -> Result<(), String> {
    const PORT: u16 = 0xf4;
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    if unsafe { libc::ioperm(PORT.into(), 4, 1) } != 0 {
        return Err(format!(
            "ioperm(0xf4): {} (root is needed)",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the process was just given access to this port; a 32-bit write to it is the
    // debug-exit device's whole interface (on a machine without one, the write is ignored).
    unsafe {
        std::arch::asm!("out dx, eax", in("dx") PORT, in("eax") u32::from(code), options(nomem, nostack));
    }
    Err("no exit device at I/O port 0xf4".into())
}

/// Whether `problem` is an area (`area N "name" (...) is still alive`) that a line of the
/// kernel log says the driver leaks (`leaking ... (area N): why` for DMA memory,
/// `leaking the ...-byte buffer area N: why` for the buffer area).
pub fn announced_leak(problem: &str, log: &[String]) -> bool {
    let Some(id) = problem
        .strip_prefix("area ")
        .and_then(|rest| rest.split(' ').next())
        .filter(|_| problem.ends_with("is still alive"))
    else {
        return false;
    };
    let dma = format!("(area {id}):");
    let buffers = format!("buffer area {id}:");
    log.iter()
        .any(|l| l.contains("leaking") && (l.contains(&dma) || l.contains(&buffers)))
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub fn exit_device(_code: u8) -> Result<(), String> {
    Err("the exit device is an x86 I/O port".into())
}

/// Writes `bytes` to QEMU's `isa-debugcon` device at [`RECORD_PORT`] with string I/O
/// (`rep outsb`: KVM hands a whole page of it to QEMU per exit). Without such a device the
/// writes are ignored, and the host finds no recording.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub fn debugcon_write(bytes: &[u8]) -> Result<(), String> {
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    if unsafe { libc::ioperm(RECORD_PORT.into(), 1, 1) } != 0 {
        return Err(format!(
            "ioperm({RECORD_PORT:#x}): {} (root is needed)",
            std::io::Error::last_os_error()
        ));
    }
    for chunk in bytes.chunks(1 << 16) {
        // SAFETY: the process may use the port (above); `rep outsb` reads exactly
        // `chunk.len()` bytes from `chunk` (rsi, rcx; the direction flag is clear, as the
        // ABI guarantees at a call) and writes nothing to memory.
        unsafe {
            std::arch::asm!(
                "rep outsb",
                in("dx") RECORD_PORT,
                inout("rsi") chunk.as_ptr() => _,
                inout("rcx") chunk.len() => _,
                options(nostack, readonly, preserves_flags)
            );
        }
    }
    Ok(())
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub fn debugcon_write(_bytes: &[u8]) -> Result<(), String> {
    Err("the debug console is an x86 I/O port".into())
}

/// The whole run: every result line, or why it could not run.
#[cfg(target_os = "linux")]
pub fn run(args: &Args) -> Result<Vec<Json>, String> {
    real::run(args)
}

#[cfg(target_os = "linux")]
mod real {
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use haiku_sim::addon::Addon;
    use haiku_sim::BusDevice;
    use sim_kernel::kernel::{DmaMemory, KernelConfig, SimKernel};
    use sim_kernel::memory::DmaBacking;
    use virtio_pci_uio::dma::DmaRegion;
    use virtio_pci_uio::PciSnd;

    /// Huge-page memory for the kernel's areas.
    struct Arena(DmaRegion);

    impl DmaBacking for Arena {
        fn base(&self) -> *mut u8 {
            self.0.base()
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn phys_base(&self) -> u64 {
            self.0.phys_base()
        }
    }

    /// Sets a flag when any queue completes something.
    struct Flag(std::sync::Mutex<bool>, std::sync::Condvar);

    impl platform::QueueHandler for Flag {
        fn queue_interrupt(&self, _queue: u16) {
            *sim_kernel::report::lock(&self.0) = true;
            self.1.notify_all();
        }
    }

    /// Configures and prepares every stream of QEMU's device with `channels` channels
    /// before the add-on sees it: QEMU reports the channel count of a stream's last PREPARE
    /// as its `channels_max` (and a reset keeps it), so this makes a device with that many
    /// channels at most. Leaves the device reset.
    fn preset_channels(kernel: &SimKernel, dev: &PciSnd, channels: u8) -> Result<(), String> {
        use platform::{Kernel, PhysEntry, VirtioDevice};
        use spec::virtio_snd as vs;
        use zerocopy::IntoBytes;
        let fail = |what: &str, e: platform::Status| format!("preset: {what}: {e}");
        dev.negotiate_features(spec::haiku_driver::VIRTIO_FEATURE_VERSION_1)
            .map_err(|e| fail("features", e))?;
        let mut cfg = [0u8; 12];
        dev.read_device_config(0, &mut cfg)
            .map_err(|e| fail("config", e))?;
        let streams = u32::from_le_bytes([cfg[4], cfg[5], cfg[6], cfg[7]]);
        dev.alloc_queues(4).map_err(|e| fail("queues", e))?;
        let flag = Arc::new(Flag(
            std::sync::Mutex::new(false),
            std::sync::Condvar::new(),
        ));
        dev.setup_interrupts(flag.clone())
            .map_err(|e| fail("interrupts", e))?;
        let area = kernel
            .create_area("preset", sim_kernel::memory::PAGE_SIZE, false)
            .map_err(|e| fail("area", e))?;
        let mem = kernel.phys_memory();
        let result = (|| {
            for stream in 0..streams {
                let hdr = |code: u32| vs::PcmHdr {
                    hdr: vs::Hdr { code: code.into() },
                    stream_id: stream.into(),
                };
                let p = vs::PcmSetParams {
                    hdr: hdr(vs::VIRTIO_SND_R_PCM_SET_PARAMS),
                    buffer_bytes: (4 * 1920u32).into(),
                    period_bytes: 1920u32.into(),
                    channels,
                    format: vs::PcmFormat::S16 as u8,
                    rate: vs::PcmRate::Rate48000 as u8,
                    ..Default::default()
                };
                let hdr = hdr(vs::VIRTIO_SND_R_PCM_PREPARE);
                for req in [p.as_bytes(), hdr.as_bytes()] {
                    mem.write(area.phys, req)
                        .map_err(|_| "preset: area write".to_owned())?;
                    *sim_kernel::report::lock(&flag.0) = false;
                    let entries = [
                        PhysEntry {
                            address: area.phys,
                            size: req.len() as u64,
                        },
                        PhysEntry {
                            address: area.phys + 2048,
                            size: 4,
                        },
                    ];
                    // SAFETY: both entries are in `area`, which is deleted below only after
                    // the device was reset, and leaked if the reset fails.
                    unsafe { dev.queue_request(0, &entries, 1, 1) }
                        .map_err(|e| fail("request", e))?;
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                    let answer = loop {
                        if let Some((_, _)) = dev.queue_dequeue(0) {
                            let mut st = [0u8; 4];
                            mem.read(area.phys + 2048, &mut st)
                                .map_err(|_| "preset: area read".to_owned())?;
                            break u32::from_le_bytes(st);
                        }
                        let done = sim_kernel::report::lock(&flag.0);
                        let left = deadline.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            return Err("preset: the device did not answer in 2 s".to_owned());
                        }
                        let _ = flag
                            .1
                            .wait_timeout(done, left.min(std::time::Duration::from_millis(10)));
                    };
                    if answer != vs::VIRTIO_SND_S_OK {
                        return Err(format!(
                            "preset: stream {stream}: request {:#x} answered {answer:#x}",
                            u32::from_le_bytes([req[0], req[1], req[2], req[3]])
                        ));
                    }
                }
            }
            Ok(())
        })();
        // Reset the device before its DMA target goes back to the kernel: an answer that
        // timed out could still land there.
        dev.free_interrupts();
        if dev.free_queues().is_ok() {
            kernel.delete_area(&area);
        }
        result
    }

    /// Areas for the add-on: one huge page (the only size that is physically contiguous for
    /// sure: the guest's huge pages are not adjacent to each other). Audio buffers of both
    /// directions plus the control slots fit many times over at any rate QEMU offers.
    const ARENA: usize = 2 << 20;

    fn boot(args: &Args) -> Result<(Addon, Arc<PciSnd>), String> {
        let arena = DmaRegion::new(ARENA).map_err(|e| format!("DMA memory: {e}"))?;
        let kernel = SimKernel::with_config(KernelConfig {
            real_time: true,
            dma: Some(DmaMemory(Arc::new(Arena(arena)))),
            ..KernelConfig::default()
        });
        let device = PciSnd::open(None)?;
        if let Some(ch) = args.device_channels {
            preset_channels(&kernel, &device, ch)?;
        }
        let device = Arc::new(device);
        let bus: Arc<dyn BusDevice> = device.clone();
        let settings = match &args.settings {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?),
            None => None,
        };
        let addon = Addon::load_on(Path::new(&args.addon), kernel, bus, settings.as_deref())
            .map_err(|e| format!("loading {}: {e}", args.addon))?;
        Ok((addon, device))
    }

    fn session(
        d: &haiku_sim::addon::AddonDevice<'_>,
        rate: u32,
        format: SampleFormat,
    ) -> Result<Session, String> {
        let rb = rate_bit(rate).ok_or(format!("{rate} Hz has no hmulti rate bit"))?;
        let fb = format_bit(format).ok_or(format!("{format:?} has no hmulti format"))?;
        let s = Session::init(
            d,
            Choice {
                rate: Some(rb),
                format: Some(fb),
            },
        )?;
        if s.format.output.rate != rb || s.format.output.format != fb {
            return Err(format!(
                "the device does not offer {rate} Hz {format:?} (rates {:#x}, formats {:#x})",
                s.desc.output_rates, s.desc.output_formats
            ));
        }
        Ok(s)
    }

    /// Times the driver found the device ran dry (nothing queued at an exchange) in the log
    /// lines after the first `seen`, which is moved past them.
    fn ran_dry(kernel: &SimKernel, seen: &mut usize) -> u64 {
        let records = kernel.log_records();
        let n = records
            .get(*seen..)
            .unwrap_or_default()
            .iter()
            .filter_map(|r| {
                let rest = r.message.split("ran dry ").nth(1)?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum();
        *seen = records.len();
        n
    }

    /// What the runs of one boot have in common, and their result lines.
    struct Runner {
        kernel: SimKernel,
        /// How completions reach the driver ("intx", or "polling" and why).
        interrupts: String,
        /// Kernel log records already looked at.
        seen: usize,
        out: Vec<Json>,
    }

    impl Runner {
        /// Plays `data` through an open session as the media add-on does (ending with
        /// FORCE_STOP) and adds its result line; start-up is counted from `since`.
        fn stream(
            &mut self,
            what: &str,
            d: &haiku_sim::addon::AddonDevice<'_>,
            s: &mut Session,
            data: &[u8],
            since: i64,
        ) -> Vec<u8> {
            let c0 = cpu_time_us();
            let clock = self.kernel.clock().clone();
            let mut returned = Vec::new();
            let p = play_observed(d, s, data, |k| {
                returned.push(clock.now());
                if k == 0 {
                    println!("{STREAMING_MARK}");
                }
            });
            let wake = wake_lateness(&p.reports, &returned);
            let cpu = cpu_time_us() - c0;
            let rate = s.output_hz();
            let frame = s.play.frame_bytes().max(1);
            let audio_s = (data.len() / frame) as f64 / f64::from(rate.max(1));
            let dry = ran_dry(&self.kernel, &mut self.seen);
            let t = timing(&p.reports, rate, p.buffer_frames, since);
            let rec = timing(&p.rec_reports, rate, p.buffer_frames, since);
            let last = p.reports.last().copied().unwrap_or((0, 0));
            let rec_last = p.rec_reports.last().copied().unwrap_or((0, 0));
            self.out.push(
                Json::default()
                    .str("what", what)
                    .num("rate", rate)
                    .num("channels", s.desc.output_channel_count)
                    .num("buffers", p.buffers as f64)
                    .num("buffer_frames", p.buffer_frames as f64)
                    .num("exchanges", p.reports.len() as f64)
                    .num("errors", p.errors as f64)
                    .num("played_frames", last.1 as f64)
                    .num("played_time_us", (last.0 - since) as f64)
                    .num("startup_us", t.startup_us as f64)
                    .num("xruns", t.xruns as f64)
                    .num("device_ran_dry", dry as f64)
                    .num("drift_ppm", t.drift_ppm)
                    .num("jitter_max_us", t.jitter_max_us)
                    .num("recorded_frames", rec_last.1 as f64)
                    .num("recorded_bytes", p.recorded.len() as f64)
                    .num("record_drift_ppm", rec.drift_ppm)
                    .num("record_startup_us", rec.startup_us as f64)
                    .num("record_xruns", rec.xruns as f64)
                    .num("record_points", rec.points as f64)
                    .num(
                        "record_time_monotonic",
                        u8::from(p.rec_reports.windows(2).all(|w| w[1].0 >= w[0].0)),
                    )
                    .num("cpu_us_per_audio_s", cpu as f64 / audio_s.max(1e-9))
                    .num("wake_p50_us", wake.0 as f64)
                    .num("wake_p99_us", wake.1 as f64)
                    .num("wake_max_us", wake.2 as f64)
                    .str("interrupts", &self.interrupts),
            );
            p.recorded
        }
    }

    /// Writes what a session recorded to the debug console as a WAV file in the session's
    /// input format, and notes its size in the last result line.
    fn send_recording(r: &mut Runner, s: &Session, recorded: Vec<u8>) -> Result<(), String> {
        let format = [
            SampleFormat::S16,
            SampleFormat::S32,
            SampleFormat::F32,
            SampleFormat::U8,
        ]
        .into_iter()
        .find(|&f| format_bit(f) == Some(s.format.input.format))
        .ok_or(format!(
            "the input format {:#x} has no WAV form",
            s.format.input.format
        ))?;
        let wav = Wav {
            rate: client::rate_hz(s.format.input.rate)
                .ok_or(format!("input rate bit {:#x}", s.format.input.rate))?,
            channels: u16::try_from(s.desc.input_channel_count)
                .map_err(|_| "input channel count".to_owned())?,
            format,
            data: recorded,
        };
        let bytes = wav.to_bytes().map_err(|e| format!("recording: {e}"))?;
        debugcon_write(&bytes)?;
        if let Some(last) = r.out.pop() {
            r.out
                .push(last.num("recording_wav_bytes", bytes.len() as f64));
        }
        Ok(())
    }

    fn silence(s: &Session, seconds: f64) -> Vec<u8> {
        let frames = (f64::from(s.output_hz()) * seconds) as usize;
        let bytes = frames * s.play.frame_bytes();
        vec![s.silence_byte(); bytes]
    }

    /// One exchange of an `unplug` run: its status, when it started, how long it took.
    #[derive(Clone, Copy)]
    struct Exchange {
        status: i32,
        start: Instant,
        took: Duration,
    }

    /// The `unplug` mode: exchanges silence until the device leaves the guest. A watcher
    /// thread waits for the transport to see the removal and then calls the device
    /// manager's `device_removed` (as Haiku's does when its bus loses a device) while the
    /// main thread is blocked in an exchange; the exchange in flight must return an error,
    /// and so must the next ones, none at once. Then the device is closed; the caller
    /// unloads the add-on.
    fn unplug(
        r: &mut Runner,
        addon: &Addon,
        device: &Arc<PciSnd>,
        args: &Args,
    ) -> Result<(), String> {
        let d = addon.open_first()?;
        let mut s = session(&d, args.rate, args.format)?;
        let rate = f64::from(s.output_hz().max(1));
        let period = Duration::from_secs_f64(s.play.frames as f64 / rate);
        let cue_after = (args.unplug_after * rate / s.play.frames.max(1) as f64).ceil() as usize;
        // The watcher: the transport's notice, then the add-on's hook.
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (dev, env, stop) = (device.clone(), addon.env().clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Some(gone) = dev.wait_removed(Duration::from_millis(50)) {
                        let hook = Instant::now();
                        env.real_device_removed();
                        return Some((gone, hook, Instant::now()));
                    }
                }
                None
            })
        };
        let mut seen: Vec<Exchange> = Vec::new();
        let mut cued: Option<Instant> = None;
        let mut after_hook = 0;
        let result = loop {
            if seen.len() == cue_after {
                println!("{UNPLUG_MARK}");
                cued = Some(Instant::now());
            }
            let start = Instant::now();
            let status = s.exchange(&d);
            seen.push(Exchange {
                status,
                start,
                took: start.elapsed(),
            });
            if watcher.is_finished() {
                // The hook has run: the exchange in flight and three more are looked at.
                after_hook += 1;
                if after_hook == 4 {
                    break Ok(());
                }
            } else if cued.is_some_and(|t| t.elapsed() > REMOVAL_WAIT) {
                break Err(format!(
                    "the device was not removed within {REMOVAL_WAIT:?} of the cue"
                ));
            }
        };
        stop.store(true, Ordering::SeqCst);
        let removal = watcher
            .join()
            .map_err(|_| "the removal watcher panicked".to_owned())?;
        result?;
        let (gone, hook, hook_done) = removal.ok_or("the removal watcher saw nothing")?;
        let ended = |e: &Exchange| e.start + e.took;
        // The exchange in flight when the hook ran (or the first to start after it).
        let blocked = seen
            .iter()
            .position(|e| ended(e) >= hook)
            .ok_or("no exchange returned after the removal")?;
        let b = seen[blocked];
        let before = seen[..blocked]
            .iter()
            .filter(|e| ended(e) < gone.at)
            .count();
        let errors_before = seen[..blocked].iter().filter(|e| e.status != 0).count();
        let later = &seen[blocked + 1..];
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        // The first error after the hook: the blocked exchange's, unless its period had
        // completed before the device went (then it reports that period).
        let first_error = seen[blocked..]
            .iter()
            .find(|e| e.status != 0)
            .ok_or("no exchange failed after the removal")?;
        let later_min = later.iter().map(|e| e.took).min().unwrap_or_default();
        let later_max = later.iter().map(|e| e.took).max().unwrap_or_default();
        s.release(&d);
        let close = Instant::now();
        let closed = d.close();
        let close_took = close.elapsed();
        r.out.push(
            Json::default()
                .str("what", "unplug")
                .num("rate", rate)
                .num("period_us", us(period))
                .num("exchanges_before_removal", before as f64)
                .num("errors_before_removal", errors_before as f64)
                .num("cue_after_exchanges", cue_after as f64)
                .num(
                    "cue_to_removal_ms",
                    cued.map_or(f64::NAN, |c| {
                        gone.at.saturating_duration_since(c).as_secs_f64() * 1e3
                    }),
                )
                .str("removal_seen", &gone.how)
                .num(
                    "removal_to_hook_us",
                    us(hook.saturating_duration_since(gone.at)),
                )
                .num("hook_us", us(hook_done.saturating_duration_since(hook)))
                .num("blocked_status", b.status)
                .num("blocked_exchange_us", us(b.took))
                .num(
                    "blocked_returned_after_hook_us",
                    us(ended(&b).saturating_duration_since(hook)),
                )
                .num("blocked_started_before_hook", u8::from(b.start < hook))
                .num("first_error_status", first_error.status)
                .num(
                    "first_error_after_hook_us",
                    us(ended(first_error).saturating_duration_since(hook)),
                )
                .num("later_exchanges", later.len() as f64)
                .num(
                    "later_errors",
                    later.iter().filter(|e| e.status != 0).count() as f64,
                )
                .num("later_min_us", us(later_min))
                .num("later_max_us", us(later_max))
                .num("close_status", closed)
                .num("close_us", us(close_took))
                .num("reopen_refused", u8::from(addon.open_first().is_err()))
                .str("interrupts", &r.interrupts),
        );
        Ok(())
    }

    pub(super) fn run(args: &Args) -> Result<Vec<Json>, String> {
        let (addon, device) = boot(args)?;
        let interrupts = match device.intx_unavailable() {
            Some(why) => format!("{} ({why})", device.interrupt_mode()),
            None => device.interrupt_mode().to_owned(),
        };
        let kernel = addon.kernel().clone();
        let mut r = Runner {
            kernel: kernel.clone(),
            interrupts,
            seen: 0,
            out: Vec::new(),
        };
        match args.mode {
            Mode::Play => {
                let path = args.input.as_deref().ok_or("play needs --input")?;
                let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
                let wav = Wav::parse(&bytes).map_err(|e| format!("{path}: {e}"))?;
                let opened = kernel.clock().now();
                let d = addon.open_first()?;
                let mut s = session(&d, wav.rate, wav.format)?;
                if s.desc.output_channel_count != i32::from(wav.channels) {
                    return Err(format!(
                        "the device publishes {} output channels; the input has {}",
                        s.desc.output_channel_count, wav.channels
                    ));
                }
                let least =
                    (args.min_seconds * f64::from(wav.rate)) as usize * s.play.frame_bytes();
                let fill = (!args.repeat).then(|| s.silence_byte());
                let data = super::extend_to(wav.data, least, fill);
                let recorded = r.stream("play", &d, &mut s, &data, opened);
                if args.record {
                    send_recording(&mut r, &s, recorded)?;
                }
                s.release(&d);
                d.close();
            }
            Mode::Capture => {
                let opened = kernel.clock().now();
                let d = addon.open_first()?;
                let mut s = session(&d, args.rate, args.format)?;
                if s.rec.is_empty() {
                    return Err("the device published no record buffers".into());
                }
                let quiet = silence(&s, args.seconds);
                let recorded = r.stream("capture", &d, &mut s, &quiet, opened);
                if args.record {
                    send_recording(&mut r, &s, recorded)?;
                }
                s.release(&d);
                d.close();
            }
            Mode::Unplug => unplug(&mut r, &addon, &device, args)?,
            Mode::Cycle => {
                let opened = kernel.clock().now();
                let d = addon.open_first()?;
                let mut s = session(&d, args.rate, args.format)?;
                let quiet = silence(&s, args.seconds);
                let _ = r.stream("first", &d, &mut s, &quiet, opened);
                let t0 = kernel.clock().now();
                let quiet = silence(&s, args.seconds);
                let _ = r.stream("after stop", &d, &mut s, &quiet, t0);
                // Reconfigure between exchanges, as the media add-on's rate parameter does.
                let mut f = s.format;
                f.output.rate = rate_bit(args.rate2).ok_or("--rate2 has no hmulti rate bit")?;
                f.input.rate = f.output.rate;
                let status = client::ioctl(&d, hm::B_MULTI_SET_GLOBAL_FORMAT, &mut f);
                if status != 0 {
                    return Err(format!(
                        "SET_GLOBAL_FORMAT to {} Hz: {status:#x}",
                        args.rate2
                    ));
                }
                s.get_buffers(&d)?;
                s.format = f;
                let t0 = kernel.clock().now();
                let quiet = silence(&s, args.seconds);
                let _ = r.stream("reconfigured", &d, &mut s, &quiet, t0);
                s.release(&d);
                d.close();
                // Close and reopen in the same boot.
                let t0 = kernel.clock().now();
                let d = addon.open_first()?;
                let mut s = session(&d, args.rate, args.format)?;
                let quiet = silence(&s, args.seconds);
                let _ = r.stream("reopened", &d, &mut s, &quiet, t0);
                s.release(&d);
                d.close();
            }
        }
        let mut out = r.out;
        let unload = addon.unload();
        if args.mode == Mode::Unplug {
            // Reached only if the unload left nothing but what the device kept (below).
            if let Some(last) = out.pop() {
                out.push(last.num("unloaded", 1));
            }
        }
        if let Err(problems) = unload {
            // The driver's uninit (in unload) says what it leaks.
            let log = kernel.log_lines();
            // An area the driver said it leaks because the device never gave its chains back
            // (vhost-device-sound's null backend keeps capture buffers for ever) is kept on
            // purpose: the device may still write into it. Reported, not a failure.
            let (kept, other): (Vec<String>, Vec<String>) = problems
                .into_iter()
                .partition(|p| super::announced_leak(p, &log));
            if !other.is_empty() {
                return Err(format!("unload: {}", other.join("; ")));
            }
            if let Some(last) = out.pop() {
                out.push(
                    last.num("areas_kept_by_device", kept.len() as f64)
                        .str("kept_by_device", &kept.join("; ")),
                );
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    /// The lines `sim_kernel::SimKernel::check_clean` and the driver's `leak` calls write.
    #[test]
    fn only_areas_the_driver_said_it_leaks_are_kept_on_purpose() {
        let log = [
            "Error: leaking 20480 bytes of DMA memory (area 4): stream 1: the device holds 4 chains (reset: true)".to_owned(),
            "Error: leaking the 16384-byte buffer area 5: stream 1: the device holds 4 chains (reset: true)".to_owned(),
        ];
        assert!(announced_leak(
            "area 4 \"virtio_sound pcm headers\" (20480 bytes) is still alive",
            &log
        ));
        assert!(announced_leak(
            "area 5 \"virtio_sound buffers\" (16384 bytes, user) is still alive",
            &log
        ));
        assert!(!announced_leak(
            "area 6 \"x\" (8 bytes) is still alive",
            &log
        ));
        assert!(!announced_leak(
            "area 45 \"x\" (8 bytes) is still alive",
            &log
        ));
        assert!(!announced_leak("semaphore 4 \"s\" is still alive", &log));
        assert!(!announced_leak(
            "area 4 \"x\" (8 bytes) is still alive",
            &[]
        ));
    }

    #[test]
    fn arguments_parse_and_bad_ones_say_why() {
        let a = Args::parse(&argv("play --input /in.wav --rate 44100 --format s32")).unwrap();
        assert_eq!(a.mode, Mode::Play);
        assert_eq!(a.rate, 44100);
        assert_eq!(a.format, SampleFormat::S32);
        assert_eq!(a.input.as_deref(), Some("/in.wav"));
        let a = Args::parse(&argv("cycle --rate2 192000 --device-channels 1")).unwrap();
        assert_eq!((a.rate2, a.device_channels), (192000, Some(1)));
        assert!(!a.record);
        let a = Args::parse(&argv("play --input /in.wav --record --min-seconds 4.5")).unwrap();
        assert!(a.record);
        assert_eq!(a.min_seconds, 4.5);
        assert!(!a.repeat);
        let a = Args::parse(&argv("play --input /in.wav --min-seconds 60 --repeat")).unwrap();
        assert!(a.repeat);
        let a = Args::parse(&argv("unplug --unplug-after 1.5 --rate 44100")).unwrap();
        assert_eq!((a.mode, a.unplug_after, a.rate), (Mode::Unplug, 1.5, 44100));
        let a = Args::parse(&argv("capture --settings /s")).unwrap();
        assert_eq!(a.settings.as_deref(), Some("/s"));
        for (bad, says) in [
            ("", "usage"),
            ("dance", "unknown mode"),
            ("play --rate", "needs a value"),
            ("play --rate -5", "not a positive number"),
            ("play --format s24", "unknown --format"),
            ("play --device-channels 40", "not 1..16"),
            ("play --volume 3", "unknown option"),
            ("cycle --record", "records nothing"),
            ("unplug --record", "records nothing"),
            ("play --unplug-after 2", "only in unplug mode"),
            ("unplug --unplug-after 0", "not a positive number"),
            ("play --min-seconds 0", "not a positive number"),
            ("capture --repeat", "only in play mode"),
        ] {
            let e = Args::parse(&argv(bad)).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn an_input_is_extended_by_silence_or_by_itself() {
        assert_eq!(extend_to(vec![1, 2, 3], 7, Some(0)), [1, 2, 3, 0, 0, 0, 0]);
        assert_eq!(extend_to(vec![1, 2, 3], 7, None), [1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(
            extend_to(vec![1, 2, 3], 9, None),
            [1, 2, 3, 1, 2, 3, 1, 2, 3]
        );
        // Long enough already, or nothing to repeat: left alone.
        assert_eq!(extend_to(vec![1, 2, 3], 2, None), [1, 2, 3]);
        assert_eq!(extend_to(vec![1, 2, 3], 2, Some(0)), [1, 2, 3]);
        assert_eq!(extend_to(Vec::new(), 4, None), Vec::<u8>::new());
    }

    #[test]
    fn wake_lateness_is_return_time_less_the_period_timestamp() {
        // 100 periods reported at 10 ms steps; the client got control 20 µs after each,
        // 900 µs after the 50th; the first report (no frames yet) is left out.
        let reports: Vec<(i64, i64)> = (0..101).map(|k| (k * 10_000, k * 480)).collect();
        let returned: Vec<i64> = (0..101)
            .map(|k| k * 10_000 + if k == 50 { 900 } else { 20 })
            .collect();
        assert_eq!(wake_lateness(&reports, &returned), (20, 20, 900));
        assert_eq!(wake_lateness(&[], &[]), (0, 0, 0));
    }

    #[test]
    fn timing_measures_startup_drift_jitter_and_missed_buffers() {
        // 48 kHz, 480-frame buffers every 10 ms, 100 ppm fast, opened 5 ms before the
        // first report.
        let mut r: Vec<(i64, i64)> = (1..=200)
            .map(|k| ((k * 10_000) as i64, (k * 480) as i64))
            .map(|(t, f)| ((t as f64 / 1.0001) as i64 + 1_000_000, f))
            .collect();
        r.insert(0, (995_000, 0));
        let t = timing(&r, 48000, 480, 995_000);
        assert!((t.drift_ppm - 100.0).abs() < 1.0, "{t:?}");
        assert_eq!(t.xruns, 0);
        assert_eq!(t.startup_us, 1_000_000 + 9_999 - 995_000);
        assert!(t.jitter_max_us < 2.0, "{t:?}");
        // A missed buffer (two completed between exchanges) counts.
        r[50].1 += 480;
        for x in &mut r[51..] {
            x.1 += 480;
        }
        assert_eq!(timing(&r, 48000, 480, 0).xruns, 1);
        // Too few points: no drift claimed.
        assert_eq!(timing(&r[..2], 48000, 480, 0).drift_ppm, 0.0);
    }

    #[test]
    fn json_lines_are_valid_json() {
        let j = Json::default()
            .str("what", "a \"quoted\"\nline")
            .num("n", 3)
            .num("x", 1.5)
            .num("nan", f64::NAN);
        assert_eq!(
            j.render(),
            r#"{"what":"a \"quoted\"\u000aline","n":3,"x":1.500,"nan":null}"#
        );
    }
}
