//! Mix controls: the device's control elements as the hmulti tree the media add-on turns into
//! a parameter web. INTEGER elements become GAIN controls (in dB when a TLV dB scale says how),
//! BOOLEAN ones ENABLE (shown as "Mute" for the MUTE role), ENUMERATED ones a MUX with one
//! MUX_VALUE child per item. Elements group under "Output" or "Input" by their direction; a
//! multi-channel element gives one control per channel, the later ones slaved to the first
//! through `master`, which is how the media add-on pairs stereo gains.
//!
//! CTL_INFO is the device's word: an element without members, with `min` above `max`, a
//! negative step, or no item names is left out with one log line ([`check`]); ranges are
//! computed in i64 (a range may span all of i32), and a value written is one of the
//! element's: in range, on its `min + k * step` grid.

use alloc::vec::Vec;

use spec::hmulti_audio as hm;
use spec::virtio_snd::{self as vs, CtlType, CtlValue};
use zerocopy::little_endian::U32 as Le32;

use crate::virtio::{Control, Engine};
use platform::sync::SpinLock;
use platform::{KResult, Kernel, LogLevel, Status, VirtioDevice};

/// Control ids start above every channel id.
const FIRST_ID: i32 = 1000;
/// Most values one GET_MIX/SET_MIX may carry.
pub const MAX_VALUES: i32 = 512;
/// The media add-on's array holds 128 controls.
const MAX_CONTROLS: usize = 128;

/// A TLV dB scale: the value `min_raw` is `min_db`, each step adds `step_db`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DbScale {
    pub min_raw: i32,
    pub min_db: f32,
    pub step_db: f32,
}

const TLV_CONTAINER: u32 = 0;
const TLV_DB_SCALE: u32 = 1;
const TLV_DB_MINMAX: u32 = 4;
const TLV_DB_MINMAX_MUTE: u32 = 5;

