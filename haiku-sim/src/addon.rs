//! A built add-on running in the simulator: loaded by [`crate::loader`] against the kernel
//! of [`crate`], probed and published by its device manager over a [`SndModel`], and
//! driven through its device hooks as an [`Hmulti`] device.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::loader::{self, Image, KernelSymbol, SymbolKind};
use crate::{BusDevice, Device, EnvConfig, Environment, SymKind};
use hmulti_client::Hmulti;
use sim_kernel::{Locator, SimKernel};
use snd_model::{ModelConfig, SndModel};

/// A loaded, attached add-on.
pub struct Addon {
    env: Arc<Environment>,
    image: Option<Image>,
    model: Option<SndModel>,
    kernel: SimKernel,
    /// The device paths the add-on published (relative to /dev).
    pub paths: Vec<String>,
}

impl std::fmt::Debug for Addon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Addon").field("paths", &self.paths).finish()
    }
}

impl Addon {
    /// Loads `path` with Haiku's loader rules and runs the device manager's probe over a
    /// device model built from `config`. `settings` is the driver settings file's text.
    pub fn load(path: &Path, config: ModelConfig, settings: Option<&str>) -> Result<Addon, String> {
        Self::load_with(path, config, settings, |_| {})
    }

    /// As [`Addon::load`], with `prepare` run on the model before the probe (to inject
    /// faults into the driver's initialisation).
    pub fn load_with(
        path: &Path,
        config: ModelConfig,
        settings: Option<&str>,
        prepare: impl FnOnce(&SndModel),
    ) -> Result<Addon, String> {
        Self::load_in(path, config, settings, EnvConfig::default(), prepare)
    }

    /// As [`Addon::load_with`], in an environment configured by `env` (how interrupts are
    /// delivered, SMAP).
    pub fn load_in(
        path: &Path,
        config: ModelConfig,
        settings: Option<&str>,
        env: EnvConfig,
        prepare: impl FnOnce(&SndModel),
    ) -> Result<Addon, String> {
        let kernel = SimKernel::new();
        let model = SndModel::new(&kernel, config);
        prepare(&model);
        let env = Environment::with_config(kernel.clone(), model.clone(), env);
        Self::attach(path, env, Some(model), kernel, settings)
    }

    /// Loads `path` over a real device (a transport to hardware, or QEMU's device) on
    /// `kernel` (which then normally runs in real time with DMA-capable memory).
    pub fn load_on(
        path: &Path,
        kernel: SimKernel,
        device: Arc<dyn BusDevice>,
        settings: Option<&str>,
    ) -> Result<Addon, String> {
        let env = Environment::with_device(kernel.clone(), device, EnvConfig::default());
        Self::attach(path, env, None, kernel, settings)
    }

    fn attach(
        path: &Path,
        env: Arc<Environment>,
        model: Option<SndModel>,
        kernel: SimKernel,
        settings: Option<&str>,
    ) -> Result<Addon, String> {
        if let Some(s) = settings {
            env.settings(s);
        }
        let symbols: HashMap<String, KernelSymbol> = env
            .kernel_symbols()
            .into_iter()
            .map(|(name, addr, kind)| {
                let kind = match kind {
                    SymKind::Func => SymbolKind::Func,
                    SymKind::Object => SymbolKind::Object,
                };
                (name, KernelSymbol { addr, kind })
            })
            .collect();
        let image = loader::load(path, &symbols).map_err(|e| e.to_string())?;
        kernel.set_failure_locator(Some(caller_in(&image, path)));
        // SAFETY: the image was just loaded with our kernel's symbols; `modules` and
        // `module_dependencies` point into it and it stays mapped until `unload`.
        let paths =
            unsafe { env.attach(image.modules(), image.module_dependencies()) }.map_err(|e| {
                // What the simulated kernel recorded on the way often says why.
                let failures = kernel.failures();
                if failures.is_empty() {
                    e
                } else {
                    format!(
                        "{e}\n  recorded by the simulated kernel:\n    {}",
                        failures.join("\n    ")
                    )
                }
            })?;
        Ok(Addon {
            env,
            image: Some(image),
            model,
            kernel,
            paths,
        })
    }

    /// The device model.
    ///
    /// # Panics
    ///
    /// If the add-on runs on a real device ([`Addon::load_on`]).
    pub fn model(&self) -> &SndModel {
        self.model
            .as_ref()
            .expect("this add-on runs on a real device, not the model")
    }

    /// The loaded image's code: the addresses of its executable segment (what a profile
    /// counts as the add-on's own instructions).
    pub fn code(&self) -> std::ops::Range<u64> {
        self.image.as_ref().map_or(0..0, |i| i.text())
    }

    pub fn kernel(&self) -> &SimKernel {
        &self.kernel
    }

    pub fn env(&self) -> &Arc<Environment> {
        &self.env
    }

