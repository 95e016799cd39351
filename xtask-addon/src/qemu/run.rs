//! Step 4, the guest run: QEMU with `virtio-sound-pci`, its audio backend, KVM or TCG, the
//! serial console captured line by line, and a timeout.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use super::debian::{guest_kernel_and_busybox, guest_modules};
use super::initramfs::{build_sim_guest, initramfs};
use super::prereq::{qemu_usable, QEMU};
use super::results::{verdict, GuestOutput};
use super::{EXIT_MARK, OUT_DIR};
use crate::{root, Result};

/// QEMU's audio backend for the sound device.
#[derive(Debug, Clone)]
pub enum Audiodev {
    /// Writes what the device plays to a WAV file: 16-bit, `channels` channels at
    /// `frequency` Hz (QEMU mixes and converts the guest's stream to that).
    Wav {
        path: PathBuf,
        frequency: u32,
        channels: u16,
    },
    /// Discards the output; input is silence. `frequency`: the stream's rate (sets the
    /// audio timer, see [`timer_period_us`]).
    None { frequency: u32 },
    /// A sound server's backend (`pa`, `jack`): the whole option, made by `host_audio`
    /// for its private server, with id `snd0`.
    Server(String),
    /// No audiodev: the sound device is `vhost-user-snd-pci`, served by a
    /// vhost-device-sound daemon on `socket` ([`super::vhost`]).
    Vhost { socket: PathBuf },
}

/// The guest's memory in MiB (`-m`; a vhost-user device shares all of it).
pub const GUEST_MEMORY_MIB: u32 = 512;

/// QEMU's audio timer period for a stream at `hz`. Each tick of QEMU's mixing engine moves
/// at most one backend buffer (1024 frames for the wav and none backends), so the default
/// 10 ms tick caps a stream at about 102 kHz: above that the device consumes too slowly
/// (a 192 kHz stream plays at half speed). Ticks are shortened so that one carries at most
/// 512 frames.
pub fn timer_period_us(hz: u32) -> u32 {
    (512_000_000 / hz.max(1)).clamp(1000, 10_000)
}

impl Audiodev {
    /// The `-audiodev` option.
    pub fn option(&self) -> String {
        match self {
            Audiodev::Wav {
                path,
                frequency,
                channels,
            } => format!(
                "wav,id=snd0,path={},out.frequency={frequency},out.channels={channels},\
                 out.format=s16,out.fixed-settings=on,timer-period={}",
                // QEMU runs in its run directory; its option syntax doubles a comma.
                std::path::absolute(path)
                    .unwrap_or_else(|_| path.clone())
                    .display()
                    .to_string()
                    .replace(',', ",,"),
                timer_period_us(*frequency)
            ),
            Audiodev::None { frequency } => {
                format!("none,id=snd0,timer-period={}", timer_period_us(*frequency))
            }
            Audiodev::Server(option) => option.clone(),
            // The device has its own backend (see `sound_device`).
            Audiodev::Vhost { .. } => String::new(),
        }
    }

    /// The options of the sound device: virtio-sound-pci on this audiodev, or the vhost-user
    /// device.
    pub fn sound_device(&self) -> Vec<String> {
        self.sound_device_with("")
    }

    /// [`Audiodev::sound_device`] with `suffix` added to virtio-sound-pci's options (where
    /// it sits: [`super::hotplug::device_suffix`]).
    pub fn sound_device_with(&self, suffix: &str) -> Vec<String> {
        match self {
            Audiodev::Vhost { socket } => super::vhost::qemu_args(socket, GUEST_MEMORY_MIB),
            _ => vec![
                "-audiodev".into(),
                self.option(),
                "-device".into(),
                format!("virtio-sound-pci,audiodev=snd0{suffix}"),
            ],
        }
    }
}

