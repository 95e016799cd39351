//! Each control request type decodes its reply as the type the spec names for it (virtio
//! 1.3 section 5.14.6: `items`, `response_payload`), with the same checks as the untyped
//! `ControlRequest::decode_response`.

use spec::virtio_snd::*;
use spec::DecodeError;
use zerocopy::little_endian::U32 as Le32;
use zerocopy::IntoBytes;

/// VIRTIO_SND_S_OK and VIRTIO_SND_S_NOT_SUPP, from the spec's status table.
const OK: u32 = 0x8000;
const NOT_SUPP: u32 = 0x8002;

fn reply(status: u32, payload: &[u8]) -> Vec<u8> {
    let mut r = status.to_le_bytes().to_vec();
    r.extend_from_slice(payload);
    r
}

/// The compiler checks the pairing: a query answers with a slice of its items.
fn items_of<'r, Q: Request<Response<'r> = &'r [T]>, T: 'r>(q: &Q, r: &'r [u8]) -> &'r [T] {
    q.decode_response(r).unwrap()
}

#[test]
fn an_info_query_answers_with_its_items() {
    let q = requests::PcmInfo {
        request: QueryInfo {
            start_id: Le32::new(0),
            count: Le32::new(2),
            size: Le32::new(32),
            ..Default::default()
        },
    };
    let infos = [
        PcmInfo {
            direction: 0,
            channels_min: 1,
            channels_max: 2,
            ..Default::default()
        },
        PcmInfo {
            direction: 1,
            channels_min: 2,
            channels_max: 8,
            ..Default::default()
        },
    ];
    let r = reply(OK, infos.as_bytes());
    let got: &[PcmInfo] = items_of(&q, &r);
    assert_eq!(got, &infos);
    // The untyped decoder agrees.
    assert_eq!(
        q.message().decode_response(&r),
        Ok(ControlResponse::PcmInfo(&infos))
    );
    // One item short, or an error status, is an error value.
    assert!(matches!(
        q.decode_response(&r[..r.len() - 32]),
        Err(DecodeError::Short { .. })
    ));
    assert_eq!(
        q.decode_response(&reply(NOT_SUPP, &[])),
        Err(DecodeError::Status(NOT_SUPP))
    );
}

#[test]
fn each_request_answers_with_the_spec_s_type() {
    let hdr = CtlHdr {
        control_id: Le32::new(3),
        ..Default::default()
    };
    // CTL_READ: the 512-byte value.
    let mut value = CtlValue::default();
    value.value.raw[0] = 7;
    let r = reply(OK, value.as_bytes());
    let got: &CtlValue = requests::CtlRead { request: hdr }
        .decode_response(&r)
        .unwrap();
    assert_eq!(got.value.raw[0], 7);

    // CTL_ENUM_ITEMS: as many 64-byte names as the caller asked for.
    let mut names = [CtlEnumItem::default(); 2];
    names[1].item[0] = b'B';
    let r = reply(OK, names.as_bytes());
    let q = requests::CtlEnumItems {
        request: hdr,
        items: 2,
    };
    let got: &[CtlEnumItem] = q.decode_response(&r).unwrap();
    assert_eq!(got[1].item[0], b'B');

    // CTL_TLV_READ: the TLV as long as its header says, at most what was asked for.
    let mut tlv = vec![0u8; 8 + 4];
    tlv[4..8].copy_from_slice(&4u32.to_le_bytes());
    let r = reply(OK, &tlv);
    let q = requests::CtlTlvRead {
        request: hdr,
        max_value_len: 4,
    };
    let got: &[u8] = q.decode_response(&r).unwrap();
    assert_eq!(got, &tlv[..]);

    // PCM_START: nothing but the status.
    let start = requests::PcmStart {
        request: PcmHdr::default(),
    };
    let got: () = start.decode_response(&reply(OK, &[])).unwrap();
    assert_eq!(got, ());
    assert_eq!(start.message().code(), RequestCode::PcmStart);
    assert!(matches!(
        start.decode_response(&reply(OK, &[0; 4])),
        Err(DecodeError::Oversized { max: 4, got: 8 })
    ));
}
