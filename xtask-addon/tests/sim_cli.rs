//! `cargo xtask sim` as a user runs it: WAV in, exactly what the device received out, a
//! summary, and clear errors.

use hmulti_client::wav::{SampleFormat, Wav};

mod common;

use common::{text, xtask};

#[test]
fn plays_a_wav_bit_exact_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let input = Wav {
        rate: 96000,
        channels: 2,
        format: SampleFormat::S16,
        data: (0..96000 * 4 / 5).map(|i| (i * 37 % 256) as u8).collect(),
    };
    let inp = dir.path().join("in.wav");
    std::fs::write(&inp, input.to_bytes().unwrap()).unwrap();
    let out = dir.path().join("out.wav");
    let rec = dir.path().join("rec.wav");
    let o = xtask(&[
        "sim",
        "--input",
        inp.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--record",
        rec.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for needle in [
        "rate 96000 Hz, format S16, 2 channels",
        "periods: 4 buffers x",
        "xruns:",
        "played_real_time vs device ground truth: p50",
    ] {
        assert!(t.contains(needle), "{needle:?} missing from:\n{t}");
    }
    let got = Wav::parse(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        (got.rate, got.channels, got.format),
        (96000, 2, SampleFormat::S16)
    );
    // Lead-in, the input, then the driver's stop padding (silence): the documented default
    // of `stop_padding_ms`, 20 ms, is 1920 frames at 96 kHz, of 4 bytes in stereo S16.
    let pad = 1920 * 4;
    let lead = got.data.len() - input.data.len() - pad;
    assert!(
        got.data[..lead].iter().all(|&b| b == 0),
        "lead-in is silence"
    );
    assert!(
        got.data[lead..lead + input.data.len()] == input.data[..],
        "OUT after the lead-in equals IN"
    );
    assert!(got.data[lead + input.data.len()..].iter().all(|&b| b == 0));
    assert!(
        t.contains(&format!("{} frames of stop padding", pad / 4)),
        "{t}"
    );
    let recorded = Wav::parse(&std::fs::read(&rec).unwrap()).unwrap();
    assert!(!recorded.data.is_empty());
}

#[test]
fn the_default_sine_and_other_formats() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.wav");
    let o = xtask(&[
        "sim",
        "--rate",
        "384000",
        "--channels",
        "6",
        "--format",
        "float",
        "--seconds",
        "0.1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let got = Wav::parse(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        (got.rate, got.channels, got.format),
        (384000, 6, SampleFormat::F32)
    );
}

/// Shared interrupts (INTx, or one MSI-X vector): every queue's callback on every interrupt,
/// plus spurious ones; the add-on plays the same bytes as with a vector per queue.
#[test]
fn shared_interrupts_play_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for mode in ["per-queue", "shared"] {
        let out = dir.path().join(format!("{mode}.wav"));
        let args = ["sim", "--seconds", "0.2", "--interrupts", mode];
        let o = xtask(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
        assert!(o.status.success(), "{}", text(&o));
        let t = text(&o);
        let line = t
            .lines()
            .find(|l| l.starts_with(&format!("interrupts ({mode}): ")))
            .unwrap_or_else(|| panic!("no interrupts line for {mode}:\n{t}"));
        // "interrupts (MODE): D from the device, S spurious, C queue callbacks"
        let n: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        let [device, spurious, callbacks] = n[..] else {
            panic!("{line}")
        };
        if mode == "shared" {
            // The add-on has four queues (control, event, tx, rx): each interrupt runs all.
            assert!(spurious > 0, "{line}");
            assert_eq!(callbacks, 4 * (device + spurious), "{line}");
        } else {
            assert_eq!((spurious, callbacks), (0, device), "{line}");
        }
        outputs.push(std::fs::read(&out).unwrap());
    }
    assert!(
        outputs[0] == outputs[1],
        "the output differs with shared interrupts"
    );
}

/// `--haiku beta5`: the add-on loads against R1/beta5's kernel exports and bus interface
/// and plays the same bytes as on nightly (the default).
#[test]
fn beta5_plays_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for haiku in ["nightly", "beta5"] {
        let out = dir.path().join(format!("{haiku}.wav"));
        let args = ["sim", "--seconds", "0.2", "--haiku", haiku];
        let o = xtask(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(
            t.contains(&format!(
                "Haiku {haiku}: rate 48000 Hz, format S16, 2 channels"
            )),
            "{t}"
        );
        outputs.push(std::fs::read(&out).unwrap());
    }
    assert!(outputs[0] == outputs[1], "the output differs on beta5");
}

/// Unsigned 8-bit: silence is 0x80, not 0 (0 is full negative amplitude, a click at every
/// start). The lead-in and the padding hold 0x80, and the summary calls them silence.
#[test]
fn unsigned_8_bit_starts_and_ends_in_its_own_silence() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.wav");
    let o = xtask(&[
        "sim",
        "--format",
        "u8",
        "--channels",
        "1",
        "--seconds",
        "0.1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("frames of lead-in silence"), "{t}");
    assert!(t.contains("frames of stop padding silence"), "{t}");
    assert!(!t.contains("NOT silence"), "{t}");
    let got = Wav::parse(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(got.format, SampleFormat::U8);
    // 4 buffers of lead-in, each at least 16 frames of one byte.
    assert!(
        got.data[..64].iter().all(|&b| b == 0x80),
        "lead-in: {:?}",
        &got.data[..64]
    );
    assert!(got.data[got.data.len() - 16..].iter().all(|&b| b == 0x80));
}

#[test]
fn clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.wav");
    let out = out.to_str().unwrap();
    let bad = dir.path().join("bad.wav");
    std::fs::write(&bad, b"RIFF....WAVEjunk").unwrap();
    for (args, needle) in [
        (
            vec!["sim", "--input", bad.to_str().unwrap(), "--out", out],
            "bad.wav",
        ),
        (
            vec!["sim", "--rate", "5512", "--out", out],
            "--rate 5512: not a rate hmulti has a bit for; use one of 8000, 11025, 12000,",
        ),
        (
            vec!["sim", "--format", "s24", "--out", out],
            "unknown --format",
        ),
        (
            vec!["sim", "--addon", "/nonexistent/virtio_sound", "--out", out],
            "/nonexistent/virtio_sound",
        ),
        (
            vec!["sim", "--interrupts", "msi", "--out", out],
            "unknown interrupt delivery \"msi\": per-queue or shared",
        ),
        (
            vec!["sim", "--haiku", "beta4", "--out", out],
            "unknown Haiku release \"beta4\": beta5 or nightly",
        ),
    ] {
        let o = xtask(&args);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(
            text(&o).contains(needle),
            "{args:?}: {needle:?} missing from:\n{}",
            text(&o)
        );
    }
}

#[test]
fn a_device_config_file_shapes_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("device.toml");
    std::fs::write(
        &cfg,
        "[[stream]]\ndirection = \"output\"\nchannels = [2, 2]\nrates = [44100]\nformats = [\"S16\"]\n\n[[stream]]\ndirection = \"input\"\nchannels = [2, 2]\nrates = [44100]\nformats = [\"S16\"]\n",
    )
    .unwrap();
    let out = dir.path().join("out.wav");
    let (cfg, out) = (cfg.to_str().unwrap(), out.to_str().unwrap());
    let o = xtask(&[
        "sim",
        "--device-config",
        cfg,
        "--rate",
        "44100",
        "--seconds",
        "0.1",
        "--out",
        out,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = xtask(&[
        "sim",
        "--device-config",
        cfg,
        "--rate",
        "48000",
        "--seconds",
        "0.1",
        "--out",
        out,
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("does not offer 48000 Hz"), "{}", text(&o));
    std::fs::write(dir.path().join("device.toml"), "[[stream]]\ndirection = \"sideways\"\nchannels = [2, 2]\nrates = [44100]\nformats = [\"S16\"]\n").unwrap();
    let o = xtask(&["sim", "--device-config", cfg, "--out", out]);
    assert!(
        !o.status.success() && text(&o).contains("sideways"),
        "{}",
        text(&o)
    );
}

/// Every numeric option of `cargo xtask sim` and `cargo xtask qemu` out of its range is
/// refused before anything is built or booted, with the range. (`--channels 0` used to reach
/// the driver and fail at GET_BUFFERS; `--channels 40` panicked the add-on.)
#[test]
fn out_of_range_options_are_refused_with_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.wav");
    let out = out.to_str().unwrap();
    let hmulti_rates = "use one of 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, \
                        48000, 64000, 88200, 96000, 176400, 192000, 384000 (Hz)";
    let qemu_rates = "use one of 8000, 11025, 16000, 22050, 32000, 44100, 48000, 64000, \
                      88200, 96000, 176400, 192000, 384000 (Hz)";
    let channels = "is not in 1..=16";
    let seconds = "out of range; use 0.001 to 600";
    // Exit status 2: clap refuses it while parsing; 1: the command does, before it runs.
    let clap = |args: &[&'static str], needle: String| (args.to_vec(), 2, needle);
    let ours = |args: &[&'static str], needle: String| (args.to_vec(), 1, needle);
    let hmulti = |opt: &str| format!("{opt}: not a rate hmulti has a bit for; {hmulti_rates}");
    let qemu = |opt: &str| format!("{opt}: not a rate QEMU's device offers; {qemu_rates}");
    let cases = [
        clap(
            &["sim", "--channels", "0"],
            format!("'0' for '--channels <CHANNELS>': 0 {channels}"),
        ),
        clap(&["sim", "--channels", "17"], format!("17 {channels}")),
        clap(&["sim", "--channels", "40"], format!("40 {channels}")),
        clap(&["sim", "--channels", "70000"], format!("70000 {channels}")),
        ours(&["sim", "--rate", "0"], hmulti("--rate 0")),
        ours(&["sim", "--rate", "44101"], hmulti("--rate 44101")),
        ours(
            &["sim", "--seconds", "0"],
            format!("--seconds 0: {seconds}"),
        ),
        ours(&["sim", "--seconds=-1"], format!("--seconds -1: {seconds}")),
        ours(
            &["sim", "--seconds", "nan"],
            format!("--seconds NaN: {seconds}"),
        ),
        ours(
            &["sim", "--seconds", "inf"],
            format!("--seconds inf: {seconds}"),
        ),
        ours(
            &["sim", "--seconds", "600.5"],
            format!("--seconds 600.5: {seconds}"),
        ),
        clap(&["qemu", "--channels", "0"], format!("0 {channels}")),
        ours(&["qemu", "--rate", "12000"], qemu("--rate 12000")),
        ours(&["qemu", "--rate", "5512"], qemu("--rate 5512")),
        ours(
            &["qemu", "--sweep", "--rates", "8000,24000"],
            qemu("--rates 24000"),
        ),
        ours(&["qemu", "--cycle", "7"], qemu("--cycle 7")),
        ours(
            &["qemu", "--seconds", "0"],
            format!("--seconds 0: {seconds}"),
        ),
        ours(
            &["qemu", "--timeout", "0"],
            "--timeout 0: out of range; use 1 to 3600 (seconds)".into(),
        ),
        ours(
            &["qemu", "--timeout", "3601"],
            "--timeout 3601: out of range; use 1 to 3600 (seconds)".into(),
        ),
    ];
    for (mut args, code, needle) in cases {
        if args[0] == "sim" {
            args.extend(["--out", out]);
        }
        let o = xtask(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}:\n{t}");
        assert!(
            t.contains(&needle),
            "{args:?}: {needle:?} missing from:\n{t}"
        );
        assert!(
            !t.contains("==>"),
            "{args:?}: something ran before the refusal:\n{t}"
        );
    }
    // The same limits hold for a WAV file's channel count.
    let wav = dir.path().join("many.wav");
    let many = Wav {
        rate: 48000,
        channels: 17,
        format: SampleFormat::S16,
        data: vec![0; 17 * 2 * 10],
    };
    std::fs::write(&wav, many.to_bytes().unwrap()).unwrap();
    let o = xtask(&["sim", "--input", wav.to_str().unwrap(), "--out", out]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(
            "the input: 17 channels is out of range; the driver publishes 1 to 16 per direction"
        ),
        "{t}"
    );
    assert!(!t.contains("==>"), "{t}");
}

/// A device whose streams all take more channels than a card publishes (the measured panic:
/// `channels = [255, 255]`): nothing is published, and the error says why, from the
/// add-on's log.
#[test]
fn a_device_the_driver_cannot_serve_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("device.toml");
    std::fs::write(
        &cfg,
        "[[stream]]\ndirection = \"output\"\nchannels = [255, 255]\nrates = [48000]\nformats = [\"S16\"]\n\n[[stream]]\ndirection = \"input\"\nchannels = [40, 40]\nrates = [48000]\nformats = [\"S16\"]\n",
    )
    .unwrap();
    let out = dir.path().join("out.wav");
    let o = xtask(&[
        "sim",
        "--device-config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    for needle in [
        "opening the device: the add-on published no device",
        "stream 0: it takes at least 255 channels, a card publishes at most 16; not published",
        "stream 1: it takes at least 40 channels, a card publishes at most 16; not published",
    ] {
        assert!(t.contains(needle), "{needle:?} missing from:\n{t}");
    }
    assert!(!t.contains("KERNEL PANIC"), "{t}");
}

/// Builds `tests/fixtures/NAME.c` as a Haiku add-on with the C compiler: the add-on flags
/// of `haiku_elf::build`, the generated `haiku_driver.h`, linked against the stub kernel
/// compiled from the generated `kernel_stub.c`.
fn c_fixture(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let stub = dir.join("libkernel_x86_64.so");
    let st = std::process::Command::new("cc")
        .args(haiku_elf::build::KERNEL_STUB)
        .arg("-o")
        .arg(&stub)
        .arg(root.join("spec/generated/kernel_stub.c"))
        .status()
        .unwrap();
    assert!(st.success(), "the stub kernel");
    let out = dir.join(name);
    let st = std::process::Command::new("cc")
        .args(haiku_elf::build::c_addon())
        // No sibling calls: a tail call's return address is its caller's, and the test
        // names the function each misuse is called from.
        .args(["-O2", "-fno-optimize-sibling-calls", "-Wall", "-Werror"])
        .arg("-I")
        .arg(root.join("spec/generated"))
        .arg("-o")
        .arg(&out)
        .arg(root.join(format!("xtask-addon/tests/fixtures/{name}.c")))
        .arg(format!("-L{}", dir.display()))
        .arg("-lkernel_x86_64")
        .status()
        .unwrap();
    assert!(st.success(), "building the fixture {name}");
    out
}

/// `--addon` with an add-on that misuses kernel objects: the run stops before playing
/// with a table of every misuse and the code address of its call (the leak, found at
/// unload, has none), and exits non-zero; `--allow-misuse` goes on to play (this add-on
/// then fails at its first hmulti ioctl) and still prints the table.
#[test]
fn misuse_is_reported_with_code_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let addon = c_fixture(dir.path(), "misuse");
    let out = dir.path().join("out.wav");
    let base = [
        "sim",
        "--seconds",
        "0.1",
        "--addon",
        addon.to_str().unwrap(),
    ];
    let run = |extra: &[&str]| {
        let o = xtask(&[&base[..], &["--out", out.to_str().unwrap()], extra].concat());
        assert!(!o.status.success(), "{}", text(&o));
        text(&o)
    };
    let table = |t: &str| -> Vec<String> {
        t.lines()
            .skip_while(|l| !l.starts_with("misuse: "))
            .skip(2)
            .take_while(|l| l.starts_with("  "))
            .map(|l| l.trim().to_owned())
            .collect()
    };
    let t = run(&[]);
    assert!(t.contains("misuse: 3 found by the simulated kernel"), "{t}");
    assert!(
        t.contains("the add-on misused the kernel 2 time(s) before playing"),
        "{t}"
    );
    let rows = table(&t);
    assert_eq!(rows.len(), 3, "{t}");
    // The double delete, called from misuse_double_delete; the invalid id, from
    // misuse_invalid_id (both exported, so the table names them); the leak at unload.
    assert!(
        rows[0].starts_with("misuse+0x") && rows[0].contains("(misuse_double_delete+0x"),
        "{t}"
    );
    assert!(
        rows[1].starts_with("misuse+0x") && rows[1].contains("(misuse_invalid_id+0x"),
        "{t}"
    );
    assert!(
        rows[2].starts_with("(at unload)") && rows[2].contains("\"leaked\""),
        "{t}"
    );

    let t = run(&["--allow-misuse"]);
    assert!(!t.contains("before playing"), "{t}");
    assert!(
        t.contains("B_MULTI_GET_DESCRIPTION") || t.contains("GET_DESCRIPTION"),
        "{t}"
    );
    assert_eq!(table(&t).len(), 3, "{t}");
}

/// An add-on that waits for its control answer by spinning on `queue_dequeue` (no callback
/// on the control queue), as the 2024 C++ driver does, then sleeps until a wall-clock
/// deadline with `snooze_until(..., CLOCK_REALTIME)`: in the simulator the device answers
/// while it spins, and the sleep lasts exactly as long as the deadline says.
#[test]
fn a_busy_polling_add_on_gets_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let addon = c_fixture(dir.path(), "spin");
    let a = haiku_sim::addon::Addon::load(&addon, snd_model::ModelConfig::default(), None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.paths, ["audio/hmulti/spin/1"]);
    let log = a.kernel().log_lines().join("\n");
    let answer = log
        .lines()
        .find(|l| l.contains("spin: control answer"))
        .unwrap_or_else(|| panic!("{log}"));
    // VIRTIO_SND_S_OK is 0x8000; the cookie given with the request is 7; the device wrote
    // the status and one 32-byte virtio_snd_pcm_info.
    assert!(
        answer.contains("spin: control answer 0x8000, cookie 7, 36 bytes"),
        "{answer}"
    );
    let n: Vec<u64> = answer
        .split("after ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [waited, polls] = n[..] else {
        panic!("{answer}")
    };
    // The model answers a control request 50 µs after it is queued (its default). Time
    // moves for a caller after 1000 polls at one instant: the system_time() before the
    // request and 999 empty queue_dequeue calls, the last of which waits until the
    // device's answer; the next finds it.
    assert_eq!((waited, polls), (50, 999), "{answer}");
    assert!(
        log.contains("spin: snooze_until(CLOCK_REALTIME) returned 0 after 2500 us"),
        "{log}"
    );
    a.unload().unwrap_or_else(|v| panic!("{}", v.join("\n")));
}

/// Loads C fixture `addon` in a simulated Haiku `haiku`, with `settings` as the
/// `virtio_sound` driver settings file.
fn load_on(
    addon: &std::path::Path,
    haiku: haiku_sim::HaikuRelease,
    settings: Option<&str>,
) -> Result<haiku_sim::addon::Addon, String> {
    let env = haiku_sim::EnvConfig {
        haiku,
        ..haiku_sim::EnvConfig::default()
    };
    let device = snd_model::ModelConfig::default();
    haiku_sim::addon::Addon::load_in(addon, device, settings, env, |_| {})
}

/// The lines of `a`'s log that the fixture wrote (they start with its name).
fn fixture_lines(lines: &[String], name: &str) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.find(name).map(|i| l[i..].to_owned()))
        .collect()
}

/// A driver built against R1/beta5's virtio.h calls `alloc_queues` with three arguments;
/// nightly's has a fourth (`requestedSizes`, b90dc7a4f3) and reads it from rcx, whatever
/// the caller left there. Under `--haiku beta5` the fourth register is never read: the
/// queues get the device's ring size (the model's `queue_size`, 64 by default), whatever rcx
/// holds. Under nightly, a stale rcx pointing at memory gives the sizes found there (0x7fff
/// is above the ring: B_BUFFER_OVERFLOW, 0x80007029), and an unmapped one, where nightly's
/// bus manager takes a kernel page fault, is a recorded failure and B_BAD_ADDRESS
/// (0x80001301).
#[test]
fn a_beta5_alloc_queues_caller_on_each_release() {
    use haiku_sim::HaikuRelease::{Beta5, Nightly};
    let dir = tempfile::tempdir().unwrap();
    let addon = c_fixture(dir.path(), "beta5_caller");
    let ring = snd_model::ModelConfig::default().queue_size;
    assert_eq!(ring, 64);
    for stale in [
        None,
        Some("stale_rcx unmapped\n"),
        Some("stale_rcx sizes\n"),
    ] {
        let a = load_on(&addon, Beta5, stale).unwrap_or_else(|e| panic!("beta5, {stale:?}: {e}"));
        assert_eq!(a.paths, ["audio/hmulti/beta5_caller/1"]);
        let log = fixture_lines(&a.kernel().log_lines(), "beta5_caller: ");
        assert_eq!(
            log,
            [
                "beta5_caller: alloc_queues returned 0".to_owned(),
                format!("beta5_caller: queue sizes {ring} {ring} {ring} {ring}"),
            ],
            "beta5, {stale:?}"
        );
        let kernel = a.kernel().clone();
        a.unload()
            .unwrap_or_else(|v| panic!("beta5, {stale:?}: {}", v.join("\n")));
        // R1/beta5's publish_device adds no B_DEVICE_PUBLISHED_PATH to the node.
        let log = fixture_lines(&kernel.log_lines(), "beta5_caller: ");
        assert_eq!(
            log.last().map(String::as_str),
            Some("beta5_caller: no published path attribute")
        );
    }

    // Nightly, the stale register pointing at 0x7fff sizes: B_BUFFER_OVERFLOW.
    let e = load_on(&addon, Nightly, Some("stale_rcx sizes\n"))
        .expect_err("nightly refuses sizes above the ring");
    assert!(e.contains("B_BUFFER_OVERFLOW"), "{e}");

    // Nightly, the stale register pointing at nothing: recorded, B_BAD_ADDRESS.
    let e = load_on(&addon, Nightly, Some("stale_rcx unmapped\n"))
        .expect_err("nightly fails a requestedSizes that is not mapped");
    for needle in [
        "B_BAD_ADDRESS",
        "recorded by the simulated kernel",
        "alloc_queues reads its fourth argument, requestedSizes = 0xdead000000000000",
        "nightly's bus manager takes a kernel page fault here",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from:\n{e}");
    }

    // Nightly, the stale register holding NULL: the device's sizes, as for a nightly caller
    // passing NULL; and nightly's publish_device records the path on the node.
    let a = load_on(&addon, Nightly, Some("stale_rcx null\n")).unwrap_or_else(|e| panic!("{e}"));
    let kernel = a.kernel().clone();
    a.unload().unwrap_or_else(|v| panic!("{}", v.join("\n")));
    assert_eq!(
        fixture_lines(&kernel.log_lines(), "beta5_caller: "),
        [
            "beta5_caller: alloc_queues returned 0".to_owned(),
            format!("beta5_caller: queue sizes {ring} {ring} {ring} {ring}"),
            "beta5_caller: published path attribute /dev/audio/hmulti/beta5_caller/1".to_owned(),
        ]
    );
}

/// `negotiate_features` with a NULL feature-name callback: R1/beta5's bus manager calls it
/// unchecked for every feature bit it has no name for (VERSION_1 at least), so there it is a
/// recorded failure; nightly checks for NULL (b57d5d2f41).
#[test]
fn a_null_feature_name_callback_crashes_only_beta5() {
    use haiku_sim::HaikuRelease::{Beta5, Nightly};
    let dir = tempfile::tempdir().unwrap();
    let addon = c_fixture(dir.path(), "beta5_caller");
    let settings = Some("stale_rcx null\nnull_feature_name\n");
    let a = load_on(&addon, Beta5, settings).unwrap_or_else(|e| panic!("{e}"));
    let failures = a.kernel().failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("NULL get_feature_name: R1/beta5 calls it"),
        "{failures:?}"
    );
    assert!(a.unload().is_err(), "the failure stays on the record");
    let a = load_on(&addon, Nightly, settings).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.kernel().failures(), Vec::<String>::new());
    a.unload().unwrap_or_else(|v| panic!("{}", v.join("\n")));
}