/// One boot of the guest.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// `sim-guest`'s arguments.
    pub args: Vec<String>,
    /// Extra files in the initramfs: guest path, contents (e.g. `/in.wav`).
    pub files: Vec<(String, Vec<u8>)>,
    pub audiodev: Audiodev,
    /// QEMU is killed after this long.
    pub timeout: Duration,
    /// Copy every console line to standard error as it arrives.
    pub echo: bool,
    /// Where QEMU's `isa-debugcon` device (port 0xe9, `sim-guest --record`) writes what
    /// the guest sends it; no such device without it.
    pub debugcon: Option<PathBuf>,
    /// Environment variables for QEMU (a sound server's client settings).
    pub env: Vec<(&'static str, PathBuf)>,
}

/// What runs beside QEMU during a boot: it sees every console line as it arrives and is
/// asked every [`WATCH_PERIOD`] whether all is well (a sound server that died). An error
/// from either ends the run: QEMU is killed and the error returned.
pub trait Watcher {
    fn line(&mut self, line: &str) -> Result;
    fn tick(&mut self) -> Result;
}

/// How often a [`Watcher`] is asked.
pub const WATCH_PERIOD: Duration = Duration::from_millis(200);

/// Watches nothing.
pub struct NoWatcher;

impl Watcher for NoWatcher {
    fn line(&mut self, _: &str) -> Result {
        Ok(())
    }
    fn tick(&mut self) -> Result {
        Ok(())
    }
}

impl Default for GuestRun {
    fn default() -> Self {
        GuestRun {
            args: Vec::new(),
            files: Vec::new(),
            audiodev: Audiodev::None { frequency: 48000 },
            timeout: Duration::from_secs(120),
            echo: false,
            debugcon: None,
            env: Vec::new(),
        }
    }
}

/// A fresh directory under `target/qemu/runs/`, removed when dropped.
pub fn run_dir() -> Result<tempfile::TempDir> {
    let runs = root().join(OUT_DIR).join("runs");
    std::fs::create_dir_all(&runs).map_err(|e| format!("{}: {e}", runs.display()))?;
    Ok(tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&runs)
        .map_err(|e| format!("{}: {e}", runs.display()))?)
}

/// Whether `/dev/kvm` opens read-write.
pub fn kvm_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Set (to anything): every guest console line is copied to standard error as it arrives.
pub const ECHO_ENV: &str = "VIRTIO_SOUND_QEMU_ECHO";

/// Forces the accelerator: `kvm` or `tcg`.
pub const ACCEL_ENV: &str = "VIRTIO_SOUND_QEMU_ACCEL";

/// Set once KVM failed to run a guest in this process: later runs use TCG directly.
static KVM_BROKEN: AtomicBool = AtomicBool::new(false);

