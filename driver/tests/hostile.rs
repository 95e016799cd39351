//! Every opcode with hostile arguments: null, kernel-range and unmapped pointers, lengths and
//! counts at and past every limit, unknown opcodes. Only status codes come back; the
//! simulated kernel records any access outside user_memcpy or any leak.

mod common;

use common::*;
use driver::hmulti::Settings;
use platform::Status;
use snd_model::ModelConfig;
use spec::hmulti_audio::{self as hm, Opcode};
use spec::UserPtr;

const KERNEL_PTR: u64 = 0xffff_ff00_1234_0000;
/// In the user range but never mapped.
const UNMAPPED: u64 = 0x7000_0000_0000;

fn size_of_arg(op: Opcode) -> usize {
    match op {
        Opcode::GetDescription => 272,
        Opcode::GetEnabledChannels | Opcode::SetEnabledChannels => 40,
        Opcode::GetGlobalFormat | Opcode::SetGlobalFormat => 104,
        Opcode::GetBuffers | Opcode::SetBuffers => 96,
        Opcode::BufferExchange => 112,
        Opcode::ListMixControls | Opcode::ListMixConnections | Opcode::ListExtensions => 24,
        Opcode::GetMix | Opcode::SetMix => 32,
        Opcode::ListMixChannels => 40,
        Opcode::GetEventInfo | Opcode::SetEventInfo => 40,
        Opcode::GetEvent => 472,
        Opcode::GetChannelFormats | Opcode::SetChannelFormats => 56,
        Opcode::GetExtension | Opcode::SetExtension => 48,
        Opcode::ListModes => 32,
        Opcode::GetMode | Opcode::SetMode => 4,
        Opcode::SetStartTime => 8,
        Opcode::BufferForceStop => 0,
    }
}

#[test]
fn bad_pointers_and_lengths_get_status_codes() {
    let mut rig = Rig::new(ModelConfig::default());
    let card = rig.card(Settings::default());
    let _client = Client::init(&card, None, None);
    for &op in Opcode::ALL {
        let size = size_of_arg(op);
        if op == Opcode::BufferForceStop {
            assert!(card.dispatch(op as u32, 0, 0).is_ok());
            continue;
        }
        assert_eq!(
            card.dispatch(op as u32, 0, size),
            Err(Status::BAD_ADDRESS),
            "{op:?} null"
        );
        assert_eq!(
            card.dispatch(op as u32, KERNEL_PTR, size),
            Err(Status::BAD_ADDRESS),
            "{op:?} kernel pointer"
        );
        let r = card.dispatch(op as u32, UNMAPPED, size);
        if Card::HANDLED.contains(&op) {
            assert_eq!(r, Err(Status::BAD_ADDRESS), "{op:?} unmapped");
        } else {
            assert_eq!(r, Err(Status::DEV_INVALID_IOCTL), "{op:?} has no handler");
        }
        if size > 1 {
            let addr = card.kernel().user_alloc(size);
            assert_eq!(
                card.dispatch(op as u32, addr, size - 1),
                Err(Status::BAD_VALUE),
                "{op:?} short length"
            );
            card.kernel().user_free(addr);
        }
        // An argument that runs off the end of its mapping.
        let page = 0x6000_0000_0000u64;
        card.kernel().user_map_at(page, 4096).unwrap();
        if Card::HANDLED.contains(&op) {
            let addr = page + 4096 - (size as u64 / 2).max(1);
            assert_eq!(
                card.dispatch(op as u32, addr, size),
                Err(Status::BAD_ADDRESS),
                "{op:?} straddles"
            );
        }
        card.kernel().user_free(page);
    }
    for bad in [0u32, 1, 8019, 8046, 0xffff_ffff] {
        assert_eq!(
            card.dispatch(bad, 0x1000_0000, 8),
            Err(Status::DEV_INVALID_IOCTL)
        );
    }
    rig.finish(Some(card));
}

type Card = TestCard;

