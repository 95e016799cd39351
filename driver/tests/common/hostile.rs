//! Hostile device descriptions and what a correct driver publishes for them. Every
//! expectation comes from the tables below, written out from the virtio spec (5.14.6.6,
//! 5.14.6.10) and hmulti_audio.h, never from the driver's own functions. Shared by the
//! driver crate's tests and those of the built add-on.
#![allow(dead_code)]

use hmulti_client::{self as client, Hmulti};
use proptest::prelude::*;
use snd_model::StreamConfig;
use snd_model::{ControlConfig, CtlRange};
use spec::hmulti_audio as hm;
use spec::virtio_snd::{CtlType, CtlValue, VIRTIO_SND_CTL_ROLE_VOLUME};

/// Most channels a card publishes per direction (the media add-on's arrays hold 32 in all).
pub const MAX_CHANNELS: u8 = 16;

/// virtio rate number -> `B_SR_*` bit. 5512 Hz (0) has no bit; 16 and up are not rates.
pub const RATE_BITS: [(u8, u32); 15] = [
    (1, hm::B_SR_8000),
    (2, hm::B_SR_11025),
    (3, hm::B_SR_16000),
    (4, hm::B_SR_22050),
    (5, hm::B_SR_32000),
    (6, hm::B_SR_44100),
    (7, hm::B_SR_48000),
    (8, hm::B_SR_64000),
    (9, hm::B_SR_88200),
    (10, hm::B_SR_96000),
    (11, hm::B_SR_176400),
    (12, hm::B_SR_192000),
    (13, hm::B_SR_384000),
    (14, hm::B_SR_12000),
    (15, hm::B_SR_24000),
];

/// virtio format number -> `B_FMT_*` bits: S8, U8, S16, S32 (hmulti's 18, 20 and 24-bit
/// samples are left-adjusted in a 32-bit word, so S32 carries them too), FLOAT, FLOAT64. Every other format (0..=24) has no hmulti bit; 25 and up
/// are not formats.
pub const FORMAT_BITS: [(u8, u32); 6] = [
    (3, hm::B_FMT_8BIT_S),
    (4, hm::B_FMT_8BIT_U),
    (5, hm::B_FMT_16BIT),
    (
        17,
        hm::B_FMT_18BIT | hm::B_FMT_20BIT | hm::B_FMT_24BIT | hm::B_FMT_32BIT,
    ),
    (19, hm::B_FMT_FLOAT),
    (20, hm::B_FMT_DOUBLE),
];

/// Rate bits the spec defines (0..=15) and format bits (0..=24).
pub const KNOWN_RATES: u64 = 0xffff;
pub const KNOWN_FORMATS: u64 = (1 << 25) - 1;

/// One stream as PCM_INFO describes it, any byte and mask allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    pub direction: u8,
    pub min: u8,
    pub max: u8,
    pub rates: u64,
    pub formats: u64,
}

/// What a card publishes for a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub channels: i32,
    pub rates: u32,
    pub formats: u32,
}

impl Stream {
    /// A stream that is fine: 48 kHz S16, `min..=max` channels.
    pub fn good(direction: u8, min: u8, max: u8) -> Stream {
        Stream {
            direction,
            min,
            max,
            rates: 1 << 7,
            formats: 1 << 5,
        }
    }

    /// The model's description of it (a direction other than 0 or 1 is advertised as such
    /// over an output stream).
    pub fn config(&self) -> StreamConfig {
        let base = if self.direction == 1 {
            StreamConfig::input()
        } else {
            StreamConfig::output()
        };
        let mut s = base.with_channels(self.min, self.max);
        s.rates = self.rates;
        s.formats = self.formats;
        if self.direction > 1 {
            s = s.with_advertised_direction(self.direction);
        }
        s
    }

    /// What a card publishes, or a word the log line that skips the stream must contain.
    /// The checks run in this order: direction, channel range, rates, formats.
    pub fn expected(&self) -> Result<Published, &'static str> {
        if self.direction > 1 {
            return Err("direction");
        }
        if self.min > self.max || self.max == 0 {
            return Err("channels_max");
        }
        let lo = self.min.max(1);
        if lo > MAX_CHANNELS {
            return Err("channels");
        }
        let hi = self.max.min(MAX_CHANNELS);
        let rates = RATE_BITS
            .iter()
            .filter(|(n, _)| self.rates & (1 << n) != 0)
            .fold(0, |m, (_, b)| m | b);
        if rates == 0 {
            return Err("rate");
        }
        let formats = FORMAT_BITS
            .iter()
            .filter(|(n, _)| self.formats & (1 << n) != 0)
            .fold(0, |m, (_, b)| m | b);
        if formats == 0 {
            return Err("format");
        }
        // Stereo if the stream takes it, else the nearest count it takes.
        Ok(Published {
            channels: i32::from(2u8.max(lo).min(hi)),
            rates,
            formats,
        })
    }
}

