//! The sound device removed from a running guest (`cargo xtask qemu --unplug-after`): the
//! device behind a hot-pluggable PCIe root port, QEMU's QMP monitor on a Unix socket, and a
//! [`Watcher`] that asks QEMU to `device_del` the device when the guest prints its cue
//! ([`UNPLUG_MARK`]) and waits for QEMU's `DEVICE_DELETED` event.
//!
//! q35's root bus (`pcie.0`) cannot lose a device; a `pcie-root-port` can. Of the two ways
//! QEMU completes an unplug on such a port, ACPI hotplug is used (QEMU's default on q35
//! since 6.1, `ICH9-LPC.acpi-pci-hotplug-with-bridge-support`, set explicitly here):
//! `device_del` raises a GPE, the guest's ACPI PCI hotplug driver (Linux
//! `drivers/pci/hotplug/acpiphp_glue.c`) removes the function (its driver is unbound
//! first) and evaluates the slot's `_EJ0`, and QEMU unplugs the device at once on that
//! write (`hw/acpi/pcihp.c`, `acpi_pcihp_eject_slot`). PCIe native hotplug instead presses
//! the slot's attention button (`hw/pci/pcie.c`), and Linux's pciehp waits five seconds
//! for a second press that would cancel before it powers the slot off
//! (`drivers/pci/hotplug/pciehp_ctrl.c`, `pciehp_handle_button_press`): slower by five
//! seconds for nothing this test needs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::run::Watcher;
use crate::Result;

/// What the guest prints when it wants its device removed (`sim_guest::UNPLUG_MARK`).
pub const UNPLUG_MARK: &str = "@@virtio_sound unplug";

/// The QEMU id of the sound device (what `device_del` names).
pub const SOUND_ID: &str = "snd";

/// The id of the root port the sound device sits behind.
pub const PORT_ID: &str = "hp0";

/// How long QEMU may take from `device_del` to `DEVICE_DELETED` (the guest kernel has to
/// act on the GPE; an emulated guest on a loaded machine is slow).
/// Shorter than the guest's wait (`sim_guest::REMOVAL_WAIT`, 30 s), so that the host's
/// error, with what QEMU said, ends the run first.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(20);

/// QEMU's options for a hot-pluggable sound device with a QMP monitor on `socket`.
pub fn qemu_args(socket: &Path) -> Vec<String> {
    vec![
        "-global".into(),
        "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on".into(),
        "-device".into(),
        format!("pcie-root-port,id={PORT_ID},bus=pcie.0,chassis=1,slot=1"),
        "-qmp".into(),
        format!(
            "unix:{},server=on,wait=off",
            socket.display().to_string().replace(',', ",,")
        ),
    ]
}

/// The sound device's own options on the root port: `,bus=...,id=...`.
pub fn device_suffix() -> String {
    format!(",bus={PORT_ID},id={SOUND_ID}")
}

/// A QMP conversation: one JSON object per line each way.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    deadline: Instant,
    /// Every message QEMU sent, for the error that says what went wrong.
    seen: Vec<String>,
}

impl Qmp {
    fn connect(socket: &Path, deadline: Instant) -> Result<Qmp> {
        let s = UnixStream::connect(socket)
            .map_err(|e| format!("QMP socket {}: {e}", socket.display()))?;
        let writer = s.try_clone().map_err(|e| format!("QMP: {e}"))?;
        let mut q = Qmp {
            reader: BufReader::new(s),
            writer,
            deadline,
            seen: Vec::new(),
        };
        let greeting = q.next()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("QMP: expected the greeting, got {greeting}").into());
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    /// The next message, or an error when the deadline passes.
    fn next(&mut self) -> Result<Value> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("QMP: timed out; QEMU said: {}", self.seen.join(" ")).into());
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(|e| format!("QMP: {e}"))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QMP: QEMU closed the monitor".into()),
            Ok(_) => {
                self.seen.push(line.trim_end().to_string());
                serde_json::from_str(&line).map_err(|e| format!("QMP: {e} in {line:?}").into())
            }
            Err(e) => Err(format!("QMP: {e}; QEMU said: {}", self.seen.join(" ")).into()),
        }
    }

    /// Runs `command`; its `return` value. Events before the answer are kept in `events`.
    fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let msg = json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{msg}").map_err(|e| format!("QMP {command}: {e}"))?;
        loop {
            let v = self.next()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!("QMP {command}: {e}").into());
            }
        }
    }

    /// Waits for `event` whose data satisfies `matches`.
    fn wait_event(&mut self, event: &str, matches: impl Fn(&Value) -> bool) -> Result<Value> {
        loop {
            let v = self.next()?;
            if v.get("event").and_then(Value::as_str) == Some(event) && matches(&v["data"]) {
                return Ok(v);
            }
        }
    }
}

