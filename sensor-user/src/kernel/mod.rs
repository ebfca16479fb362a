//! The kernel side of the agent: preflight checks, loading and attaching the programs, and
//! reading their ring buffer. Records leave this module as [`crate::event::Event`]s.

pub mod decode;
pub mod dns;
pub mod mounts;
pub mod offsets;
pub mod programs;

use std::path::Path;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock,
        CgroupSockAddr, FEntry, FExit, Lsm, ProgramError, TracePoint,
    },
};
use sensor_common::{COUNTERS_LEN, CgroupCounts, Counter};
use tokio::io::{Interest, unix::AsyncFd};

pub use decode::{BootClock, DecodeError, decode};
use programs::{Chosen, Hook, OpenPath, PROGRAMS, SkbDirection};

/// The embedded eBPF object, built by `build.rs` (empty in stub builds).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor-ebpf"));

/// How the programs are loaded.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Filter exact repeats (same process image, same object) in the kernel.
    pub filter_repeats: bool,
    /// How opens are hooked.
    pub open_hook: OpenHook,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            filter_repeats: true,
            open_hook: OpenHook::Auto,
        }
    }
}

/// How opens, file and privilege operations are hooked (`--open-hook`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpenHook {
    /// The best hooks that run only on the syscalls reported: fentry/fexit where the kernel
    /// has BPF trampolines (probed at load), else the BPF LSM for opens where the kernel runs
    /// it, else the per-syscall tracepoints.
    #[default]
    Auto,
    /// fentry/fexit only (x86_64): loading fails where the kernel refuses them.
    Fentry,
    /// The BPF LSM `file_open` hook for opens (audit only: it always allows), file and
    /// privilege operations on their tracepoints: loading fails where the kernel does not run
    /// the BPF LSM (`lsm=...,bpf` on its command line).
    Lsm,
    /// The classic `syscalls:sys_{enter,exit}_*` tracepoints; on x86_64 opens take their exit
    /// alone (the flags are read from the saved registers).
    Tracepoint,
    /// The classic tracepoints with opens as an entry and exit pair, as on kernels without
    /// x86_64 `pt_regs` in BTF (for comparison and tests).
    TracepointPair,
    /// One raw `sys_exit` program (x86_64 with BTF `pt_regs`): cheaper per open, but it runs at
    /// the exit of every syscall of every process (tens of percent on syscall-heavy servers).
    RawSysExit,
}

/// How long the loop waits between drains when the kernel sends no wakeup (see `submit_flags` in
/// the eBPF crate) while records flow: it bounds the delay a record waits before userspace sees
/// it, and so the event → stored deviation latency (BENCHMARKS.md).
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// The wait once [`IDLE_DRAINS`] drains in a row found nothing. Each drain is a wakeup of the
/// agent (two thread switches with the runtime's timer): a fixed 2 ms cost an idle agent ~1,000
/// thread switches a second, ~1.5 % of a core here. Only the first record after such a quiet
/// spell can wait this long (the next drain goes back to [`DRAIN_WAIT`]), and a burst never
/// does: past `WAKEUP_THRESHOLD` bytes waiting the kernel wakes the reader at once.
const IDLE_DRAIN_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Empty drains in a row (half a second at [`DRAIN_WAIT`]) after which the host counts as idle.
const IDLE_DRAINS: u32 = 250;

/// The wait before the next drain, and the count of empty drains in a row, after a drain that
/// `found` records (or not) following `empty` empty ones.
fn next_wait(empty: u32, found: bool) -> (std::time::Duration, u32) {
    let empty = if found { 0 } else { empty.saturating_add(1) };
    let wait = if empty >= IDLE_DRAINS {
        IDLE_DRAIN_WAIT
    } else {
        DRAIN_WAIT
    };
    (wait, empty)
}

/// Most records one [`Sensor::drain`] hands over. Under a sustained flood the ring never empties:
/// a drain that read until it did would keep the agent's loop from its other work (delivery,
/// heartbeat liveness, housekeeping) for as long as the flood lasts. A few milliseconds of
/// release-build work per batch.
pub const DRAIN_BATCH: usize = 2048;