/// The cards a device with `streams` gets: card n pairs the n-th publishable output with
/// the n-th publishable input (by stream id).
pub fn cards(streams: &[Stream]) -> Vec<(Option<u32>, Option<u32>)> {
    let ids = |dir: u8| -> Vec<u32> {
        streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.direction == dir && s.expected().is_ok())
            .map(|(i, _)| i as u32)
            .collect()
    };
    let (outs, ins) = (ids(0), ids(1));
    (0..outs.len().max(ins.len()))
        .map(|i| (outs.get(i).copied(), ins.get(i).copied()))
        .collect()
}

/// Checks the log for a device with `streams`: one line naming each stream that is not
/// published, with its reason, and none for the others. `lines` are the kernel's log lines.
pub fn check_stream_log(streams: &[Stream], lines: &[String]) -> Result<(), String> {
    for (i, s) in streams.iter().enumerate() {
        let tag = format!("stream {i}: ");
        let named: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(&tag) && l.contains("not published"))
            .collect();
        match s.expected() {
            Ok(_) if named.is_empty() => {}
            Ok(_) => return Err(format!("stream {i} ({s:?}) is publishable: {named:?}")),
            Err(word) if named.len() == 1 && named[0].contains(word) => {}
            Err(word) => {
                return Err(format!(
                    "stream {i} ({s:?}): one line with {word:?} expected, got {named:?}"
                ))
            }
        }
    }
    Ok(())
}

/// Masks: empty, all bits, only bits the spec defines, only bits it does not.
fn mask(known: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0u64),
        1 => Just(u64::MAX),
        4 => any::<u64>().prop_map(move |m| m & known),
        1 => any::<u64>().prop_map(move |m| m & !known),
        1 => any::<u64>(),
    ]
}

/// Channel counts around every edge: 0, 1, 2, 16, 17, 255 and anything.
fn count() -> impl Strategy<Value = u8> {
    prop_oneof![
        2 => Just(0u8),
        2 => Just(1u8),
        2 => Just(2u8),
        2 => 3u8..=15,
        2 => Just(16u8),
        2 => Just(17u8),
        1 => Just(255u8),
        2 => any::<u8>(),
    ]
}

pub fn stream() -> impl Strategy<Value = Stream> {
    let direction = prop_oneof![4 => 0u8..=1, 1 => 2u8..=255];
    (
        direction,
        count(),
        count(),
        mask(KNOWN_RATES),
        mask(KNOWN_FORMATS),
    )
        .prop_map(|(direction, min, max, rates, formats)| Stream {
            direction,
            min,
            max,
            rates,
            formats,
        })
}

/// The corners every run covers, besides the random ones.
pub fn corner_streams() -> Vec<Vec<Stream>> {
    let s = Stream::good;
    let with = |mut st: Stream, f: &dyn Fn(&mut Stream)| {
        f(&mut st);
        st
    };
    vec![
        // The measured panic: 40 channels (and 255) at open.
        vec![s(0, 40, 40), s(1, 40, 40)],
        vec![s(0, 255, 255), s(1, 255, 255)],
        vec![s(0, 17, 255), s(0, 16, 255), s(1, 0, 255)],
        vec![s(0, 2, 1), s(0, 0, 0), s(0, 1, 2)],
        vec![s(2, 1, 2), s(255, 1, 2), s(1, 1, 2)],
        vec![
            with(s(0, 1, 2), &|x| x.rates = 0),
            with(s(0, 1, 2), &|x| x.rates = 1),
            with(s(0, 1, 2), &|x| x.rates = !KNOWN_RATES),
            with(s(1, 1, 2), &|x| x.formats = 0),
            with(s(1, 1, 2), &|x| x.formats = 1 << 15),
            with(s(1, 1, 2), &|x| x.formats = !KNOWN_FORMATS),
            with(s(0, 1, 2), &|x| x.rates = u64::MAX),
            with(s(1, 1, 2), &|x| x.formats = u64::MAX),
        ],
    ]
}

