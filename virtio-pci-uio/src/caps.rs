//! The PCI capability list of a virtio 1.x device (virtio 1.x §4.1.4): where the common,
//! notify, ISR and device-specific configuration structures live in the BARs.

/// PCI status register bit: the capability list pointer at 0x34 is valid.
const STATUS_CAP_LIST: u16 = 1 << 4;
/// Capability pointer in a type-0 configuration header.
const CAP_POINTER: usize = 0x34;
/// Vendor-specific capability id, used by virtio.
const CAP_ID_VENDOR: u8 = 0x09;

/// `VIRTIO_PCI_CAP_COMMON_CFG`.
pub const CFG_COMMON: u8 = 1;
/// `VIRTIO_PCI_CAP_NOTIFY_CFG`.
pub const CFG_NOTIFY: u8 = 2;
/// `VIRTIO_PCI_CAP_ISR_CFG`.
pub const CFG_ISR: u8 = 3;
/// `VIRTIO_PCI_CAP_DEVICE_CFG`.
pub const CFG_DEVICE: u8 = 4;
/// `VIRTIO_PCI_CAP_PCI_CFG`.
pub const CFG_PCI: u8 = 5;

/// One `virtio_pci_cap`: a window of `length` bytes at `offset` in BAR `bar`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioCap {
    pub cfg_type: u8,
    pub bar: u8,
    pub offset: u32,
    pub length: u32,
    /// Where the capability itself is in configuration space.
    pub at: u8,
}

