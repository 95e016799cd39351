//! What the simulated device has: streams, jacks, channel maps, control elements.
//!
//! The default is QEMU's `virtio-sound-pci` as its source describes it (`hw/audio/virtio-snd.c`: two streams,
//! seven formats, fourteen rates, one or two channels, no jacks, chmaps or controls, queues of
//! 64), because that is the device the driver must work with first. Everything else a host
//! might offer (crosvm's many streams, vhost-device-sound's controls, 12/24 kHz from virtio
//! 1.4, a device that lies in its config space) is a field away.

use spec::virtio_snd::{
    ChmapPosition, CtlType, CtlValue, Direction, PcmFeature, PcmFormat, PcmRate,
    VIRTIO_SND_CTL_ACCESS_READ, VIRTIO_SND_CTL_ACCESS_TLV_READ, VIRTIO_SND_CTL_ACCESS_WRITE,
};
use zerocopy::little_endian::{U32 as Le32, U64 as Le64};
use zerocopy::FromZeros;

/// QEMU's formats: S8, U8, S16, U16, S32, U32, FLOAT.
pub const QEMU_FORMATS: u64 = PcmFormat::S8.mask()
    | PcmFormat::U8.mask()
    | PcmFormat::S16.mask()
    | PcmFormat::U16.mask()
    | PcmFormat::S32.mask()
    | PcmFormat::U32.mask()
    | PcmFormat::Float.mask();

/// QEMU's rates: the fourteen virtio 1.2 rates, 5512 to 384000 Hz (not 12000/24000).
pub const QEMU_RATES: u64 = 0x3FFF;

/// One PCM stream as PCM_INFO describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    pub hda_fn_nid: u32,
    /// Feature bits (`1 << PcmFeature`) the stream offers.
    pub features: u32,
    /// Format bits (`1 << PcmFormat`).
    pub formats: u64,
    /// Rate bits (`1 << PcmRate`).
    pub rates: u64,
    pub direction: Direction,
    pub channels_min: u8,
    pub channels_max: u8,
    /// The `direction` byte PCM_INFO reports instead of `direction`'s: a device that
    /// describes a stream with a value the spec does not define (the model still serves it
    /// as `direction`).
    pub advertised_direction: Option<u8>,
}

impl StreamConfig {
    /// A QEMU-like stream of the given direction.
    pub fn qemu(direction: Direction) -> Self {
        StreamConfig {
            hda_fn_nid: 0,
            features: 0,
            formats: QEMU_FORMATS,
            rates: QEMU_RATES,
            direction,
            channels_min: 1,
            channels_max: 2,
            advertised_direction: None,
        }
    }

    pub fn output() -> Self {
        Self::qemu(Direction::Output)
    }

    pub fn input() -> Self {
        Self::qemu(Direction::Input)
    }

    pub fn with_formats(mut self, formats: &[PcmFormat]) -> Self {
        self.formats = formats.iter().fold(0, |m, f| m | f.mask());
        self
    }

    pub fn with_rates(mut self, rates: &[PcmRate]) -> Self {
        self.rates = rates.iter().fold(0, |m, r| m | r.mask());
        self
    }

    pub fn with_channels(mut self, min: u8, max: u8) -> Self {
        self.channels_min = min;
        self.channels_max = max;
        self
    }

    /// Reports `raw` as the direction in PCM_INFO (see `advertised_direction`).
    pub fn with_advertised_direction(mut self, raw: u8) -> Self {
        self.advertised_direction = Some(raw);
        self
    }

    pub fn with_features(mut self, features: &[PcmFeature]) -> Self {
        self.features = features.iter().fold(0, |m, f| m | f.mask() as u32);
        self
    }
}

/// One jack as JACK_INFO describes it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct JackConfig {
    pub hda_fn_nid: u32,
    /// Feature bits (`1 << JackFeature`); REMAP makes JACK_REMAP legal for this jack.
    pub features: u32,
    pub hda_reg_defconf: u32,
    pub hda_reg_caps: u32,
    pub connected: bool,
}

/// One channel map as CHMAP_INFO describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChmapConfig {
    pub hda_fn_nid: u32,
    pub direction: Direction,
    /// `ChmapPosition` values, at most 18.
    pub positions: Vec<u8>,
}

/// The range part of a control element's description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtlRange {
    /// BOOLEAN, BYTES, IEC958 and ENUMERATED elements (the item names are separate).
    None,
    Integer {
        min: i32,
        max: i32,
        step: i32,
    },
    Integer64 {
        min: i64,
        max: i64,
        step: i64,
    },
}

