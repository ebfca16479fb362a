//! Loads and attaches every kernel program, then prints one JSON line and exits:
//! `{"kernel": "<uname -r>", "attached": [...], "skipped": [[name, reason], ...], "error": null}`.
//! It loads twice, with the default open hook and with the raw `sys_exit` one, so that
//! every program of the table is tried; `attached` and `skipped` cover both loads, and
//! `attached_default` is what the default load attached.
//! Exit status 0 when the sensor loaded, 1 when it did not (`error` then holds the loader's
//! message, verifier lines included). `cargo xtask portability` runs it inside other kernels.

use sensor_user::kernel::{LoadOptions, OpenHook, Sensor};
use serde_json::{Value, json};

fn main() {
    let kernel = uname_release();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime");
    // Sensor::load registers the ring buffer with the runtime, so it runs inside it; the sensor
    // is dropped (programs detached) before the runtime.
    let load = |open_hook| {
        rt.block_on(async {
            let options = LoadOptions {
                open_hook,
                ..LoadOptions::default()
            };
            Sensor::load(&options).map(|s| (s.attached.clone(), s.skipped.clone()))
        })
    };
    let result = load(OpenHook::Auto).and_then(|(default, skipped)| {
        let (raw, raw_skipped) = load(OpenHook::RawSysExit)?;
        let mut attached = default.clone();
        attached.extend(raw.into_iter().filter(|p| !default.contains(p)));
        // A program skipped by one load but attached by the other was not skipped.
        let skipped: Vec<_> = skipped
            .into_iter()
            .chain(raw_skipped)
            .filter(|(name, _)| !attached.contains(name))
            .collect();
        Ok((default, attached, skipped))
    });
    let (report, code) = match result {
        Ok((default, attached, skipped)) => (
            json!({
                "kernel": kernel,
                "attached_default": default,
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
