//! What a loaded add-on costs the kernel: how often it calls each kernel export and each
//! virtio bus function, how many bytes it copies with `user_memcpy`, and the markers
//! `cargo xtask bench` toggles callgrind's collection with.
//!
//! The counters are process-wide (there is one environment at a time, see
//! [`crate::Environment`]) and only grow: a caller takes a [`snapshot`] before and after what
//! it measures and subtracts. Counting is one relaxed atomic add per call, so it is always on.
//!
//! The markers are `#[inline(never)]` functions with names nothing else has: callgrind's
//! `--toggle-collect` flips collection on entry and exit of a function by name, so
//! [`driver_code`] (wrapping every call into the add-on: its device hooks and its queue
//! interrupt callbacks) turns collection on, and [`device_code`] (the device model's work
//! behind a bus call) and [`waiting`] (a blocking wait, where time moves and the device model
//! runs) turn it off again inside. What is collected is then the add-on's own code and the
//! kernel services it calls, nothing the device or the waiting does.

use std::sync::atomic::{AtomicU64, Ordering};

use spec::haiku_driver::KERNEL_IMPORTS;

/// The virtio bus functions counted (`virtio_device_interface` in Haiku's
/// `headers/os/drivers/bus/Virtio.h`), after the kernel exports.
pub const BUS_CALLS: [&str; 15] = [
    "negotiate_features",
    "clear_feature",
    "read_device_config",
    "write_device_config",
    "alloc_queues",
    "free_queues",
    "setup_interrupt",
    "free_interrupts",
    "queue_setup_interrupt",
    "queue_request",
    "queue_request_v",
    "queue_is_full",
    "queue_is_empty",
    "queue_size",
    "queue_dequeue",
];

const SITES: usize = KERNEL_IMPORTS.len() + BUS_CALLS.len();

static CALLS: [AtomicU64; SITES] = [const { AtomicU64::new(0) }; SITES];
static USER_COPY_BYTES: AtomicU64 = AtomicU64::new(0);

/// One counted entry point: a kernel export or a bus function. Made at compile time by
/// [`Site::kernel`] or [`Site::bus`], which refuse a name that is not in the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site(usize);

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl Site {
    /// The kernel export `name` of the import table.
    pub const fn kernel(name: &str) -> Site {
        let mut i = 0;
        while i < KERNEL_IMPORTS.len() {
            if same(KERNEL_IMPORTS[i].name, name) {
                return Site(i);
            }
            i += 1;
        }
        panic!("not a kernel export of the import table")
    }

    /// The virtio bus function `name` of [`BUS_CALLS`].
    pub const fn bus(name: &str) -> Site {
        let mut i = 0;
        while i < BUS_CALLS.len() {
            if same(BUS_CALLS[i], name) {
                return Site(KERNEL_IMPORTS.len() + i);
            }
            i += 1;
        }
        panic!("not a virtio bus function of BUS_CALLS")
    }

    /// Its C name.
    pub fn name(self) -> &'static str {
        name_of(self.0)
    }

    /// Counts one call.
    pub fn count(self) {
        CALLS[self.0].fetch_add(1, Ordering::Relaxed);
    }
}

fn name_of(i: usize) -> &'static str {
    match KERNEL_IMPORTS.get(i) {
        Some(k) => k.name,
        None => BUS_CALLS[i - KERNEL_IMPORTS.len()],
    }
}

/// Counts `bytes` copied by `user_memcpy`.
pub fn user_copied(bytes: usize) {
    USER_COPY_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// The counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls per entry point, every one of them (kernel exports first), zeros included.
    pub calls: Vec<(&'static str, u64)>,
    /// Bytes `user_memcpy` copied.
    pub user_copy_bytes: u64,
}

impl Counts {
    /// Calls of `name` (0 for a name that is not counted).
    pub fn of(&self, name: &str) -> u64 {
        self.calls
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |&(_, c)| c)
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            calls: self
                .calls
                .iter()
                .map(|&(n, c)| (n, c - earlier.of(n)))
                .collect(),
            user_copy_bytes: self.user_copy_bytes - earlier.user_copy_bytes,
        }
    }
}

/// The counters now.
pub fn snapshot() -> Counts {
    Counts {
        calls: CALLS
            .iter()
            .enumerate()
            .map(|(i, c)| (name_of(i), c.load(Ordering::Relaxed)))
            .collect(),
        user_copy_bytes: USER_COPY_BYTES.load(Ordering::Relaxed),
    }
}

/// Runs `f`, a call into the add-on's code (callgrind's collection on, see the module doc).
#[inline(never)]
pub fn driver_code<R>(f: impl FnOnce() -> R) -> R {
    std::hint::black_box(f())
}

/// Runs `f`, the device's work behind a bus call (callgrind's collection off).
#[inline(never)]
pub fn device_code<R>(f: impl FnOnce() -> R) -> R {
    std::hint::black_box(f())
}

/// Runs `f`, a wait that may block (callgrind's collection off).
#[inline(never)]
pub fn waiting<R>(f: impl FnOnce() -> R) -> R {
    std::hint::black_box(f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_name_what_they_count() {
        const SPIN: Site = Site::kernel("acquire_spinlock");
        const DEQ: Site = Site::bus("queue_dequeue");
        assert_eq!(SPIN.name(), "acquire_spinlock");
        assert_eq!(DEQ.name(), "queue_dequeue");
        let before = snapshot();
        SPIN.count();
        SPIN.count();
        DEQ.count();
        user_copied(24);
        let d = snapshot().since(&before);
        // Other tests of this process may count concurrently: at least ours.
        assert!(d.of("acquire_spinlock") >= 2, "{d:?}");
        assert!(d.of("queue_dequeue") >= 1, "{d:?}");
        assert!(d.user_copy_bytes >= 24);
        assert_eq!(d.of("no such call"), 0);
    }
}
