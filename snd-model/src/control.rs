//! The control queue: what the device answers to each request.
//!
//! Requests are decoded with the same generated `ControlRequest::decode` the spec crate tests
//! against the driver's encoder, so the model and the driver cannot disagree about a layout
//! without a spec test failing too. Everything the spec says a driver MUST NOT do is answered
//! the way a strict device would (BAD_MSG) and written to the violations list; things a
//! device may simply not support (QEMU's jacks) get NOT_SUPP without blaming the driver.

use std::mem::size_of;

use spec::virtio_snd::{
    self as vs, ChmapInfo, ControlRequest, ControlResponse, CtlEnumItem, CtlHdr, CtlInfo,
    CtlInfoValue, CtlInfoValueEnumerated, CtlInfoValueInteger, CtlInfoValueInteger64, CtlType,
    CtlValue, DeviceEvent, Direction, Info, JackInfo, PcmFeature, PcmFormat, PcmInfo, PcmRate,
    QueryInfo, RequestCode, VIRTIO_SND_S_BAD_MSG, VIRTIO_SND_S_NOT_SUPP, VIRTIO_SND_S_OK,
};
use zerocopy::little_endian::{U32 as Le32, U64 as Le64};
use zerocopy::{FromZeros, Immutable, IntoBytes};

use super::config::CtlRange;
use super::pcm::{PcmState, StreamParams};
use super::State;

/// A control answer before faults are applied.
pub(crate) struct Reply {
    /// Status header and payload.
    pub bytes: Vec<u8>,
    /// For item queries: (count asked, size of one item).
    pub items: Option<(u32, usize)>,
}

impl Reply {
    pub fn status(code: u32) -> Reply {
        Reply {
            bytes: code.to_le_bytes().to_vec(),
            items: None,
        }
    }

    fn ok(resp: ControlResponse<'_>, len: usize) -> Reply {
        let mut bytes = vec![0u8; len];
        match resp.encode(&mut bytes) {
            Ok(n) => {
                bytes.truncate(n);
                Reply { bytes, items: None }
            }
            // Only reachable through a bug in the model itself.
            Err(_) => Reply::status(vs::VIRTIO_SND_S_IO_ERR),
        }
    }

    /// An OK answer carrying `items` (an item query).
    fn items<T: IntoBytes + Immutable>(resp: ControlResponse<'_>, items: &[T]) -> Reply {
        let mut r = Reply::ok(resp, 4 + items.as_bytes().len());
        r.items = Some((items.len() as u32, size_of::<T>()));
        r
    }

