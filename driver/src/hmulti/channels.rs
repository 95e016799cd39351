//! Channel lists for `B_MULTI_GET_DESCRIPTION`: how many channels a stream publishes and what
//! each one is (its designation from the device's channel map, or a default layout).

use alloc::vec::Vec;
use core::ops::RangeInclusive;

use spec::hmulti_audio as hm;
use spec::virtio_snd::{ChmapInfo, ChmapPosition, PcmInfo};

use super::servable::Unservable;

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

/// The channel counts a card may publish for the stream `info` describes: those the stream
/// takes (at least 1) that are at most `max_channels`. Never empty: a stream without one is
/// [`Unservable`].
pub fn range(info: &PcmInfo, max_channels: u8) -> Result<RangeInclusive<u8>, Unservable> {
    let (min, max) = (info.channels_min, info.channels_max);
    if min > max {
        return Err(Unservable::Inverted { min, max });
    }
    if max == 0 {
        return Err(Unservable::NoChannels);
    }
    let lo = min.max(1);
    if lo > max_channels {
        return Err(Unservable::TooManyChannels {
            min: lo,
            most: max_channels,
        });
    }
    Ok(lo..=max.min(max_channels))
}

/// Chooses the channel count of a stream (the channel map's, if the device has one for the
/// stream's direction that fits, else stereo clamped to the stream's [`range`]) and designates
/// each channel. The bus bit is added to every channel; `B_CHANNEL_LEFT` marks where a
/// group starts for the media add-on, so a channel map without a left channel gets it on its
/// first channel.
pub fn layout(
    info: &PcmInfo,
    chmaps: &[ChmapInfo],
    max_channels: u8,
) -> Result<Layout, Unservable> {
    let fits = range(info, max_channels)?;
    let map = chmaps
        .iter()
        .find(|m| {
            m.direction == info.direction
                && m.hdr.hda_fn_nid == info.hdr.hda_fn_nid
                && fits.contains(&m.channels)
        })
        .or_else(|| {
            chmaps
                .iter()
                .find(|m| m.direction == info.direction && fits.contains(&m.channels))
        });
    let positions: Vec<ChmapPosition> = match map {
        Some(m) => m
            .positions()
            .into_iter()
            .take(m.channels as usize)
            .map(|p| p.unwrap_or(ChmapPosition::Na))
            .collect(),
        // `range` is never empty, so `max(start).min(end)` is inside it.
        None => default_positions(2u8.max(*fits.start()).min(*fits.end())),
    };
    let bus = bus_bit(positions.len());
    let mut designations: Vec<u32> = positions.iter().map(|&p| designation(p) | bus).collect();
    let has_left = designations.iter().any(|d| d & hm::B_CHANNEL_LEFT != 0);
    if let Some(first) = designations.first_mut() {
        if positions.len() > 1 && !has_left {
            *first |= hm::B_CHANNEL_LEFT;
        }
    }
    Ok(Layout { designations })
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
        let l = layout(&info(0, 1, 2), &[], 8).unwrap();
        assert_eq!(
            l.designations,
            [
                hm::B_CHANNEL_LEFT | hm::B_CHANNEL_STEREO_BUS,
                hm::B_CHANNEL_RIGHT | hm::B_CHANNEL_STEREO_BUS
            ]
        );
        let mono = layout(&info(0, 1, 1), &[], 8).unwrap();
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
        let l = layout(&info(0, 1, 8), &[m], 8).unwrap();
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
        let l = layout(&info(1, 1, 8), &[m], 8).unwrap();
        assert_eq!(l.channels(), 2);
    }

    #[test]
    fn ranges_a_card_cannot_publish_are_refused() {
        // The panic this replaces: `2.clamp(40, 16)` for a 40-channel stream.
        assert_eq!(
            layout(&info(0, 40, 40), &[], 16),
            Err(Unservable::TooManyChannels { min: 40, most: 16 })
        );
        assert_eq!(
            layout(&info(0, 9, 3), &[], 16),
            Err(Unservable::Inverted { min: 9, max: 3 })
        );
        assert_eq!(layout(&info(0, 0, 0), &[], 16), Err(Unservable::NoChannels));
        // 0 as the minimum is read as 1; a range reaching past 16 is cut at 16.
        assert_eq!(range(&info(0, 0, 1), 16), Ok(1..=1));
        assert_eq!(range(&info(0, 16, 255), 16), Ok(16..=16));
        assert_eq!(layout(&info(0, 16, 255), &[], 16).unwrap().channels(), 16);
        assert_eq!(layout(&info(0, 3, 255), &[], 16).unwrap().channels(), 3);
    }
}
