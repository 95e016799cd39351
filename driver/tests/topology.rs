//! A device with jacks, 5.1/7.1 channel maps and control elements: the channel list, bus
//! grouping and mix controls the media add-on sees, and the events that change them.

mod common;

/// Reports any allocation the driver makes in an interrupt callback.
#[global_allocator]
static ALLOC: sim_kernel::memory::CheckingAllocator = sim_kernel::memory::CheckingAllocator;

use common::*;
use driver::hmulti::Settings;
use snd_model::{ChmapConfig, ControlConfig, JackConfig};
use snd_model::{ModelConfig, StreamConfig};
use spec::hmulti_audio as hm;
use spec::virtio_snd::{
    DeviceEvent, Direction, PcmRate, QueueIndex, VIRTIO_SND_CTL_ROLE_MUTE,
    VIRTIO_SND_CTL_ROLE_VOLUME,
};

fn surround() -> ModelConfig {
    // 5.1 out (FL FR FC LFE RL RR), 7.1 in (adds SL SR).
    ModelConfig {
        streams: vec![
            StreamConfig::output()
                .with_channels(1, 8)
                .with_rates(&[PcmRate::Rate48000]),
            StreamConfig::input()
                .with_channels(1, 8)
                .with_rates(&[PcmRate::Rate48000]),
        ],
        jacks: vec![
            JackConfig {
                hda_fn_nid: 0,
                features: 0,
                hda_reg_defconf: 0,
                hda_reg_caps: 0,
                connected: true,
            },
            JackConfig {
                hda_fn_nid: 0,
                features: 0,
                hda_reg_defconf: 0,
                hda_reg_caps: 0,
                connected: false,
            },
        ],
        chmaps: vec![
            ChmapConfig {
                hda_fn_nid: 0,
                direction: Direction::Output,
                positions: vec![3, 4, 7, 8, 5, 6],
            },
            ChmapConfig {
                hda_fn_nid: 0,
                direction: Direction::Input,
                positions: vec![3, 4, 7, 8, 5, 6, 9, 10],
            },
        ],
        offer_ctls: true,
        controls: {
            // ALSA-style dB scale: -60 dB at 0, 0.5 dB per step.
            let mut db = Vec::new();
            db.extend_from_slice(&(-6000i32).to_le_bytes());
            db.extend_from_slice(&50u32.to_le_bytes());
            vec![
                ControlConfig::integer(
                    "Master Playback Volume",
                    VIRTIO_SND_CTL_ROLE_VOLUME << 1,
                    2,
                    0,
                    120,
                    100,
                )
                .with_tlv(1, &db),
                ControlConfig::boolean(
                    "Master Playback Switch",
                    VIRTIO_SND_CTL_ROLE_MUTE << 1,
                    1,
                    false,
                ),
                ControlConfig::integer(
                    "Capture Volume",
                    (VIRTIO_SND_CTL_ROLE_VOLUME << 1) | 1,
                    1,
                    0,
                    31,
                    10,
                ),
                ControlConfig::enumerated("Capture Source", &["Mic", "Line", "CD"], 1),
            ]
        },
        ..ModelConfig::default()
    }
}

#[test]
fn designations_and_bus_grouping() {
    let mut rig = Rig::new(surround());
    let card = rig.card(Settings::default());
    let c = Client::init(&card, None, None);
    assert_eq!(
        (c.desc.output_channel_count, c.desc.input_channel_count),
        (6, 8)
    );
    assert_eq!(
        (
            c.desc.output_bus_channel_count,
            c.desc.input_bus_channel_count
        ),
        (6, 8)
    );
    let s = hm::B_CHANNEL_SURROUND_BUS;
    let want_out = [
        hm::B_CHANNEL_LEFT,
        hm::B_CHANNEL_RIGHT,
        hm::B_CHANNEL_CENTER,
        hm::B_CHANNEL_SUB,
        hm::B_CHANNEL_REARLEFT,
        hm::B_CHANNEL_REARRIGHT,
    ];
    for (i, d) in want_out.iter().enumerate() {
        let ch = &c.channels[i];
        assert_eq!(
            (ch.channel_id, ch.kind, ch.designations),
            (i as i32, hm::B_MULTI_OUTPUT_CHANNEL, d | s),
            "output {i}"
        );
    }
    let want_in = [
        hm::B_CHANNEL_LEFT,
        hm::B_CHANNEL_RIGHT,
        hm::B_CHANNEL_CENTER,
        hm::B_CHANNEL_SUB,
        hm::B_CHANNEL_REARLEFT,
        hm::B_CHANNEL_REARRIGHT,
        hm::B_CHANNEL_SIDE_LEFT,
        hm::B_CHANNEL_SIDE_RIGHT,
    ];
    for (i, d) in want_in.iter().enumerate() {
        let ch = &c.channels[6 + i];
        assert_eq!(
            (ch.channel_id, ch.kind, ch.designations),
            (6 + i as i32, hm::B_MULTI_INPUT_CHANNEL, d | s),
            "input {i}"
        );
    }
    assert!(c.channels[14..20]
        .iter()
        .all(|ch| ch.kind == hm::B_MULTI_OUTPUT_BUS));
    assert!(c.channels[20..28]
        .iter()
        .all(|ch| ch.kind == hm::B_MULTI_INPUT_BUS));
    // The media add-on's grouping rule puts all six outputs in one node input: a new group
    // starts only at MONO_BUS or at a LEFT after the first channel of a surround group.
    let groups = c.channels[..6]
        .iter()
        .enumerate()
        .filter(|(i, ch)| {
            *i == 0
                || ch.designations & hm::B_CHANNEL_MONO_BUS != 0
                || ch.designations & hm::B_CHANNEL_LEFT != 0
                || ch.designations & s == 0
        })
        .count();
    assert_eq!(groups, 1);
    // Buffers: one descriptor per channel, interleaved strides.
    assert_eq!(c.play.descs[0].len(), 6);
    assert_eq!(
        c.play.descs[0][1].base.addr() - c.play.descs[0][0].base.addr(),
        c.play.descs[0][0].stride / 6
    );
    let engine = rig.engine.clone().unwrap();
    assert_eq!(engine.jack_connected(0), Some(true));
    assert_eq!(engine.jack_connected(1), Some(false));
    drop(engine);
    rig.finish(Some(card));
}

