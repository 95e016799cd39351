//! A client that drives a card the way Haiku's multi_audio media add-on does, on a simulated
//! kernel and a virtio-snd device model. Structures are filled with garbage where the media
//! add-on leaves them uninitialised.
#![allow(dead_code)]

use std::sync::Arc;

use driver::hmulti::{cards_for, Card, Settings};
use driver::virtio::{Engine, Options};
use hmulti_client::{Choice, Session};
use platform::Status;
use sim_kernel::SimKernel;
use snd_model::{ModelConfig, SndModel};
use zerocopy::{FromBytes, Immutable, IntoBytes};

pub type TestCard = Card<SimKernel, SndModel>;

pub use hmulti_client::GARBAGE;

pub struct Rig {
    pub kernel: Arc<SimKernel>,
    pub model: Arc<SndModel>,
    pub engine: Option<Arc<Engine<SimKernel, SndModel>>>,
}

impl Rig {
    pub fn new(config: ModelConfig) -> Rig {
        let kernel = Arc::new(SimKernel::new());
        let model = Arc::new(SndModel::new(&kernel, config));
        Rig {
            kernel,
            model,
            engine: None,
        }
    }

    pub fn start(&mut self) -> Result<Arc<Engine<SimKernel, SndModel>>, Status> {
        let e = Engine::start(self.kernel.clone(), self.model.clone(), Options::default())?;
        self.engine = Some(e.clone());
        Ok(e)
    }

    pub fn card(&mut self, settings: Settings) -> TestCard {
        let engine = match &self.engine {
            Some(e) => e.clone(),
            None => self.start().expect("engine starts"),
        };
        let (o, i) = cards_for(&engine)[0];
        Card::new(engine, o, i, settings).expect("card")
    }

    /// Shuts everything down and checks nothing leaked and the device saw no violation.
    pub fn finish(mut self, card: Option<TestCard>) {
        if let Some(c) = card {
            c.shutdown();
        }
        if let Some(e) = self.engine.take() {
            Engine::shutdown(e);
        }
        self.kernel.user_free_all();
        self.model.assert_no_violations();
        if let Err(problems) = self.kernel.check_clean() {
            panic!("kernel not clean:\n{}", problems.join("\n"));
        }
    }
}

/// After a device kept chains: the areas the driver leaked (never freed, since the device
/// may still write them) must be exactly `names`, each logged. The test then deletes them
/// itself, so that the leak check that follows sees anything else.
pub fn expect_leaked_areas(kernel: &SimKernel, names: &[&str]) {
    let mut live: Vec<String> = kernel.areas().iter().map(|a| a.name.clone()).collect();
    live.sort();
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(live, want, "areas left alive");
    let leak_lines = kernel
        .log_lines()
        .iter()
        .filter(|l| l.contains("leaking"))
        .count();
    assert_eq!(leak_lines, names.len(), "one log line per leaked area");
    for a in kernel.areas() {
        kernel.delete_area(&a.to_area());
    }
}

/// The device's violations must be exactly the expected kinds: each contains one of
/// `expected`, and each of `expected` occurs.
pub fn expect_violations(violations: Vec<String>, expected: &[&str]) {
    for v in &violations {
        assert!(
            expected.iter().any(|e| v.contains(e)),
            "unexpected violation: {v}\n(all: {violations:#?})"
        );
    }
    for e in expected {
        assert!(
            violations.iter().any(|v| v.contains(e)),
            "expected a violation containing {e:?}, got {violations:#?}"
        );
    }
}

/// User memory holding a `T`, filled with garbage first.
pub fn user_value<T: IntoBytes + Immutable>(k: &SimKernel, v: &T) -> u64 {
    let size = core::mem::size_of::<T>();
    let addr = k.user_alloc(size);
    k.user_write(addr, &vec![GARBAGE; size]);
    k.user_write_value(addr, v);
    addr
}

/// Runs one ioctl with `arg` in user memory and reads it back.
pub fn ioctl<T: IntoBytes + FromBytes + Immutable>(
    card: &TestCard,
    op: u32,
    arg: &mut T,
) -> Result<(), Status> {
    let k = card.kernel();
    let addr = user_value(k, arg);
    let r = card.dispatch(op, addr, core::mem::size_of::<T>());
    *arg = k.user_read_value(addr);
    k.user_free(addr);
    r
}