/// What the host saw of one removal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unplugged {
    /// From the guest's cue to QEMU's answer to `device_del`.
    pub requested: Duration,
    /// From `device_del`'s answer to QEMU's `DEVICE_DELETED` for the device.
    pub deleted: Duration,
}

/// `device_del` of the sound device through the QMP monitor on `socket`, and the wait for
/// its `DEVICE_DELETED`.
pub fn device_del(socket: &Path, cue: Instant) -> Result<Unplugged> {
    let mut q = Qmp::connect(socket, Instant::now() + DELETE_TIMEOUT)?;
    q.execute("device_del", json!({ "id": SOUND_ID }))?;
    let asked = Instant::now();
    q.wait_event("DEVICE_DELETED", |d| {
        d.get("device").and_then(Value::as_str) == Some(SOUND_ID)
    })
    .map_err(|e| format!("waiting for DEVICE_DELETED of {SOUND_ID}: {e}"))?;
    Ok(Unplugged {
        requested: asked - cue,
        deleted: asked.elapsed(),
    })
}

/// Removes the sound device when the guest prints [`UNPLUG_MARK`], on a thread of its own
/// (the console must keep being read meanwhile). A failed removal ends the run.
pub struct Unplugger {
    socket: PathBuf,
    pending: Option<mpsc::Receiver<std::result::Result<Unplugged, String>>>,
    /// The outcome, once there is one.
    pub done: Option<Unplugged>,
}

impl Unplugger {
    pub fn new(socket: PathBuf) -> Unplugger {
        Unplugger {
            socket,
            pending: None,
            done: None,
        }
    }

    /// After the run: the removal, waiting for its thread if it has not reported yet.
    pub fn finish(&mut self) -> Result<Unplugged> {
        if let Some(rx) = self.pending.take() {
            let r = rx
                .recv_timeout(DELETE_TIMEOUT)
                .map_err(|_| "the unplug thread did not report")?;
            self.done = Some(r?);
        }
        self.done
            .ok_or_else(|| format!("the guest never printed {UNPLUG_MARK:?}").into())
    }
}

impl Watcher for Unplugger {
    fn line(&mut self, line: &str) -> Result {
        // Not `starts_with`: the cue may follow the firmware's terminal reset on one line.
        if !line.contains(UNPLUG_MARK) {
            return self.tick();
        }
        if self.pending.is_some() || self.done.is_some() {
            return Err("the guest asked for a second unplug".into());
        }
        let (tx, rx) = mpsc::channel();
        let (socket, cue) = (self.socket.clone(), Instant::now());
        std::thread::spawn(move || {
            let _ = tx.send(device_del(&socket, cue).map_err(|e| e.to_string()));
        });
        self.pending = Some(rx);
        Ok(())
    }

    fn tick(&mut self) -> Result {
        let Some(rx) = &self.pending else {
            return Ok(());
        };
        match rx.try_recv() {
            Ok(r) => {
                self.pending = None;
                self.done = Some(r?);
                Ok(())
            }
            Err(mpsc::TryRecvError::Empty) => Ok(()),
            Err(mpsc::TryRecvError::Disconnected) => Err("the unplug thread died".into()),
        }
    }
}

