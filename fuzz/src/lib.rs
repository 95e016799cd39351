//! What the fuzz targets share: the fuzzer's input read as a tape of decisions, and the
//! driver's card over the simulated kernel and the device model as an hmulti device for the
//! media add-on's client (`hmulti_client`).
//!
//! The targets are in `fuzz_targets/`; `cargo xtask fuzz` builds and runs them.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use driver::hmulti::{cards_for, Card, Settings};
use driver::virtio::{Engine, Options};
use hmulti_client::Hmulti;
use sim_kernel::kernel::KernelConfig;
use sim_kernel::SimKernel;
use snd_model::{ModelConfig, SndModel};
use spec::hmulti_audio as hm;

/// The simulated machine's physical memory, per run.
const ARENA: usize = 8 << 20;

pub type SimCard = Card<SimKernel, SndModel>;
pub type SimEngine = Engine<SimKernel, SndModel>;

/// The fuzzer's bytes read front to back as decisions. Once they run out every read is 0,
/// which each target makes the ordinary choice, so a short input is an ordinary run.
#[derive(Clone, Debug, Default)]
pub struct Tape {
    bytes: Vec<u8>,
    at: usize,
}

impl Tape {
    pub fn new(bytes: &[u8]) -> Tape {
        Tape {
            bytes: bytes.to_vec(),
            at: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    /// `n` bytes (zeros past the end).
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let from = self.at.min(self.bytes.len());
        let mut v = self.bytes[from..(from + n).min(self.bytes.len())].to_vec();
        v.resize(n, 0);
        self.at = self.at.saturating_add(n);
        v
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            usize::from(self.u16()) % n
        }
    }
}

/// The simulated machine, the device and the driver's engine on them.
pub struct Rig {
    pub kernel: Arc<SimKernel>,
    pub model: Arc<SndModel>,
    pub engine: Option<Arc<SimEngine>>,
}

impl Rig {
    pub fn new(config: ModelConfig) -> Rig {
        // A small arena: every run makes a new machine, and the default 64 MB costs more to
        // map and fault in than a run takes.
        let kernel = Arc::new(SimKernel::with_config(KernelConfig {
            memory_size: ARENA,
            ..KernelConfig::default()
        }));
        let model = Arc::new(SndModel::new(&kernel, config));
        Rig {
            kernel,
            model,
            engine: None,
        }
    }

    /// Starts the engine; `None` if the driver refused the device.
    pub fn start(&mut self) -> Option<Arc<SimEngine>> {
        let e = Engine::start(self.kernel.clone(), self.model.clone(), Options::default()).ok()?;
        self.engine = Some(e.clone());
        Some(e)
    }

    /// Every card the driver publishes for the device (it may publish none).
    pub fn cards(&self) -> Vec<SimCard> {
        let Some(engine) = &self.engine else {
            return Vec::new();
        };
        cards_for(engine)
            .into_iter()
            .filter_map(|(o, i)| Card::new(engine.clone(), o, i, Settings::default()).ok())
            .collect()
    }

    /// Tears the engine down and frees the client's memory; what the kernel holds after
    /// this is what the driver left.
    pub fn shutdown(&mut self, cards: Vec<SimCard>) {
        for c in cards {
            c.shutdown();
        }
        if let Some(e) = self.engine.take() {
            Engine::shutdown(e);
        }
        self.kernel.user_free_all();
    }
}

/// The driver's card as an hmulti device for `hmulti_client` (the media add-on's calls).
pub struct Direct<'a>(pub &'a SimCard);

impl Hmulti for Direct<'_> {
    fn ioctl(&self, op: u32, buffer: u64, length: usize) -> i32 {
        match self.0.dispatch(op, buffer, length) {
            Ok(()) => 0,
            Err(s) => s.0,
        }
    }
    fn user_alloc(&self, len: usize) -> u64 {
        self.0.kernel().user_alloc(len)
    }
    fn user_free(&self, addr: u64) {
        self.0.kernel().user_free(addr)
    }
    fn user_write(&self, addr: u64, bytes: &[u8]) {
        self.0.kernel().user_write(addr, bytes)
    }
    fn user_read(&self, addr: u64, len: usize) -> Vec<u8> {
        self.0.kernel().user_read(addr, len)
    }
    fn buffer_write(&self, addr: u64, bytes: &[u8]) -> Result<(), String> {
        self.0
            .kernel()
            .area_user_write(addr, bytes)
            .map_err(|e| format!("{e}"))
    }
    fn buffer_read(&self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        let mut v = vec![0u8; len];
        self.0
            .kernel()
            .area_user_read(addr, &mut v)
            .map_err(|e| format!("{e}"))?;
        Ok(v)
    }
}

