//! `cargo xtask soak` as `cargo xtask test` runs it: a few simulated minutes with a format
//! change every 20 s and FORCE_STOP every minute, checked as the 24-hour run is.

mod common;

use common::{text, xtask};

#[test]
fn a_short_soak_stays_flat_and_exact() {
    // The add-on the other tests build (the same command).
    let built = xtask(&["build-haiku"]);
    assert!(built.status.success(), "{}", text(&built));
    let o = xtask(&[
        "soak",
        "--hours",
        "0.05",
        "--format-every",
        "20",
        "--stop-every",
        "60",
        "--report-every",
        "60",
        "--addon",
        "target/haiku/virtio_sound",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // Three progress lines, one a simulated minute, then the summary: 9 pieces, 3 stops.
    assert_eq!(t.matches(" simulated (").count(), 3, "{t}");
    for needle in [
        "0:03:00 simulated",
        "9 segments, 3 FORCE_STOPs",
        " 0 failed",
        "simulated hours per wall minute",
        "unloaded clean",
    ] {
        assert!(t.contains(needle), "{needle:?} missing from:\n{t}");
    }
    // Every format of the circle ran and held the same counts of kernel objects.
    let counts: Vec<(String, String, String)> = t
        .lines()
        .filter(|l| l.contains(" Hz ") && l.contains(": heap "))
        .map(|l| {
            let after = |key: &str| {
                let rest = l.split_once(key).unwrap().1;
                rest.split([' ', ',']).next().unwrap().to_owned()
            };
            (after(": heap "), after("areas "), after("semaphores "))
        })
        .collect();
    assert_eq!(counts.len(), 6, "{t}");
    assert!(counts.iter().all(|c| *c == counts[0]), "{counts:?}");
}

#[test]
fn bad_options_are_refused() {
    let o = xtask(&["soak", "--format-every", "60", "--stop-every", "90"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--stop-every 90 is not a multiple of --format-every 60"),
        "{}",
        text(&o)
    );
    let o = xtask(&["soak", "--hours", "0"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--hours 0"), "{}", text(&o));
}
