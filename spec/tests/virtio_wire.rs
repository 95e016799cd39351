//! Round trips of every control request, response and event through the generated encoders
//! and decoders, and the errors every malformed reply must produce.

use proptest::prelude::*;
use spec::virtio_snd::*;
use spec::DecodeError;
use zerocopy::little_endian::U32 as Le32;
use zerocopy::FromBytes;

fn from<T: FromBytes>(bytes: &[u8]) -> T {
    T::read_from_bytes(&bytes[..core::mem::size_of::<T>()]).unwrap()
}

fn bytes(n: impl Into<proptest::collection::SizeRange>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), n)
}

/// A TLV blob (header + value) with a valid length field.
fn tlv(value_words: usize, seed: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 8 + value_words * 4];
    t[..4].copy_from_slice(
        &seed
            .get(..4)
            .map(|s| [s[0], s[1], s[2], s[3]])
            .unwrap_or([1, 0, 0, 0]),
    );
    t[4..8].copy_from_slice(&((value_words * 4) as u32).to_le_bytes());
    for (i, b) in t[8..].iter_mut().enumerate() {
        *b = seed.get(i % seed.len().max(1)).copied().unwrap_or(0x5a);
    }
    t
}

/// Builds one request of every kind from random bytes; `count` is kept small so replies fit.
fn requests<'a>(raw: &[u8], count: u32, tlv_blob: &'a [u8]) -> Vec<ControlRequest<'a>> {
    let mut q: QueryInfo = from(raw);
    q.count = Le32::new(count);
    let pcm: PcmHdr = from(raw);
    let ctl: CtlHdr = from(raw);
    vec![
        ControlRequest::JackInfo { request: q },
        ControlRequest::JackRemap { request: from(raw) },
        ControlRequest::PcmInfo { request: q },
        ControlRequest::PcmSetParams { request: from(raw) },
        ControlRequest::PcmPrepare { request: pcm },
        ControlRequest::PcmRelease { request: pcm },
        ControlRequest::PcmStart { request: pcm },
        ControlRequest::PcmStop { request: pcm },
        ControlRequest::ChmapInfo { request: q },
        ControlRequest::CtlInfo { request: q },
        ControlRequest::CtlEnumItems {
            request: ctl,
            items: count,
        },
        ControlRequest::CtlRead { request: ctl },
        ControlRequest::CtlWrite {
            request: ctl,
            payload: from(&raw[16..]),
        },
        ControlRequest::CtlTlvRead {
            request: ctl,
            max_value_len: 64,
        },
        ControlRequest::CtlTlvWrite {
            request: ctl,
            tlv: tlv_blob,
        },
        ControlRequest::CtlTlvCommand {
            request: ctl,
            tlv: tlv_blob,
        },
    ]
}

/// A valid OK response to `req` made from `raw`, encoded.
fn reply_for(req: &ControlRequest<'_>, raw: &[u8], tlv_blob: &[u8]) -> Vec<u8> {
    let n = |size: usize| (req.response_len() - 4) / size;
    let pick = |size: usize| {
        raw.iter()
            .cycle()
            .take(n(size) * size)
            .copied()
            .collect::<Vec<u8>>()
    };
    let mut out = vec![0u8; req.response_len()];
    let used = match req {
        ControlRequest::JackInfo { .. } => {
            ControlResponse::JackInfo(<[JackInfo]>::ref_from_bytes(&pick(24)).unwrap())
                .encode(&mut out)
        }
        ControlRequest::PcmInfo { .. } => {
            ControlResponse::PcmInfo(<[PcmInfo]>::ref_from_bytes(&pick(32)).unwrap())
                .encode(&mut out)
        }
        ControlRequest::ChmapInfo { .. } => {
            ControlResponse::ChmapInfo(<[ChmapInfo]>::ref_from_bytes(&pick(24)).unwrap())
                .encode(&mut out)
        }
        ControlRequest::CtlInfo { .. } => {
            ControlResponse::CtlInfo(<[CtlInfo]>::ref_from_bytes(&pick(96)).unwrap())
                .encode(&mut out)
        }
        ControlRequest::CtlEnumItems { .. } => {
            ControlResponse::CtlEnumItems(<[CtlEnumItem]>::ref_from_bytes(&pick(64)).unwrap())
                .encode(&mut out)
        }
        ControlRequest::CtlRead { .. } => {
            let v: CtlValue = from(&raw.iter().cycle().take(512).copied().collect::<Vec<u8>>());
            ControlResponse::CtlRead(&v).encode(&mut out)
        }
        ControlRequest::CtlTlvRead { .. } => {
            ControlResponse::CtlTlvRead { tlv: tlv_blob }.encode(&mut out)
        }
        ControlRequest::JackRemap { .. } => ControlResponse::JackRemap.encode(&mut out),
        ControlRequest::PcmSetParams { .. } => ControlResponse::PcmSetParams.encode(&mut out),
        ControlRequest::PcmPrepare { .. } => ControlResponse::PcmPrepare.encode(&mut out),
        ControlRequest::PcmRelease { .. } => ControlResponse::PcmRelease.encode(&mut out),
        ControlRequest::PcmStart { .. } => ControlResponse::PcmStart.encode(&mut out),
        ControlRequest::PcmStop { .. } => ControlResponse::PcmStop.encode(&mut out),
        ControlRequest::CtlWrite { .. } => ControlResponse::CtlWrite.encode(&mut out),
        ControlRequest::CtlTlvWrite { .. } => ControlResponse::CtlTlvWrite.encode(&mut out),
        ControlRequest::CtlTlvCommand { .. } => ControlResponse::CtlTlvCommand.encode(&mut out),
    }
    .unwrap();
    out.truncate(used);
    out
}