/// A dB scale in ALSA's TLV encoding (which virtio carries), in hundredths of a dB: the
/// raw value `min` is `min_db`, and each raw step adds `step` (DB_SCALE), or the raw range
/// spans `min_db..=max_db` (DB_MINMAX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Scale { min_db: i32, step: u16 },
    MinMax { min_db: i32, max_db: i32 },
}

impl Db {
    /// (TLV type, value bytes).
    fn tlv(self) -> (u32, Vec<u8>) {
        let (ty, words) = match self {
            Db::Scale { min_db, step } => (1, [min_db as u32, u32::from(step)]),
            Db::MinMax { min_db, max_db } => (4, [min_db as u32, max_db as u32]),
        };
        (ty, words.iter().flat_map(|w| w.to_le_bytes()).collect())
    }

    /// (dB at raw `min`, dB per raw step) for a raw range `min..=max`.
    fn scale(self, min: i32, max: i32) -> (f64, f64) {
        let steps = (f64::from(max) - f64::from(min)).max(1.0);
        match self {
            Db::Scale { min_db, step } => (f64::from(min_db) / 100.0, f64::from(step) / 100.0),
            Db::MinMax { min_db, max_db } => (
                f64::from(min_db) / 100.0,
                (f64::from(max_db) - f64::from(min_db)) / 100.0 / steps,
            ),
        }
    }
}

/// A control element as CTL_INFO describes it, any range allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    pub kind: CtlType,
    pub count: u32,
    pub min: i32,
    pub max: i32,
    pub step: i32,
    pub items: usize,
    /// A TLV dB scale (INTEGER elements).
    pub db: Option<Db>,
}

/// What the mixer offers for a control.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Offered {
    /// `n` GAIN controls over `min..=max` (raw units, or dB with a scale), `step` apart.
    Gains {
        n: usize,
        min: f64,
        max: f64,
        step: f64,
    },
    Enable,
    /// A MUX with this many items.
    Mux(usize),
}

impl Control {
    pub fn name(i: usize) -> String {
        format!("Hostile {i}")
    }

    /// The model's description: an output volume (or switch, or selector), every member at
    /// `min` (a value the device holds is in its own range when the range is not empty).
    pub fn config(&self, i: usize) -> ControlConfig {
        let role = VIRTIO_SND_CTL_ROLE_VOLUME << 1;
        let name = Self::name(i);
        let mut c = match self.kind {
            CtlType::Boolean => ControlConfig::boolean(&name, role, self.count, false),
            CtlType::Enumerated => {
                let items: Vec<String> = (0..self.items).map(|k| format!("Item {k}")).collect();
                let refs: Vec<&str> = items.iter().map(String::as_str).collect();
                ControlConfig::enumerated(&name, &refs, 0)
            }
            CtlType::Integer64 => ControlConfig::integer64(
                &name,
                self.count,
                self.min.into(),
                self.max.into(),
                self.min.into(),
            ),
            _ => {
                let mut c =
                    ControlConfig::integer(&name, role, self.count, self.min, self.max, self.min);
                c.range = CtlRange::Integer {
                    min: self.min,
                    max: self.max,
                    step: self.step,
                };
                match self.db {
                    Some(db) => {
                        let (ty, value) = db.tlv();
                        c.with_tlv(ty, &value)
                    }
                    None => c,
                }
            }
        };
        c.role = role;
        c.count = self.count;
        c
    }

    /// What the mixer offers, or a word the log line that skips it must contain. Checked in
    /// this order: type, count, range, step, items.
    pub fn expected(&self) -> Result<Offered, &'static str> {
        match self.kind {
            CtlType::Boolean | CtlType::Integer | CtlType::Enumerated => {}
            _ => return Err("Integer64"),
        }
        if self.count == 0 {
            return Err("count is 0");
        }
        match self.kind {
            CtlType::Integer if self.min > self.max => Err("above max"),
            CtlType::Integer if self.step < 0 => Err("negative"),
            CtlType::Integer => {
                // 0 means any value in between: a granularity of 1.
                let (step, span) = (
                    f64::from(self.step.max(1)),
                    f64::from(self.max) - f64::from(self.min),
                );
                Ok(match self.db.map(|db| db.scale(self.min, self.max)) {
                    None => Offered::Gains {
                        n: self.count.min(8) as usize,
                        min: self.min.into(),
                        max: self.max.into(),
                        step,
                    },
                    Some((db0, per)) => Offered::Gains {
                        n: self.count.min(8) as usize,
                        min: db0,
                        max: db0 + span * per,
                        step: per * step,
                    },
                })
            }
            CtlType::Enumerated if self.items == 0 => Err("item"),
            CtlType::Enumerated => Ok(Offered::Mux(self.items)),
            _ => Ok(Offered::Enable),
        }
    }

    /// Whether `v` is a value of the element (in range, on the grid `min + k * step`).
    pub fn holds(&self, v: i32) -> bool {
        let (v, min, max, step) = (
            i64::from(v),
            i64::from(self.min),
            i64::from(self.max),
            i64::from(self.step),
        );
        (min..=max).contains(&v) && (step <= 0 || (v - min) % step == 0)
    }
}