/// The first capability of each virtio structure type (the spec asks drivers to use the
/// first one they support).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioCaps {
    pub common: Option<VirtioCap>,
    pub notify: Option<VirtioCap>,
    /// `notify_off_multiplier` from the notify capability.
    pub notify_off_multiplier: u32,
    pub isr: Option<VirtioCap>,
    pub device: Option<VirtioCap>,
    pub pci_cfg: Option<VirtioCap>,
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walks the capability list of a configuration space image (at least the 64-byte header;
/// 256 bytes to see the capabilities). Malformed lists end the walk with an error, never a
/// panic; unknown capabilities and structure types are skipped.
pub fn parse_caps(config: &[u8]) -> Result<VirtioCaps, String> {
    let status = le16(config, 6).ok_or("configuration space shorter than its header")?;
    if status & STATUS_CAP_LIST == 0 {
        return Err("the status register says there is no capability list".into());
    }
    let mut caps = VirtioCaps::default();
    let first = config
        .get(CAP_POINTER)
        .ok_or("configuration space shorter than its header")?;
    let mut ptr = usize::from(first & 0xfc);
    // A valid list has at most (256 - 64) / 4 entries; more means a loop.
    for _ in 0..48 {
        if ptr == 0 {
            return Ok(caps);
        }
        if ptr < 0x40 {
            return Err(format!(
                "capability pointer {ptr:#x} points into the header"
            ));
        }
        let (Some(&id), Some(&next)) = (config.get(ptr), config.get(ptr + 1)) else {
            return Err(format!(
                "capability at {ptr:#x} is past the {} bytes read (reading configuration \
                 space beyond 64 bytes needs root)",
                config.len()
            ));
        };
        if id == CAP_ID_VENDOR {
            let cap_len = config.get(ptr + 2).copied().unwrap_or(0);
            if cap_len < 16 {
                return Err(format!(
                    "virtio capability at {ptr:#x} is {cap_len} bytes, needs 16"
                ));
            }
            let field = |o: usize| {
                le32(config, ptr + o)
                    .ok_or_else(|| format!("virtio capability at {ptr:#x} is cut off"))
            };
            let cap = VirtioCap {
                cfg_type: config.get(ptr + 3).copied().unwrap_or(0),
                bar: config.get(ptr + 4).copied().unwrap_or(0xff),
                offset: field(8)?,
                length: field(12)?,
                at: ptr as u8,
            };
            // BARs 0-5 only; other values are reserved and the capability is ignored.
            if cap.bar <= 5 {
                let slot = match cap.cfg_type {
                    CFG_COMMON => Some(&mut caps.common),
                    CFG_NOTIFY => Some(&mut caps.notify),
                    CFG_ISR => Some(&mut caps.isr),
                    CFG_DEVICE => Some(&mut caps.device),
                    CFG_PCI => Some(&mut caps.pci_cfg),
                    _ => None,
                };
                if let Some(slot) = slot.filter(|s| s.is_none()) {
                    if cap.cfg_type == CFG_NOTIFY {
                        if cap_len < 20 {
                            return Err(format!(
                                "notify capability at {ptr:#x} is {cap_len} bytes, needs 20"
                            ));
                        }
                        caps.notify_off_multiplier = field(16)?;
                    }
                    *slot = Some(cap);
                }
            }
        }
        ptr = usize::from(next & 0xfc);
    }
    Err("capability list does not end (a loop?)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration space as QEMU's virtio-sound-pci presents it (the capability layout
    /// of hw/virtio/virtio-pci.c: MSI-X, then the virtio structures in BAR 4).
    fn vcap(c: &mut [u8], at: usize, next: u8, len: u8, ty: u8, off: u32, length: u32) {
        c[at] = CAP_ID_VENDOR;
        c[at + 1] = next;
        c[at + 2] = len;
        c[at + 3] = ty;
        c[at + 4] = 4;
        c[at + 8..at + 12].copy_from_slice(&off.to_le_bytes());
        c[at + 12..at + 16].copy_from_slice(&length.to_le_bytes());
    }

    /// A configuration space as QEMU's virtio-sound-pci presents it (the capability layout
    /// of hw/virtio/virtio-pci.c: MSI-X, then the virtio structures in BAR 4).
    fn qemu_like() -> Vec<u8> {
        let mut c = vec![0u8; 256];
        c[0..2].copy_from_slice(&0x1af4u16.to_le_bytes());
        c[2..4].copy_from_slice(&0x1059u16.to_le_bytes());
        c[6..8].copy_from_slice(&STATUS_CAP_LIST.to_le_bytes());
        c[CAP_POINTER] = 0x98;
        // MSI-X at 0x98 -> 0x84.
        c[0x98] = 0x11;
        c[0x99] = 0x84;
        vcap(&mut c, 0x84, 0x70, 20, CFG_PCI, 0, 0);
        vcap(&mut c, 0x70, 0x60, 20, CFG_NOTIFY, 0x3000, 0x1000);
        vcap(&mut c, 0x60, 0x50, 16, CFG_DEVICE, 0x2000, 0x1000);
        vcap(&mut c, 0x50, 0x40, 16, CFG_ISR, 0x1000, 0x1000);
        vcap(&mut c, 0x40, 0x00, 16, CFG_COMMON, 0, 0x1000);
        c[0x70 + 16..0x70 + 20].copy_from_slice(&4u32.to_le_bytes());
        c
    }

    #[test]
    fn finds_every_virtio_structure() {
        let caps = parse_caps(&qemu_like()).unwrap();
        let cap = |cfg_type, offset, at| VirtioCap {
            cfg_type,
            bar: 4,
            offset,
            length: if cfg_type == CFG_PCI { 0 } else { 0x1000 },
            at,
        };
        assert_eq!(caps.common, Some(cap(CFG_COMMON, 0, 0x40)));
        assert_eq!(caps.isr, Some(cap(CFG_ISR, 0x1000, 0x50)));
        assert_eq!(caps.device, Some(cap(CFG_DEVICE, 0x2000, 0x60)));
        assert_eq!(caps.notify, Some(cap(CFG_NOTIFY, 0x3000, 0x70)));
        assert_eq!(caps.notify_off_multiplier, 4);
        assert_eq!(caps.pci_cfg, Some(cap(CFG_PCI, 0, 0x84)));
    }

    #[test]
    fn the_first_of_a_type_wins_and_reserved_bars_are_skipped() {
        let mut c = qemu_like();
        // Make the ISR capability a second COMMON one: it comes first in the list (which
        // runs 0x98, 0x84, 0x70, 0x60, 0x50, 0x40), so it wins and the one at 0x40 is ignored.
        c[0x50 + 3] = CFG_COMMON;
        c[0x50 + 8] = 0x80;
        // The device capability names reserved BAR 7: ignored.
        c[0x60 + 4] = 7;
        let caps = parse_caps(&c).unwrap();
        assert_eq!(caps.common.unwrap().at, 0x50);
        assert_eq!(caps.common.unwrap().offset, 0x1080);
        assert_eq!(caps.isr, None);
        assert_eq!(caps.device, None);
    }

    #[test]
    fn malformed_lists_are_errors_not_panics() {
        let mut no_list = qemu_like();
        no_list[6] = 0;
        assert!(parse_caps(&no_list)
            .unwrap_err()
            .contains("no capability list"));

        let mut looped = qemu_like();
        looped[0x40 + 1] = 0x98;
        assert!(parse_caps(&looped).unwrap_err().contains("loop"));

        let mut into_header = qemu_like();
        into_header[0x99] = 0x10;
        assert!(parse_caps(&into_header).is_err());

        let mut short = qemu_like();
        short[0x70 + 2] = 16; // a notify capability without its multiplier
        assert!(parse_caps(&short).unwrap_err().contains("needs 20"));

        // Only the 64-byte header (what a non-root reader gets).
        assert!(parse_caps(&qemu_like()[..64]).unwrap_err().contains("root"));
        assert!(parse_caps(&[0u8; 4]).is_err());

        // Every truncation and every single-byte corruption: no panic.
        let good = qemu_like();
        for n in 0..good.len() {
            let _ = parse_caps(&good[..n]);
        }
        for i in 0..good.len() {
            for v in [0x00, 0x3c, 0x41, 0xfc, 0xff] {
                let mut c = good.clone();
                c[i] = v;
                let _ = parse_caps(&c);
            }
        }
        // An empty list is fine (no virtio structures found).
        let mut empty = qemu_like();
        empty[CAP_POINTER] = 0;
        assert_eq!(parse_caps(&empty), Ok(VirtioCaps::default()));
    }
}
