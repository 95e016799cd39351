//! The virtio_sound driver, independent of Haiku: it talks to the kernel and to the virtio bus
//! only through the traits of the `platform` crate, so the same code runs in the add-on
//! (`virtio-sound-addon`), in unit tests and in the simulator. No FFI, no `unsafe` beyond the
//! calls whose contract `platform` states.
//!
//! Layers, each a module: [`virtio`] (the virtio-snd engine) → [`hmulti`] (the ioctl table).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod hmulti;
pub mod virtio;
