//! Owns positional file I/O for the storage threads.
//!
//! [`UringFile`] does every read, write, `fdatasync` and `fallocate` through
//! its own small io_uring, synchronously: it submits, then waits for the
//! completions before returning (the storage threads are plain threads, not
//! async tasks). Because each call waits for everything it submitted, the
//! buffers it is given are never touched by the kernel after it returns.
//! `ftruncate` and `fstat` have no io_uring opcode in the io-uring version we
//! link, so [`FileIo::truncate`] and [`FileIo::len`] use the plain syscalls.
//!
//! [`SimFile`] is an in-memory file for crash and fault tests: it records
//! every write and sync so that [`SimFile::crash`] can return what a machine
//! would find after a power loss, and [`SimFile::inject`] makes the next
//! operation of a kind fail with a chosen errno. It is compiled in all builds
//! so that integration tests and other modules' tests can use it.
//!
//! Errors from io_uring completions keep their `ErrorKind` and carry the
//! operation, length, offset and path in their message; [`os_errno`] recovers
//! the errno (to tell `ENOSPC` from `EIO`).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use io_uring::{opcode, squeue, types, IoUring};
use nix::libc;

/// Positional I/O on one file, as the storage engine needs it.
pub trait FileIo: Send {
    /// Reads into `buf` from `offset`; returns fewer bytes than `buf.len()`
    /// only when the end of the file is reached.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset` (short writes are continued).
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Several writes submitted together, then all awaited (a checkpoint
    /// writes many pages). The ranges must not overlap: they may land in any
    /// order. On error some of the writes may have landed.
    fn write_many(&mut self, writes: &[(u64, &[u8])]) -> io::Result<()>;
    /// `fdatasync`: makes the data written so far (and the file size) durable.
    fn sync_data(&mut self) -> io::Result<()>;
    /// The current file length.
    fn len(&mut self) -> io::Result<u64>;
    /// True when the file is empty.
    fn is_empty(&mut self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Grows the file to at least `len` bytes, reserving the blocks between
    /// the current end and `len` with `fallocate`, so that `ENOSPC` surfaces
    /// here, before any data is written. Never shrinks the file.
    fn allocate(&mut self, len: u64) -> io::Result<()>;
    /// Sets the file length to `len` (shrinking or extending with zeros).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Returns the errno behind an error from this module (or a plain OS error).
pub fn os_errno(err: &io::Error) -> Option<i32> {
    err.raw_os_error().or_else(|| {
        err.get_ref()
            .and_then(|e| e.downcast_ref::<OpError>())
            .map(|e| e.errno)
    })
}

/// `fsync` on a directory, so that files created, renamed or removed in it
/// survive a power loss. (Done with a plain syscall: it is rare.)
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("fsync of directory {}: {e}", dir.display()),
        )
    })
}

/// A failed operation: what was attempted, where, and the errno.
#[derive(Debug)]
struct OpError {
    op: &'static str,
    len: u64,
    offset: u64,
    path: PathBuf,
    errno: i32,
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = io::Error::from_raw_os_error(self.errno);
        match self.op {
            "fdatasync" => write!(f, "fdatasync of {}: {os}", self.path.display()),
            op => write!(
                f,
                "{op} of {} bytes at {} in {}: {os}",
                self.len,
                self.offset,
                self.path.display()
            ),
        }
    }
}

impl std::error::Error for OpError {}

fn op_error(op: &'static str, len: u64, offset: u64, path: &Path, errno: i32) -> io::Error {
    let kind = io::Error::from_raw_os_error(errno).kind();
    io::Error::new(
        kind,
        OpError {
            op,
            len,
            offset,
            path: path.to_path_buf(),
            errno,
        },
    )
}

fn retryable(errno: i32) -> bool {
    errno == libc::EINTR || errno == libc::EAGAIN
}

/// Entries in each file's ring; also the batch size of `write_many`.
const RING_ENTRIES: u32 = 32;
/// Largest length given to one read or write SQE (Linux caps one transfer
/// at 0x7ffff000 bytes anyway; the rest is continued like a short transfer).
const MAX_IO_LEN: usize = 1 << 30;
/// Offsets must stay below this (the kernel reads -1 as "current position").
const MAX_OFFSET: u64 = i64::MAX as u64;