#[test]
fn nested_pointers_are_user_pointers_too() {
    let mut rig = Rig::new(ModelConfig::default());
    let card = rig.card(Settings::default());
    let k = card.kernel();
    // GET_DESCRIPTION with an unmapped or kernel channel array, and with room for 1.
    for bad in [UNMAPPED, KERNEL_PTR, 0] {
        let mut d: hm::MultiDescription = garbage();
        d.request_channel_count = 32;
        d.channels = UserPtr::from_addr(bad);
        assert_eq!(
            ioctl(&card, hm::B_MULTI_GET_DESCRIPTION, &mut d),
            Err(Status::BAD_ADDRESS)
        );
    }
    let one = k.user_alloc(32);
    let mut d: hm::MultiDescription = garbage();
    d.request_channel_count = 1;
    d.channels = UserPtr::from_addr(one);
    ioctl(&card, hm::B_MULTI_GET_DESCRIPTION, &mut d).expect("room for one channel is fine");
    assert_eq!(d.output_channel_count, 2);
    for count in [0, -1, i32::MIN] {
        d.request_channel_count = count;
        d.channels = UserPtr::from_addr(UNMAPPED);
        ioctl(&card, hm::B_MULTI_GET_DESCRIPTION, &mut d).expect("no room: nothing written");
    }
    // Enable bits that are not mapped.
    let mut e: hm::MultiChannelEnable = garbage();
    e.enable_bits = UserPtr::from_addr(UNMAPPED);
    assert_eq!(
        ioctl(&card, hm::B_MULTI_GET_ENABLED_CHANNELS, &mut e),
        Err(Status::BAD_ADDRESS)
    );
    assert_eq!(
        ioctl(&card, hm::B_MULTI_SET_ENABLED_CHANNELS, &mut e),
        Err(Status::BAD_ADDRESS)
    );
    // GET_BUFFERS: a table pointer, then a descriptor block, that are not mapped; too few
    // buffers or channels; absurd counts.
    let mut l: hm::MultiBufferList = garbage();
    l.request_playback_buffers = 32;
    l.request_playback_channels = 2;
    l.request_record_buffers = 32;
    l.request_record_channels = 2;
    l.request_playback_buffer_size = 0;
    l.request_record_buffer_size = 0;
    l.playback_buffers = UserPtr::from_addr(UNMAPPED);
    l.record_buffers = UserPtr::from_addr(UNMAPPED);
    assert_eq!(
        ioctl(&card, hm::B_MULTI_GET_BUFFERS, &mut l),
        Err(Status::BAD_ADDRESS)
    );
    let table = k.user_alloc(32 * 8);
    for i in 0..32u64 {
        k.user_write(table + i * 8, &UNMAPPED.to_le_bytes());
    }
    l.playback_buffers = UserPtr::from_addr(table);
    l.record_buffers = UserPtr::from_addr(table);
    assert_eq!(
        ioctl(&card, hm::B_MULTI_GET_BUFFERS, &mut l),
        Err(Status::BAD_ADDRESS)
    );
    for (bufs, chans) in [
        (1, 2),
        (0, 2),
        (-5, 2),
        (32, 1),
        (32, -1),
        (i32::MAX, i32::MIN),
    ] {
        let mut m = l;
        m.request_playback_buffers = bufs;
        m.request_playback_channels = chans;
        assert_eq!(
            ioctl(&card, hm::B_MULTI_GET_BUFFERS, &mut m),
            Err(Status::BAD_VALUE),
            "{bufs} buffers, {chans} channels"
        );
    }
    // Mix calls with bad arrays and counts.
    let mut m: hm::MultiMixControlInfo = garbage();
    m.control_count = -1;
    assert_eq!(
        ioctl(&card, hm::B_MULTI_LIST_MIX_CONTROLS, &mut m),
        Err(Status::BAD_VALUE)
    );
    let mut v: hm::MultiMixValueInfo = garbage();
    for count in [-1, 513, i32::MAX] {
        v.item_count = count;
        assert_eq!(
            ioctl(&card, hm::B_MULTI_GET_MIX, &mut v),
            Err(Status::BAD_VALUE)
        );
        assert_eq!(
            ioctl(&card, hm::B_MULTI_SET_MIX, &mut v),
            Err(Status::BAD_VALUE)
        );
    }
    v.item_count = 2;
    v.values = UserPtr::from_addr(UNMAPPED);
    assert_eq!(
        ioctl(&card, hm::B_MULTI_GET_MIX, &mut v),
        Err(Status::BAD_ADDRESS)
    );
    // A value id that is no control.
    let val = k.user_alloc(24);
    k.user_write(val, &[0xff; 24]);
    v.item_count = 1;
    v.values = UserPtr::from_addr(val);
    assert_eq!(
        ioctl(&card, hm::B_MULTI_GET_MIX, &mut v),
        Err(Status::BAD_VALUE)
    );
    assert_eq!(
        ioctl(&card, hm::B_MULTI_SET_MIX, &mut v),
        Err(Status::BAD_VALUE)
    );
    // Exchange with no buffers yet: an error, after a wait.
    let info = user_value(k, &garbage::<hm::MultiBufferInfo>());
    assert_eq!(
        card.dispatch(hm::B_MULTI_BUFFER_EXCHANGE, info, 112),
        Err(Status::NO_INIT)
    );
    rig.finish(Some(card));
}

