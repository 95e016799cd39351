//! The built add-on in the simulator under valgrind's memcheck: a matrix of rates, formats
//! and channel counts, playing and recording, with format changes on an open device and
//! FORCE_STOP followed by a restart, then close and unload. Memcheck must report 0 errors and
//! 0 bytes definitely lost.
//!
//! Without valgrind the test says so and passes, unless `CI=true` (CI installs it: `cargo
//! xtask setup`) or `VIRTIO_SOUND_REQUIRE_VALGRIND` is set: there it must run.

mod common;

use std::path::Path;
use std::process::Command;

/// valgrind must be there: `VIRTIO_SOUND_REQUIRE_VALGRIND` is set, or `CI=true`.
fn valgrind_required() -> bool {
    std::env::var_os("VIRTIO_SOUND_REQUIRE_VALGRIND").is_some()
        || std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The memcheck matrix: per device (a channel count), the runs on one open device, in order.
/// 48 kHz S16 stereo, then 384 kHz float and 8 kHz U8 on the same device; 384 kHz float in
/// 8 channels; U8 mono at 8 and 44.1 kHz; 8 kHz S32 in 6 channels, then 96 kHz S16.
const MATRIX: [&str; 4] = [
    "2=48000:s16,384000:float,8000:u8",
    "8=384000:float,22050:s32",
    "1=8000:u8,44100:s16",
    "6=8000:s32,96000:s16",
];

#[test]
fn the_addon_under_memcheck_has_no_errors_and_no_definite_leaks() {
    let version = Command::new("valgrind").arg("--version").output();
    if !version.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            !valgrind_required(),
            "valgrind is required here (CI=true or VIRTIO_SOUND_REQUIRE_VALGRIND) but cannot \
             run: {version:?}"
        );
        eprintln!("skipping: valgrind is not installed (Debian: apt-get install valgrind)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The add-on a user installs, built as the README says (not under valgrind).
    let o = common::xtask(&["build-haiku"]);
    assert!(o.status.success(), "build-haiku: {}", common::text(&o));
    let addon = root.join("target/haiku/virtio_sound");
    let mut cmd = Command::new("valgrind");
    cmd.current_dir(&root).args([
        "--tool=memcheck",
        "--error-exitcode=99",
        "--leak-check=full",
        "--show-leak-kinds=definite",
        "--errors-for-leak-kinds=definite",
        // The simulator runs the add-on's threads; keep valgrind's scheduler fair to them.
        "--fair-sched=yes",
        env!("CARGO_BIN_EXE_xtask-addon"),
        "memcheck-session",
        "--addon",
        addon.to_str().unwrap(),
        "--millis",
        "60",
    ]);
    for d in MATRIX {
        cmd.args(["--device", d]);
    }
    let o = cmd.output().expect("run valgrind");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "memcheck failed ({}):\n{out}\n{err}",
        o.status
    );
    eprintln!("{out}");
    let summary = err
        .lines()
        .find(|l| l.contains("ERROR SUMMARY:"))
        .unwrap_or_else(|| panic!("no ERROR SUMMARY from valgrind:\n{err}"));
    assert!(summary.contains("ERROR SUMMARY: 0 errors"), "{err}");
    // Either no leak at all, or a leak summary whose definitely-lost line says 0 bytes.
    let definitely = err.lines().find(|l| l.contains("definitely lost:"));
    assert!(
        err.contains("All heap blocks were freed")
            || definitely.is_some_and(|l| l.contains("definitely lost: 0 bytes")),
        "{err}"
    );
    // Every run of the matrix said it played bit-exact.
    let runs: usize = MATRIX.iter().map(|d| d.split(',').count()).sum();
    assert_eq!(out.matches("bit-exact").count(), runs, "{out}");
}
