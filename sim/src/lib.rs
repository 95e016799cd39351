//! A simulated Haiku kernel and virtio-snd device for testing the driver on the host.
//!
//! The driver core is written against two traits (`platform::Kernel`, `platform::VirtioDevice`);
//! this crate implements both well enough that the driver can be run end to end in a test,
//! fast and deterministically, with the checks a real kernel and a strict device would make:
//!
//! - [`clock`]: discrete-event simulated time. It moves only when every simulated thread
//!   waits, and then jumps straight to the next thing that can happen.
//! - [`kernel::SimKernel`]: semaphores, spinlocks, interrupts, areas, user memory and
//!   logging, recording every misuse and leak instead of crashing.
//! - [`memory`]: the "physical memory" arena behind all areas, reached by the device only by
//!   physical address, bounds-checked.
//! - [`model::SndModel`]: a virtio-snd device with configurable streams, jacks, channel maps
//!   and controls, the spec's PCM state machine, real-time playback and capture on the
//!   simulated clock, events and fault injection.
//!
//! - `pci` (Linux): QEMU's real virtio-snd PCI device driven from a guest's userspace,
//!   behind the same `VirtioDevice` trait, with DMA memory from huge pages.
//!
//! A test builds a kernel, a model on it, hands clones of both to the driver, and at the end
//! asserts `kernel.check_clean()` and `model.violations()`.

pub mod addon;
pub mod client;
pub mod clock;
pub mod guest;
pub mod haiku;
pub mod kernel;
pub mod loader;
pub mod memory;
pub mod model;
#[cfg(target_os = "linux")]
pub mod pci;
mod report;
pub mod user;
pub mod wav;

pub use clock::{Clock, EventSource, SimThread, WaitOutcome};
pub use kernel::{DmaMemory, KernelConfig, LogRecord, SemInfo, SimKernel};
pub use memory::{AreaInfo, DmaBacking, DmaError, PhysMemory, PAGE_SIZE, PHYS_BASE};
pub use model::{Fault, FaultTarget, ModelConfig, SndModel, StreamConfig};
pub use report::FailureLog;
