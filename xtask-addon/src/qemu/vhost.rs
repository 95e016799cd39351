//! The second device: rust-vmm's `vhost-device-sound`, a virtio-sound device in its own
//! process that QEMU attaches with `-device vhost-user-snd-pci` over a Unix socket
//! (`cargo xtask qemu --device vhost`).
//!
//! A run starts the daemon in the run's directory, waits for its socket, and only then starts
//! QEMU (the vhost-user client). The daemon serves one connection after another for ever: the
//! [`Daemon`] guard ends it and waits for it when dropped, on success or failure, and the
//! kernel ends it should this process die without dropping the guard (it is a
//! [`host_audio::process::Daemon`], the same guard the sound servers have).
//!
//! Its `null` backend (`src/audio_backends/null.rs` of vhost-device-sound 0.3.0) completes
//! playback buffers the moment they are queued (no pacing at all) and never completes capture
//! buffers. It is the one backend used: 0.3.0's `alsa` backend cannot drive a headless PCM
//! here (see README: it asks ALSA for read/write access and then transfers through
//! `snd_pcm_mmap_begin`, which alsa-lib refuses with EBADFD for every PCM that is not
//! mmap-capable, `file` and `null` among them), its GStreamer backend needs GStreamer 1.24,
//! and its PipeWire backend a PipeWire server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Result;

pub use xtask::setup::{vhost_sound, VHOST_SOUND};

/// The backend of vhost-device-sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Playback completes at once, capture never; nothing is kept.
    Null,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Null => "null",
        }
    }
}

/// The socket's name in the run directory.
const SOCKET: &str = "vhost-snd.sock";
/// The daemon's standard output and error.
const LOG: &str = "vhost-device-sound.log";
/// Lines of the daemon's log quoted in an error.
const LOG_TAIL: usize = 30;
/// How long the daemon may take to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running vhost-device-sound, ended and waited for when dropped.
pub struct Daemon {
    process: host_audio::process::Daemon,
    dir: PathBuf,
    backend: Backend,
}

impl Daemon {
    /// Starts `program --socket DIR/vhost-snd.sock --backend B` in `dir` and waits for its
    /// socket.
    pub fn start(program: &Path, backend: Backend, dir: &Path) -> Result<Daemon> {
        let socket = dir.join(SOCKET);
        let mut cmd = Command::new(program);
        cmd.arg("--socket")
            .arg(&socket)
            .args(["--backend", backend.name()])
            .current_dir(dir);
        // Its log (env_logger): errors and warnings, e.g. a failed ALSA call, unless
        // RUST_LOG asks for more.
        let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        let process = host_audio::process::Daemon::spawn(
            VHOST_SOUND.name,
            cmd,
            &[("RUST_LOG", level.into())],
            &dir.join(LOG),
        )
        .map_err(|e| e.to_string())?;
        let mut d = Daemon {
            process,
            dir: dir.to_path_buf(),
            backend,
        };
        let started = Instant::now();
        while !socket.exists() {
            d.alive()?;
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "{} did not create {} within {} s; its log:\n{}",
                    VHOST_SOUND.name,
                    socket.display(),
                    START_TIMEOUT.as_secs(),
                    d.log_tail()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    /// The socket QEMU connects to.
    pub fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET)
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let tail = self.process.log_tail(LOG_TAIL);
        if tail.trim().is_empty() {
            "(empty)".into()
        } else {
            tail
        }
    }

    /// `Ok` while the daemon runs; once it has exited, an error with its status and log tail.
    pub fn alive(&mut self) -> Result {
        self.process.check_alive().map_err(|e| {
            format!(
                "{} ({} backend) during the run: {e}",
                VHOST_SOUND.name,
                self.backend.name()
            )
            .into()
        })
    }
}

/// The options that attach a vhost-user-snd-pci device on `socket`. vhost-user needs the
/// guest's memory shared with the daemon: a memfd backend of the guest's size
/// (QEMU's docs/system/devices/virtio/vhost-user.rst), made the machine's memory.
pub fn qemu_args(socket: &Path, memory_mib: u32) -> Vec<String> {
    vec![
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={memory_mib}M,share=on"),
        "-machine".into(),
        "memory-backend=mem".into(),
        "-chardev".into(),
        format!(
            "socket,id=vsnd,path={}",
            std::path::absolute(socket)
                .unwrap_or_else(|_| socket.to_path_buf())
                .display()
                .to_string()
                .replace(',', ",,")
        ),
        "-device".into(),
        "vhost-user-snd-pci,chardev=vsnd".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_options() {
        assert_eq!(
            qemu_args(Path::new("/r,x/s.sock"), 512).join(" "),
            "-object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem \
             -chardev socket,id=vsnd,path=/r,,x/s.sock -device vhost-user-snd-pci,chardev=vsnd"
        );
    }
}
