//! Deterministic source layers: a source tree becomes a gzip'd tar whose bytes
//! depend only on the files' contents, names and the mapping — never on the
//! machine, the checkout path, mtimes, umask or the order the tree was walked.
//!
//! The conventions (see the design notes) are: entries sorted bytewise by
//! full path, parents before children; every mtime is the
//! [`SourceDateEpoch`]; owner from the mapping, empty user and group names;
//! modes normalised to 0755 for directories and executables, 0644 for other
//! files, 0777 for symlinks; PAX headers for long or non-ASCII names; hard
//! links point at the first occurrence; symlinks only when they stay inside
//! the tree; no devices, sockets or fifos.
//!
//! # Directories above the target
//!
//! The layer emits the target directory and every directory above it. A
//! directory above the target that the base image already has must keep the
//! base's owner and mode, so the caller lists those in
//! [`LayerMapping::parents`] (see `base::dir_metadata` to read them
//! from the base's layers) and the layer emits them with exactly that
//! metadata. Leaving them out of the tar is not enough: Docker's overlay2
//! driver unpacks each layer into its own directory and creates a missing
//! parent as root 0755 there, and the upper directory's owner is what the
//! container sees — the very "parent directories reset to root" bug Jib had.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::archive::{self, EntryType, Header};
use crate::cache;
use crate::gzip::{self, Compressed};
use crate::source_layer::{FileStat, Kind, Plan};
use crate::store::Store;
use crate::walk::scan;

pub use crate::source_layer::{
    BuildLayerError, LayerMapping, LayerOptions, ParentDir, SourceLayer,
};

/// Build the layer for `mapping` into the store, or take it from the cache
/// when an identical tree was built before.
///
/// # Errors
/// See [`BuildLayerError`]; on error no blob is added to the store.
pub fn build_layer(
    store: &Store,
    mapping: &LayerMapping,
    options: &LayerOptions,
) -> Result<SourceLayer, BuildLayerError> {
    let plan = scan(mapping)?;
    if !options.use_cache {
        return write_to_store(store, mapping, &plan, options.threads);
    }
    let mut hashes = cache::FileHashes::load(store, &mapping.source);
    let contents = hashes.hash_all(&plan, options.threads)?;
    let key = cache::layer_key(&plan, &contents);
    if let Some(hit) = cache::lookup(store, &key) {
        hashes.save(store)?;
        return Ok(SourceLayer {
            digest: hit.digest,
            diff_id: hit.diff_id,
            size: hit.size,
            uncompressed_size: hit.uncompressed_size,
            target: mapping.target.clone(),
            entries: plan.entries.len(),
            from_cache: true,
        });
    }
    let layer = write_to_store(store, mapping, &plan, options.threads)?;
    cache::record(store, &key, &layer)?;
    hashes.save(store)?;
    Ok(layer)
}

/// Write the layer for `mapping` as gzip into `sink` (no store, no cache).
///
/// # Errors
/// See [`BuildLayerError`].
pub fn write_layer<W: Write + Send>(
    mapping: &LayerMapping,
    sink: W,
    threads: usize,
) -> Result<(W, Compressed), BuildLayerError> {
    let plan = scan(mapping)?;
    write_plan(&plan, sink, threads, Path::new("<output>"))
}

fn write_to_store(
    store: &Store,
    mapping: &LayerMapping,
    plan: &Plan,
    threads: usize,
) -> Result<SourceLayer, BuildLayerError> {
    let blob = store.blob_writer()?;
    let temp = blob.temp_path().to_path_buf();
    let (blob, c) = write_plan(plan, blob, threads, &temp)?;
    let (digest, size) = blob.finish()?;
    debug_assert_eq!(digest, c.digest);
    Ok(SourceLayer {
        digest,
        diff_id: c.diff_id,
        size,
        uncompressed_size: c.uncompressed_size,
        target: mapping.target.clone(),
        entries: plan.entries.len(),
        from_cache: false,
    })
}

/// Errors inside the compression pipeline: the layer's own, or the sink's.
enum Produce {
    Layer(BuildLayerError),
    Io(io::Error),
}

impl From<io::Error> for Produce {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn write_plan<W: Write + Send>(
    plan: &Plan,
    sink: W,
    threads: usize,
    sink_path: &Path,
) -> Result<(W, Compressed), BuildLayerError> {
    gzip::compress(sink, threads, |w| write_tar(plan, w)).map_err(|e| match e {
        Produce::Layer(e) => e,
        Produce::Io(source) => BuildLayerError::Write {
            path: sink_path.to_path_buf(),
            source,
        },
    })
}

fn write_tar(plan: &Plan, w: &mut dyn Write) -> Result<(), Produce> {
    let mut buf = vec![0u8; 256 * 1024];
    let mtime = plan.epoch.seconds();
    for e in &plan.entries {
        let (kind, link) = match &e.kind {
            Kind::Dir => (EntryType::Directory, ""),
            Kind::File => (EntryType::File, ""),
            Kind::Symlink(t) => (EntryType::Symlink, t.as_str()),
            Kind::HardLink(t) => (EntryType::HardLink, t.as_str()),
        };
        let size = e.size();
        archive::write_header(
            w,
            &Header {
                path: &e.tar_path,
                kind,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                size,
                mtime,
                link,
            },
        )?;
        if let (Kind::File, Some((path, stat))) = (&e.kind, &e.source) {
            copy_file(path, stat, w, &mut buf)?;
            archive::write_padding(w, size)?;
        }
    }
    archive::write_end(w)?;
    Ok(())
}

/// Copy exactly `stat.size` bytes of `path` into `w`, failing if the file is
/// not what the walk saw.
fn copy_file(
    path: &Path,
    stat: &FileStat,
    w: &mut dyn Write,
    buf: &mut [u8],
) -> Result<(), Produce> {
    let unreadable = |source| {
        Produce::Layer(BuildLayerError::Unreadable {
            path: path.to_path_buf(),
            source,
        })
    };
    let changed = || {
        Produce::Layer(BuildLayerError::ChangedWhileBuilding {
            path: path.to_path_buf(),
        })
    };
    let mut f = File::open(path).map_err(unreadable)?;
    let mut left = stat.size;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = match f.read(&mut buf[..want]) {
            Ok(0) => return Err(changed()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(unreadable(e)),
        };
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let after = f.metadata().map_err(unreadable)?;
    let now = FileStat::of(&after);
    if now.size != stat.size || now.mtime_ns != stat.mtime_ns || now.ctime_ns != stat.ctime_ns {
        return Err(changed());
    }
    Ok(())
}