/// Range bounds around every edge.
fn bound() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(i32::MIN),
        Just(i32::MIN + 1),
        Just(-1),
        Just(0),
        Just(1),
        Just(100),
        Just(i32::MAX - 1),
        Just(i32::MAX),
        any::<i32>(),
        -1000i32..1000,
    ]
}

pub fn control() -> impl Strategy<Value = Control> {
    let kind = prop_oneof![
        6 => Just(CtlType::Integer),
        1 => Just(CtlType::Boolean),
        1 => Just(CtlType::Enumerated),
        1 => Just(CtlType::Integer64),
    ];
    let count = prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(8),
        Just(9),
        Just(128),
        0u32..200
    ];
    let step = prop_oneof![
        Just(0),
        Just(1),
        Just(-1),
        Just(i32::MIN),
        Just(i32::MAX),
        1i32..1000,
        any::<i32>()
    ];
    let db = prop_oneof![
        2 => Just(None),
        1 => (bound(), any::<u16>()).prop_map(|(min_db, step)| Some(Db::Scale { min_db, step })),
        1 => (bound(), bound()).prop_map(|(min_db, max_db)| Some(Db::MinMax { min_db, max_db })),
    ];
    (kind, count, bound(), bound(), step, 0usize..4, db).prop_map(
        |(kind, count, min, max, step, items, db)| Control {
            kind,
            count,
            min,
            max,
            step,
            items,
            db,
        },
    )
}

/// The model's default device (QEMU's two streams) offering `controls`.
pub fn device_with(controls: &[Control]) -> snd_model::ModelConfig {
    snd_model::ModelConfig {
        controls: controls
            .iter()
            .enumerate()
            .map(|(i, c)| c.config(i))
            .collect(),
        offer_ctls: true,
        ..snd_model::ModelConfig::default()
    }
}

/// The corners every run covers.
pub fn corner_controls() -> Vec<Control> {
    let int = |count, min, max, step| Control {
        kind: CtlType::Integer,
        count,
        min,
        max,
        step,
        items: 0,
        db: None,
    };
    let with_db = |c: Control, db| Control { db: Some(db), ..c };
    let (lo, hi) = (i32::MIN, i32::MAX);
    vec![
        int(2, 10, -10, 1),
        int(2, lo, hi, 0),
        // The widest raw range under the widest dB range, both ways up.
        with_db(
            int(2, lo, hi, 0),
            Db::MinMax {
                min_db: lo,
                max_db: hi,
            },
        ),
        with_db(
            int(1, lo, hi, 1),
            Db::MinMax {
                min_db: hi,
                max_db: lo,
            },
        ),
        with_db(
            int(1, lo, hi, 7),
            Db::Scale {
                min_db: lo,
                step: u16::MAX,
            },
        ),
        with_db(
            int(1, 0, 0, 0),
            Db::MinMax {
                min_db: 0,
                max_db: 0,
            },
        ),
        int(1, lo, hi, hi),
        int(1, hi, hi, 1),
        int(1, lo, lo, 0),
        int(1, 0, 100, -5),
        int(1, 0, 100, lo),
        int(0, 0, 100, 1),
        int(200, -5, 5, 3),
        Control {
            kind: CtlType::Enumerated,
            items: 0,
            ..int(1, 0, 0, 0)
        },
        Control {
            kind: CtlType::Boolean,
            ..int(0, 0, 1, 1)
        },
        Control {
            kind: CtlType::Integer64,
            ..int(1, lo, hi, 1)
        },
    ]
}

/// `got` (f32 arithmetic) is `want` (f64) to f32's precision on numbers of `size`.
fn near(got: f32, want: f64, size: f64) -> bool {
    (f64::from(got) - want).abs() <= 1e-5 * size.abs().max(1.0)
}

