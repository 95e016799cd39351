//! The built add-on against QEMU's real virtio-sound-pci device (`cargo xtask qemu`): bit-exact
//! playback at every rate QEMU offers, mono, capture at real-time pace, and stop / reconfigure
//! / reopen in one boot.
//!
//! These need QEMU 8.2 or newer. Without it they say so and pass, unless
//! `VIRTIO_SOUND_REQUIRE_QEMU` is set or `CI=true` (there they must run). Boots run one at a
//! time: the guest plays in real time and must not compete with another guest for the CPU.

mod common;

use std::path::Path;

use common::{
    num, one_at_a_time, path_with, qemu, qemu_required, qemu_with_path, text, xtask_command,
};
use serde_json::Value;

/// The stream ran at its rate: a device that consumes at half speed (QEMU's default audio
/// timer above ~100 kHz) shows up here as -500000 ppm. The bound is loose on purpose: the
/// guest is emulated on a shared machine.
fn at_its_rate(g: &Value) -> bool {
    num(g, "drift_ppm").abs() < 100_000.0
}

/// Checks one rate of a sweep: bit-exact, the whole input, no error, no late client, at its
/// rate, completions by interrupt. Returns how often the device ran dry (an exchange found
/// nothing queued).
fn check_sweep_run(r: &Value) -> f64 {
    let rate = num(r, "rate");
    let c = &r["comparison"];
    assert_eq!(r["exact"], true, "{rate} Hz: not bit-exact: {c}");
    assert_eq!(num(c, "input_frames"), rate * 3.0);
    assert_eq!(num(c, "matched_frames"), rate * 3.0, "no lost tail");
    let g = &r["guest"][0];
    assert_eq!(num(g, "errors"), 0.0, "{rate} Hz: {g}");
    assert_eq!(num(g, "xruns"), 0.0, "{rate} Hz: {g}");
    assert!(num(g, "played_frames") >= rate * 3.0, "{g}");
    assert!(num(g, "startup_us") > 0.0, "{g}");
    assert!(at_its_rate(g), "{rate} Hz did not play at its rate: {g}");
    // Debian's kernel has uio_pci_generic: completions come by the INTx line (a bare
    // kernel given by VIRTIO_SOUND_QEMU_KERNEL may only allow polling).
    if std::env::var_os("VIRTIO_SOUND_QEMU_KERNEL").is_none() {
        assert_eq!(g["interrupts"], "intx", "{g}");
    }
    num(g, "device_ran_dry")
}

/// Every rate bit-exact with no xrun. The device running dry depends on when the emulated
/// guest gets the host's CPU as well as on the driver (4 buffers of ~10 ms under TCG on a
/// 2-core machine that is also running QEMU's emulation): a rate that ran dry gets one
/// more boot of its own, and must be clean there.
#[test]
fn plays_bit_exact_at_every_rate_qemu_offers() {
    let Some(runs) = qemu(&["--sweep", "--seconds", "3"]) else {
        return;
    };
    let rates: Vec<f64> = runs.iter().map(|r| num(r, "rate")).collect();
    assert_eq!(rates, [44100.0, 48000.0, 96000.0, 192000.0, 384000.0]);
    for r in &runs {
        if check_sweep_run(r) == 0.0 {
            continue;
        }
        let rate = format!("{}", num(r, "rate"));
        eprintln!("{rate} Hz ran dry: once more, alone: {}", r["guest"][0]);
        let again = qemu(&["--sweep", "--rates", &rate, "--seconds", "3"]).expect("QEMU ran");
        assert_eq!(again.len(), 1);
        let g = &again[0]["guest"][0];
        assert_eq!(
            check_sweep_run(&again[0]),
            0.0,
            "{rate} Hz ran dry in two boots: {} then {g}",
            r["guest"][0]
        );
    }
}

/// At low rates QEMU's ~1024-frame buffer is 128 ms (8 kHz): the driver's stop padding
/// grows to it, so nothing is lost at stop. (QEMU takes the driver's whole 40 ms ring at
/// START there, so the driver's "ran dry" count may be non-zero without an audible gap.)
#[test]
fn low_rates_lose_no_tail() {
    let Some(runs) = qemu(&["--sweep", "--rates", "8000,22050", "--seconds", "2"]) else {
        return;
    };
    for r in &runs {
        let rate = num(r, "rate");
        assert_eq!(r["exact"], true, "{rate} Hz: {}", r["comparison"]);
        let g = &r["guest"][0];
        assert_eq!(num(g, "errors"), 0.0, "{rate} Hz: {g}");
        assert_eq!(num(g, "xruns"), 0.0, "{rate} Hz: the client kept up: {g}");
        assert!(at_its_rate(g), "{rate} Hz: {g}");
    }
}