#[test]
fn every_request_code_has_a_case() {
    let raw = [0u8; 600];
    let t = tlv(1, &[1, 2, 3, 4]);
    let codes: Vec<RequestCode> = requests(&raw, 1, &t).iter().map(|r| r.code()).collect();
    assert_eq!(codes, RequestCode::ALL, "the test must cover every request");
}

proptest! {
    #[test]
    fn requests_round_trip(raw in bytes(600), count in 0u32..6, words in 0usize..8) {
        let t = tlv(words, &raw[..8]);
        for req in requests(&raw, count, &t) {
            let mut buf = vec![0u8; req.encoded_len()];
            let n = req.encode(&mut buf).unwrap();
            prop_assert_eq!(n, req.encoded_len());
            prop_assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()), req.code() as u32);
            let back = ControlRequest::decode(&buf, req.response_len()).unwrap();
            prop_assert_eq!(back.code(), req.code());
            prop_assert_eq!(back.response_len(), req.response_len());
            let mut again = vec![0u8; n];
            back.encode(&mut again).unwrap();
            prop_assert_eq!(&again, &buf);
            // Everything after the code is the caller's, bit for bit.
            let mut orig = vec![0u8; n];
            req.encode(&mut orig).unwrap();
            prop_assert_eq!(&orig[4..], &again[4..]);
            // A buffer one byte short is an error, not a panic.
            let mut short = vec![0u8; n - 1];
            prop_assert!(req.encode(&mut short).is_err());
            // Readable bytes that are cut short or padded out are refused.
            prop_assert!(ControlRequest::decode(&buf[..n - 1], req.response_len()).is_err());
            let mut long = buf.clone();
            long.extend_from_slice(&[0; 4]);
            prop_assert!(ControlRequest::decode(&long, req.response_len()).is_err());
        }
    }

    #[test]
    fn responses_round_trip_and_reject_bad_replies(raw in bytes(600), count in 0u32..6, words in 0usize..8, status in 0x8001u32..0x8004) {
        let t = tlv(words, &raw[..8]);
        let t_read = tlv(words.min(16), &raw[8..16]);
        for req in requests(&raw, count, &t) {
            let reply = reply_for(&req, &raw, &t_read);
            let decoded = req.decode_response(&reply).unwrap();
            let mut again = vec![0u8; reply.len()];
            let n = decoded.encode(&mut again).unwrap();
            prop_assert_eq!(&again[..n], &reply[..]);

            // Truncated: every shorter length is an error.
            for cut in 0..reply.len() {
                prop_assert!(req.decode_response(&reply[..cut]).is_err(), "{:?} accepted {} of {} bytes", req.code(), cut, reply.len());
            }
            // Oversized: more than the request allowed.
            let mut long = reply.clone();
            long.resize(req.response_len() + 1, 0);
            let oversized = matches!(req.decode_response(&long), Err(DecodeError::Oversized { .. }));
            prop_assert!(oversized);
            // Error status: reported as such, with or without a payload behind it.
            let mut bad = reply.clone();
            bad[..4].copy_from_slice(&status.to_le_bytes());
            prop_assert_eq!(req.decode_response(&bad), Err(DecodeError::Status(status)));
            prop_assert_eq!(req.decode_response(&bad[..4]), Err(DecodeError::Status(status)));
        }
    }

    #[test]
    fn events_round_trip(id in any::<u32>(), ctl in any::<u16>(), mask in any::<u16>(), cut in 0usize..8) {
        for ev in [
            DeviceEvent::JackConnected { jack_id: id },
            DeviceEvent::JackDisconnected { jack_id: id },
            DeviceEvent::PcmPeriodElapsed { stream_id: id },
            DeviceEvent::PcmXrun { stream_id: id },
            DeviceEvent::CtlNotify { control_id: ctl, mask },
        ] {
            let mut buf = [0u8; 8];
            let n = ev.encode(&mut buf).unwrap();
            prop_assert_eq!(n, 8);
            prop_assert_eq!(DeviceEvent::decode(&buf), Ok(ev));
            prop_assert!(DeviceEvent::decode(&buf[..cut]).is_err());
            let mut long = buf.to_vec();
            long.push(0);
            let oversized = matches!(DeviceEvent::decode(&long), Err(DecodeError::Oversized { .. }));
            prop_assert!(oversized);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(raw in bytes(0..700usize), writable in 0usize..2000) {
        let _ = ControlRequest::decode(&raw, writable);
        let _ = DeviceEvent::decode(&raw);
        let t = tlv(2, &[1, 2, 3, 4]);
        for req in requests(&[7u8; 600], 3, &t) {
            let _ = req.decode_response(&raw);
        }
    }
}

#[test]
fn unknown_codes_are_named() {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&0x1300u32.to_le_bytes());
    assert_eq!(
        DeviceEvent::decode(&b),
        Err(DecodeError::UnknownCode(0x1300))
    );
    let mut r = [0u8; 16];
    r[..4].copy_from_slice(&0x0400u32.to_le_bytes());
    assert_eq!(
        ControlRequest::decode(&r, 4),
        Err(DecodeError::UnknownCode(0x400))
    );
}

