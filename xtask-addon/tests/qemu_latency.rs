//! `cargo xtask qemu --latency`, short: one rate, two candidates, a few seconds each, on
//! QEMU's virtio-sound-pci (TCG here). Fails, not skips, under CI=true when QEMU is missing.

mod common;

use common::num;

#[test]
fn latency_sweep_on_qemu_sets_each_candidate_and_reports_it() {
    let Some(r) = common::qemu(&[
        "--latency",
        "--latency-rates",
        "48000",
        "--latency-seconds",
        "3",
        "--candidates",
        "1024x2,2048x4",
    ]) else {
        return;
    };
    assert_eq!(r.len(), 1, "one rate: {r:?}");
    let s = &r[0];
    assert_eq!(num(s, "rate"), 48000.0);
    let trials = s["trials"].as_array().unwrap();
    // Buffer counts in ascending order: 2 x 1024 first; 4 x 2048 (more in all) only if it
    // failed.
    let first = &trials[0];
    assert_eq!((num(first, "frames"), num(first, "buffers")), (1024.0, 2.0));
    // 2 x 1024 frames at 48 kHz: 2048 / 48 = 42.67 ms.
    assert!(
        (num(first, "buffering_ms") - 42.667).abs() < 0.01,
        "{first}"
    );
    for t in trials {
        // Played as long as asked (in the guest's real time), started within a second.
        assert!(num(t, "seconds") >= 2.9, "{t}");
        let startup = num(t, "startup_us");
        assert!(startup > 0.0 && startup < 1e6, "{t}");
        assert!(t["note"].as_str().unwrap().contains("p99"), "{t}");
        // The sound was judged: QEMU's recording of the probe, checked for gaps.
        assert!(t["gaps"].is_array(), "{t}");
        assert!(t["note"].as_str().unwrap().contains("of the signal"), "{t}");
    }
    if num(first, "xruns") == 0.0 && first["gaps"].as_array().unwrap().is_empty() {
        assert_eq!(trials.len(), 1, "{s}");
    } else {
        assert_eq!(trials.len(), 2, "{s}");
        assert_eq!(
            (num(&trials[1], "frames"), num(&trials[1], "buffers")),
            (2048.0, 4.0)
        );
        // 4 x 2048 frames: 8192 / 48 = 170.67 ms.
        assert!(
            (num(&trials[1], "buffering_ms") - 170.667).abs() < 0.01,
            "{s}"
        );
    }
    // The winner, if any, had no xruns and no gaps; a trial with either did not win.
    if let Some(w) = s["winner"].as_u64() {
        assert_eq!(num(&trials[w as usize], "xruns"), 0.0, "{s}");
        assert_eq!(
            trials[w as usize]["gaps"].as_array().unwrap().len(),
            0,
            "{s}"
        );
    }
    if num(first, "xruns") == 0.0 && first["gaps"].as_array().unwrap().is_empty() {
        assert_eq!(s["winner"].as_u64(), Some(0), "{s}");
    } else {
        assert_ne!(s["winner"].as_u64(), Some(0), "{s}");
    }
    // The driver's defaults ran without a settings file: 4 buffers of 10 ms (480 frames at
    // 48 kHz; the settings file's documented defaults: 4 buffers, about 10 ms).
    let d = &s["default"];
    assert_eq!((num(d, "frames"), num(d, "buffers")), (480.0, 4.0), "{d}");
}