    /// Opens a published device as the media add-on does (O_WRONLY).
    pub fn open(&self, path: &str) -> Result<AddonDevice<'_>, String> {
        let dev = self
            .env
            .open(path, 1)
            .map_err(|s| format!("open {path}: status {s:#x}"))?;
        Ok(AddonDevice {
            dev: Some(dev),
            addon: self,
        })
    }

    /// Opens a published device (O_WRONLY) as one file descriptor that several threads of a
    /// team use at once: any thread may call [`SharedDevice::close`] while others are in an
    /// ioctl on it (see [`Device::close`]). It keeps the environment alive: drop every
    /// clone before [`Addon::unload`]'s report, or it is reported as still open.
    pub fn open_shared(&self, path: &str) -> Result<Arc<SharedDevice>, String> {
        let dev = self
            .env
            .open(path, 1)
            .map_err(|s| format!("open {path}: status {s:#x}"))?;
        Ok(Arc::new(SharedDevice {
            dev,
            env: self.env.clone(),
            kernel: self.kernel.clone(),
        }))
    }

    pub fn open_first(&self) -> Result<AddonDevice<'_>, String> {
        let p = self
            .paths
            .first()
            .ok_or("the add-on published no device")?
            .clone();
        self.open(&p)
    }

    /// Uninitialises the driver, unloads the image and reports anything left behind.
    pub fn unload(mut self) -> Result<(), Vec<String>> {
        // SAFETY: every device was closed (AddonDevice borrows self); the image is still
        // mapped while its hooks run.
        unsafe { self.env.detach() };
        self.kernel.set_failure_locator(None);
        drop(self.image.take());
        self.env.check_clean()
    }
}

/// A failure locator for `image`: the innermost return address on the calling thread's
/// stack that lies in the image's code, as `NAME+0xOFFSET`, with the nearest function
/// symbol the image exports before it when there is one (`NAME+0xOFFSET (init_driver+0x3b)`).
/// The return address is the instruction after the call that did the deed. It copies the
/// numbers it needs, so it never reads the image, which may be unmapped by then.
fn caller_in(image: &loader::Image, path: &Path) -> Locator {
    let name = path
        .file_name()
        .map_or_else(|| "add-on".into(), |n| n.to_string_lossy().into_owned());
    let (base, text, functions) = (image.base(), image.text(), image.functions());
    Arc::new(move || {
        let mut found = None;
        backtrace::trace(|frame| {
            let ip = frame.ip() as u64;
            if text.contains(&ip) {
                found = Some(ip);
                return false;
            }
            true
        });
        let ip = found?;
        let symbol = functions
            .iter()
            .rev()
            .find(|(addr, _)| *addr <= ip)
            .map(|(addr, f)| format!(" ({f}+{:#x})", ip - addr))
            .unwrap_or_default();
        Some(format!("{name}+{:#x}{symbol}", ip - base))
    })
}

/// A file descriptor of a loaded add-on's device that threads share
/// ([`Addon::open_shared`]).
pub struct SharedDevice {
    dev: Device,
    env: Arc<Environment>,
    kernel: SimKernel,
}

impl std::fmt::Debug for SharedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDevice")
            .field("path", &self.dev.path())
            .finish()
    }
}

impl SharedDevice {
    /// `close` from any thread; `free` follows when no ioctl on it is in flight, or when
    /// the last one returns (see [`Device::close`]).
    pub fn close(&self) -> i32 {
        self.dev.close()
    }
}

impl Hmulti for SharedDevice {
    fn ioctl(&self, op: u32, buffer: u64, length: usize) -> i32 {
        self.dev.ioctl(op, buffer, length)
    }
    fn user_alloc(&self, len: usize) -> u64 {
        self.env.user_alloc(len)
    }
    fn user_free(&self, addr: u64) {
        self.env.user_free(addr)
    }
    fn user_write(&self, addr: u64, bytes: &[u8]) {
        self.env.user_write(addr, bytes)
    }
    fn user_read(&self, addr: u64, len: usize) -> Vec<u8> {
        self.env.user_read(addr, len)
    }
    fn buffer_write(&self, addr: u64, bytes: &[u8]) -> Result<(), String> {
        area_write(&self.kernel, addr, bytes)
    }
    fn buffer_read(&self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        area_read(&self.kernel, addr, len)
    }
}

/// [`Hmulti::buffer_write`] for a device of this kernel: into a user-visible area.
fn area_write(kernel: &SimKernel, addr: u64, bytes: &[u8]) -> Result<(), String> {
    kernel
        .area_user_write(addr, bytes)
        .map_err(|e| format!("{e}"))
}

/// [`Hmulti::buffer_read`] for a device of this kernel: from a user-visible area.
fn area_read(kernel: &SimKernel, addr: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut v = vec![0u8; len];
    kernel
        .area_user_read(addr, &mut v)
        .map_err(|e| format!("{e}"))?;
    Ok(v)
}

/// One open device of a loaded add-on.
pub struct AddonDevice<'a> {
    dev: Option<Device>,
    addon: &'a Addon,
}

impl AddonDevice<'_> {
    /// close + free, as devfs does after the last user.
    pub fn close(mut self) -> i32 {
        self.dev.take().map_or(0, |d| d.close())
    }
}

impl Drop for AddonDevice<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.dev.take() {
            d.close();
        }
    }
}

impl Hmulti for AddonDevice<'_> {
    fn ioctl(&self, op: u32, buffer: u64, length: usize) -> i32 {
        self.dev
            .as_ref()
            .map_or(-1, |d| d.ioctl(op, buffer, length))
    }
    fn user_alloc(&self, len: usize) -> u64 {
        self.addon.env.user_alloc(len)
    }
    fn user_free(&self, addr: u64) {
        self.addon.env.user_free(addr)
    }
    fn user_write(&self, addr: u64, bytes: &[u8]) {
        self.addon.env.user_write(addr, bytes)
    }
    fn user_read(&self, addr: u64, len: usize) -> Vec<u8> {
        self.addon.env.user_read(addr, len)
    }
    fn buffer_write(&self, addr: u64, bytes: &[u8]) -> Result<(), String> {
        area_write(&self.addon.kernel, addr, bytes)
    }
    fn buffer_read(&self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        area_read(&self.addon.kernel, addr, len)
    }
}