/// A file whose positional I/O goes through its own small io_uring.
pub struct UringFile {
    file: File,
    path: PathBuf,
    ring: IoUring,
    /// Set when `io_uring_enter` failed in a way that may leave entries in
    /// the submission queue; the ring is replaced before the next operation.
    broken: bool,
    /// Tag of the current batch, kept in the high bits of `user_data`.
    generation: u32,
}

impl UringFile {
    /// Opens `path` for reading and writing, creating it if `create`.
    pub fn open(path: &Path, create: bool) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        Self::with_path(file, path.to_path_buf())
    }

    /// Wraps an already open file (however it was opened); `path` is only
    /// used in error messages.
    pub fn from_file(file: File, path: &Path) -> io::Result<Self> {
        Self::with_path(file, path.to_path_buf())
    }

    fn with_path(file: File, path: PathBuf) -> io::Result<Self> {
        let ring = IoUring::new(RING_ENTRIES).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("io_uring setup for {}: {e}", path.display()),
            )
        })?;
        Ok(Self {
            file,
            path,
            ring,
            broken: false,
            generation: 0,
        })
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The path given at open (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fd(&self) -> types::Fd {
        types::Fd(self.file.as_raw_fd())
    }

    fn check_range(&self, op: &'static str, len: usize, offset: u64) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= MAX_OFFSET => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{op} of {len} bytes at {offset} in {}: offset out of range",
                    self.path.display()
                ),
            )),
        }
    }

    /// Submits `entries` (at most `RING_ENTRIES`) and waits until every one
    /// of them has completed, storing each raw CQE result in `results`.
    ///
    /// # Safety
    /// The buffers the entries point to must stay valid, and must not be
    /// accessed, until this returns. It returns only once nothing it
    /// submitted is still in flight (if the kernel refuses to report
    /// completions for good, it aborts the process rather than let the
    /// kernel write into freed memory).
    unsafe fn run_batch(
        &mut self,
        entries: &[squeue::Entry],
        results: &mut [i32],
    ) -> io::Result<()> {
        let n = entries.len();
        if n == 0 {
            return Ok(());
        }
        if n > RING_ENTRIES as usize || results.len() != n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "io_uring batch too large",
            ));
        }
        if self.broken {
            self.ring = IoUring::new(RING_ENTRIES).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("io_uring setup for {}: {e}", self.path.display()),
                )
            })?;
            self.broken = false;
        }
        self.generation = self.generation.wrapping_add(1);
        let tag = u64::from(self.generation) << 32;
        let pushed = {
            let mut sq = self.ring.submission();
            // There must be room for all of them: a partial push would leave
            // entries that nothing waits for.
            sq.capacity() - sq.len() >= n
                && entries.iter().enumerate().all(|(i, e)| {
                    // SAFETY: the caller keeps the buffers valid until we
                    // return, and we return only after every pushed entry
                    // completed or was discarded unsubmitted (the ring is
                    // then replaced, see `broken`).
                    sq.push(&e.clone().user_data(tag | i as u64)).is_ok()
                })
        };
        if !pushed {
            self.broken = true;
            return Err(io::Error::other(
                "io_uring submission queue unexpectedly full",
            ));
        }
        let mut done = 0usize;
        let mut fatal_tries = 0u32;
        loop {
            for cqe in self.ring.completion() {
                let ud = cqe.user_data();
                let i = (ud & 0xffff_ffff) as usize;
                if ud & !0xffff_ffff == tag && i < n {
                    results[i] = cqe.result();
                    done += 1;
                }
            }
            if done >= n {
                return Ok(());
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                    ) =>
                {
                    if e.raw_os_error() != Some(libc::EINTR) {
                        std::thread::yield_now();
                    }
                }
                Err(e) => {
                    let unsubmitted = self.ring.submission().len();
                    if done + unsubmitted >= n {
                        // Nothing of ours is in flight: the unsubmitted
                        // entries are dropped with the ring.
                        self.broken = true;
                        return Err(io::Error::new(
                            e.kind(),
                            format!("io_uring_enter for {}: {e}", self.path.display()),
                        ));
                    }
                    fatal_tries += 1;
                    if fatal_tries > 10_000 {
                        tracing::error!(
                            path = %self.path.display(),
                            error = %e,
                            "io_uring keeps failing with I/O in flight; aborting to avoid memory corruption"
                        );
                        std::process::abort();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }

    /// One entry, one completion.
    ///
    /// # Safety
    /// As for [`Self::run_batch`].
    unsafe fn run_one(&mut self, entry: squeue::Entry) -> io::Result<i32> {
        let mut res = [0i32];
        self.run_batch(std::slice::from_ref(&entry), &mut res)?;
        Ok(res[0])
    }

    fn write_zeros(&mut self, from: u64, to: u64) -> io::Result<()> {
        let zeros = vec![0u8; 1 << 20];
        let mut at = from;
        while at < to {
            let n = ((to - at) as usize).min(zeros.len());
            self.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
}

impl FileIo for UringFile {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.check_range("read", buf.len(), offset)?;
        let fd = self.fd();
        let mut total = 0usize;
        while total < buf.len() {
            let chunk = (buf.len() - total).min(MAX_IO_LEN);
            let at = offset + total as u64;
            let entry = opcode::Read::new(fd, buf[total..].as_mut_ptr(), chunk as u32)
                .offset(at)
                .build();
            // SAFETY: `buf` is borrowed mutably for the whole call.
            let res = unsafe { self.run_one(entry) }?;
            if res < 0 {
                if retryable(-res) {
                    continue;
                }
                return Err(op_error("read", chunk as u64, at, &self.path, -res));
            }
            if res == 0 {
                break;
            }
            total += res as usize;
        }
        Ok(total)
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_many(&[(offset, buf)])
    }

    fn write_many(&mut self, writes: &[(u64, &[u8])]) -> io::Result<()> {
        for &(offset, buf) in writes {
            self.check_range("write", buf.len(), offset)?;
        }
        let fd = self.fd();
        // (offset, remaining bytes) of the writes not finished yet.
        let mut pending: Vec<(u64, &[u8])> = writes
            .iter()
            .copied()
            .filter(|(_, b)| !b.is_empty())
            .collect();
        let mut first_err: Option<io::Error> = None;
        let mut entries = Vec::with_capacity(RING_ENTRIES as usize);
        let mut results = vec![0i32; RING_ENTRIES as usize];
        while !pending.is_empty() && first_err.is_none() {
            let mut next = Vec::new();
            for batch in pending.chunks(RING_ENTRIES as usize) {
                if first_err.is_some() {
                    break;
                }
                entries.clear();
                for &(offset, buf) in batch {
                    let len = buf.len().min(MAX_IO_LEN) as u32;
                    entries.push(
                        opcode::Write::new(fd, buf.as_ptr(), len)
                            .offset(offset)
                            .build(),
                    );
                }
                let res = &mut results[..batch.len()];
                // SAFETY: every buffer is borrowed from `writes` for the whole call.
                unsafe { self.run_batch(&entries, res) }?;
                for (&(offset, buf), &r) in batch.iter().zip(res.iter()) {
                    if r < 0 {
                        if retryable(-r) {
                            next.push((offset, buf));
                        } else if first_err.is_none() {
                            first_err =
                                Some(op_error("write", buf.len() as u64, offset, &self.path, -r));
                        }
                    } else if r == 0 {
                        if first_err.is_none() {
                            first_err = Some(io::Error::new(
                                io::ErrorKind::WriteZero,
                                format!(
                                    "write of {} bytes at {offset} in {}: wrote nothing",
                                    buf.len(),
                                    self.path.display()
                                ),
                            ));
                        }
                    } else if (r as usize) < buf.len() {
                        next.push((offset + r as u64, &buf[r as usize..]));
                    }
                }
            }
            pending = next;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let entry = opcode::Fsync::new(self.fd())
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        loop {
            // SAFETY: no buffer is involved.
            let res = unsafe { self.run_one(entry.clone()) }?;
            if res >= 0 {
                return Ok(());
            }
            if !retryable(-res) {
                return Err(op_error("fdatasync", 0, 0, &self.path, -res));
            }
        }
    }

    fn len(&mut self) -> io::Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| io::Error::new(e.kind(), format!("fstat of {}: {e}", self.path.display())))
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        let cur = self.len()?;
        if len <= cur {
            return Ok(());
        }
        self.check_range("fallocate", 0, len)?;
        let entry = opcode::Fallocate::new(self.fd(), len - cur)
            .offset(cur)
            .mode(0)
            .build();
        loop {
            // SAFETY: no buffer is involved.
            let res = unsafe { self.run_one(entry.clone()) }?;
            if res >= 0 {
                return Ok(());
            }
            match -res {
                e if retryable(e) => continue,
                // A file system without fallocate: reserve by writing zeros
                // past the end (still surfaces ENOSPC before real data).
                libc::EOPNOTSUPP => return self.write_zeros(cur, len),
                e => return Err(op_error("fallocate", len - cur, cur, &self.path, e)),
            }
        }
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("ftruncate of {} to {len}: {e}", self.path.display()),
            )
        })
    }
}

