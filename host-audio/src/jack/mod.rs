//! A private JACK server (`jackd` with its dummy driver) and [`Tap`], the client that
//! records what QEMU plays and plays what QEMU records.
//!
//! `jackd -n NAME -R -d dummy -r RATE -p PERIOD`: `-n` names the server (clients find it
//! by name; its socket and semaphores are `/dev/shm/jack_NAME_*`), `-R` asks for realtime
//! scheduling, the dummy driver's `-r` is the rate and `-p` the period. The dummy driver wakes on the monotonic clock every period
//! (`JackTimedDriver::ProcessWait`); a late wake-up is an xrun, and the time is not made up
//! — so the server's frames against real time are the server's clock.
//!
//! QEMU's JACK backend (`audio/jackaudio.c`) opens a client per direction with float ports
//! `output N` / `input N` and connects them to the ports matching its `connect-ports` regex;
//! its voices run at the server's rate, in float: 16-bit samples (v / 32768) round-trip
//! exactly, which is why the tap converts with 32768.

mod ffi;

use std::ffi::{c_int, c_void, CString};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::process::Daemon;
use crate::{need, server_dir, Result};

/// How long the server has to accept a client.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The tap's client name (QEMU's `connect-ports` regexes name it).
pub const TAP: &str = "vsndtap";

/// A running private jackd. Dropping it stops the server, removes what it left in
/// `/dev/shm` and its directory.
pub struct JackServer {
    daemon: Daemon,
    dir: tempfile::TempDir,
    name: String,
    pub rate: u32,
    pub period: u32,
}

impl JackServer {
    /// An error naming the Debian package of a missing binary or library.
    pub fn check_installed() -> Result {
        need("jackd", "jackd2")?;
        ffi::Jack::load().map(drop)
    }

