//! Which virtio rates and formats become which hmulti bits, and the buffer size defaults.

use spec::hmulti_audio as hm;
use spec::virtio_snd::{PcmFormat, PcmRate};

/// Every virtio rate that has a `B_SR_*` bit (5512 Hz has none).
pub const RATES: [(PcmRate, u32); 15] = [
    (PcmRate::Rate8000, hm::B_SR_8000),
    (PcmRate::Rate11025, hm::B_SR_11025),
    (PcmRate::Rate12000, hm::B_SR_12000),
    (PcmRate::Rate16000, hm::B_SR_16000),
    (PcmRate::Rate22050, hm::B_SR_22050),
    (PcmRate::Rate24000, hm::B_SR_24000),
    (PcmRate::Rate32000, hm::B_SR_32000),
    (PcmRate::Rate44100, hm::B_SR_44100),
    (PcmRate::Rate48000, hm::B_SR_48000),
    (PcmRate::Rate64000, hm::B_SR_64000),
    (PcmRate::Rate88200, hm::B_SR_88200),
    (PcmRate::Rate96000, hm::B_SR_96000),
    (PcmRate::Rate176400, hm::B_SR_176400),
    (PcmRate::Rate192000, hm::B_SR_192000),
    (PcmRate::Rate384000, hm::B_SR_384000),
];

/// hmulti formats and the virtio format that carries each. The media kit hands over
/// 18/20/24-bit audio left-adjusted in a full 32-bit word, which is what virtio S32 means;
/// virtio's S24 is right-adjusted and would be wrong, so `B_FMT_24BIT` travels as S32.
pub const FORMATS: [(u32, PcmFormat); 7] = [
    (hm::B_FMT_8BIT_S, PcmFormat::S8),
    (hm::B_FMT_8BIT_U, PcmFormat::U8),
    (hm::B_FMT_16BIT, PcmFormat::S16),
    (hm::B_FMT_24BIT, PcmFormat::S32),
    (hm::B_FMT_32BIT, PcmFormat::S32),
    (hm::B_FMT_FLOAT, PcmFormat::Float),
    (hm::B_FMT_DOUBLE, PcmFormat::Float64),
];

/// The `B_SR_*` mask of a virtio rate mask, optionally capped at `max_hz`.
pub fn rate_bits(virtio_rates: u64, max_hz: Option<u32>) -> u32 {
    RATES
        .iter()
        .filter(|(r, _)| {
            virtio_rates & r.mask() != 0 && max_hz.is_none_or(|m| r.hz().unwrap_or(0) <= m)
        })
        .fold(0, |acc, (_, b)| acc | b)
}

/// The `B_FMT_*` mask of a virtio format mask.
pub fn format_bits(virtio_formats: u64) -> u32 {
    FORMATS
        .iter()
        .filter(|(_, f)| virtio_formats & f.mask() != 0)
        .fold(0, |acc, (b, _)| acc | b)
}

/// The virtio rate for exactly one `B_SR_*` bit.
pub fn rate_of(bit: u32) -> Option<PcmRate> {
    RATES.iter().find(|(_, b)| *b == bit).map(|(r, _)| *r)
}

/// The virtio format for exactly one `B_FMT_*` bit.
pub fn format_of(bit: u32) -> Option<PcmFormat> {
    FORMATS.iter().find(|(b, _)| *b == bit).map(|(_, f)| *f)
}

/// What the media add-on would choose from a mask: the highest rate.
pub fn best_rate(bits: u32) -> Option<u32> {
    (0..32)
        .rev()
        .map(|i| 1u32 << i)
        .find(|b| bits & b != 0 && rate_of(*b).is_some())
}

/// What the media add-on would choose: 32 > 24 > 16 > 8-bit signed > 8-bit unsigned, then
/// float and double, which it cannot pick itself but a user may.
pub fn best_format(bits: u32) -> Option<u32> {
    [
        hm::B_FMT_32BIT,
        hm::B_FMT_24BIT,
        hm::B_FMT_16BIT,
        hm::B_FMT_8BIT_S,
        hm::B_FMT_8BIT_U,
        hm::B_FMT_FLOAT,
        hm::B_FMT_DOUBLE,
    ]
    .into_iter()
    .find(|b| bits & b != 0)
}

/// Bytes one sample takes in memory.
pub fn sample_bytes(f: PcmFormat) -> u32 {
    f.phys_width().unwrap_or(8).div_ceil(8)
}

/// Default frames per buffer: about 10 ms, a multiple of 16 frames.
pub fn default_frames(hz: u32) -> u32 {
    (hz / 100).div_ceil(16).max(1) * 16
}

/// Default number of buffers: with every buffer in flight but the one being refilled, four
/// give the client 30 ms of slack at the default size.
pub const DEFAULT_BUFFERS: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    /// Hz -> `B_SR_*` bit as hmulti_audio.h names them, written out here so that the table
    /// under test is checked against something it is not.
    const BY_HZ: [(u32, u32); 15] = [
        (8_000, hm::B_SR_8000),
        (11_025, hm::B_SR_11025),
        (12_000, hm::B_SR_12000),
        (16_000, hm::B_SR_16000),
        (22_050, hm::B_SR_22050),
        (24_000, hm::B_SR_24000),
        (32_000, hm::B_SR_32000),
        (44_100, hm::B_SR_44100),
        (48_000, hm::B_SR_48000),
        (64_000, hm::B_SR_64000),
        (88_200, hm::B_SR_88200),
        (96_000, hm::B_SR_96000),
        (176_400, hm::B_SR_176400),
        (192_000, hm::B_SR_192000),
        (384_000, hm::B_SR_384000),
    ];

    #[test]
    fn every_rate_with_a_bit_maps_back() {
        // Every virtio rate of the spec with the bit of its frequency, both ways.
        for &r in PcmRate::ALL {
            let hz = r.hz().unwrap();
            let bit = BY_HZ.iter().find(|(h, _)| *h == hz).map(|(_, b)| *b);
            assert_eq!(rate_bits(r.mask(), None), bit.unwrap_or(0), "{hz} Hz");
            if let Some(b) = bit {
                assert_eq!(rate_of(b), Some(r), "{hz} Hz");
            }
        }
        assert_eq!(
            rate_bits(PcmRate::Rate5512.mask(), None),
            0,
            "5512 Hz has no B_SR bit"
        );
        assert_eq!(rate_bits(u64::MAX, Some(48000)) & hm::B_SR_96000, 0);
        assert_eq!(
            best_rate(hm::B_SR_44100 | hm::B_SR_384000),
            Some(hm::B_SR_384000)
        );
    }

    #[test]
    fn formats() {
        assert_eq!(
            format_bits(PcmFormat::S24.mask()),
            0,
            "right-adjusted S24 is not offered"
        );
        assert_eq!(
            format_bits(PcmFormat::S32.mask()),
            hm::B_FMT_24BIT | hm::B_FMT_32BIT
        );
        assert_eq!(
            best_format(hm::B_FMT_16BIT | hm::B_FMT_FLOAT),
            Some(hm::B_FMT_16BIT)
        );
        assert_eq!(sample_bytes(PcmFormat::Float64), 8);
        assert_eq!(default_frames(48000), 480);
        assert_eq!(default_frames(44100), 448);
        assert_eq!(default_frames(384000), 3840);
    }
}
