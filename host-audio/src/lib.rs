//! Private sound servers for one QEMU run: what a Haiku user's QEMU plays through.
//!
//! `cargo xtask qemu --backend pa|jack` starts one of these for the run and stops it
//! afterwards. Each is the user's kind of server, never the user's own instance: it has its
//! own socket (PulseAudio) or server name (JACK), its files in a fresh directory under
//! `/tmp`, and its clients are told not to look for any other. Every process started here is
//! owned by a [`process::Daemon`], which ends it when dropped (also when the run failed) and
//! which the kernel ends if this process dies first.
//!
//! - [`pulse`]: a headless `pulseaudio` with one null sink per direction at the stream's
//!   rate; `parec` records what QEMU plays, `paplay` plays the microphone's input.
//! - [`jack`]: `jackd` with its dummy driver (clocked by the system's monotonic clock) and
//!   an in-process JACK client ([`jack::Tap`]) that records QEMU's output ports and plays
//!   into its input ports, counting xruns and the server's frames against real time.

pub mod jack;
pub mod process;
pub mod pulse;

/// Errors are messages for a person: what failed, and what to do about it.
pub type Error = Box<dyn std::error::Error>;
pub type Result<T = ()> = std::result::Result<T, Error>;

/// Where a server binary comes from, for the message when it is missing.
pub(crate) fn need(binary: &str, package: &str) -> Result<std::path::PathBuf> {
    find_on_path(binary).ok_or_else(|| {
        format!(
            "{binary} not found on PATH: install Debian's {package} package \
             (`cargo xtask setup` does)"
        )
        .into()
    })
}

/// `name` in one of `$PATH`'s directories.
pub fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A fresh directory under `/tmp` for one server (short: a Unix socket's path must fit in
/// 108 bytes), removed when dropped.
pub(crate) fn server_dir(prefix: &str) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .map_err(|e| format!("a directory under /tmp: {e}"))?)
}

/// A mutex's data, also after a panic elsewhere (the data are counters and samples).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
