//! Every object a call names, found once, before anything is forwarded: the path's object, the names in
//! its query, and the references in its body. Each comes with what the call does to it (`Role`), so that
//! `policy` can resolve each to its immutable id, check it, and forward the call with that id.
//!
//! A body's references are walked by one function per body (`visit`) whose callback may rewrite each in
//! place: the same walk finds them and pins them, so nothing found goes unpinned and nothing is pinned
//! that was not found. Keys are matched as the engine's decoder matches them (`go_fold`), and every
//! spelling of a key is visited. Pure functions.

use serde_json::{Map, Value};

use super::query::{self, QueryRefusal};
use super::rewrite::go_fold;
use super::table::{Create, Object, Row, Rule};

/// What a call does to an object it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Changes, stops, removes or reads it in a way that changes it (pause, commit): must be ours.
    Acts,
    /// Shares its namespaces, volumes or network: must be ours.
    Joins,
    /// Gives its name to a new or renamed object: the name must not be held by another's object.
    Writes,
    /// A pull writes the registry's image under the name: the name must not be held by another's image
    /// made on this engine (built, committed, imported or tagged), which a pull would take away.
    Pulls,
}

/// Where a reference stands in the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The path's `*`/`**`.
    Path,
    /// A query parameter (the first of its spellings, as the engine reads it).
    Query(&'static str),
    /// The body (`visit` finds it again).
    Body,
}

/// One object a call names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub object: Object,
    pub role: Role,
    pub name: String,
    pub site: Site,
}

/// Which body a call has references in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    ContainerCreate,
    NetworkCreate,
    VolumeCreate,
    Connect,
}

/// The body whose references a call's rule reads, if any.
pub fn body_of(rule: Rule) -> Option<Body> {
    match rule {
        Rule::Label(Create::Container) => Some(Body::ContainerCreate),
        Rule::Label(Create::Network) => Some(Body::NetworkCreate),
        Rule::Label(Create::Volume) => Some(Body::VolumeCreate),
        Rule::Connect => Some(Body::Connect),
        _ => None,
    }
}

/// Every object the call names: path, query and body (the body as the engine reads it: normalized).
pub fn of_call(
    row: &Row,
    query: Option<&str>,
    body: Option<&mut Map<String, Value>>,
) -> Result<Vec<Reference>, QueryRefusal> {
    let mut found = Vec::new();
    if let (Some(object), Some(name)) = (path_object(row.rule), row.object()) {
        found.push(Reference {
            object,
            role: Role::Acts,
            name,
            site: Site::Path,
        });
    }
    found.extend(of_query(row.rule, query)?);
    if let (Some(kind), Some(body)) = (body_of(row.rule), body) {
        visit(kind, body, &mut |object, role, name| {
            found.push(Reference {
                object,
                role,
                name: name.clone(),
                site: Site::Body,
            })
        });
    }
    Ok(found)
}

/// The kind of object the path of a call with this rule acts on.
fn path_object(rule: Rule) -> Option<Object> {
    match rule {
        Rule::Own(object) => Some(object),
        Rule::Start | Rule::Update | Rule::Rename => Some(Object::Container),
        Rule::Connect => Some(Object::Network),
        Rule::Tag => Some(Object::Image),
        _ => None,
    }
}

