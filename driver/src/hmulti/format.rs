//! Which virtio rates and formats become which hmulti bits, and the buffer size defaults.

use spec::hmulti_audio as hm;
use spec::virtio_snd::{PcmFormat, PcmRate};
use spec::BitSet;

// The maps between hmulti's bits and virtio's values are the spec's facts, not tables of
// their own: a rate is its frequency (`hz`), a format its encoding and sample size.

/// The `B_SR_*` bit of a virtio rate: the hmulti rate of the same frequency (5512 Hz has
/// none).
pub fn rate_bit(r: PcmRate) -> Option<u32> {
    hm::SAMPLE_RATE
        .iter()
        .find(|c| c.hz == Some(r.hz()))
        .map(|c| c.value)
}

/// The virtio rate for exactly one `B_SR_*` bit: the one of the same frequency.
pub fn rate_of(bit: u32) -> Option<PcmRate> {
    let hz = hm::SAMPLE_RATE.iter().find(|c| c.value == bit)?.hz?;
    PcmRate::from_hz(hz)
}

/// The virtio format for exactly one `B_FMT_*` bit: the one that carries its samples bit for
/// bit. An hmulti sample narrower than its container is MSB-aligned in it (18, 20 and 24-bit
/// audio fill a 32-bit word, low bits zero), so the carrier is the virtio format of the same
/// encoding whose sample fills a container of that size (S32, not the right-adjusted S24).
pub fn format_of(bit: u32) -> Option<PcmFormat> {
    let h = hm::SAMPLE_FORMAT
        .iter()
        .find(|c| c.value == bit && !c.composite)?;
    let (encoding, container) = (h.encoding?, h.phys_width?);
    PcmFormat::ALL.iter().copied().find(|f| {
        f.encoding() == Some(encoding) && f.width() == container && f.phys_width() == container
    })
}

/// The `B_SR_*` mask of a virtio rate set, optionally capped at `max_hz`.
pub fn rate_bits(virtio_rates: BitSet<PcmRate>, max_hz: Option<u32>) -> u32 {
    virtio_rates
        .iter()
        .filter(|r| max_hz.is_none_or(|m| r.hz() <= m))
        .filter_map(rate_bit)
        .fold(0, |acc, b| acc | b)
}

/// The `B_FMT_*` mask of a virtio format set: every hmulti format one of them carries.
pub fn format_bits(virtio_formats: BitSet<PcmFormat>) -> u32 {
    hm::SAMPLE_FORMAT
        .iter()
        .filter(|c| format_of(c.value).is_some_and(|f| virtio_formats.contains(f)))
        .fold(0, |acc, c| acc | c.value)
}

/// A rate and a format a direction runs at: the hmulti bits the client chose and the virtio
/// values that carry them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The one `B_SR_*` bit.
    pub rate_bit: u32,
    /// The one `B_FMT_*` bit.
    pub format_bit: u32,
    pub rate: PcmRate,
    pub format: PcmFormat,
}

impl Choice {
    /// The choice of one `B_SR_*` and one `B_FMT_*` bit, if virtio carries both.
    pub fn new(rate_bit: u32, format_bit: u32) -> Option<Choice> {
        Some(Choice {
            rate_bit,
            format_bit,
            rate: rate_of(rate_bit)?,
            format: format_of(format_bit)?,
        })
    }

    /// Frames per second.
    pub fn hz(&self) -> u32 {
        self.rate.hz()
    }
}

/// What the media add-on would choose from a mask: the highest rate.
pub fn best_rate(bits: u32) -> Option<u32> {
    (0..32)
        .rev()
        .map(|i| 1u32 << i)
        .find(|b| bits & b != 0 && rate_of(*b).is_some())
}

