//! Every map the programs share, and the load-time globals.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use sensor_common::{COUNTERS_LEN, CgroupCounts, KernelOffsets, SeenKey};

/// All records to userspace. One ring for all CPUs keeps causal order (a fork is always read
/// before the child's first event), which the agent's process tree relies on. 8 MiB: opens, the
/// bulk of the traffic, are sent at their used size (~100-300 bytes), so it holds tens of
/// thousands of records; its pages are mapped twice into the agent, so it counts double in RSS.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Loss and error counters, indexed by `sensor_common::Counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// Open flags from syscall entry, keyed by pid_tgid, until the exit hook sees the result (the
/// entry and exit pair only: x86_64 exits read the flags from the saved registers).
/// LRU so a thread that never returns (killed mid-syscall) cannot fill the map.
#[map]
pub static PENDING_OPENS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

/// TCP connects waiting for their handshake's outcome, by socket cookie (see `net.rs`). Not
/// LRU on purpose: a process that opens thousands of connects must not evict the one it wants
/// hidden. When the map is full, connects are reported at once with an unknown outcome.
#[map]
pub static PENDING_CONNECTS: HashMap<u64, crate::net::PendingConnect> =
    HashMap::with_max_entries(16384, 0);

/// Requested bind addresses and who asked, by socket cookie, from `bind4/6` until
/// `post_bind4/6`.
#[map]
pub static PENDING_BINDS: LruHashMap<u64, crate::net::PendingConnect> =
    LruHashMap::with_max_entries(4096, 0);

/// Listening sockets and the header of the process that listened, so connections accepted in
/// softirq context are reported for it.
#[map]
pub static LISTENERS: LruHashMap<crate::net::ListenerKey, sensor_common::EventHeader> =
    LruHashMap::with_max_entries(4096, 0);

/// Sockets that named port 53, by cookie, for the DNS packet programs. LRU: a process that
/// opens many such sockets only evicts older ones (their later packets go unread).
#[map]
pub static DNS_SOCKETS: LruHashMap<u64, crate::net::DnsSocket> =
    LruHashMap::with_max_entries(4096, 0);

/// Scratch space to build an io_uring record (larger than the BPF stack allows).
#[map]
pub static IO_URING_SCRATCH: PerCpuArray<sensor_common::IoUringEvent> =
    PerCpuArray::with_max_entries(1, 0);

/// Kernel struct offsets from the running kernel's BTF; set by the loader.
#[unsafe(no_mangle)]
// SAFETY: KernelOffsets is plain u64s; all-zero is a valid value (and the loader replaces it).
pub static OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };

/// The agent's own process id: its own file and network activity is not reported back to it.
#[unsafe(no_mangle)]
pub static SELF_PID: u32 = 0;

/// Privilege-operation arguments from syscall entry, keyed by pid_tgid, until exit.
#[map]
pub static PENDING_PRIVS: LruHashMap<u64, crate::creds::PendingPriv> =
    LruHashMap::with_max_entries(4096, 0);

/// Scratch space to build a `PendingPriv` (larger than the BPF stack allows).
#[map]
pub static PRIV_SCRATCH: PerCpuArray<crate::creds::PendingPriv> =
    PerCpuArray::with_max_entries(1, 0);

/// Scratch space to build an open record before sending the part of it that is used.
#[map]
pub static OPEN_SCRATCH: PerCpuArray<sensor_common::OpenEvent> =
    PerCpuArray::with_max_entries(1, 0);

/// Scratch space to build a file-operation record (see `OPEN_SCRATCH`).
#[map]
pub static FILEOP_SCRATCH: PerCpuArray<sensor_common::FileOpEvent> =
    PerCpuArray::with_max_entries(1, 0);

/// Lost and suppressed records per cgroup id, per CPU (userspace sums them).
#[map]
pub static CGROUP_COUNTS: LruPerCpuHashMap<u64, CgroupCounts> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// Recently seen (process image, object) pairs; see `SeenKey`. LRU: an evicted entry only means
/// one more record reaches userspace.
#[map]
pub static SEEN: LruHashMap<SeenKey, u8> = LruHashMap::with_max_entries(65536, 0);

/// log2 of the slots of [`SEEN_FRONT`].
pub const SEEN_FRONT_BITS: u32 = 9;

/// This CPU's most recent keys found in (or put into) `SEEN`, one per slot by a hash of the
/// key: a repeat is then recognised by comparing 40 bytes, without hashing them into the shared
/// LRU map. It only holds keys whose first occurrence already went through `SEEN`, so it never
/// stops a first occurrence.
#[map]
pub static SEEN_FRONT: PerCpuArray<SeenKey> =
    PerCpuArray::with_max_entries(1 << SEEN_FRONT_BITS, 0);

/// 1: filter exact repeats in the kernel (default); 0: send every event (for measurements).
#[unsafe(no_mangle)]
pub static FILTER_REPEATS: u32 = 1;
