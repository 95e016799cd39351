//! The ioctl table under random operation sequences (the operation-enum fuzzing pattern):
//! any opcode, pointer and length, in any order, interleaved with the media add-on's real
//! calls. Nothing panics, every answer is a status, and nothing leaks.

mod common;

use common::*;
use driver::hmulti::Settings;
use proptest::prelude::*;
use snd_model::ModelConfig;
use spec::hmulti_audio::{self as hm, Opcode};

#[derive(Clone, Debug)]
enum Ptr {
    Null,
    Kernel,
    Unmapped,
    /// A user buffer of this many bytes filled with this byte.
    Buffer(usize, u8),
}

#[derive(Clone, Debug)]
enum Op {
    Raw {
        opcode: u32,
        ptr: Ptr,
        length: usize,
    },
    Init,
    Exchange,
    ForceStop,
}

fn op() -> impl Strategy<Value = Op> {
    let opcode = prop_oneof![
        (0usize..Opcode::ALL.len()).prop_map(|i| Opcode::ALL[i] as u32),
        any::<u32>(),
    ];
    let ptr = prop_oneof![
        Just(Ptr::Null),
        Just(Ptr::Kernel),
        Just(Ptr::Unmapped),
        (0usize..600, any::<u8>()).prop_map(|(n, b)| Ptr::Buffer(n, b)),
    ];
    prop_oneof![
        6 => (opcode, ptr, 0usize..600).prop_map(|(opcode, ptr, length)| Op::Raw { opcode, ptr, length }),
        1 => Just(Op::Init),
        2 => Just(Op::Exchange),
        1 => Just(Op::ForceStop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_ioctl_sequences(ops in proptest::collection::vec(op(), 1..40)) {
        let mut rig = Rig::new(ModelConfig::default());
        let card = rig.card(Settings::default());
        let k = card.kernel();
        let mut client: Option<Client> = None;
        for o in ops {
            match o {
                Op::Raw { opcode, ptr, length } => {
                    let (addr, owned) = match ptr {
                        Ptr::Null => (0, None),
                        Ptr::Kernel => (0xffff_ff00_0000_1000, None),
                        Ptr::Unmapped => (0x6fff_0000_0000, None),
                        Ptr::Buffer(n, b) => {
                            let a = k.user_alloc(n.max(1));
                            k.user_write(a, &vec![b; n.max(1)]);
                            (a, Some(a))
                        }
                    };
                    let _ = card.dispatch(opcode, addr, length);
                    if let Some(a) = owned {
                        k.user_free(a);
                    }
                }
                Op::Init => client = Some(Client::init(&card, None, Some(hm::B_FMT_16BIT))),
                Op::Exchange => {
                    if let Some(c) = client.as_mut() {
                        let _ = c.exchange(&card);
                        let n = c.list.return_playback_buffers.max(1) as usize;
                        let cycle = c.info.playback_buffer_cycle;
                        // Random GET_BUFFERS calls may have replaced the buffers this client
                        // knows: write through the old address and accept a refusal.
                        if let Some(d) = c.play.descs.get(((cycle.max(0) as usize) + n - 1) % n).and_then(|b| b.first()) {
                            let _ = k.area_user_write(d.base.addr(), &vec![1u8; c.play.bytes()]);
                        }
                    }
                }
                Op::ForceStop => {
                    let _ = card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1);
                }
            }
        }
        rig.finish(Some(card));
    }
}