    /// Starts `jackd` with the dummy driver at `rate` Hz, `period` frames per cycle.
    pub fn start(rate: u32, period: u32) -> Result<JackServer> {
        let bin = need("jackd", "jackd2")?;
        let jack = Arc::new(ffi::Jack::load()?);
        let dir = server_dir("vsnd-jack-")?;
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vsnd-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let mut cmd = Command::new(bin);
        // Realtime scheduling where the machine allows it (as root, or with the rtprio
        // limit): the dummy driver's thread must wake on time while QEMU emulates beside it;
        // where it is refused jackd only logs it and runs without.
        cmd.args(["-n", &name, "-R", "-d", "dummy"])
            .args(["-r", &rate.to_string(), "-p", &period.to_string()])
            .current_dir(dir.path());
        let daemon = Daemon::spawn(
            "jackd",
            cmd,
            &[
                ("HOME", dir.path().to_path_buf()),
                // No D-Bus device reservation (there is no device, and no bus).
                ("JACK_NO_AUDIO_RESERVATION", "1".into()),
            ],
            &dir.path().join("jackd.log"),
        )?;
        let mut server = JackServer {
            daemon,
            dir,
            name,
            rate,
            period,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            server.daemon.check_alive()?;
            // A client that opens means the server is serving.
            if let Ok(c) = Client::open(&jack, &server.name, "vsndprobe") {
                let got = c.sample_rate();
                drop(c);
                if got != rate {
                    return Err(format!("jackd runs at {got} Hz, not {rate} Hz").into());
                }
                return Ok(server);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "jackd did not accept a client within {} s; the end of its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    server.daemon.log_tail(15)
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    pub fn check_alive(&mut self) -> Result {
        self.daemon.check_alive()
    }

    /// The files the server keeps in `/dev/shm` while it runs (its socket and semaphores,
    /// `jack_NAME_*`, `jack_sem.UID_NAME_*`); the shared `jack-shm-registry` and the
    /// `jack-UID-N` segments are JACK's, for every server of the machine.
    pub fn shm_files(&self) -> Vec<PathBuf> {
        shm_files(&self.name)
    }

    /// Lines of the server's log that report an xrun (`JackTimedDriver::Process XRun`,
    /// `JackEngine::XRun`).
    pub fn logged_xruns(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("jackd.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("XRun"))
            .count()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.daemon.log_tail(lines)
    }

    /// QEMU's `-audiodev` option: a client per direction (`out-qemu`, `in-qemu`, exact
    /// names) connected to the tap: QEMU's outputs to its `rec_N` inputs, QEMU's inputs from
    /// its `cap_N` outputs.
    pub fn qemu_audiodev(&self, id: &str, channels: u16, timer_period_us: u32) -> String {
        format!(
            "jack,id={id},out.server-name={name},in.server-name={name},out.client-name=qemu,\
             in.client-name=qemu,out.exact-name=on,in.exact-name=on,\
             out.connect-ports=^{TAP}:rec_,in.connect-ports=^{TAP}:cap_,\
             out.channels={channels},in.channels={channels},timer-period={timer_period_us}",
            name = self.name
        )
    }

    /// Starts the tap on this server: `channels` ports each way, recording at most
    /// `max_seconds`, with `cap` (interleaved 16-bit) ready to play.
    pub fn tap(&self, channels: u16, max_seconds: f64, cap: Vec<i16>) -> Result<Tap> {
        Tap::start(self, channels, max_seconds, cap)
    }
}

impl Drop for JackServer {
    fn drop(&mut self) {
        self.daemon.stop();
        // A server that had to be killed leaves its files behind.
        for f in self.shm_files() {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn shm_files(server: &str) -> Vec<PathBuf> {
    let tag = format!("_{server}_");
    std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(&tag))
        .map(|e| e.path())
        .collect()
}

/// An open JACK client; closed when dropped.
struct Client {
    jack: Arc<ffi::Jack>,
    ptr: *mut c_void,
}

impl Client {
    /// Opens client `name` on server `server` (never starting one, never renamed).
    fn open(jack: &Arc<ffi::Jack>, server: &str, name: &str) -> Result<Client> {
        let c_name = CString::new(name).map_err(|_| "a client name with a NUL")?;
        let c_server = CString::new(server).map_err(|_| "a server name with a NUL")?;
        let mut status: c_int = 0;
        // SAFETY: both strings are NUL-terminated and outlive the call; with SERVER_NAME the
        // one variadic argument is the server's name as a `const char *`; `status` is a
        // valid int to write.
        let ptr = unsafe {
            (jack.client_open)(
                c_name.as_ptr(),
                ffi::NO_START_SERVER | ffi::USE_EXACT_NAME | ffi::SERVER_NAME,
                &mut status,
                c_server.as_ptr(),
            )
        };
        if ptr.is_null() {
            return Err(
                format!("jack_client_open({name}) on server {server}: status {status:#x}").into(),
            );
        }
        Ok(Client {
            jack: jack.clone(),
            ptr,
        })
    }

    fn sample_rate(&self) -> u32 {
        // SAFETY: `ptr` is an open client.
        unsafe { (self.jack.get_sample_rate)(self.ptr) }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: `ptr` is an open client, closed once here; libjack deactivates it first
        // (its process thread stops before this returns).
        unsafe {
            (self.jack.client_close)(self.ptr);
        }
    }
}

/// What the process thread and the owner share.
struct Shared {
    jack: Arc<ffi::Jack>,
    /// The tap's ports (registered before activation, never changed after).
    rec_ports: Vec<usize>,
    cap_ports: Vec<usize>,
    /// Interleaved 16-bit frames recorded so far while the first `rec_N` port was
    /// connected; at most `capacity` samples.
    recorded: Mutex<Vec<i16>>,
    capacity: usize,
    /// Samples that did not fit.
    overflow: AtomicU64,
    /// The microphone's input, interleaved.
    cap: Vec<i16>,
    /// Set by [`Tap::play`]; the next cycle starts playing `cap`.
    playing: AtomicBool,
    cap_pos: AtomicUsize,
    xruns: AtomicU32,
    /// `xruns` when [`Tap::play`] was called.
    xruns_before_play: AtomicU32,
    shutdown: AtomicBool,
    /// (frames before the cycle, when the cycle ran) of the first and the latest cycle.
    first: Mutex<Option<(u64, Instant)>>,
    last: Mutex<Option<(u64, Instant)>>,
    frames: AtomicU64,
}

/// The 16-bit sample of a float one as QEMU's mixing engine makes it: f × 32768, clamped
/// (`audio/mixeng.c`: 16-bit v enters as v / 32768, so this is exact for it).
fn to_i16(x: f32) -> i16 {
    (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

unsafe extern "C" fn process(nframes: ffi::Nframes, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Shared` the tap registered; it outlives the client (the tap
    // closes the client, which stops this thread, before it drops `Shared`).
    let s = unsafe { &*(arg as *const Shared) };
    let n = nframes as usize;
    let now = Instant::now();
    let before = s.frames.fetch_add(n as u64, Ordering::Relaxed);
    {
        let mut first = crate::lock(&s.first);
        if first.is_none() {
            *first = Some((before, now));
        }
        *crate::lock(&s.last) = Some((before, now));
    }
    let buffer = |port: usize| -> &mut [f32] {
        // SAFETY: the port is ours and registered; JACK's buffer for it holds `nframes`
        // floats for the duration of this callback, and no other code touches it.
        unsafe {
            std::slice::from_raw_parts_mut(
                (s.jack.port_get_buffer)(port as *mut c_void, nframes).cast::<f32>(),
                n,
            )
        }
    };
    let ch = s.rec_ports.len();
    // Record only while something plays into the tap (QEMU's output client exists from the
    // guest's PREPARE on): what comes before is silence the capacity need not hold.
    // SAFETY: a registered port of the client whose callback this is.
    let connected = s
        .rec_ports
        .first()
        .is_some_and(|&p| unsafe { (s.jack.port_connected)(p as *const c_void) } > 0);
    if connected {
        let rec: Vec<&mut [f32]> = s.rec_ports.iter().map(|&p| buffer(p)).collect();
        let mut out = crate::lock(&s.recorded);
        for i in 0..n {
            if out.len() + ch > s.capacity {
                s.overflow
                    .fetch_add((ch * (n - i)) as u64, Ordering::Relaxed);
                break;
            }
            out.extend(rec.iter().map(|b| to_i16(b[i])));
        }
    }
    let mut cap: Vec<&mut [f32]> = s.cap_ports.iter().map(|&p| buffer(p)).collect();
    let playing = s.playing.load(Ordering::Acquire);
    let mut pos = s.cap_pos.load(Ordering::Relaxed);
    for i in 0..n {
        for (c, b) in cap.iter_mut().enumerate() {
            b[i] = match s.cap.get(pos + c) {
                Some(&v) if playing => f32::from(v) / 32768.0,
                _ => 0.0,
            };
        }
        if playing && pos < s.cap.len() {
            pos += cap.len();
        }
    }
    s.cap_pos.store(pos, Ordering::Relaxed);
    0
}

unsafe extern "C" fn xrun(arg: *mut c_void) -> c_int {
    // SAFETY: as in `process`.
    let s = unsafe { &*(arg as *const Shared) };
    s.xruns.fetch_add(1, Ordering::Relaxed);
    0
}

unsafe extern "C" fn shutdown(arg: *mut c_void) {
    // SAFETY: as in `process`.
    let s = unsafe { &*(arg as *const Shared) };
    s.shutdown.store(true, Ordering::Release);
}

/// The tap: `rec_1..N` inputs record, `cap_1..N` outputs play the microphone's input.
pub struct Tap {
    // Dropped first: closing the client stops the callbacks that use `shared`.
    client: Client,
    shared: Box<Shared>,
    rate: u32,
}

/// What the tap measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TapStats {
    /// Xruns the server reported to the tap.
    pub xruns: u32,
    /// Those since [`Tap::play`] (all of them if it was not called).
    pub xruns_while_playing: u32,
    /// Frames the server ran while the tap was active.
    pub frames: u64,
    /// The server's frames against the monotonic clock over the run, in ppm from its rate
    /// (first to last cycle; `None` with fewer than 2 s of cycles).
    pub server_drift_ppm: Option<f64>,
    /// Samples recorded / not kept for lack of room.
    pub recorded_samples: usize,
    pub overflow_samples: u64,
    /// Whether the microphone's input had been played to its end.
    pub cap_done: bool,
    /// Whether the server shut the tap down.
    pub shut_down: bool,
}

impl Tap {
    fn start(server: &JackServer, channels: u16, max_seconds: f64, cap: Vec<i16>) -> Result<Tap> {
        let jack = Arc::new(ffi::Jack::load()?);
        let client = Client::open(&jack, server.name(), TAP)?;
        let rate = client.sample_rate();
        let register = |name: String, flags| -> Result<usize> {
            let c = CString::new(name.clone()).map_err(|_| "a port name with a NUL")?;
            // SAFETY: an open client, NUL-terminated name and type; buffer size 0 is
            // required for the builtin audio type.
            let port = unsafe {
                (jack.port_register)(
                    client.ptr,
                    c.as_ptr(),
                    ffi::DEFAULT_AUDIO_TYPE.as_ptr(),
                    flags,
                    0,
                )
            };
            if port.is_null() {
                return Err(format!("jack_port_register({name}) failed").into());
            }
            Ok(port as usize)
        };
        let rec_ports = (1..=channels)
            .map(|i| register(format!("rec_{i}"), ffi::PORT_IS_INPUT))
            .collect::<Result<Vec<_>>>()?;
        let cap_ports = (1..=channels)
            .map(|i| register(format!("cap_{i}"), ffi::PORT_IS_OUTPUT))
            .collect::<Result<Vec<_>>>()?;
        let capacity = (max_seconds.max(0.0) * f64::from(rate)) as usize * channels as usize;
        let shared = Box::new(Shared {
            jack: jack.clone(),
            rec_ports,
            cap_ports,
            recorded: Mutex::new(Vec::with_capacity(capacity)),
            capacity,
            overflow: AtomicU64::new(0),
            cap,
            playing: AtomicBool::new(false),
            cap_pos: AtomicUsize::new(0),
            xruns: AtomicU32::new(0),
            xruns_before_play: AtomicU32::new(0),
            shutdown: AtomicBool::new(false),
            first: Mutex::new(None),
            last: Mutex::new(None),
            frames: AtomicU64::new(0),
        });
        let arg = &*shared as *const Shared as *mut c_void;
        // SAFETY: an open, not yet active client; `arg` points to `shared`, which the Tap
        // keeps (boxed, never moved) until after the client is closed.
        let rc = unsafe {
            (jack.set_process_callback)(client.ptr, process, arg)
                | (jack.set_xrun_callback)(client.ptr, xrun, arg)
        };
        // SAFETY: as above.
        unsafe { (jack.on_shutdown)(client.ptr, shutdown, arg) };
        if rc != 0 {
            return Err("jack_set_*_callback failed".into());
        }
        // SAFETY: an open client with its callbacks set.
        if unsafe { (jack.activate)(client.ptr) } != 0 {
            return Err("jack_activate failed".into());
        }
        Ok(Tap {
            client,
            shared,
            rate,
        })
    }

    /// The server's rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Starts playing the microphone's input from its first frame.
    pub fn play(&self) {
        let s = &self.shared;
        s.xruns_before_play
            .store(s.xruns.load(Ordering::Relaxed), Ordering::Relaxed);
        s.playing.store(true, Ordering::Release);
    }

    /// Connects its own `cap_N` outputs to its `rec_N` inputs (a loop with no QEMU, to
    /// check the tap itself).
    pub fn loop_back(&self) -> Result {
        for i in 1..=self.shared.rec_ports.len() {
            let from = CString::new(format!("{TAP}:cap_{i}")).map_err(|_| "NUL")?;
            let to = CString::new(format!("{TAP}:rec_{i}")).map_err(|_| "NUL")?;
            // SAFETY: an active client and two NUL-terminated port names.
            let rc =
                unsafe { (self.client.jack.connect)(self.client.ptr, from.as_ptr(), to.as_ptr()) };
            if rc != 0 {
                return Err(format!("jack_connect {from:?} -> {to:?}: {rc}").into());
            }
        }
        Ok(())
    }

    /// Whether something is connected to every recording port (QEMU's output client).
    pub fn connected(&self) -> bool {
        self.shared.rec_ports.iter().all(|&p| {
            // SAFETY: a registered port of the open client.
            unsafe { (self.client.jack.port_connected)(p as *const c_void) > 0 }
        })
    }

    pub fn stats(&self) -> TapStats {
        let s = &self.shared;
        let drift = match (*crate::lock(&s.first), *crate::lock(&s.last)) {
            (Some((f0, t0)), Some((f1, t1))) if t1 - t0 >= Duration::from_secs(2) => {
                let measured = (f1 - f0) as f64 / (t1 - t0).as_secs_f64();
                Some((measured / f64::from(self.rate) - 1.0) * 1e6)
            }
            _ => None,
        };
        TapStats {
            xruns: s.xruns.load(Ordering::Relaxed),
            xruns_while_playing: s.xruns.load(Ordering::Relaxed)
                - s.xruns_before_play.load(Ordering::Relaxed),
            frames: s.frames.load(Ordering::Relaxed),
            server_drift_ppm: drift,
            recorded_samples: crate::lock(&s.recorded).len(),
            overflow_samples: s.overflow.load(Ordering::Relaxed),
            cap_done: s.cap_pos.load(Ordering::Relaxed) >= s.cap.len(),
            shut_down: s.shutdown.load(Ordering::Acquire),
        }
    }

    /// Stops the tap; what it recorded (interleaved) and its numbers.
    pub fn finish(self) -> (Vec<i16>, TapStats) {
        let stats = self.stats();
        let Tap { client, shared, .. } = self;
        drop(client);
        let recorded = std::mem::take(&mut *crate::lock(&shared.recorded));
        (recorded, stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private server at 48 kHz; the tap plays 1 s of a ramp into its own inputs, which
    /// must come back sample for sample after the silence before it; the server and its
    /// files are gone afterwards.
    #[test]
    fn a_private_server_carries_sixteen_bit_audio_exactly_and_leaves_nothing() {
        if crate::find_on_path("jackd").is_none() && std::env::var_os("CI").is_none() {
            eprintln!("skipping: no jackd (Debian's jackd2)");
            return;
        }
        let server = JackServer::start(48000, 256).unwrap();
        let (pid, name) = (server.pid().unwrap(), server.name().to_owned());
        assert!(
            !server.shm_files().is_empty(),
            "no /dev/shm files of {name}"
        );
        let cap: Vec<i16> = (0..48000 * 2)
            .map(|i| (i * 7 % 65536 - 32768) as i16)
            .collect();
        let tap = server.tap(2, 4.0, cap.clone()).unwrap();
        tap.loop_back().unwrap();
        assert!(tap.connected());
        std::thread::sleep(Duration::from_millis(300));
        tap.play();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tap.stats().cap_done && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        let (rec, stats) = tap.finish();
        assert!(stats.cap_done, "{stats:?}");
        let at = rec.iter().position(|&v| v != 0).expect("nothing recorded");
        assert!(rec[..at].iter().all(|&v| v == 0));
        // The ramp's first sample is -32768 (not silence): it starts exactly at `at`.
        assert_eq!(&rec[at..at + cap.len()], &cap[..], "not exact");
        assert!(rec[at + cap.len()..].iter().all(|&v| v == 0));
        drop(server);
        assert!(!crate::process::alive(pid), "jackd {pid} still running");
        assert_eq!(shm_files(&name), Vec::<PathBuf>::new(), "left behind");
    }

    #[test]
    fn sixteen_bit_samples_round_trip_through_float_exactly() {
        for v in [i16::MIN, -12345, -1, 0, 1, 256, 32767] {
            assert_eq!(to_i16(f32::from(v) / 32768.0), v);
        }
        assert_eq!(to_i16(1.5), 32767);
        assert_eq!(to_i16(-1.5), -32768);
    }
}
