//! The ABI layer of the virtio_sound driver, generated from `spec/*.toml` by `cargo xtask gen`.
//!
//! - [`virtio_snd`]: the virtio sound device's config, wire structures, codes, and the typed
//!   control request/response and event enums.
//! - [`hmulti_audio`]: Haiku's `hmulti_audio.h` ioctl structures and the typed
//!   [`hmulti_audio::MultiIoctl`] decoder.
//! - [`haiku_driver`]: the module, driver, device and virtio bus ABI of the Haiku kernel and the
//!   kernel symbols an add-on may import.
//!
//! This crate has no logic beyond encoding and decoding; wrap it, don't drive devices with it.
#![no_std]
#![forbid(unsafe_code)]

pub mod kernel_import;
pub mod mask;
pub mod user;
pub mod wire;

#[rustfmt::skip]
#[allow(non_camel_case_types, clippy::all)]
#[path = "generated/virtio_snd.rs"]
pub mod virtio_snd;

#[rustfmt::skip]
#[allow(non_camel_case_types, clippy::all)]
#[path = "generated/hmulti_audio.rs"]
pub mod hmulti_audio;

#[rustfmt::skip]
#[allow(non_camel_case_types, clippy::all)]
#[path = "generated/haiku_driver.rs"]
pub mod haiku_driver;

pub use mask::{BitNumber, BitSet};
pub use user::{Constant, SampleEncoding, UnknownValue, UserPtr};
pub use wire::{DecodeError, EncodeError, IoctlError};
