//! Deterministic gzip, optionally compressed on several threads.
//!
//! The uncompressed stream is cut into fixed [`CHUNK_SIZE`] chunks. Each chunk
//! is deflated on its own (level [`LEVEL`], primed with the last 32 KiB of the
//! previous chunk as a preset dictionary, the way pigz does) and ends with a
//! sync flush, so it ends on a byte boundary and the chunks can simply be
//! concatenated; one empty final block, the CRC-32 and the length close the
//! member. Chunk boundaries depend only on the input, never on the thread
//! count, so the bytes are identical whether one thread or many compressed
//! them.
//!
//! The header is fixed: no file name, modification time 0, OS byte 255
//! ("unknown"). The deflate implementation is flate2's `zlib-rs` backend,
//! pinned in the workspace: another backend would produce other (valid) bytes
//! and so other layer digests.
//!
//! Both digests of a layer come out of the same pass: `diff_id` over the
//! uncompressed bytes, `digest` over the compressed ones. At most a fixed
//! number of chunks is in flight, so memory stays bounded whatever the size.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, Crc, FlushCompress};

use crate::digest::{Digest, DigestWriter};

/// Size of the uncompressed chunks that are deflated independently.
pub const CHUNK_SIZE: usize = 1 << 20;

/// The deflate level every layer is compressed with.
pub const LEVEL: u32 = 6;

/// How much of the previous chunk primes the next one (deflate's window).
const DICTIONARY_SIZE: usize = 32 * 1024;

/// gzip member header: magic, deflate, no flags, mtime 0, no extra flags,
/// OS 255 (unknown).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// An empty fixed-Huffman block with BFINAL set: ends the deflate stream.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// What one compression pass produced besides the bytes themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compressed {
    /// sha256 of the uncompressed stream (a layer's `diff_id`).
    pub diff_id: Digest,
    /// Length of the uncompressed stream in bytes.
    pub uncompressed_size: u64,
    /// sha256 of the gzip bytes (a layer's `digest`).
    pub digest: Digest,
    /// Length of the gzip bytes.
    pub size: u64,
}

/// Compress everything `produce` writes into `sink` as one deterministic gzip
/// member, using `threads` compression threads (0 or 1: the calling thread
/// only). Returns the sink and the digests.
///
/// # Errors
/// Whatever `produce` returns, or the sink's write errors converted into `E`.
pub fn compress<W, E, F>(sink: W, threads: usize, produce: F) -> Result<(W, Compressed), E>
where
    W: Write + Send,
    E: From<io::Error>,
    F: FnOnce(&mut dyn Write) -> Result<(), E>,
{
    if threads <= 1 {
        compress_inline(sink, produce)
    } else {
        compress_parallel(sink, threads, produce)
    }
}

/// Convenience for tests and small inputs: gzip `data` in memory.
#[must_use]
pub fn compress_bytes(data: &[u8], threads: usize) -> (Vec<u8>, Compressed) {
    let result: io::Result<_> = compress(Vec::new(), threads, |w| w.write_all(data));
    match result {
        Ok(out) => out,
        // Writing into a Vec cannot fail.
        Err(e) => unreachable!("in-memory gzip failed: {e}"),
    }
}

