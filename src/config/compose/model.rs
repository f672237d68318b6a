//! The shapes a compose file's YAML takes, as read: strings or lists, maps or lists, short or long
//! syntax. `compose` turns them into session services; unknown keys land in `other` maps, so that it
//! can name them (or warn about them) itself.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};

#[derive(Debug, Deserialize)]
pub(super) struct File {
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<VolumeDecl>>,
    #[serde(flatten)]
    pub other: BTreeMap<String, IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct VolumeDecl {
    pub external: Option<IgnoredAny>,
    #[serde(flatten)]
    _other: BTreeMap<String, IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Service {
    pub image: Option<Text>,
    pub command: Option<Words>,
    pub entrypoint: Option<Words>,
    pub environment: Option<Environment>,
    pub env_file: Option<Paths>,
    #[serde(default)]
    pub ports: Vec<Port>,
    pub healthcheck: Option<Healthcheck>,
    pub depends_on: Option<DependsOn>,
    pub deploy: Option<Deploy>,
    pub tmpfs: Option<Paths>,
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    pub shm_size: Option<Scalar>,
    pub user: Option<Scalar>,
    pub working_dir: Option<Text>,
    #[serde(default)]
    pub profiles: Vec<Text>,
    /// Collapsed onto the session network: read, never used.
    #[serde(rename = "networks")]
    _networks: Option<IgnoredAny>,
    #[serde(flatten)]
    pub other: BTreeMap<String, IgnoredAny>,
}

/// A string, interpolated (`interpolate`) as it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Scalar::deserialize(d)?.0 {
            Some(text) => Ok(Text(text)),
            None => Err(de::Error::custom("expected a string, found nothing")),
        }
    }
}

/// A string (split as a shell would, without one) or a list.
#[derive(Debug, Clone)]
pub(super) struct Words(pub Vec<String>);

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match OneOrMany::deserialize(d)? {
            OneOrMany::One(Text(text)) => split(&text).map(Words).map_err(de::Error::custom),
            OneOrMany::Many(items) => Ok(Words(
                items.into_iter().map(|s| s.0.unwrap_or_default()).collect(),
            )),
        }
    }
}

/// A string or a list of strings, each taken whole (`tmpfs`, `env_file`).
#[derive(Debug, Clone, Default)]
pub(super) struct Paths(pub Vec<String>);

impl<'de> Deserialize<'de> for Paths {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match OneOrMany::deserialize(d)? {
            OneOrMany::One(Text(text)) => Ok(Paths(vec![text])),
            OneOrMany::Many(items) => Ok(Paths(items.into_iter().filter_map(|s| s.0).collect())),
        }
    }
}

/// A scalar or a list of scalars. Read by a visitor, not as an untagged enum: an interpolation error
/// keeps its own message (an untagged enum would only say that no variant matched).
enum OneOrMany {
    One(Text),
    Many(Vec<Scalar>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                super::interpolate::current(v)
                    .map(|t| OneOrMany::One(Text(t)))
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(Text(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(Text(v.to_string())))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Scalar>()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }
        d.deserialize_any(V)
    }
}

/// `healthcheck.test`: a string is run by a shell exactly as written (`CMD-SHELL`); a list is
/// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
#[derive(Debug, Clone)]
pub(super) enum Test {
    Shell(String),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for Test {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match OneOrMany::deserialize(d)? {
            OneOrMany::One(Text(text)) => Ok(Test::Shell(text)),
            OneOrMany::Many(items) => Ok(Test::List(
                items.into_iter().map(|s| s.0.unwrap_or_default()).collect(),
            )),
        }
    }
}

/// A scalar as text (numbers and booleans as written); None for null.
#[derive(Debug, Clone)]
pub(super) struct Scalar(pub Option<String>);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                super::interpolate::current(v)
                    .map(|text| Scalar(Some(text)))
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

#[derive(Debug)]
pub(super) enum Environment {
    Map(BTreeMap<String, Scalar>),
    List(Vec<Text>),
}

impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Environment;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of variables, or a list of KEY=VALUE")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Environment, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Scalar>()? {
                    out.insert(k, v);
                }
                Ok(Environment::Map(out))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Environment, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<Text>()? {
                    out.push(item);
                }
                Ok(Environment::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Port {
    Short(Scalar),
    Long {
        target: u16,
        #[serde(default)]
        published: Option<Scalar>,
        #[serde(default)]
        protocol: Option<String>,
        #[serde(flatten)]
        _other: BTreeMap<String, IgnoredAny>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Healthcheck {
    pub test: Option<Test>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub retries: Option<u32>,
    pub start_period: Option<Text>,
    #[serde(rename = "start_interval")]
    _start_interval: Option<Text>,
    pub disable: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, Condition>),
}

#[derive(Debug, Deserialize)]
pub(super) struct Condition {
    pub condition: Option<String>,
    #[serde(flatten)]
    _other: BTreeMap<String, IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Deploy {
    pub resources: Option<Resources>,
    /// `restart_policy`, `replicas`, `placement`, ...: what a test session has no use for (warned).
    #[serde(flatten)]
    pub other: BTreeMap<String, IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Resources {
    pub limits: Option<Limits>,
    #[serde(rename = "reservations")]
    _reservations: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Limits {
    pub memory: Option<Text>,
    pub cpus: Option<Scalar>,
    #[serde(rename = "pids")]
    _pids: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum VolumeSpec {
    Short(Text),
    Long {
        #[serde(rename = "type")]
        kind: Option<String>,
        source: Option<Text>,
        target: Text,
        read_only: Option<bool>,
        #[serde(flatten)]
        _other: BTreeMap<String, IgnoredAny>,
    },
}

/// Splits a command line into words as a shell would (quotes and backslashes), without running one.
pub(super) fn split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("{text:?}: a quote is not closed")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => word.extend(chars.next()),
                        Some(c) => word.push(c),
                        None => return Err(format!("{text:?}: a quote is not closed")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_as_a_shell_splits_them() {
        assert_eq!(
            split(r#"sh -c 'echo "a b"' x\ y"#).unwrap(),
            vec!["sh", "-c", "echo \"a b\"", "x y"]
        );
        assert!(split("echo 'open").is_err());
    }
}
