//! Channel lists for `B_MULTI_GET_DESCRIPTION`: how many channels a stream publishes and what
//! each one is (its designation from the device's channel map, or a default layout).

use alloc::vec::Vec;

use spec::hmulti_audio as hm;
use spec::virtio_snd::{ChmapInfo, ChmapPosition, PcmInfo};

/// The Haiku designation of a virtio channel position.
pub fn designation(pos: ChmapPosition) -> u32 {
    use ChmapPosition::*;
    match pos {
        FrontLeft | FrontLeftWide => hm::B_CHANNEL_LEFT,
        FrontRight | FrontRightWide => hm::B_CHANNEL_RIGHT,
        FrontCenter | Mono => hm::B_CHANNEL_CENTER,
        Lfe | LeftLfe | RightLfe => hm::B_CHANNEL_SUB,
        RearLeft | RearLeftCenter => hm::B_CHANNEL_REARLEFT,
        RearRight | RearRightCenter => hm::B_CHANNEL_REARRIGHT,
        FrontLeftCenter => hm::B_CHANNEL_FRONT_LEFT_CENTER,
        FrontRightCenter => hm::B_CHANNEL_FRONT_RIGHT_CENTER,
        RearCenter | BottomCenter => hm::B_CHANNEL_BACK_CENTER,
        SideLeft | BottomLeftCenter => hm::B_CHANNEL_SIDE_LEFT,
        SideRight | BottomRightCenter => hm::B_CHANNEL_SIDE_RIGHT,
        TopCenter => hm::B_CHANNEL_TOP_CENTER,
        TopFrontLeft | FrontLeftHigh | TopFrontLeftCenter => hm::B_CHANNEL_TOP_FRONT_LEFT,
        TopFrontCenter | FrontCenterHigh => hm::B_CHANNEL_TOP_FRONT_CENTER,
        TopFrontRight | FrontRightHigh | TopFrontRightCenter => hm::B_CHANNEL_TOP_FRONT_RIGHT,
        TopRearLeft | TopSideLeft => hm::B_CHANNEL_TOP_BACK_LEFT,
        TopRearCenter => hm::B_CHANNEL_TOP_BACK_CENTER,
        TopRearRight | TopSideRight => hm::B_CHANNEL_TOP_BACK_RIGHT,
        None | Na => 0,
    }
}

/// The layout a device without a channel map gets: mono, stereo, then the usual 3.0 … 7.1
/// orders (ALSA's, which virtio devices follow).
fn default_positions(n: u8) -> Vec<ChmapPosition> {
    use ChmapPosition::*;
    let order = [
        FrontLeft,
        FrontRight,
        RearLeft,
        RearRight,
        FrontCenter,
        Lfe,
        SideLeft,
        SideRight,
    ];
    match n {
        1 => alloc::vec![Mono],
        2 => alloc::vec![FrontLeft, FrontRight],
        3 => alloc::vec![FrontLeft, FrontRight, FrontCenter],
        6 => alloc::vec![FrontLeft, FrontRight, RearLeft, RearRight, FrontCenter, Lfe],
        n => (0..n as usize)
            .map(|i| order.get(i).copied().unwrap_or(Na))
            .collect(),
    }
}

/// The bus bit every channel of a group carries.
pub fn bus_bit(channels: usize) -> u32 {
    match channels {
        1 => hm::B_CHANNEL_MONO_BUS,
        2 => hm::B_CHANNEL_STEREO_BUS,
        _ => hm::B_CHANNEL_SURROUND_BUS,
    }
}

/// How a stream appears: its channel count and each channel's designation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub designations: Vec<u32>,
}

impl Layout {
    pub fn channels(&self) -> usize {
        self.designations.len()
    }
}

/// Chooses the channel count of a stream (the channel map's, if the device has one for the
/// stream's direction that fits, else stereo clamped to the stream's range) and designates
/// each channel. The bus bit is added to every channel; `B_CHANNEL_LEFT` marks where a
/// group starts for the media add-on, so a channel map without a left channel gets it on its
/// first channel.
pub fn layout(info: &PcmInfo, chmaps: &[ChmapInfo], max_channels: u8) -> Layout {
    let lo = info.channels_min.max(1);
    let hi = info.channels_max.max(lo).min(max_channels.max(1));
    let map = chmaps
        .iter()
        .find(|m| {
            m.direction == info.direction
                && m.hdr.hda_fn_nid == info.hdr.hda_fn_nid
                && (lo..=hi).contains(&m.channels)
        })
        .or_else(|| {
            chmaps
                .iter()
                .find(|m| m.direction == info.direction && (lo..=hi).contains(&m.channels))
        });
    let positions: Vec<ChmapPosition> = match map {
        Some(m) => m
            .positions
            .iter()
            .take(m.channels.min(18) as usize)
            .map(|&p| ChmapPosition::from_raw(p).unwrap_or(ChmapPosition::Na))
            .collect(),
        None => default_positions(2u8.clamp(lo, hi)),
    };
    let bus = bus_bit(positions.len());
    let mut designations: Vec<u32> = positions.iter().map(|&p| designation(p) | bus).collect();
    let has_left = designations.iter().any(|d| d & hm::B_CHANNEL_LEFT != 0);
    if let Some(first) = designations.first_mut() {
        if positions.len() > 1 && !has_left {
            *first |= hm::B_CHANNEL_LEFT;
        }
    }
    Layout { designations }
}

/// One entry of the channel list.
pub fn channel_info(
    id: i32,
    kind: i32,
    designations: u32,
    connectors: u32,
) -> hm::MultiChannelInfo {
    hm::MultiChannelInfo {
        channel_id: id,
        kind,
        designations,
        connectors,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::little_endian::U64;

    fn info(dir: u8, lo: u8, hi: u8) -> PcmInfo {
        PcmInfo {
            direction: dir,
            channels_min: lo,
            channels_max: hi,
            rates: U64::new(1 << 7),
            formats: U64::new(1 << 5),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_without_a_map() {
        let l = layout(&info(0, 1, 2), &[], 8);
        assert_eq!(
            l.designations,
            [
                hm::B_CHANNEL_LEFT | hm::B_CHANNEL_STEREO_BUS,
                hm::B_CHANNEL_RIGHT | hm::B_CHANNEL_STEREO_BUS
            ]
        );
        let mono = layout(&info(0, 1, 1), &[], 8);
        assert_eq!(
            mono.designations,
            [hm::B_CHANNEL_CENTER | hm::B_CHANNEL_MONO_BUS]
        );
    }

    #[test]
    fn a_5_1_map() {
        let mut m = ChmapInfo {
            direction: 0,
            channels: 6,
            ..Default::default()
        };
        m.positions[..6].copy_from_slice(&[3, 4, 7, 8, 5, 6]);
        let l = layout(&info(0, 1, 8), &[m], 8);
        let s = hm::B_CHANNEL_SURROUND_BUS;
        assert_eq!(
            l.designations,
            [
                hm::B_CHANNEL_LEFT | s,
                hm::B_CHANNEL_RIGHT | s,
                hm::B_CHANNEL_CENTER | s,
                hm::B_CHANNEL_SUB | s,
                hm::B_CHANNEL_REARLEFT | s,
                hm::B_CHANNEL_REARRIGHT | s
            ]
        );
        // A map for the other direction is not used.
        let l = layout(&info(1, 1, 8), &[m], 8);
        assert_eq!(l.channels(), 2);
    }
}