#[test]
fn an_absurd_count_is_not_a_panic() {
    let q = QueryInfo {
        count: Le32::new(u32::MAX),
        ..Default::default()
    };
    let req = ControlRequest::PcmInfo { request: q };
    // The response length saturates; a short reply is an error value.
    assert!(req.response_len() > 1 << 30);
    let reply = 0x8000u32.to_le_bytes();
    assert!(matches!(
        req.decode_response(&reply),
        Err(DecodeError::Short { .. })
    ));
}

#[test]
fn a_tlv_reply_longer_than_asked_is_refused() {
    let req = ControlRequest::CtlTlvRead {
        request: CtlHdr::default(),
        max_value_len: 8,
    };
    let mut reply = vec![0u8; 4 + 8 + 8];
    reply[..4].copy_from_slice(&0x8000u32.to_le_bytes());
    reply[8..12].copy_from_slice(&16u32.to_le_bytes());
    assert_eq!(
        req.decode_response(&reply),
        Err(DecodeError::BadLength { got: 20 })
    );
}

#[test]
fn rates_and_formats_carry_their_facts() {
    assert_eq!(PcmRate::Rate384000.hz(), 384000);
    assert_eq!(PcmRate::from_hz(44100), Some(PcmRate::Rate44100));
    assert_eq!(PcmRate::Rate12000.since(), Some("1.4"));
    assert_eq!(PcmFormat::S24.width(), 24);
    assert_eq!(PcmFormat::S24.phys_width(), 32);
    assert_eq!(PcmFormat::S16.mask(), 1 << 5);
    assert_eq!(
        PcmRate::in_mask((1 << 6) | (1 << 7)).collect::<Vec<_>>(),
        [PcmRate::Rate44100, PcmRate::Rate48000]
    );
    assert_eq!(StatusCode::try_from(0x8002u32), Ok(StatusCode::NotSupp));
    assert!(StatusCode::try_from(0x9000u32).is_err());
}