#[test]
fn mono_plays_in_both_channels_of_a_stereo_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mono.wav");
    let Some(runs) = qemu(&[
        "--channels",
        "1",
        "--seconds",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]) else {
        return;
    };
    let r = &runs[0];
    assert_eq!(r["exact"], true, "{}", r["comparison"]);
    assert_eq!(num(&r["guest"][0], "channels"), 1.0, "a mono device");
    let file = std::fs::read(Path::new(&out)).unwrap();
    assert_eq!(u16::from_le_bytes([file[22], file[23]]), 2, "a stereo file");
}

#[test]
fn capture_completes_at_real_time_pace() {
    let Some(runs) = qemu(&["--capture", "--seconds", "3"]) else {
        return;
    };
    let g = &runs[0]["guest"][0];
    assert_eq!(num(g, "errors"), 0.0, "{g}");
    assert!(
        num(g, "recorded_frames") >= 0.9 * 3.0 * 48000.0,
        "the record buffers kept completing: {g}"
    );
    assert!(num(g, "recorded_bytes") > 0.0, "{g}");
    assert_eq!(num(g, "record_time_monotonic"), 1.0, "{g}");
    assert!(
        num(g, "record_drift_ppm").abs() < 100_000.0,
        "capture at its rate: {g}"
    );
}

#[test]
fn stop_reconfigure_and_reopen_in_one_boot() {
    let Some(runs) = qemu(&["--cycle", "96000", "--seconds", "1"]) else {
        return;
    };
    let phases = runs[0]["guest"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|g| g["what"].as_str().unwrap()).collect();
    assert_eq!(names, ["first", "after stop", "reconfigured", "reopened"]);
    let rates: Vec<f64> = phases.iter().map(|g| num(g, "rate")).collect();
    assert_eq!(rates, [48000.0, 48000.0, 96000.0, 48000.0]);
    for g in phases {
        assert_eq!(num(g, "errors"), 0.0, "{g}");
        assert!(num(g, "played_frames") >= 0.9 * num(g, "rate"), "{g}");
        assert!(at_its_rate(g), "{g}");
    }
}

/// Without a usable QEMU the command says what is needed and how to get it. (Runs without
/// QEMU: a fake one on PATH.)
#[test]
fn a_missing_or_old_qemu_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let run = |path: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_xtask-addon"))
            .args(["qemu", "--out", "x.wav"])
            .env("PATH", path)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let o = run(dir.path());
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("does not run"), "{t}");
    assert!(
        t.contains("bookworm-backports") && t.contains("qemu-system-x86"),
        "{t}"
    );
    let fake = dir.path().join("qemu-system-x86_64");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'QEMU emulator version 7.2.11 (Debian 1:7.2+dfsg-7)'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t = text(&run(dir.path()));
    assert!(t.contains("is 7.2.11") && t.contains("8.2 or newer"), "{t}");
}

// ---------------------------------------------------------------------------------------
// The second device: vhost-device-sound (`--device vhost`), its null backend, which
// completes playback the moment it is queued and never completes capture.

/// A directory holding `vhost-device-sound`, a shell script that appends its process id to
/// `pids` (the id the daemon keeps: the script `exec`s it), runs `extra`, then becomes the
/// installed vhost-device-sound. `None` when that is not installed (and not required).
fn wrapped_vhost(extra: &str) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let real = match xtask::setup::vhost_sound() {
        Ok(p) => p,
        Err(e) => {
            assert!(
                !qemu_required(),
                "vhost-device-sound is required here but: {e}"
            );
            eprintln!("skipping: {e}");
            return None;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = dir.path().join("vhost-device-sound");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             case \"$1\" in --version|--help) exec '{real}' \"$@\";; esac\n\
             echo $$ >> '{pids}'\n\
             {extra}\n\
             exec '{real}' \"$@\"\n",
            real = real.display(),
            pids = pids.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some((dir, pids))
}

/// Every daemon the wrapper started has exited (its process is gone, or a zombie of
/// another parent: `/proc/PID/stat` state Z or X).
fn assert_all_gone(pids: &Path) {
    let text = std::fs::read_to_string(pids).expect("the wrapper ran");
    assert!(!text.trim().is_empty());
    for pid in text.split_whitespace() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        assert!(
            matches!(state, None | Some("Z") | Some("X")),
            "vhost-device-sound {pid} still runs: {stat}"
        );
    }
}

