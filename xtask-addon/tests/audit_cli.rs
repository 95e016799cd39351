//! `cargo xtask audit FILE` as a user runs it: exit codes and where the output goes.
//! The rules themselves are tested in the `haiku-elf` crate against fixtures built there.

use std::path::Path;

use haiku_elf::build;
use std::process::{Command, Output};

fn audit(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask-addon"))
        .arg("audit")
        .arg(file)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("run xtask")
}

fn cc(dir: &Path, args: &[&str]) {
    let out = Command::new("cc")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the C compiler `cc` runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_good_add_on_exits_zero_and_prints_the_report() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kernel.c"),
        "void dprintf(const char *f, ...) {}\n",
    )
    .unwrap();
    let mut stub = build::KERNEL_STUB.to_vec();
    stub.extend(["-o", "libkernel_x86_64.so", "kernel.c"]);
    cc(dir.path(), &stub);
    let src = "extern void dprintf(const char *, ...);\n\
               static void hello(void) { dprintf(\"hello\\n\"); }\n\
               void (*modules[])(void) = { hello, 0 };\n";
    std::fs::write(dir.path().join("addon.c"), src).unwrap();
    let mut flags = build::c_addon();
    flags.extend(["-O2", "-o", "addon.so", "addon.c", "-L.", "-lkernel_x86_64"]);
    cc(dir.path(), &flags);
    let o = audit(&dir.path().join("addon.so"));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for needle in [
        "accepted",
        "segments:",
        "dprintf FUNC",
        "modules OBJECT",
        "frame pointers: ",
    ] {
        assert!(stdout.contains(needle), "{needle} not in\n{stdout}");
    }
}

#[test]
fn a_refused_file_exits_nonzero_with_every_violation_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.c"), "int f(void) { return 1; }\n").unwrap();
    // Deliberately not the add-on's flags (`build::c_addon`): GNU hash only, and no
    // `modules` in the source, so two rules are broken.
    cc(
        dir.path(),
        &[
            "-shared",
            "-nostdlib",
            "-fPIC",
            "-Wl,--hash-style=gnu",
            "-o",
            "lib.so",
            "lib.c",
        ],
    );
    let o = audit(&dir.path().join("lib.so"));
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("[dt-hash] no DT_HASH"), "{stderr}");
    assert!(
        stderr.contains("[modules] no dynamic symbol `modules`"),
        "{stderr}"
    );

    let o = audit(&dir.path().join("missing.so"));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("[elf] cannot read"));
}
