//! The part of libjack's C API the tap uses, loaded at run time from `libjack.so.0`.
//!
//! Why not the `jack` crate: its `jack-sys` build script demands `jack.pc` from
//! pkg-config on Linux (Debian's libjack-jackd2-dev) for every build of the workspace,
//! although it loads the library at run time too, and its client options cannot name a
//! server yet. The fourteen functions below are declared from JACK's public headers
//! (`jack/jack.h`, `jack/types.h`, JACK 1.9), with their C types.

use std::ffi::{c_char, c_int, c_ulong, c_void};

pub type Nframes = u32;
pub type ProcessCallback = unsafe extern "C" fn(nframes: Nframes, arg: *mut c_void) -> c_int;
pub type XrunCallback = unsafe extern "C" fn(arg: *mut c_void) -> c_int;
pub type ShutdownCallback = unsafe extern "C" fn(arg: *mut c_void);
pub type MessageFunction = unsafe extern "C" fn(message: *const c_char);

/// `jack_options_t` (`jack/types.h`): do not start a server; fail rather than rename the
/// client; the server's name follows as the variadic argument.
pub const NO_START_SERVER: c_int = 0x01;
pub const USE_EXACT_NAME: c_int = 0x02;
pub const SERVER_NAME: c_int = 0x04;
/// `JackPortFlags`.
pub const PORT_IS_INPUT: c_ulong = 0x1;
pub const PORT_IS_OUTPUT: c_ulong = 0x2;
/// `JACK_DEFAULT_AUDIO_TYPE`.
pub const DEFAULT_AUDIO_TYPE: &std::ffi::CStr = c"32 bit float mono audio";

/// The library and the entry points the tap calls.
pub struct Jack {
    pub client_open: unsafe extern "C" fn(
        name: *const c_char,
        options: c_int,
        status: *mut c_int,
        ...
    ) -> *mut c_void,
    pub client_close: unsafe extern "C" fn(client: *mut c_void) -> c_int,
    pub activate: unsafe extern "C" fn(client: *mut c_void) -> c_int,
    pub port_register: unsafe extern "C" fn(
        client: *mut c_void,
        name: *const c_char,
        port_type: *const c_char,
        flags: c_ulong,
        buffer_size: c_ulong,
    ) -> *mut c_void,
    pub port_get_buffer: unsafe extern "C" fn(port: *mut c_void, nframes: Nframes) -> *mut c_void,
    pub port_connected: unsafe extern "C" fn(port: *const c_void) -> c_int,
    pub get_sample_rate: unsafe extern "C" fn(client: *mut c_void) -> Nframes,
    pub connect: unsafe extern "C" fn(
        client: *mut c_void,
        source: *const c_char,
        destination: *const c_char,
    ) -> c_int,
    pub set_process_callback:
        unsafe extern "C" fn(client: *mut c_void, cb: ProcessCallback, arg: *mut c_void) -> c_int,
    pub set_xrun_callback:
        unsafe extern "C" fn(client: *mut c_void, cb: XrunCallback, arg: *mut c_void) -> c_int,
    pub on_shutdown:
        unsafe extern "C" fn(client: *mut c_void, cb: ShutdownCallback, arg: *mut c_void),
    pub set_error_function: unsafe extern "C" fn(f: MessageFunction),
    pub set_info_function: unsafe extern "C" fn(f: MessageFunction),
    /// Kept loaded while the function pointers above are used.
    _lib: libloading::Library,
}

impl Jack {
    /// Loads `libjack.so.0`.
    pub fn load() -> crate::Result<Jack> {
        const NAME: &str = "libjack.so.0";
        // SAFETY: loading libjack runs its initialisers, which only set up the library's
        // own state (no code of ours runs, nothing is replaced in this process).
        let lib = unsafe { libloading::Library::new(NAME) }.map_err(|e| {
            format!("{NAME}: {e}: install Debian's jackd2 (it brings libjack-jackd2-0)")
        })?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the symbol is JACK's function of that name, whose C signature
                // (jack/jack.h) is the field's type; the pointer is used only while `lib`
                // is loaded, which `_lib` guarantees.
                *unsafe { lib.get(concat!($name, "\0").as_bytes()) }
                    .map_err(|e| format!("{NAME}: {}: {e}", $name))?
            };
        }
        let jack = Jack {
            client_open: sym!("jack_client_open"),
            client_close: sym!("jack_client_close"),
            activate: sym!("jack_activate"),
            port_register: sym!("jack_port_register"),
            port_get_buffer: sym!("jack_port_get_buffer"),
            port_connected: sym!("jack_port_connected"),
            get_sample_rate: sym!("jack_get_sample_rate"),
            connect: sym!("jack_connect"),
            set_process_callback: sym!("jack_set_process_callback"),
            set_xrun_callback: sym!("jack_set_xrun_callback"),
            on_shutdown: sym!("jack_on_shutdown"),
            set_error_function: sym!("jack_set_error_function"),
            set_info_function: sym!("jack_set_info_function"),
            _lib: lib,
        };
        // libjack prints every failed connection attempt (while the server starts) and its
        // chatter to standard error; the tap reports what matters through status codes.
        // SAFETY: `quiet` has the C signature libjack expects and ignores its argument.
        unsafe {
            (jack.set_error_function)(quiet);
            (jack.set_info_function)(quiet);
        }
        Ok(jack)
    }
}

unsafe extern "C" fn quiet(_message: *const c_char) {}