/// The controls a list holds for control `i`, by its name.
fn named(list: &[hm::MultiMixControl], i: usize) -> Vec<&hm::MultiMixControl> {
    let name = Control::name(i);
    list.iter()
        .filter(|c| {
            let end = c.name.iter().position(|&b| b == 0).unwrap_or(c.name.len());
            c.name[..end] == *name.as_bytes()
        })
        .collect()
}

/// Checks what LIST_MIX_CONTROLS gave against `controls`, and the log for the skipped ones.
pub fn check_mix_list(
    controls: &[Control],
    list: &[hm::MultiMixControl],
    lines: &[String],
) -> Result<(), String> {
    for (i, c) in controls.iter().enumerate() {
        let got = named(list, i);
        let tag = format!("control {i} ({}): ", Control::name(i));
        let logged: Vec<&String> = lines.iter().filter(|l| l.contains(&tag)).collect();
        match c.expected() {
            Err(word) => {
                if !got.is_empty() || logged.len() != 1 || !logged[0].contains(word) {
                    return Err(format!(
                        "{c:?} must be skipped with one line saying {word:?}: offered \
                         {got:?}, logged {logged:?}"
                    ));
                }
            }
            Ok(want) => {
                if !logged.is_empty() {
                    return Err(format!("{c:?} is offered, yet logged {logged:?}"));
                }
                let ok = match want {
                    Offered::Gains { n, min, max, step } => {
                        got.len() == n
                            && got.iter().all(|g| {
                                let u = g.u.gain();
                                // The top is a sum: f32 loses what is small next to its
                                // terms.
                                let terms = min.abs().max((max - min).abs());
                                g.flags == hm::B_MULTI_MIX_GAIN
                                    && near(u.min_gain, min, min)
                                    && near(u.max_gain, max, terms)
                                    && near(u.granularity, step, step)
                            })
                    }
                    Offered::Enable => got.len() == 1 && got[0].flags == hm::B_MULTI_MIX_ENABLE,
                    Offered::Mux(items) => {
                        got.len() == 1
                            && got[0].flags == hm::B_MULTI_MIX_MUX
                            && list.iter().filter(|x| x.parent == got[0].id).count() == items
                    }
                };
                if !ok {
                    return Err(format!("{c:?}: expected {want:?}, offered {got:?}"));
                }
            }
        }
    }
    Ok(())
}

/// SET_MIX of one GAIN control to `gain`; the status.
pub fn set_gain<D: Hmulti + ?Sized>(d: &D, id: i32, gain: f32) -> i32 {
    let mut v: hm::MultiMixValue = zerocopy::FromZeros::new_zeroed();
    v.id = id;
    v.u.set_gain(&gain);
    let addr = d.user_alloc(core::mem::size_of::<hm::MultiMixValue>());
    d.user_write(addr, zerocopy::IntoBytes::as_bytes(&v));
    let mut info: hm::MultiMixValueInfo = zerocopy::FromZeros::new_zeroed();
    info.item_count = 1;
    info.values = spec::UserPtr::from_addr(addr);
    let r = client::ioctl(d, hm::B_MULTI_SET_MIX, &mut info);
    d.user_free(addr);
    r
}

/// Drives every offered gain of `controls` to the ends of f32 and its own bounds: each
/// SET_MIX succeeds and leaves a value of the element (`value(i)` reads control i's raw
/// members from the device).
pub fn drive_gains<D: Hmulti + ?Sized>(
    d: &D,
    controls: &[Control],
    list: &[hm::MultiMixControl],
    value: impl Fn(u32) -> Option<CtlValue>,
) -> Result<(), String> {
    for (i, c) in controls.iter().enumerate() {
        if !matches!(c.expected(), Ok(Offered::Gains { .. })) {
            continue;
        }
        for (ch, g) in named(list, i).iter().enumerate() {
            for gain in [
                f32::MAX,
                -f32::MAX,
                0.0,
                c.min as f32,
                c.max as f32,
                c.min as f32 + c.step.max(1) as f32 * 1.5,
            ] {
                let r = set_gain(d, g.id, gain);
                if r != 0 {
                    return Err(format!("{c:?}: SET_MIX of {gain} answered {r:#x}"));
                }
                let raw = value(i as u32).ok_or("no value")?.value.integer()[ch].get() as i32;
                if !c.holds(raw) {
                    return Err(format!("{c:?}: gain {gain} wrote {raw}"));
                }
            }
        }
    }
    Ok(())
}
