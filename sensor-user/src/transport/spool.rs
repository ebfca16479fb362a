//! The on-disk spool: deviations wait here until the collector acknowledges them.
//!
//! Layout of `state_dir/spool/`:
//! - `lock`: held with `flock` while a transport uses the spool (one agent per spool).
//! - `id`: the spool's random identity, sent with every batch (see `DeviationBatch.spool_id`).
//! - `next-sequence`: the sequence the next sealed batch gets.
//! - `pending.log`: deviations not yet in a batch, appended by `send` (see `record` for the format).
//! - `batch-<sequence>.log`: sealed batches, same format, immutable, deleted when acknowledged.
//! - `dropped`: how many deviations this spool ever lost (spool full, refused, unreadable), so
//!   that drops survive an agent restart until a heartbeat reports them. Saved at most once a
//!   second while drops happen, and always before a heartbeat reports the count.
//!
//! Sealing renames `pending.log` to the next batch file, so a batch's content is fixed before it is
//! first sent and a resent batch is always identical to the first attempt. Crash safety:
//! - `next-sequence` is written (temp file, fsync, rename) before the rename that creates the batch
//!   file, so a sequence is never given to two batches, even after the batch is acknowledged and
//!   deleted. A crash between the two skips a sequence, which the collector allows.
//! - `pending.log` is fsynced before it is sealed; appends in between are written but not synced
//!   (they survive an agent crash; a power loss can lose at most one flush interval of them).
//! - A torn record at the end of `pending.log` (crash mid-append) is cut off with a warning.
//!   Damage inside a sealed batch is corruption and is reported.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};
use prost::Message;
use proto::v1::Deviation;

use super::TransportError;
use super::record::{self, MAGIC, Records};

const PENDING: &str = "pending.log";
const NEXT_SEQUENCE: &str = "next-sequence";
const ID: &str = "id";
const DROPPED: &str = "dropped";
/// The `dropped` file is rewritten at most this often while deviations are being dropped.
const DROPPED_SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A sealed batch waiting for its acknowledgement.
#[derive(Debug, Clone, Copy)]
struct Sealed {
    count: u64,
    bytes: u64,
}

/// What an append did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    pub spooled: u64,
    /// Deviations that did not fit under the size limit.
    pub dropped: u64,
}

pub struct Spool {
    dir: PathBuf,
    _lock: Flock<File>,
    id: String,
    next_sequence: u64,
    sealed: BTreeMap<u64, Sealed>,
    /// Open `pending.log`, created on first append.
    pending: Option<File>,
    /// Size of `pending.log` up to its last whole record (0 when it does not exist).
    pending_len: u64,
    pending_count: u64,
    /// When the oldest pending deviation was appended.
    pending_since: Option<Instant>,
    /// Bytes of all spool log files.
    total_bytes: u64,
    max_batch: u64,
    max_batch_bytes: u64,
    max_bytes: u64,
    /// Deviations this spool ever dropped, and what the `dropped` file holds.
    dropped_total: u64,
    dropped_saved: u64,
    dropped_saved_at: Option<Instant>,
}

