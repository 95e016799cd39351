//! Minimal WAV (RIFF/WAVE) reading and writing: PCM integers (8-bit unsigned, 16/24/32-bit
//! signed) and IEEE float, interleaved, as `cargo xtask sim` needs for IN.wav and OUT.wav.

use std::fmt;

/// Sample encoding of a WAV file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleFormat {
    U8,
    S16,
    S24,
    S32,
    F32,
    F64,
}

impl SampleFormat {
    pub fn bytes(self) -> usize {
        match self {
            SampleFormat::U8 => 1,
            SampleFormat::S16 => 2,
            SampleFormat::S24 => 3,
            SampleFormat::S32 | SampleFormat::F32 => 4,
            SampleFormat::F64 => 8,
        }
    }

    /// The format of a `--format` name: `s16`, `s32`, `float` or `u8` (those hmulti plays).
    pub fn from_name(name: &str) -> Option<SampleFormat> {
        Some(match name {
            "s16" => SampleFormat::S16,
            "s32" => SampleFormat::S32,
            "float" => SampleFormat::F32,
            "u8" => SampleFormat::U8,
            _ => return None,
        })
    }

    /// The `--format` name of a format hmulti plays.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            SampleFormat::S16 => "s16",
            SampleFormat::S32 => "s32",
            SampleFormat::F32 => "float",
            SampleFormat::U8 => "u8",
            _ => return None,
        })
    }

    fn is_float(self) -> bool {
        matches!(self, SampleFormat::F32 | SampleFormat::F64)
    }
}

/// A decoded WAV file: its format and interleaved sample bytes, little-endian.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wav {
    pub rate: u32,
    pub channels: u16,
    pub format: SampleFormat,
    pub data: Vec<u8>,
}

/// A WAV file this reader cannot use, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WavError(pub String);

impl fmt::Display for WavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WavError {}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

impl Wav {
    pub fn frames(&self) -> usize {
        self.data.len() / (self.format.bytes() * self.channels as usize).max(1)
    }

    /// Parses a WAV file.
    pub fn parse(b: &[u8]) -> Result<Wav, WavError> {
        let err = |m: &str| WavError(m.to_string());
        if b.get(0..4) != Some(b"RIFF") || b.get(8..12) != Some(b"WAVE") {
            return Err(err("not a RIFF/WAVE file"));
        }
        let mut pos = 12;
        let mut fmt: Option<(u16, u16, u32, u16)> = None;
        while pos + 8 <= b.len() {
            let id = &b[pos..pos + 4];
            let len = u32_at(b, pos + 4).ok_or_else(|| err("truncated chunk header"))? as usize;
            let body = b
                .get(pos + 8..pos + 8 + len)
                .ok_or_else(|| err("chunk runs past the end of the file"))?;
            match id {
                b"fmt " => {
                    let tag = u16_at(body, 0).ok_or_else(|| err("short fmt chunk"))?;
                    let channels = u16_at(body, 2).ok_or_else(|| err("short fmt chunk"))?;
                    let rate = u32_at(body, 4).ok_or_else(|| err("short fmt chunk"))?;
                    let bits = u16_at(body, 14).ok_or_else(|| err("short fmt chunk"))?;
                    // WAVE_FORMAT_EXTENSIBLE carries the real tag in its sub-format GUID.
                    let tag = if tag == 0xfffe {
                        u16_at(body, 24).ok_or_else(|| err("short extensible fmt chunk"))?
                    } else {
                        tag
                    };
                    fmt = Some((tag, channels, rate, bits));
                }
                b"data" => {
                    let (tag, channels, rate, bits) =
                        fmt.ok_or_else(|| err("data chunk before fmt chunk"))?;
                    let format = match (tag, bits) {
                        (1, 8) => SampleFormat::U8,
                        (1, 16) => SampleFormat::S16,
                        (1, 24) => SampleFormat::S24,
                        (1, 32) => SampleFormat::S32,
                        (3, 32) => SampleFormat::F32,
                        (3, 64) => SampleFormat::F64,
                        _ => {
                            return Err(WavError(format!(
                                "unsupported WAV encoding: format tag {tag}, {bits} bits"
                            )))
                        }
                    };
                    if channels == 0 || rate == 0 {
                        return Err(err("zero channels or rate"));
                    }
                    let frame = format.bytes() * channels as usize;
                    let n = body.len() / frame * frame;
                    return Ok(Wav {
                        rate,
                        channels,
                        format,
                        data: body[..n].to_vec(),
                    });
                }
                _ => {}
            }
            pos += 8 + len + (len & 1);
        }
        Err(err("no data chunk"))
    }

    /// Encodes as a WAV file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let bits = (self.format.bytes() * 8) as u16;
        let tag: u16 = if self.format.is_float() { 3 } else { 1 };
        let block = self.format.bytes() as u16 * self.channels;
        let mut out = Vec::with_capacity(44 + self.data.len());
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&((36 + self.data.len()) as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&self.channels.to_le_bytes());
        out.extend_from_slice(&self.rate.to_le_bytes());
        out.extend_from_slice(&(self.rate * block as u32).to_le_bytes());
        out.extend_from_slice(&block.to_le_bytes());
        out.extend_from_slice(&bits.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.data);
        if self.data.len() % 2 == 1 {
            out.push(0);
        }
        out
    }

    /// A sine of `hz` at `rate`, `seconds` long, in `format` (all channels equal).
    pub fn sine(hz: f64, rate: u32, channels: u16, format: SampleFormat, seconds: f64) -> Wav {
        let frames = (rate as f64 * seconds) as usize;
        let mut data = Vec::with_capacity(frames * channels as usize * format.bytes());
        for i in 0..frames {
            let x = (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin() * 0.5;
            for _ in 0..channels {
                match format {
                    SampleFormat::U8 => data.push((x * 127.0 + 128.0) as u8),
                    SampleFormat::S16 => {
                        data.extend_from_slice(&((x * 32767.0) as i16).to_le_bytes())
                    }
                    SampleFormat::S24 => {
                        data.extend_from_slice(&((x * 8_388_607.0) as i32).to_le_bytes()[..3])
                    }
                    SampleFormat::S32 => {
                        data.extend_from_slice(&((x * 2_147_483_647.0) as i32).to_le_bytes())
                    }
                    SampleFormat::F32 => data.extend_from_slice(&(x as f32).to_le_bytes()),
                    SampleFormat::F64 => data.extend_from_slice(&x.to_le_bytes()),
                }
            }
        }
        Wav {
            rate,
            channels,
            format,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_format() {
        for f in [
            SampleFormat::U8,
            SampleFormat::S16,
            SampleFormat::S24,
            SampleFormat::S32,
            SampleFormat::F32,
            SampleFormat::F64,
        ] {
            let w = Wav::sine(997.0, 48000, 2, f, 0.01);
            assert_eq!(w.frames(), 480);
            assert_eq!(Wav::parse(&w.to_bytes()).unwrap(), w);
        }
    }

    #[test]
    fn bad_files_say_why() {
        assert!(Wav::parse(b"hello").unwrap_err().0.contains("RIFF"));
        let mut w = Wav::sine(440.0, 8000, 1, SampleFormat::S16, 0.01).to_bytes();
        w.truncate(30);
        assert!(Wav::parse(&w).is_err());
        let mut odd = Wav::sine(440.0, 8000, 1, SampleFormat::S16, 0.01).to_bytes();
        odd[34] = 12; // 12-bit PCM
        assert!(Wav::parse(&odd).unwrap_err().0.contains("unsupported"));
    }
}
