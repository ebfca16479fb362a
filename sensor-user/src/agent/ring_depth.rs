//! How far the agent is behind the kernel: bytes the kernel wrote into the event ring and the
//! agent has not read yet (producer position minus consumer position). Sent in heartbeats as
//! `event_queue_depth`, so a stalled or drowning agent shows at the collector; reading it costs
//! two loads from pages mapped once.
//!
//! Both positions live on their own pages at the start of the ring's mapping (consumer at offset
//! 0, producer at one page): <https://github.com/torvalds/linux/blob/v6.12/kernel/bpf/ringbuf.c>
//! (`bpf_ringbuf`, `ringbuf_map_mmap_user`). Mapped read-only, which the kernel allows for every
//! page of the ring.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// The two position pages of one ring buffer, mapped read-only.
pub struct RingDepth {
    consumer: NonNull<libc::c_void>,
    producer: NonNull<libc::c_void>,
    page: usize,
}

// SAFETY: the mappings are read-only and only read atomically; they stay valid until drop.
unsafe impl Send for RingDepth {}
// SAFETY: as above: shared access is atomic loads only.
unsafe impl Sync for RingDepth {}

impl RingDepth {
    /// Maps the position pages of the ring buffer map `fd`.
    pub fn new(fd: BorrowedFd<'_>) -> std::io::Result<RingDepth> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| std::io::Error::other("page size"))?;
        let consumer = map(fd, 0, page)?;
        match map(fd, page, page) {
            Ok(producer) => Ok(RingDepth {
                consumer,
                producer,
                page,
            }),
            Err(e) => {
                // SAFETY: mapped just above with this length, not used after.
                unsafe { libc::munmap(consumer.as_ptr(), page) };
                Err(e)
            }
        }
    }

    /// Bytes written by the kernel and not read yet (record headers and padding included).
    pub fn pending_bytes(&self) -> u64 {
        // SAFETY: each page starts with the kernel's `unsigned long` position, 8-byte aligned
        // (page aligned); the kernel updates it with release stores, hence atomic loads.
        let (consumer, producer) = unsafe {
            (
                (*self.consumer.as_ptr().cast::<AtomicU64>()).load(Ordering::Acquire),
                (*self.producer.as_ptr().cast::<AtomicU64>()).load(Ordering::Acquire),
            )
        };
        producer.saturating_sub(consumer)
    }
}

impl Drop for RingDepth {
    fn drop(&mut self) {
        // SAFETY: both were mapped by `new` with `page` bytes and are not used after.
        unsafe {
            libc::munmap(self.consumer.as_ptr(), self.page);
            libc::munmap(self.producer.as_ptr(), self.page);
        }
    }
}

fn map(fd: BorrowedFd<'_>, offset: usize, len: usize) -> std::io::Result<NonNull<libc::c_void>> {
    let offset = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
    // SAFETY: a new shared read-only mapping of a valid fd; the kernel checks offset and length.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    NonNull::new(ptr).ok_or_else(|| std::io::Error::other("mmap returned null"))
}
