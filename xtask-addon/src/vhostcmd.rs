//! `cargo xtask qemu --device vhost`: the same runs as on QEMU's own device, on rust-vmm's
//! vhost-device-sound (QEMU's `vhost-user-snd-pci`), a second, independent implementation of
//! the virtio-sound device. See [`crate::qemu::vhost`] for the daemon and its backends.

use std::path::PathBuf;
use std::time::Duration;

use hmulti_client::wav::Wav;
use serde_json::Value;

use crate::qemu::vhost::{vhost_sound, Backend, Daemon};
use crate::qemu::{Audiodev, Guest, GuestRun, GUEST_ADDON, GUEST_INPUT};
use crate::qemucmd::Played;
use crate::Result;

/// Which device the guest gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceKind {
    /// QEMU's own virtio-sound-pci.
    #[default]
    Qemu,
    /// vhost-device-sound behind vhost-user-snd-pci.
    Vhost,
}

/// The rates in Hz vhost-device-sound offers that have an hmulti bit, ascending:
/// `SUPPORTED_RATES` of its `src/lib.rs` (8 to 48 kHz), as `snd_model`'s `vhost_null` preset
/// describes them.
pub fn vhost_rates() -> Vec<u32> {
    let mask = snd_model::ModelConfig::vhost_null().streams[0].rates;
    let mut v = crate::simcmd::hmulti_rates();
    v.retain(|&hz| spec::virtio_snd::PcmRate::from_hz(hz).is_some_and(|r| r.mask() & mask != 0));
    v
}

/// vhost-device-sound, found, with the backend of this run.
#[derive(Debug, Clone)]
pub struct Vhost {
    pub program: PathBuf,
    pub backend: Backend,
}

impl Vhost {
    /// Finds the daemon (on PATH or in cargo's bin directory, version 0.3.0 with ALSA), or
    /// says how to install it.
    pub fn find(backend: Backend) -> Result<Vhost> {
        let program = vhost_sound().map_err(|e| format!("--device vhost: {e}"))?;
        Ok(Vhost { program, backend })
    }

    /// One boot with a fresh daemon in a temporary directory of its own (a Unix socket's
    /// path is limited to 107 bytes): the guest's results and the boot's wall time. A daemon
    /// that died fails the run with its log, whatever the guest said.
    fn boot(&self, mut run: GuestRun, guest: &Guest) -> Result<(Vec<Value>, Duration)> {
        let dir = tempfile::Builder::new()
            .prefix("vhost-snd-")
            .tempdir()
            .map_err(|e| format!("a temporary directory: {e}"))?;
        let mut daemon = Daemon::start(&self.program, self.backend, dir.path())?;
        run.audiodev = Audiodev::Vhost {
            socket: daemon.socket(),
        };
        let out = guest.run(&run);
        if let Err(died) = daemon.alive() {
            return Err(match out {
                Err(guest) => format!("{died}\n\nthe guest's run:\n{guest}").into(),
                Ok(_) => died,
            });
        }
        let out = out?;
        Ok((out.results, out.wall))
    }

    /// [`crate::qemucmd::play`] on this device: what the guest measured (the null backend
    /// keeps nothing to compare).
    pub fn play(&self, guest: &Guest, wav: &Wav, timeout: Duration) -> Result<Played> {
        let run = GuestRun {
            args: vec![
                "play".into(),
                "--addon".into(),
                GUEST_ADDON.into(),
                "--input".into(),
                GUEST_INPUT.into(),
            ],
            files: vec![(GUEST_INPUT.to_string(), wav.to_bytes()?)],
            timeout,
            ..GuestRun::default()
        };
        let (guest_results, wall) = self.boot(run, guest)?;
        Ok(Played {
            guest: guest_results,
            output: Wav {
                rate: wav.rate,
                channels: wav.channels,
                format: wav.format,
                data: Vec::new(),
            },
            comparison: None,
            wall,
        })
    }

    /// [`crate::qemucmd::boot_silent`] on this device.
    pub fn boot_silent(
        &self,
        guest: &Guest,
        args: &[String],
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        let run = GuestRun {
            args: args.to_vec(),
            timeout,
            ..GuestRun::default()
        };
        Ok(self.boot(run, guest)?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vhost-device-sound 0.3.0's `SUPPORTED_RATES` (`src/lib.rs`): 8, 11.025, 16, 22.05, 32,
    /// 44.1 and 48 kHz (all have an hmulti bit).
    #[test]
    fn rates_of_vhost_device_sound() {
        assert_eq!(
            vhost_rates(),
            [8000, 11025, 16000, 22050, 32000, 44100, 48000]
        );
    }
}