/// The names a call's query gives: containers it acts on, names it writes, modes it joins.
fn of_query(rule: Rule, query: Option<&str>) -> Result<Vec<Reference>, QueryRefusal> {
    let first = |name| query::first(query, name);
    let at = |object, role, name: String, key| Reference {
        object,
        role,
        name,
        site: Site::Query(key),
    };
    let mut found = Vec::new();
    match rule {
        Rule::Label(Create::Container) | Rule::Rename => {
            if let Some(name) = first("name")?.filter(|n| !n.is_empty()) {
                found.push(at(Object::Container, Role::Writes, name, "name"));
            }
        }
        Rule::Tag => found.extend(
            image_name(
                &first("repo")?.unwrap_or_default(),
                &first("tag")?.unwrap_or_default(),
            )
            .map(|n| at(Object::Image, Role::Writes, n, "repo")),
        ),
        Rule::Label(Create::Commit) => {
            if let Some(container) = first("container")?.filter(|c| !c.is_empty()) {
                found.push(at(Object::Container, Role::Acts, container, "container"));
            }
            found.extend(
                image_name(
                    &first("repo")?.unwrap_or_default(),
                    &first("tag")?.unwrap_or_default(),
                )
                .map(|n| at(Object::Image, Role::Writes, n, "repo")),
            );
        }
        Rule::LabelBuild => {
            for t in query::all(query, "t")? {
                found.extend(image_name(&t, "").map(|n| at(Object::Image, Role::Writes, n, "t")));
            }
            if let Some((object, name)) = first("networkmode")?.as_deref().and_then(mode_target) {
                found.push(at(object, Role::Joins, name.to_string(), "networkmode"));
            }
        }
        Rule::LabelImport => {
            let tag = first("tag")?.unwrap_or_default();
            if first("fromSrc")?.is_some() {
                let repo = first("repo")?.unwrap_or_default();
                found.extend(
                    image_name(&repo, &tag).map(|n| at(Object::Image, Role::Writes, n, "repo")),
                );
            } else if let Some(image) = first("fromImage")? {
                let pulled = (!tag.starts_with("sha256:") && !image.contains('@'))
                    .then(|| image_name(&image, &tag))
                    .flatten();
                found.extend(pulled.map(|n| at(Object::Image, Role::Pulls, n, "fromImage")));
            }
        }
        _ => {}
    }
    Ok(found)
}

/// The image name a `repo` and `tag` write, as the engine forms it (`RepoTagReference`): `tag` replaces
/// the repository's own tag, and a name without one is `:latest`. None when nothing is written.
pub fn image_name(repo: &str, tag: &str) -> Option<String> {
    if repo.is_empty() {
        return None;
    }
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let own_tag = last.rfind(':').map(|i| repo.len() - last.len() + i);
    let bare = own_tag.map_or(repo, |i| &repo[..i]);
    Some(match (tag.is_empty(), own_tag) {
        (false, _) => format!("{bare}:{tag}"),
        (true, Some(_)) => repo.to_string(),
        (true, None) => format!("{repo}:latest"),
    })
}

/// What a mode (`PidMode`, `IpcMode`, `Cgroup`, `NetworkMode`, a build's `networkmode`) joins:
/// `container:X` a container; for a network mode, a network by name unless it is a predefined one.
fn mode_target(mode: &str) -> Option<(Object, &str)> {
    match mode.split_once(':') {
        Some(("container", name)) => Some((Object::Container, name)),
        _ => None,
    }
}

fn network_mode_target(mode: &str) -> Option<(Object, &str)> {
    mode_target(mode).or_else(|| (!predefined_network(mode)).then_some((Object::Network, mode)))
}

/// The networks every engine has, which no session owns and any container may use.
fn predefined_network(name: &str) -> bool {
    matches!(name, "" | "default" | "bridge" | "host" | "none")
}

/// A mode with its target replaced by `with` (the same form: `container:ID`, or the network's id).
pub fn pinned_mode(mode: &str, with: &str) -> String {
    match mode_target(mode) {
        Some(_) => format!("container:{with}"),
        None => with.to_string(),
    }
}

/// The callback of `visit`: the object's kind, what the call does to it, and its name, which the
/// callback may replace.
pub type Visitor<'a> = dyn FnMut(Object, Role, &mut String) + 'a;

/// Walks every reference of a body of `kind` (normalized: one `HostConfig`, one `NetworkingConfig`).
pub fn visit(kind: Body, root: &mut Map<String, Value>, f: &mut Visitor<'_>) {
    match kind {
        Body::ContainerCreate => {
            if root.get("HostConfig").is_some_and(Value::is_object) {
                if let Some(Value::Object(host)) = root.get_mut("HostConfig") {
                    visit_host(host, f);
                }
            } else {
                // Without a HostConfig, the top-level fields are the HostConfig (deprecated form).
                visit_host(root, f);
            }
            if let Some(Value::Object(net)) = root.get_mut("NetworkingConfig") {
                visit_endpoints(net, f);
            }
        }
        Body::NetworkCreate => visit_strings(root, "name", Object::Network, Role::Writes, f),
        Body::VolumeCreate => visit_strings(root, "name", Object::Volume, Role::Writes, f),
        Body::Connect => {
            visit_strings(root, "container", Object::Container, Role::Acts, f);
            for (key, value) in root.iter_mut() {
                if let ("endpointconfig", Value::Object(settings)) = (go_fold(key).as_str(), value)
                {
                    visit_endpoint(settings, f);
                }
            }
        }
    }
}