/// What survives a simulated power loss (see [`SimFile::crash`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Only what was synced: every change after the last successful sync is lost.
    DropUnsynced,
    /// Everything written, synced or not (a `kill -9`: the page cache survives).
    KeepUnsynced,
    /// Unsynced changes are kept except the last unsynced write, of which
    /// only its first `n` bytes landed (a torn write). Changes of length
    /// (truncate, allocate) made after that write are kept.
    TearLastWrite(usize),
    /// Of the unsynced changes only the last write landed (the kernel wrote
    /// pages back out of order); earlier unsynced writes are lost. Changes
    /// of length are kept.
    LastWriteOnly,
}

/// A one-shot failure armed with [`SimFile::inject`]: the next operation of
/// its kind fails with `errno` (e.g. `libc::ENOSPC`, `libc::EIO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next write (or the next write of a `write_many`) fails after its
    /// first `landed` bytes reached the file, as a write that runs out of
    /// space half way.
    Write { errno: i32, landed: usize },
    /// The next `sync_data` fails and makes nothing durable.
    Sync(i32),
    /// The next `allocate` fails and changes nothing.
    Allocate(i32),
    /// The next `truncate` fails and changes nothing.
    Truncate(i32),
    /// The next `read_at` fails.
    Read(i32),
}

#[derive(Clone, Debug)]
enum SimOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
    Sync,
}

