//! Volumes a container create would make implicitly. The engine creates a named volume that a
//! container's `HostConfig.Binds` (`name:/path`) or `HostConfig.Mounts` (type `volume`) names and that
//! does not exist yet, without any label, so the session's sweep would never find it. Before such a
//! create is forwarded, the proxy creates each missing volume itself, labelled like everything else
//! created through it (with the driver and options the container asked for). A volume that exists
//! already is left as it is: it may be anybody's.
//!
//! Anonymous volumes (an image's `VOLUME`, `-v /path`) have no name to create ahead: after a create,
//! the proxy asks the engine which ones the new container got and appends them to the session's
//! `anonymous-volumes` file, which every sweep of the session reads.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use hyper::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::client::{BoxError, Upstream, call, get};
use super::host_config::{self, field};
use crate::locked;

/// A named volume a container create refers to.
#[derive(Debug, PartialEq)]
pub struct Wanted {
    pub name: String,
    driver: Option<String>,
    options: Option<Value>,
    labels: Map<String, Value>,
}

/// What a container create body says about volumes.
#[derive(Debug, Default)]
pub struct VolumePlan {
    /// Named volumes it refers to, which the engine would create if missing.
    pub wanted: Vec<Wanted>,
    /// It declares anonymous volumes itself (`Volumes`, as `-v /path` sends).
    pub declares_anonymous: bool,
    /// Its image, whose own `VOLUME`s become anonymous volumes too.
    pub image: Option<String>,
    /// The memory limit it asks for (0: none), for the resource guard.
    pub memory: u64,
}

/// Reads a container create body (valid JSON, HostConfig spellings normalized) for its volumes.
pub fn plan(body: &[u8]) -> VolumePlan {
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(body) else {
        return VolumePlan::default();
    };
    VolumePlan {
        declares_anonymous: field(&top, "Volumes")
            .and_then(Value::as_object)
            .is_some_and(|v| !v.is_empty()),
        image: field(&top, "Image")
            .and_then(Value::as_str)
            .map(str::to_string),
        wanted: wanted(&host_config::effective(&top)),
        memory: 0,
    }
}

