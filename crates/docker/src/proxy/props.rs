//! Property tests of the proxy's create-body rewriting (`rewrite::merge_labels`, then
//! `host_config::normalize` for containers): random JSON bodies with every spelling of `Labels` and
//! `HostConfig`, duplicate keys, top-level HostConfig fields and nesting either come out with exactly
//! one `Labels` carrying the session, and one `HostConfig` at most, or are refused. Never forwarded
//! unlabelled, never with a spelling the engine would merge behind our back.

use proptest::prelude::*;
use serde_json::Value;

use super::host_config;
use super::rewrite::{go_fold, merge_labels};

const SESSION: &str = "cleantest.session";

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Labels".to_string()),
        Just("labels".to_string()),
        Just("LABELS".to_string()),
        Just("Label\u{17f}".to_string()),
        Just("HostConfig".to_string()),
        Just("hostconfig".to_string()),
        Just("HOSTCONFIG".to_string()),
        Just("Image".to_string()),
        Just("Binds".to_string()),
        Just("Memory".to_string()),
        Just("Volumes".to_string()),
        "[a-zA-Z]{1,6}",
    ]
}

/// JSON text (not a `Value`: duplicate keys must survive into the body).
fn json(depth: u32) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        (0u32..5000).prop_map(|n| n.to_string()),
        "[a-z:/=.]{0,8}".prop_map(|s| format!("\"{s}\"")),
        proptest::collection::vec(("[a-z.]{1,8}", "[a-z]{0,4}"), 0..3).prop_map(|pairs| {
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("\"{k}\":\"{v}\""))
                .collect();
            format!("{{{}}}", body.join(","))
        }),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        leaf,
        proptest::collection::vec((key(), json(depth - 1)), 0..5).prop_map(|pairs| {
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                .collect();
            format!("{{{}}}", body.join(","))
        }),
    ]
    .boxed()
}

