//! The `virtio_sound` driver settings file (`~/config/settings/kernel/drivers/virtio_sound`),
//! read the Haiku way with `load_driver_settings` / `get_driver_parameter`:
//!
//! ```text
//! # frames per hmulti buffer (0 = about 10 ms)
//! frames_per_buffer 480
//! # buffers per direction (2..32, 0 = 4)
//! buffer_count 4
//! # highest rate to advertise, in Hz (0 = all the device offers)
//! max_rate 192000
//! # 0 errors, 1 warnings, 2 info, 3 debug, 4 trace
//! log_level 2
//! # least silence played after the last buffer when playback stops, in ms (0..1000,
//! # default 20; more if the device holds more; 0: none)
//! stop_padding_ms 20
//! ```

use core::ffi::{c_char, CStr};

use super::kernel_imports as ki;
use driver::hmulti::Settings;
use platform::LogLevel;

/// Everything the settings file can say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverSettings {
    pub card: Settings,
    pub log_level: LogLevel,
}

impl Default for DriverSettings {
    fn default() -> Self {
        DriverSettings {
            card: Settings::default(),
            log_level: LogLevel::Info,
        }
    }
}

/// Parses an unsigned decimal parameter value.
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    let s = core::str::from_utf8(s).ok()?.trim();
    s.parse().ok()
}

impl DriverSettings {
    /// Builds settings from a key lookup (the file's parameters); unknown or malformed
    /// values keep their defaults.
    pub fn from_lookup(get: impl Fn(&str) -> Option<u32>) -> Self {
        let mut s = DriverSettings::default();
        if let Some(v) = get("frames_per_buffer") {
            s.card.frames_per_buffer = v.min(65536);
        }
        if let Some(v) = get("buffer_count") {
            s.card.buffer_count = v.min(32);
        }
        if let Some(v) = get("max_rate") {
            s.card.max_rate = (v != 0).then_some(v);
        }
        if let Some(v) = get("stop_padding_ms") {
            s.card.stop_padding_us = Some(v.min(1000) * 1000);
        }
        if let Some(v) = get("log_level") {
            s.log_level = match v {
                0 => LogLevel::Error,
                1 => LogLevel::Warn,
                2 => LogLevel::Info,
                3 => LogLevel::Debug,
                _ => LogLevel::Trace,
            };
        }
        s
    }

    /// Reads the settings file; a missing file gives the defaults.
    pub fn load() -> Self {
        // SAFETY: a static C string naming the driver; a NULL handle means no file.
        let handle = unsafe { ki::load_driver_settings(c"virtio_sound".as_ptr()) };
        if handle.is_null() {
            return DriverSettings::default();
        }
        let s = DriverSettings::from_lookup(|key| {
            let mut k = [0u8; 32];
            for (d, b) in k.iter_mut().zip(key.bytes().take(31)) {
                *d = b;
            }
            // SAFETY: `handle` is live, `k` NUL-terminated; the value (if any) is a
            // NUL-terminated string owned by the handle.
            let v: *const c_char = unsafe {
                ki::get_driver_parameter(
                    handle,
                    k.as_ptr().cast(),
                    core::ptr::null(),
                    core::ptr::null(),
                )
            };
            if v.is_null() {
                return None;
            }
            // SAFETY: as above.
            parse_u32(unsafe { CStr::from_ptr(v) }.to_bytes())
        });
        // SAFETY: the handle from load_driver_settings.
        unsafe { ki::unload_driver_settings(handle) };
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_keys() {
        let s = DriverSettings::from_lookup(|k| match k {
            "frames_per_buffer" => Some(1024),
            "buffer_count" => Some(99),
            "max_rate" => Some(96000),
            "log_level" => Some(3),
            "stop_padding_ms" => Some(5000),
            _ => None,
        });
        assert_eq!(s.card.stop_padding_us, Some(1_000_000), "clamped");
        assert_eq!(s.card.frames_per_buffer, 1024);
        assert_eq!(s.card.buffer_count, 32, "clamped");
        assert_eq!(s.card.max_rate, Some(96000));
        assert_eq!(s.log_level, LogLevel::Debug);
        assert_eq!(
            DriverSettings::from_lookup(|_| None),
            DriverSettings::default()
        );
        assert_eq!(parse_u32(b" 480 "), Some(480));
        assert_eq!(parse_u32(b"lots"), None);
    }
}