#[test]
fn only_driver_written_fields_change() {
    let mut rig = Rig::new(ModelConfig::default());
    let card = rig.card(Settings::default());
    let k = card.kernel();
    let chans = k.user_alloc(32 * 32);
    let mut d: hm::MultiDescription = garbage();
    d.request_channel_count = 32;
    d.channels = UserPtr::from_addr(chans);
    let before = d;
    ioctl(&card, hm::B_MULTI_GET_DESCRIPTION, &mut d).unwrap();
    let (b, a) = (
        zerocopy::IntoBytes::as_bytes(&before),
        zerocopy::IntoBytes::as_bytes(&d),
    );
    for (i, (x, y)) in b.iter().zip(a).enumerate() {
        let owned = hm::MultiDescription::DRIVER_WRITES
            .iter()
            .any(|&(_, off, size)| (off..off + size).contains(&i));
        if !owned {
            assert_eq!(
                x, y,
                "byte {i} of multi_description is not the driver's to write"
            );
        }
    }
    rig.finish(Some(card));
}

/// BUFFER_EXCHANGE writes back its six fields in the runs they form (`write_fields` joins
/// fields with no byte between them into one copy): the reserved words between the runs,
/// and everything else the driver does not own, keep the caller's bytes; every field the
/// driver owns holds what the exchange reported.
#[test]
fn an_exchange_writes_back_only_its_fields() {
    let mut rig = Rig::new(ModelConfig::default());
    let card = rig.card(Settings::default());
    let mut c = Client::init(&card, Some(hm::B_SR_48000), Some(hm::B_FMT_16BIT));
    c.exchange(&card).expect("the run's first exchange");
    let mut info: hm::MultiBufferInfo = garbage();
    info.info_size = core::mem::size_of::<hm::MultiBufferInfo>() as u64;
    let before = info;
    ioctl(&card, hm::B_MULTI_BUFFER_EXCHANGE, &mut info).expect("BUFFER_EXCHANGE");
    let (b, a) = (
        zerocopy::IntoBytes::as_bytes(&before),
        zerocopy::IntoBytes::as_bytes(&info),
    );
    // The runs: 16..32 (played time and frames), 36..56 (cycle, recorded time and frames),
    // 60..64 (record cycle); 32..36 and 56..60 are reserved words between them.
    let owned = [16..32, 36..56, 60..64];
    for (i, (x, y)) in b.iter().zip(a).enumerate() {
        if !owned.iter().any(|r| r.contains(&i)) {
            assert_eq!(
                x, y,
                "byte {i} of multi_buffer_info is not the driver's to write"
            );
        }
    }
    assert!(info.played_real_time > 0 && info.played_frames_count > 0);
    assert!((0..4).contains(&info.playback_buffer_cycle));
    assert!((0..4).contains(&info.record_buffer_cycle));
    assert!(info.recorded_real_time > 0 && info.recorded_frames_count > 0);
    card.dispatch(hm::B_MULTI_BUFFER_FORCE_STOP, 0, 1)
        .expect("FORCE_STOP");
    rig.finish(Some(card));
}

/// `write_fields` itself: the fields go back, bytes between runs of fields stay the caller's
/// even when the kernel's copy of the structure holds something else there (a caller thread
/// may write them while the ioctl runs), and adjacent fields in any run are all written.
#[test]
fn write_fields_leaves_the_bytes_between_fields_alone() {
    let k = sim_kernel::SimKernel::new();
    let size = core::mem::size_of::<hm::MultiBufferInfo>();
    let addr = k.user_alloc(size);
    k.user_write(addr, &vec![GARBAGE; size]);
    // The kernel's copy: byte i holds i, so any byte written back can be told by its place.
    let mut value: hm::MultiBufferInfo = garbage();
    for (i, b) in zerocopy::IntoBytes::as_mut_bytes(&mut value)
        .iter_mut()
        .enumerate()
    {
        *b = i as u8;
    }
    platform::user::write_fields(
        &k,
        UserPtr::<hm::MultiBufferInfo>::from_addr(addr),
        &value,
        hm::MultiBufferInfo::DRIVER_WRITES,
    )
    .expect("write_fields");
    let got = k.user_read(addr, size);
    // multi_buffer_info (hmulti_audio.h): played_real_time 16, played_frames_count 24,
    // playback_buffer_cycle 36, recorded_real_time 40, recorded_frames_count 48,
    // record_buffer_cycle 60; reserved words at 32 and 56.
    let owned = [16..32, 36..56, 60..64];
    for (i, &b) in got.iter().enumerate() {
        let want = if owned.iter().any(|r| r.contains(&i)) {
            i as u8
        } else {
            GARBAGE
        };
        assert_eq!(b, want, "byte {i}");
    }
    k.user_free(addr);
}
