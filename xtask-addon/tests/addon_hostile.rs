//! The add-on built with overflow checks (`cargo xtask build-haiku --overflow-checks`, into
//! its own directory) over devices whose PCM_INFO and CTL_INFO are hostile: channel ranges
//! empty, upside down or above what a card publishes, rate and format masks empty or of
//! bits the spec does not define, directions other than output and input, control ranges
//! upside down or at the ends of i32, steps of 0 and below. The add-on publishes what it
//! can serve (and it plays), logs one line for each stream or control it leaves out, and
//! never panics: a panic is a kernel panic, which aborts this test binary with its message.
//! The expectations are the shared oracle's (`driver/tests/common/hostile.rs`), written out
//! from the virtio spec and hmulti_audio.h.

#[path = "../../driver/tests/common/hostile.rs"]
mod hostile;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use haiku_sim::addon::Addon;
use hmulti_client::{play, Choice, Session};
use hostile::{Control, Stream};
use proptest::prelude::*;
use snd_model::ModelConfig;

/// Builds the overflow-checked add-on once per test binary.
fn addon() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Command::new(env!("CARGO_BIN_EXE_xtask-addon"))
            .args(["build-haiku", "--overflow-checks"])
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build-haiku --overflow-checks: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        root.join("target/haiku/overflow-checks/virtio_sound")
    })
}

/// Ids Haiku's device id generator hands out per generator.
const GENERATOR_MAX_ID: usize = 64;

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32 * 131 + seed * 17) % 251) as u8)
        .collect()
}

/// Loads the add-on over a device with `streams`: it publishes the oracle's cards, each
/// with the oracle's channels, rates and formats, each output plays bit-exact, the log
/// names every stream left out, and everything unloads clean. `play_all`: play every card's
/// output (else only the first card's).
fn check_streams(streams: &[Stream], play_all: bool) -> Result<(), String> {
    let cfg = ModelConfig {
        streams: streams.iter().map(Stream::config).collect(),
        ..ModelConfig::default()
    };
    let a = Addon::load(addon(), cfg, None)?;
    let mut want = hostile::cards(streams);
    let lines = a.kernel().log_lines();
    // Haiku's id generator has 64 ids (GENERATOR_MAX_ID): the cards after the 64th are
    // not published, with one line saying so.
    let no_id: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("no device id left"))
        .collect();
    if want.len() > GENERATOR_MAX_ID {
        let says = format!("cards {} to {}", GENERATOR_MAX_ID + 1, want.len());
        if no_id.len() != 1 || !no_id[0].contains(&says) {
            return Err(format!("one line with {says:?} expected: {no_id:?}"));
        }
        want.truncate(GENERATOR_MAX_ID);
    } else if !no_id.is_empty() {
        return Err(format!("{no_id:?}"));
    }
    if a.paths.len() != want.len() {
        return Err(format!("published {:?}, expected cards {want:?}", a.paths));
    }
    hostile::check_stream_log(streams, &lines)?;
    for (n, (path, &(o, i))) in a.paths.iter().zip(&want).enumerate() {
        let d = a.open(path)?;
        let mut s = Session::init(&d, Choice::default())?;
        let side = |id: Option<u32>| {
            id.and_then(|id| streams[id as usize].expected().ok())
                .map_or((0, 0, 0), |p| (p.channels, p.rates, p.formats))
        };
        let got = (
            (
                s.desc.output_channel_count,
                s.desc.output_rates,
                s.desc.output_formats,
            ),
            (
                s.desc.input_channel_count,
                s.desc.input_rates,
                s.desc.input_formats,
            ),
        );
        if got != (side(o), side(i)) {
            return Err(format!(
                "{path} ({o:?}/{i:?}): published {got:?}, expected {:?}/{:?}",
                side(o),
                side(i)
            ));
        }
        if let (Some(o), true) = (o, play_all || n == 0) {
            let input = pattern(s.play.bytes() * 3, o);
            let p = play(&d, &mut s, &input);
            if p.errors != 0 {
                return Err(format!("stream {o}: {} exchanges failed", p.errors));
            }
            s.check_played(&a.model().played(o), p.buffers * s.play.bytes(), &input)
                .map_err(|e| format!("stream {o}: {e}"))?;
        }
        s.release(&d);
        let closed = d.close();
        if closed != 0 {
            return Err(format!("{path}: close answered {closed:#x}"));
        }
    }
    a.model().assert_no_violations();
    a.unload().map_err(|v| v.join("\n"))
}

/// The measured panic first: `cargo xtask sim --channels 40` and a device config with
/// `channels = [255, 255]` ended in "min > max. min = 40, max = 16" at open.
#[test]
fn corner_streams() {
    for streams in hostile::corner_streams() {
        check_streams(&streams, true).unwrap_or_else(|e| panic!("{streams:?}: {e}"));
    }
}

/// Rows of the `channels_min` x `channels_max` grid where the outcome changes (every
/// `channels_max` for these `channels_min`), each a device of 256 output streams; the
/// driver crate's test covers the whole grid.
#[test]
fn channel_range_rows() {
    for min in [0u8, 1, 2, 3, 15, 16, 17, 40, 128, 254, 255] {
        let streams: Vec<Stream> = (0..=255u8).map(|max| Stream::good(0, min, max)).collect();
        check_streams(&streams, false).unwrap_or_else(|e| panic!("channels_min {min}: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Devices of one to four streams with any PCM_INFO.
    #[test]
    fn any_pcm_info(streams in proptest::collection::vec(hostile::stream(), 1..=4)) {
        if let Err(e) = check_streams(&streams, true) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// QEMU's two streams and `controls`: the mixer offers what the oracle says, logs one line
/// for each control it skips, and every offered gain driven to the ends of f32 lands on a
/// value of the element (the model records any value outside it as a violation).
fn check_controls(controls: &[Control]) -> Result<(), String> {
    let cfg = hostile::device_with(controls);
    let a = Addon::load(addon(), cfg, None)?;
    let d = a.open_first()?;
    let s = Session::init(&d, Choice::default())?;
    hostile::check_mix_list(controls, &s.controls, &a.kernel().log_lines())?;
    hostile::drive_gains(&d, controls, &s.controls, |i| a.model().ctl_value(i))?;
    s.release(&d);
    drop(d);
    a.model().assert_no_violations();
    a.unload().map_err(|v| v.join("\n"))
}

#[test]
fn corner_controls() {
    let all = hostile::corner_controls();
    check_controls(&all).unwrap_or_else(|e| panic!("{e}"));
    for c in all {
        check_controls(std::slice::from_ref(&c)).unwrap_or_else(|e| panic!("{c:?}: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// One to six controls with any CTL_INFO range, step and count.
    #[test]
    fn any_ctl_info(controls in proptest::collection::vec(hostile::control(), 1..=6)) {
        if let Err(e) = check_controls(&controls) {
            return Err(TestCaseError::fail(e));
        }
    }
}
