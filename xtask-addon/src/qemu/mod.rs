//! `cargo xtask qemu`: the built add-on against QEMU's real `virtio-sound-pci` device.
//!
//! The simulator runs inside a small Linux guest: `sim-guest` (the `sim-guest` crate's binary)
//! loads the add-on with Haiku's loader rules and drives it over the PCI device QEMU offers.
//! This module is the host side, one file per step:
//!
//! - [`prereq`]: `qemu-system-x86_64` 8.2 or newer with `virtio-sound-pci`;
//! - [`debian`]: the guest kernel (Debian's `linux-image-cloud-amd64` from
//!   bookworm-backports) and a static busybox, downloaded with `apt-get download` and
//!   extracted once into `target/qemu/cache/` (or given by `VIRTIO_SOUND_QEMU_KERNEL` /
//!   `VIRTIO_SOUND_BUSYBOX`), and the kernel's UIO modules;
//! - [`initramfs`]: `sim-guest`, built statically (static-pie glibc) into
//!   `target/qemu/build/`, and a newc cpio archive whose `/init` loads the kernel's UIO
//!   modules (when the kernel came with its module tree), runs `sim-guest` and prints
//!   `@@virtio_sound exit N`;
//! - [`run`]: QEMU, with the serial console captured line by line and a timeout;
//! - [`hotplug`]: the sound device behind a hot-pluggable root port, removed with QMP's
//!   `device_del` on the guest's cue (`--unplug-after`);
//! - [`vhost`]: the second device, rust-vmm's vhost-device-sound behind `vhost-user-snd-pci`
//!   (`--device vhost`), its daemon and what its ALSA backend played;
//! - [`results`]: the guest's `@@virtio_sound result {json}` lines and the run's verdict, and
//!   QEMU's wav audio backend as the recording of what the device played;
//! - [`gaps`]: a known signal for the guest to play, and the places where QEMU's wav
//!   recording stops being it (what that file holds when the device ran dry: nothing);
//! - [`backend`]: a boot with a private PulseAudio or JACK server as QEMU's backend, which
//!   records what the device played and plays what the add-on records.

pub mod backend;
pub mod debian;
pub mod gaps;
pub mod hotplug;
mod initramfs;
pub mod prereq;
mod results;
mod run;
pub mod vhost;

pub use results::read_qemu_wav;
pub use run::{run_dir, Audiodev, Guest, GuestRun};

/// Where everything of this command lives, relative to the workspace root.
pub const OUT_DIR: &str = "target/qemu";
/// What the guest prints, at the start of a line, before each result (a JSON value)...
pub const RESULT_MARK: &str = "@@virtio_sound result ";
/// ... and as its last line, with `sim-guest`'s exit status.
pub const EXIT_MARK: &str = "@@virtio_sound exit ";
/// The add-on's path in the guest.
pub const GUEST_ADDON: &str = "/virtio_sound";
/// What the guest prints just before a stream's first exchange (`sim_guest::STREAMING_MARK`).
pub const STREAMING_MARK: &str = "@@virtio_sound streaming";
/// The input WAV's path in the guest.
pub const GUEST_INPUT: &str = "/in.wav";
