//! The sensor's kernel programs: per-syscall tracepoints, BTF tracepoints and cgroup socket
//! hooks, and fentry/fexit programs for opens, file and privilege operations where the kernel has BPF
//! trampolines (`fentry.rs`), or a BPF LSM program for opens where it runs the BPF LSM instead
//! (`lsm.rs`; kprobes, fentry/fexit and BPF LSM are not available on every kernel we run on,
//! see PLATFORM.md). No program runs on every syscall in the default set.
//!
//! One module per event family; maps in `maps.rs`; kernel struct access in `kernel.rs`, through
//! offsets the agent reads from BTF and sets as the `OFFSETS` global at load time.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod creds;
#[cfg(target_arch = "bpf")]
mod dns;
#[cfg(target_arch = "bpf")]
mod fentry;
#[cfg(target_arch = "bpf")]
mod file;
#[cfg(target_arch = "bpf")]
mod fileops;
#[cfg(target_arch = "bpf")]
mod io_uring;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod lsm;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod net;
#[cfg(target_arch = "bpf")]
mod process;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: eBPF programs cannot panic at run time; the verifier rejects any path reaching here.
    unsafe { core::hint::unreachable_unchecked() }
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// Host builds compile this crate as an inert binary so workspace-wide tooling keeps working.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
