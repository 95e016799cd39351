//! The virtio_sound driver, independent of Haiku: it talks to the kernel and to the virtio bus
//! through the traits in [`platform`], so the same code runs in the add-on, in unit tests and
//! in the simulator.
//!
//! Layers, each a module: [`platform`] (the seams) → [`dma`] and [`sync`] (the only `unsafe`
//! outside `platform`) → [`virtio`] (the virtio-snd engine) → [`hmulti`] (the ioctl table).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod dma;
#[cfg(feature = "haiku")]
pub mod haiku;
pub mod hmulti;
pub mod platform;
pub mod sync;
pub mod user;
pub mod virtio;

pub use platform::{Kernel, Status, VirtioDevice};
