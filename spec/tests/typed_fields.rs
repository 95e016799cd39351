//! The typed view of enum- and mask-typed fields and the per-value facts, checked against
//! tables written out here from the virtio spec (5.14.6.6: formats and rates) and
//! hmulti_audio.h, not from the generated code.

use spec::hmulti_audio as hm;
use spec::virtio_snd::*;
use spec::{BitSet, SampleEncoding, UnknownValue};
use zerocopy::little_endian::{U32 as Le32, U64 as Le64};

/// `VIRTIO_SND_PCM_RATE_*` number -> frames per second.
const RATES: [(u8, u32); 16] = [
    (0, 5512),
    (1, 8000),
    (2, 11025),
    (3, 16000),
    (4, 22050),
    (5, 32000),
    (6, 44100),
    (7, 48000),
    (8, 64000),
    (9, 88200),
    (10, 96000),
    (11, 176400),
    (12, 192000),
    (13, 384000),
    (14, 12000),
    (15, 24000),
];

/// `VIRTIO_SND_PCM_FMT_*` number -> (significant bits, container bits, linear encoding).
const FORMATS: [(u8, u32, u32, Option<SampleEncoding>); 25] = {
    use SampleEncoding::{Float, Signed, Unsigned};
    [
        (0, 4, 4, None), // IMA ADPCM
        (1, 8, 8, None), // mu-law
        (2, 8, 8, None), // A-law
        (3, 8, 8, Some(Signed)),
        (4, 8, 8, Some(Unsigned)),
        (5, 16, 16, Some(Signed)),
        (6, 16, 16, Some(Unsigned)),
        (7, 18, 24, Some(Signed)),
        (8, 18, 24, Some(Unsigned)),
        (9, 20, 24, Some(Signed)),
        (10, 20, 24, Some(Unsigned)),
        (11, 24, 24, Some(Signed)),
        (12, 24, 24, Some(Unsigned)),
        (13, 20, 32, Some(Signed)),
        (14, 20, 32, Some(Unsigned)),
        (15, 24, 32, Some(Signed)),
        (16, 24, 32, Some(Unsigned)),
        (17, 32, 32, Some(Signed)),
        (18, 32, 32, Some(Unsigned)),
        (19, 32, 32, Some(Float)),
        (20, 64, 64, Some(Float)),
        (21, 8, 8, None),   // DSD_U8
        (22, 16, 16, None), // DSD_U16
        (23, 32, 32, None), // DSD_U32
        (24, 32, 32, None), // IEC958 subframe
    ]
};

#[test]
fn every_rate_has_its_frequency() {
    assert_eq!(PcmRate::ALL.len(), RATES.len());
    for (raw, hz) in RATES {
        let r = PcmRate::from_raw(raw).unwrap();
        // `hz()` is total: every rate of the spec has one.
        let got: u32 = r.hz();
        assert_eq!(got, hz, "rate {raw}");
        assert_eq!(PcmRate::from_hz(hz), Some(r));
    }
    assert_eq!(PcmRate::from_hz(44_000), None);
}

#[test]
fn every_format_has_its_size_and_linear_ones_their_encoding() {
    assert_eq!(PcmFormat::ALL.len(), FORMATS.len());
    for (raw, width, phys, encoding) in FORMATS {
        let f = PcmFormat::from_raw(raw).unwrap();
        let (w, p): (u32, u32) = (f.width(), f.phys_width());
        assert_eq!((w, p, f.encoding()), (width, phys, encoding), "{f:?}");
    }
}

#[test]
fn hmulti_facts_stay_partial_where_values_lack_them() {
    let rate = |v: u32| hm::SAMPLE_RATE.iter().find(|c| c.value == v).unwrap();
    assert_eq!(rate(hm::B_SR_44100).hz, Some(44_100));
    assert_eq!(
        rate(hm::B_SR_CVSR).hz,
        None,
        "a variable rate has no frequency"
    );
    let format = |v: u32| hm::SAMPLE_FORMAT.iter().find(|c| c.value == v).unwrap();
    let f24 = format(hm::B_FMT_24BIT);
    assert_eq!(
        (f24.width, f24.phys_width, f24.encoding),
        (Some(24), Some(32), Some(SampleEncoding::Signed))
    );
    assert_eq!(
        format(hm::B_FMT_8BIT_U).encoding,
        Some(SampleEncoding::Unsigned)
    );
    assert_eq!(
        format(hm::B_FMT_DOUBLE).encoding,
        Some(SampleEncoding::Float)
    );
    assert_eq!(format(hm::B_FMT_BITSTREAM).encoding, None);
}

