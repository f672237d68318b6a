//! zstd, through ruzstd (pure Rust: nothing to compile for another platform). Its compressor reads a
//! source and writes a drain, and ends on the first I/O error it meets by panicking; here it never
//! meets one: both ends are wrapped to keep the first error aside and go on (`Sticky`), and the error
//! is returned once it is done.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use ruzstd::decoding::StreamingDecoder;
use ruzstd::encoding::{CompressionLevel, compress};

/// The archive's compressed stream, read.
pub(super) type Decoder = StreamingDecoder<io::BufReader<File>, ruzstd::decoding::FrameDecoder>;

/// Opens `file` as a zstd stream; the error says why it is not one.
pub(super) fn decoder(file: File) -> Result<Decoder, String> {
    StreamingDecoder::new(io::BufReader::new(file)).map_err(|e| e.to_string())
}

/// Writes into `file` the zstd frame of what `fill` writes; the file, synced, once both are done.
/// `fill` writes into a pipe that a thread of its own compresses from.
pub(super) fn compressed<E>(
    file: File,
    fill: impl FnOnce(&mut io::PipeWriter) -> Result<(), E>,
) -> Result<Result<File, io::Error>, E> {
    let (reader, mut writer) = match io::pipe() {
        Ok(pipe) => pipe,
        Err(e) => return Ok(Err(e)),
    };
    let compressing = std::thread::spawn(move || {
        let mut source = Sticky::new(reader);
        let mut drain = Sticky::new(BufWriter::new(file));
        // Fastest (zstd's level 1) is the level ruzstd implements beside "none".
        compress(&mut source, &mut drain, CompressionLevel::Fastest);
        let _ = drain.flush();
        let error = source.error.or(drain.error);
        match (error, drain.inner.into_inner()) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e.into_error()),
            (None, Ok(file)) => file.sync_all().map(|()| file),
        }
    });
    let filled = fill(&mut writer);
    // The end of the pipe is the end of the stream: the compressor finishes its frame.
    drop(writer);
    let file = compressing
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the compressor stopped")));
    filled.map(|()| file)
}

/// A reader or writer that keeps its first error and then acts as at the end (reads nothing, writes
/// everything), so the compressor finishes instead of panicking.
struct Sticky<T> {
    inner: T,
    error: Option<io::Error>,
}

impl<T> Sticky<T> {
    fn new(inner: T) -> Sticky<T> {
        Sticky { inner, error: None }
    }
}

impl<R: Read> Read for Sticky<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Ok(0);
        }
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.error = Some(e);
                    return Ok(0);
                }
                Ok(n) => return Ok(n),
            }
        }
    }
}

impl<W: Write> Write for Sticky<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.error.is_none()
            && let Err(e) = self.inner.write_all(buf)
        {
            self.error = Some(e);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.error.is_none()
            && let Err(e) = self.inner.flush()
        {
            self.error = Some(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_compressed_reads_back() {
        let dir = crate::run::test_dir::TestDir::fresh("zstd-round-trip");
        let path = dir.0.join("x.zst");
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let file = File::create(&path).unwrap();
        compressed::<io::Error>(file, |w| w.write_all(&data))
            .unwrap()
            .unwrap();
        let mut back = Vec::new();
        decoder(File::open(&path).unwrap())
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        assert!(std::fs::metadata(&path).unwrap().len() < data.len() as u64 / 4);
    }

    #[test]
    fn a_drain_that_fails_is_an_error_not_a_panic() {
        // /dev/full: every write fails with ENOSPC, as on a full disk.
        let Ok(file) = File::options().write(true).open("/dev/full") else {
            return;
        };
        let data = vec![7u8; 1 << 20];
        let result = compressed::<io::Error>(file, |w| {
            // The pipe's reader may already have given up: the error is the drain's either way.
            let _ = w.write_all(&data);
            Ok(())
        })
        .unwrap();
        assert!(result.is_err());
    }
}