/// One control element (virtio 1.3, VIRTIO_SND_F_CTLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    pub hda_fn_nid: u32,
    /// The raw `role` field: 0 for UNDEFINED, otherwise `(CtlRole << 1) | direction`.
    pub role: u32,
    pub ctl_type: CtlType,
    /// Access bits (`1 << CtlAccess`).
    pub access: u32,
    /// Number of members of the value.
    pub count: u32,
    pub index: u32,
    /// At most 43 ASCII bytes (the wire field is 44 with its NUL).
    pub name: String,
    pub range: CtlRange,
    /// Option names of an ENUMERATED element (at most 63 bytes each).
    pub enum_items: Vec<String>,
    /// The full TLV blob (type, length, value) served by CTL_TLV_READ.
    pub tlv: Vec<u8>,
    /// Current value, as CTL_READ returns it.
    pub value: CtlValue,
}

impl ControlConfig {
    /// A readable, writable INTEGER element with `count` members all at `initial`.
    pub fn integer(name: &str, role: u32, count: u32, min: i32, max: i32, initial: i32) -> Self {
        let mut value = CtlValue::new_zeroed();
        let mut ints = [Le32::new(0); 128];
        for v in ints.iter_mut().take(count as usize) {
            *v = Le32::new(initial as u32);
        }
        value.value.set_integer(&ints);
        ControlConfig {
            hda_fn_nid: 0,
            role,
            ctl_type: CtlType::Integer,
            access: rw_access(),
            count,
            index: 0,
            name: name.to_owned(),
            range: CtlRange::Integer { min, max, step: 1 },
            enum_items: Vec::new(),
            tlv: Vec::new(),
            value,
        }
    }

    /// A readable, writable INTEGER64 element.
    pub fn integer64(name: &str, count: u32, min: i64, max: i64, initial: i64) -> Self {
        let mut value = CtlValue::new_zeroed();
        let mut ints = [Le64::new(0); 64];
        for v in ints.iter_mut().take(count as usize) {
            *v = Le64::new(initial as u64);
        }
        value.value.set_integer64(&ints);
        ControlConfig {
            ctl_type: CtlType::Integer64,
            range: CtlRange::Integer64 { min, max, step: 1 },
            value,
            ..Self::integer(name, 0, count, 0, 0, 0)
        }
    }

    /// A readable, writable BOOLEAN element (a mute switch).
    pub fn boolean(name: &str, role: u32, count: u32, initial: bool) -> Self {
        ControlConfig {
            ctl_type: CtlType::Boolean,
            range: CtlRange::None,
            ..Self::integer(name, role, count, 0, 1, i32::from(initial))
        }
    }

    /// A readable, writable ENUMERATED element with one member.
    pub fn enumerated(name: &str, items: &[&str], initial: u32) -> Self {
        ControlConfig {
            ctl_type: CtlType::Enumerated,
            range: CtlRange::None,
            enum_items: items.iter().map(|s| (*s).to_owned()).collect(),
            ..Self::integer(name, 0, 1, 0, 0, initial as i32)
        }
    }

    /// Adds a TLV blob (type, then the value bytes) readable with CTL_TLV_READ.
    pub fn with_tlv(mut self, tlv_type: u32, value: &[u8]) -> Self {
        let mut blob = Vec::with_capacity(8 + value.len());
        blob.extend_from_slice(&tlv_type.to_le_bytes());
        blob.extend_from_slice(&(value.len() as u32).to_le_bytes());
        blob.extend_from_slice(value);
        self.tlv = blob;
        self.access |= 1 << VIRTIO_SND_CTL_ACCESS_TLV_READ;
        self
    }

    pub fn with_access(mut self, access: u32) -> Self {
        self.access = access;
        self
    }
}

/// READ | WRITE.
pub fn rw_access() -> u32 {
    (1 << VIRTIO_SND_CTL_ACCESS_READ) | (1 << VIRTIO_SND_CTL_ACCESS_WRITE)
}

