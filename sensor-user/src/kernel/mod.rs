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
        CgroupSockAddr, ProgramError, TracePoint,
    },
};
use sensor_common::{COUNTERS_LEN, CgroupCounts, Counter};
use tokio::io::{Interest, unix::AsyncFd};

pub use decode::{BootClock, DecodeError, decode};
use programs::{Hook, OpenPath, PROGRAMS, SkbDirection};

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

/// How opens are hooked (`--open-hook`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpenHook {
    /// The best hook that runs only on opens: today the per-syscall tracepoints.
    #[default]
    Auto,
    /// The classic `syscalls:sys_{enter,exit}_open*` tracepoints.
    Tracepoint,
    /// One raw `sys_exit` program (x86_64 with BTF `pt_regs`): cheaper per open, but it runs at
    /// the exit of every syscall of every process (tens of percent on syscall-heavy servers).
    RawSysExit,
}

/// How often the ring buffer is drained when the kernel sends no wakeup (see `submit_flags` in
/// the eBPF crate): bounds the delay an event can wait before userspace sees it.
const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

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
    /// Optional programs that could not attach, with why.
    pub skipped: Vec<(&'static str, String)>,
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
        let raw_open = options.open_hook == OpenHook::RawSysExit
            && cfg!(target_arch = "x86_64")
            && offsets.pt_regs_orig_ax != 0
            && offsets.pt_regs_si != 0
            && offsets.pt_regs_dx != 0;
        let mut open_path = OpenPath::Classic;
        if raw_open {
            for p in PROGRAMS.iter().filter(|p| p.open_path == OpenPath::Raw) {
                match attach(&mut ebpf, p, &btf, &cgroup_root) {
                    Ok(()) => {
                        attached.push(p.name);
                        open_path = OpenPath::Raw;
                    }
                    Err(reason) => {
                        tracing::warn!(program = p.name, %reason, "raw open hook unavailable; using the classic open tracepoints");
                        skipped.push((p.name, reason));
                    }
                }
            }
        }
        for p in PROGRAMS {
            if p.open_path == OpenPath::Raw
                || (p.open_path == OpenPath::Classic && open_path == OpenPath::Raw)
            {
                continue;
            }
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
        })
    }

    /// Waits until records may be waiting: a kernel wakeup (sent only when the reader falls
    /// behind) or the drain interval, whichever comes first.
    pub async fn ready(&mut self) -> Result<(), KernelError> {
        tokio::select! {
            guard = self.ring.readable_mut() => guard?.clear_ready(),
            _ = tokio::time::sleep(DRAIN_INTERVAL) => {}
        }
        Ok(())
    }

    /// Hands every waiting record to `f`; returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            f(&item);
            n += 1;
        }
        n
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
    fn kernel_release_parsing() {
        assert_eq!(parse_release("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0"), Some((5, 4)));
        assert!(parse_release("5.4.0").unwrap() < MIN_KERNEL);
        assert_eq!(parse_release("garbage"), None);
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
