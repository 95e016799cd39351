//! What the fuzz targets share: the fuzzer's input read as a tape of decisions, and the
//! driver's card over the simulated kernel and the device model as an hmulti device for the
//! media add-on's client (`hmulti_client`).
//!
//! The targets are in `fuzz_targets/`; `cargo xtask fuzz` builds and runs them.
#![forbid(unsafe_code)]

use std::sync::Arc;

use driver::hmulti::{cards_for, Card, Settings};
use driver::virtio::{Engine, Options};
use sim_kernel::kernel::KernelConfig;
use sim_kernel::SimKernel;
use snd_model::{ModelConfig, SndModel};

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
        (0..n).map(|_| self.u8()).collect()
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

impl hmulti_client::Hmulti for Direct<'_> {
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

/// Deterministic audio: `len` bytes that differ from frame to frame.
pub fn signal(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
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