/// Oldest kernel the programs are written for (BTF tracepoints, ring buffer, bounded loops).
const MIN_KERNEL: (u32, u32) = (5, 15);

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("the sensor must run as root: it loads eBPF programs (try sudo)")]
    NotRoot,
    #[error("kernel {0} is too old: the sensor needs Linux 5.15 or later with BTF")]
    KernelTooOld(String),
    #[error(transparent)]
    Offsets(#[from] offsets::OffsetsError),
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error(
        "this sensor was built without its kernel programs (stub build); run `scripts/setup` and rebuild"
    )]
    StubObject,
    #[error("cannot load the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error(
        "fentry/fexit programs do not load on this kernel ({0}); use `--open-hook auto` or `tracepoint`"
    )]
    NoFentry(String),
    #[error(
        "BPF LSM programs do not run on this kernel ({0}); use `--open-hook auto` or `tracepoint`"
    )]
    NoLsm(String),
    #[error("kernel program `{name}` failed at {stage}: {reason}")]
    Program {
        name: &'static str,
        stage: &'static str,
        reason: String,
    },
    #[error("eBPF map `{0}` is missing or of the wrong type")]
    Map(&'static str),
    #[error("cannot poll the ring buffer: {0}")]
    Poll(#[from] std::io::Error),
}

/// Loaded and attached programs, and the handles the agent reads from.
pub struct Sensor {
    /// Keeps programs and links alive; dropping it detaches everything.
    _ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    cgroup_counts: PerCpuHashMap<MapData, u64, CgroupCounts>,
    /// Names of the programs that are attached.
    pub attached: Vec<&'static str>,
    /// Optional programs that could not attach, with why (and the first fentry program the
    /// kernel refused, when the probe fell back to tracepoints).
    pub skipped: Vec<(&'static str, String)>,
    /// The syscall-event hooks in use.
    pub hooks: Chosen,
    /// The last drain stopped at [`DRAIN_BATCH`] with records still waiting.
    behind: bool,
    /// How long [`Sensor::ready`] waits for records the kernel did not wake the reader for.
    wait: std::time::Duration,
    /// Drains in a row that found nothing (see [`next_wait`]).
    empty_drains: u32,
}

impl Sensor {
    /// Checks the machine, loads every program and attaches it. Must be called inside a tokio
    /// runtime (the ring buffer is registered with it).
    pub fn load(options: &LoadOptions) -> Result<Sensor, KernelError> {
        preflight()?;
        let mounted = mounts::ensure()?;
        if !mounted.is_empty() {
            tracing::info!(?mounted, "mounted missing pseudo filesystems");
        }
        let offsets = offsets::load(Path::new(offsets::VMLINUX_BTF))?;
        if OBJECT.is_empty() {
            return Err(KernelError::StubObject);
        }
        let btf = Btf::from_sys_fs().map_err(|e| KernelError::Program {
            name: "btf",
            stage: "load",
            reason: e.to_string(),
        })?;
        let self_pid = std::process::id();
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("OFFSETS", &offsets, true)
            .override_global("SELF_PID", &self_pid, true)
            .override_global("FILTER_REPEATS", &u32::from(options.filter_repeats), true)
            .load(OBJECT)?;

        let cgroup_root = mounts::cgroup2_root()?;
        let mut attached = Vec::new();
        let mut skipped = Vec::new();
        let chosen = choose_hooks(
            &mut ebpf,
            options.open_hook,
            &offsets,
            &Attach {
                btf: &btf,
                cgroup_root: &cgroup_root,
            },
            &mut attached,
            &mut skipped,
        )?;
        tracing::info!(?chosen, "syscall-event hooks");
        for p in PROGRAMS.iter().filter(|p| {
            p.open_path.wanted(chosen)
                && !matches!(
                    p.open_path,
                    OpenPath::Raw | OpenPath::Fentry | OpenPath::Lsm | OpenPath::ClassicExit
                )
        }) {
            match attach(&mut ebpf, p, &btf, &cgroup_root) {
                Ok(()) => attached.push(p.name),
                Err(reason) if !p.required => {
                    tracing::warn!(program = p.name, %reason, "optional program not attached");
                    skipped.push((p.name, reason));
                }
                Err(reason) => {
                    return Err(KernelError::Program {
                        name: p.name,
                        stage: "attach",
                        reason,
                    });
                }
            }
        }

        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or(KernelError::Map("EVENTS"))?)
            .map_err(|_| KernelError::Map("EVENTS"))?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map("COUNTERS")
                .ok_or(KernelError::Map("COUNTERS"))?,
        )
        .map_err(|_| KernelError::Map("COUNTERS"))?;
        let cgroup_counts = PerCpuHashMap::try_from(
            ebpf.take_map("CGROUP_COUNTS")
                .ok_or(KernelError::Map("CGROUP_COUNTS"))?,
        )
        .map_err(|_| KernelError::Map("CGROUP_COUNTS"))?;
        // SAFETY: the ring buffer owns its map fd, which stays open and valid as long as the
        // AsyncFd that owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| KernelError::Poll(e.into()))?;
        Ok(Sensor {
            _ebpf: ebpf,
            ring,
            counters,
            cgroup_counts,
            attached,
            skipped,
            hooks: chosen,
            behind: false,
            wait: DRAIN_WAIT,
            empty_drains: 0,
        })
    }

    /// Waits until records may be waiting: a kernel wakeup (sent only when the reader falls
    /// behind) or the drain interval, whichever comes first. When the last drain left records
    /// behind, it only yields once to the runtime (so the caller's other branches and tasks run
    /// between two batches) and returns.
    pub async fn ready(&mut self) -> Result<(), KernelError> {
        if self.behind {
            tokio::task::yield_now().await;
            return Ok(());
        }
        tokio::select! {
            guard = self.ring.readable_mut() => guard?.clear_ready(),
            _ = tokio::time::sleep(self.wait) => {}
        }
        Ok(())
    }

    /// Hands the waiting records to `f`, at most [`DRAIN_BATCH`] of them; returns how many.
    /// [`Sensor::behind`] then says whether more were left waiting.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while n < DRAIN_BATCH {
            let Some(item) = ring.next() else {
                // The end of a flood's batches is no empty drain, even when its last one read none.
                let found = self.behind || n > 0;
                self.behind = false;
                (self.wait, self.empty_drains) = next_wait(self.empty_drains, found);
                return n;
            };
            f(&item);
            n += 1;
        }
        self.behind = true;
        n
    }

    /// Whether the last [`Sensor::drain`] stopped with records still waiting.
    pub fn behind(&self) -> bool {
        self.behind
    }

    /// The event ring buffer's map (for `agent::ring_depth`).
    pub fn ring_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self.ring.get_ref())
    }

    /// Lost and suppressed records by cgroup id, summed over CPUs.
    pub fn cgroup_counts(&self) -> Vec<(u64, CgroupCounts)> {
        self.cgroup_counts
            .iter()
            .filter_map(Result::ok)
            .map(|(cgroup, per_cpu)| {
                let total = per_cpu
                    .iter()
                    .fold(CgroupCounts::default(), |acc, c| CgroupCounts {
                        lost: acc.lost + c.lost,
                        suppressed: acc.suppressed + c.suppressed,
                    });
                (cgroup, total)
            })
            .collect()
    }

    /// Loss and error counters summed over CPUs, by name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|c| {
                debug_assert!((*c as u32) < COUNTERS_LEN);
                let sum = self
                    .counters
                    .get(&(*c as u32), 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (c.name(), sum)
            })
            .collect()
    }
}

