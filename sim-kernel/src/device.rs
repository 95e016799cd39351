//! What a device on the simulated machine's virtio bus offers beyond the driver-facing
//! [`VirtioDevice`]: the device model implements it, and so does the transport to QEMU's
//! real device; Haiku's virtio bus in `haiku-sim` takes either.

use platform::VirtioDevice;

/// A device on the simulated virtio bus: the model, or a real device behind a transport.
pub trait BusDevice: VirtioDevice {
    /// Requests posted on `queue` and not yet dequeued.
    fn in_flight(&self, queue: u16) -> usize;
    /// What the device saw the driver do wrong (a real device keeps no such list).
    fn violations(&self) -> Vec<String> {
        Vec::new()
    }
}
