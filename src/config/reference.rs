//! Keeps the configuration reference (`docs/configuration.md`) true: its tables list exactly the keys
//! the parser accepts (read from the serde definitions themselves, not from a second list), and each
//! flag and environment variable a row names is the one the command line defines, with the same
//! default. Test-only.

use std::collections::BTreeSet;
use std::fmt;

use clap::CommandFactory;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::overrides::OverrideConfig;
use super::profile::ProfileConfig;
use super::proxy::ProxyTable;
use super::services::ServiceConfig;

const REFERENCE: &str = include_str!("../../docs/configuration.md");

/// A deserializer that answers only `deserialize_struct`, recording the field names serde would accept.
struct FieldNames<'a>(&'a mut Vec<&'static str>);

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names recorded")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.0.extend_from_slice(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// The keys serde accepts for `T`.
fn keys_of<T: for<'de> Deserialize<'de>>() -> BTreeSet<String> {
    let mut fields = Vec::new();
    let _ = T::deserialize(FieldNames(&mut fields));
    assert!(!fields.is_empty(), "no fields recorded");
    fields.into_iter().map(str::to_string).collect()
}

/// One row of a reference table.
#[derive(Debug)]
struct Row {
    key: String,
    default: String,
    flag: String,
    env: String,
}

/// The rows of the table under the heading `### {heading}`.
fn table(heading: &str) -> Vec<Row> {
    let start = REFERENCE
        .find(&format!("### {heading}\n"))
        .unwrap_or_else(|| panic!("no `### {heading}` in docs/configuration.md"));
    let cell = |text: &str| text.trim().trim_matches('`').to_string();
    REFERENCE[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
            assert_eq!(cells.len(), 5, "a row of five cells: {line}");
            Row {
                key: cell(cells[0]),
                default: cell(cells[2]),
                flag: cell(cells[3]),
                env: cell(cells[4]),
            }
        })
        .collect()
}

fn documented(rows: &[Row]) -> BTreeSet<String> {
    rows.iter().map(|r| r.key.clone()).collect()
}

#[test]
fn every_key_of_the_parser_is_documented_and_every_documented_key_parses() {
    let mut profile = keys_of::<ProfileConfig>();
    profile.extend(
        keys_of::<ProxyTable>()
            .into_iter()
            .map(|k| format!("proxy.{k}")),
    );
    assert_eq!(documented(&table("`[profile.NAME]`")), profile);
    assert_eq!(
        documented(&table("`[[profile.NAME.overrides]]`")),
        keys_of::<OverrideConfig>()
    );
    assert_eq!(
        documented(&table("`[services.NAME]`")),
        keys_of::<ServiceConfig>()
    );
}

#[test]
fn every_flag_and_variable_of_the_reference_is_the_command_lines() {
    let command = crate::cli::RunArgs::command();
    for row in table("`[profile.NAME]`") {
        // `-- --test-threads` goes to the test binaries, not to us.
        let Some(long) = row
            .flag
            .strip_prefix("--")
            .filter(|_| !row.flag.starts_with("-- "))
        else {
            continue;
        };
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .unwrap_or_else(|| panic!("`{}`: no flag --{long}", row.key));
        let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        let expected = Some(row.env.clone()).filter(|e| !e.is_empty());
        assert_eq!(env, expected, "`{}`: the variable of --{long}", row.key);
    }
}

#[test]
fn the_documented_defaults_are_the_built_in_ones() {
    let none = std::env::temp_dir().join("cleantest-reference-no-config");
    let settings = super::Settings::load(&none, &Default::default(), &Default::default()).unwrap();
    let rows = table("`[profile.NAME]`");
    let default_of = |key: &str| {
        let row = rows.iter().find(|r| r.key == key).unwrap();
        crate::cli::parse_duration(&row.default).unwrap()
    };
    assert_eq!(default_of("timeout"), settings.timeout);
    assert_eq!(default_of("list-timeout"), settings.list_timeout);
    assert_eq!(default_of("grace-period"), settings.grace_period);
    assert_eq!(default_of("heartbeat"), settings.heartbeat);
    let services = table("`[services.NAME]`");
    let ready = services.iter().find(|r| r.key == "ready-timeout").unwrap();
    assert_eq!(
        crate::cli::parse_duration(&ready.default).unwrap(),
        super::services::DEFAULT_READY_TIMEOUT
    );
    let retries = rows.iter().find(|r| r.key == "retries").unwrap();
    assert_eq!(retries.default, settings.retries.to_string());
}
