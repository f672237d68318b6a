//! The Docker layer's errors: what was being done, and what the engine (or the connection, or the local
//! system) said, kept as it came, so that a caller can tell a 404 from a timeout (`Error::status`).

use std::time::Duration;

/// What went wrong in a call of the Docker layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An engine call failed: what the engine or the connection to it said.
    #[error("{}{source}", lead(doing))]
    Engine {
        doing: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine answered, and said no (a pull's or a build's error detail, a removal it refused).
    #[error("{}{said}", lead(doing))]
    Said { doing: String, said: String },
    /// A call bounded by `bound` that did not end within it.
    #[error("no {waited} within {}s", bound.as_secs())]
    Timeout {
        /// What did not come: `answer`, `exit`.
        waited: &'static str,
        bound: Duration,
    },
    /// A local failure (a socket, a file, a stream to the engine).
    #[error("{}{source}", lead(doing))]
    Io {
        doing: String,
        #[source]
        source: std::io::Error,
    },
    /// An image the engine does not have and could not pull.
    #[error(
        "the image `{image}` is not on the engine, and the engine could not pull it ({source})"
    )]
    NoImage {
        image: String,
        #[source]
        source: Box<Error>,
    },
    /// A resource whose users could not be removed first, so the engine keeps it.
    #[error("{source} (a container using it could not be removed)")]
    InUse {
        #[source]
        source: Box<Error>,
    },
    /// The setup cannot work as it is (a wrong platform, an endpoint no client can use, an unreadable
    /// certificate): what is wrong and what to do.
    #[error("{0}")]
    Setup(String),
}

fn lead(doing: &str) -> String {
    if doing.is_empty() {
        String::new()
    } else {
        format!("{doing}: ")
    }
}

/// `call`, bounded by `bound`: its result, or `Error::Timeout` saying what did not come (`waited`).
pub(crate) async fn within<T>(
    bound: Duration,
    waited: &'static str,
    call: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(bound, call)
        .await
        .unwrap_or(Err(Error::Timeout { waited, bound }))
}

impl Error {
    /// An engine call's failure, with what was being done (empty when the caller says it).
    pub fn engine(doing: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error {
        let doing = doing.into();
        move |source| Error::Engine { doing, source }
    }

    /// What the engine said, or why a step stops, in words that already say what was being done.
    pub fn said(said: impl Into<String>) -> Error {
        Error::Said {
            doing: String::new(),
            said: said.into(),
        }
    }

    /// A local failure, with what was being done.
    pub fn io(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let doing = doing.into();
        move |source| Error::Io { doing, source }
    }

    /// The HTTP status the engine answered with, if it answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Engine {
                source: bollard::errors::Error::DockerResponseServerError { status_code, .. },
                ..
            } => Some(*status_code),
            Error::NoImage { source, .. } | Error::InUse { source } => source.status(),
            _ => None,
        }
    }

    /// Whether the call ran out of its time.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Engine {
                source: bollard::errors::Error::RequestTimeoutError,
                ..
            } => true,
            Error::NoImage { source, .. } | Error::InUse { source } => source.is_timeout(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lead_with_what_was_done_and_keep_the_status() {
        let e = Error::Engine {
            doing: "remove the volume v".into(),
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message: "volume is in use".into(),
            },
        };
        assert_eq!(e.status(), Some(409));
        assert!(e.to_string().starts_with("remove the volume v: "), "{e}");
        let t = Error::Timeout {
            waited: "exit",
            bound: Duration::from_secs(3),
        };
        assert_eq!(t.to_string(), "no exit within 3s");
        assert!(t.is_timeout() && t.status().is_none());
        let held = Error::InUse {
            source: Box::new(e),
        };
        assert_eq!(held.status(), Some(409));
        assert!(
            held.to_string()
                .ends_with("(a container using it could not be removed)")
        );
    }
}