/// Every spelling of `key` whose value is a non-empty string.
fn visit_strings(
    object: &mut Map<String, Value>,
    key: &str,
    kind: Object,
    role: Role,
    f: &mut Visitor<'_>,
) {
    for (k, value) in object.iter_mut() {
        if let (true, Value::String(name)) = (go_fold(k) == key, value)
            && !name.is_empty()
        {
            f(kind, role, name);
        }
    }
}

/// The HostConfig's references: the modes that share another container's namespaces or a network,
/// `VolumesFrom` and `Links`.
fn visit_host(host: &mut Map<String, Value>, f: &mut Visitor<'_>) {
    for (key, value) in host.iter_mut() {
        let key = go_fold(key);
        match (key.as_str(), value) {
            ("pidmode" | "ipcmode" | "cgroup" | "networkmode", Value::String(mode)) => {
                let target = if key == "networkmode" {
                    network_mode_target(mode)
                } else {
                    mode_target(mode)
                };
                if let Some((object, name)) = target {
                    let mut name = name.to_string();
                    f(object, Role::Joins, &mut name);
                    *mode = pinned_mode(mode, &name);
                }
            }
            ("volumesfrom", Value::Array(list)) => visit_list(list, volumes_from, f),
            ("links", Value::Array(list)) => visit_list(list, link, f),
            _ => {}
        }
    }
}

/// Each string of a list, split by `parse` into the container it names and how to write it back.
fn visit_list(list: &mut [Value], parse: fn(&str) -> (String, String), f: &mut Visitor<'_>) {
    for item in list {
        if let Value::String(text) = item {
            let (mut name, rest) = parse(text);
            f(Object::Container, Role::Joins, &mut name);
            *text = format!("{name}{rest}");
        }
    }
}

/// `CONTAINER[:MODE]`.
fn volumes_from(text: &str) -> (String, String) {
    match text.split_once(':') {
        Some((name, mode)) => (name.to_string(), format!(":{mode}")),
        None => (text.to_string(), String::new()),
    }
}

/// `NAME[:ALIAS]`, read as the engine's `ParseLink` reads it; written back with the alias spelled out,
/// since a link without one takes the container's name as its alias.
fn link(text: &str) -> (String, String) {
    match text.split_once(':') {
        Some((name, alias)) if name.starts_with('/') => (
            name[1..].to_string(),
            format!(":{}", alias.rsplit('/').next().unwrap_or(alias)),
        ),
        Some((name, alias)) => (name.to_string(), format!(":{alias}")),
        None => (text.to_string(), format!(":{text}")),
    }
}

/// `NetworkingConfig.EndpointsConfig`: each key is a network joined (renamed to its pinned id), and
/// each endpoint's own references.
fn visit_endpoints(net: &mut Map<String, Value>, f: &mut Visitor<'_>) {
    for (key, value) in net.iter_mut() {
        let (true, Value::Object(endpoints)) = (go_fold(key) == "endpointsconfig", value) else {
            continue;
        };
        let entries = std::mem::take(endpoints);
        for (name, mut settings) in entries {
            let mut name = name;
            if !predefined_network(&name) {
                f(Object::Network, Role::Joins, &mut name);
            }
            if let Value::Object(settings) = &mut settings {
                visit_endpoint(settings, f);
            }
            endpoints.insert(name, settings);
        }
    }
}

