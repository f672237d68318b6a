//! A duration written in the config file as text (`"90s"`, `"5m"`, `"1m30s"`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A humantime duration; a bad value fails deserialization, so toml reports its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::cli::parse_duration(&text)
            .map(ConfigDuration)
            .map_err(serde::de::Error::custom)
    }
}
