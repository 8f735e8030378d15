//! Tar headers written by hand, so that every byte is decided here.
//!
//! Entries are ustar; a PAX extended header (`x`) precedes an entry whose
//! path or link target is longer than the ustar field or not plain ASCII,
//! or whose owner or size does not fit the octal fields. User and group
//! names are empty, device numbers zero.

use std::io::{self, Write};

/// Size of a tar block.
pub(crate) const BLOCK: usize = 512;

/// What a tar entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryType {
    /// A regular file followed by its contents.
    File,
    /// A hard link to an earlier entry (`link` holds its path).
    HardLink,
    /// A symbolic link (`link` holds the target).
    Symlink,
    /// A directory; the path gets a trailing `/`.
    Directory,
}

impl EntryType {
    fn flag(self) -> u8 {
        match self {
            Self::File => b'0',
            Self::HardLink => b'1',
            Self::Symlink => b'2',
            Self::Directory => b'5',
        }
    }
}

/// Everything a header records.
#[derive(Debug, Clone)]
pub(crate) struct Header<'a> {
    /// Path inside the image, relative (no leading `/`), no trailing `/`.
    pub path: &'a str,
    /// Entry type.
    pub kind: EntryType,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Contents length (files only).
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: u64,
    /// Link target (hard and symbolic links).
    pub link: &'a str,
}

const NAME_LEN: usize = 100;
const OCTAL7_MAX: u64 = 0o777_7777;
const OCTAL11_MAX: u64 = 0o777_7777_7777;

/// Write the header block(s) of `h`: a PAX header first when needed.
pub(crate) fn write_header(w: &mut dyn Write, h: &Header<'_>) -> io::Result<()> {
    let mut name = h.path.to_owned();
    if h.kind == EntryType::Directory {
        name.push('/');
    }
    let mut pax = Vec::new();
    if needs_pax(&name) {
        pax_record(&mut pax, "path", &name);
    }
    if needs_pax(h.link) {
        pax_record(&mut pax, "linkpath", h.link);
    }
    if u64::from(h.uid) > OCTAL7_MAX {
        pax_record(&mut pax, "uid", &h.uid.to_string());
    }
    if u64::from(h.gid) > OCTAL7_MAX {
        pax_record(&mut pax, "gid", &h.gid.to_string());
    }
    if h.size > OCTAL11_MAX {
        pax_record(&mut pax, "size", &h.size.to_string());
    }
    if !pax.is_empty() {
        let block = ustar_block(
            &Header {
                path: "././@PaxHeader",
                kind: EntryType::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: pax.len() as u64,
                mtime: h.mtime,
                link: "",
            },
            "././@PaxHeader",
            b'x',
        );
        w.write_all(&block)?;
        w.write_all(&pax)?;
        write_padding(w, pax.len() as u64)?;
    }
    w.write_all(&ustar_block(h, &name, h.kind.flag()))
}

