//! `sim-guest`: the simulator on QEMU's real virtio-snd device, run inside the Linux guest
//! that `cargo xtask qemu` boots. See the `sim_guest` library.

use std::process::ExitCode;

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    use sim_guest::{run, Args, RESULT_PREFIX};
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("exit") {
        let code = argv
            .get(1)
            .and_then(|c| c.parse::<u8>().ok())
            .unwrap_or(255);
        // The status + 1 (at most 127), so that QEMU's exit status 2v+1 stays below 256
        // and is never the 1 QEMU exits with when it fails by itself.
        if let Err(e) = sim_guest::exit_device(code.min(126) + 1) {
            eprintln!("sim-guest: {e}");
        }
        return ExitCode::from(code);
    }
    let args = match Args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sim-guest: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(lines) => {
            for l in lines {
                println!("{RESULT_PREFIX}{}", l.render());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sim-guest: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    eprintln!("sim-guest runs inside a Linux guest only");
    ExitCode::FAILURE
}