#[test]
fn enum_fields_read_as_their_enum() {
    let mut info = PcmInfo {
        direction: 1, // VIRTIO_SND_D_INPUT
        ..Default::default()
    };
    assert_eq!(info.direction(), Ok(Direction::Input));
    info.direction = 0;
    assert_eq!(info.direction(), Ok(Direction::Output));
    info.direction = 7;
    assert_eq!(
        info.direction(),
        Err(UnknownValue {
            group: "direction",
            value: 7
        })
    );

    let p = PcmSetParams {
        format: 5, // S16
        rate: 7,   // 48000
        ..Default::default()
    };
    assert_eq!(
        (p.format(), p.rate()),
        (Ok(PcmFormat::S16), Ok(PcmRate::Rate48000))
    );

    // An array of positions reads element by element (FL = 3, FR = 4, 200 unknown).
    let mut map = ChmapInfo::default();
    map.positions[..3].copy_from_slice(&[3, 4, 200]);
    let pos = map.positions();
    assert_eq!(pos[0], Ok(ChmapPosition::FrontLeft));
    assert_eq!(pos[1], Ok(ChmapPosition::FrontRight));
    assert!(pos[2].is_err());

    // A little-endian field (VIRTIO_SND_CTL_TYPE_INTEGER = 1).
    let ctl = CtlInfo {
        r#type: Le32::new(1),
        ..Default::default()
    };
    assert_eq!(ctl.r#type(), Ok(CtlType::Integer));

    // hmulti: B_MULTI_INPUT_CHANNEL = 2.
    let ch = hm::MultiChannelInfo {
        kind: 2,
        ..Default::default()
    };
    assert_eq!(ch.kind(), Ok(hm::ChannelKind::InputChannel));
}

#[test]
fn bit_masks_read_as_sets_keeping_unknown_bits() {
    // S16 (5) and FLOAT (19), and bit 40, which no format has.
    let raw = (1u64 << 5) | (1 << 19) | (1 << 40);
    let info = PcmInfo {
        formats: Le64::new(raw),
        rates: Le64::new(1 << 7),
        ..Default::default()
    };
    let formats = info.formats();
    assert_eq!(
        formats.iter().collect::<Vec<_>>(),
        [PcmFormat::S16, PcmFormat::Float]
    );
    assert!(formats.contains(PcmFormat::S16));
    assert!(!formats.contains(PcmFormat::S8));
    assert_eq!(formats.unknown_bits(), 1 << 40);
    assert_eq!(formats.bits(), raw, "unknown bits are kept");
    assert_eq!(
        [PcmFormat::S16, PcmFormat::Float]
            .into_iter()
            .collect::<BitSet<PcmFormat>>()
            .bits(),
        raw & !(1 << 40)
    );
    assert_eq!(
        info.rates().iter().collect::<Vec<_>>(),
        [PcmRate::Rate48000]
    );
    assert_eq!(
        format!("{formats:?}"),
        "{S16, Float, unknown 0x10000000000}"
    );
    assert!(BitSet::<PcmRate>::EMPTY.is_empty());
}

#[test]
fn flag_masks_read_as_sets_keeping_unknown_bits() {
    // 0x100 is B_SR_48000, 0x1 B_SR_8000; 0x8000 is the bit hmulti leaves unused.
    let mut d = hm::MultiDescription::default();
    d.output_rates = 0x100 | 0x1 | 0x8000;
    let rates = d.output_rates();
    assert_eq!(
        rates.iter().map(|c| c.name).collect::<Vec<_>>(),
        ["B_SR_8000", "B_SR_48000"]
    );
    assert!(rates.contains(0x100));
    assert!(!rates.contains(0x2));
    assert!(!rates.contains(0), "the empty flag is in no set");
    assert_eq!(rates.unknown_bits(), 0x8000);
    assert_eq!(rates.bits(), 0x8101);
    assert_eq!(hm::SampleRateSet::EMPTY.with(0x100).bits(), 0x100);
}