fn body() -> impl Strategy<Value = String> {
    proptest::collection::vec((key(), json(2)), 0..8).prop_map(|pairs| {
        let body: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn creates_come_out_labelled_once_or_are_refused(body in body()) {
        let labels = vec![(SESSION.to_string(), "s1".to_string())];
        let Ok(out) = merge_labels(body.as_bytes(), &labels, SESSION, "cleantest.nested.") else {
            return Ok(());
        };
        let Ok(Value::Object(mut root)) = serde_json::from_slice::<Value>(&out) else {
            return Err(TestCaseError::fail(format!("not an object: {}", String::from_utf8_lossy(&out))));
        };
        let spellings: Vec<&String> = root.keys().filter(|k| go_fold(k) == "labels").collect();
        prop_assert_eq!(spellings, vec!["Labels"], "{}", body);
        prop_assert_eq!(root["Labels"][SESSION].as_str(), Some("s1"), "{}", body);
        // A container create goes on through the HostConfig normalization: one spelling at most.
        if host_config::normalize(&mut root).is_ok() {
            let host: Vec<&String> = root.keys().filter(|k| go_fold(k) == "hostconfig").collect();
            prop_assert!(host.len() <= 1 && host.iter().all(|k| *k == "HostConfig"), "{}", body);
            prop_assert_eq!(root["Labels"][SESSION].as_str(), Some("s1"));
        }
    }
}

/// Pinning (`refs`, `pin`), over every row of the table: a request whose every reference field names
/// objects of a fake engine (by name, by id, by id prefix; its own or another's) is refused, or is
/// forwarded naming only what was checked: each object it acts on or joins by an id that still names
/// the same object of the session after every name has moved to another object (renamed mid-request),
/// and each name it writes held by nobody else.
mod pinned {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::super::host_config;
    use super::super::pin::{self, Resolutions, Resolved};
    use super::super::refs::{self, Reference, Role, Site};
    use super::super::table::{self, Object, Row, Rule};

    #[derive(Debug, Clone)]
    struct Fake {
        kind: Object,
        id: String,
        name: String,
        ours: bool,
    }

    fn hex(seed: u8) -> String {
        format!("{seed:02x}").repeat(32)
    }

    /// The session's objects and another's of every kind; `swapped` gives every name to the other's
    /// object and back (renamed after the check). An own container is named after a prefix of the
    /// other's id, as the attack does.
    fn world(swapped: bool) -> Vec<Fake> {
        let pairs = [
            (Object::Container, "aaaaaaaaaaaa", "victim"),
            (Object::Network, "own-net", "victim-net"),
            (Object::Volume, "own-vol", "victim-vol"),
            (Object::Image, "own:1", "victim:1"),
            (Object::Exec, "own-exec", "victim-exec"),
        ];
        let mut all = Vec::new();
        for (i, (kind, own, other)) in pairs.into_iter().enumerate() {
            let (own_id, other_id) = match kind {
                Object::Volume => (own.to_string(), other.to_string()),
                _ => (hex(0x10 + i as u8), hex(0xa0 + i as u8)),
            };
            // A volume's name is its identity: it cannot be renamed.
            let swap = swapped && kind != Object::Volume;
            let (own_name, other_name) = if swap { (other, own) } else { (own, other) };
            all.push(Fake {
                kind,
                id: own_id,
                name: own_name.into(),
                ours: true,
            });
            all.push(Fake {
                kind,
                id: other_id,
                name: other_name.into(),
                ours: false,
            });
        }
        all
    }

    /// The fake engine's lookup: full id, then name, then a unique id prefix (images by `sha256:`
    /// too); volumes by name only.
    fn resolve(world: &[Fake], kind: Object, name: &str) -> Option<Resolved> {
        let of_kind = || world.iter().filter(|f| f.kind == kind);
        let bare = name.strip_prefix("sha256:").unwrap_or(name);
        let tagged = refs::image_name(name, "").unwrap_or_default();
        let hit = match kind {
            Object::Volume => of_kind().find(|f| f.name == name),
            _ => of_kind()
                .find(|f| f.id == bare)
                .or_else(|| {
                    of_kind()
                        .find(|f| f.name == name || (kind == Object::Image && f.name == tagged))
                })
                .or_else(|| {
                    let found: Vec<&Fake> = of_kind()
                        .filter(|f| !bare.is_empty() && f.id.starts_with(bare))
                        .collect();
                    (found.len() == 1).then(|| found[0])
                }),
        }?;
        let image = kind == Object::Image;
        Some(Resolved {
            id: if image {
                format!("sha256:{}", hit.id)
            } else {
                hit.id.clone()
            },
            ours: hit.ours,
            made_here: true,
            named: (image && (hit.name == name || hit.name == tagged)).then(|| hit.name.clone()),
        })
    }

    fn resolve_all(world: &[Fake], references: &[Reference]) -> Resolutions {
        references
            .iter()
            .map(|r| {
                (
                    (r.object, r.name.clone()),
                    resolve(world, r.object, &r.name),
                )
            })
            .collect()
    }

    /// A name of the world's objects of `kind` (any kind: None), the session's with `ours` and else
    /// another's, as a request may spell it: by name, id, id prefix, or `sha256:` id.
    fn target(kind: Option<Object>, ours: bool) -> BoxedStrategy<String> {
        let world = world(false);
        let names: Vec<String> = world
            .iter()
            .filter(|f| f.ours == ours && kind.is_none_or(|k| k == f.kind))
            .flat_map(|f| {
                [
                    f.name.clone(),
                    f.id.clone(),
                    f.id[..12.min(f.id.len())].to_string(),
                    format!("sha256:{}", f.id),
                ]
            })
            .collect();
        proptest::sample::select(names).boxed()
    }

    /// Mostly the session's objects of the slot's kind (a fresh name where it writes one), sometimes
    /// another's of any kind.
    fn slots(kinds: &[Option<Object>]) -> Vec<BoxedStrategy<String>> {
        kinds
            .iter()
            .map(|kind| match kind {
                Some(kind) => {
                    prop_oneof![9 => target(Some(*kind), true), 1 => target(None, false)].boxed()
                }
                None => prop_oneof![
                    3 => Just("fresh-name".to_string()),
                    1 => Just("fresh:1".to_string()),
                    1 => target(None, true),
                    1 => target(None, false)
                ]
                .boxed(),
            })
            .collect()
    }

    const C: Option<Object> = Some(Object::Container);
    const N: Option<Object> = Some(Object::Network);
    const I: Option<Object> = Some(Object::Image);
    /// The kinds `body_with`'s slots name (None: a name written).
    const BODY: [Option<Object>; 14] = [C, C, C, N, C, C, C, N, N, C, C, None, N, C];
    /// The kinds `query_with`'s slots name.
    const QUERY: [Option<Object>; 7] = [None, None, None, None, C, C, I];

    /// The kind of object a row's path names, for its target.
    fn path_kind(rule: Rule) -> usize {
        match rule {
            Rule::Own(Object::Container) | Rule::Start | Rule::Update | Rule::Rename => 0,
            Rule::Own(Object::Network) | Rule::Connect => 1,
            Rule::Own(Object::Volume) => 2,
            Rule::Own(Object::Image) | Rule::Tag => 3,
            _ => 4,
        }
    }

    fn path_targets(ours: bool) -> Vec<BoxedStrategy<String>> {
        [
            Object::Container,
            Object::Network,
            Object::Volume,
            Object::Image,
            Object::Exec,
        ]
        .into_iter()
        .map(|k| {
            if ours {
                prop_oneof![9 => target(Some(k), true), 1 => target(None, false)].boxed()
            } else {
                target(None, false)
            }
        })
        .collect()
    }

    /// A path for the row's pattern, its wildcards filled with `name`.
    fn path_for(pattern: &str, name: &str, pick: usize) -> String {
        let segments: Vec<String> = pattern
            .trim_start_matches('/')
            .split('/')
            .map(|p| match p {
                "*" | "**" => name.to_string(),
                p => match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    Some(choices) => {
                        let choices: Vec<&str> = choices.split(',').collect();
                        choices[pick % choices.len()].to_string()
                    }
                    None => p.to_string(),
                },
            })
            .collect();
        format!("/{}", segments.join("/"))
    }

    /// Every reference field `refs` knows of, in one of its spellings, naming `t[i]`.
    fn body_with(t: &[String], upper: bool) -> Map<String, Value> {
        let host = json!({
            "PidMode": format!("container:{}", t[0]), "IpcMode": format!("container:{}", t[1]),
            "Cgroup": format!("container:{}", t[2]), "NetworkMode": t[3].clone(),
            "VolumesFrom": [format!("{}:ro", t[4])], "Links": [format!("{}:alias", t[5]), t[6].clone()],
        });
        let host_key = if upper { "HOSTCONFIG" } else { "HostConfig" };
        let mut body = json!({
            "Image": "own:1",
            "NetworkingConfig": {"EndpointsConfig": {t[7].clone(): {"NetworkID": t[8].clone(), "Links": [t[9].clone()]}}},
            "Container": t[10].clone(), "name": t[11].clone(),
            "EndpointConfig": {"networkid": t[12].clone(), "Links": [t[13].clone()]},
        });
        body[host_key] = host;
        let Value::Object(body) = body else {
            unreachable!()
        };
        body
    }

    fn query_with(t: &[String]) -> String {
        let q = [
            ("name", t[0].clone()),
            ("repo", t[1].clone()),
            ("tag", "1".into()),
            ("t", t[2].clone()),
            ("t", t[3].clone()),
            ("container", t[4].clone()),
            ("networkmode", format!("container:{}", t[5])),
            ("fromImage", t[6].clone()),
            ("fromSrc", "-".into()),
        ];
        q.iter()
            .map(|(k, v)| format!("{k}={}", super::super::query::encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// A call as forwarded: its row, query and body.
    type Forwarded = (Row, Option<String>, Map<String, Value>);

    /// Admission's pure steps over the fake engine: Ok is the call as forwarded (row, query, body).
    fn admit(
        world: &[Fake],
        method: &str,
        path: &str,
        query: &str,
        body: &Map<String, Value>,
    ) -> Option<Result<Forwarded, pin::Denied>> {
        let row = table::rule_for(method, path)?;
        let mut json = host_config::read_body(&serde_json::to_vec(body).unwrap()).ok()?;
        let references = refs::of_call(&row, Some(query), Some(&mut json)).ok()?;
        let call = pin::Call {
            name: "call",
            method,
            row: &row,
            query: Some(query),
        };
        let resolved = resolve_all(world, &references);
        Some(
            pin::apply(&call, Some(&mut json), &references, &resolved, false).map(|p| {
                let path = p.path.unwrap_or_else(|| path.to_string());
                (
                    table::rule_for(method, &path).expect("a pinned path matches its row"),
                    p.query,
                    json,
                )
            }),
        )
    }

    /// Whether `name` is an id (what a rename cannot move).
    fn is_id(object: Object, name: &str) -> bool {
        let bare = name.strip_prefix("sha256:").unwrap_or(name);
        object == Object::Volume
            || (bare.len() == 64 && bare.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    fn check_forwarded(
        method: &str,
        row: &Row,
        query: Option<&str>,
        json: &mut Map<String, Value>,
    ) -> Result<(), TestCaseError> {
        let references = refs::of_call(row, query, Some(json))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (before, renamed) = (world(false), world(true));
        for r in &references {
            let removal_by_name = r.object == Object::Image
                && r.site == Site::Path
                && method == "DELETE"
                && !is_id(r.object, &r.name);
            match r.role {
                Role::Acts | Role::Joins if removal_by_name => {
                    prop_assert!(
                        resolve(&before, r.object, &r.name).is_some_and(|o| o.ours),
                        "{:?}",
                        r
                    );
                }
                Role::Acts | Role::Joins => {
                    prop_assert!(
                        is_id(r.object, &r.name),
                        "forwarded by a name, not an id: {:?}",
                        r
                    );
                    let after = resolve(&renamed, r.object, &r.name);
                    prop_assert!(
                        after.is_some_and(|o| o.ours),
                        "not the session's after renames: {:?}",
                        r
                    );
                }
                Role::Writes | Role::Pulls => {
                    let holder = resolve(&before, r.object, &r.name);
                    prop_assert!(
                        holder.is_none_or(|h| h.ours),
                        "writes another's name: {:?}",
                        r
                    );
                }
            }
        }
        Ok(())
    }

    fn rows() -> impl Strategy<Value = (&'static str, &'static str, Rule)> {
        proptest::sample::select(table::rows().to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn every_row_is_refused_or_forwarded_with_checked_ids(
            (method, pattern, rule) in rows(),
            path_names in path_targets(true),
            body in slots(&BODY),
            query in slots(&QUERY),
            pick in 0usize..8,
            upper in any::<bool>(),
        ) {
            let path = path_for(pattern, &path_names[path_kind(rule)], pick);
            let Some(outcome) = admit(&world(false), method, &path, &query_with(&query), &body_with(&body, upper)) else {
                return Ok(());
            };
            if let Ok((row, query, mut json)) = outcome {
                check_forwarded(method, &row, query.as_deref(), &mut json)?;
            }
        }

        #[test]
        fn every_row_naming_only_anothers_objects_is_refused(
            (method, pattern, _) in rows(),
            path_name in target(None, false),
            t in proptest::collection::vec(target(None, false), 14),
            pick in 0usize..8,
        ) {
            let path = path_for(pattern, &path_name, pick);
            let query = query_with(&t);
            let body = body_with(&t, false);
            let Some(outcome) = admit(&world(false), method, &path, &query, &body) else {
                return Ok(());
            };
            let row = table::rule_for(method, &path).unwrap();
            let mut json = host_config::read_body(&serde_json::to_vec(&body).unwrap()).unwrap();
            // Every reference names another's object, or (a name written) nothing at all.
            let world = world(false);
            let names: Vec<Reference> = refs::of_call(&row, Some(&query), Some(&mut json))
                .unwrap()
                .into_iter()
                .filter(|r| matches!(r.role, Role::Acts | Role::Joins) || resolve(&world, r.object, &r.name).is_some_and(|o| !o.ours))
                .collect();
            prop_assert!(names.is_empty() || outcome.is_err(), "{} {} was forwarded: {:?}", method, path, names);
        }
    }
}
