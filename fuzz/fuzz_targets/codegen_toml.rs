//! codegen's TOML front end on any text: it never panics, and every error names the file and
//! a line of it (`file:line:column: key: message`, line 1 or later and within the text).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.toml");
    match codegen::model::parse(text, file) {
        Ok(spec) => {
            // What the front end accepts, the emitters must take without a panic.
            let _ = codegen::emit_c::header(&spec);
            let _ = codegen::emit_json::layout(std::slice::from_ref(&spec));
        }
        Err(diags) => {
            assert!(!diags.0.is_empty(), "an error with no diagnostic");
            let lines = text.split('\n').count();
            for d in &diags.0 {
                assert_eq!(d.file, file, "{d}: names another file");
                assert!(
                    (1..=lines).contains(&d.line),
                    "{d}: line {} is not a line of the {lines}-line text",
                    d.line
                );
                assert!(!d.key.is_empty(), "{d}: names no key");
            }
        }
    }
});