/// What `--unplug-after` may be, in seconds.
pub const UNPLUG_AFTER: std::ops::RangeInclusive<f64> = 0.1..=600.0;

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// Boots the guest with the sound device on a hot-pluggable port, plays silence and has
/// QEMU remove the device after `after` seconds; the guest's `unplug` result line and the
/// host's [`Unplugged`].
pub fn unplug_boot(
    guest: &super::Guest,
    rate: u32,
    format: &str,
    after: f64,
    timeout: Duration,
) -> Result<(Value, Unplugged, Duration)> {
    // A Unix socket's path has room for 107 bytes: a short directory of its own.
    let dir = tempfile::Builder::new()
        .prefix("virtio-sound-qmp-")
        .tempdir()
        .map_err(|e| format!("a directory for QEMU's monitor socket: {e}"))?;
    let socket = dir.path().join("qmp");
    let guest = super::Guest {
        hotplug_qmp: Some(socket.clone()),
        ..guest.clone()
    };
    let run = super::GuestRun {
        args: vec![
            "unplug".into(),
            "--rate".into(),
            rate.to_string(),
            "--format".into(),
            format.into(),
            "--unplug-after".into(),
            after.to_string(),
        ],
        audiodev: super::Audiodev::None { frequency: rate },
        timeout,
        ..super::GuestRun::default()
    };
    let mut watcher = Unplugger::new(socket);
    let out = guest.run_watched(&run, &mut watcher)?;
    let host = watcher.finish()?;
    let line = out
        .results
        .iter()
        .find(|v| v["what"] == "unplug")
        .cloned()
        .ok_or("the guest printed no unplug result")?;
    Ok((line, host, out.wall))
}

