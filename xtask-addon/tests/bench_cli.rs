//! `cargo xtask bench`'s arguments: what it refuses, and why, before it runs anything.

mod common;

use common::{text, xtask};

#[test]
fn bench_refuses_workloads_it_cannot_pair_with_the_addons() {
    // Any existing files do for the pairing check, which comes before any run.
    let (a, w) = ("Cargo.toml", "README.md");
    let o = xtask(&[
        "bench",
        "--addon",
        a,
        "--addon",
        a,
        "--addon",
        a,
        "--workload",
        w,
        "--workload",
        w,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("2 --workload for 3 --addon: give one, or one per --addon"),
        "{}",
        text(&o)
    );
    let o = xtask(&["bench", "--addon", a, "--workload", "no/such/addon_bench"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("--workload no/such/addon_bench: no such file"),
        "{}",
        text(&o)
    );
    let o = xtask(&["bench", "--addon", "no/such/addon"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("--addon no/such/addon: no such file"),
        "{}",
        text(&o)
    );
}
