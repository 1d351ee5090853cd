//! A whole file in memory, in pages the kernel may back with huge pages.
//!
//! A CSV source of a million rows is a hundred megabytes, read at once (the
//! reader needs the whole text: its line numbers, its UTF-8 check, whether
//! it was cut short). Read into a `Vec`, each 4 KiB page of it is a page
//! fault when first written, and in a VM a fault costs microseconds: 80 to
//! 150 ms for 106 MiB, as long as parsing a fifth of the file. A large
//! file goes into an anonymous mapping advised `MADV_HUGEPAGE` instead,
//! which faults 2 MiB at a time where the kernel's transparent huge pages
//! allow it (`madvise` or `always`); where they do not, it is an ordinary
//! mapping, no slower than the `Vec`. Small files go into a `Vec`.

use std::io::{self, Read};
use std::ops::Deref;

/// Files smaller than this are read into a `Vec`: a mapping of their own
/// would save no faults worth a system call.
pub const MAPPED_FROM: u64 = 4 << 20;

/// The bytes of a file, read to its end.
pub struct WholeFile {
    storage: Storage,
}

enum Storage {
    Heap(Vec<u8>),
    /// A mapping sized for the file, of which the first `len` bytes were read.
    Mapped {
        map: memmap2::MmapMut,
        len: usize,
    },
}

impl WholeFile {
    fn heap(bytes: Vec<u8>) -> WholeFile {
        WholeFile {
            storage: Storage::Heap(bytes),
        }
    }
}

impl Deref for WholeFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.storage {
            Storage::Heap(v) => v,
            Storage::Mapped { map, len } => map.get(..*len).unwrap_or(map),
        }
    }
}

/// Reads `file` to its end; `expected` is its size (as its metadata gave
/// it), which only sizes the buffer: a file that grew is read whole too.
pub fn read_to_end(file: &mut impl Read, expected: u64) -> io::Result<WholeFile> {
    let capacity = usize::try_from(expected)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    if expected < MAPPED_FROM {
        let mut bytes = Vec::with_capacity(capacity);
        file.read_to_end(&mut bytes)?;
        return Ok(WholeFile::heap(bytes));
    }
    let mut map = memmap2::MmapMut::map_anon(capacity)?;
    // Only advice: refused (no transparent huge pages), the mapping works
    // as it is.
    let _ = map.advise(memmap2::Advice::HugePage);
    let mut len = 0;
    while len < map.len() {
        match file.read(&mut map[len..]) {
            Ok(0) => {
                return Ok(WholeFile {
                    storage: Storage::Mapped { map, len },
                })
            }
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // The file grew past its size while it was read (the caller sees the
    // sizes differ): the rest goes after what was read, on the heap.
    let mut bytes = map.to_vec();
    file.read_to_end(&mut bytes)?;
    Ok(WholeFile::heap(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_large_file_is_read_whole_into_its_mapping_and_a_small_one_into_the_heap() {
        for len in [
            0,
            10,
            MAPPED_FROM as usize - 1,
            MAPPED_FROM as usize + 12_345,
        ] {
            let bytes = content(len);
            let read = read_to_end(&mut bytes.as_slice(), len as u64).unwrap();
            assert_eq!(&read[..], &bytes[..], "{len}");
            let mapped = matches!(read.storage, Storage::Mapped { .. });
            assert_eq!(mapped, len as u64 >= MAPPED_FROM, "{len}");
        }
    }

    #[test]
    fn a_file_that_grew_or_shrank_since_its_size_was_taken_is_read_whole() {
        let bytes = content(MAPPED_FROM as usize * 2);
        for expected in [MAPPED_FROM, MAPPED_FROM + 1, MAPPED_FROM * 3] {
            let read = read_to_end(&mut bytes.as_slice(), expected).unwrap();
            assert_eq!(read.len(), bytes.len(), "{expected}");
            assert!(read[..] == bytes[..], "{expected}");
        }
    }

    /// A reader that hands out a few bytes at a time, and is interrupted
    /// between.
    struct Trickle<'a> {
        bytes: &'a [u8],
        interrupt: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.bytes.len()).min(1 << 16);
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_and_interrupted_reads_are_read_on() {
        let bytes = content(MAPPED_FROM as usize + 100_000);
        let mut trickle = Trickle {
            bytes: &bytes,
            interrupt: false,
        };
        let read = read_to_end(&mut trickle, bytes.len() as u64).unwrap();
        assert!(read[..] == bytes[..]);
    }
}