/// Played on a device that completes every buffer as soon as it is queued, the add-on still
/// keeps real time: `played_frames_count` follows the guest's clock (drift and the largest
/// deviation are reported), no exchange fails, the client is never late, and the run ends.
/// "Device ran dry" is not checked: every buffer is back before the next exchange, so the
/// driver's count of exchanges that found nothing queued is every exchange here.
#[test]
fn vhost_null_keeps_real_time() {
    let Some((bin, pids)) = wrapped_vhost("") else {
        return;
    };
    let Some(runs) = qemu_with_path(
        &[
            "--device",
            "vhost",
            "--rate",
            "44100",
            "--seconds",
            "5",
            "--timeout",
            "240",
        ],
        Some(bin.path()),
    ) else {
        return;
    };
    assert_all_gone(&pids);
    let r = &runs[0];
    assert_eq!(r["device"], "vhost-null");
    assert_eq!(
        r["comparison"],
        Value::Null,
        "the null backend keeps nothing"
    );
    let g = &r["guest"][0];
    eprintln!(
        "vhost-null 44.1 kHz: drift {} ppm, max deviation {} us",
        g["drift_ppm"], g["jitter_max_us"]
    );
    assert_eq!(num(g, "errors"), 0.0, "{g}");
    assert_eq!(num(g, "xruns"), 0.0, "the client kept up: {g}");
    assert!(num(g, "played_frames") >= 5.0 * 44100.0, "{g}");
    // Paced by the driver alone: a device with no clock must not make it run fast (an
    // unpaced driver would play 5 s in a few ms: about -1,000,000 ppm) or slow.
    assert!(num(g, "drift_ppm").abs() < 20_000.0, "{g}");
    assert!(num(g, "jitter_max_us") < 250_000.0, "{g}");
}

/// Play, stop, play again, reconfigure, close and reopen in one boot on vhost-null: every
/// phase plays at its rate with no failed exchange, although the device still holds the
/// first run's capture buffers (the driver goes on without them and reports the memory it
/// must leave to the device).
#[test]
fn vhost_null_plays_again_in_the_same_boot() {
    let Some((bin, pids)) = wrapped_vhost("") else {
        return;
    };
    let Some(runs) = qemu_with_path(
        &[
            "--device",
            "vhost",
            "--cycle",
            "22050",
            "--seconds",
            "1",
            "--timeout",
            "240",
        ],
        Some(bin.path()),
    ) else {
        return;
    };
    assert_all_gone(&pids);
    let phases = runs[0]["guest"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|g| g["what"].as_str().unwrap()).collect();
    assert_eq!(names, ["first", "after stop", "reconfigured", "reopened"]);
    let rates: Vec<f64> = phases.iter().map(|g| num(g, "rate")).collect();
    assert_eq!(rates, [48000.0, 48000.0, 22050.0, 48000.0]);
    for g in phases {
        assert_eq!(num(g, "errors"), 0.0, "{g}");
        assert_eq!(num(g, "xruns"), 0.0, "{g}");
        assert!(num(g, "played_frames") >= 0.9 * num(g, "rate"), "{g}");
        assert!(at_its_rate(g), "{g}");
    }
    // The capture buffers vhost-null never gave back: the input's headers and the buffer
    // area stay with the device, said by the driver, reported by the guest.
    let last = phases.last().unwrap();
    assert_eq!(num(last, "areas_kept_by_device"), 2.0, "{last}");
}

/// Recording on a device that never completes capture: the run ends, no exchange fails,
/// playback keeps time, nothing is recorded (and the record side reports nothing).
#[test]
fn vhost_null_capture_never_hangs() {
    let Some((bin, pids)) = wrapped_vhost("") else {
        return;
    };
    let Some(runs) = qemu_with_path(
        &[
            "--device",
            "vhost",
            "--capture",
            "--seconds",
            "2",
            "--timeout",
            "240",
        ],
        Some(bin.path()),
    ) else {
        return;
    };
    assert_all_gone(&pids);
    let g = &runs[0]["guest"][0];
    assert_eq!(num(g, "errors"), 0.0, "{g}");
    assert_eq!(num(g, "xruns"), 0.0, "{g}");
    assert!(num(g, "played_frames") >= 2.0 * 48000.0, "{g}");
    assert!(at_its_rate(g), "{g}");
    assert_eq!(num(g, "recorded_frames"), 0.0, "{g}");
    assert_eq!(num(g, "recorded_bytes"), 0.0, "{g}");
    assert_eq!(num(g, "areas_kept_by_device"), 2.0, "{g}");
}

/// A daemon that dies during the run fails it with its log, and nothing is left running.
#[test]
fn a_vhost_daemon_that_dies_fails_the_run_with_its_log() {
    let Some((bin, pids)) =
        wrapped_vhost("echo 'wrapper: killing the daemon in 25 s' >&2\n(sleep 25; kill -9 $$) &")
    else {
        return;
    };
    let _one = one_at_a_time();
    let o = xtask_command(&[
        "qemu",
        "--device",
        "vhost",
        "--seconds",
        "120",
        "--timeout",
        "240",
    ])
    .env("PATH", path_with(bin.path()))
    .output()
    .unwrap();
    let out = text(&o);
    if out.contains("or newer with virtio-sound-pci is needed") {
        assert!(!qemu_required(), "{out}");
        return;
    }
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("vhost-device-sound (null backend) during the run")
            && out.contains("exited (signal: 9"),
        "{out}"
    );
    assert!(out.contains("wrapper: killing the daemon in 25 s"), "{out}");
    assert_all_gone(&pids);
}