/// What attaching needs besides the object.
struct Attach<'a> {
    btf: &'a Btf,
    cgroup_root: &'a std::fs::File,
}

/// Picks the hooks of opens, file and privilege operations and attaches the set chosen, unless
/// it is the classic tracepoints (those attach with the rest of the table). fentry/fexit first,
/// by default or when asked for: attaching them all is the runtime probe (a kernel without
/// trampolines refuses the first load with EPERM or ENOTSUPP); then the BPF LSM open program
/// where `bpf` is among the active LSMs (a BPF LSM program also loads and attaches on a kernel
/// that does not run the BPF LSM, and then never runs: the list is the probe, the load its
/// confirmation); then the raw `sys_exit` open program when asked for.
fn choose_hooks(
    ebpf: &mut Ebpf,
    hook: OpenHook,
    offsets: &sensor_common::KernelOffsets,
    with: &Attach<'_>,
    attached: &mut Vec<&'static str>,
    skipped: &mut Vec<(&'static str, String)>,
) -> Result<Chosen, KernelError> {
    let x86_regs = |regs: &[u64]| cfg!(target_arch = "x86_64") && regs.iter().all(|&o| o != 0);
    if matches!(hook, OpenHook::Auto | OpenHook::Fentry) {
        let regs = [
            offsets.pt_regs_di,
            offsets.pt_regs_si,
            offsets.pt_regs_dx,
            offsets.pt_regs_r10,
        ];
        let set = if x86_regs(&regs) {
            attach_set(ebpf, OpenPath::Fentry, with)
        } else {
            Err((
                "fe_*",
                "not x86_64 (no `pt_regs` di/si/dx/r10 in BTF)".to_owned(),
            ))
        };
        match set {
            Ok((names, optional_skipped)) => {
                attached.extend(names);
                skipped.extend(optional_skipped);
                return Ok(Chosen::Fentry);
            }
            Err((name, reason)) if hook == OpenHook::Fentry => {
                return Err(KernelError::NoFentry(format!("{name}: {reason}")));
            }
            Err((name, reason)) => {
                tracing::info!(program = name, %reason, "fentry/fexit unavailable");
                skipped.push((name, reason));
            }
        }
    }
    if matches!(hook, OpenHook::Auto | OpenHook::Lsm) {
        match attach_lsm(ebpf, with) {
            Ok(names) => {
                attached.extend(names);
                return Ok(Chosen::Lsm);
            }
            Err((name, reason)) if hook == OpenHook::Lsm => {
                return Err(KernelError::NoLsm(format!("{name}: {reason}")));
            }
            Err((name, reason)) => {
                tracing::info!(program = name, %reason, "BPF LSM unavailable; using the syscall tracepoints");
                skipped.push((name, reason));
            }
        }
    }
    let raw_regs = [
        offsets.pt_regs_orig_ax,
        offsets.pt_regs_si,
        offsets.pt_regs_dx,
    ];
    if hook == OpenHook::RawSysExit && x86_regs(&raw_regs) {
        match attach_set(ebpf, OpenPath::Raw, with) {
            Ok((names, _)) => {
                attached.extend(names);
                return Ok(Chosen::RawSysExit);
            }
            Err((name, reason)) => {
                tracing::warn!(program = name, %reason, "raw open hook unavailable; using the classic open tracepoints");
                skipped.push((name, reason));
            }
        }
    }
    let exit_regs = [offsets.pt_regs_si, offsets.pt_regs_dx];
    if hook != OpenHook::TracepointPair && x86_regs(&exit_regs) {
        match attach_set(ebpf, OpenPath::ClassicExit, with) {
            Ok((names, _)) => {
                attached.extend(names);
                return Ok(Chosen::TracepointExits);
            }
            Err((name, reason)) => {
                tracing::info!(program = name, %reason, "open exits alone unavailable; using entry and exit");
                skipped.push((name, reason));
            }
        }
    }
    Ok(Chosen::Tracepoints)
}

/// Attaches the BPF LSM set when the kernel runs the BPF LSM.
fn attach_lsm(
    ebpf: &mut Ebpf,
    with: &Attach<'_>,
) -> Result<Vec<&'static str>, (&'static str, String)> {
    let lsms = mounts::active_lsms().map_err(|e| ("lsm_*", e.to_string()))?;
    if !lsms.iter().any(|l| l == "bpf") {
        return Err((
            "lsm_*",
            format!("`bpf` is not among the active LSMs ({})", lsms.join(",")),
        ));
    }
    attach_set(ebpf, OpenPath::Lsm, with).map(|(names, _)| names)
}

