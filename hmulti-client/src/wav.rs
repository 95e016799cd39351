//! WAV (RIFF/WAVE) files through the `hound` crate: PCM integers (8-bit unsigned, 16/24/32-bit
//! signed) and 32-bit IEEE float, interleaved, as `cargo xtask sim` needs for IN.wav and
//! OUT.wav. [`Wav`] keeps the samples as a WAV file stores them (little-endian bytes,
//! interleaved), so that tests compare them bit for bit; hound's samples are converted at the
//! edge. hound 3.5 neither reads nor writes 64-bit float, so there is no such format here.

use std::fmt;

/// Sample encoding of a WAV file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleFormat {
    U8,
    S16,
    S24,
    S32,
    F32,
}

impl SampleFormat {
    pub fn bytes(self) -> usize {
        match self {
            SampleFormat::U8 => 1,
            SampleFormat::S16 => 2,
            SampleFormat::S24 => 3,
            SampleFormat::S32 | SampleFormat::F32 => 4,
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

    /// hound's description of the format: its sample format and bits per sample.
    fn hound(self) -> (hound::SampleFormat, u16) {
        let kind = match self {
            SampleFormat::F32 => hound::SampleFormat::Float,
            _ => hound::SampleFormat::Int,
        };
        (kind, self.bytes() as u16 * 8)
    }

    /// The format of hound's description, if it is one of these.
    fn of_hound(spec: hound::WavSpec) -> Option<SampleFormat> {
        use hound::SampleFormat::{Float, Int};
        Some(match (spec.sample_format, spec.bits_per_sample) {
            (Int, 8) => SampleFormat::U8,
            (Int, 16) => SampleFormat::S16,
            (Int, 24) => SampleFormat::S24,
            (Int, 32) => SampleFormat::S32,
            (Float, 32) => SampleFormat::F32,
            _ => return None,
        })
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

/// Why hound could not read a file's header (the chunks up to the `data` chunk). It reads
/// from a byte slice, so an I/O error is the file ending too soon.
fn header_error(e: hound::Error) -> WavError {
    WavError(match e {
        hound::Error::IoError(_) => {
            "no data chunk: the file ends before a complete fmt and data chunk".to_string()
        }
        // hound's reasons: "no RIFF tag found", "bits per sample is not a multiple of 8",
        // "invalid data chunk length", ...
        hound::Error::FormatError(why) => format!("unsupported or malformed WAV file: {why}"),
        hound::Error::Unsupported => "unsupported WAV encoding: not PCM (8-bit unsigned, \
                                      16/24/32-bit signed) or 32-bit IEEE float"
            .to_string(),
        e => format!("unreadable WAV file: {e}"),
    })
}

/// Why hound could not read a sample of the `data` chunk (an I/O error: the slice ended).
fn data_error(e: hound::Error) -> WavError {
    WavError(match e {
        hound::Error::IoError(_) => "the data chunk runs past the end of the file".to_string(),
        e => format!("unreadable WAV data: {e}"),
    })
}

impl Wav {
    pub fn frames(&self) -> usize {
        self.data.len() / (self.format.bytes() * self.channels as usize).max(1)
    }

    /// Parses a WAV file: hound reads and checks the header; the samples are the data chunk's
    /// bytes, or hound's samples as little-endian bytes when the file stores them in wider
    /// containers than `format` (24 bits in 4 bytes).
    pub fn parse(b: &[u8]) -> Result<Wav, WavError> {
        let reader = hound::WavReader::new(b).map_err(header_error)?;
        let spec = reader.spec();
        let format = SampleFormat::of_hound(spec).ok_or_else(|| {
            WavError(format!(
                "unsupported WAV encoding: {:?}, {} bits",
                spec.sample_format, spec.bits_per_sample
            ))
        })?;
        // hound refuses zero channels itself.
        if spec.sample_rate == 0 {
            return Err(WavError("zero channels or rate".to_string()));
        }
        let samples = reader.len() as usize;
        // hound leaves its reader at the data chunk's first byte, after the chunk's 32-bit
        // size (a RIFF chunk is an id, a size and the body); it has checked that the size is
        // `samples` whole containers.
        let at = b.len() - reader.into_inner().len();
        let size = u32::from_le_bytes([b[at - 4], b[at - 3], b[at - 2], b[at - 1]]) as usize;
        let data = if samples == 0 || size / samples == format.bytes() {
            // Samples stored as `format` stores them: the bytes are the data, as they are.
            b.get(at..at + size)
                .ok_or_else(|| WavError("the data chunk runs past the end of the file".into()))?
                .to_vec()
        } else {
            // Wider containers (24 bits in 4 bytes, WAVE_FORMAT_EXTENSIBLE): hound decodes.
            let mut reader = hound::WavReader::new(b).map_err(header_error)?;
            // The size comes from the header: do not reserve more than the file holds.
            let mut data = Vec::with_capacity((samples * format.bytes()).min(b.len()));
            if format == SampleFormat::F32 {
                for s in reader.samples::<f32>() {
                    data.extend_from_slice(&s.map_err(data_error)?.to_le_bytes());
                }
            } else {
                for s in reader.samples::<i32>() {
                    let s = s.map_err(data_error)?;
                    match format {
                        // hound hands 8-bit samples over as signed (the byte minus 128).
                        SampleFormat::U8 => data.push((s + 128) as u8),
                        SampleFormat::S16 => data.extend_from_slice(&(s as i16).to_le_bytes()),
                        SampleFormat::S24 => data.extend_from_slice(&s.to_le_bytes()[..3]),
                        _ => data.extend_from_slice(&s.to_le_bytes()),
                    }
                }
            }
            data
        };
        Ok(Wav {
            rate: spec.sample_rate,
            channels: spec.channels,
            format,
            data,
        })
    }

    /// Encodes as a WAV file (with hound: PCMWAVEFORMAT up to two channels of 8 or 16 bits,
    /// WAVEFORMATEXTENSIBLE otherwise). Whole frames only: a partial last frame is left out.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WavError> {
        let (sample_format, bits_per_sample) = self.format.hound();
        let frame = self.format.bytes() * self.channels as usize;
        if self.channels == 0 || self.rate == 0 {
            return Err(WavError("zero channels or rate".to_string()));
        }
        let data = &self.data[..self.frames() * frame];
        // The header's sizes are 32-bit: the RIFF size counts the data and 60 more bytes at
        // most, and a frame's size is a 16-bit field.
        if data.len() > u32::MAX as usize - 60 || frame > u16::MAX as usize {
            return Err(WavError(format!(
                "{} bytes of {} channels do not fit a WAV file",
                data.len(),
                self.channels
            )));
        }
        let spec = hound::WavSpec {
            channels: self.channels,
            sample_rate: self.rate,
            bits_per_sample,
            sample_format,
        };
        let mut out = std::io::Cursor::new(Vec::with_capacity(68 + data.len()));
        let write = |out: &mut std::io::Cursor<Vec<u8>>| -> hound::Result<()> {
            let mut w = hound::WavWriter::new(out, spec)?;
            for s in data.chunks_exact(self.format.bytes()) {
                match self.format {
                    // hound takes 8-bit samples as signed and writes them plus 128.
                    SampleFormat::U8 => w.write_sample((s[0] ^ 0x80) as i8)?,
                    SampleFormat::S16 => w.write_sample(i16::from_le_bytes([s[0], s[1]]))?,
                    SampleFormat::S24 => {
                        w.write_sample(i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8)?
                    }
                    SampleFormat::S32 => {
                        w.write_sample(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))?
                    }
                    SampleFormat::F32 => {
                        w.write_sample(f32::from_le_bytes([s[0], s[1], s[2], s[3]]))?
                    }
                }
            }
            w.finalize()
        };
        write(&mut out).map_err(|e| WavError(format!("writing a WAV file: {e}")))?;
        Ok(out.into_inner())
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

    /// A RIFF/WAVE file as the WAVEFORMAT layout has it: 8000 Hz, 2 channels, 16-bit PCM,
    /// two frames.
    const STEREO_S16: [u8; 52] = [
        b'R', b'I', b'F', b'F', 44, 0, 0, 0, b'W', b'A', b'V', b'E', //
        b'f', b'm', b't', b' ', 16, 0, 0, 0, // fmt chunk, 16 bytes
        1, 0, 2, 0, 0x40, 0x1f, 0, 0, // PCM, 2 channels, 8000 Hz
        0x00, 0x7d, 0, 0, 4, 0, 16, 0, // 32000 bytes/s, 4-byte frames, 16 bits
        b'd', b'a', b't', b'a', 8, 0, 0, 0, // data chunk, 8 bytes
        0x01, 0x00, 0xff, 0xff, 0x00, 0x80, 0xff, 0x7f,
    ];

    #[test]
    fn reads_and_writes_a_literal_file() {
        let w = Wav::parse(&STEREO_S16).unwrap();
        assert_eq!(
            w,
            Wav {
                rate: 8000,
                channels: 2,
                format: SampleFormat::S16,
                data: STEREO_S16[44..].to_vec(),
            }
        );
        assert_eq!(w.frames(), 2);
        assert_eq!(w.to_bytes().unwrap(), STEREO_S16);
    }

    /// 24-bit samples in 4-byte containers (frame size 4 for one channel): hound decodes them.
    #[test]
    fn reads_24_bits_in_4_bytes() {
        let mut b = STEREO_S16.to_vec();
        b[22] = 1; // 1 channel
        b[28..36].copy_from_slice(&[0x00, 0x7d, 0, 0, 4, 0, 24, 0]); // 32000 B/s, 4 bytes, 24 bits
        b[44..].copy_from_slice(&[1, 2, 3, 0, 0xfd, 0xfe, 0xff, 0]);
        let w = Wav::parse(&b).unwrap();
        assert_eq!((w.channels, w.format), (1, SampleFormat::S24));
        assert_eq!(w.data, [1, 2, 3, 0xfd, 0xfe, 0xff]);
    }

    #[test]
    fn round_trips_every_format() {
        for f in [
            SampleFormat::U8,
            SampleFormat::S16,
            SampleFormat::S24,
            SampleFormat::S32,
            SampleFormat::F32,
        ] {
            for channels in [1, 2, 6] {
                let w = Wav::sine(997.0, 48000, channels, f, 0.01);
                assert_eq!(w.frames(), 480);
                assert_eq!(Wav::parse(&w.to_bytes().unwrap()).unwrap(), w, "{f:?}");
            }
        }
        // Every byte value of 8-bit unsigned, and float bit patterns that are not numbers.
        let u8s = Wav {
            rate: 8000,
            channels: 1,
            format: SampleFormat::U8,
            data: (0..=255).collect(),
        };
        assert_eq!(Wav::parse(&u8s.to_bytes().unwrap()).unwrap(), u8s);
        let nan = Wav {
            rate: 8000,
            channels: 1,
            format: SampleFormat::F32,
            data: [0x7fc0_0001u32, 0xff80_0000, 0x8000_0000]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        };
        assert_eq!(Wav::parse(&nan.to_bytes().unwrap()).unwrap(), nan);
    }

    #[test]
    fn bad_files_say_why() {
        assert!(Wav::parse(b"hello").unwrap_err().0.contains("RIFF"));
        let mut w = STEREO_S16.to_vec();
        w.truncate(30);
        assert!(Wav::parse(&w).unwrap_err().0.contains("no data chunk"));
        let mut odd = STEREO_S16.to_vec();
        odd[34] = 12; // 12-bit PCM
        assert!(Wav::parse(&odd).unwrap_err().0.contains("unsupported"));
        let mut f64 = STEREO_S16.to_vec();
        f64[20] = 3; // IEEE float
        f64[28..36].copy_from_slice(&[0x00, 0xfa, 0, 0, 16, 0, 64, 0]); // 64-bit
        assert!(Wav::parse(&f64).unwrap_err().0.contains("unsupported"));
        let mut long = STEREO_S16.to_vec();
        long[40] = 12; // 12 bytes of data, 8 in the file
        let e = Wav::parse(&long).unwrap_err().0;
        assert!(e.contains("runs past the end of the file"), "{e}");
        let mut no_rate = STEREO_S16.to_vec();
        no_rate[24..32].fill(0);
        assert!(Wav::parse(&no_rate).unwrap_err().0.contains("rate"));
        let mut none = Wav::parse(&STEREO_S16).unwrap();
        none.channels = 0;
        assert!(none.to_bytes().unwrap_err().0.contains("channels"));
    }
}
