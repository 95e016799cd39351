//! Which of the device's streams a card can publish, and why not. PCM_INFO is the device's
//! word: a stream with a direction the spec does not define, a channel range that is empty or
//! above what hmulti publishes, or no rate or format hmulti has a bit for, is left out with
//! one log line naming it, and the device's other streams are published as usual.

use alloc::vec::Vec;
use core::fmt;

use spec::virtio_snd::PcmInfo;

use super::{channels, format};
use crate::virtio::Engine;
use platform::{Kernel, LogLevel, VirtioDevice};

/// Why a stream is not published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unservable {
    /// `direction` is neither output (0) nor input (1).
    Direction(u8),
    /// `channels_min` is above `channels_max`: no channel count is valid.
    Inverted { min: u8, max: u8 },
    /// `channels_max` is 0.
    NoChannels,
    /// The fewest channels the stream takes is more than a card publishes per direction
    /// (its buffers are the client's: they cannot be padded with extra channels).
    TooManyChannels { min: u8, most: u8 },
    /// No rate in the mask has a `B_SR_*` bit (empty, 5512 Hz only, or bits the spec does not
    /// define).
    NoRate(u64),
    /// No format in the mask is one hmulti carries.
    NoFormat(u64),
}

impl fmt::Display for Unservable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Unservable::Direction(d) => write!(f, "direction {d} is neither output nor input"),
            Unservable::Inverted { min, max } => {
                write!(f, "channels_min {min} is above channels_max {max}")
            }
            Unservable::NoChannels => write!(f, "channels_max is 0"),
            Unservable::TooManyChannels { min, most } => write!(
                f,
                "it takes at least {min} channels, a card publishes at most {most}"
            ),
            Unservable::NoRate(mask) => write!(f, "no rate Haiku has a bit for (mask {mask:#x})"),
            Unservable::NoFormat(mask) => {
                write!(f, "no format Haiku can carry (mask {mask:#x})")
            }
        }
    }
}

/// Whether a card can publish the stream `info` describes with at most `max_channels`
/// channels.
pub fn check(info: &PcmInfo, max_channels: u8) -> Result<(), Unservable> {
    if let Err(e) = info.direction() {
        return Err(Unservable::Direction(e.value));
    }
    channels::range(info, max_channels)?;
    if format::rate_bits(info.rates(), None) == 0 {
        return Err(Unservable::NoRate(info.rates().bits()));
    }
    if format::format_bits(info.formats()) == 0 {
        return Err(Unservable::NoFormat(info.formats().bits()));
    }
    Ok(())
}

/// The ids of the streams a card can publish, `(outputs, inputs)` in id order; every other
/// stream is logged once, with the reason.
pub fn streams<K: Kernel, V: VirtioDevice>(
    engine: &Engine<K, V>,
    max_channels: u8,
) -> (Vec<u32>, Vec<u32>) {
    let (mut outs, mut ins) = (Vec::new(), Vec::new());
    for s in engine.streams() {
        match check(&s.info, max_channels) {
            Ok(()) if s.is_output() => outs.push(s.id),
            Ok(()) => ins.push(s.id),
            Err(why) => engine.kernel.log(
                LogLevel::Warn,
                format_args!("stream {}: {why}; not published", s.id),
            ),
        }
    }
    (outs, ins)
}