    pub fn status_code(&self) -> u32 {
        self.bytes
            .get(..4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// A short name for a request code in messages.
pub(crate) fn code_name(code: u32) -> String {
    RequestCode::from_raw(code).map_or_else(|| format!("{code:#x}"), |c| c.c_name().to_owned())
}

fn is_ctl_code(code: u32) -> bool {
    (0x300..0x400).contains(&code)
}

impl State {
    /// Answers one control request whose readable part is `readable` and whose writable part
    /// holds `writable_len` bytes. `now` is when the device acts on it.
    pub(crate) fn handle_control(
        &mut self,
        readable: &[u8],
        writable_len: usize,
        now: i64,
    ) -> Reply {
        let code = u32::from_le_bytes([readable[0], readable[1], readable[2], readable[3]]);
        if is_ctl_code(code) && !self.ctls_negotiated() {
            self.violation(format!(
                "{} sent without VIRTIO_SND_F_CTLS negotiated",
                code_name(code)
            ));
            return Reply::status(VIRTIO_SND_S_BAD_MSG);
        }
        let req = match ControlRequest::decode(readable, writable_len) {
            Ok(r) => r,
            Err(e) => {
                self.violation(format!(
                    "malformed {} request ({} readable, {writable_len} writable bytes): {e}",
                    code_name(code),
                    readable.len()
                ));
                return Reply::status(VIRTIO_SND_S_BAD_MSG);
            }
        };
        match req {
            ControlRequest::JackInfo { request } => {
                let jacks = self.jacks.clone();
                self.query(&request, 0, |i| {
                    let j = &jacks.get(i)?.config;
                    let mut info = JackInfo::new_zeroed();
                    info.hdr = Info {
                        hda_fn_nid: Le32::new(j.hda_fn_nid),
                    };
                    info.features = Le32::new(j.features);
                    info.hda_reg_defconf = Le32::new(j.hda_reg_defconf);
                    info.hda_reg_caps = Le32::new(j.hda_reg_caps);
                    info.connected = u8::from(j.connected);
                    Some(info)
                })
                .map_or_else(
                    |r| r,
                    |items| Reply::items(ControlResponse::JackInfo(&items), &items),
                )
            }
            ControlRequest::JackRemap { request } => {
                let id = request.hdr.jack_id.get();
                let Some(jack) = self.jacks.get_mut(id as usize) else {
                    self.violation(format!("JACK_REMAP of jack {id}, which does not exist"));
                    return Reply::status(VIRTIO_SND_S_BAD_MSG);
                };
                if jack.config.features & (1 << vs::VIRTIO_SND_JACK_F_REMAP) == 0 {
                    self.violation(format!(
                        "JACK_REMAP of jack {id}, which does not offer REMAP"
                    ));
                    return Reply::status(VIRTIO_SND_S_NOT_SUPP);
                }
                jack.remap = Some((request.association.get(), request.sequence.get()));
                Reply::ok(ControlResponse::JackRemap, 4)
            }
            ControlRequest::PcmInfo { request } => {
                let streams: Vec<_> = self.streams.iter().map(|s| s.cfg.clone()).collect();
                self.query(&request, 1, |i| {
                    let s = streams.get(i)?;
                    let mut info = PcmInfo::new_zeroed();
                    info.hdr = Info {
                        hda_fn_nid: Le32::new(s.hda_fn_nid),
                    };
                    info.features = Le32::new(s.features);
                    info.formats = Le64::new(s.formats);
                    info.rates = Le64::new(s.rates);
                    info.direction = s.advertised_direction.unwrap_or(s.direction.raw());
                    info.channels_min = s.channels_min;
                    info.channels_max = s.channels_max;
                    Some(info)
                })
                .map_or_else(
                    |r| r,
                    |items| Reply::items(ControlResponse::PcmInfo(&items), &items),
                )
            }
            ControlRequest::ChmapInfo { request } => {
                let maps = self.config.chmaps.clone();
                self.query(&request, 2, |i| {
                    let m = maps.get(i)?;
                    let mut info = ChmapInfo::new_zeroed();
                    info.hdr = Info {
                        hda_fn_nid: Le32::new(m.hda_fn_nid),
                    };
                    info.direction = m.direction.raw();
                    let n = m.positions.len().min(info.positions.len());
                    info.channels = n as u8;
                    info.positions[..n].copy_from_slice(&m.positions[..n]);
                    Some(info)
                })
                .map_or_else(
                    |r| r,
                    |items| Reply::items(ControlResponse::ChmapInfo(&items), &items),
                )
            }
            ControlRequest::CtlInfo { request } => {
                let controls = self.controls.clone();
                self.query(&request, 3, |i| controls.get(i).map(ctl_info))
                    .map_or_else(
                        |r| r,
                        |items| Reply::items(ControlResponse::CtlInfo(&items), &items),
                    )
            }
            ControlRequest::PcmSetParams { request } => {
                let id = request.hdr.stream_id.get();
                if let Err(r) = self.pcm_transition(id, vs::VIRTIO_SND_R_PCM_SET_PARAMS) {
                    return r;
                }
                let params = StreamParams::from_wire(&request);
                let problems = self.check_params(id, &params, request.padding);
                if !problems.is_empty() {
                    for p in problems {
                        self.violation(format!("PCM_SET_PARAMS for stream {id}: {p}"));
                    }
                    return Reply::status(VIRTIO_SND_S_BAD_MSG);
                }
                let s = &mut self.streams[id as usize];
                s.set_params = Some(params);
                s.state = PcmState::SetParams;
                Reply::ok(ControlResponse::PcmSetParams, 4)
            }
            ControlRequest::PcmPrepare { request } => {
                let id = request.stream_id.get();
                if let Err(r) = self.pcm_transition(id, vs::VIRTIO_SND_R_PCM_PREPARE) {
                    return r;
                }
                let s = &mut self.streams[id as usize];
                s.prepared = s.set_params;
                s.state = PcmState::Prepared;
                Reply::ok(ControlResponse::PcmPrepare, 4)
            }
            ControlRequest::PcmStart { request } => {
                let id = request.stream_id.get();
                if let Err(r) = self.pcm_transition(id, vs::VIRTIO_SND_R_PCM_START) {
                    return r;
                }
                let s = &mut self.streams[id as usize];
                s.state = PcmState::Started;
                s.start(now);
                Reply::ok(ControlResponse::PcmStart, 4)
            }
            ControlRequest::PcmStop { request } => {
                let id = request.stream_id.get();
                if let Err(r) = self.pcm_transition(id, vs::VIRTIO_SND_R_PCM_STOP) {
                    return r;
                }
                let s = &mut self.streams[id as usize];
                s.state = PcmState::Stopped;
                s.stop(now);
                Reply::ok(ControlResponse::PcmStop, 4)
            }
            ControlRequest::PcmRelease { request } => {
                let id = request.stream_id.get();
                if let Err(r) = self.pcm_transition(id, vs::VIRTIO_SND_R_PCM_RELEASE) {
                    return r;
                }
                // The spec: every pending I/O message of the stream completes before the
                // RELEASE itself does.
                self.flush_stream(id as usize);
                let s = &mut self.streams[id as usize];
                s.state = PcmState::Released;
                s.stop(now);
                Reply::ok(ControlResponse::PcmRelease, 4)
            }
            ControlRequest::CtlEnumItems { request, items } => {
                let Some(c) = self.control(&request, "CTL_ENUM_ITEMS", None) else {
                    return Reply::status(VIRTIO_SND_S_BAD_MSG);
                };
                if c.ctl_type != CtlType::Enumerated {
                    self.violation(format!(
                        "CTL_ENUM_ITEMS for control {} which is {:?}, not ENUMERATED",
                        request.control_id.get(),
                        c.ctl_type
                    ));
                    return Reply::status(VIRTIO_SND_S_BAD_MSG);
                }
                if (items as usize) < c.enum_items.len() {
                    self.violation(format!(
                        "CTL_ENUM_ITEMS for control {} with room for {items} items, it has {}",
                        request.control_id.get(),
                        c.enum_items.len()
                    ));
                    return Reply::status(VIRTIO_SND_S_BAD_MSG);
                }
                let list: Vec<CtlEnumItem> = c
                    .enum_items
                    .iter()
                    .map(|name| {
                        let mut it = CtlEnumItem::new_zeroed();
                        let n = name.len().min(it.item.len() - 1);
                        it.item[..n].copy_from_slice(&name.as_bytes()[..n]);
                        it
                    })
                    .collect();
                Reply::ok(
                    ControlResponse::CtlEnumItems(&list),
                    4 + list.as_bytes().len(),
                )
            }
            ControlRequest::CtlRead { request } => {
                let Some(c) =
                    self.control(&request, "CTL_READ", Some(vs::VIRTIO_SND_CTL_ACCESS_READ))
                else {
                    return Reply::status(VIRTIO_SND_S_BAD_MSG);
                };
                let value = c.value;
                Reply::ok(ControlResponse::CtlRead(&value), 4 + size_of::<CtlValue>())
            }
            ControlRequest::CtlWrite { request, payload } => {
                let id = request.control_id.get();
                let Some(c) =
                    self.control(&request, "CTL_WRITE", Some(vs::VIRTIO_SND_CTL_ACCESS_WRITE))
                else {
                    return Reply::status(VIRTIO_SND_S_BAD_MSG);
                };
                if let Err(why) = check_value(&c, &payload) {
                    self.violation(format!("CTL_WRITE of control {id}: {why}"));
                    return Reply::status(VIRTIO_SND_S_BAD_MSG);
                }
                self.controls[id as usize].value = payload;
                if self.config.notify_on_ctl_write {
                    self.events_pending.push_back(DeviceEvent::CtlNotify {
                        control_id: id as u16,
                        mask: 1 << vs::VIRTIO_SND_CTL_EVT_MASK_VALUE,
                    });
                }
                Reply::ok(ControlResponse::CtlWrite, 4)
            }
            ControlRequest::CtlTlvRead {
                request,
                max_value_len,
            } => {
                let Some(c) = self.control(
                    &request,
                    "CTL_TLV_READ",
                    Some(vs::VIRTIO_SND_CTL_ACCESS_TLV_READ),
                ) else {
                    return Reply::status(VIRTIO_SND_S_BAD_MSG);
                };
                if c.tlv.len() < 8 {
                    return Reply::status(VIRTIO_SND_S_NOT_SUPP);
                }
                // The spec: a device SHOULD truncate to the buffer and still succeed.
                let value = &c.tlv[8..];
                let keep = value.len().min(max_value_len as usize / 4 * 4);
                let mut blob = c.tlv[..4].to_vec();
                blob.extend_from_slice(&(keep as u32).to_le_bytes());
                blob.extend_from_slice(&value[..keep]);
                Reply::ok(ControlResponse::CtlTlvRead { tlv: &blob }, 4 + blob.len())
            }
            ControlRequest::CtlTlvWrite { request, tlv } => {
                let id = request.control_id.get();
                if self
                    .control(
                        &request,
                        "CTL_TLV_WRITE",
                        Some(vs::VIRTIO_SND_CTL_ACCESS_TLV_WRITE),
                    )
                    .is_none()
                {
                    return Reply::status(VIRTIO_SND_S_BAD_MSG);
                }
                self.controls[id as usize].tlv = tlv.to_vec();
                Reply::ok(ControlResponse::CtlTlvWrite, 4)
            }
            ControlRequest::CtlTlvCommand { request, tlv } => {
                let id = request.control_id.get();
                if self
                    .control(
                        &request,
                        "CTL_TLV_COMMAND",
                        Some(vs::VIRTIO_SND_CTL_ACCESS_TLV_COMMAND),
                    )
                    .is_none()
                {
                    return Reply::status(VIRTIO_SND_S_BAD_MSG);
                }
                self.tlv_commands.push((id, tlv.to_vec()));
                Reply::ok(ControlResponse::CtlTlvCommand, 4)
            }
        }
    }

    /// An item query: checks the range against config space (`which` indexes its counts)
    /// and the item size the driver expects, then describes the items.
    fn query<T: IntoBytes + Immutable>(
        &mut self,
        q: &QueryInfo,
        which: usize,
        item: impl Fn(usize) -> Option<T>,
    ) -> Result<Vec<T>, Reply> {
        let what = ["JACK_INFO", "PCM_INFO", "CHMAP_INFO", "CTL_INFO"][which];
        let advertised = u64::from(self.config.counts()[which]);
        let (start, count) = (q.start_id.get(), q.count.get());
        if u64::from(start) + u64::from(count) > advertised {
            self.violation(format!(
                "{what} for items {start}..{} but config space says there are {advertised}",
                u64::from(start) + u64::from(count)
            ));
            return Err(Reply::status(VIRTIO_SND_S_BAD_MSG));
        }
        if q.size.get() as usize != size_of::<T>() {
            self.violation(format!(
                "{what} with item size {}, the structure is {} bytes",
                q.size.get(),
                size_of::<T>()
            ));
            return Err(Reply::status(VIRTIO_SND_S_BAD_MSG));
        }
        // No `with_capacity(count)`: the count is the driver's and may be absurd.
        let mut items = Vec::new();
        for i in start..start + count {
            match item(i as usize) {
                Some(it) => items.push(it),
                // Advertised but not describable: the device's failing, like QEMU's jacks.
                None => return Err(Reply::status(VIRTIO_SND_S_NOT_SUPP)),
            }
        }
        Ok(items)
    }

    /// Checks that `id` names a stream and that `request` is legal in its state.
    fn pcm_transition(&mut self, id: u32, request: u32) -> Result<(), Reply> {
        let Some(s) = self.streams.get(id as usize) else {
            let advertised = self.config.counts()[1];
            if id < advertised {
                return Err(Reply::status(VIRTIO_SND_S_NOT_SUPP));
            }
            self.violation(format!(
                "{} for stream {id}, which does not exist",
                code_name(request)
            ));
            return Err(Reply::status(VIRTIO_SND_S_BAD_MSG));
        };
        let allowed = PcmState::allowed_before(request);
        if !allowed.contains(&s.state) {
            let state = s.state;
            self.violation(format!(
                "{} for stream {id} in state {state:?} (allowed from {allowed:?})",
                code_name(request)
            ));
            return Err(Reply::status(VIRTIO_SND_S_BAD_MSG));
        }
        Ok(())
    }

    /// Everything wrong with a SET_PARAMS for stream `id` (empty when it is valid).
    fn check_params(&self, id: u32, p: &StreamParams, padding: u8) -> Vec<String> {
        let cfg = &self.streams[id as usize].cfg;
        let mut bad = Vec::new();
        match PcmFormat::from_raw(p.format) {
            Some(f) if cfg.formats & f.mask() != 0 => {}
            _ => bad.push(format!("format {} is not advertised", p.format)),
        }
        match PcmRate::from_raw(p.rate) {
            Some(r) if cfg.rates & r.mask() != 0 => {}
            _ => bad.push(format!("rate {} is not advertised", p.rate)),
        }
        if p.channels < cfg.channels_min || p.channels > cfg.channels_max {
            bad.push(format!(
                "{} channels, the stream takes {}..={}",
                p.channels, cfg.channels_min, cfg.channels_max
            ));
        }
        if p.period_bytes == 0 || p.buffer_bytes == 0 {
            bad.push(format!(
                "buffer_bytes {} / period_bytes {} must not be zero",
                p.buffer_bytes, p.period_bytes
            ));
        } else if p.buffer_bytes % p.period_bytes != 0 {
            bad.push(format!(
                "period_bytes {} does not divide buffer_bytes {}",
                p.period_bytes, p.buffer_bytes
            ));
        }
        if p.features & !cfg.features != 0 {
            bad.push(format!(
                "features {:#x} not offered (stream offers {:#x})",
                p.features, cfg.features
            ));
        }
        let shmem = PcmFeature::ShmemHost.mask() as u32 | PcmFeature::ShmemGuest.mask() as u32;
        if p.features & shmem != 0 {
            bad.push("SHMEM_HOST/SHMEM_GUEST must not be selected".to_owned());
        }
        if padding != 0 {
            bad.push(format!("padding byte is {padding:#x}, must be 0"));
        }
        if let Some(fb) = p.frame_bits() {
            if p.period_bytes != 0 && (u64::from(p.period_bytes) * 8) % fb != 0 {
                bad.push(format!(
                    "period_bytes {} is not a whole number of {}-bit frames (QEMU would stall)",
                    p.period_bytes, fb
                ));
            }
        }
        bad
    }

    /// The control element a request names, if it exists and allows `access`.
    fn control(
        &mut self,
        request: &CtlHdr,
        what: &str,
        access: Option<u8>,
    ) -> Option<super::config::ControlConfig> {
        let id = request.control_id.get();
        let Some(c) = self.controls.get(id as usize).cloned() else {
            self.violation(format!("{what} of control {id}, which does not exist"));
            return None;
        };
        if let Some(bit) = access {
            if c.access & (1 << bit) == 0 {
                self.violation(format!(
                    "{what} of control {id} ({:?}) whose access {:#x} does not allow it",
                    c.name, c.access
                ));
                return None;
            }
        }
        Some(c)
    }

    fn ctls_negotiated(&self) -> bool {
        self.features
            .is_some_and(|f| f & (1 << vs::VIRTIO_SND_F_CTLS) != 0)
    }
}

fn ctl_info(c: &super::config::ControlConfig) -> CtlInfo {
    let mut info = CtlInfo::new_zeroed();
    info.hdr = Info {
        hda_fn_nid: Le32::new(c.hda_fn_nid),
    };
    info.role = Le32::new(c.role);
    info.r#type = Le32::new(c.ctl_type.raw());
    info.access = Le32::new(c.access);
    info.count = Le32::new(c.count);
    info.index = Le32::new(c.index);
    let n = c.name.len().min(info.name.len() - 1);
    info.name[..n].copy_from_slice(&c.name.as_bytes()[..n]);
    info.value = match (c.ctl_type, c.range) {
        (CtlType::Enumerated, _) => CtlInfoValue::from_enumerated(&CtlInfoValueEnumerated {
            items: Le32::new(c.enum_items.len() as u32),
        }),
        (_, CtlRange::Integer { min, max, step }) => {
            CtlInfoValue::from_integer(&CtlInfoValueInteger {
                min: Le32::new(min as u32),
                max: Le32::new(max as u32),
                step: Le32::new(step as u32),
            })
        }
        (_, CtlRange::Integer64 { min, max, step }) => {
            CtlInfoValue::from_integer64(&CtlInfoValueInteger64 {
                min: Le64::new(min as u64),
                max: Le64::new(max as u64),
                step: Le64::new(step as u64),
            })
        }
        (CtlType::Boolean, CtlRange::None) => CtlInfoValue::from_integer(&CtlInfoValueInteger {
            min: Le32::new(0),
            max: Le32::new(1),
            step: Le32::new(1),
        }),
        _ => CtlInfoValue::new_zeroed(),
    };
    info
}

/// Whether `v` is a value the element can hold.
fn check_value(c: &super::config::ControlConfig, v: &CtlValue) -> Result<(), String> {
    let n = c.count as usize;
    let in_range = |x: i64, min: i64, max: i64, step: i64| {
        x >= min && x <= max && (step <= 0 || (x - min) % step == 0)
    };
    match c.ctl_type {
        CtlType::Boolean => {
            for (i, x) in v.value.integer().iter().take(n).enumerate() {
                if x.get() > 1 {
                    return Err(format!("member {i} is {}, a BOOLEAN is 0 or 1", x.get()));
                }
            }
        }
        CtlType::Integer => {
            if let CtlRange::Integer { min, max, step } = c.range {
                for (i, x) in v.value.integer().iter().take(n).enumerate() {
                    let x = i64::from(x.get() as i32);
                    if !in_range(x, min.into(), max.into(), step.into()) {
                        return Err(format!(
                            "member {i} is {x}, outside {min}..={max} step {step}"
                        ));
                    }
                }
            }
        }
        CtlType::Integer64 => {
            if let CtlRange::Integer64 { min, max, step } = c.range {
                for (i, x) in v.value.integer64().iter().take(n).enumerate() {
                    let x = x.get() as i64;
                    if !in_range(x, min, max, step) {
                        return Err(format!(
                            "member {i} is {x}, outside {min}..={max} step {step}"
                        ));
                    }
                }
            }
        }
        CtlType::Enumerated => {
            for (i, x) in v.value.enumerated().iter().take(n).enumerate() {
                if x.get() as usize >= c.enum_items.len() {
                    return Err(format!(
                        "member {i} is item {}, there are {}",
                        x.get(),
                        c.enum_items.len()
                    ));
                }
            }
        }
        CtlType::Bytes | CtlType::Iec958 => {}
    }
    Ok(())
}

/// The direction a stream on `queue` must have.
pub(crate) fn queue_direction(queue: u16) -> Option<Direction> {
    match queue {
        vs::VIRTIO_SND_VQ_TX => Some(Direction::Output),
        vs::VIRTIO_SND_VQ_RX => Some(Direction::Input),
        _ => None,
    }
}

/// OK status as 4 bytes (used by the I/O path).
pub(crate) const OK: u32 = VIRTIO_SND_S_OK;
