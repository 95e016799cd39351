//! The hmulti ioctl decoder with the arguments a hostile or sloppy caller passes.

use spec::hmulti_audio::*;
use spec::IoctlError;

const USER: u64 = 0x1000_0000;
const KERNEL: u64 = 0xffff_ff00_0010_0000;

fn arg_size(op: Opcode) -> usize {
    use core::mem::size_of;
    match op {
        Opcode::GetDescription => size_of::<MultiDescription>(),
        Opcode::GetEventInfo => size_of::<MultiGetEventInfo>(),
        Opcode::SetEventInfo => size_of::<MultiSetEventInfo>(),
        Opcode::GetEvent => size_of::<MultiGetEvent>(),
        Opcode::GetEnabledChannels | Opcode::SetEnabledChannels => size_of::<MultiChannelEnable>(),
        Opcode::GetGlobalFormat | Opcode::SetGlobalFormat => size_of::<MultiFormatInfo>(),
        Opcode::GetChannelFormats | Opcode::SetChannelFormats => size_of::<MultiChannelFormats>(),
        Opcode::GetMix | Opcode::SetMix => size_of::<MultiMixValueInfo>(),
        Opcode::ListMixChannels => size_of::<MultiMixChannelInfo>(),
        Opcode::ListMixControls => size_of::<MultiMixControlInfo>(),
        Opcode::ListMixConnections => size_of::<MultiMixConnectionInfo>(),
        Opcode::GetBuffers | Opcode::SetBuffers => size_of::<MultiBufferList>(),
        Opcode::SetStartTime => 8,
        Opcode::BufferExchange => size_of::<MultiBufferInfo>(),
        Opcode::BufferForceStop => 0,
        Opcode::ListExtensions => size_of::<MultiExtensionList>(),
        Opcode::GetExtension | Opcode::SetExtension => size_of::<MultiExtensionCmd>(),
        Opcode::ListModes => size_of::<MultiModeList>(),
        Opcode::GetMode | Opcode::SetMode => 4,
    }
}

#[test]
fn every_opcode_decodes_with_a_good_argument() {
    assert_eq!(Opcode::ALL.len(), 26);
    for &op in Opcode::ALL {
        let size = arg_size(op);
        let d = MultiIoctl::decode(op as u32, USER, size).unwrap();
        assert_eq!(d.opcode(), op);
        // The media add-on passes exactly sizeof; 0 means "not said" and is accepted too.
        assert_eq!(MultiIoctl::decode(op as u32, USER, 0).unwrap().opcode(), op);
        assert_eq!(
            MultiIoctl::decode(op as u32, USER, size + 100)
                .unwrap()
                .opcode(),
            op
        );
    }
    assert_eq!(
        MultiIoctl::decode(8020, USER, 272),
        Ok(MultiIoctl::GetDescription(spec::UserPtr::from_addr(USER)))
    );
}

#[test]
fn hostile_arguments_get_errors() {
    for &op in Opcode::ALL {
        let size = arg_size(op);
        if op == Opcode::BufferForceStop {
            // No argument: the client passes NULL and a length of 1.
            assert_eq!(
                MultiIoctl::decode(op as u32, 0, 1),
                Ok(MultiIoctl::BufferForceStop)
            );
            continue;
        }
        assert_eq!(
            MultiIoctl::decode(op as u32, 0, size),
            Err(IoctlError::NullPointer),
            "{op:?}"
        );
        assert_eq!(
            MultiIoctl::decode(op as u32, KERNEL, size),
            Err(IoctlError::NotUserAddress(KERNEL)),
            "{op:?}"
        );
        assert_eq!(
            MultiIoctl::decode(op as u32, 0x1000, size),
            Err(IoctlError::NotUserAddress(0x1000)),
            "{op:?}: below USER_BASE"
        );
        let top = spec::haiku_driver::USER_TOP;
        let last = top + 1 - size as u64;
        assert!(
            MultiIoctl::decode(op as u32, last, size).is_ok(),
            "{op:?}: last user bytes"
        );
        assert_eq!(
            MultiIoctl::decode(op as u32, last + 1, size),
            Err(IoctlError::NotUserAddress(last + 1)),
            "{op:?}: crosses USER_TOP"
        );
        assert_eq!(
            MultiIoctl::decode(op as u32, u64::MAX - 2, size),
            Err(IoctlError::NotUserAddress(u64::MAX - 2)),
            "{op:?}: wraps"
        );
        assert_eq!(
            MultiIoctl::decode(op as u32, USER, size - 1),
            Err(IoctlError::TooShort {
                needed: size,
                got: size - 1
            }),
            "{op:?}"
        );
        assert_eq!(
            MultiIoctl::decode(op as u32, USER, 1),
            Err(IoctlError::TooShort {
                needed: size,
                got: 1
            }),
            "{op:?}"
        );
    }
    for bad in [0, 8019, 8046, 8000, u32::MAX] {
        assert_eq!(
            MultiIoctl::decode(bad, USER, 8),
            Err(IoctlError::UnknownOpcode(bad))
        );
    }
}

#[test]
fn driver_written_fields_are_the_spec_lists() {
    let names =
        |w: &'static [(&'static str, usize, usize)]| w.iter().map(|f| f.0).collect::<Vec<_>>();
    let d = names(MultiDescription::DRIVER_WRITES);
    assert!(
        !d.contains(&"channels")
            && !d.contains(&"request_channel_count")
            && !d.contains(&"info_size"),
        "{d:?}"
    );
    assert!(
        d.contains(&"output_channel_count") && d.contains(&"output_rates"),
        "{d:?}"
    );
    let b = names(MultiBufferInfo::DRIVER_WRITES);
    for f in [
        "played_real_time",
        "played_frames_count",
        "playback_buffer_cycle",
        "recorded_real_time",
        "recorded_frames_count",
        "record_buffer_cycle",
    ] {
        assert!(b.contains(&f), "{f} in {b:?}");
    }
    let l = names(MultiBufferList::DRIVER_WRITES);
    assert!(l.iter().all(|f| f.starts_with("return_")), "{l:?}");
    // Offsets are the C offsets.
    assert!(MultiBufferInfo::DRIVER_WRITES.contains(&("played_real_time", 16, 8)));
}
