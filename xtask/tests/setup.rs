//! `cargo xtask setup`: what the tests need from the machine, reported and installed. Nothing
//! is uninstalled to test the missing cases: the tools are hidden by running xtask with a
//! `PATH` of chosen links, and apt-get is replaced by a script.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{text, xtask};

/// `xtask setup ARGS` with `path` as `PATH`, without `CI`, `VIRTIO_SOUND_REQUIRE_QEMU` and
/// `CC` unless `env` sets them.
fn setup(args: &[&str], path: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.arg("setup")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env_remove("CI")
        .env_remove("VIRTIO_SOUND_REQUIRE_QEMU")
        .env_remove("CC")
        .env("PATH", path);
    c.envs(env.iter().copied());
    c.output().expect("run xtask")
}

/// The program `name` on the test's `PATH`.
fn which(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH");
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {name} on PATH"))
}

/// A directory with links to the named programs only.
fn bin_with(programs: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for p in programs {
        let real = which(p);
        // Debian's valgrind is a script that runs `$0.bin`: the binary goes along.
        let bin = real.with_file_name(format!("{p}.bin"));
        if bin.is_file() {
            symlink(&bin, dir.path().join(format!("{p}.bin"))).unwrap();
        }
        symlink(real, dir.path().join(p)).unwrap();
    }
    dir
}

/// Whether the test's own environment makes the QEMU tests required (as `CI=true` does).
fn qemu_required_here() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
        || std::env::var_os("VIRTIO_SOUND_REQUIRE_QEMU").is_some()
}

