//! The built add-on through real sound servers (`cargo xtask qemu --backend pa|jack`):
//! capture, playback and full duplex bit-exact through a private PulseAudio, full duplex
//! through a private JACK server for a minute without an xrun, and no server left behind by
//! a run, also by one whose server died.
//!
//! They need QEMU and Debian's pulseaudio, pulseaudio-utils and jackd2 (`cargo xtask setup`
//! installs them). Without them they say so and pass, unless `VIRTIO_SOUND_REQUIRE_QEMU` is
//! set or `CI=true`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{num, qemu, qemu_required, text};
use serde_json::Value;

/// Whether the servers are installed; if not (and not required) the test passes, saying so.
fn servers_here() -> bool {
    let found = ["pulseaudio", "parec", "paplay", "jackd"]
        .iter()
        .all(|b| host_audio::find_on_path(b).is_some());
    if !found {
        assert!(
            !qemu_required(),
            "pulseaudio, pulseaudio-utils and jackd2 are required here (CI): run cargo xtask setup"
        );
        eprintln!("skipping: no pulseaudio / jackd (cargo xtask setup installs them)");
    }
    found
}

/// The pids of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && pid != std::process::id() {
            found.push((pid, cmd));
        }
    }
    found
}

/// Our servers' directories under /tmp and processes: what a run must not leave behind.
fn leftovers() -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("vsnd-pa-") || n.starts_with("vsnd-jack-")
        })
        .map(|p| p.display().to_string())
        .collect();
    for needle in ["/tmp/vsnd-pa-", "jackd -n vsnd-"] {
        left.extend(
            processes_with(needle)
                .into_iter()
                .map(|(p, c)| format!("{p}: {c}")),
        );
    }
    let shm: Vec<String> = std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("_vsnd-"))
        .collect();
    left.extend(shm);
    left
}

/// The driver's settings for these runs: 4 buffers of 2048 frames (43 ms at 48 kHz; Haiku's
/// hda driver keeps 2 of 2048). A sound server runs on the host's clock and fills a gap with
/// silence, and under TCG on a shared 2-core machine the emulated guest is sometimes
/// descheduled for longer than the default 4 × 10 ms; the wav backend waits for it, a
/// server does not.
const SETTINGS: &str = "frames_per_buffer 2048\nbuffer_count 4\n";

/// Whether a run's result is what the tests want: each way compared is exact and the server
/// saw no xrun while the stream ran.
fn clean(r: &Value) -> bool {
    let way = |w: &str| r[w].is_null() || r[format!("{w}_exact")] == true;
    let xruns = &r["server"]["xruns_while_streaming"];
    way("played") && way("recorded") && (xruns.is_null() || xruns.as_f64() == Some(0.0))
}

/// [`run_once`], and once more if the result is not [`clean`]: the host's sound server runs
/// on the host's clock, and on a loaded shared machine the emulator (or the server) can be
/// stopped for longer than any buffer holds; a failure has to happen twice to count. The
/// first run's numbers are printed.
fn run(args: &[&str]) -> Option<Value> {
    let r = run_once(args)?;
    if clean(&r) {
        return Some(r);
    }
    eprintln!("not clean, once more: {r}");
    run_once(args)
}

/// One run with [`SETTINGS`]; checks that it left nothing behind.
fn run_once(args: &[&str]) -> Option<Value> {
    if !servers_here() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("virtio_sound");
    std::fs::write(&settings, SETTINGS).unwrap();
    let mut all = args.to_vec();
    all.extend(["--driver-settings", settings.to_str().unwrap()]);
    let runs = qemu(&all)?;
    assert_eq!(leftovers(), Vec::<String>::new(), "left behind by {args:?}");
    assert_eq!(runs.len(), 1);
    Some(runs[0].clone())
}

fn exact(r: &Value, way: &str) {
    assert_eq!(
        r[format!("{way}_exact")],
        true,
        "{way}: not bit-exact: {}",
        r[way]
    );
    let c = &r[way];
    assert_eq!(
        num(c, "matched_frames"),
        num(c, "input_frames"),
        "no lost tail"
    );
}

fn clean_guest(r: &Value) -> &Value {
    let g = &r["guest"][0];
    assert_eq!(num(g, "errors"), 0.0, "a failed exchange: {g}");
    g
}

#[test]
fn pa_captures_bit_exact_at_44_1_48_and_96_khz() {
    for rate in ["44100", "48000", "96000"] {
        let Some(r) = run(&["--backend", "pa", "--record", "/dev/null", "--rate", rate]) else {
            return;
        };
        assert_eq!(r["mode"], "record");
        exact(&r, "recorded");
        let g = clean_guest(&r);
        assert_eq!(num(g, "record_xruns"), 0.0, "{rate} Hz: {g}");
        assert!(num(g, "record_startup_us") > 0.0, "{g}");
    }
}