/// A struct of garbage, as the media add-on's heap objects start.
pub fn garbage<T: FromBytes>() -> T {
    T::read_from_bytes(&vec![GARBAGE; core::mem::size_of::<T>()]).unwrap()
}

/// The media add-on's client (`hmulti_client::Session`) bound to a card of the driver crate,
/// with the checks these tests want on the init sequence.
pub struct Client {
    session: Session,
}

impl std::ops::Deref for Client {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

fn direct(card: &TestCard) -> Direct<'_> {
    Direct {
        card,
        kernel: card.kernel(),
    }
}

impl Client {
    /// GET_DESCRIPTION, GET/SET_ENABLED_CHANNELS, SET/GET_GLOBAL_FORMAT, GET_BUFFERS and
    /// LIST_MIX_CONTROLS, exactly as `MultiAudioDevice::_InitDriver` does them.
    pub fn init(card: &TestCard, rate: Option<u32>, format: Option<u32>) -> Client {
        let session = Session::init(&direct(card), Choice { rate, format })
            .expect("the media add-on's init sequence");
        assert_eq!(
            session.desc.request_channel_count, 32,
            "the request count is the caller's"
        );
        let total =
            (2 * (session.desc.output_channel_count + session.desc.input_channel_count)) as usize;
        for (i, c) in session.channels.iter().enumerate().skip(total) {
            assert_eq!(
                c.as_bytes(),
                &[GARBAGE; 32],
                "channel {i} is past the list and must be untouched"
            );
        }
        Client { session }
    }

    pub fn try_get_buffers(&mut self, card: &TestCard) -> Result<(), String> {
        self.session.get_buffers(&direct(card))
    }

    pub fn get_buffers(&mut self, card: &TestCard) {
        self.session
            .get_buffers(&direct(card))
            .expect("GET_BUFFERS");
    }

    pub fn exchange(&mut self, card: &TestCard) -> Result<(), Status> {
        match self.session.exchange(&direct(card)) {
            0 => Ok(()),
            s => Err(Status(s)),
        }
    }

    /// Writes one buffer's worth of interleaved frames into playback buffer `b` through the
    /// per-channel base/stride descriptors.
    pub fn fill(&self, card: &TestCard, b: usize, frames: &[u8]) {
        self.session
            .play
            .write(&direct(card), b, frames)
            .expect("buffer memory");
    }

    /// Reads record buffer `b` back into interleaved frames.
    pub fn read_record(&self, card: &TestCard, b: usize) -> Vec<u8> {
        self.session
            .rec
            .read(&direct(card), b)
            .expect("buffer memory")
    }
}

/// Deterministic test audio: `len` bytes that differ from frame to frame.
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

/// The driver crate's card driven directly (no add-on, no loader), as an hmulti device for
/// the media add-on's client: the reference the loaded add-on must match.
pub struct Direct<'a> {
    pub card: &'a Card<SimKernel, SndModel>,
    pub kernel: &'a SimKernel,
}

impl hmulti_client::Hmulti for Direct<'_> {
    fn ioctl(&self, op: u32, buffer: u64, length: usize) -> i32 {
        match self.card.dispatch(op, buffer, length) {
            Ok(()) => 0,
            Err(s) => s.0,
        }
    }
    fn user_alloc(&self, len: usize) -> u64 {
        self.kernel.user_alloc(len)
    }
    fn user_free(&self, addr: u64) {
        self.kernel.user_free(addr)
    }
    fn user_write(&self, addr: u64, bytes: &[u8]) {
        self.kernel.user_write(addr, bytes)
    }
    fn user_read(&self, addr: u64, len: usize) -> Vec<u8> {
        self.kernel.user_read(addr, len)
    }
    fn buffer_write(&self, addr: u64, bytes: &[u8]) -> Result<(), String> {
        self.kernel
            .area_user_write(addr, bytes)
            .map_err(|e| format!("{e}"))
    }
    fn buffer_read(&self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        let mut v = vec![0u8; len];
        self.kernel
            .area_user_read(addr, &mut v)
            .map_err(|e| format!("{e}"))?;
        Ok(v)
    }
}
