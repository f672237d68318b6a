//! `memory = "512m"` in the config file (a service's limit, the resource guard's sizes): the size as
//! `cli::Memory` parses it, read from TOML or YAML.

use serde::Deserialize;
use serde::de::{self, Deserializer};

pub(crate) use crate::cli::Memory;

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Memory::parse(&text).map_err(de::Error::custom)
    }
}