/// This machine runs the whole test suite, so everything it needs is here.
#[test]
fn check_passes_where_the_tests_run() {
    // With this process's environment: under CI=true, QEMU is required too.
    let o = xtask(&["setup", "--check"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for name in [
        "C compiler",
        "strip",
        "libclang",
        "Linux UAPI headers: /usr/include/linux/virtio_snd.h",
    ] {
        assert!(out.contains(&format!("ok  {name}")), "{name}:\n{out}");
    }
    if qemu_required_here() {
        assert!(out.contains("ok  QEMU: qemu-system-x86_64 "), "{out}");
        assert!(out.contains(" with virtio-sound-pci"), "{out}");
        assert!(
            out.contains("ok  vhost-device-sound: ")
                && out.contains(" (vhost-device-sound 0.3.0)\n"),
            "{out}"
        );
    }
}

/// The exact `cargo install` command of vhost-device-sound, pinned.
const VHOST_INSTALL: &str = "cargo install vhost-device-sound --version 0.3.0 --locked \
                             --no-default-features --features alsa-backend";

/// An executable shell script.
fn script(path: &Path, text: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{text}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// vhost-device-sound is looked for on PATH and in cargo's bin directory (`$CARGO_HOME/bin`),
/// and must be 0.3.0 with its ALSA backend; anything else is named with the command that
/// installs it, as optional unless QEMU is required.
#[test]
fn vhost_device_sound_is_found_and_checked() {
    let bin = bin_with(&["cc", "strip"]);
    let cargo_home = tempfile::tempdir().unwrap();
    let home = cargo_home.path().to_str().unwrap();
    let check = || text(&setup(&["--check"], bin.path(), &[("CARGO_HOME", home)]));
    let out = check();
    assert!(
        out.contains(&format!(
            "  - vhost-device-sound (the QEMU tests' second device (cargo xtask qemu --device \
             vhost): rust-vmm's virtio-sound device behind QEMU's vhost-user-snd-pci): \
             vhost-device-sound is neither on PATH nor in {home}/bin. Install it with \
             `{VHOST_INSTALL}`.; built with Debian's libasound2-dev pkg-config (optional: the \
             QEMU tests skip without it)\n"
        )),
        "{out}"
    );
    std::fs::create_dir(cargo_home.path().join("bin")).unwrap();
    let fake = cargo_home.path().join("bin/vhost-device-sound");
    let help =
        "echo '      --backend <BACKEND>  audio backend to be used [possible values: null, alsa]'";
    script(
        &fake,
        &format!("[ \"$1\" = --version ] && echo 'vhost-device-sound 0.2.0'\n{help}\n"),
    );
    let out = check();
    assert!(
        out.contains(&format!(
            "{} says \"vhost-device-sound 0.2.0\", not \"vhost-device-sound 0.3.0\". Install it \
             with `{VHOST_INSTALL}`.",
            fake.display()
        )),
        "{out}"
    );
    script(
        &fake,
        "[ \"$1\" = --version ] && echo 'vhost-device-sound 0.3.0'\n\
         echo '      --backend <BACKEND>  audio backend to be used [possible values: null]'\n",
    );
    let out = check();
    assert!(
        out.contains("was built without its ALSA backend (--backend offers [\"null\"])"),
        "{out}"
    );
    script(
        &fake,
        &format!("[ \"$1\" = --version ] && echo 'vhost-device-sound 0.3.0'\n{help}\n"),
    );
    let out = check();
    assert!(
        out.contains(&format!(
            "ok  vhost-device-sound: {} (vhost-device-sound 0.3.0)\n",
            fake.display()
        )),
        "{out}"
    );
    // On PATH first.
    let on_path = bin.path().join("vhost-device-sound");
    std::fs::copy(&fake, &on_path).unwrap();
    let out = check();
    assert!(
        out.contains(&format!("ok  vhost-device-sound: {} (", on_path.display())),
        "{out}"
    );
}

/// Without a C compiler and strip, the check fails naming them, their packages and the one
/// command to run; missing QEMU is named as optional.
#[test]
fn missing_tools_are_named_with_the_command_to_run() {
    let empty = tempfile::tempdir().unwrap();
    let o = setup(&["--check"], empty.path(), &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("error: the tests need what is not installed here:"),
        "{out}"
    );
    assert!(
        out.contains("  - C compiler (compiles the generated C headers to confirm every size and offset): `cc --version` cannot run"),
        "{out}"
    );
    assert!(out.contains("; Debian: gcc\n"), "{out}");
    assert!(
        out.contains(
            "  - strip (cargo xtask build-haiku strips the add-on): `strip --version` cannot run"
        ),
        "{out}"
    );
    assert!(out.contains("; Debian: binutils\n"), "{out}");
    assert!(
        out.contains("  - QEMU (the QEMU tests play through its virtio-sound-pci device): `qemu-system-x86_64 --version` does not run"),
        "{out}"
    );
    assert!(
        out.contains("(optional: the QEMU tests skip without it)"),
        "{out}"
    );
    assert!(
        out.contains("Run `cargo xtask setup` to install them"),
        "{out}"
    );
    assert!(!out.contains("ok  C compiler"), "{out}");
    // A compiler named by CC is the one looked for.
    let o = setup(&["--check"], empty.path(), &[("CC", "/nonexistent/cc")]);
    assert!(
        text(&o).contains("`/nonexistent/cc --version` cannot run"),
        "{}",
        text(&o)
    );
}

/// Without QEMU, the check warns and passes; with CI=true (or VIRTIO_SOUND_REQUIRE_QEMU) it
/// fails.
#[test]
fn missing_qemu_stops_only_when_required() {
    let bin = bin_with(&["cc", "c++", "strip", "valgrind"]);
    let o = setup(&["--check"], bin.path(), &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("ok  C compiler"), "{out}");
    assert!(
        out.contains("warning: the QEMU tests will skip (CI=true or VIRTIO_SOUND_REQUIRE_QEMU=1 makes them required)"),
        "{out}"
    );
    assert!(out.contains("  - QEMU ("), "{out}");
    for env in [("CI", "true"), ("VIRTIO_SOUND_REQUIRE_QEMU", "1")] {
        let o = setup(&["--check"], bin.path(), &[env]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{env:?}: {out}");
        assert!(out.contains("  - QEMU ("), "{out}");
        assert!(!out.contains("(optional"), "{out}");
        assert!(!out.contains("  - C compiler"), "{out}");
    }
    // CI=false is not CI.
    let o = setup(&["--check"], bin.path(), &[("CI", "false")]);
    assert!(o.status.success(), "{}", text(&o));
}

/// `cargo xtask setup` as root with QEMU hidden, against an apt-get that only records its
/// arguments: each command is printed before it runs, a failing one stops everything with its
/// status and output, and what is still missing afterwards is an error.
#[test]
fn installing_prints_runs_and_checks_again() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipping: not root (the install path would use sudo)");
        return;
    }
    // The sound servers are there: only QEMU is missing.
    let bin = bin_with(&[
        "cc",
        "c++",
        "strip",
        "valgrind",
        "id",
        "pulseaudio",
        "parec",
        "paplay",
        "pactl",
        "jackd",
    ]);
    // On Debian bookworm without a bookworm-backports entry, installing QEMU writes one into
    // /etc/apt/sources.list.d: not done by a test.
    let probe = text(&setup(&["--check"], bin.path(), &[]));
    if probe.contains("  - bookworm-backports in apt's sources") {
        eprintln!("skipping: installing QEMU here would write an apt source entry:\n{probe}");
        return;
    }
    let log = bin.path().join("apt.log");
    let fake = |status: i32| {
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && exit 0\necho \"fake apt-get $*\" >&2\n\
             echo \"DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*\" >> '{}'\nexit {status}\n",
            log.display()
        );
        let apt = bin.path().join("apt-get");
        std::fs::write(&apt, script).unwrap();
        std::fs::set_permissions(&apt, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    // No vhost-device-sound (an empty cargo home), and a cargo that only records its arguments.
    let cargo_home = tempfile::tempdir().unwrap();
    let cargo_log = bin.path().join("cargo.log");
    let cargo = bin.path().join("fake-cargo");
    script(
        &cargo,
        &format!(
            "echo \"fake cargo $*\" >&2\necho \"$*\" >> '{}'\n",
            cargo_log.display()
        ),
    );
    let kernel = [
        ("VIRTIO_SOUND_QEMU_KERNEL", "/nonexistent/vmlinuz"),
        ("CARGO_HOME", cargo_home.path().to_str().unwrap()),
        ("CARGO", cargo.to_str().unwrap()),
    ];

    fake(100);
    let o = setup(&[], bin.path(), &kernel);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("==> setup: installing QEMU, vhost-device-sound\n"),
        "{out}"
    );
    assert!(
        out.contains("==> apt-get update\nfake apt-get update\n"),
        "{out}"
    );
    assert!(
        out.contains("error: `apt-get update` failed (exit status: 100)"),
        "{out}"
    );
    assert!(
        !out.contains("apt-get install") && !cargo_log.exists(),
        "stopped at the failure:\n{out}"
    );

    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "DEBIAN_FRONTEND=noninteractive update\n"
    );
    std::fs::remove_file(&log).unwrap();
    fake(0);
    let o = setup(&[], bin.path(), &kernel);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    // vhost-device-sound's build packages come from the release, QEMU from backports on
    // bookworm; `cargo install` runs last, as this user (no sudo or env prefix).
    let apt: Vec<&str> = if out.contains("-t bookworm-backports") {
        vec![
            "apt-get update",
            "apt-get install -y --no-install-recommends libasound2-dev pkg-config",
            "apt-get install -y -t bookworm-backports qemu-system-x86",
        ]
    } else {
        vec![
            "apt-get update",
            "apt-get install -y --no-install-recommends qemu-system-x86 libasound2-dev pkg-config",
        ]
    };
    let shown: String = apt
        .iter()
        .chain([&VHOST_INSTALL
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .as_str()])
        .map(|c| format!("==> {c}\nfake {c}\n"))
        .collect();
    assert!(out.contains(&shown), "{out}");
    let logged: String = apt
        .iter()
        .map(|c| {
            format!(
                "DEBIAN_FRONTEND=noninteractive {}\n",
                c.trim_start_matches("apt-get ")
            )
        })
        .collect();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), logged);
    assert_eq!(
        std::fs::read_to_string(&cargo_log).unwrap(),
        format!(
            "{}\n",
            VHOST_INSTALL
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")
        )
    );
    assert!(
        out.contains("error: still missing after installing:\n  - QEMU ("),
        "{out}"
    );
    assert!(out.contains("\n  - vhost-device-sound ("), "{out}");
}