/// The named volumes of a create's `HostConfig`.
fn wanted(host: &Map<String, Value>) -> Vec<Wanted> {
    let driver = field(host, "VolumeDriver")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let mut out = Vec::new();
    for bind in field(host, "Binds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        // `SOURCE:TARGET[:MODE]`; a source that is not a path is a volume name.
        if let Some((source, _)) = bind.split_once(':')
            && is_volume_name(source)
        {
            out.push(Wanted {
                name: source.to_string(),
                driver: driver.clone(),
                options: None,
                labels: Map::new(),
            });
        }
    }
    for mount in field(host, "Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let is_volume = field(mount, "Type").and_then(Value::as_str) == Some("volume");
        let Some(source) = field(mount, "Source").and_then(Value::as_str) else {
            continue;
        };
        if !is_volume || !is_volume_name(source) {
            continue;
        }
        let volume_options = field(mount, "VolumeOptions").and_then(Value::as_object);
        let config = volume_options
            .and_then(|o| field(o, "DriverConfig"))
            .and_then(Value::as_object);
        out.push(Wanted {
            name: source.to_string(),
            driver: config
                .and_then(|c| field(c, "Name"))
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .or_else(|| driver.clone()),
            options: config.and_then(|c| field(c, "Options")).cloned(),
            labels: volume_options
                .and_then(|o| field(o, "Labels"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        });
    }
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// What the engine accepts as a volume name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`); anything else is a path or
/// is refused by the engine itself.
fn is_volume_name(source: &str) -> bool {
    let mut chars = source.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Creates each wanted volume that does not exist yet, with `labels` on top of its own.
pub async fn create_missing(
    upstream: &Upstream,
    wanted: Vec<Wanted>,
    labels: &[(String, String)],
) -> Result<(), BoxError> {
    for volume in wanted {
        let (status, _) = call(
            upstream,
            Method::GET,
            &format!("/volumes/{}", volume.name),
            None,
        )
        .await?;
        if status != StatusCode::NOT_FOUND {
            continue;
        }
        let mut all = volume.labels;
        for (k, v) in labels {
            all.insert(k.clone(), Value::String(v.clone()));
        }
        let mut body = json!({ "Name": volume.name, "Labels": all });
        if let Some(driver) = volume.driver {
            body["Driver"] = Value::String(driver);
        }
        if let Some(options) = volume.options {
            body["DriverOpts"] = options;
        }
        let (status, answer) = call(
            upstream,
            Method::POST,
            "/volumes/create",
            Some(body.to_string()),
        )
        .await?;
        if !status.is_success() {
            return Err(format!(
                "creating the volume {} labelled: {status} {}",
                body["Name"],
                String::from_utf8_lossy(&answer)
            )
            .into());
        }
    }
    Ok(())
}

/// Whether `image` declares `VOLUME`s, asked of the engine once per image and remembered in `cache`.
/// Unknown (the engine did not say) counts as yes: the container is then inspected.
pub async fn image_has_volumes(
    upstream: &Upstream,
    cache: &std::sync::Mutex<std::collections::HashMap<String, bool>>,
    image: &str,
) -> bool {
    if let Some(&known) = locked(cache).get(image) {
        return known;
    }
    if image.is_empty() || image.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return true;
    }
    let declares = get(upstream, &format!("/images/{image}/json"))
        .await
        .is_none_or(|v| {
            v.pointer("/Config/Volumes")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
        });
    locked(cache).insert(image.to_string(), declares);
    declares
}

/// The names of every volume the engine has now: taken before a create, it proves which volumes of the
/// new container the create made. None when the engine did not say.
pub async fn existing(upstream: &Upstream) -> Option<HashSet<String>> {
    let list = get(upstream, "/volumes").await?;
    let volumes = list.get("Volumes")?.as_array()?;
    Some(
        volumes
            .iter()
            .filter_map(|v| Some(v.get("Name")?.as_str()?.to_string()))
            .collect(),
    )
}

/// What `record_anonymous` found, and whether it could be written down.
pub struct Recorded {
    pub names: Vec<String>,
    /// Why the names could not be appended to the file, if they could not.
    pub unwritten: Option<String>,
}

/// Appends the anonymous volumes that the create of container `id` made to `log`, and returns them.
/// A volume is the session's only if the engine proves it: it was not there before the create
/// (`before`), no create named it, and its name is an anonymous volume's (64 hex digits). A volume the
/// container mounts from elsewhere (`--volumes-from`, a bind of an existing name) is never recorded.
/// Best effort: a volume missed here is one the container's removal with `v` still takes.
pub async fn record_anonymous(
    upstream: &Upstream,
    id: &str,
    named: &[String],
    before: &HashSet<String>,
    log: &Path,
) -> Recorded {
    let nothing = Recorded {
        names: Vec::new(),
        unwritten: None,
    };
    let Some(inspect) = get(upstream, &format!("/containers/{id}/json")).await else {
        return nothing;
    };
    let mut names = Vec::new();
    for mount in inspect
        .get("Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let is_volume = mount.get("Type").and_then(Value::as_str) == Some("volume");
        if let (true, Some(name)) = (is_volume, mount.get("Name").and_then(Value::as_str))
            && !named.iter().any(|n| n == name)
            && !before.contains(name)
            && is_anonymous_name(name)
        {
            names.push(name.to_string());
        }
    }
    if names.is_empty() {
        return nothing;
    }
    let lines: String = names.iter().map(|n| format!("{n}\n")).collect();
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut f| f.write_all(lines.as_bytes()));
    Recorded {
        names,
        unwritten: appended
            .err()
            .map(|e| format!("writing {}: {e}", log.display())),
    }
}

/// The name the engine gives an anonymous volume: 64 lowercase hex digits.
fn is_anonymous_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_volumes_from_binds_and_mounts_not_paths() {
        let body = br#"{"Image":"x","hostconfig":{"Binds":["data:/d","/host:/h:ro","./rel:/r"],
            "Mounts":[{"Type":"volume","Source":"cache","VolumeOptions":{"Labels":{"a":"b"},
            "DriverConfig":{"Name":"local","Options":{"type":"tmpfs"}}}},
            {"Type":"bind","Source":"/etc","Target":"/e"},{"Type":"volume","Target":"/anon"}]}}"#;
        let mut top = serde_json::from_slice(body).unwrap();
        host_config::normalize(&mut top).unwrap();
        let found = plan(&serde_json::to_vec(&top).unwrap()).wanted;
        let names: Vec<&str> = found.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["data", "cache"]);
        assert_eq!(found[1].driver.as_deref(), Some("local"));
        assert_eq!(found[1].labels.get("a"), Some(&Value::String("b".into())));
        assert!(plan(b"{}").wanted.is_empty());
        assert!(plan(b"[1]").wanted.is_empty());
        let anonymous = plan(br#"{"image":"pg","Volumes":{"/data":{}}}"#);
        assert!(anonymous.declares_anonymous);
        assert_eq!(anonymous.image.as_deref(), Some("pg"));
        assert!(!plan(br#"{"Image":"x","Volumes":{}}"#).declares_anonymous);
    }
}