#[derive(Default)]
struct SimState {
    /// Durable content when the file was made (see [`SimFile::from_bytes`]).
    base: Vec<u8>,
    /// What reads see now (the page cache).
    content: Vec<u8>,
    /// Every change and successful sync since the file was made, in order.
    log: Vec<SimOp>,
    /// Number of changes (writes, truncates, allocations) in `log`.
    changes: u64,
    syncs: u64,
    faults: Vec<Fault>,
}

fn apply(content: &mut Vec<u8>, op: &SimOp, tear: Option<usize>) {
    match op {
        SimOp::Write { offset, data } => {
            let data = match tear {
                Some(n) => &data[..n.min(data.len())],
                None => &data[..],
            };
            let start = *offset as usize;
            let end = start + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[start..end].copy_from_slice(data);
        }
        SimOp::SetLen(len) => content.resize(*len as usize, 0),
        SimOp::Sync => {}
    }
}

/// An in-memory file for crash and fault tests.
///
/// All handles made with [`SimFile::clone_handle`] share one file, so a test
/// can give one handle to the code under test and keep another to crash it.
/// Every change is logged: a "change" is one write (each write of a
/// `write_many` counts on its own), one truncate, or one allocation that
/// grew the file; [`SimFile::changes`] counts them and
/// [`SimFile::crash_after`] returns the disk as it would be had the power
/// failed right after the k-th change. To restart on that disk, make a new
/// file with [`SimFile::from_bytes`].
pub struct SimFile {
    state: Arc<Mutex<SimState>>,
}

