//! The media-add-on client against the driver crate directly: the same bit-exact playback
//! the loaded add-on must give.

use std::sync::Arc;

mod common;
use common::Direct;

use driver::hmulti::{cards_for, Card, Settings};
use driver::virtio::{Engine, Options};
use hmulti_client::{play, play_observed, Choice, Session};
use sim_kernel::SimKernel;
use snd_model::{Fault, FaultTarget, ModelConfig, SndModel};
use spec::hmulti_audio as hm;

/// A card of the default device with a media-add-on session at 48 kHz, 16 bits, handed to
/// `f`; then everything is shut down and the kernel must be clean.
fn with_session(f: impl FnOnce(&Direct<'_>, &mut Session, &SndModel)) {
    let kernel = Arc::new(SimKernel::new());
    let model = Arc::new(SndModel::new(&kernel, ModelConfig::default()));
    let engine = Engine::start(kernel.clone(), model.clone(), Options::default()).unwrap();
    let (o, i) = cards_for(&engine)[0];
    let card = Card::new(engine.clone(), o, i, Settings::default()).unwrap();
    let d = Direct {
        card: &card,
        kernel: &kernel,
    };
    let mut s = Session::init(
        &d,
        Choice {
            rate: Some(hm::B_SR_48000),
            format: Some(hm::B_FMT_16BIT),
        },
    )
    .unwrap();
    f(&d, &mut s, &model);
    s.release(&d);
    card.shutdown();
    Engine::shutdown(engine);
    kernel.user_free_all();
    kernel
        .check_clean()
        .unwrap_or_else(|p| panic!("{}", p.join("\n")));
}

#[test]
fn client_plays_bit_exact_through_the_driver() {
    with_session(|d, s, model| {
        let input: Vec<u8> = (0..s.play.bytes() * 20)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let p = play(d, s, &input);
        assert_eq!(p.errors, 0);
        let played = model.played(0);
        let lead = p.buffers * s.play.bytes();
        s.check_played(&played, lead, &input)
            .unwrap_or_else(|e| panic!("after {} buffers of lead-in: {e}", p.buffers));
        assert!(!p.recorded.is_empty());
        assert!(model.recorded(1).starts_with(&p.recorded));
    });
}

/// An exchange that fails (here: one playback period comes back 60 ms late, past the
/// exchange's 4-period timeout) leaves the playback cycle as it was, and the client must not
/// fill that buffer again: the media add-on fills one only when the cycle changed
/// (`MultiAudioNode::_OutputThread`'s `fOldBufferCycle`). Filling it again would write the
/// next piece of the input over the one not yet queued, and a buffer of sound would never
/// play. The device plays the whole input in order, with the error in between.
#[test]
fn a_failed_exchange_loses_no_buffer_of_sound() {
    with_session(|d, s, model| {
        let input: Vec<u8> = (0..s.play.bytes() * 30)
            .map(|i| (i * 13 % 253) as u8)
            .collect();
        let p = play_observed(d, s, &input, |k| {
            if k == 10 {
                // The next period the device completes comes back 60 ms late.
                model.set_fault_times(FaultTarget::Tx, Fault::Delay(60_000), 1);
            }
        });
        assert!(p.errors >= 1, "an exchange timed out");
        let played = model.played(0);
        let lead = p.buffers * s.play.bytes();
        s.check_played(&played, lead, &input)
            .unwrap_or_else(|e| panic!("{} errors: {e}", p.errors));
    });
}