/// When the device hands capture (rx) buffers back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaptureCompletion {
    /// Each buffer is filled at the stream's rate from START and completes when full, with
    /// `used_len` = its frames + 8 and the status after the frames.
    #[default]
    Paced,
    /// QEMU with an audio backend that has no capture voice (`-audiodev wav`: its driver in
    /// `audio/wavaudio.c` declares `max_voices_in = 0`, so `virtio_snd_pcm_in_cb` in
    /// `hw/audio/virtio-snd.c` never runs). A buffer waits in the stream's queue through
    /// START and STOP (STOP only clears `active`); RELEASE flushes it with
    /// `return_rx_buffer`, which writes the status (OK, latency 0) at offset `buffer->size`
    /// of the device-writable part, 0 for a buffer that got no frames, i.e. over the first
    /// 8 bytes of the frame space, and puts it in the used ring with `used_len` 8. The
    /// status the driver put after the frames is left as it was.
    AtRelease,
    /// vhost-device-sound's null backend (`src/audio_backends/null.rs` in rust-vmm's
    /// vhost-device): its `read` does nothing and it keeps the `AudioBackend` trait's default
    /// `stop` and `release`, which do nothing either, so a capture request stays in the
    /// stream's `requests` for ever: not completed at STOP, not at RELEASE (which is still
    /// answered OK). Only a device reset forgets it.
    Never,
}

impl CaptureCompletion {
    /// The names a device config uses, in order.
    pub const NAMES: [&'static str; 3] = ["paced", "at-release", "never"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "paced" => Some(Self::Paced),
            "at-release" => Some(Self::AtRelease),
            "never" => Some(Self::Never),
            _ => None,
        }
    }
}

/// When the device hands playback (tx) buffers back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlaybackCompletion {
    /// Consumed at the stream's rate from START; a buffer completes when its last frame was
    /// played (or taken, see `ModelConfig::takes_ahead_frames`).
    #[default]
    Paced,
    /// vhost-device-sound's null backend: `process_io` (`src/device.rs`) calls the backend's
    /// `write` for every tx chain as it arrives, whatever the stream's state, and the null
    /// `write` drops all the stream's requests at once. Dropping a `Request`
    /// (`src/stream.rs`) adds its payload length to `latency_bytes`, and dropping its
    /// `IOMessage` (`src/lib.rs`) writes the status (OK, `latency_bytes` = the buffer's
    /// bytes) into the last 8 writable bytes and uses the chain with `used_len` 8. So every
    /// buffer completes the moment it is queued, even before START, with no pacing and no
    /// underrun ever.
    Instant,
}

impl PlaybackCompletion {
    /// The names a device config uses, in order.
    pub const NAMES: [&'static str; 2] = ["paced", "instant"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "paced" => Some(Self::Paced),
            "instant" => Some(Self::Instant),
            _ => None,
        }
    }
}

/// The whole device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    pub streams: Vec<StreamConfig>,
    pub jacks: Vec<JackConfig>,
    pub chmaps: Vec<ChmapConfig>,
    pub controls: Vec<ControlConfig>,
    /// Offer VIRTIO_SND_F_CTLS (virtio 1.3 control elements).
    pub offer_ctls: bool,
    /// Bytes of device config space: 16 (QEMU, with `controls`) or 12 (virtio 1.2 layout).
    pub config_size: u8,
    /// Size of each of the four virtqueues.
    pub queue_size: u16,
    /// Count descriptors (one per entry) against the queue size instead of chains (as when
    /// indirect descriptors are negotiated).
    pub count_descriptors: bool,
    /// Time from queueing a control request to its completion, in µs.
    pub control_latency: i64,
    /// Counts to put in config space instead of the real list lengths `[jacks, streams,
    /// chmaps, controls]`: a device that advertises what it cannot describe.
    pub advertised_counts: Option<[u32; 4]>,
    /// Send a CTL_NOTIFY (value) event after a successful CTL_WRITE.
    pub notify_on_ctl_write: bool,
    /// Playback frames the device takes ahead of what it has played, like QEMU (whose
    /// mixer holds about 1024 frames): a tx buffer completes when it is *taken*, that many
    /// frames before it is played, and STOP throws away what was taken but not played.
    /// 0: a buffer completes when its last frame has been played.
    pub takes_ahead_frames: u64,
    /// When capture buffers come back (every input stream).
    pub capture: CaptureCompletion,
    /// When playback buffers come back (every output stream).
    pub playback: PlaybackCompletion,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            streams: vec![StreamConfig::output(), StreamConfig::input()],
            jacks: Vec::new(),
            chmaps: Vec::new(),
            controls: Vec::new(),
            offer_ctls: false,
            config_size: 16,
            queue_size: 64,
            count_descriptors: false,
            control_latency: 50,
            advertised_counts: None,
            notify_on_ctl_write: false,
            takes_ahead_frames: 0,
            capture: CaptureCompletion::Paced,
            playback: PlaybackCompletion::Paced,
        }
    }
}

