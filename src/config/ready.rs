//! `ready = …` of a service: the readiness checks that must all pass before a service counts as ready
//! (`{ tcp = N }`, `{ log = "text", times = N }`, `{ exec = [...] }`, `{ http = N, path = "/p" }`), one
//! table or a list of them.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// A readiness check: all of a service's checks must pass before it counts as ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ready {
    /// Something listens on this container port.
    Tcp(u16),
    /// The log holds this text at least `times` times.
    Log { text: String, times: u32 },
    /// This command, run in the container, exits 0.
    Exec(Vec<String>),
    /// `GET path` on this container port answers 2xx or 3xx.
    Http { port: u16, path: String },
}

impl fmt::Display for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ready::Tcp(port) => write!(f, "tcp {port}"),
            Ready::Log { text, times } => write!(f, "log {text:?} {times} time(s)"),
            // Quoted word by word: `["redis-cli ping"]` is not `["redis-cli", "ping"]`.
            Ready::Exec(argv) => write!(f, "exec {argv:?}"),
            Ready::Http { port, path } => write!(f, "http {port}{path}"),
        }
    }
}

/// `ready = { … }` or `ready = [{ … }, …]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReadyList(pub Vec<Ready>);

/// One check as written: exactly one of `tcp`, `log`, `exec`, `http`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadyTable {
    tcp: Option<u16>,
    log: Option<String>,
    times: Option<u32>,
    exec: Option<Vec<String>>,
    http: Option<u16>,
    path: Option<String>,
}

impl ReadyTable {
    fn check(self) -> Result<Ready, String> {
        let kinds = [
            self.tcp.is_some(),
            self.log.is_some(),
            self.exec.is_some(),
            self.http.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(
                "a readiness check needs exactly one of `tcp`, `log`, `exec`, `http`".into(),
            );
        }
        if self.times.is_some() && self.log.is_none() {
            return Err("`times` goes with `log`".into());
        }
        if self.path.is_some() && self.http.is_none() {
            return Err("`path` goes with `http`".into());
        }
        Ok(match (self.tcp, self.log, self.exec, self.http) {
            (Some(port), ..) => Ready::Tcp(port),
            (_, Some(text), ..) => match self.times.unwrap_or(1) {
                0 => return Err("`times` must be at least 1".into()),
                times => Ready::Log { text, times },
            },
            (_, _, Some(argv), _) if argv.is_empty() => {
                return Err("`exec` needs a command".into());
            }
            (_, _, Some(argv), _) => Ready::Exec(argv),
            (.., Some(port)) => {
                let path = self.path.unwrap_or_else(|| "/".into());
                if !path.starts_with('/') {
                    return Err(format!("`path` must start with `/`, not {path:?}"));
                }
                Ready::Http { port, path }
            }
            _ => unreachable!("exactly one kind was checked above"),
        })
    }
}

impl<'de> Deserialize<'de> for ReadyList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = ReadyList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a readiness check such as { tcp = 5432 }, or a list of them")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ReadyList, A::Error> {
                let table = ReadyTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ReadyList(vec![table.check().map_err(de::Error::custom)?]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ReadyList, A::Error> {
                let mut out = Vec::new();
                while let Some(table) = seq.next_element::<ReadyTable>()? {
                    out.push(table.check().map_err(de::Error::custom)?);
                }
                Ok(ReadyList(out))
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrap {
        ready: ReadyList,
    }

    fn ready(text: &str) -> Result<ReadyList, String> {
        toml::from_str::<Wrap>(text)
            .map(|w| w.ready)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_readiness_kind_reads_alone_or_in_a_list() {
        assert_eq!(
            ready("ready = { tcp = 5432 }").unwrap().0,
            vec![Ready::Tcp(5432)]
        );
        assert_eq!(
            ready(r#"ready = { log = "ready to accept", times = 2 }"#)
                .unwrap()
                .0,
            vec![Ready::Log {
                text: "ready to accept".into(),
                times: 2
            }]
        );
        assert_eq!(
            ready(r#"ready = [{ exec = ["pg_isready"] }, { http = 8080 }]"#)
                .unwrap()
                .0,
            vec![
                Ready::Exec(vec!["pg_isready".into()]),
                Ready::Http {
                    port: 8080,
                    path: "/".into()
                }
            ]
        );
    }

    #[test]
    fn a_bad_readiness_check_says_what_is_wrong() {
        for (text, says) in [
            ("ready = { tcp = 1, http = 2 }", "exactly one"),
            ("ready = {}", "exactly one"),
            ("ready = { tcpp = 1 }", "tcpp"),
            ("ready = { tcp = 1, times = 2 }", "`times` goes with `log`"),
            (r#"ready = { http = 1, path = "health" }"#, "start with `/`"),
            ("ready = { exec = [] }", "needs a command"),
            ("ready = 5", "a readiness check"),
            ("ready = { tcp = 70000 }", "70000"),
        ] {
            let err = ready(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
