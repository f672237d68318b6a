//! The control socket's wire (`control`): one request line read within a bound, whole; a refused peer
//! answered after its line is read, so that it reads why instead of a closed connection; and the
//! answer lines, as JSON.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use cleantest_protocol::{Answer, Database as WireDatabase, Endpoint};

use super::{Database, Running};

/// The longest request line read.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a refused client has to send its request line before it is answered.
const REFUSAL_READ_BOUND: Duration = Duration::from_millis(200);

/// Answers a refused request, after reading its line (briefly): a peer whose request was never read
/// would find the connection closed under its write instead of reading why.
pub(super) fn refuse(mut stream: UnixStream, refusal: &str) {
    let _ = stream.set_write_timeout(Some(REFUSAL_READ_BOUND));
    let _ = read_request(&stream, REFUSAL_READ_BOUND);
    let _ = writeln!(stream, "{}", Answer::refused(refusal).to_line());
}

/// How long a client may take to send its whole request line (the crate sends it at once).
pub(super) const REQUEST_READ_BOUND: Duration = Duration::from_secs(10);

/// One request line (at most `MAX_REQUEST` bytes), all of it within `bound`: a peer that sends a byte
/// now and then cannot hold a thread past it.
pub(super) fn read_request(stream: &UnixStream, bound: Duration) -> std::io::Result<String> {
    let deadline = Instant::now() + bound;
    let timed_out = || {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the request line did not arrive within {}s",
                bound.as_secs_f64()
            ),
        )
    };
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        stream.set_read_timeout(Some(left))?;
        let read = match (&*stream).read(&mut chunk) {
            // The socket's own timeout (EAGAIN): the deadline has passed.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out());
            }
            other => other?,
        };
        let end = chunk[..read].iter().position(|b| *b == b'\n');
        line.extend_from_slice(&chunk[..end.map_or(read, |i| i + 1)]);
        if read == 0 || end.is_some() {
            break;
        }
        if line.len() as u64 > MAX_REQUEST {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the request line is longer than {MAX_REQUEST} bytes"),
            ));
        }
    }
    String::from_utf8(line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The answer to a start or a service request.
pub(super) fn answer(result: Result<Running, String>) -> Answer {
    match result {
        Ok(running) => Answer::Endpoint(Endpoint {
            name: running.name,
            host: running.host,
            ports: running.ports.into_iter().collect(),
            exports: running.exports,
        }),
        Err(error) => Answer::refused(error),
    }
}

/// The answer to a database request.
pub(super) fn database_answer(result: Result<Database, String>) -> Answer {
    match result {
        Ok(database) => Answer::Database(WireDatabase {
            service: database.service,
            name: database.name,
            exports: database.exports,
        }),
        Err(error) => Answer::refused(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_line_is_bounded_as_a_whole() {
        let (client, server) = UnixStream::pair().unwrap();
        // A peer that sends a byte every 20 ms, never a newline: each read alone is quick.
        let writer = std::thread::spawn(move || {
            for _ in 0..100 {
                if (&client).write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let read = read_request(&server, Duration::from_millis(200));
        drop(server);
        writer.join().unwrap();
        let error = read.expect_err("a line trickling in past its bound was taken");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        let (client, server) = UnixStream::pair().unwrap();
        (&client).write_all(b"{\"v\":1}\nrest").unwrap();
        assert_eq!(
            read_request(&server, Duration::from_secs(5)).unwrap(),
            "{\"v\":1}\n"
        );
    }
}