/// An add-on importing a symbol only nightly's kernel exports (`ffsl`, `only_in =
/// "nightly"` in spec/haiku_driver.toml) loads on nightly and is refused on R1/beta5 with
/// Haiku's loader's status and message (elf.cpp: "could not resolve symbol",
/// B_MISSING_SYMBOL).
#[test]
fn a_nightly_only_import_is_refused_on_beta5() {
    use haiku_sim::HaikuRelease::{Beta5, Nightly};
    let dir = tempfile::tempdir().unwrap();
    let addon = c_fixture(dir.path(), "nightly_import");
    let a = load_on(&addon, Nightly, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        fixture_lines(&a.kernel().log_lines(), "nightly_import: "),
        ["nightly_import: ffsl(0x100) = 9"]
    );
    a.unload().unwrap_or_else(|v| panic!("{}", v.join("\n")));
    let e = load_on(&addon, Beta5, None).expect_err("beta5's kernel has no ffsl");
    assert_eq!(e, "B_MISSING_SYMBOL: could not resolve symbol `ffsl`");
}

/// `device`, `capture` and `playback` in a device config: vhost-device-sound's null backend
/// plays bit-exact with reports one 10 ms buffer apart (480 frames at 48 kHz); its capture
/// buffers, kept past RELEASE, are leaked at unload, which the simulator reports (so the
/// run needs --allow-misuse); a bad value names the file, the line and the key.
#[test]
fn a_device_config_names_real_devices() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("device.toml");
    let out = dir.path().join("out.wav");
    let (cfgs, outs) = (cfg.to_str().unwrap(), out.to_str().unwrap());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "sim",
            "--device-config",
            cfgs,
            "--seconds",
            "0.2",
            "--out",
            outs,
        ];
        args.extend_from_slice(extra);
        xtask(&args)
    };
    std::fs::write(&cfg, "device = \"vhost-null\"\n").unwrap();
    let o = run(&[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("\"virtio_sound buffers\""), "{t}");
    let o = run(&["--allow-misuse"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("reports 10000 to 10000 us apart"), "{t}");
    // 48 kHz stereo S16: the lead-in (4 buffers of 480 frames), 0.2 s of sine, and the stop
    // padding: the larger of 20 ms and 1.25 times what the device was seen to hold ahead of
    // real time, here the 4 buffers it completed before START (1920 frames): 2400 frames.
    let got = Wav::parse(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(got.frames(), 4 * 480 + 9600 + 2400, "{t}");
    // QEMU on wav with the default streams replaced, capture never handed back at all.
    std::fs::write(
        &cfg,
        "device = \"qemu-wav\"\ncapture = \"never\"\nplayback = \"paced\"\n\n[[stream]]\ndirection = \"output\"\nchannels = [2, 2]\nrates = [48000]\nformats = [\"S16\"]\n\n[[stream]]\ndirection = \"input\"\nchannels = [2, 2]\nrates = [48000]\nformats = [\"S16\"]\n",
    )
    .unwrap();
    let o = run(&["--allow-misuse"]);
    assert!(o.status.success(), "{}", text(&o));
    for (body, needle) in [
        (
            "\ncapture = \"sometimes\"\n",
            ":2: capture = \"sometimes\": use paced, at-release, never",
        ),
        (
            "playback = \"fast\"\n",
            ":1: playback = \"fast\": use paced, instant",
        ),
        (
            "device = \"crosvm\"\n",
            ":1: device = \"crosvm\": use qemu, qemu-wav, vhost-null",
        ),
        ("speed = 2\n", "unknown field `speed`"),
    ] {
        std::fs::write(&cfg, body).unwrap();
        let o = run(&[]);
        let t = text(&o);
        assert!(!o.status.success(), "{body}: {t}");
        assert!(
            t.contains(&format!("device.toml{needle}")) || t.contains(needle),
            "{body}: {needle:?} missing from {t}"
        );
    }
}

/// `sim --latency`, short: at 48 kHz, 2 x 16 frames (a 333 µs period: the jitter model's
/// stalls, 3 wake-ups in 1000 up to 3 ms, end it within the first thousand wake-ups) fails
/// and 4 x 480 (two 10 ms periods of slack, more than any delay the model draws) is the
/// winner; each row has the buffering the candidate's numbers give.
#[test]
fn latency_sweep_finds_the_smallest_buffering_without_xruns() {
    let addon = common::built_addon();
    let o = xtask(&[
        "sim",
        "--addon",
        addon.to_str().unwrap(),
        "--latency",
        "--latency-rates",
        "48000",
        "--latency-seconds",
        "3",
        "--candidates",
        "480x4,16x2",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("48000 Hz, 3 s per candidate:"), "{t}");
    let row = |what: &str| {
        t.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} row in:\n{t}"))
            .to_owned()
    };
    // 2 x 16 frames at 48 kHz: 32 / 48 = 0.67 ms.
    let small = row("2 x 16 ");
    assert!(
        small.contains("0.67 ms") && small.contains("run stopped"),
        "{t}"
    );
    assert!(!small.starts_with('*'), "{t}");
    // 4 x 480 frames: 40 ms; the period (10 ms) is reported played 10 ms after the start.
    let big = row("* 4 x 480");
    assert!(big.contains("40.00 ms") && big.contains(" 0 "), "{t}");
    assert!(
        t.contains("winner: 4 x 480 frames (40.00 ms of buffering), 0 xruns over 3.0 s"),
        "{t}"
    );
    assert!(t.contains("driver default:"), "{t}");
}
