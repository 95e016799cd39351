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

/// Names the code that made the call being checked, if it can (the simulator of an add-on
/// finds the add-on's return address on the stack); see [`FailureLog::set_locator`].
pub type Locator = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// One recorded failure: what went wrong and, where known, the code address of the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// The caller's code address as the locator names it (e.g. `virtio_sound+0x1a2f`).
    pub site: Option<String>,
}

#[derive(Default)]
struct Entries {
    list: Vec<Failure>,
    locator: Option<Locator>,
}

/// An append-only list of failure sentences shared by the kernel, the clock and the memory.
#[derive(Clone, Default)]
pub struct FailureLog {
    entries: Arc<Mutex<Entries>>,
}

impl FailureLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or with `None` removes) what names the calling code of each failure recorded
    /// from now on.
    pub fn set_locator(&self, locator: Option<Locator>) {
        lock(&self.entries).locator = locator;
    }

    /// Records one failure (and echoes it with `SIM_LOG=1`).
    pub fn record(&self, message: impl Into<String>) {
        let message = message.into();
        let locator = lock(&self.entries).locator.clone();
        let site = locator.and_then(|l| l());
        if echo_enabled() {
            match &site {
                Some(at) => eprintln!("[sim failure] {message} (called from {at})"),
                None => eprintln!("[sim failure] {message}"),
            }
        }
        lock(&self.entries).list.push(Failure { message, site });
    }

    pub fn snapshot(&self) -> Vec<String> {
        lock(&self.entries)
            .list
            .iter()
            .map(|f| f.message.clone())
            .collect()
    }

    /// Every failure with the code address of its call, where known.
    pub fn entries(&self) -> Vec<Failure> {
        lock(&self.entries).list.clone()
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.entries).list.is_empty()
    }

    /// Removes and returns every failure, so a test that provoked one on purpose can check
    /// it and still end with a clean kernel.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.entries).list)
            .into_iter()
            .map(|f| f.message)
            .collect()
    }
}

/// Locks a mutex even if a panicking test thread poisoned it: the simulator's data stays
/// consistent between statements, and the report is most useful exactly after a panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
