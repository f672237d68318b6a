//! A command kept running in a container with its stdin and output attached (an exec): text is sent
//! to it and its output read back up to a marker line, so that a client inside the container (psql)
//! serves many requests for one exec's cost.

use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::StartExecResults;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::error::within;
use super::{Engine, Error, block_on};
use crate::locked;

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// A running attached command.
pub struct Attached {
    streams: Mutex<(Input, Output)>,
}

/// What a command's output can hold of one request's answer before it is cut.
const ANSWER_CAP: usize = 64 * 1024;

impl Attached {
    /// Starts `argv` in the container `id`, attached.
    pub fn open(engine: &Engine, id: &str, argv: &[String]) -> Result<Attached, Error> {
        block_on(async {
            match super::container::start_exec(engine, id, argv, true)
                .await?
                .1
            {
                StartExecResults::Attached { output, input } => Ok(Attached {
                    streams: Mutex::new((input, output)),
                }),
                StartExecResults::Detached => Err(Error::said("the command did not attach")),
            }
        })
    }

    /// Sends `text`, then reads the output up to a line that is `marker` (which `text` must make the
    /// command print), within `bound`: the output before it.
    pub fn ask(&self, text: &str, marker: &str, bound: Duration) -> Result<String, Error> {
        let mut streams = locked(&self.streams);
        let (input, output) = &mut *streams;
        block_on(async {
            within(bound, "answer", async {
                input
                    .write_all(text.as_bytes())
                    .await
                    .map_err(Error::io("write to the command"))?;
                input
                    .flush()
                    .await
                    .map_err(Error::io("write to the command"))?;
                let mut answer = String::new();
                loop {
                    if let Some(at) = answer.find(&format!("{marker}\n")) {
                        answer.truncate(at);
                        return Ok(answer);
                    }
                    match output.next().await {
                        Some(Ok(chunk)) => {
                            if answer.len() < ANSWER_CAP {
                                answer.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                            }
                        }
                        Some(Err(e)) => return Err(Error::engine("read from the command")(e)),
                        None => {
                            return Err(Error::Said {
                                doing: "the command ended".into(),
                                said: answer.trim().to_string(),
                            });
                        }
                    }
                }
            })
            .await
        })
    }
}