impl Default for SimFile {
    fn default() -> Self {
        Self::new()
    }
}

impl SimFile {
    /// An empty file.
    pub fn new() -> Self {
        Self::from_bytes(Vec::new())
    }

    /// A file holding `data`, all of it durable (the disk after a restart).
    pub fn from_bytes(data: Vec<u8>) -> Self {
        let state = SimState {
            content: data.clone(),
            base: data,
            ..SimState::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Another handle on the same file.
    pub fn clone_handle(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What reads see now (synced or not).
    pub fn contents(&self) -> Vec<u8> {
        self.lock().content.clone()
    }

    /// Number of changes made so far (the k of [`SimFile::crash_after`]).
    pub fn changes(&self) -> u64 {
        self.lock().changes
    }

    /// Number of successful syncs so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// The disk content after a power loss now (every sync so far counts).
    pub fn crash(&self, mode: CrashMode) -> Vec<u8> {
        self.crash_at(None, mode)
    }

    /// The disk content had the power failed right after the `k`-th change
    /// (`k = 0`: before any change), before anything that followed it, a
    /// sync included: only syncs made before the `k`-th change completed
    /// count. A `k` past [`SimFile::changes`] is the same as [`SimFile::crash`].
    pub fn crash_after(&self, k: u64, mode: CrashMode) -> Vec<u8> {
        self.crash_at(Some(k), mode)
    }

    fn crash_at(&self, limit: Option<u64>, mode: CrashMode) -> Vec<u8> {
        let st = self.lock();
        let mut durable = st.base.clone();
        let mut pending: Vec<&SimOp> = Vec::new();
        let mut seen = 0u64;
        for op in &st.log {
            if Some(seen) == limit {
                break;
            }
            if let SimOp::Sync = op {
                for p in pending.drain(..) {
                    apply(&mut durable, p, None);
                }
            } else {
                seen += 1;
                pending.push(op);
            }
        }
        match mode {
            CrashMode::DropUnsynced => {}
            CrashMode::KeepUnsynced => {
                for p in pending {
                    apply(&mut durable, p, None);
                }
            }
            CrashMode::LastWriteOnly => {
                let last = pending
                    .iter()
                    .rposition(|op| matches!(op, SimOp::Write { .. }));
                for (i, p) in pending.into_iter().enumerate() {
                    if Some(i) == last || !matches!(p, SimOp::Write { .. }) {
                        apply(&mut durable, p, None);
                    }
                }
            }
            CrashMode::TearLastWrite(n) => {
                let last = pending
                    .iter()
                    .rposition(|op| matches!(op, SimOp::Write { .. }));
                for (i, p) in pending.into_iter().enumerate() {
                    apply(&mut durable, p, (Some(i) == last).then_some(n));
                }
            }
        }
        durable
    }

    /// Arms a one-shot fault (several may be armed; each fires once).
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    fn take_fault(st: &mut SimState, pick: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let i = st.faults.iter().position(pick)?;
        Some(st.faults.remove(i))
    }

    fn change(st: &mut SimState, op: SimOp) {
        apply(&mut st.content, &op, None);
        st.log.push(op);
        st.changes += 1;
    }
}

fn sim_err(op: &'static str, len: u64, offset: u64, errno: i32) -> io::Error {
    op_error(op, len, offset, Path::new("<sim>"), errno)
}

impl FileIo for SimFile {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.lock();
        if let Some(Fault::Read(errno)) = Self::take_fault(&mut st, |f| matches!(f, Fault::Read(_)))
        {
            return Err(sim_err("read", buf.len() as u64, offset, errno));
        }
        let len = st.content.len() as u64;
        if offset >= len {
            return Ok(0);
        }
        let start = offset as usize;
        let n = buf.len().min(st.content.len() - start);
        buf[..n].copy_from_slice(&st.content[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_many(&[(offset, buf)])
    }

    fn write_many(&mut self, writes: &[(u64, &[u8])]) -> io::Result<()> {
        let mut st = self.lock();
        for &(offset, data) in writes {
            if offset
                .checked_add(data.len() as u64)
                .is_none_or(|end| end > MAX_OFFSET)
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "sim write out of range",
                ));
            }
            if data.is_empty() {
                continue;
            }
            if let Some(Fault::Write { errno, landed }) =
                Self::take_fault(&mut st, |f| matches!(f, Fault::Write { .. }))
            {
                let landed = landed.min(data.len());
                if landed > 0 {
                    Self::change(
                        &mut st,
                        SimOp::Write {
                            offset,
                            data: data[..landed].to_vec(),
                        },
                    );
                }
                return Err(sim_err("write", data.len() as u64, offset, errno));
            }
            Self::change(
                &mut st,
                SimOp::Write {
                    offset,
                    data: data.to_vec(),
                },
            );
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut st = self.lock();
        if let Some(Fault::Sync(errno)) = Self::take_fault(&mut st, |f| matches!(f, Fault::Sync(_)))
        {
            return Err(sim_err("fdatasync", 0, 0, errno));
        }
        st.log.push(SimOp::Sync);
        st.syncs += 1;
        Ok(())
    }

    fn len(&mut self) -> io::Result<u64> {
        Ok(self.lock().content.len() as u64)
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        let mut st = self.lock();
        if let Some(Fault::Allocate(errno)) =
            Self::take_fault(&mut st, |f| matches!(f, Fault::Allocate(_)))
        {
            let cur = st.content.len() as u64;
            return Err(sim_err("fallocate", len.saturating_sub(cur), cur, errno));
        }
        if len > MAX_OFFSET {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sim allocate out of range",
            ));
        }
        if len > st.content.len() as u64 {
            Self::change(&mut st, SimOp::SetLen(len));
        }
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut st = self.lock();
        if let Some(Fault::Truncate(errno)) =
            Self::take_fault(&mut st, |f| matches!(f, Fault::Truncate(_)))
        {
            return Err(sim_err("ftruncate", 0, len, errno));
        }
        if len > MAX_OFFSET {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sim truncate out of range",
            ));
        }
        Self::change(&mut st, SimOp::SetLen(len));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_uring() -> (tempfile::TempDir, PathBuf, UringFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = UringFile::open(&path, true).unwrap();
        (dir, path, f)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn uring_write_read_round_trip() {
        let (_d, path, mut f) = tmp_uring();
        let data = pattern(10_000, 1);
        f.write_all_at(&data, 100).unwrap();
        f.sync_data().unwrap();
        assert_eq!(f.len().unwrap(), 10_100);
        let mut buf = vec![0u8; 10_000];
        assert_eq!(f.read_at(&mut buf, 100).unwrap(), 10_000);
        assert_eq!(buf, data);
        // The gap before the write reads as zeros.
        let mut head = [1u8; 100];
        assert_eq!(f.read_at(&mut head, 0).unwrap(), 100);
        assert!(head.iter().all(|&b| b == 0));
        // Seen through std as well.
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[100..], &data[..]);
    }

    #[test]
    fn uring_large_buffers() {
        let (_d, _p, mut f) = tmp_uring();
        let data = pattern(5 << 20, 7);
        f.write_all_at(&data, 4096).unwrap();
        let mut buf = vec![0u8; 5 << 20];
        assert_eq!(f.read_at(&mut buf, 4096).unwrap(), buf.len());
        assert_eq!(buf, data);
    }

    #[test]
    fn uring_write_many_batches() {
        let (_d, path, mut f) = tmp_uring();
        // More writes than ring entries, so they go in several batches.
        let pages: Vec<Vec<u8>> = (0..100).map(|i| pattern(4096, i as u8)).collect();
        let writes: Vec<(u64, &[u8])> = pages
            .iter()
            .enumerate()
            .rev()
            .map(|(i, p)| ((i * 4096) as u64, &p[..]))
            .collect();
        f.write_many(&writes).unwrap();
        f.write_many(&[]).unwrap();
        f.sync_data().unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), 100 * 4096);
        for (i, p) in pages.iter().enumerate() {
            assert_eq!(&on_disk[i * 4096..(i + 1) * 4096], &p[..]);
        }
    }

    #[test]
    fn uring_short_read_at_eof() {
        let (_d, _p, mut f) = tmp_uring();
        f.write_all_at(b"hello world", 0).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(f.read_at(&mut buf, 6).unwrap(), 5);
        assert_eq!(&buf[..5], b"world");
        assert_eq!(f.read_at(&mut buf, 11).unwrap(), 0);
        assert_eq!(f.read_at(&mut buf, 1000).unwrap(), 0);
        assert_eq!(f.read_at(&mut [], 0).unwrap(), 0);
    }

    #[test]
    fn uring_allocate_and_truncate() {
        let (_d, path, mut f) = tmp_uring();
        f.write_all_at(b"abc", 0).unwrap();
        f.allocate(1 << 20).unwrap();
        assert_eq!(f.len().unwrap(), 1 << 20);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        // Never shrinks.
        f.allocate(10).unwrap();
        assert_eq!(f.len().unwrap(), 1 << 20);
        let mut buf = [9u8; 6];
        assert_eq!(f.read_at(&mut buf, 0).unwrap(), 6);
        assert_eq!(&buf, b"abc\0\0\0");
        f.truncate(2).unwrap();
        assert_eq!(f.len().unwrap(), 2);
        assert_eq!(f.read_at(&mut buf, 0).unwrap(), 2);
        assert_eq!(&buf[..2], b"ab");
        f.truncate(5).unwrap();
        assert_eq!(f.len().unwrap(), 5);
    }

    #[test]
    fn uring_errors_are_returned_not_panics() {
        let (_d, path, mut f) = tmp_uring();
        f.write_all_at(b"data", 0).unwrap();
        drop(f);
        // Opened read-only: writes and fallocate fail with EBADF.
        let ro = File::open(&path).unwrap();
        let mut f = UringFile::from_file(ro, &path).unwrap();
        let err = f.write_all_at(b"x", 0).unwrap_err();
        assert_eq!(os_errno(&err), Some(libc::EBADF));
        let msg = err.to_string();
        assert!(msg.contains("write of 1 bytes at 0"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        let err = f.write_many(&[(0, b"a"), (10, b"b")]).unwrap_err();
        assert_eq!(os_errno(&err), Some(libc::EBADF));
        let err = f.allocate(1 << 20).unwrap_err();
        assert_eq!(os_errno(&err), Some(libc::EBADF));
        assert!(err.to_string().contains("fallocate"), "{err}");
        // Reads still work, and the ring is still usable after errors.
        let mut buf = [0u8; 4];
        assert_eq!(f.read_at(&mut buf, 0).unwrap(), 4);
        assert_eq!(&buf, b"data");
        // Write-only: reads fail.
        let wo = OpenOptions::new().write(true).open(&path).unwrap();
        let mut f = UringFile::from_file(wo, &path).unwrap();
        let err = f.read_at(&mut buf, 0).unwrap_err();
        assert_eq!(os_errno(&err), Some(libc::EBADF));
        assert!(err.to_string().contains("read of 4 bytes at 0"), "{err}");
        // Offsets the kernel cannot take.
        let err = f.write_all_at(b"x", u64::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn uring_open_missing_file_without_create() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        let err = UringFile::open(&path, false).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("missing"), "{err}");
        sync_dir(dir.path()).unwrap();
        assert!(sync_dir(&path).is_err());
    }

    #[test]
    fn sim_crash_modes() {
        let f = SimFile::new();
        let mut w = f.clone_handle();
        w.write_all_at(b"AAAA", 0).unwrap();
        w.sync_data().unwrap();
        w.write_all_at(b"BBBB", 4).unwrap();
        w.write_all_at(b"CCCC", 8).unwrap();
        assert_eq!(f.changes(), 3);
        assert_eq!(f.syncs(), 1);
        assert_eq!(f.contents(), b"AAAABBBBCCCC");
        assert_eq!(f.crash(CrashMode::DropUnsynced), b"AAAA");
        assert_eq!(f.crash(CrashMode::KeepUnsynced), b"AAAABBBBCCCC");
        assert_eq!(f.crash(CrashMode::TearLastWrite(2)), b"AAAABBBBCC");
        assert_eq!(f.crash(CrashMode::TearLastWrite(0)), b"AAAABBBB");
        assert_eq!(f.crash(CrashMode::TearLastWrite(100)), b"AAAABBBBCCCC");
        // Crash after the k-th change.
        assert_eq!(f.crash_after(0, CrashMode::KeepUnsynced), b"");
        assert_eq!(f.crash_after(1, CrashMode::DropUnsynced), b"");
        assert_eq!(f.crash_after(1, CrashMode::KeepUnsynced), b"AAAA");
        assert_eq!(f.crash_after(2, CrashMode::DropUnsynced), b"AAAA");
        assert_eq!(f.crash_after(2, CrashMode::TearLastWrite(1)), b"AAAAB");
        // Overwrites and truncation.
        w.sync_data().unwrap();
        w.write_all_at(b"xx", 2).unwrap();
        w.truncate(6).unwrap();
        assert_eq!(f.contents(), b"AAxxBB");
        assert_eq!(f.crash(CrashMode::DropUnsynced), b"AAAABBBBCCCC");
        assert_eq!(f.crash(CrashMode::KeepUnsynced), b"AAxxBB");
        assert_eq!(f.crash(CrashMode::TearLastWrite(1)), b"AAxABB");
        // A restart on the crashed disk.
        let mut again = SimFile::from_bytes(f.crash(CrashMode::DropUnsynced));
        assert_eq!(again.len().unwrap(), 12);
        assert_eq!(again.crash(CrashMode::DropUnsynced), b"AAAABBBBCCCC");
        let mut buf = [0u8; 8];
        assert_eq!(again.read_at(&mut buf, 8).unwrap(), 4);
        assert_eq!(&buf[..4], b"CCCC");
    }

    #[test]
    fn sim_write_many_counts_each_write() {
        let f = SimFile::new();
        let mut w = f.clone_handle();
        w.write_many(&[(0, b"ab"), (4, b"cd"), (2, b"")]).unwrap();
        assert_eq!(f.changes(), 2);
        assert_eq!(f.contents(), b"ab\0\0cd");
        assert_eq!(f.crash_after(1, CrashMode::KeepUnsynced), b"ab");
    }

    #[test]
    fn sim_faults() {
        let f = SimFile::new();
        let mut w = f.clone_handle();
        w.write_all_at(b"1234", 0).unwrap();
        w.sync_data().unwrap();

        f.inject(Fault::Write {
            errno: libc::ENOSPC,
            landed: 2,
        });
        let err = w.write_all_at(b"5678", 4).unwrap_err();
        assert_eq!(os_errno(&err), Some(libc::ENOSPC));
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(f.contents(), b"123456");
        w.write_all_at(b"5678", 4).unwrap(); // one-shot
        assert_eq!(f.contents(), b"12345678");

        f.inject(Fault::Sync(libc::EIO));
        let err = w.sync_data().unwrap_err();
        assert_eq!(os_errno(&err), Some(libc::EIO));
        assert_eq!(f.crash(CrashMode::DropUnsynced), b"1234");
        w.sync_data().unwrap();
        assert_eq!(f.crash(CrashMode::DropUnsynced), b"12345678");

        f.inject(Fault::Allocate(libc::ENOSPC));
        assert_eq!(os_errno(&w.allocate(100).unwrap_err()), Some(libc::ENOSPC));
        assert_eq!(w.len().unwrap(), 8);
        w.allocate(100).unwrap();
        assert_eq!(w.len().unwrap(), 100);

        f.inject(Fault::Truncate(libc::EIO));
        assert!(w.truncate(8).is_err());
        assert_eq!(w.len().unwrap(), 100);

        f.inject(Fault::Read(libc::EIO));
        let mut buf = [0u8; 4];
        assert!(w.read_at(&mut buf, 0).is_err());
        assert_eq!(w.read_at(&mut buf, 0).unwrap(), 4);
    }
}
