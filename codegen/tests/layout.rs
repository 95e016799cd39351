//! The layout engine on the real spec files, against sizes and offsets measured with gcc on
//! the real headers (`linux/virtio_snd.h`, Haiku's `hmulti_audio.h` and kernel headers).

use std::path::{Path, PathBuf};

use codegen::model::{self, Spec};

fn spec(name: &str) -> Spec {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let rel = format!("spec/{name}.toml");
    model::load(&root.join(&rel), Path::new(&rel)).unwrap_or_else(|e| panic!("{e}"))
}

fn size(s: &Spec, name: &str) -> u64 {
    s.type_named(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .size
}

fn offset(s: &Spec, name: &str, field: &str) -> u64 {
    let t = s
        .type_named(name)
        .unwrap_or_else(|| panic!("{name} missing"));
    t.fields
        .iter()
        .find(|f| f.name == field)
        .unwrap_or_else(|| panic!("{name}.{field} missing"))
        .offset
}

#[test]
fn virtio_snd_layouts() {
    let s = spec("virtio_snd");
    for (name, bytes) in [
        ("virtio_snd_config", 16),
        ("virtio_snd_hdr", 4),
        ("virtio_snd_event", 8),
        ("virtio_snd_query_info", 16),
        ("virtio_snd_info", 4),
        ("virtio_snd_jack_hdr", 8),
        ("virtio_snd_jack_info", 24),
        ("virtio_snd_jack_remap", 16),
        ("virtio_snd_pcm_hdr", 8),
        ("virtio_snd_pcm_info", 32),
        ("virtio_snd_pcm_set_params", 24),
        ("virtio_snd_pcm_xfer", 4),
        ("virtio_snd_pcm_status", 8),
        ("virtio_snd_chmap_info", 24),
        ("virtio_snd_ctl_hdr", 8),
        ("virtio_snd_ctl_info", 96),
        ("virtio_snd_ctl_enum_item", 64),
        ("virtio_snd_ctl_iec958", 176),
        ("virtio_snd_ctl_value", 512),
        ("virtio_snd_ctl_tlv", 8),
        ("virtio_snd_ctl_event", 8),
    ] {
        assert_eq!(size(&s, name), bytes, "size of {name}");
    }
    assert_eq!(offset(&s, "virtio_snd_config", "controls"), 12);
    assert_eq!(offset(&s, "virtio_snd_pcm_info", "formats"), 8);
    assert_eq!(offset(&s, "virtio_snd_pcm_info", "rates"), 16);
    assert_eq!(offset(&s, "virtio_snd_pcm_info", "direction"), 24);
    assert_eq!(offset(&s, "virtio_snd_pcm_set_params", "buffer_bytes"), 8);
    assert_eq!(offset(&s, "virtio_snd_pcm_set_params", "channels"), 20);
    assert_eq!(offset(&s, "virtio_snd_pcm_set_params", "rate"), 22);
    assert_eq!(offset(&s, "virtio_snd_chmap_info", "positions"), 6);
    assert_eq!(offset(&s, "virtio_snd_jack_info", "connected"), 16);
    assert_eq!(offset(&s, "virtio_snd_ctl_info", "name"), 24);
    assert_eq!(offset(&s, "virtio_snd_ctl_info", "value"), 72);
    assert_eq!(offset(&s, "virtio_snd_ctl_event", "mask"), 6);
}

#[test]
fn hmulti_layouts() {
    let s = spec("hmulti_audio");
    for (name, bytes) in [
        ("multi_description", 272),
        ("multi_channel_info", 32),
        ("multi_channel_enable", 40),
        ("_multi_format", 24),
        ("multi_format_info", 104),
        ("multi_channel_formats", 56),
        ("multi_mix_value", 24),
        ("multi_mix_value_info", 32),
        ("multi_mix_control", 116),
        ("multi_mix_channel_info", 40),
        ("multi_mix_control_info", 24),
        ("multi_mix_connection", 16),
        ("multi_mix_connection_info", 24),
        ("multi_buffer_list", 96),
        ("buffer_desc", 24),
        ("multi_buffer_info", 112),
        ("multi_get_event_info", 40),
        ("multi_set_event_info", 40),
        ("multi_get_event", 472),
        ("multi_mode_list", 32),
        ("multi_mode_info", 256),
        ("multi_extension_info", 32),
        ("multi_extension_list", 24),
        ("multi_extension_cmd", 48),
    ] {
        assert_eq!(size(&s, name), bytes, "size of {name}");
    }
    assert_eq!(offset(&s, "multi_description", "channels"), 104);
    assert_eq!(offset(&s, "multi_description", "start_latency"), 152);
    assert_eq!(offset(&s, "multi_description", "control_panel"), 204);
    assert_eq!(offset(&s, "multi_buffer_list", "playback_buffers"), 40);
    assert_eq!(offset(&s, "multi_buffer_list", "record_buffers"), 80);
    assert_eq!(offset(&s, "multi_buffer_info", "played_real_time"), 16);
    assert_eq!(offset(&s, "multi_buffer_info", "playback_buffer_cycle"), 36);
    assert_eq!(offset(&s, "multi_buffer_info", "record_buffer_cycle"), 60);
    assert_eq!(offset(&s, "multi_buffer_info", "meters_peak"), 72);
    assert_eq!(offset(&s, "multi_mix_control", "name"), 68);
    assert_eq!(offset(&s, "multi_format_info", "output"), 80);
    assert_eq!(offset(&s, "multi_channel_enable", "connectors"), 32);
}

#[test]
fn haiku_driver_layouts() {
    let s = spec("haiku_driver");
    for (name, bytes) in [
        ("module_info", 24),
        ("driver_module_info", 96),
        ("device_module_info", 120),
        ("device_attr", 32),
        ("device_manager_info", 184),
        ("virtio_device_interface", 216),
        ("physical_entry", 16),
    ] {
        assert_eq!(size(&s, name), bytes, "size of {name}");
    }
    assert_eq!(
        offset(&s, "virtio_device_interface", "negotiate_features"),
        96
    );
    assert_eq!(offset(&s, "virtio_device_interface", "queue_dequeue"), 208);
    assert_eq!(offset(&s, "device_attr", "value"), 16);
    assert_eq!(offset(&s, "device_module_info", "control"), 96);
}

#[test]
fn known_constants() {
    let v = spec("virtio_snd");
    let h = spec("hmulti_audio");
    let k = spec("haiku_driver");
    let val = |s: &Spec, n: &str| {
        s.constants()
            .find(|(_, c)| c.name == n)
            .and_then(|(_, c)| c.int())
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    assert_eq!(val(&v, "VIRTIO_SND_R_PCM_SET_PARAMS"), 0x101);
    assert_eq!(val(&v, "VIRTIO_SND_R_CTL_TLV_COMMAND"), 0x306);
    assert_eq!(val(&v, "VIRTIO_SND_EVT_CTL_NOTIFY"), 0x1200);
    assert_eq!(val(&v, "VIRTIO_SND_S_IO_ERR"), 0x8003);
    assert_eq!(val(&v, "VIRTIO_SND_PCM_RATE_384000"), 13);
    assert_eq!(val(&v, "VIRTIO_SND_CHMAP_BRC"), 36);
    assert_eq!(val(&h, "B_MULTI_GET_DESCRIPTION"), 8020);
    assert_eq!(val(&h, "B_MULTI_SET_MODE"), 8045);
    assert_eq!(val(&h, "B_SR_384000"), 0x4000);
    assert_eq!(val(&h, "B_FMT_FLOAT"), 0x20000);
    assert_eq!(val(&k, "B_DEV_INVALID_IOCTL"), -2147442688);
    assert_eq!(val(&k, "B_BAD_ADDRESS"), -2147478783);
}