/// Without vhost-device-sound the command stops before building anything, with the exact
/// command that installs it. (Runs without QEMU.)
#[test]
fn a_missing_vhost_device_sound_names_the_install_command() {
    let empty = tempfile::tempdir().unwrap();
    let o = xtask_command(&["qemu", "--device", "vhost"])
        .env("PATH", empty.path())
        .env("CARGO_HOME", empty.path())
        .output()
        .unwrap();
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "--device vhost: vhost-device-sound is neither on PATH nor in {}/bin. Install it \
             with `cargo install vhost-device-sound --version 0.3.0 --locked \
             --no-default-features --features alsa-backend`.",
            empty.path().display()
        )),
        "{out}"
    );
    // Rates it does not offer are refused first.
    let o = xtask_command(&["qemu", "--device", "vhost", "--rate", "96000"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let out = text(&o);
    assert!(out.contains("a rate vhost-device-sound offers"), "{out}");
    assert!(out.contains("48000"), "{out}");
}

/// The sound device removed mid-playback with QMP's `device_del` (ACPI hotplug on a PCIe
/// root port): the guest runner notices (its uio file fails, the function leaves sysfs),
/// calls the add-on's `device_removed` while an exchange is blocked, and the exchange
/// returns. Bounds: the driver's exchange timeout is 4 periods (40 ms at 48 kHz with its
/// default 480-frame buffers); on top of it, 1 s for the guest being stopped, which TCG on
/// a loaded 2-core host was measured doing for up to 640 ms. An exchange that returns in
/// under 1 ms would make the media add-on spin. The add-on must unload with nothing left
/// but what the device held (headers and buffers, leaked on purpose), and QEMU must exit
/// through isa-debug-exit (`cargo xtask qemu` fails otherwise).
#[test]
fn the_device_removed_during_playback_in_qemu() {
    let Some(runs) = qemu(&["--unplug-after", "1", "--timeout", "85"]) else {
        return;
    };
    let r = &runs[0];
    assert_eq!(r["mode"], "unplug");
    let g = &r["guest"][0];
    let period = num(g, "period_us");
    let bound = 4.0 * period + 1_000_000.0;
    // Played for a second (100 periods of 10 ms) before the cue, without an error.
    assert_eq!(num(g, "cue_after_exchanges"), (1e6 / period).ceil(), "{g}");
    assert!(
        num(g, "exchanges_before_removal") >= num(g, "cue_after_exchanges"),
        "{g}"
    );
    assert_eq!(num(g, "errors_before_removal"), 0.0, "{g}");
    // The guest saw the function go, and told the add-on at once.
    assert!(
        g["removal_seen"]
            .as_str()
            .is_some_and(|s| s.contains("left sysfs")),
        "{g}"
    );
    assert!(num(g, "removal_to_hook_us") < 1_000_000.0, "{g}");
    // The exchange blocked at the removal returned; the first error came within the bound.
    assert_eq!(num(g, "blocked_started_before_hook"), 1.0, "{g}");
    assert!(num(g, "blocked_returned_after_hook_us") <= bound, "{g}");
    assert_ne!(num(g, "first_error_status"), 0.0, "{g}");
    assert!(num(g, "first_error_after_hook_us") <= bound, "{g}");
    // Every later exchange fails, none at once, none for long.
    assert!(num(g, "later_exchanges") >= 3.0, "{g}");
    assert_eq!(num(g, "later_errors"), num(g, "later_exchanges"), "{g}");
    assert!(num(g, "later_min_us") >= 1_000.0, "{g}");
    assert!(num(g, "later_max_us") <= bound, "{g}");
    // Closed, not reopened, unloaded with only the device's memory kept.
    assert_eq!(num(g, "close_status"), 0.0, "{g}");
    assert_eq!(num(g, "reopen_refused"), 1.0, "{g}");
    assert_eq!(num(g, "unloaded"), 1.0, "{g}");
    let kept = g["kept_by_device"].as_str().unwrap_or("");
    for area in kept.split("; ").filter(|a| !a.is_empty()) {
        assert!(
            area.contains("\"virtio_sound pcm headers\"")
                || area.contains("\"virtio_sound buffers\""),
            "{g}"
        );
    }
    // QEMU saw the device deleted.
    assert!(num(r, "device_deleted_ms") < 30_000.0, "{r}");
}