#[test]
fn mix_controls_form_a_usable_web() {
    let mut rig = Rig::new(surround());
    let card = rig.card(Settings::default());
    let c = Client::init(&card, None, None);
    let by_name = |n: &str| {
        c.controls
            .iter()
            .filter(move |x| x.name.starts_with(n.as_bytes()))
            .collect::<Vec<_>>()
    };
    let groups: Vec<_> = c
        .controls
        .iter()
        .filter(|x| x.flags == hm::B_MULTI_MIX_GROUP && x.parent == 0)
        .collect();
    assert_eq!(groups.len(), 2, "Output and Input groups");
    let out_group = groups.iter().find(|g| g.string == hm::S_OUTPUT).unwrap().id;
    let in_group = groups.iter().find(|g| g.string == hm::S_INPUT).unwrap().id;
    // Stereo volume: two GAIN controls, the second slaved to the first, in dB.
    let vol = by_name("Master Playback Volume");
    assert_eq!(vol.len(), 2);
    assert_eq!(
        (vol[0].flags, vol[0].master, vol[0].parent),
        (hm::B_MULTI_MIX_GAIN, 0, out_group)
    );
    assert_eq!((vol[1].master, vol[1].parent), (vol[0].id, out_group));
    assert_eq!(
        c.controls.iter().position(|x| x.id == vol[1].id),
        c.controls
            .iter()
            .position(|x| x.id == vol[0].id)
            .map(|p| p + 1),
        "the pair is adjacent"
    );
    let g = vol[0].u.gain();
    assert_eq!((g.min_gain, g.max_gain, g.granularity), (-60.0, 0.0, 0.5));
    let mute = by_name("Master Playback Switch");
    assert_eq!(
        (mute[0].flags, mute[0].string, mute[0].parent),
        (hm::B_MULTI_MIX_ENABLE, hm::S_MUTE, out_group)
    );
    let mux = by_name("Capture Source");
    assert_eq!(
        (mux[0].flags, mux[0].parent),
        (hm::B_MULTI_MIX_MUX, in_group)
    );
    let items: Vec<_> = c
        .controls
        .iter()
        .filter(|x| x.parent == mux[0].id)
        .collect();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|x| x.flags == hm::B_MULTI_MIX_MUX_VALUE));
    assert!(items[2].name.starts_with(b"CD\0"));
    // Every id is unique and above the channel ids.
    let mut ids: Vec<i32> = c.controls.iter().map(|x| x.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), c.controls.len());
    assert!(ids[0] > 28);

    // GET_MIX / SET_MIX as the media add-on does (info_size and at_frame uninitialised).
    let k = card.kernel();
    let get = |ids: &[i32]| -> Vec<hm::MultiMixValue> {
        let addr = k.user_alloc(24 * ids.len());
        for (i, id) in ids.iter().enumerate() {
            let mut v: hm::MultiMixValue = garbage();
            v.id = *id;
            k.user_write_value(addr + 24 * i as u64, &v);
        }
        let mut info: hm::MultiMixValueInfo = garbage();
        info.item_count = ids.len() as i32;
        info.values = spec::UserPtr::from_addr(addr);
        ioctl(&card, hm::B_MULTI_GET_MIX, &mut info).expect("GET_MIX");
        let out = (0..ids.len())
            .map(|i| k.user_read_value(addr + 24 * i as u64))
            .collect();
        k.user_free(addr);
        out
    };
    let set = |vals: &[hm::MultiMixValue]| {
        let addr = k.user_alloc(24 * vals.len());
        for (i, v) in vals.iter().enumerate() {
            k.user_write_value(addr + 24 * i as u64, v);
        }
        let mut info: hm::MultiMixValueInfo = garbage();
        info.item_count = vals.len() as i32;
        info.values = spec::UserPtr::from_addr(addr);
        ioctl(&card, hm::B_MULTI_SET_MIX, &mut info).expect("SET_MIX");
        k.user_free(addr);
    };
    let v = get(&[vol[0].id, vol[1].id, mux[0].id, mute[0].id]);
    assert_eq!(v[0].u.gain(), -10.0, "raw 100 is -60 + 100 * 0.5 dB");
    assert_eq!(v[2].u.mux(), 1);
    assert_eq!(v[3].u.enable(), 0);
    assert_eq!(
        v[0].ramp,
        i32::from_le_bytes([GARBAGE; 4]),
        "ramp is the caller's"
    );
    let mut w = v[0];
    w.u.set_gain(&-20.0);
    let mut m = v[2];
    m.u.set_mux(&2);
    set(&[w, m]);
    let raw = rig.model.ctl_value(0).unwrap().value.integer();
    assert_eq!(
        (raw[0].get(), raw[1].get()),
        (80, 100),
        "only the left channel moved"
    );
    assert_eq!(
        rig.model.ctl_value(3).unwrap().value.enumerated()[0].get(),
        2
    );
    // Out of range is clamped; a bad mux item is refused.
    w.u.set_gain(&40.0);
    set(&[w]);
    assert_eq!(
        rig.model.ctl_value(0).unwrap().value.integer()[0].get(),
        120
    );
    m.u.set_mux(&3);
    let addr = user_value(k, &m);
    let mut info: hm::MultiMixValueInfo = garbage();
    info.item_count = 1;
    info.values = spec::UserPtr::from_addr(addr);
    assert_eq!(
        ioctl(&card, hm::B_MULTI_SET_MIX, &mut info),
        Err(platform::Status::BAD_VALUE)
    );
    // The host changes a value and notifies: the next GET_MIX sees it.
    let mut nv = rig.model.ctl_value(0).unwrap();
    let mut ints = nv.value.integer();
    ints[1] = zerocopy::little_endian::U32::new(20);
    nv.value.set_integer(&ints);
    rig.model.set_ctl_value(0, nv, true);
    platform::Kernel::snooze(k, 1_000);
    assert_eq!(get(&[vol[1].id])[0].u.gain(), -50.0);
    rig.finish(Some(card));
}