/// One endpoint's settings: `NetworkID`, which the engine prefers to the key for a user-defined
/// network, and `Links`.
fn visit_endpoint(settings: &mut Map<String, Value>, f: &mut Visitor<'_>) {
    visit_strings(settings, "networkid", Object::Network, Role::Joins, f);
    for (key, value) in settings.iter_mut() {
        if let ("links", Value::Array(list)) = (go_fold(key).as_str(), value) {
            visit_list(list, link, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::table::rule_for;

    fn names(
        method: &str,
        path: &str,
        query: Option<&str>,
        body: &str,
    ) -> Vec<(Object, Role, String)> {
        let row = rule_for(method, path).unwrap();
        let mut body = crate::proxy::host_config::read_body(body.as_bytes()).unwrap();
        of_call(&row, query, Some(&mut body))
            .unwrap()
            .into_iter()
            .map(|r| (r.object, r.role, r.name))
            .collect()
    }

    #[test]
    fn a_create_joins_what_its_modes_volumes_links_and_networks_name() {
        let found = names(
            "POST",
            "/containers/create",
            Some("name=mine"),
            r#"{"Image":"x","hostconfig":{"PidMode":"container:a","IpcMode":"host","NetworkMode":"net1",
                "VolumesFrom":["b:ro"],"Links":["/c:/me/alias","d"]},
               "NetworkingConfig":{"EndpointsConfig":{"net2":{"NetworkID":"net3","Links":["e:x"]},"bridge":{}}}}"#,
        );
        use Object::*;
        use Role::*;
        let want = [
            (Container, Writes, "mine"),
            (Container, Joins, "a"),
            (Network, Joins, "net1"),
            (Container, Joins, "b"),
            (Container, Joins, "c"),
            (Container, Joins, "d"),
            (Network, Joins, "net2"),
            (Network, Joins, "net3"),
            (Container, Joins, "e"),
        ];
        let want: Vec<(Object, Role, String)> = want
            .iter()
            .map(|(o, r, n)| (*o, *r, n.to_string()))
            .collect();
        assert_eq!(found, want);
    }

    #[test]
    fn deprecated_top_level_fields_are_the_host_config_without_one() {
        let found = names(
            "POST",
            "/containers/create",
            None,
            r#"{"Image":"x","PidMode":"container:a"}"#,
        );
        assert_eq!(found, [(Object::Container, Role::Joins, "a".to_string())]);
        // With a HostConfig, the engine reads the mode there only.
        let found = names(
            "POST",
            "/containers/create",
            None,
            r#"{"Image":"x","PidMode":"container:a","HostConfig":{}}"#,
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn queries_name_what_they_write_act_on_and_join() {
        let found = names(
            "POST",
            "/commit",
            Some("container=c1&repo=team/app&tag=2"),
            "",
        );
        assert_eq!(
            found,
            [
                (Object::Container, Role::Acts, "c1".to_string()),
                (Object::Image, Role::Writes, "team/app:2".to_string()),
            ]
        );
        let found = names(
            "POST",
            "/build",
            Some("t=a&t=b:1&networkmode=container:c"),
            "",
        );
        assert_eq!(found.len(), 3);
        assert_eq!(found[2], (Object::Container, Role::Joins, "c".to_string()));
        let pull = names(
            "POST",
            "/images/create",
            Some("fromImage=busybox&tag=1"),
            "",
        );
        assert_eq!(
            pull,
            [(Object::Image, Role::Pulls, "busybox:1".to_string())]
        );
        let by_digest = names(
            "POST",
            "/images/create",
            Some("fromImage=busybox&tag=sha256:ab"),
            "",
        );
        assert!(by_digest.is_empty());
        let import = names("POST", "/images/create", Some("fromSrc=-&repo=x"), "");
        assert_eq!(
            import,
            [(Object::Image, Role::Writes, "x:latest".to_string())]
        );
    }

    #[test]
    fn image_names_are_formed_as_the_engine_forms_them() {
        assert_eq!(image_name("app", "").as_deref(), Some("app:latest"));
        assert_eq!(image_name("app:1", "").as_deref(), Some("app:1"));
        assert_eq!(image_name("app:1", "2").as_deref(), Some("app:2"));
        assert_eq!(
            image_name("host:5000/app", "").as_deref(),
            Some("host:5000/app:latest")
        );
        assert_eq!(image_name("", "1"), None);
    }

    #[test]
    fn pinning_rewrites_every_spelling_in_its_own_form() {
        let mut body = crate::proxy::host_config::read_body(
            br#"{"HostConfig":{"PidMode":"container:a","VolumesFrom":["a:ro"],"Links":["a"],"NetworkMode":"n"},
                 "NetworkingConfig":{"EndpointsConfig":{"n":{"NetworkID":"n"}}}}"#,
        )
        .unwrap();
        visit(Body::ContainerCreate, &mut body, &mut |object, _, name| {
            *name = format!(
                "{}-{name}",
                if object == Object::Network { "N" } else { "C" }
            )
        });
        let host = &body["HostConfig"];
        assert_eq!(host["PidMode"], "container:C-a");
        assert_eq!(host["VolumesFrom"][0], "C-a:ro");
        assert_eq!(host["Links"][0], "C-a:a");
        assert_eq!(host["NetworkMode"], "N-n");
        assert_eq!(
            body["NetworkingConfig"]["EndpointsConfig"]["N-n"]["NetworkID"],
            "N-n"
        );
    }
}
