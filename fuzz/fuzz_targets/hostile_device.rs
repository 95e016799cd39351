//! A hostile device: the fuzzer decides every control answer (status, `used_len`, each byte
//! of PCM_INFO, CHMAP_INFO, CTL_INFO, ENUM_ITEMS and TLV payloads), every tx/rx status and
//! `used_len`, event payloads, the config space's counts, and used-ring entries naming
//! descriptors never posted or already returned, from init through playback, capture, a
//! format change and teardown. The driver never panics (overflow checks are on), never makes
//! the simulated kernel record a misuse (an access outside an area, a freed area under a
//! chain), leaks nothing it did not log, and no run takes longer than its timeouts allow.
//! The client's memory is watched ([`Witnessed`]): nothing is written past the end of an
//! argument block the client handed over, and nothing into the playback buffers but the
//! client's own writes, whatever the device answered.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use snd_model::{
    CaptureCompletion, ControlConfig, Hostile, JackConfig, ModelConfig, PlaybackCompletion,
};
use spec::virtio_snd::DeviceEvent;
use virtio_sound_fuzz::{assert_clean_but_logged_leaks, signal, Rig, Tape, Witnessed};

use hmulti_client::{play, Choice, Session};

/// The device's decisions, read from the same tape as the run's.
struct Liar(Arc<Mutex<Tape>>);

impl Liar {
    fn tape(&self) -> std::sync::MutexGuard<'_, Tape> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A `used_len` a liar reports instead of `normal`.
fn lie_len(t: &mut Tape, normal: u32) -> u32 {
    match t.u8() % 4 {
        0 => 0,
        1 => normal.saturating_sub(u32::from(t.u8())),
        2 => normal.saturating_add(u32::from(t.u16())),
        _ => t.u32(),
    }
}

impl Hostile for Liar {
    fn control(&mut self, _request: &[u8], reply: &mut Vec<u8>, used_len: &mut u32) {
        let mut t = self.tape();
        // One decision byte per answer; most answers stay honest so runs get far.
        let what = t.u8();
        if what < 160 {
            return;
        }
        if what & 1 != 0 && reply.len() >= 4 {
            let status: u32 = match t.u8() % 5 {
                0 => 0x8001,
                1 => 0x8002,
                2 => 0x8003,
                _ => t.u32(),
            };
            reply[..4].copy_from_slice(&status.to_le_bytes());
        }
        if what & 2 != 0 {
            *used_len = lie_len(&mut t, *used_len);
        }
        if what & 4 != 0 && !reply.is_empty() {
            // Payload bytes: any field of any item.
            for _ in 0..1 + t.u8() % 8 {
                let at = t.below(reply.len());
                reply[at] = t.u8();
            }
        }
        if what & 8 != 0 {
            let n = t.below(reply.len() + 1);
            reply.truncate(n);
        }
    }

    fn io(&mut self, _queue: u16, status: &mut [u8; 8], used_len: &mut u32) {
        let mut t = self.tape();
        let what = t.u8();
        if what < 200 {
            return;
        }
        if what & 1 != 0 {
            status[..4].copy_from_slice(&t.u32().to_le_bytes());
        }
        if what & 2 != 0 {
            status[4..].copy_from_slice(&t.u32().to_le_bytes());
        }
        if what & 4 != 0 {
            *used_len = lie_len(&mut t, *used_len);
        }
    }

    fn event(&mut self, bytes: &mut [u8; 8], used_len: &mut u32) {
        let mut t = self.tape();
        if t.u8() < 128 {
            return;
        }
        for b in bytes.iter_mut() {
            *b ^= t.u8();
        }
        *used_len = lie_len(&mut t, *used_len);
    }

