//! The built add-on against QEMU's real virtio-sound-pci device (`cargo xtask qemu`): bit-exact
//! playback at every rate QEMU offers, mono, capture at real-time pace, and stop / reconfigure
//! / reopen in one boot.
//!
//! These need QEMU 8.2 or newer. Without it they say so and pass, unless
//! `VIRTIO_SOUND_REQUIRE_QEMU` is set or `CI=true` (there they must run). Boots run one at a
//! time: the guest plays in real time and must not compete with another guest for the CPU.

mod common;

use std::path::Path;

use common::{num, qemu, text};
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
