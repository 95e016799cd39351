//! A child process that must not outlive its owner: [`Daemon`].

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

/// A running server or client process, with its output in a log file. Dropping it ends
/// the process: SIGTERM, up to [`GRACE`] to exit, then SIGKILL; it is always waited for.
/// The kernel sends it SIGTERM if the thread that started it dies first
/// (`PR_SET_PDEATHSIG`), so a crash or a kill of `cargo xtask` leaves nothing running.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

/// How long a process has to exit after SIGTERM.
pub const GRACE: Duration = Duration::from_secs(3);

impl Daemon {
    /// Starts `cmd` as `name`, its standard output and error appended to `log`. Its
    /// environment is exactly `env` plus `PATH` (no `DISPLAY`, no D-Bus session, no
    /// `XDG_RUNTIME_DIR`: nothing that leads to the user's own sound server).
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        env: &[(&str, PathBuf)],
        log: &Path,
    ) -> Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // prctl(2), which is async-signal-safe, allocating nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Daemon {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// An error naming it, its exit status and its log's tail if it has exited.
    pub fn check_alive(&mut self) -> Result {
        let Some(child) = self.child.as_mut() else {
            return Err(format!("{} was stopped", self.name).into());
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); the end of its log:\n{}",
                self.name,
                self.log_tail(15)
            )
            .into()),
            Err(e) => Err(format!("{}: {e}", self.name).into()),
        }
    }

    /// Waits up to `timeout` for it to exit by itself; its status, or `None` if it is still
    /// running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }

    /// Sends `signal` (e.g. SIGINT, which `parec` answers by finishing its file).
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on our own child, which has not been waited for (so the pid
            // cannot have been reused); no memory is involved.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Ends it (SIGTERM, then SIGKILL after [`GRACE`]) and waits; its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_ref()?;
        if let Some(s) = self.wait_timeout(Duration::ZERO) {
            self.child = None;
            return Some(s);
        }
        self.signal(libc::SIGTERM);
        let status = self.wait_timeout(GRACE).or_else(|| {
            let child = self.child.as_mut()?;
            let _ = child.kill();
            child.wait().ok()
        });
        self.child = None;
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a process with this pid exists (a zombie counts).
pub fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_is_gone_when_dropped_and_its_death_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; echo \"HOME=$HOME\"; exec sleep 60"]);
        let d = Daemon::spawn("sleeper", cmd, &[("HOME", dir.path().into())], &log).unwrap();
        let pid = d.pid().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(alive(pid));
        let t = Instant::now();
        drop(d);
        assert!(!alive(pid), "still running after drop");
        assert!(t.elapsed() < GRACE, "SIGTERM was enough: {:?}", t.elapsed());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("started"), "{text}");
        assert!(
            text.contains(&format!("HOME={}", dir.path().display())),
            "{text}"
        );

        // One that ignores SIGTERM is killed after the grace period.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.05; done",
        ]);
        let mut d = Daemon::spawn("stubborn", cmd, &[], &log).unwrap();
        let pid = d.pid().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        assert!(d.stop().is_some());
        assert!(t.elapsed() >= GRACE, "{:?}", t.elapsed());
        assert!(!alive(pid));

        // One that dies is reported with its log.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'E: out of cheese'; exit 3"]);
        let mut d = Daemon::spawn("doomed", cmd, &[], &log).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let e = d.check_alive().unwrap_err().to_string();
        assert!(
            e.contains("doomed exited") && e.contains("out of cheese"),
            "{e}"
        );
    }

    #[test]
    fn the_child_dies_with_the_thread_that_started_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let pid = std::thread::spawn(move || {
            let mut cmd = Command::new("sleep");
            cmd.arg("60");
            let d = Daemon::spawn("orphan", cmd, &[], &log).unwrap();
            let pid = d.pid().unwrap();
            // Leak it: only PR_SET_PDEATHSIG can end it now.
            std::mem::forget(d);
            pid
        })
        .join()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        // It is our child: reap it so that it does not linger as a zombie.
        while Instant::now() < deadline {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
            if r == pid as i32 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the orphan {pid} is still running");
    }

    #[test]
    fn a_missing_binary_names_its_package() {
        let e = crate::need("no-such-server-binary", "no-such-package")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no-such-package") && e.contains("cargo xtask setup"),
            "{e}"
        );
    }
}
