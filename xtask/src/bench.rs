//! `cargo xtask bench`: the exchange benchmark. Prints the timing error of
//! `played_real_time` against the device model's ground truth at 48 and 384 kHz, and the
//! instructions one BUFFER_EXCHANGE costs the driver under callgrind (two runs with different
//! exchange counts, so set-up cancels out; the device model's work and the simulated
//! kernel's waiting are toggled out, the driver's interrupt handler toggled back in; the
//! simulated kernel's cheap calls — spinlocks, semaphore releases, user copies — count).

use std::path::PathBuf;
use std::process::Command;

use crate::{cargo, root, Result};

fn build() -> Result<PathBuf> {
    let status = cargo()
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "driver",
            "--example",
            "exchange_bench",
        ])
        .status()?;
    if !status.success() {
        return Err("building the benchmark failed".into());
    }
    Ok(root().join("target/release/examples/exchange_bench"))
}

fn callgrind(bin: &PathBuf, hz: u32, exchanges: u32) -> Result<u64> {
    let out = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            // On inside the ioctl; off while the simulated kernel waits (the device model
            // runs there) and inside the device model's virtqueue calls; back on inside the
            // driver's interrupt handler.
            "--toggle-collect=*Card*dispatch*",
            // The simulated kernel's semaphore wait is its C-ABI method (the trait method
            // only unwraps the id): matched exactly, so a trait frame left by the inliner is
            // not toggled a second time.
            "--toggle-collect=sim_kernel::kernel::SimKernel::acquire_sem",
            "--toggle-collect=*SndModel as platform::VirtioDevice>::*",
            "--toggle-collect=*as platform::QueueHandler>::queue_interrupt*",
        ])
        .arg(bin)
        .args([hz.to_string(), exchanges.to_string()])
        .output()
        .map_err(|e| format!("cannot run valgrind (Debian: apt-get install valgrind): {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("the benchmark failed under callgrind:\n{err}").into());
    }
    err.lines()
        .find_map(|l| {
            l.split("Collected :")
                .nth(1)
                .and_then(|n| n.trim().parse().ok())
        })
        .ok_or_else(|| format!("no instruction count in callgrind's output:\n{err}").into())
}

pub fn run() -> Result {
    let bin = build()?;
    for hz in [48000u32, 384000] {
        let out = Command::new(&bin)
            .args([hz.to_string(), "2000".into()])
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "benchmark at {hz} Hz failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    for hz in [48000u32, 384000] {
        let (a, b) = (100u32, 600u32);
        let ia = callgrind(&bin, hz, a)?;
        let ib = callgrind(&bin, hz, b)?;
        let per = ib.saturating_sub(ia) as f64 / (b - a) as f64;
        println!("rate {hz} Hz: {per:.0} instructions per BUFFER_EXCHANGE in the driver (callgrind: {ia} for {a}, {ib} for {b} exchanges)");
    }
    Ok(())
}
