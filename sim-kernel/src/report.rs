//! Where the simulator writes down what went wrong.
//!
//! A misuse (a spinlock taken with interrupts on, a DMA outside any area, a wait that can never
//! end) must not abort the run: the driver under test would never get to show its next bug,
//! and a panic inside an interrupt callback would poison locks the test still wants to
//! inspect. So every check appends a sentence here and the simulator carries on as a real
//! kernel would (or as safely as it can); tests assert on the list at the end.

use std::sync::{Arc, Mutex, MutexGuard};

/// Whether `SIM_LOG` asks for kernel log lines and failures on stderr as they happen.
pub fn echo_enabled() -> bool {
    std::env::var_os("SIM_LOG").is_some_and(|v| !v.is_empty() && v != "0")
}

/// An append-only list of failure sentences shared by the kernel, the clock and the memory.
#[derive(Clone, Default)]
pub struct FailureLog {
    entries: Arc<Mutex<Vec<String>>>,
}

impl FailureLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one failure (and echoes it with `SIM_LOG=1`).
    pub fn record(&self, message: impl Into<String>) {
        let message = message.into();
        if echo_enabled() {
            eprintln!("[sim failure] {message}");
        }
        lock(&self.entries).push(message);
    }

    pub fn snapshot(&self) -> Vec<String> {
        lock(&self.entries).clone()
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.entries).is_empty()
    }

    /// Removes and returns every failure, so a test that provoked one on purpose can check
    /// it and still end with a clean kernel.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.entries))
    }
}

/// Locks a mutex even if a panicking test thread poisoned it: the simulator's data stays
/// consistent between statements, and the report is most useful exactly after a panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