/// `cargo xtask qemu --unplug-after SECONDS`.
pub fn run_unplug(args: &crate::qemucmd::QemuArgs, after: f64) -> Result {
    use crate::qemu::backend::Backend;
    if args.backend.is_server() || args.backend == Backend::None {
        return Err(
            "--unplug-after plays silence through `-audiodev none`; leave out --backend".into(),
        );
    }
    if args.device != crate::vhostcmd::DeviceKind::Qemu {
        return Err("--unplug-after: only QEMU's own virtio-sound-pci (--device qemu)".into());
    }
    let (wav, _) = args.stream.wav()?;
    let format = wav.format.name().unwrap_or("s16");
    let guest = super::Guest {
        settings: args.driver_settings.clone(),
        ..super::Guest::prepare(args.stream.addon.as_deref())?
    };
    let (g, host, wall) = unplug_boot(&guest, wav.rate, format, after, args.timeout_for(after))?;
    println!(
        "{} Hz: the device was removed after {} exchanges ({} ms each): QEMU answered \
         device_del {:.0} ms after the guest's cue and sent DEVICE_DELETED {:.0} ms later",
        num(&g, "rate"),
        num(&g, "exchanges_before_removal"),
        num(&g, "period_us") / 1000.0,
        host.requested.as_secs_f64() * 1e3,
        host.deleted.as_secs_f64() * 1e3,
    );
    println!(
        "  guest: {}; device_removed {:.1} ms later",
        g["removal_seen"].as_str().unwrap_or("?"),
        num(&g, "removal_to_hook_us") / 1000.0
    );
    println!(
        "  the blocked exchange returned {:#x} after {:.1} ms ({:.1} ms after device_removed); \
         the {} after it: {} errors, {:.1} to {:.1} ms each",
        num(&g, "blocked_status") as i64 as i32,
        num(&g, "blocked_exchange_us") / 1000.0,
        num(&g, "blocked_returned_after_hook_us") / 1000.0,
        num(&g, "later_exchanges"),
        num(&g, "later_errors"),
        num(&g, "later_min_us") / 1000.0,
        num(&g, "later_max_us") / 1000.0,
    );
    println!(
        "  close {:#x} in {:.1} ms, reopen refused: {}; add-on unloaded, {} areas kept by the \
         device ({}); QEMU exited cleanly after {:.1} s",
        num(&g, "close_status") as i64 as i32,
        num(&g, "close_us") / 1000.0,
        num(&g, "reopen_refused") == 1.0,
        num(&g, "areas_kept_by_device").max(0.0),
        g["kept_by_device"].as_str().unwrap_or(""),
        wall.as_secs_f64()
    );
    let report = json!([{
        "mode": "unplug",
        "guest": [g],
        "device_del_after_cue_ms": host.requested.as_secs_f64() * 1e3,
        "device_deleted_ms": host.deleted.as_secs_f64() * 1e3,
        "boot_seconds": wall.as_secs_f64(),
        "device": "qemu",
    }]);
    crate::qemucmd::write_report(args, report.as_array().map_or(&[], Vec::as_slice))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A QMP server that greets, checks each command against `script` (the command it
    /// expects and the lines it answers with) and then closes.
    fn fake_qemu(script: Vec<(&'static str, Vec<String>)>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp");
        let listener = UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            for (expect, answers) in script {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["execute"], expect, "{line}");
                for a in answers {
                    writeln!(w, "{a}").unwrap();
                }
            }
        });
        (dir, socket)
    }

    #[test]
    fn options_put_the_device_on_a_hotplug_port() {
        let a = qemu_args(Path::new("/t/a,b"));
        assert_eq!(
            a,
            [
                "-global",
                "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on",
                "-device",
                "pcie-root-port,id=hp0,bus=pcie.0,chassis=1,slot=1",
                "-qmp",
                "unix:/t/a,,b,server=on,wait=off"
            ]
        );
        assert_eq!(device_suffix(), ",bus=hp0,id=snd");
    }

    /// Events for other devices and other events are skipped; the run waits for its own.
    #[test]
    fn device_del_waits_for_its_device_deleted() {
        let ok = r#"{"return": {}}"#.to_string();
        let (_d, socket) = fake_qemu(vec![
            ("qmp_capabilities", vec![ok.clone()]),
            (
                "device_del",
                vec![
                    r#"{"event": "RESET", "data": {}}"#.into(),
                    ok,
                    r#"{"event": "DEVICE_DELETED", "data": {"path": "/x", "device": "other"}}"#
                        .into(),
                    r#"{"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/snd", "device": "snd"}}"#
                        .into(),
                ],
            ),
        ]);
        let u = device_del(&socket, Instant::now()).unwrap();
        assert!(u.deleted < DELETE_TIMEOUT);
    }

    #[test]
    fn a_refused_device_del_or_a_closed_monitor_is_an_error() {
        let ok = r#"{"return": {}}"#.to_string();
        let (_d, socket) =
            fake_qemu(vec![
            ("qmp_capabilities", vec![ok.clone()]),
            (
                "device_del",
                vec![r#"{"error": {"class": "DeviceNotFound", "desc": "Device 'snd' not found"}}"#
                    .into()],
            ),
        ]);
        let e = device_del(&socket, Instant::now()).unwrap_err().to_string();
        assert!(e.contains("DeviceNotFound"), "{e}");
        let (_d, socket) = fake_qemu(vec![
            ("qmp_capabilities", vec![ok.clone()]),
            ("device_del", vec![ok]),
        ]);
        let e = device_del(&socket, Instant::now()).unwrap_err().to_string();
        assert!(e.contains("closed the monitor"), "{e}");
    }

    /// The watcher starts the removal only on the cue, once.
    #[test]
    fn the_watcher_acts_on_the_cue_only() {
        let ok = r#"{"return": {}}"#.to_string();
        let (_d, socket) = fake_qemu(vec![
            ("qmp_capabilities", vec![ok.clone()]),
            (
                "device_del",
                vec![
                    ok,
                    r#"{"event": "DEVICE_DELETED", "data": {"device": "snd"}}"#.into(),
                ],
            ),
        ]);
        let mut w = Unplugger::new(socket);
        w.line("@@virtio_sound streaming").unwrap();
        assert!(w.pending.is_none());
        assert!(w
            .finish()
            .unwrap_err()
            .to_string()
            .contains("never printed"));
        w.line(&format!("\x1bc\x1b[2J{UNPLUG_MARK}")).unwrap();
        assert!(w.line(UNPLUG_MARK).is_err());
        assert!(w.finish().is_ok());
    }
}