/// Programs attached and optional ones skipped (with why) by [`attach_set`].
type SetOutcome = (Vec<&'static str>, Vec<(&'static str, String)>);

/// Attaches every program of `path`, all or nothing: when a required one fails, those already
/// attached are unloaded again and the failure is returned.
fn attach_set(
    ebpf: &mut Ebpf,
    path: OpenPath,
    with: &Attach<'_>,
) -> Result<SetOutcome, (&'static str, String)> {
    let mut done = Vec::new();
    let mut skipped = Vec::new();
    for p in PROGRAMS.iter().filter(|p| p.open_path == path) {
        match attach(ebpf, p, with.btf, with.cgroup_root) {
            Ok(()) => done.push(p.name),
            Err(reason) if !p.required => skipped.push((p.name, reason)),
            Err(reason) => {
                for name in done.iter().chain([&p.name]) {
                    unload(ebpf, name);
                }
                return Err((p.name, reason));
            }
        }
    }
    Ok((done, skipped))
}

/// Detaches and unloads one program of a set that is given up.
fn unload(ebpf: &mut Ebpf, name: &str) {
    use aya::programs::Program as P;
    let result = match ebpf.program_mut(name) {
        Some(P::FEntry(p)) => p.unload(),
        Some(P::FExit(p)) => p.unload(),
        Some(P::Lsm(p)) => p.unload(),
        Some(P::BtfTracePoint(p)) => p.unload(),
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::debug!(program = name, error = %e, "unload");
    }
}

