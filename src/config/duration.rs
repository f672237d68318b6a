//! A duration written in the config file as text (`"90s"`, `"5m"`, `"1m30s"`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A humantime duration; a bad value fails deserialization, so toml reports its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationText)
    }
}

/// Reads a duration's text, and says what a duration looks like when given anything else (a bare
/// `10` is the usual slip).
struct DurationText;

impl serde::de::Visitor<'_> for DurationText {
    type Value = ConfigDuration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration such as \"10s\", \"5m\" or \"1m30s\"")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ConfigDuration, E> {
        crate::cli::parse_duration(text)
            .map(ConfigDuration)
            .map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ConfigDuration, E> {
        Err(E::custom(format!(
            "{n} has no unit: write a duration such as \"{n}s\" or \"{n}m\""
        )))
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ConfigDuration, E> {
        self.visit_i64(n.min(i64::MAX as u64) as i64)
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<ConfigDuration, E> {
        Err(E::custom(format!(
            "{n} has no unit: write a duration such as \"{n}s\""
        )))
    }
}
