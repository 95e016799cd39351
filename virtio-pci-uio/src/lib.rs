//! A virtio-pci transport for Linux user space: the simulator's way to drive a *real*
//! virtio-snd device (QEMU's `virtio-sound-pci`, inside a small Linux guest) through the
//! driver crate's [`VirtioDevice`](platform::VirtioDevice) trait.
//!
//! - [`dma::DmaRegion`]: huge-page memory, locked and physically contiguous, with its
//!   physical address from `/proc/self/pagemap`: DMA buffers the device can reach.
//! - [`caps`]: the virtio PCI capability list (where the register structures are).
//! - [`ring`]: split virtqueues, the driver side, with private bookkeeping.
//! - [`PciSnd`]: the function itself, taken from its kernel driver through sysfs; queue
//!   "interrupts" come from a poller thread.
//!
//! Needs root, a kernel with huge pages reserved (`hugepages=N`), and no IOMMU translation
//! (guest-physical addresses are what the device uses).

#![cfg(target_os = "linux")]

pub mod caps;
pub mod device;
pub mod dma;
pub mod ring;

pub use device::PciSnd;
pub use dma::DmaRegion;