/// How cgroup programs attach. aya attaches through a BPF link (Linux 5.7+), which the kernel
/// always runs beside the cgroup's other programs (links are `BPF_F_ALLOW_MULTI` by nature and
/// refuse any flag: `AllowMultiple` here fails with EINVAL), so other users of the same hooks
/// (container runtimes, other agents) keep theirs.
const CGROUP_MODE: CgroupAttachMode = CgroupAttachMode::Single;

/// Loads and attaches one program; the error is one readable line (verifier log tail included).
/// Cgroup programs go on the cgroup v2 root, so every process is seen.
fn attach(
    ebpf: &mut Ebpf,
    p: &programs::Program,
    btf: &Btf,
    cgroup_root: &std::fs::File,
) -> Result<(), String> {
    let prog = ebpf
        .program_mut(p.name)
        .ok_or_else(|| format!("program `{}` is not in the embedded object", p.name))?;
    match p.hook {
        Hook::BtfTracepoint(tracepoint) => {
            let prog: &mut BtfTracePoint =
                prog.try_into().map_err(|e: ProgramError| e.to_string())?;
            prog.load(tracepoint, btf).map_err(describe)?;
            prog.attach().map_err(describe)?;
        }
        Hook::Tracepoints(tps) => {
            let prog: &mut TracePoint = prog.try_into().map_err(|e: ProgramError| e.to_string())?;
            prog.load().map_err(describe)?;
            let mut any = false;
            let mut last_err = String::new();
            for (category, name) in tps {
                match prog.attach(category, name) {
                    Ok(_) => any = true,
                    Err(e) => last_err = format!("{category}/{name}: {}", describe(e)),
                }
            }
            if !any {
                return Err(last_err);
            }
        }
        Hook::CgroupSockAddr => {
            let prog: &mut CgroupSockAddr =
                prog.try_into().map_err(|e: ProgramError| e.to_string())?;
            prog.load().map_err(describe)?;
            prog.attach(cgroup_root, CGROUP_MODE).map_err(describe)?;
        }
        Hook::CgroupSock => {
            let prog: &mut CgroupSock = prog.try_into().map_err(|e: ProgramError| e.to_string())?;
            prog.load().map_err(describe)?;
            prog.attach(cgroup_root, CGROUP_MODE).map_err(describe)?;
        }
        Hook::CgroupSkb(direction) => {
            let prog: &mut CgroupSkb = prog.try_into().map_err(|e: ProgramError| e.to_string())?;
            prog.load().map_err(describe)?;
            let attach_type = match direction {
                SkbDirection::Ingress => CgroupSkbAttachType::Ingress,
                SkbDirection::Egress => CgroupSkbAttachType::Egress,
            };
            prog.attach(cgroup_root, attach_type, CGROUP_MODE)
                .map_err(describe)?;
        }
        Hook::FEntry(function) => {
            let prog: &mut FEntry = prog.try_into().map_err(|e: ProgramError| e.to_string())?;
            prog.load(function, btf).map_err(describe)?;
            prog.attach().map_err(describe)?;
        }
        Hook::FExit(function) => {
            let prog: &mut FExit = prog.try_into().map_err(|e: ProgramError| e.to_string())?;
            prog.load(function, btf).map_err(describe)?;
            prog.attach().map_err(describe)?;
        }
        Hook::Lsm(hook) => {
            let prog: &mut Lsm = prog.try_into().map_err(|e: ProgramError| e.to_string())?;
            prog.load(hook, btf).map_err(describe)?;
            prog.attach().map_err(describe)?;
        }
    }
    Ok(())
}

/// A program error as one line: the verifier's last lines rather than its whole log.
fn describe(e: ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            tracing::debug!(%log, "verifier log");
            // The verifier prints its statistics last; the cause is in the lines before them.
            let lines: Vec<&str> = log.lines().collect();
            let stats = lines
                .iter()
                .position(|l| l.starts_with("verification time"))
                .unwrap_or(lines.len());
            let cause = lines[stats.saturating_sub(2)..stats].join(" | ");
            format!("rejected by the kernel ({io_error}); verifier: {cause}")
        }
        other => {
            // The syscall's errno is in the source chain, which Display leaves out.
            let mut line = other.to_string();
            let mut source = std::error::Error::source(&other);
            while let Some(cause) = source {
                line.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            line
        }
    }
}

