//! Every wire decoder of the spec crate on any bytes: no panic (the spec crate's invariant,
//! ARCHITECTURE.md), and what a decoder accepts encodes back to the bytes it came from.
//!
//! Input: `[selector, 4 bytes, 4 bytes, rest...]`; the selector picks the decoder, the two
//! words are its numeric arguments (a writable length, an opcode, a length).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spec::hmulti_audio::MultiIoctl;
use spec::virtio_snd::{self as vs, ControlRequest, DeviceEvent};
use zerocopy::FromBytes;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let word = |i: usize| -> u32 {
        let mut w = [0u8; 4];
        for (k, b) in w.iter_mut().enumerate() {
            *b = rest.get(i * 4 + k).copied().unwrap_or(0);
        }
        u32::from_le_bytes(w)
    };
    let (a, b) = (word(0), word(1));
    let body = rest.get(8..).unwrap_or(&[]);
    match selector % 4 {
        0 => control_request(body, a as usize),
        1 => control_response(body, a as usize),
        2 => event(body),
        _ => {
            // The ioctl decoder sees only numbers: opcode, pointer, length.
            let buffer = u64::from(a) << 32 | u64::from(b);
            let length = body.len().wrapping_mul(0x1_0001) ^ usize::from(selector);
            let _ = MultiIoctl::decode(a, buffer, length);
            let _ = MultiIoctl::decode(b, u64::from(a), b as usize);
            structs(body);
        }
    }
});

/// The device's view of a request: decoded, it is exactly as long as its encoding, encodes to
/// the same bytes, and its answer fits the writable part it was decoded with.
fn control_request(readable: &[u8], writable_len: usize) {
    let Ok(r) = ControlRequest::decode(readable, writable_len) else {
        return;
    };
    assert_eq!(r.encoded_len(), readable.len(), "{r:?}");
    let mut out = vec![0u8; readable.len()];
    let n = r.encode(&mut out).expect("a decoded request encodes");
    assert_eq!(&out[..n], readable, "{r:?} does not round-trip");
    assert!(r.response_len() <= writable_len, "{r:?}");
}

/// The driver's view of an answer: the request comes first (its encoding is the prefix that
/// `decode` accepts), the rest is the reply. An accepted reply encodes back to itself.
fn control_response(body: &[u8], split: usize) {
    let split = split % (body.len() + 1);
    let (readable, reply) = body.split_at(split);
    let Ok(r) = ControlRequest::decode(readable, usize::MAX) else {
        return;
    };
    let Ok(resp) = r.decode_response(reply) else {
        return;
    };
    let mut out = vec![0u8; reply.len()];
    let n = resp
        .encode(&mut out)
        .expect("an accepted answer encodes in its own length");
    assert_eq!(&out[..n], reply, "{r:?}: the answer does not round-trip");
}

/// An event buffer's `used_len` bytes: an accepted event encodes back to their start.
fn event(bytes: &[u8]) {
    let Ok(e) = DeviceEvent::decode(bytes) else {
        return;
    };
    let mut out = [0u8; 64];
    let n = e.encode(&mut out).expect("an event encodes");
    assert!(n <= bytes.len(), "{e:?} is longer than its bytes");
    assert_eq!(&out[..n], &bytes[..n], "{e:?} does not round-trip");
}

/// The typed readers of the structures a device fills in: directions, masks, positions,
/// control types and statuses, from any bytes.
fn structs(bytes: &[u8]) {
    if let Ok((info, _)) = vs::PcmInfo::read_from_prefix(bytes) {
        let _ = info.direction();
        let _ = info.features().iter().count();
        let _ = info.formats().iter().count();
        let _ = info.rates().iter().count();
        let _ = info.formats().unknown_bits();
    }
    if let Ok((chmap, _)) = vs::ChmapInfo::read_from_prefix(bytes) {
        let _ = chmap.direction();
        let _ = chmap.positions();
    }
    if let Ok((ctl, _)) = vs::CtlInfo::read_from_prefix(bytes) {
        let _ = ctl.r#type();
        let _ = ctl.access().iter().count();
    }
    if let Ok((status, _)) = vs::PcmStatus::read_from_prefix(bytes) {
        let _ = status.status();
    }
    if let Ok((ev, _)) = vs::CtlEvent::read_from_prefix(bytes) {
        let _ = ev.mask().iter().count();
    }
    if let Ok((jack, _)) = vs::JackInfo::read_from_prefix(bytes) {
        let _ = jack.features().iter().count();
    }
    if let Ok((params, _)) = vs::PcmSetParams::read_from_prefix(bytes) {
        let _ = params.format();
        let _ = params.rate();
        let _ = params.features().iter().count();
    }
}