/// Bytes kept after every argument block the client allocates, and what they hold.
const CANARY: usize = 64;
const CANARY_BYTE: u8 = 0x5c;

/// The hmulti device as [`Direct`], watched: after every call into the driver it checks that
/// nothing wrote where neither the driver nor the device may write, whatever the device
/// answered.
///
/// - Past the end of each argument block the client handed over (the `length` it passed):
///   [`CANARY`] bytes follow every block inside the same mapping, so a write that runs a
///   little past the end (a count a device inflated, a size the driver got wrong) is caught
///   here, where the guard page after the mapping would only catch a long one.
/// - Into the playback buffers: only the client writes them (the device reads them); after
///   every call each range the client wrote must still hold what it wrote. The driver may
///   hand out new buffers (GET_BUFFERS, SET_GLOBAL_FORMAT) or stop (FORCE_STOP), so those
///   calls forget what was written before.
///
/// A violation panics with the call, the address and the first changed byte.
pub struct Witnessed<'a> {
    inner: Direct<'a>,
    blocks: RefCell<BTreeMap<u64, usize>>,
    played: RefCell<BTreeMap<u64, Vec<u8>>>,
}

impl<'a> Witnessed<'a> {
    pub fn new(card: &'a SimCard) -> Witnessed<'a> {
        Witnessed {
            inner: Direct(card),
            blocks: RefCell::new(BTreeMap::new()),
            played: RefCell::new(BTreeMap::new()),
        }
    }

    /// Panics if a canary or a playback range changed; `during` names the call.
    pub fn check(&self, during: &str) {
        let k = self.inner.0.kernel();
        for (&addr, &len) in self.blocks.borrow().iter() {
            let tail = k.user_read(addr + len as u64, CANARY);
            if tail == [CANARY_BYTE; CANARY] {
                continue;
            }
            if let Some(i) = tail.iter().position(|&b| b != CANARY_BYTE) {
                panic!(
                    "{during}: byte {} past the end of the {len}-byte argument block at \
                     {addr:#x} was written ({:#04x})",
                    i, tail[i]
                );
            }
        }
        for (&addr, want) in self.played.borrow().iter() {
            let Ok(now) = self.inner.buffer_read(addr, want.len()) else {
                panic!("{during}: the playback buffer at {addr:#x} can no longer be read");
            };
            if now == *want {
                continue;
            }
            if let Some(i) = now.iter().zip(want).position(|(a, b)| a != b) {
                panic!(
                    "{during}: byte {i} of the playback buffer at {addr:#x} changed from \
                     {:#04x} to {:#04x}: only the client writes there",
                    want[i], now[i]
                );
            }
        }
    }
}

impl Hmulti for Witnessed<'_> {
    fn ioctl(&self, op: u32, buffer: u64, length: usize) -> i32 {
        if matches!(
            op,
            hm::B_MULTI_GET_BUFFERS | hm::B_MULTI_SET_GLOBAL_FORMAT | hm::B_MULTI_BUFFER_FORCE_STOP
        ) {
            self.played.borrow_mut().clear();
        }
        let r = self.inner.ioctl(op, buffer, length);
        self.check(&format!("ioctl {op:#x} ({length} bytes at {buffer:#x})"));
        r
    }
    fn user_alloc(&self, len: usize) -> u64 {
        let addr = self.inner.user_alloc(len + CANARY);
        self.inner
            .user_write(addr + len as u64, &[CANARY_BYTE; CANARY]);
        self.blocks.borrow_mut().insert(addr, len);
        addr
    }
    fn user_free(&self, addr: u64) {
        self.check("user_free");
        self.blocks.borrow_mut().remove(&addr);
        self.inner.user_free(addr)
    }
    fn user_write(&self, addr: u64, bytes: &[u8]) {
        self.inner.user_write(addr, bytes)
    }
    fn user_read(&self, addr: u64, len: usize) -> Vec<u8> {
        self.inner.user_read(addr, len)
    }
    fn buffer_write(&self, addr: u64, bytes: &[u8]) -> Result<(), String> {
        self.inner.buffer_write(addr, bytes)?;
        let end = addr + bytes.len() as u64;
        let mut played = self.played.borrow_mut();
        played.retain(|&a, v| a + v.len() as u64 <= addr || a >= end);
        played.insert(addr, bytes.to_vec());
        Ok(())
    }
    fn buffer_read(&self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        self.inner.buffer_read(addr, len)
    }
}