/// Raw deflate of `data`, primed with `dictionary`, ending in a sync flush.
/// Appends to `out` and returns the CRC-32 of `data`.
///
/// A fresh compressor every time: after `reset`, a zlib-rs 0.6 compressor
/// fed several chunks with preset dictionaries produces different (valid)
/// bytes than a new one, which would make the output depend on which chunks
/// a thread happened to compress before.
fn deflate(dictionary: &[u8], data: &[u8], out: &mut Vec<u8>) -> io::Result<Crc> {
    let mut c = Compress::new(Compression::new(LEVEL), false);
    if !dictionary.is_empty() {
        c.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    // Room for incompressible input plus block overhead, so that one call
    // normally finishes; the loop covers the rare case where it does not.
    out.reserve(data.len() + data.len() / 8 + 1024);
    loop {
        let consumed = usize::try_from(c.total_in()).map_err(io::Error::other)?;
        if out.capacity() - out.len() < 64 {
            out.reserve(data.len() / 4 + 4096);
        }
        c.compress_vec(&data[consumed..], out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        let consumed = usize::try_from(c.total_in()).map_err(io::Error::other)?;
        // Input used up and space left over: the flush is complete.
        if consumed == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    let mut crc = Crc::new();
    crc.update(data);
    Ok(crc)
}

/// Writes the member in order: header, chunks, final block, trailer; hashes
/// both streams on the way.
struct OrderedOutput<W> {
    sink: W,
    uncompressed: DigestWriter,
    compressed: DigestWriter,
    crc: Crc,
}

impl<W: Write> OrderedOutput<W> {
    fn new(sink: W) -> io::Result<Self> {
        let mut out = Self {
            sink,
            uncompressed: DigestWriter::new(),
            compressed: DigestWriter::new(),
            crc: Crc::new(),
        };
        out.emit(&HEADER)?;
        Ok(out)
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.compressed.update(bytes);
        self.sink.write_all(bytes)
    }

    fn chunk(&mut self, data: &[u8], deflated: &[u8], crc: &Crc) -> io::Result<()> {
        self.uncompressed.update(data);
        self.crc.combine(crc);
        self.emit(deflated)
    }

    fn finish(mut self) -> io::Result<(W, Compressed)> {
        self.emit(&FINAL_BLOCK)?;
        let size_mod_32 = (self.uncompressed.len() & 0xffff_ffff) as u32;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&size_mod_32.to_le_bytes());
        self.emit(&trailer)?;
        self.sink.flush()?;
        let (diff_id, uncompressed_size) = self.uncompressed.finish();
        let (digest, size) = self.compressed.finish();
        Ok((
            self.sink,
            Compressed {
                diff_id,
                uncompressed_size,
                digest,
                size,
            },
        ))
    }
}

/// Collects written bytes into chunks and hands each full chunk (with the
/// dictionary taken from the previous one) to `dispatch`, which returns an
/// empty buffer for the next chunk.
struct Chunker<D> {
    buf: Vec<u8>,
    dictionary: Vec<u8>,
    dispatch: D,
}

impl<D> Chunker<D>
where
    D: FnMut(Vec<u8>, Vec<u8>) -> io::Result<Vec<u8>>,
{
    fn new(buf: Vec<u8>, dispatch: D) -> Self {
        Self {
            buf,
            dictionary: Vec::new(),
            dispatch,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::take(&mut self.buf);
        let tail_start = full.len().saturating_sub(DICTIONARY_SIZE);
        let next_dictionary = full[tail_start..].to_vec();
        let dictionary = std::mem::replace(&mut self.dictionary, next_dictionary);
        self.buf = (self.dispatch)(full, dictionary)?;
        self.buf.clear();
        Ok(())
    }

    /// Send the last, partial chunk.
    fn finish(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

impl<D> Write for Chunker<D>
where
    D: FnMut(Vec<u8>, Vec<u8>) -> io::Result<Vec<u8>>,
{
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK_SIZE - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_SIZE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn compress_inline<W, E, F>(sink: W, produce: F) -> Result<(W, Compressed), E>
where
    W: Write,
    E: From<io::Error>,
    F: FnOnce(&mut dyn Write) -> Result<(), E>,
{
    let mut output = OrderedOutput::new(sink)?;
    let mut deflated = Vec::new();
    let mut chunker = Chunker::new(
        Vec::with_capacity(CHUNK_SIZE),
        |data: Vec<u8>, dictionary: Vec<u8>| {
            deflated.clear();
            let crc = deflate(&dictionary, &data, &mut deflated)?;
            output.chunk(&data, &deflated, &crc)?;
            Ok(data)
        },
    );
    produce(&mut chunker)?;
    chunker.finish()?;
    Ok(output.finish()?)
}

/// A chunk on its way to a compression thread.
struct Job {
    seq: u64,
    dictionary: Vec<u8>,
    data: Vec<u8>,
}

/// A compressed chunk on its way to the writer.
struct Done {
    seq: u64,
    data: Vec<u8>,
    deflated: io::Result<(Vec<u8>, Crc)>,
}

fn compress_parallel<W, E, F>(sink: W, threads: usize, produce: F) -> Result<(W, Compressed), E>
where
    W: Write + Send,
    E: From<io::Error>,
    F: FnOnce(&mut dyn Write) -> Result<(), E>,
{
    // Buffers circulate producer → worker → writer → producer; their number
    // bounds the memory in flight (about 2 × CHUNK_SIZE each, with output).
    let in_flight = threads * 2 + 2;
    let (pool_tx, pool_rx) = sync_channel::<Vec<u8>>(in_flight);
    for _ in 0..in_flight {
        pool_tx
            .send(Vec::with_capacity(CHUNK_SIZE))
            .map_err(|_| io::Error::other("compression buffer pool closed"))?;
    }
    let (job_tx, job_rx) = sync_channel::<Job>(threads);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = sync_channel::<Done>(in_flight);

    std::thread::scope(|scope| {
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            scope.spawn(move || compression_worker(&job_rx, &done_tx));
        }
        drop(done_tx);
        let writer = scope.spawn(move || write_in_order(sink, &done_rx, &pool_tx));

        let first = pool_rx
            .recv()
            .map_err(|_| io::Error::other("compression buffer pool closed"))?;
        let mut seq = 0u64;
        // The chunker owns the job sender: once it is gone the workers drain
        // the queue and stop, and the writer ends after the last chunk.
        let mut chunker = Chunker::new(first, move |data: Vec<u8>, dictionary: Vec<u8>| {
            job_tx
                .send(Job {
                    seq,
                    dictionary,
                    data,
                })
                .map_err(|_| io::Error::other("gzip writer stopped"))?;
            seq += 1;
            pool_rx
                .recv()
                .map_err(|_| io::Error::other("gzip writer stopped"))
        });
        let produced = produce(&mut chunker).and_then(move |()| Ok(chunker.finish()?));
        let written = match writer.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        // A writer error explains a producer's "writer stopped"; report it first.
        let output = written?;
        produced?;
        Ok(output.finish()?)
    })
}

fn compression_worker(jobs: &Mutex<Receiver<Job>>, done: &SyncSender<Done>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let mut out = Vec::new();
        let deflated = deflate(&job.dictionary, &job.data, &mut out).map(|crc| (out, crc));
        let sent = done.send(Done {
            seq: job.seq,
            data: job.data,
            deflated,
        });
        if sent.is_err() {
            return;
        }
    }
}

/// Receives compressed chunks in any order and writes them in sequence.
/// Returns the output not yet finished: the caller closes it only once it
/// knows the producer succeeded.
fn write_in_order<W: Write>(
    sink: W,
    done: &Receiver<Done>,
    pool: &SyncSender<Vec<u8>>,
) -> io::Result<OrderedOutput<W>> {
    let mut output = OrderedOutput::new(sink)?;
    let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next = 0u64;
    for chunk in done {
        pending.insert(chunk.seq, chunk);
        while let Some(chunk) = pending.remove(&next) {
            let (deflated, crc) = chunk.deflated?;
            output.chunk(&chunk.data, &deflated, &crc)?;
            // The producer may already be gone (error path): then the buffer
            // is simply dropped.
            let _ = pool.send(chunk.data);
            next += 1;
        }
    }
    if !pending.is_empty() {
        return Err(io::Error::other("a compression thread lost a chunk"));
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Semi-compressible, deterministic test data.
    fn sample(len: usize) -> Vec<u8> {
        let words = [
            "broker ",
            "mqtt ",
            "ttn ",
            "formatter ",
            "payload\n",
            "{\"x\": 1} ",
        ];
        let mut out = Vec::with_capacity(len);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let w = words[(state % words.len() as u64) as usize];
            out.extend_from_slice(w.as_bytes());
            if state.is_multiple_of(11) {
                out.extend_from_slice(&state.to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn output_is_identical_for_any_thread_count() {
        for len in [
            0,
            1,
            1000,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            5 * CHUNK_SIZE + 12345,
        ] {
            let data = sample(len);
            let (one, summary) = compress_bytes(&data, 1);
            for threads in [2, 3, 8] {
                let (many, s) = compress_bytes(&data, threads);
                assert!(one == many, "{threads} threads differ at len {len}");
                assert_eq!(s, summary);
            }
            assert_eq!(gunzip(&one), data, "round trip at len {len}");
            assert_eq!(summary.diff_id, Digest::of(&data));
            assert_eq!(summary.digest, Digest::of(&one));
            assert_eq!(summary.size, one.len() as u64);
            assert_eq!(summary.uncompressed_size, len as u64);
        }
    }

    #[test]
    fn header_has_no_name_no_mtime_and_a_fixed_os_byte() {
        let (gz, _) = compress_bytes(b"hello", 1);
        assert_eq!(gz[..10], HEADER);
        assert_eq!(gz[9], 255);
    }

    #[test]
    fn gnu_gzip_accepts_the_output() {
        let data = sample(3 * CHUNK_SIZE + 7);
        let (gz, _) = compress_bytes(&data, 2);
        let mut child = std::process::Command::new("gzip")
            .args(["-d", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || stdin.write_all(&gz).unwrap());
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        assert!(out.status.success());
        assert!(out.stdout == data);
    }

    /// Pins the bytes: a change of backend, level, chunking or header shows
    /// up here before it changes every layer digest in the field.
    #[test]
    fn known_digests_pin_the_compressor() {
        let data = sample(2 * CHUNK_SIZE + 100);
        let (_, s) = compress_bytes(&data, 2);
        assert_eq!(
            s.diff_id.to_string(),
            "sha256:7307ba0e525dab983aa546c99e9571b16b33ff8b0dbbb6fb470370af7e3519ab"
        );
        assert_eq!(
            s.digest.to_string(),
            "sha256:358689c3c0a405e85c71ebbe62faaba2e4f162c578bd50fa898c042cb42486cf"
        );
    }

    #[test]
    fn producer_errors_come_back_and_stop_the_pipeline() {
        for threads in [1, 2] {
            let result: io::Result<_> = compress(Vec::new(), threads, |w| {
                w.write_all(&sample(3 * CHUNK_SIZE))?;
                Err(io::Error::other("boom"))
            });
            assert_eq!(result.unwrap_err().to_string(), "boom");
        }
    }

    #[test]
    fn sink_errors_come_back() {
        struct Failing;
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        for threads in [1, 2] {
            let result: io::Result<_> =
                compress(Failing, threads, |w| w.write_all(&sample(4 * CHUNK_SIZE)));
            assert_eq!(result.err().unwrap().to_string(), "disk full");
        }
    }
}