/// Zero bytes after `size` bytes of contents, up to the next block.
pub(crate) fn write_padding(w: &mut dyn Write, size: u64) -> io::Result<()> {
    let rem = (size % BLOCK as u64) as usize;
    if rem != 0 {
        w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

/// The end-of-archive marker: two zero blocks.
pub(crate) fn write_end(w: &mut dyn Write) -> io::Result<()> {
    w.write_all(&[0u8; 2 * BLOCK])
}

fn needs_pax(s: &str) -> bool {
    s.len() > NAME_LEN || !s.is_ascii()
}

/// One `"<len> <key>=<value>\n"` record, where `<len>` counts the whole
/// record including its own digits.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &str) {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}={value}\n").as_bytes());
}

/// A field value that fits, for the ustar fallback when PAX carries the
/// real one: plain ASCII, at most `max` bytes.
fn ascii_prefix(s: &str, max: usize) -> Vec<u8> {
    s.bytes()
        .map(|b| if b.is_ascii() && b != 0 { b } else { b'_' })
        .take(max)
        .collect()
}

fn ustar_block(h: &Header<'_>, name: &str, flag: u8) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    put(&mut b[0..100], &ascii_prefix(name, NAME_LEN));
    octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    octal(&mut b[108..116], u64::from(h.uid).min(OCTAL7_MAX));
    octal(&mut b[116..124], u64::from(h.gid).min(OCTAL7_MAX));
    octal(&mut b[124..136], h.size.min(OCTAL11_MAX));
    octal(&mut b[136..148], h.mtime.min(OCTAL11_MAX));
    b[156] = flag;
    put(&mut b[157..257], &ascii_prefix(h.link, NAME_LEN));
    put(&mut b[257..263], b"ustar\0");
    put(&mut b[263..265], b"00");
    octal(&mut b[329..337], 0);
    octal(&mut b[337..345], 0);
    // The checksum is computed with its own field as eight spaces.
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let digits = format!("{sum:06o}");
    put(&mut b[148..154], digits.as_bytes());
    b[154] = 0;
    b[155] = b' ';
    b
}

fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal filling the field but its last byte, then NUL.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    put(field, digits.as_bytes());
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(path: &'a str, kind: EntryType, size: u64, link: &'a str) -> Header<'a> {
        Header {
            path,
            kind,
            mode: 0o755,
            uid: 1000,
            gid: 1000,
            size,
            mtime: 315_532_800,
            link,
        }
    }

    fn read_back(bytes: &[u8]) -> Vec<(String, u8, u64, String, u64)> {
        let mut a = tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8(e.path_bytes().to_vec()).unwrap(),
                    h.entry_type().as_byte(),
                    h.uid().unwrap(),
                    e.link_name_bytes()
                        .map(|l| String::from_utf8(l.to_vec()).unwrap())
                        .unwrap_or_default(),
                    h.mtime().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut out = Vec::new();
        pax_record(&mut out, "path", "a");
        assert_eq!(out, b"9 path=a\n");
        let mut out = Vec::new();
        let v = "x".repeat(93);
        pax_record(&mut out, "path", &v);
        // 93 + 4 + 3 = 100 bytes before the length; 3 digits make 103.
        assert_eq!(out.len(), 103);
        assert!(out.starts_with(b"103 path="));
    }

    #[test]
    fn long_and_non_ascii_names_round_trip_through_the_tar_crate() {
        let long = format!("node_modules/{}/index.js", "deep/".repeat(60));
        let mut out = Vec::new();
        for h in [
            header("app", EntryType::Directory, 0, ""),
            header("app/über.txt", EntryType::File, 0, ""),
            header(&long, EntryType::File, 0, ""),
            header("app/link", EntryType::Symlink, 0, &long),
            header("app/hard", EntryType::HardLink, 0, "app/über.txt"),
        ] {
            write_header(&mut out, &h).unwrap();
        }
        write_end(&mut out).unwrap();
        let entries = read_back(&out);
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[0].0, "app/");
        assert_eq!(entries[1].0, "app/über.txt");
        assert_eq!(entries[2].0, long);
        assert_eq!(entries[3].3, long);
        assert_eq!(entries[4].1, b'1');
        assert_eq!(entries[4].3, "app/über.txt");
        assert!(entries.iter().all(|e| e.2 == 1000 && e.4 == 315_532_800));
    }

    #[test]
    fn short_ascii_names_need_no_pax() {
        let mut out = Vec::new();
        write_header(&mut out, &header("a/b.txt", EntryType::File, 0, "")).unwrap();
        assert_eq!(out.len(), BLOCK);
        assert_eq!(&out[257..265], b"ustar\x0000");
        // Empty user and group names.
        assert!(out[265..329].iter().all(|&b| b == 0));
    }

    #[test]
    fn big_ids_go_to_pax() {
        let mut h = header("f", EntryType::File, 0, "");
        h.uid = 3_000_000;
        let mut out = Vec::new();
        write_header(&mut out, &h).unwrap();
        write_end(&mut out).unwrap();
        assert_eq!(read_back(&out)[0].2, 3_000_000);
    }
}