#[test]
fn jack_and_xrun_events_update_state() {
    let mut rig = Rig::new(surround());
    let engine = rig.start().unwrap();
    rig.model
        .inject_event(DeviceEvent::JackConnected { jack_id: 1 });
    rig.model
        .inject_event(DeviceEvent::JackDisconnected { jack_id: 0 });
    rig.model
        .inject_event(DeviceEvent::PcmXrun { stream_id: 1 });
    rig.model
        .inject_event(DeviceEvent::JackConnected { jack_id: 99 });
    platform::Kernel::snooze(&*rig.kernel, 1_000);
    assert_eq!(engine.jack_connected(1), Some(true));
    assert_eq!(engine.jack_connected(0), Some(false));
    assert_eq!(engine.xruns(1), 1);
    assert_eq!(
        engine.bad_events(),
        1,
        "a jack that does not exist is counted, not indexed"
    );
    // The event queue stays stocked: more events than buffers still arrive.
    for i in 0..40 {
        rig.model
            .inject_event(DeviceEvent::PcmXrun { stream_id: 0 });
        if i % 8 == 0 {
            platform::Kernel::snooze(&*rig.kernel, 500);
        }
    }
    platform::Kernel::snooze(&*rig.kernel, 1_000);
    assert_eq!(engine.xruns(0), 40);
    drop(engine);
    rig.finish(None);
}

/// One interrupt can find more used chains than the handler takes in one batch (it takes
/// eight at a time under one hold of the queue): every one of them is handled in that
/// interrupt, and every buffer goes back to the device.
#[test]
fn one_interrupt_handles_every_used_chain_however_many() {
    let mut rig = Rig::new(surround());
    let engine = rig.start().unwrap();
    let k = &*rig.kernel;
    // Let the start-up settle, then fill all 16 event buffers at one instant.
    platform::Kernel::snooze(k, 1_000);
    let before = rig.model.interrupts(QueueIndex::Event as u16);
    for _ in 0..16 {
        rig.model
            .inject_event(DeviceEvent::PcmXrun { stream_id: 0 });
    }
    platform::Kernel::snooze(k, 1_000);
    assert_eq!(
        rig.model.interrupts(QueueIndex::Event as u16) - before,
        1,
        "the 16 events came with one interrupt"
    );
    assert_eq!(engine.xruns(0), 16);
    // Every buffer was posted again: 16 more arrive, none dropped.
    for _ in 0..16 {
        rig.model
            .inject_event(DeviceEvent::PcmXrun { stream_id: 0 });
    }
    platform::Kernel::snooze(k, 1_000);
    assert_eq!(engine.xruns(0), 32);
    assert_eq!(rig.model.events_dropped(), 0);
    drop(engine);
    rig.finish(None);
}
