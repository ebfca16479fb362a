//! Loads and attaches every kernel program once, then prints one JSON line and exits:
//! `{"kernel": "<uname -r>", "attached": [...], "skipped": [[name, reason], ...], "error": null}`.
//! Exit status 0 when the sensor loaded, 1 when it did not (`error` then holds the loader's
//! message, verifier lines included). `cargo xtask portability` runs it inside other kernels.

use sensor_user::kernel::{LoadOptions, Sensor};
use serde_json::{Value, json};

fn main() {
    let kernel = uname_release();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime");
    // Sensor::load registers the ring buffer with the runtime, so it runs inside it; the sensor
    // is dropped (programs detached) before the runtime.
    let result = rt.block_on(async {
        Sensor::load(&LoadOptions::default()).map(|s| (s.attached.clone(), s.skipped.clone()))
    });
    let (report, code) = match result {
        Ok((attached, skipped)) => (
            json!({
                "kernel": kernel,
                "attached": attached,
                "skipped": skipped,
                "error": Value::Null,
            }),
            0,
        ),
        Err(e) => (
            json!({
                "kernel": kernel,
                "attached": [],
                "skipped": [],
                "error": e.to_string(),
            }),
            1,
        ),
    };
    println!("{report}");
    std::process::exit(code);
}

/// `uname -r`.
fn uname_release() -> String {
    // SAFETY: `utsname` is plain bytes, so all-zero is a valid value; uname(2) fills it and
    // NUL-terminates each field, and its result is checked before the field is read.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}