/// QEMU's accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// `$VIRTIO_SOUND_QEMU_ACCEL` if set; else KVM if `/dev/kvm` opens read-write and KVM
    /// has not failed in this process; else TCG.
    pub fn choose() -> Result<Accel> {
        match std::env::var(ACCEL_ENV).unwrap_or_default().as_str() {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            "" if kvm_available() && !KVM_BROKEN.load(Ordering::Relaxed) => Ok(Accel::Kvm),
            "" => Ok(Accel::Tcg),
            other => Err(format!("{ACCEL_ENV}={other:?}: use kvm or tcg").into()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Everything a guest boot needs besides the run itself.
#[derive(Debug, Clone)]
pub struct Guest {
    pub kernel: PathBuf,
    pub busybox: PathBuf,
    /// The program run as `/sim-guest`.
    pub runner: PathBuf,
    /// The add-on, as `/virtio_sound`.
    pub addon: PathBuf,
    /// The driver's settings file, as `/virtio_sound.settings` (`sim-guest --settings`).
    pub settings: Option<PathBuf>,
    /// Put the sound device behind a hot-pluggable root port and open QEMU's QMP monitor on
    /// this Unix socket ([`super::hotplug`]).
    pub hotplug_qmp: Option<PathBuf>,
}

/// The driver's settings file's path in the guest.
pub const GUEST_SETTINGS: &str = "/virtio_sound.settings";

impl Guest {
    /// Checks QEMU, builds the add-on (unless given) and `sim-guest`, and fetches the kernel
    /// and busybox.
    pub fn prepare(addon: Option<&Path>) -> Result<Guest> {
        qemu_usable()?;
        let addon = match addon {
            Some(p) => p.to_path_buf(),
            None => crate::haiku::build()?,
        };
        let runner = build_sim_guest()?;
        let (kernel, busybox) = guest_kernel_and_busybox()?;
        Ok(Guest {
            kernel,
            busybox,
            runner,
            addon,
            settings: None,
            hotplug_qmp: None,
        })
    }

    /// [`Guest::prepare`] once per process, with the add-on built from the workspace.
    #[allow(dead_code)] // for the tests
    pub fn shared() -> Result<&'static Guest> {
        static GUEST: OnceLock<std::result::Result<Guest, String>> = OnceLock::new();
        GUEST
            .get_or_init(|| Guest::prepare(None).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| e.clone().into())
    }

    /// Boots the guest once. An error (a [`GuestFailure`] when QEMU ran) unless the guest
    /// printed `@@virtio_sound exit 0` before the timeout. If KVM fails (some nested
    /// hypervisors cannot emulate what the kernel's decompressor does), the run is repeated
    /// with TCG, and later runs of this process use TCG.
    pub fn run(&self, run: &GuestRun) -> Result<GuestOutput> {
        self.run_watched(run, &mut NoWatcher)
    }

    /// [`Guest::run`] with `watcher` beside it.
    pub fn run_watched(&self, run: &GuestRun, watcher: &mut dyn Watcher) -> Result<GuestOutput> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let (mut args, mut files) = (run.args.clone(), run.files.clone());
        if let Some(s) = &self.settings {
            args.extend(["--settings".into(), GUEST_SETTINGS.into()]);
            files.push((GUEST_SETTINGS.into(), read(s)?));
        }
        let image = initramfs(
            &read(&self.busybox)?,
            &read(&self.runner)?,
            &read(&self.addon)?,
            &guest_modules(&self.kernel),
            &args,
            &files,
        )?;
        let dir = run_dir()?;
        let initrd = dir.path().join("initramfs.cpio");
        std::fs::write(&initrd, image).map_err(|e| format!("{}: {e}", initrd.display()))?;
        let accel = Accel::choose()?;
        // QEMU runs in the run directory: a relative kernel path is the caller's.
        let kernel = std::path::absolute(&self.kernel)
            .map_err(|e| format!("{}: {e}", self.kernel.display()))?;
        let guest = Guest {
            kernel,
            ..self.clone()
        };
        let cmd = guest.command(accel, &initrd, run, dir.path());
        let echo = run.echo || std::env::var_os(ECHO_ENV).is_some();
        match run_qemu(cmd, run.timeout, echo, watcher)? {
            Qemu::Done(out) => out,
            Qemu::KvmFailed(why) if std::env::var(ACCEL_ENV).unwrap_or_default().is_empty() => {
                KVM_BROKEN.store(true, Ordering::Relaxed);
                eprintln!("==> KVM cannot run the guest ({why}); using TCG from now on");
                match run_qemu(
                    guest.command(Accel::Tcg, &initrd, run, dir.path()),
                    run.timeout,
                    echo,
                    watcher,
                )? {
                    Qemu::Done(out) => out,
                    Qemu::KvmFailed(why) => Err(why.into()),
                }
            }
            Qemu::KvmFailed(why) => Err(format!("KVM cannot run the guest: {why}").into()),
        }
    }

    /// The QEMU command line of one run.
    pub fn command(&self, accel: Accel, initrd: &Path, run: &GuestRun, dir: &Path) -> Command {
        let mut cmd = Command::new(QEMU);
        cmd.args(["-M", "q35", "-accel", accel.name()]);
        cmd.args(["-m", &GUEST_MEMORY_MIB.to_string(), "-smp", "1"])
            // No network card: the sound device is the only PCI function the guest drives,
            // and no boot ROM probes a network for half a second.
            .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0 panic=-1 quiet hugepages=32"])
            .args(match &self.hotplug_qmp {
                None => run.audiodev.sound_device(),
                Some(qmp) => {
                    let mut v = super::hotplug::qemu_args(qmp);
                    v.extend(
                        run.audiodev
                            .sound_device_with(&super::hotplug::device_suffix()),
                    );
                    v
                }
            })
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .current_dir(dir);
        if let Some(path) = &run.debugcon {
            let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            cmd.arg("-chardev")
                .arg(format!(
                    "file,id=rec,path={}",
                    path.display().to_string().replace(',', ",,")
                ))
                .args(["-device", "isa-debugcon,iobase=0xe9,chardev=rec"]);
        }
        cmd.envs(run.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// [`Guest::shared`]`.run(run)`.
#[allow(dead_code)] // for the tests
pub fn run_guest(run: &GuestRun) -> Result<GuestOutput> {
    Guest::shared()?.run(run)
}

/// How a QEMU run ended.
enum Qemu {
    /// The guest's verdict.
    Done(Result<GuestOutput>),
    /// KVM could not run the guest (QEMU's message); TCG may.
    KvmFailed(String),
}

enum Line {
    Console(String),
    Stderr(String),
}

/// Runs QEMU, collecting the console until it exits or `timeout` passes. The error is QEMU
/// not starting.
fn run_qemu(
    mut cmd: Command,
    timeout: Duration,
    echo: bool,
    watcher: &mut dyn Watcher,
) -> Result<Qemu> {
    let kvm = cmd.get_args().any(|a| a == "kvm");
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {QEMU}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no QEMU stdout")?;
    let stderr = child.stderr.take().ok_or("no QEMU stderr")?;
    let (tx, rx) = mpsc::channel::<Line>();
    let lines = |from: Box<dyn Read + Send>, tx: mpsc::Sender<Line>, wrap: fn(String) -> Line| {
        std::thread::spawn(move || {
            for line in BufReader::new(from).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if tx.send(wrap(line)).is_err() {
                    break;
                }
            }
        })
    };
    let readers = [
        lines(Box::new(stdout), tx.clone(), Line::Console),
        lines(Box::new(stderr), tx, Line::Stderr),
    ];
    let deadline = started + timeout;
    let mut out = GuestOutput::default();
    let mut kvm_failed = None;
    let take = |line: Line, out: &mut GuestOutput, kvm_failed: &mut Option<String>| match line {
        Line::Console(line) => {
            if echo {
                eprintln!("{line}");
            }
            out.console.push(line);
        }
        Line::Stderr(line) => {
            // QEMU pauses the guest and waits after this; nothing more will come.
            if kvm && kvm_failed.is_none() && line.contains("KVM internal error") {
                *kvm_failed = Some(line.clone());
            }
            out.stderr.push_str(&line);
            out.stderr.push('\n');
        }
    };
    let mut timed_out = false;
    let mut watch_failed = None;
    let mut next_tick = Instant::now() + WATCH_PERIOD;
    loop {
        let wait = deadline.min(next_tick);
        match rx.recv_timeout(wait.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Line::Console(text) = &line {
                    if let Err(e) = watcher.line(text) {
                        watch_failed = Some(e);
                    }
                }
                take(line, &mut out, &mut kvm_failed);
                if kvm_failed.is_some() || watch_failed.is_some() {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + WATCH_PERIOD;
            if let Err(e) = watcher.tick() {
                watch_failed = Some(e);
                break;
            }
        }
    }
    if let Some(e) = watch_failed {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("waiting for {QEMU}: {e}").into());
            }
        }
        if kvm_failed.is_some() || timed_out || Instant::now() >= deadline {
            timed_out = kvm_failed.is_none();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    out.wall = started.elapsed();
    for r in readers {
        let _ = r.join();
    }
    for line in rx.try_iter() {
        take(line, &mut out, &mut kvm_failed);
    }
    if let Some(why) = kvm_failed {
        return Ok(Qemu::KvmFailed(why));
    }
    // QEMU refusing to start under KVM (e.g. an MSR the host's KVM rejects).
    if kvm
        && status.is_some_and(|s| !s.success())
        && !out.console.iter().any(|l| l.contains(EXIT_MARK))
        && out.stderr.to_ascii_lowercase().contains("kvm")
    {
        return Ok(Qemu::KvmFailed(out.stderr.trim().to_string()));
    }
    Ok(Qemu::Done(verdict(out, status, timed_out, timeout)))
}

#[cfg(test)]
mod tests {
    use super::super::results::{read_qemu_wav, GuestFailure};
    use super::*;

    #[test]
    fn audiodev_options() {
        let w = Audiodev::Wav {
            path: PathBuf::from("/a,b.wav"),
            frequency: 44100,
            channels: 2,
        };
        assert_eq!(
            w.option(),
            "wav,id=snd0,path=/a,,b.wav,out.frequency=44100,out.channels=2,out.format=s16,out.fixed-settings=on,timer-period=10000"
        );
        assert_eq!(
            Audiodev::None { frequency: 384000 }.option(),
            "none,id=snd0,timer-period=1333"
        );
        assert_eq!(timer_period_us(48000), 10_000);
        assert_eq!(timer_period_us(192000), 2666);
    }

    /// The whole host side with a shell script in place of sim-guest: kernel, busybox,
    /// initramfs, QEMU with virtio-sound-pci, result and exit lines, failures, timeouts.
    #[test]
    fn a_placeholder_guest_boots_and_reports() {
        if let Err(e) = qemu_usable() {
            eprintln!("skipping: {e}");
            return;
        }
        let (kernel, busybox) = match guest_kernel_and_busybox() {
            Ok(kb) => kb,
            Err(e) => {
                eprintln!("skipping: no guest kernel or busybox: {e}");
                return;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let runner = dir.path().join("runner");
        std::fs::write(
            &runner,
            "#!/bin/busybox sh\n\
             # /init hands the status to the exit device with `sim-guest exit N`.\n\
             test \"$1\" = exit && exit 0\n\
             # virtio-sound-pci is 1af4:1059\n\
             dev=$(grep -l 0x1059 /sys/bus/pci/devices/*/device | wc -l)\n\
             echo \"@@virtio_sound result {\\\"args\\\": \\\"$*\\\", \\\"sound_devices\\\": $dev, \\\"input\\\": \\\"$(cat /in.txt)\\\"}\"\n\
             test -f /virtio_sound && test -d /mnt/huge || exit 9\n\
             case \"$1\" in fail) exit 3;; hang) sleep 1000;; esac\n",
        )
        .unwrap();
        let guest = Guest {
            kernel,
            busybox,
            runner,
            addon: PathBuf::from("/bin/sh"),
            settings: None,
            hotplug_qmp: None,
        };
        let wav = dir.path().join("out.wav");
        let run = GuestRun {
            args: vec!["ok".into(), "two words".into()],
            files: vec![("/in.txt".into(), b"hello".to_vec())],
            audiodev: Audiodev::Wav {
                path: wav.clone(),
                frequency: 48000,
                channels: 2,
            },
            timeout: Duration::from_secs(60),
            echo: false,
            debugcon: None,
            env: Vec::new(),
        };
        let out = guest.run(&run).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.exit, Some(0));
        assert_eq!(
            out.results,
            vec![serde_json::json!({"args": "ok two words", "sound_devices": 1, "input": "hello"})]
        );
        let played = read_qemu_wav(&wav).unwrap();
        assert_eq!((played.rate, played.channels), (48000, 2));
        eprintln!("placeholder guest: {:?}", out.wall);

        let fail = GuestRun {
            args: vec!["fail".into()],
            audiodev: Audiodev::None { frequency: 48000 },
            ..run.clone()
        };
        let e = guest.run(&fail).unwrap_err();
        let f = e.downcast_ref::<GuestFailure>().unwrap();
        assert_eq!(f.output.exit, Some(3), "{f}");
        assert!(f.to_string().contains("status 3"), "{f}");

        let hang = GuestRun {
            args: vec!["hang".into()],
            timeout: Duration::from_secs(5),
            ..fail
        };
        let e = guest.run(&hang).unwrap_err();
        let f = e.downcast_ref::<GuestFailure>().unwrap();
        assert!(f.reason.contains("did not finish within 5 s"), "{f}");
        assert_eq!(f.output.exit, None);
        assert!(
            f.output.wall < Duration::from_secs(8),
            "{:?}",
            f.output.wall
        );
    }
}