/// What the media add-on would choose: 32 > 24 > 20 > 18 > 16 > 8-bit signed > 8-bit
/// unsigned, then float and double, which it cannot pick itself but a user may.
pub fn best_format(bits: u32) -> Option<u32> {
    [
        hm::B_FMT_32BIT,
        hm::B_FMT_24BIT,
        hm::B_FMT_20BIT,
        hm::B_FMT_18BIT,
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
    f.phys_width().div_ceil(8)
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

    /// Hz -> `B_SR_*` bit as hmulti_audio.h names them, written out here so that the map
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

    /// `B_FMT_*` -> the virtio format carrying it: the media kit hands 18/20/24-bit audio
    /// left-adjusted in a 32-bit word (hmulti_audio.h), which is virtio S32, while virtio's
    /// S24 follows ALSA's S24_LE (right-adjusted); formats with no virtio carrier are absent.
    const CARRIERS: [(u32, PcmFormat); 9] = [
        (hm::B_FMT_8BIT_S, PcmFormat::S8),
        (hm::B_FMT_8BIT_U, PcmFormat::U8),
        (hm::B_FMT_16BIT, PcmFormat::S16),
        (hm::B_FMT_18BIT, PcmFormat::S32),
        (hm::B_FMT_20BIT, PcmFormat::S32),
        (hm::B_FMT_24BIT, PcmFormat::S32),
        (hm::B_FMT_32BIT, PcmFormat::S32),
        (hm::B_FMT_FLOAT, PcmFormat::Float),
        (hm::B_FMT_DOUBLE, PcmFormat::Float64),
    ];

    #[test]
    fn every_rate_with_a_bit_maps_back() {
        // Every virtio rate of the spec with the bit of its frequency, both ways.
        for &r in PcmRate::ALL {
            let hz = r.hz();
            let bit = BY_HZ.iter().find(|(h, _)| *h == hz).map(|(_, b)| *b);
            assert_eq!(rate_bits(r.into(), None), bit.unwrap_or(0), "{hz} Hz");
            assert_eq!(rate_bit(r), bit, "{hz} Hz");
            if let Some(b) = bit {
                assert_eq!(rate_of(b), Some(r), "{hz} Hz");
            }
        }
        assert_eq!(
            rate_bits(PcmRate::Rate5512.into(), None),
            0,
            "5512 Hz has no B_SR bit"
        );
        assert_eq!(rate_of(hm::B_SR_CVSR), None, "no fixed rate");
        assert_eq!(rate_of(hm::B_SR_8000 | hm::B_SR_48000), None, "not one bit");
        assert_eq!(
            rate_bits(BitSet::from_bits(u64::MAX), Some(48000)) & hm::B_SR_96000,
            0
        );
        assert_eq!(
            rate_bits(BitSet::from_bits(u64::MAX), None),
            BY_HZ.iter().fold(0, |a, (_, b)| a | b),
            "unknown rate bits add nothing"
        );
        assert_eq!(
            best_rate(hm::B_SR_44100 | hm::B_SR_384000),
            Some(hm::B_SR_384000)
        );
    }

    #[test]
    fn formats() {
        for c in hm::SAMPLE_FORMAT {
            let want = CARRIERS
                .iter()
                .find(|(b, _)| *b == c.value)
                .map(|(_, f)| *f);
            assert_eq!(format_of(c.value), want, "{}", c.name);
        }
        for &f in PcmFormat::ALL {
            let want = CARRIERS
                .iter()
                .filter(|(_, v)| *v == f)
                .fold(0, |a, (b, _)| a | b);
            assert_eq!(format_bits(f.into()), want, "{f:?}");
        }
        assert_eq!(
            format_bits(PcmFormat::S24.into()),
            0,
            "right-adjusted S24 is not offered"
        );
        assert_eq!(
            best_format(hm::B_FMT_16BIT | hm::B_FMT_FLOAT),
            Some(hm::B_FMT_16BIT)
        );
        assert_eq!(
            best_format(format_bits(PcmFormat::S32.into())),
            Some(hm::B_FMT_32BIT)
        );
        assert_eq!(sample_bytes(PcmFormat::Float64), 8);
        assert_eq!(default_frames(48000), 480);
        assert_eq!(default_frames(44100), 448);
        assert_eq!(default_frames(384000), 3840);
    }
}