#[test]
fn pa_plays_bit_exact() {
    let Some(r) = run(&["--backend", "pa", "--rate", "44100", "--seconds", "3"]) else {
        return;
    };
    assert_eq!(r["mode"], "play");
    exact(&r, "played");
    assert_eq!(num(clean_guest(&r), "xruns"), 0.0);
}

#[test]
fn pa_duplex_is_bit_exact_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, out) = (dir.path().join("rec.wav"), dir.path().join("out.wav"));
    let Some(r) = run(&[
        "--backend",
        "pa",
        "--duplex",
        "--record",
        rec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]) else {
        return;
    };
    assert_eq!(r["mode"], "duplex");
    exact(&r, "played");
    exact(&r, "recorded");
    let g = clean_guest(&r);
    assert_eq!(num(g, "record_xruns"), 0.0, "{g}");
    // The files are what was compared: 16-bit stereo at 48 kHz.
    for f in [&rec, &out] {
        let b = std::fs::read(f).unwrap();
        assert_eq!(&b[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([b[24], b[25], b[26], b[27]]), 48000);
    }
}

/// A minute of full duplex through JACK: both ways bit-exact, no xrun in the server while
/// the stream runs, and the clocks measured.
#[test]
fn jack_duplex_for_a_minute_without_an_xrun() {
    let Some(r) = run(&["--backend", "jack", "--duplex", "--seconds", "60"]) else {
        return;
    };
    exact(&r, "played");
    exact(&r, "recorded");
    let g = clean_guest(&r);
    let s = &r["server"];
    eprintln!(
        "jack: server drift {} ppm; guest playback drift {} ppm, capture drift {} ppm",
        s["drift_ppm"], g["drift_ppm"], g["record_drift_ppm"]
    );
    assert_eq!(num(s, "xruns_while_streaming"), 0.0, "{s}");
    assert!(
        s["drift_ppm"].is_number(),
        "the server's clock was measured: {s}"
    );
    assert!(num(g, "drift_ppm").is_finite() && num(g, "record_drift_ppm").is_finite());
}

/// A server that dies mid-run fails the run with its log's tail, and nothing is left.
#[test]
fn a_server_that_dies_fails_the_run_and_leaves_nothing() {
    if !servers_here() {
        return;
    }
    let _one = common::one_at_a_time();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_xtask-addon"))
        .args(["qemu", "--backend", "pa", "--seconds", "30"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server once it runs (QEMU is then booting or playing through it).
    let deadline = Instant::now() + Duration::from_secs(600);
    let killed = loop {
        let found = processes_with("/tmp/vsnd-pa-");
        if let Some((pid, _)) = found
            .iter()
            .find(|(_, c)| c.contains("pulseaudio --daemonize"))
        {
            std::thread::sleep(Duration::from_secs(3));
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            break true;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert!(killed, "the server never ran:\n{t}");
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("pulseaudio exited"), "{t}");
    assert_eq!(leftovers(), Vec::<String>::new());
}

/// Without the server's binaries, the message names the Debian package (before any build).
#[test]
fn a_missing_server_names_its_package() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, package) in [("pa", "pulseaudio"), ("jack", "jackd2")] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_xtask-addon"))
            .args(["qemu", "--backend", backend])
            .env("PATH", dir.path())
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .output()
            .unwrap();
        let t = text(&o);
        assert!(!o.status.success());
        assert!(
            t.contains(&format!("install Debian's {package} package")),
            "{backend}: {t}"
        );
    }
}

/// Options a sound server cannot honour are refused before anything runs.
#[test]
fn bad_combinations_are_refused() {
    for (args, says) in [
        (&["--record", "r.wav"][..], "use --backend pa or jack"),
        (&["--duplex"][..], "use --backend pa or jack"),
        (&["--backend", "pa", "--format", "s32"][..], "use s16"),
        (
            &["--backend", "jack", "--sweep"][..],
            "--sweep runs with --backend wav",
        ),
        (&["--backend", "none"][..], "use --capture or --cycle"),
        (
            &["--backend", "pa", "--device", "vhost"][..],
            "vhost-device-sound has its own",
        ),
    ] {
        let mut all = vec!["qemu"];
        all.extend_from_slice(args);
        let o = common::xtask(&all);
        let t = text(&o);
        assert!(!o.status.success(), "{args:?}: {t}");
        assert!(t.contains(says), "{args:?}: {t}");
    }
}
