//! Drives a real virtio-snd PCI function from Linux user space (root, inside a guest run
//! with `-device virtio-sound-pci`): negotiate, read the config, set up the queues, and ask
//! for PCM_INFO of the first streams on the control queue.
//!
//! Usage: `pci_probe [BDF]`. Exit status 0 when the device answered as QEMU's does.

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("pci_probe: Linux only");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    match linux::run() {
        Ok(true) => {
            println!("PCI_PROBE OK");
            std::process::ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("PCI_PROBE MISMATCH");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            println!("PCI_PROBE FAILED: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    use platform::{PhysEntry, QueueHandler, VirtioDevice};
    use virtio_pci_uio::{DmaRegion, PciSnd};

    const VERSION_1: u64 = 1 << 32;
    const F_CTLS: u64 = 1;
    const R_PCM_INFO: u32 = 0x0100;
    const S_OK: u32 = 0x8000;
    const PCM_INFO_SIZE: usize = 32;
    const CONTROL_QUEUE: u16 = 0;

    /// Counts the "interrupts" of each queue.
    #[derive(Default)]
    struct Signals {
        hits: Mutex<[u32; 4]>,
        cv: Condvar,
    }

    impl QueueHandler for Signals {
        fn queue_interrupt(&self, queue: u16) {
            let mut h = self.hits.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = h.get_mut(usize::from(queue)) {
                *n += 1;
            }
            self.cv.notify_all();
        }
    }

    impl Signals {
        fn hits(&self, queue: u16) -> u32 {
            self.hits.lock().unwrap_or_else(|e| e.into_inner())[usize::from(queue)]
        }

        /// Waits until `queue` was signalled more than `seen` times.
        fn wait_past(&self, queue: u16, seen: u32, deadline: Instant) -> bool {
            let mut h = self.hits.lock().unwrap_or_else(|e| e.into_inner());
            while h[usize::from(queue)] == seen {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                h = self
                    .cv
                    .wait_timeout(h, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            true
        }
    }

    fn dma_write(r: &DmaRegion, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= r.len());
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: `off + i < r.len()`: inside the region's mapping, which lives as long as
            // `r`; the memory is shared with the device, so volatile, byte-wise.
            unsafe { r.base().add(off + i).write_volatile(*b) };
        }
    }

    fn dma_read(r: &DmaRegion, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= r.len());
        (0..len)
            // SAFETY: as in `dma_write`.
            .map(|i| unsafe { r.base().add(off + i).read_volatile() })
            .collect()
    }

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    fn le64(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
    }

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// `dev` before `mem`: fields drop in order, and the device must be reset (when the last
    /// `PciSnd` handle drops) before the memory its chains point into goes.
    struct Probe {
        dev: Arc<PciSnd>,
        signals: Arc<Signals>,
        mem: DmaRegion,
        next_cookie: u64,
    }

    /// Where the control request and its response go: the first and the last huge page of
    /// `mem`, so a region whose pages were rearranged is exercised.
    const REQ_OFF: usize = 0;

    impl Probe {
        fn errs(&self) -> String {
            format!("{:?}", self.dev.errors())
        }

        fn resp_off(&self) -> usize {
            self.mem.len() - 4096
        }

        /// Waits for the next used chain on `queue`.
        fn dequeue(&self, queue: u16, timeout: Duration) -> Result<(u64, u32), String> {
            let deadline = Instant::now() + timeout;
            loop {
                let seen = self.signals.hits(queue);
                if let Some(u) = self.dev.queue_dequeue(queue) {
                    return Ok(u);
                }
                if !self.signals.wait_past(queue, seen, deadline) {
                    return Err(format!(
                        "nothing used on queue {queue} after {timeout:?} (status {:#x}, {})",
                        self.dev.device_status(),
                        self.errs()
                    ));
                }
            }
        }

        /// One control request; returns the response status and payload.
        fn control(&mut self, req: &[u8], payload: usize) -> Result<(u32, Vec<u8>), String> {
            let resp_len = 4 + payload;
            let resp_off = self.resp_off();
            dma_write(&self.mem, REQ_OFF, req);
            dma_write(&self.mem, resp_off, &vec![0xaa; resp_len]);
            let base = self.mem.phys_base();
            let entries = [
                PhysEntry {
                    address: base + REQ_OFF as u64,
                    size: req.len() as u64,
                },
                PhysEntry {
                    address: base + resp_off as u64,
                    size: resp_len as u64,
                },
            ];
            self.next_cookie += 1;
            let cookie = self.next_cookie;
            // SAFETY: the entries are in `mem`, which `Probe` declares after `dev`, so it is
            // dropped after the device (whose drop resets it).
            unsafe { self.dev.queue_request(CONTROL_QUEUE, &entries, 1, cookie) }
                .map_err(|s| format!("queue_request: {s} {}", self.errs()))?;
            let (got, used) = self.dequeue(CONTROL_QUEUE, Duration::from_secs(2))?;
            if got != cookie || used as usize != resp_len {
                return Err(format!(
                    "control answer: cookie {got:#x} len {used}, expected {cookie:#x} len \
                     {resp_len}"
                ));
            }
            let resp = dma_read(&self.mem, resp_off, resp_len);
            Ok((le32(&resp, 0), resp[4..].to_vec()))
        }
    }

    pub fn run() -> Result<bool, String> {
        let bdf = std::env::args().nth(1);
        let dev = Arc::new(PciSnd::open(bdf.as_deref())?);
        let errs = |dev: &PciSnd| format!("{:?}", dev.errors());
        println!(
            "opened {}: {} queues, device features {:#x}, status {:#x}",
            dev.bdf(),
            dev.num_queues(),
            dev.device_features(),
            dev.device_status()
        );
        let features = dev
            .negotiate_features(VERSION_1 | F_CTLS)
            .map_err(|s| format!("negotiate_features: {s} {}", errs(&dev)))?;
        println!(
            "negotiated {features:#x}, status {:#x}",
            dev.device_status()
        );
        let mut cfg = [0u8; 12];
        dev.read_device_config(0, &mut cfg)
            .map_err(|s| format!("read_device_config: {s} {}", errs(&dev)))?;
        let (jacks, streams, chmaps) = (le32(&cfg, 0), le32(&cfg, 4), le32(&cfg, 8));
        println!("config: jacks {jacks}, streams {streams}, chmaps {chmaps}");
        dev.alloc_queues(4)
            .map_err(|s| format!("alloc_queues: {s} {}", errs(&dev)))?;
        let sizes: Vec<u16> = (0..4).map(|q| dev.queue_size(q)).collect();
        println!("queues allocated, sizes {sizes:?}");
        let signals = Arc::new(Signals::default());
        dev.setup_interrupts(signals.clone())
            .map_err(|s| format!("setup_interrupts: {s} {}", errs(&dev)))?;
        println!("DRIVER_OK set, status {:#x}", dev.device_status());

        let mem = DmaRegion::new(8 << 20)?;
        println!(
            "DMA region: {} bytes at phys {:#x}",
            mem.len(),
            mem.phys_base()
        );
        let mut p = Probe {
            dev: dev.clone(),
            signals,
            mem,
            next_cookie: 0xc0ffee,
        };

        let count = streams.min(2) as usize;
        let sent = Instant::now();
        let (status, info) = p.control(
            &words(&[R_PCM_INFO, 0, count as u32, PCM_INFO_SIZE as u32]),
            count * PCM_INFO_SIZE,
        )?;
        println!(
            "PCM_INFO(0, {count}): status {status:#x} after {:?}",
            sent.elapsed()
        );
        let mut ok = status == S_OK && count == 2;
        for i in 0..count {
            let s = &info[i * PCM_INFO_SIZE..(i + 1) * PCM_INFO_SIZE];
            let (formats, rates) = (le64(s, 8), le64(s, 16));
            println!(
                "stream {i}: hda_fn_nid {}, features {:#x}, formats {formats:#x}, rates \
                 {rates:#x}, direction {}, channels {}..{}",
                le32(s, 0),
                le32(s, 4),
                s[24],
                s[25],
                s[26]
            );
            ok &= formats == 0xe0078 && rates == 0x3fff;
        }

        ok &= playback(&mut p)?;

        dev.free_interrupts();
        let reset = dev.free_queues();
        println!(
            "after free_queues ({reset:?}): status {:#x}",
            dev.device_status()
        );
        let (anomalies, n) = dev.anomalies();
        let errors = dev.errors();
        if n > 0 || !errors.is_empty() {
            println!("anomalies {n} {anomalies:?}, errors {errors:?}");
            ok = false;
        }
        Ok(ok)
    }

    /// Plays four 2048-byte periods of stream 0 through the tx queue (with event buffers
    /// posted, which QEMU never uses).
    fn playback(p: &mut Probe) -> Result<bool, String> {
        const SET_PARAMS: u32 = 0x0101;
        const PREPARE: u32 = 0x0102;
        const RELEASE: u32 = 0x0103;
        const START: u32 = 0x0104;
        const STOP: u32 = 0x0105;
        const EVENT_QUEUE: u16 = 1;
        const TX_QUEUE: u16 = 2;
        const PERIOD: usize = 2048;
        const PERIODS: usize = 4;
        let mut ok = true;
        // buffer 8192, period 2048, features 0, channels 2, S16 (5), 48000 (7).
        let mut set = words(&[SET_PARAMS, 0, (PERIOD * PERIODS) as u32, PERIOD as u32, 0]);
        set.extend_from_slice(&[2, 5, 7, 0]);
        for (name, req) in [
            ("SET_PARAMS", set),
            ("PREPARE", words(&[PREPARE, 0])),
            ("START", words(&[START, 0])),
        ] {
            let (status, _) = p.control(&req, 0)?;
            println!("{name}: status {status:#x}");
            ok &= status == S_OK;
        }
        let base = p.mem.phys_base();
        // Event buffers in page 1, tx buffers from page 2 on.
        for i in 0..4u64 {
            let e = [PhysEntry {
                address: base + 4096 + 8 * i,
                size: 8,
            }];
            // SAFETY: in `p.mem`, dropped after `p.dev` (see `Probe`).
            unsafe { p.dev.queue_request(EVENT_QUEUE, &e, 0, 100 + i) }
                .map_err(|s| format!("event queue_request: {s}"))?;
        }
        let start = Instant::now();
        for i in 0..PERIODS {
            let off = 2 * 4096 + i * 4096;
            // xfer header (stream 0), a sine-ish ramp, then the status.
            dma_write(&p.mem, off, &0u32.to_le_bytes());
            let pcm: Vec<u8> = (0..PERIOD).map(|b| (b * 7 + i) as u8).collect();
            dma_write(&p.mem, off + 4, &pcm);
            dma_write(&p.mem, off + 4 + PERIOD, &[0xaa; 8]);
            let entries = [
                PhysEntry {
                    address: base + off as u64,
                    size: 4,
                },
                PhysEntry {
                    address: base + off as u64 + 4,
                    size: PERIOD as u64,
                },
                PhysEntry {
                    address: base + (off + 4 + PERIOD) as u64,
                    size: 8,
                },
            ];
            // SAFETY: in `p.mem`, dropped after `p.dev` (see `Probe`).
            unsafe { p.dev.queue_request(TX_QUEUE, &entries, 2, 200 + i as u64) }
                .map_err(|s| format!("tx queue_request: {s}"))?;
        }
        println!(
            "tx: {PERIODS} periods queued, in flight {} (event queue {})",
            p.dev.in_flight(TX_QUEUE),
            p.dev.in_flight(EVENT_QUEUE)
        );
        for i in 0..PERIODS {
            let (cookie, used) = p.dequeue(TX_QUEUE, Duration::from_secs(5))?;
            let off = 2 * 4096 + (cookie.wrapping_sub(200) as usize % PERIODS) * 4096;
            let st = dma_read(&p.mem, off + 4 + PERIOD, 8);
            println!(
                "tx used: cookie {cookie}, len {used}, status {:#x}, latency {} at {:?}",
                le32(&st, 0),
                le32(&st, 4),
                start.elapsed()
            );
            ok &= cookie == 200 + i as u64 && used == 8 && le32(&st, 0) == S_OK;
        }
        for (name, req) in [
            ("STOP", words(&[STOP, 0])),
            ("RELEASE", words(&[RELEASE, 0])),
        ] {
            let (status, _) = p.control(&req, 0)?;
            println!("{name}: status {status:#x}");
            ok &= status == S_OK;
        }
        println!(
            "in flight: control {}, event {}, tx {}",
            p.dev.in_flight(CONTROL_QUEUE),
            p.dev.in_flight(EVENT_QUEUE),
            p.dev.in_flight(TX_QUEUE)
        );
        ok &= p.dev.in_flight(EVENT_QUEUE) == 4 && p.dev.in_flight(TX_QUEUE) == 0;
        Ok(ok)
    }
}
