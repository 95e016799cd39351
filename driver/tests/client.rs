//! The media-add-on client against the driver crate directly: the same bit-exact playback
//! the loaded add-on must give.

use std::sync::Arc;

mod common;
use common::Direct;

use driver::hmulti::{cards_for, Card, Settings};
use driver::virtio::{Engine, Options};
use hmulti_client::{play, Choice, Session};
use sim_kernel::SimKernel;
use snd_model::{ModelConfig, SndModel};
use spec::hmulti_audio as hm;

#[test]
fn client_plays_bit_exact_through_the_driver() {
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
    let input: Vec<u8> = (0..s.play.bytes() * 20)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let p = play(&d, &mut s, &input);
    assert_eq!(p.errors, 0);
    let played = model.played(0);
    let lead = p.buffers * s.play.bytes();
    s.check_played(&played, lead, &input)
        .unwrap_or_else(|e| panic!("after {} buffers of lead-in: {e}", p.buffers));
    assert!(!p.recorded.is_empty());
    assert!(model.recorded(1).starts_with(&p.recorded));
    s.release(&d);
    card.shutdown();
    Engine::shutdown(engine);
    kernel.user_free_all();
    kernel
        .check_clean()
        .unwrap_or_else(|p| panic!("{}", p.join("\n")));
}