impl Spool {
    /// Opens the spool in `dir` (creating it), recovering from an earlier crash.
    pub fn open(
        dir: &Path,
        max_batch: usize,
        max_batch_bytes: u64,
        max_bytes: u64,
    ) -> Result<Spool, TransportError> {
        let io = |source| TransportError::SpoolIo {
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io)?;
        let lock =
            Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
                if errno == nix::errno::Errno::EWOULDBLOCK {
                    TransportError::SpoolLocked {
                        path: dir.to_owned(),
                    }
                } else {
                    io(errno.into())
                }
            })?;
        let mut spool = Spool {
            dir: dir.to_owned(),
            _lock: lock,
            id: String::new(),
            next_sequence: 1,
            sealed: BTreeMap::new(),
            pending: None,
            pending_len: 0,
            pending_count: 0,
            pending_since: None,
            total_bytes: 0,
            max_batch: max_batch as u64,
            max_batch_bytes,
            max_bytes,
            dropped_total: 0,
            dropped_saved: 0,
            dropped_saved_at: None,
        };
        spool.id = spool.read_or_create_id()?;
        spool.dropped_total = spool.read_dropped();
        spool.dropped_saved = spool.dropped_total;
        spool.recover()?;
        Ok(spool)
    }

    /// The spool's identity.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn corrupt(&self, path: &Path, reason: impl Into<String>) -> TransportError {
        TransportError::SpoolCorrupt {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    fn io_error(&self, source: std::io::Error) -> TransportError {
        TransportError::SpoolIo {
            path: self.dir.clone(),
            source,
        }
    }

    /// The saved drop count; a missing file is 0, a damaged one too (with a warning: losing a
    /// count must not stop the agent).
    fn read_dropped(&self) -> u64 {
        let path = self.dir.join(DROPPED);
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().unwrap_or_else(|_| {
                tracing::warn!(path = %path.display(), "drop count unreadable; counting from 0");
                0
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "drop count unreadable; counting from 0");
                0
            }
        }
    }

    /// Counts `count` more dropped deviations, saving the total at most once a second.
    pub fn add_dropped(&mut self, count: u64) {
        self.dropped_total += count;
        if self
            .dropped_saved_at
            .is_none_or(|at| at.elapsed() >= DROPPED_SAVE_INTERVAL)
        {
            self.save_dropped();
        }
    }

    /// Deviations this spool ever dropped, saved first so that a reported count survives a
    /// restart.
    pub fn dropped_total(&mut self) -> u64 {
        if self.dropped_saved != self.dropped_total {
            self.save_dropped();
        }
        self.dropped_total
    }

    fn save_dropped(&mut self) {
        self.dropped_saved_at = Some(Instant::now());
        match write_atomically(
            &self.dir,
            DROPPED,
            self.dropped_total.to_string().as_bytes(),
        ) {
            Ok(()) => self.dropped_saved = self.dropped_total,
            Err(e) => tracing::warn!(error = %e, "cannot save the drop count"),
        }
    }

    fn read_or_create_id(&self) -> Result<String, TransportError> {
        let path = self.dir.join(ID);
        match fs::read_to_string(&path) {
            Ok(id) if is_valid_id(id.trim()) => Ok(id.trim().to_owned()),
            Ok(_) => Err(self.corrupt(&path, "not a spool id")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 16];
                File::open("/dev/urandom")
                    .and_then(|mut f| f.read_exact(&mut bytes))
                    .map_err(|e| self.io_error(e))?;
                let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write_atomically(&self.dir, ID, id.as_bytes()).map_err(|e| self.io_error(e))?;
                Ok(id)
            }
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// Reads back the sequence counter, the sealed batches and `pending.log`.
    fn recover(&mut self) -> Result<(), TransportError> {
        let counter = self.dir.join(NEXT_SEQUENCE);
        match fs::read_to_string(&counter) {
            Ok(text) => {
                self.next_sequence = text
                    .trim()
                    .parse()
                    .map_err(|_| self.corrupt(&counter, format!("not a number: {text:?}")))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io_error(e)),
        }
        for entry in fs::read_dir(&self.dir).map_err(|e| self.io_error(e))? {
            let entry = entry.map_err(|e| self.io_error(e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                // A write_atomically that did not reach its rename.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(sequence) = parse_batch_name(&name) else {
                continue;
            };
            let path = entry.path();
            let data = fs::read(&path).map_err(|e| self.io_error(e))?;
            let body = data
                .strip_prefix(MAGIC)
                .ok_or_else(|| self.corrupt(&path, "missing spool header"))?;
            let mut records = Records::new(body);
            let count = records.by_ref().count() as u64;
            if records.stopped_early() {
                return Err(self.corrupt(
                    &path,
                    format!(
                        "damaged record at byte {}",
                        MAGIC.len() + records.valid_len()
                    ),
                ));
            }
            let bytes = data.len() as u64;
            self.sealed.insert(sequence, Sealed { count, bytes });
            self.total_bytes += bytes;
            self.next_sequence = self.next_sequence.max(sequence + 1);
        }
        self.next_sequence = self.next_sequence.max(1);
        self.recover_pending()
    }

    fn recover_pending(&mut self) -> Result<(), TransportError> {
        let path = self.dir.join(PENDING);
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_error(e)),
        };
        if data.len() < MAGIC.len() && MAGIC.starts_with(&data) {
            // Crashed while creating the file: nothing in it.
            fs::remove_file(&path).map_err(|e| self.io_error(e))?;
            return Ok(());
        }
        let body = data
            .strip_prefix(MAGIC)
            .ok_or_else(|| self.corrupt(&path, "missing spool header"))?;
        let mut records = Records::new(body);
        let count = records.by_ref().count() as u64;
        let valid = (MAGIC.len() + records.valid_len()) as u64;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| self.io_error(e))?;
        if records.stopped_early() {
            tracing::warn!(
                path = %path.display(),
                kept = count,
                cut_bytes = data.len() as u64 - valid,
                "spool ends with a torn record (agent stopped while writing); skipping it"
            );
            file.set_len(valid).map_err(|e| self.io_error(e))?;
        }
        self.pending_len = valid;
        self.pending_count = count;
        self.pending_since = (count > 0).then(Instant::now);
        self.total_bytes += valid;
        self.pending = Some(file);
        Ok(())
    }

    /// Appends encoded deviations to `pending.log`, sealing a batch each time one is full.
    /// Deviations that would take the spool over its size limit are dropped and counted.
    pub fn append(&mut self, payloads: &[Vec<u8>]) -> Result<Appended, TransportError> {
        let mut outcome = Appended::default();
        let mut buffer = Vec::new();
        let mut buffered = 0u64;
        for payload in payloads {
            let size = (record::RECORD_HEADER + payload.len()) as u64;
            let header = if self.pending.is_none() && buffer.is_empty() {
                MAGIC.len() as u64
            } else {
                0
            };
            if self.total_bytes + buffer.len() as u64 + size + header > self.max_bytes {
                outcome.dropped += 1;
                continue;
            }
            record::encode(payload, &mut buffer);
            buffered += 1;
            let pending_bytes = self.pending_len + buffer.len() as u64;
            if self.pending_count + buffered >= self.max_batch
                || pending_bytes >= self.max_batch_bytes
            {
                self.write_pending(&buffer, buffered)?;
                outcome.spooled += buffered;
                (buffer, buffered) = (Vec::new(), 0);
                self.seal()?;
            }
        }
        if buffered > 0 {
            self.write_pending(&buffer, buffered)?;
            outcome.spooled += buffered;
        }
        Ok(outcome)
    }

    /// Writes whole records to `pending.log`; on failure, cuts the file back to its last whole
    /// record so a later append does not follow a torn one.
    fn write_pending(&mut self, records: &[u8], count: u64) -> Result<(), TransportError> {
        if self.pending.is_none() {
            let path = self.dir.join(PENDING);
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)
                .map_err(|e| self.io_error(e))?;
            file.write_all(MAGIC).map_err(|e| self.io_error(e))?;
            self.pending_len = MAGIC.len() as u64;
            self.total_bytes += self.pending_len;
            self.pending = Some(file);
        }
        let Some(file) = self.pending.as_mut() else {
            unreachable!("pending.log was opened above");
        };
        if let Err(e) = file.write_all(records) {
            let _ = file.set_len(self.pending_len);
            return Err(self.io_error(e));
        }
        self.pending_len += records.len() as u64;
        self.total_bytes += records.len() as u64;
        self.pending_count += count;
        self.pending_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// When the oldest pending deviation was appended, if any is pending.
    pub fn pending_since(&self) -> Option<Instant> {
        self.pending_since
    }

    /// Turns `pending.log` into the next batch. Returns its sequence, or `None` if nothing was
    /// pending.
    pub fn seal(&mut self) -> Result<Option<u64>, TransportError> {
        let Some(file) = self.pending.take() else {
            return Ok(None);
        };
        if self.pending_count == 0 {
            self.pending = Some(file);
            return Ok(None);
        }
        let sequence = self.next_sequence;
        let result = file
            .sync_data()
            .and_then(|()| {
                write_atomically(
                    &self.dir,
                    NEXT_SEQUENCE,
                    format!("{}\n", sequence + 1).as_bytes(),
                )
            })
            .and_then(|()| fs::rename(self.dir.join(PENDING), self.dir.join(batch_name(sequence))))
            .and_then(|()| sync_dir(&self.dir));
        if let Err(e) = result {
            self.pending = Some(file);
            return Err(self.io_error(e));
        }
        self.next_sequence = sequence + 1;
        self.sealed.insert(
            sequence,
            Sealed {
                count: self.pending_count,
                bytes: self.pending_len,
            },
        );
        self.pending_len = 0;
        self.pending_count = 0;
        self.pending_since = None;
        Ok(Some(sequence))
    }

    /// The first sealed batch after `sequence` (any batch when `None`).
    pub fn next_sealed_after(&self, sequence: Option<u64>) -> Option<u64> {
        let from = sequence.map_or(0, |s| s.saturating_add(1));
        self.sealed.range(from..).next().map(|(&s, _)| s)
    }

    /// Where a sealed batch lives (read it with [`read_batch`]).
    pub fn batch_path(&self, sequence: u64) -> PathBuf {
        self.dir.join(batch_name(sequence))
    }

    /// Deletes an acknowledged (or rejected) batch; returns how many deviations it held.
    pub fn remove(&mut self, sequence: u64) -> Option<u64> {
        let sealed = self.sealed.remove(&sequence)?;
        if let Err(e) = fs::remove_file(self.batch_path(sequence)) {
            // Left behind, it would be sent again after a restart; the collector acks it as a
            // duplicate then.
            tracing::warn!(sequence, error = %e, "cannot delete acknowledged batch from spool");
        }
        self.total_bytes = self.total_bytes.saturating_sub(sealed.bytes);
        Some(sealed.count)
    }

    /// Deviations in the spool (pending or sealed).
    pub fn unacknowledged(&self) -> u64 {
        self.pending_count + self.sealed.values().map(|s| s.count).sum::<u64>()
    }

    /// True when nothing waits in the spool.
    pub fn is_empty(&self) -> bool {
        self.pending_count == 0 && self.sealed.is_empty()
    }
}

/// Reads a sealed batch's deviations. Done outside the spool lock: sealed files never change.
pub fn read_batch(path: &Path) -> Result<Vec<Deviation>, String> {
    let data = fs::read(path).map_err(|e| e.to_string())?;
    let body = data.strip_prefix(MAGIC).ok_or("missing spool header")?;
    let mut records = Records::new(body);
    let deviations = records
        .by_ref()
        .map(Deviation::decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("undecodable deviation: {e}"))?;
    if records.stopped_early() {
        return Err("damaged record".to_owned());
    }
    Ok(deviations)
}

fn batch_name(sequence: u64) -> String {
    format!("batch-{sequence:020}.log")
}

fn parse_batch_name(name: &str) -> Option<u64> {
    name.strip_prefix("batch-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Replaces `dir/name` with `contents` so that a crash leaves either the old or the new file.
fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
