//! A device whose PCM_INFO and CTL_INFO say what no sane device says: every channel range,
//! rate and format masks that are empty or hold bits the spec does not define, directions
//! other than output and input, control ranges upside down or at the ends of i32, steps of 0
//! and below. The driver publishes what it can serve (and it plays), logs one line for what
//! it cannot, and never panics: these are debug builds, overflow checks are on.

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use common::Direct;
use common::*;
use driver::hmulti::{cards_for, Card, Settings};
use hmulti_client::{play, Choice, Session};
use hostile::{Control, Stream};
use proptest::prelude::*;
use snd_model::ModelConfig;

/// The driver crate's view of a device with `streams`: the cards it makes are the oracle's,
/// each publishes what the oracle says, each output plays bit-exact, and the log names every
/// stream left out.
fn check_streams(streams: &[Stream]) -> Result<(), String> {
    let mut rig = Rig::new(ModelConfig {
        streams: streams.iter().map(Stream::config).collect(),
        ..ModelConfig::default()
    });
    let engine = rig.start().map_err(|e| format!("engine: {e}"))?;
    let cards = cards_for(&engine);
    let want = hostile::cards(streams);
    if cards != want {
        return Err(format!("cards {cards:?}, expected {want:?}"));
    }
    hostile::check_stream_log(streams, &rig.kernel.log_lines())?;
    for (o, i) in cards {
        let card = Card::new(engine.clone(), o, i, Settings::default())
            .map_err(|e| format!("card {o:?}/{i:?}: {e}"))?;
        let d = Direct {
            card: &card,
            kernel: card.kernel(),
        };
        let mut c = Session::init(&d, Choice::default())?;
        let side = |id: Option<u32>| {
            id.and_then(|id| streams[id as usize].expected().ok())
                .map_or((0, 0, 0), |p| (p.channels, p.rates, p.formats))
        };
        let got_out = (
            c.desc.output_channel_count,
            c.desc.output_rates,
            c.desc.output_formats,
        );
        let got_in = (
            c.desc.input_channel_count,
            c.desc.input_rates,
            c.desc.input_formats,
        );
        if (got_out, got_in) != (side(o), side(i)) {
            return Err(format!(
                "card {o:?}/{i:?}: published {got_out:?}/{got_in:?}, expected {:?}/{:?}",
                side(o),
                side(i)
            ));
        }
        if let Some(o) = o {
            let input = signal(c.play.bytes() * 3, o);
            let p = play(&d, &mut c, &input);
            if p.errors != 0 {
                return Err(format!("stream {o}: {} exchanges failed", p.errors));
            }
            c.check_played(&rig.model.played(o), p.buffers * c.play.bytes(), &input)
                .map_err(|e| format!("stream {o}: {e}"))?;
        }
        c.release(&d);
        card.shutdown();
    }
    drop(engine);
    rig.finish(None);
    Ok(())
}

/// Every `channels_min` x `channels_max` pair (65536 streams, 256 devices of 256 output
/// streams each, the most a device may have): the cards are the oracle's and each stream
/// left out is logged once. The channel count a card publishes is checked where it can
/// differ (`channels_max` up to 17; above 16 it is the same as at 17) and at 255.
#[test]
fn every_channel_range() {
    for min in 0..=255u8 {
        let streams: Vec<Stream> = (0..=255u8).map(|max| Stream::good(0, min, max)).collect();
        let mut rig = Rig::new(ModelConfig {
            streams: streams.iter().map(Stream::config).collect(),
            ..ModelConfig::default()
        });
        let engine = rig.start().expect("a device with 256 streams starts");
        let cards = cards_for(&engine);
        assert_eq!(cards, hostile::cards(&streams), "channels_min {min}");
        hostile::check_stream_log(&streams, &rig.kernel.log_lines())
            .unwrap_or_else(|e| panic!("channels_min {min}: {e}"));
        for (o, _) in cards {
            let id = o.expect("outputs only");
            if (18..255).contains(&id) {
                continue;
            }
            let card = Card::new(engine.clone(), o, None, Settings::default())
                .unwrap_or_else(|e| panic!("stream {id} ({min}..={}): {e}", id));
            let want = streams[id as usize].expected().unwrap().channels;
            assert_eq!(
                card.output.as_ref().map(|s| s.layout.channels() as i32),
                Some(want),
                "channels {min}..={id}"
            );
            card.shutdown();
        }
        drop(engine);
        rig.finish(None);
    }
}

#[test]
fn corner_streams() {
    for streams in hostile::corner_streams() {
        check_streams(&streams).unwrap_or_else(|e| panic!("{streams:?}: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Devices of one to four streams with any PCM_INFO.
    #[test]
    fn any_pcm_info(streams in proptest::collection::vec(hostile::stream(), 1..=4)) {
        if let Err(e) = check_streams(&streams) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// QEMU's two streams and `controls`: the mixer offers what the oracle says, logs one line
/// for each control it skips, and every offered gain driven to the ends of f32 lands on a
/// value of the element.
fn check_controls(controls: &[Control]) -> Result<(), String> {
    let mut rig = Rig::new(hostile::device_with(controls));
    let card = rig.card(Settings::default());
    let c = Client::init(&card, None, None);
    hostile::check_mix_list(controls, &c.controls, &rig.kernel.log_lines())?;
    let d = Direct {
        card: &card,
        kernel: card.kernel(),
    };
    hostile::drive_gains(&d, controls, &c.controls, |i| rig.model.ctl_value(i))?;
    drop(c);
    rig.finish(Some(card));
    Ok(())
}

#[test]
fn corner_controls() {
    let all = hostile::corner_controls();
    check_controls(&all).unwrap_or_else(|e| panic!("{e}"));
    for c in all {
        check_controls(std::slice::from_ref(&c)).unwrap_or_else(|e| panic!("{e}"));
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