    fn config(&mut self, space: &mut [u8; 16]) {
        let mut t = self.tape();
        if t.u8() < 192 {
            return;
        }
        let at = t.below(4) * 4;
        let v = match t.u8() % 3 {
            0 => u32::from(t.u8()),
            1 => u32::from(t.u16()),
            _ => t.u32(),
        };
        space[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn extra_used(&mut self, _queue: u16, returned: &[u64]) -> Vec<(u64, u32)> {
        let mut t = self.tape();
        let what = t.u8();
        if what < 224 {
            return Vec::new();
        }
        let len = u32::from(t.u16());
        if what & 1 != 0 && !returned.is_empty() {
            vec![(returned[t.below(returned.len())], len)]
        } else {
            vec![(t.u64(), len)]
        }
    }
}

/// The device as described before any lie: streams, jacks and controls from the tape.
fn config(t: &mut Tape) -> ModelConfig {
    let channels = 1 + t.u8() % 4;
    let mut c = ModelConfig::hmulti_full(channels);
    let flags = t.u8();
    if flags & 1 != 0 {
        c.offer_ctls = true;
        c.controls = vec![
            ControlConfig::integer("Master Playback Volume", 0, 2, -60, 0, -10)
                .with_tlv(1, &[0, 0, 0, 0, 100, 0, 0, 0]),
            ControlConfig::boolean("Master Playback Switch", 0, 1, true),
            ControlConfig::enumerated("Capture Source", &["Mic", "Line"], 0),
        ];
    }
    if flags & 2 != 0 {
        c.jacks = vec![JackConfig::default()];
    }
    if flags & 4 != 0 {
        c.queue_size = 2 + u16::from(t.u8() % 30);
    }
    if flags & 8 != 0 {
        c.takes_ahead_frames = u64::from(t.u16());
    }
    c.capture = match t.u8() % 4 {
        0 => CaptureCompletion::AtRelease,
        1 => CaptureCompletion::Never,
        _ => CaptureCompletion::Paced,
    };
    if flags & 16 != 0 {
        c.playback = PlaybackCompletion::Instant;
    }
    c.control_latency = i64::from(t.u16() % 2000);
    c
}

fn event(t: &mut Tape) -> DeviceEvent {
    let id = t.u32();
    match t.u8() % 5 {
        0 => DeviceEvent::JackConnected { jack_id: id },
        1 => DeviceEvent::JackDisconnected { jack_id: id },
        2 => DeviceEvent::PcmPeriodElapsed { stream_id: id },
        3 => DeviceEvent::PcmXrun { stream_id: id },
        _ => DeviceEvent::CtlNotify {
            control_id: id as u16,
            mask: (id >> 16) as u16,
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let tape = Arc::new(Mutex::new(Tape::new(data)));
    let cfg = config(&mut tape.lock().unwrap());
    let mut rig = Rig::new(cfg);
    rig.model.set_hostile(Some(Box::new(Liar(tape.clone()))));
    let start = rig.kernel.clock().now();
    rig.start();
    let cards = rig.cards();
    // Decisions the run takes (not the device): which format, how long, when events come.
    let next = |f: &mut dyn FnMut(&mut Tape) -> u32| -> u32 {
        let mut t = tape.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut t)
    };
    for card in &cards {
        let d = Witnessed::new(card);
        for round in 0..2 {
            let rate = next(&mut |t| u32::from(t.u8() % 17));
            let format = next(&mut |t| u32::from(t.u8() % 8));
            let choice = if round == 0 {
                Choice::default()
            } else {
                Choice {
                    rate: Some(1 << rate),
                    format: Some(1 << format),
                }
            };
            let Ok(mut s) = Session::init(&d, choice) else {
                continue;
            };
            for _ in 0..next(&mut |t| u32::from(t.u8() % 3)) {
                let e = {
                    let mut t = tape.lock().unwrap_or_else(|e| e.into_inner());
                    event(&mut t)
                };
                rig.model.inject_event(e);
            }
            let periods = 1 + next(&mut |t| u32::from(t.u8() % 4)) as usize;
            let input = signal(s.play.bytes().min(1 << 16) * periods, rate);
            let _ = play(&d, &mut s, &input);
            s.release(&d);
            d.check("after the session");
        }
    }
    rig.shutdown(cards);
    // Simulated time: init's requests, two sessions of a few periods at 5.5 kHz or more, and
    // every control request timing out (1 s each) fits in well under this.
    let took = rig.kernel.clock().now() - start;
    assert!(
        took < 600_000_000,
        "the run took {took} µs of simulated time"
    );
    rig.model.set_hostile(None);
    assert_clean_but_logged_leaks(&rig.kernel);
});