/// Deterministic audio: `len` bytes that differ from frame to frame. Made eight bytes at a
/// time (xorshift64): every run makes a few seconds of it, and the targets' per-iteration
/// coverage instrumentation made a byte-at-a-time loop most of a run's time.
pub fn signal(len: usize, seed: u32) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Panics unless the kernel is clean but for the areas the driver said it leaks: each live
/// area must be named in a "leaking" log line (the device kept memory the driver cannot free
/// safely), and nothing else may be alive or misused.
pub fn assert_clean_but_logged_leaks(kernel: &SimKernel) {
    let log = kernel.log_lines();
    for a in kernel.areas() {
        let named = [format!("area {})", a.id), format!("area {}:", a.id)];
        assert!(
            log.iter()
                .any(|l| l.contains("leaking") && named.iter().any(|n| l.contains(n))),
            "area {:?} is alive and the driver did not log leaking it\nlog:\n{}",
            a.name,
            log.join("\n")
        );
        kernel.delete_area(&a.to_area());
    }
    if let Err(problems) = kernel.check_clean() {
        panic!("kernel not clean:\n{}", problems.join("\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmulti_client::{play, Choice, Session};

    fn rig() -> (Rig, SimCard) {
        let mut rig = Rig::new(ModelConfig::hmulti_full(2));
        rig.start().expect("the driver starts");
        let card = rig.cards().pop().expect("one card");
        (rig, card)
    }

    #[test]
    fn a_normal_session_passes_the_witness() {
        let (mut rig, card) = rig();
        let d = Witnessed::new(&card);
        let mut s = Session::init(&d, Choice::default()).expect("a session");
        let input = signal(s.play.bytes() * 3, 1);
        let p = play(&d, &mut s, &input);
        assert_eq!(p.errors, 0);
        s.release(&d);
        d.check("the end");
        rig.shutdown(vec![card]);
    }

    #[test]
    fn get_buffers_again_frees_the_tables_it_replaces() {
        let (mut rig, card) = rig();
        let d = Witnessed::new(&card);
        let mut s = Session::init(&d, Choice::default()).expect("a session");
        let live = d.blocks.borrow().len();
        for _ in 0..5 {
            s.get_buffers(&d).expect("GET_BUFFERS");
            assert_eq!(d.blocks.borrow().len(), live, "client blocks piled up");
        }
        s.release(&d);
        assert!(d.blocks.borrow().is_empty(), "release frees every block");
        rig.shutdown(vec![card]);
    }

    #[test]
    #[should_panic(expected = "past the end of the 16-byte argument block")]
    fn a_write_one_byte_past_a_block_is_caught() {
        let (_rig, card) = rig();
        let d = Witnessed::new(&card);
        let a = d.user_alloc(16);
        card.kernel().user_write(a, &[0u8; 17]);
        d.check("a test");
    }

    #[test]
    #[should_panic(expected = "of the playback buffer at")]
    fn a_write_into_a_playback_buffer_is_caught() {
        let (_rig, card) = rig();
        let d = Witnessed::new(&card);
        let s = Session::init(&d, Choice::default()).expect("a session");
        let base = s.play.descs[1][0].base.addr();
        s.play.write(&d, 1, &[1u8; 8]).expect("the client writes");
        card.kernel()
            .area_user_write(base + 3, &[2])
            .expect("inside the buffer area");
        d.check("a test");
    }
}
