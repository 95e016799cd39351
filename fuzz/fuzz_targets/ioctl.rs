//! The ioctl surface, as any program that opens the device reaches it: sequences of opcodes,
//! lengths and argument bytes with pointers nested in them, interleaved with the media
//! add-on's real calls, against the driver's card over the simulated kernel and the device
//! model. Nothing panics, nothing leaks, the device sees no spec violation, and afterwards a
//! normal session still plays bit-exact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snd_model::ModelConfig;
use spec::hmulti_audio::{self as hm, Opcode};
use virtio_sound_fuzz::{assert_clean_but_logged_leaks, signal, Direct, Rig, Tape, Witnessed};

use hmulti_client::{play, Choice, Hmulti, Session};

/// Most ops in one input: the simulated time they take is what bounds a run.
const MAX_OPS: usize = 64;
/// The largest argument buffer the fuzzer makes (hmulti's structures are at most a few KB).
const MAX_ARG: usize = 4096;

/// A pointer value for an argument or for a pointer inside one.
fn pointer(t: &mut Tape, k: &sim_kernel::SimKernel, owned: &mut Vec<u64>, depth: u32) -> u64 {
    match t.u8() % 6 {
        0 => 0,
        1 => 0xffff_ff00_0000_1000 + u64::from(t.u16()),
        2 => 0x6fff_0000_0000 + u64::from(t.u16()),
        3 => t.u64(),
        _ => {
            let n = t.below(MAX_ARG).max(1);
            let a = k.user_alloc(n);
            owned.push(a);
            let mut bytes = t.bytes(n.min(256));
            bytes.resize(n, t.u8());
            // Pointers inside: at fuzzer-chosen 8-byte slots, to more fuzzer memory.
            if depth < 2 {
                for _ in 0..t.u8() % 4 {
                    let at = t.below(n / 8 + 1) * 8;
                    let p = pointer(t, k, owned, depth + 1);
                    if at + 8 <= n {
                        bytes[at..at + 8].copy_from_slice(&p.to_le_bytes());
                    }
                }
            }
            k.user_write(a, &bytes);
            a
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut t = Tape::new(data);
    let channels = 1 + t.u8() % 8;
    let mut rig = Rig::new(ModelConfig::hmulti_full(channels));
    assert!(rig.start().is_some(), "the driver starts on a sane device");
    let mut cards = rig.cards();
    assert_eq!(cards.len(), 1, "one card for one output and one input");
    let card = cards.pop().expect("checked");
    let d = Direct(&card);
    let k = card.kernel();
    let mut session: Option<Session> = None;
    let mut ops = 0;
    while !t.is_empty() && ops < MAX_OPS {
        ops += 1;
        match t.u8() % 8 {
            0..=3 => {
                let opcode = if t.u8().is_multiple_of(4) {
                    t.u32()
                } else {
                    Opcode::ALL[t.below(Opcode::ALL.len())] as u32
                };
                let mut owned = Vec::new();
                let addr = pointer(&mut t, k, &mut owned, 0);
                let length = match t.u8() % 4 {
                    0 => t.u32() as usize,
                    _ => usize::from(t.u16()) % (MAX_ARG + 64),
                };
                let _ = card.dispatch(opcode, addr, length);
                for a in owned {
                    k.user_free(a);
                }
            }
            4 => {
                if let Some(old) = session.take() {
                    old.release(&d);
                }
                let rate = (t.u8().is_multiple_of(2)).then(|| 1u32 << (t.u8() % 17));
                let format = (t.u8().is_multiple_of(2)).then(|| 1u32 << (t.u8() % 8));
                session = Session::init(&d, Choice { rate, format }).ok();
            }
            5 | 6 => {
                if let Some(s) = session.as_mut() {
                    let _ = s.exchange(&d);
                    let n = s.play.len().max(1);
                    let cycle = s.info.playback_buffer_cycle;
                    if (0..n as i32).contains(&cycle) {
                        let fill = signal(s.play.bytes(), u32::from(t.u8()));
                        // Buffers replaced by a fuzzed GET_BUFFERS may refuse the write.
                        let _ = s.play.write(&d, (cycle as usize + n - 1) % n, &fill);
                    }
                }
            }
            _ => {
                let _ = d.ioctl(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1);
            }
        }
    }
    if let Some(old) = session.take() {
        let _ = old.force_stop(&d);
        old.release(&d);
    }
    // Whatever came before, the media add-on's normal session plays bit-exact, and writes
    // nowhere it should not.
    let d = Witnessed::new(&card);
    let before = rig.model.played(0).len();
    let mut s = Session::init(&d, Choice::default()).expect("a normal session starts");
    let input = signal(s.play.bytes() * 3, 7);
    let p = play(&d, &mut s, &input);
    assert_eq!(p.errors, 0, "exchanges failed in the normal session");
    let played = rig.model.played(0);
    s.check_played(&played[before..], p.buffers * s.play.bytes(), &input)
        .unwrap_or_else(|e| panic!("the normal session after the sequence: {e}"));
    s.release(&d);
    rig.shutdown(vec![card]);
    rig.model.assert_no_violations();
    assert_clean_but_logged_leaks(&rig.kernel);
});
