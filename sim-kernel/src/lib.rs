//! A simulated Haiku machine for testing the driver on the host: the kernel services of the
//! `platform` traits, over simulated time and memory, with the checks a real kernel makes.
//!
//! - [`clock`]: discrete-event simulated time. It moves only when every simulated thread
//!   waits, and then jumps straight to the next thing that can happen (or follows real
//!   time, for a real device).
//! - [`kernel::SimKernel`]: semaphores, spinlocks, interrupts, areas, user memory and
//!   logging, recording every misuse and leak instead of crashing.
//! - [`memory`]: the "physical memory" arena behind all areas, reached by a device only by
//!   physical address, bounds-checked, with the chains a device holds.
//! - [`user`]: user address space, mapped so that the kernel touching it directly is seen.
//! - [`report`]: failures recorded by the simulation, and its logging switches.
//! - [`device::BusDevice`]: what a device on the machine's virtio bus offers.
//!
//! A device (the `snd-model` crate, or QEMU's through `virtio-pci-uio`) and Haiku's ABI
//! around a loaded add-on (`haiku-sim`) are built on this crate.

pub mod clock;
pub mod device;
pub mod kernel;
pub mod memory;
pub mod report;
pub mod user;

pub use clock::{Clock, EventSource, SimThread, WaitOutcome};
pub use device::BusDevice;
pub use kernel::{Cpu, DmaMemory, KernelConfig, LogRecord, RawCpu, SemInfo, SimKernel};
pub use memory::{AreaInfo, DmaBacking, DmaError, PhysMemory, PAGE_SIZE, PHYS_BASE};
pub use report::{Failure, FailureLog, Locator};