impl ModelConfig {
    /// One output and one input stream with exactly `channels` channels, every virtio rate
    /// and every format hmulti can carry (S8, U8, S16, S32, FLOAT, FLOAT64): the device the
    /// playback tests and `cargo xtask sim` use.
    pub fn hmulti_full(channels: u8) -> ModelConfig {
        let rates: Vec<PcmRate> = PcmRate::ALL.to_vec();
        let formats = [
            PcmFormat::S8,
            PcmFormat::U8,
            PcmFormat::S16,
            PcmFormat::S32,
            PcmFormat::Float,
            PcmFormat::Float64,
        ];
        ModelConfig {
            streams: vec![
                StreamConfig::output()
                    .with_channels(channels, channels)
                    .with_rates(&rates)
                    .with_formats(&formats),
                StreamConfig::input()
                    .with_channels(channels, channels)
                    .with_rates(&rates)
                    .with_formats(&formats),
            ],
            ..ModelConfig::default()
        }
    }

    /// The devices a device config can name with `device = "..."`, in order.
    pub const PRESETS: [&'static str; 3] = ["qemu", "qemu-wav", "vhost-null"];

    /// The device a device config names: `qemu` (the default), `qemu-wav` or `vhost-null`.
    pub fn preset(name: &str) -> Option<ModelConfig> {
        match name {
            "qemu" => Some(ModelConfig::default()),
            "qemu-wav" => Some(ModelConfig::qemu_wav()),
            "vhost-null" => Some(ModelConfig::vhost_null()),
            _ => None,
        }
    }

    /// QEMU's `virtio-sound-pci` on `-audiodev wav`: its two streams, playback taken about
    /// 1024 frames ahead by QEMU's mixer, capture never completed while it runs and handed
    /// back empty at RELEASE ([`CaptureCompletion::AtRelease`]).
    pub fn qemu_wav() -> ModelConfig {
        ModelConfig {
            takes_ahead_frames: 1024,
            capture: CaptureCompletion::AtRelease,
            ..ModelConfig::default()
        }
    }

    /// vhost-device-sound with `--backend null`: what `VhostUserSoundBackend::new`
    /// (`src/device.rs`) describes, an output stream 0 and an input stream 1 with
    /// `Stream::default()`'s 1 to 6 channels (`src/stream.rs`), `SUPPORTED_FORMATS` U8, S16,
    /// S24, S32 and `SUPPORTED_RATES` 8 to 48 kHz (`src/lib.rs`), no jacks or controls, one
    /// channel map (config space says 1: the stereo output's); playback completed as soon as
    /// queued, capture never ([`PlaybackCompletion::Instant`], [`CaptureCompletion::Never`]).
    pub fn vhost_null() -> ModelConfig {
        let rates = [
            PcmRate::Rate8000,
            PcmRate::Rate11025,
            PcmRate::Rate16000,
            PcmRate::Rate22050,
            PcmRate::Rate32000,
            PcmRate::Rate44100,
            PcmRate::Rate48000,
        ];
        let formats = [
            PcmFormat::U8,
            PcmFormat::S16,
            PcmFormat::S24,
            PcmFormat::S32,
        ];
        let stream = |s: StreamConfig| {
            s.with_channels(1, 6)
                .with_rates(&rates)
                .with_formats(&formats)
        };
        ModelConfig {
            streams: vec![
                stream(StreamConfig::output()),
                stream(StreamConfig::input()),
            ],
            chmaps: vec![ChmapConfig {
                hda_fn_nid: 0,
                direction: Direction::Output,
                positions: vec![
                    ChmapPosition::FrontLeft.into(),
                    ChmapPosition::FrontRight.into(),
                ],
            }],
            capture: CaptureCompletion::Never,
            playback: PlaybackCompletion::Instant,
            ..ModelConfig::default()
        }
    }

    /// The counts config space reports.
    pub fn counts(&self) -> [u32; 4] {
        self.advertised_counts.unwrap_or([
            self.jacks.len() as u32,
            self.streams.len() as u32,
            self.chmaps.len() as u32,
            self.controls.len() as u32,
        ])
    }
}

/// Bits of one frame (all channels) in `format`, or `None` for a format the model cannot
/// size. IMA ADPCM's 4-bit samples make this bits rather than bytes.
pub fn frame_bits(format: u8, channels: u8) -> Option<u64> {
    let width = PcmFormat::from_raw(format)?.phys_width();
    let bits = u64::from(width) * u64::from(channels);
    (bits > 0).then_some(bits)
}

/// Bytes of one sample of `format` (at least 1), for the capture pattern.
pub fn sample_bytes(format: u8) -> usize {
    PcmFormat::from_raw(format)
        .map(PcmFormat::phys_width)
        .map_or(1, |w| (w as usize / 8).max(1))
}