/// Root, kernel version and BTF, checked before anything touches the kernel.
fn preflight() -> Result<(), KernelError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(KernelError::NotRoot);
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(version) = parse_release(&release)
        && version < MIN_KERNEL
    {
        return Err(KernelError::KernelTooOld(release));
    }
    Ok(())
}

/// `"6.18.0-1-amd64"` → `(6, 18)`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_wait_lengthens_only_on_an_idle_host() {
        // Records flowing, however few: the short wait, the count of empty drains reset.
        assert_eq!(next_wait(0, true), (DRAIN_WAIT, 0));
        assert_eq!(next_wait(IDLE_DRAINS + 7, true), (DRAIN_WAIT, 0));
        // Empty drains: the short wait until IDLE_DRAINS of them in a row, then the long one.
        let mut empty = 0;
        for _ in 1..IDLE_DRAINS {
            let (wait, now) = next_wait(empty, false);
            assert_eq!(wait, DRAIN_WAIT);
            empty = now;
        }
        assert_eq!(next_wait(empty, false), (IDLE_DRAIN_WAIT, IDLE_DRAINS));
        assert_eq!(next_wait(u32::MAX, false), (IDLE_DRAIN_WAIT, u32::MAX));
        // The first record after the quiet spell brings the short wait back at once.
        assert_eq!(next_wait(IDLE_DRAINS, true), (DRAIN_WAIT, 0));
    }

    #[test]
    fn kernel_release_parsing() {
        assert_eq!(parse_release("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0"), Some((5, 4)));
        assert!(parse_release("5.4.0").unwrap() < MIN_KERNEL);
        assert_eq!(parse_release("garbage"), None);
    }

    /// Each choice of hooks attaches one way in per syscall event: with fentry no syscall
    /// tracepoint nor raw hook, without it no trampoline program.
    #[test]
    fn each_hook_choice_takes_one_set() {
        let wanted = |chosen| PROGRAMS.iter().filter(move |p| p.open_path.wanted(chosen));
        let trampoline =
            |p: &&programs::Program| matches!(p.hook, Hook::FEntry(_) | Hook::FExit(_));
        assert!(
            wanted(Chosen::Fentry)
                .all(|p| !matches!(p.hook, Hook::Tracepoints(_)) && p.name != "file_sys_exit")
        );
        for chosen in [
            Chosen::Tracepoints,
            Chosen::TracepointExits,
            Chosen::RawSysExit,
            Chosen::Lsm,
        ] {
            assert!(!wanted(chosen).any(|p| trampoline(&p)), "{chosen:?}");
        }
        // The LSM set replaces the open tracepoints only; the BPF LSM program is in no other.
        assert!(wanted(Chosen::Lsm).all(|p| p.open_path != OpenPath::Classic));
        assert!(wanted(Chosen::Lsm).any(|p| p.name == "lsm_file_open" && p.required));
        assert!(wanted(Chosen::Lsm).any(|p| p.name == "fs_renameat"));
        for chosen in [
            Chosen::Tracepoints,
            Chosen::TracepointExits,
            Chosen::RawSysExit,
            Chosen::Fentry,
        ] {
            assert!(
                !wanted(chosen).any(|p| matches!(p.hook, Hook::Lsm(_))),
                "{chosen:?}"
            );
        }
        assert!(wanted(Chosen::RawSysExit).all(|p| p.open_path != OpenPath::Classic));
        assert!(wanted(Chosen::Tracepoints).any(|p| p.name == "file_openat"));
        // Exits alone: one open program, no entry, and the pair's exit is not attached too.
        let exits: Vec<_> = wanted(Chosen::TracepointExits)
            .filter(|p| matches!(p.open_path, OpenPath::Classic | OpenPath::ClassicExit))
            .map(|p| p.name)
            .collect();
        assert_eq!(exits, ["open_exit_regs"]);
        assert!(!wanted(Chosen::Tracepoints).any(|p| p.name == "open_exit_regs"));
    }

    /// The program table and the embedded object agree (no root needed).
    #[test]
    fn program_table_matches_object() {
        if OBJECT.is_empty() {
            eprintln!("skipped: stub build without the eBPF object");
            return;
        }
        let obj = aya_obj::Object::parse(OBJECT).expect("parse embedded object");
        for p in PROGRAMS {
            assert!(
                obj.programs.contains_key(p.name),
                "program {} missing from object",
                p.name
            );
        }
        assert_eq!(
            obj.programs.len(),
            PROGRAMS.len(),
            "object has programs the table lacks"
        );
    }
}