fn word(b: &[u8], i: usize) -> Option<u32> {
    let s = b.get(i * 4..i * 4 + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// `max - min` without overflow (the device's bounds span up to 2^32 - 1).
fn span(min: i32, max: i32) -> i64 {
    i64::from(max) - i64::from(min)
}

/// The value of `min..=max` on the grid `min + k * step` nearest to `raw` (`step` at least
/// 1; `min <= max`). Never overflows: the arithmetic is in i64, where 32-bit bounds fit.
fn snap(raw: i64, min: i32, max: i32, step: i32) -> i32 {
    let (lo, hi, step) = (i64::from(min), i64::from(max), i64::from(step.max(1)));
    let x = raw.min(hi).max(lo);
    let mut v = lo + (x - lo + step / 2) / step * step;
    if v > hi {
        v -= step;
    }
    // `v` is in lo..=hi, which are i32s.
    i32::try_from(v).unwrap_or(min)
}

/// The dB scale in a TLV blob (ALSA's encoding, which virtio carries), looking inside
/// containers. Values are in hundredths of a dB.
pub fn db_scale(tlv: &[u8], min_raw: i32, max_raw: i32) -> Option<DbScale> {
    let (ty, len) = (word(tlv, 0)?, word(tlv, 1)? as usize);
    let body = tlv.get(8..8usize.checked_add(len)?)?;
    match ty {
        TLV_DB_SCALE => {
            let min = word(body, 0)? as i32;
            let step = word(body, 1)? & 0xffff;
            Some(DbScale {
                min_raw,
                min_db: min as f32 / 100.0,
                step_db: step as f32 / 100.0,
            })
        }
        TLV_DB_MINMAX | TLV_DB_MINMAX_MUTE => {
            let (min, max) = (word(body, 0)? as i32, word(body, 1)? as i32);
            let steps = span(min_raw, max_raw).max(1) as f32;
            Some(DbScale {
                min_raw,
                min_db: min as f32 / 100.0,
                step_db: span(min, max) as f32 / 100.0 / steps,
            })
        }
        TLV_CONTAINER => {
            let mut off = 0;
            while off + 8 <= body.len() {
                let inner_len = word(&body[off..], 1)? as usize;
                let end = (off + 8).saturating_add(inner_len).min(body.len());
                if let Some(s) = db_scale(&body[off..end], min_raw, max_raw) {
                    return Some(s);
                }
                off = end.div_ceil(4) * 4;
            }
            None
        }
        _ => None,
    }
}

/// Elements without a role say their direction the ALSA way, in their name ("Capture
/// Source", "Master Playback Volume"); anything else is taken for output.
fn direction_from_name(name: &str) -> vs::Direction {
    let lower: alloc::string::String = name.chars().map(|c| c.to_ascii_lowercase()).collect();
    if ["capture", "input", "mic", "record"]
        .iter()
        .any(|w| lower.contains(w))
    {
        vs::Direction::Input
    } else {
        vs::Direction::Output
    }
}

fn round(x: f32) -> i64 {
    if x >= 0.0 {
        (x + 0.5) as i64
    } else {
        (x - 0.5) as i64
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Binding {
    /// Channel `channel` of INTEGER element `element`.
    Gain {
        element: u32,
        channel: usize,
        min: i32,
        max: i32,
        /// At least 1.
        step: i32,
        scale: Option<DbScale>,
    },
    Enable {
        element: u32,
    },
    Mux {
        element: u32,
    },
    /// Structure only (groups, mux items).
    None,
}

/// Why a control element is not offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `count` is 0: the element has no value to show.
    NoMembers,
    /// An INTEGER element whose `min` is above its `max`: no value is valid.
    Inverted { min: i32, max: i32 },
    /// An INTEGER element with a negative `step` (0 means any value; below 0 means nothing).
    NegativeStep(i32),
    /// An ENUMERATED element without item names.
    NoItems,
    /// A type hmulti has no control for (INTEGER64, BYTES, IEC958), or one the spec does
    /// not define.
    Type(u32),
}

impl Skip {
    /// How loud the log line is: a kind hmulti cannot show is a fact, the rest are device
    /// faults.
    fn level(self) -> LogLevel {
        match self {
            Skip::Type(t) if CtlType::from_raw(t).is_some() => LogLevel::Info,
            _ => LogLevel::Warn,
        }
    }
}

impl core::fmt::Display for Skip {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Skip::NoMembers => write!(f, "count is 0"),
            Skip::Inverted { min, max } => write!(f, "min {min} is above max {max}"),
            Skip::NegativeStep(step) => write!(f, "step {step} is negative"),
            Skip::NoItems => write!(f, "no item names"),
            Skip::Type(t) => match CtlType::from_raw(t) {
                Some(ty) => write!(f, "{ty:?} elements have no hmulti control"),
                None => write!(f, "type {t} is not one the spec defines"),
            },
        }
    }
}

/// Whether the mixer can offer `c` (its access and direction aside).
pub fn check(c: &Control) -> Result<(), Skip> {
    let raw_type = c.info.r#type.get();
    match c.kind() {
        Some(CtlType::Boolean | CtlType::Integer | CtlType::Enumerated) => {}
        _ => return Err(Skip::Type(raw_type)),
    }
    if c.info.count.get() == 0 {
        return Err(Skip::NoMembers);
    }
    match c.kind() {
        Some(CtlType::Integer) => {
            let iv = c.info.value.integer();
            let (min, max, step) = (
                iv.min.get() as i32,
                iv.max.get() as i32,
                iv.step.get() as i32,
            );
            if min > max {
                return Err(Skip::Inverted { min, max });
            }
            if step < 0 {
                return Err(Skip::NegativeStep(step));
            }
        }
        Some(CtlType::Enumerated) if c.items.is_empty() => return Err(Skip::NoItems),
        _ => {}
    }
    Ok(())
}

/// The tree of one card's controls and what each is bound to.
#[derive(Debug)]
pub struct Mixer {
    controls: Vec<hm::MultiMixControl>,
    bindings: Vec<Binding>,
    cache: SpinLock<Vec<Option<CtlValue>>>,
}

fn name48(s: &str) -> [u8; 48] {
    let mut out = [0u8; 48];
    for (o, b) in out.iter_mut().zip(s.bytes().take(47)) {
        *o = b;
    }
    out
}

impl Mixer {
    /// Builds the tree for the elements that belong to this card: those whose direction
    /// matches one of its streams' (elements without a role go with output).
    pub fn new<K: Kernel, V: VirtioDevice>(engine: &Engine<K, V>, streams: &[u32]) -> Self {
        let mut controls = Vec::new();
        let mut bindings = Vec::new();
        let dirs: Vec<vs::Direction> = streams
            .iter()
            .filter_map(|s| engine.stream(*s))
            .filter_map(|s| s.info.direction().ok())
            .collect();
        for (dir, string) in [
            (vs::Direction::Output, hm::S_OUTPUT),
            (vs::Direction::Input, hm::S_INPUT),
        ] {
            if !dirs.contains(&dir) {
                continue;
            }
            let group_id = FIRST_ID + controls.len() as i32;
            let mut group = hm::MultiMixControl {
                id: group_id,
                flags: hm::B_MULTI_MIX_GROUP,
                string,
                ..Default::default()
            };
            group.name = name48(match dir {
                vs::Direction::Output => "Output",
                vs::Direction::Input => "Input",
            });
            let group_at = controls.len();
            controls.push(group);
            bindings.push(Binding::None);
            for c in engine.controls() {
                let role = c.info.role.get();
                // Bit 0 of a role is its direction (a `Direction` value).
                let c_dir = if role == vs::VIRTIO_SND_CTL_ROLE_UNDEFINED {
                    Some(direction_from_name(&c.name))
                } else {
                    vs::Direction::from_raw(u8::from(role & 1 == 1))
                };
                let access = c.info.access();
                if c_dir != Some(dir)
                    || !access.contains(vs::CtlAccess::Read)
                    || !access.contains(vs::CtlAccess::Write)
                    || access.contains(vs::CtlAccess::Inactive)
                {
                    continue;
                }
                let is_mute = role >> 1 == vs::VIRTIO_SND_CTL_ROLE_MUTE;
                if let Err(why) = check(c) {
                    engine.kernel.log(
                        why.level(),
                        format_args!("control {} ({}): {why}; not offered", c.id, c.name),
                    );
                    continue;
                }
                let count = (c.info.count.get() as usize).clamp(1, 8);
                let next_id =
                    |controls: &Vec<hm::MultiMixControl>| FIRST_ID + controls.len() as i32;
                match c.kind() {
                    Some(CtlType::Integer) => {
                        let iv = c.info.value.integer();
                        let (min, max) = (iv.min.get() as i32, iv.max.get() as i32);
                        // 0 is "any value in between"; `check` refused a negative step.
                        let step = (iv.step.get() as i32).max(1);
                        let scale = c.tlv.as_deref().and_then(|t| db_scale(t, min, max));
                        let (lo, hi, gran) = match scale {
                            Some(s) => (
                                s.min_db,
                                s.min_db + span(min, max) as f32 * s.step_db,
                                s.step_db * step as f32,
                            ),
                            None => (min as f32, max as f32, step as f32),
                        };
                        let first = next_id(&controls);
                        for ch in 0..count {
                            let mut g = hm::MultiMixControl {
                                id: next_id(&controls),
                                flags: hm::B_MULTI_MIX_GAIN,
                                master: if ch == 0 { 0 } else { first },
                                parent: group_id,
                                ..Default::default()
                            };
                            g.u.set_gain(&hm::MultiMixControlGain {
                                min_gain: lo,
                                max_gain: hi,
                                granularity: gran,
                            });
                            g.name = name48(&c.name);
                            controls.push(g);
                            bindings.push(Binding::Gain {
                                element: c.id,
                                channel: ch,
                                min,
                                max,
                                step,
                                scale,
                            });
                        }
                    }
                    Some(CtlType::Boolean) => {
                        let e = hm::MultiMixControl {
                            id: next_id(&controls),
                            flags: hm::B_MULTI_MIX_ENABLE,
                            parent: group_id,
                            string: if is_mute { hm::S_MUTE } else { hm::S_null },
                            name: name48(&c.name),
                            ..Default::default()
                        };
                        controls.push(e);
                        bindings.push(Binding::Enable { element: c.id });
                    }
                    Some(CtlType::Enumerated) if !c.items.is_empty() => {
                        let mux_id = next_id(&controls);
                        controls.push(hm::MultiMixControl {
                            id: mux_id,
                            flags: hm::B_MULTI_MIX_MUX,
                            parent: group_id,
                            name: name48(&c.name),
                            ..Default::default()
                        });
                        bindings.push(Binding::Mux { element: c.id });
                        for item in &c.items {
                            controls.push(hm::MultiMixControl {
                                id: next_id(&controls),
                                flags: hm::B_MULTI_MIX_MUX_VALUE,
                                parent: mux_id,
                                name: name48(item),
                                ..Default::default()
                            });
                            bindings.push(Binding::None);
                        }
                    }
                    _ => {}
                }
                if controls.len() >= MAX_CONTROLS {
                    break;
                }
            }
            if controls.len() == group_at + 1 {
                controls.pop();
                bindings.pop();
            }
        }
        controls.truncate(MAX_CONTROLS);
        bindings.truncate(MAX_CONTROLS);
        let n = engine.controls().len();
        Mixer {
            controls,
            bindings,
            cache: SpinLock::new(alloc::vec![None; n]),
        }
    }

    pub fn controls(&self) -> &[hm::MultiMixControl] {
        &self.controls
    }

    fn binding(&self, id: i32) -> KResult<Binding> {
        let i = id
            .checked_sub(FIRST_ID)
            .filter(|i| *i >= 0)
            .ok_or(Status::BAD_VALUE)? as usize;
        self.bindings.get(i).copied().ok_or(Status::BAD_VALUE)
    }

    fn value<K: Kernel, V: VirtioDevice>(
        &self,
        engine: &Engine<K, V>,
        element: u32,
    ) -> KResult<CtlValue> {
        let stale = engine
            .controls()
            .get(element as usize)
            .is_none_or(|c| c.stale.load(core::sync::atomic::Ordering::Relaxed));
        if !stale {
            if let Some(Some(v)) = self.cache.lock(&*engine.kernel).get(element as usize) {
                return Ok(*v);
            }
        }
        let v = engine.read_control(element)?;
        if let Some(slot) = self.cache.lock(&*engine.kernel).get_mut(element as usize) {
            *slot = Some(v);
        }
        Ok(v)
    }

    fn store<K: Kernel, V: VirtioDevice>(
        &self,
        engine: &Engine<K, V>,
        element: u32,
        v: &CtlValue,
    ) -> KResult {
        engine.write_control(element, v)?;
        if let Some(slot) = self.cache.lock(&*engine.kernel).get_mut(element as usize) {
            *slot = Some(*v);
        }
        Ok(())
    }

    /// Fills `value.u` for `value.id`.
    pub fn get<K: Kernel, V: VirtioDevice>(
        &self,
        engine: &Engine<K, V>,
        value: &mut hm::MultiMixValue,
    ) -> KResult {
        match self.binding(value.id)? {
            Binding::Gain {
                element,
                channel,
                scale,
                ..
            } => {
                let raw = self.value(engine, element)?.value.integer()[channel].get() as i32;
                let gain = match scale {
                    Some(s) => s.min_db + span(s.min_raw, raw) as f32 * s.step_db,
                    None => raw as f32,
                };
                value.u.set_gain(&gain);
            }
            Binding::Enable { element } => {
                let on = self.value(engine, element)?.value.integer()[0].get() != 0;
                value.u.set_enable(&u8::from(on));
            }
            Binding::Mux { element } => {
                let item = self.value(engine, element)?.value.enumerated()[0].get();
                value.u.set_mux(&item);
            }
            Binding::None => return Err(Status::BAD_VALUE),
        }
        Ok(())
    }

    /// Applies `value.u` to `value.id`.
    pub fn set<K: Kernel, V: VirtioDevice>(
        &self,
        engine: &Engine<K, V>,
        value: &hm::MultiMixValue,
    ) -> KResult {
        match self.binding(value.id)? {
            Binding::Gain {
                element,
                channel,
                min,
                max,
                step,
                scale,
            } => {
                let gain = value.u.gain();
                if !gain.is_finite() {
                    return Err(Status::BAD_VALUE);
                }
                let raw = match scale {
                    Some(s) if s.step_db != 0.0 => {
                        i64::from(s.min_raw).saturating_add(round((gain - s.min_db) / s.step_db))
                    }
                    _ => round(gain),
                };
                let raw = snap(raw, min, max, step);
                let mut v = self.value(engine, element)?;
                let mut ints = v.value.integer();
                ints[channel] = Le32::new(raw as u32);
                v.value.set_integer(&ints);
                self.store(engine, element, &v)
            }
            Binding::Enable { element } => {
                let mut v = self.value(engine, element)?;
                let mut ints = v.value.integer();
                ints[0] = Le32::new((value.u.enable() != 0) as u32);
                v.value.set_integer(&ints);
                self.store(engine, element, &v)
            }
            Binding::Mux { element } => {
                let items = engine
                    .controls()
                    .get(element as usize)
                    .map_or(0, |c| c.items.len());
                let item = value.u.mux();
                if item as usize >= items {
                    return Err(Status::BAD_VALUE);
                }
                let mut v = self.value(engine, element)?;
                let mut e = v.value.enumerated();
                e[0] = Le32::new(item);
                v.value.set_enumerated(&e);
                self.store(engine, element, &v)
            }
            Binding::None => Err(Status::BAD_VALUE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(ty: u32, words: &[u32]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(&((words.len() * 4) as u32).to_le_bytes());
        for w in words {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v
    }

    #[test]
    fn db_scales() {
        let s = db_scale(&tlv(TLV_DB_SCALE, &[(-6000i32) as u32, 50]), 0, 120).unwrap();
        assert_eq!((s.min_db, s.step_db), (-60.0, 0.5));
        let m = db_scale(&tlv(TLV_DB_MINMAX, &[(-4800i32) as u32, 0]), 0, 96).unwrap();
        assert_eq!((m.min_db, m.step_db), (-48.0, 0.5));
        let inner = tlv(TLV_DB_SCALE, &[(-1000i32) as u32, 100]);
        let words: Vec<u32> = inner
            .chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let c = db_scale(&tlv(TLV_CONTAINER, &words), 0, 10).unwrap();
        assert_eq!(c.min_db, -10.0);
        assert!(db_scale(&[1, 2, 3], 0, 1).is_none());
        assert!(
            db_scale(&tlv(TLV_DB_SCALE, &[1]), 0, 1).is_none(),
            "truncated body"
        );
        assert!(db_scale(&tlv(77, &[1, 2]), 0, 1).is_none());
    }

    #[test]
    fn direction_by_name() {
        assert_eq!(direction_from_name("Capture Source"), vs::Direction::Input);
        assert_eq!(direction_from_name("Mic Boost"), vs::Direction::Input);
        assert_eq!(
            direction_from_name("Master Playback Volume"),
            vs::Direction::Output
        );
        assert_eq!(direction_from_name("Tone"), vs::Direction::Output);
    }

    #[test]
    fn values_snap_to_the_devices_grid_without_overflow() {
        assert_eq!(snap(i64::MAX, i32::MIN, i32::MAX, 1), i32::MAX);
        assert_eq!(snap(i64::MIN, i32::MIN, i32::MAX, 1), i32::MIN);
        assert_eq!(snap(0, i32::MIN, i32::MAX, i32::MAX), -1, "MIN + MAX");
        assert_eq!(snap(7, 0, 10, 5), 5);
        assert_eq!(snap(8, 0, 10, 5), 10);
        assert_eq!(snap(100, 0, 12, 5), 10, "the top of the grid, not 12 or 15");
        assert_eq!(snap(50, 0, 10, 100), 0, "a step longer than the range");
        assert_eq!(snap(-9, 3, 3, 7), 3);
        assert_eq!(span(i32::MIN, i32::MAX), u32::MAX as i64);
        // A dB range over the widest raw range, and a TLV whose length runs off the end.
        let m = db_scale(
            &tlv(TLV_DB_MINMAX, &[i32::MIN as u32, i32::MAX as u32]),
            i32::MIN,
            i32::MAX,
        )
        .unwrap();
        assert_eq!(m.min_db, i32::MIN as f32 / 100.0);
        assert!(m.step_db > 0.0 && m.step_db.is_finite());
        let mut long = tlv(TLV_CONTAINER, &[TLV_DB_SCALE, u32::MAX]);
        long[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(db_scale(&long, 0, 1).is_none());
        assert!(db_scale(&tlv(TLV_CONTAINER, &[TLV_DB_SCALE, u32::MAX, 1, 2]), 0, 1).is_none());
    }

    #[test]
    fn rounding() {
        assert_eq!(round(1.5), 2);
        assert_eq!(round(-1.5), -2);
        assert_eq!(round(0.49), 0);
    }
}
