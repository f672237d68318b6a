//! The proxy's endpoint table: every Engine API call it forwards, each with its rule. A call that is not
//! in the table is refused (403), so a new or forgotten endpoint can never act outside the session
//! unnoticed: deny by default. Paths are matched after the version prefix is taken off and
//! percent-escapes are decoded, as the engine routes them; `HEAD` matches the `GET` rows.
//!
//! In a pattern, `*` is one path segment (an id or a name), `**` one or more (image names have
//! slashes), and `{a,b}` any of the listed segments. The first matching row wins. The rules:
//! - `Pass`: reads, and calls that change nothing that exists (ping, pull, events, wait).
//! - `Label`: creates; the session's labels are merged into the body (`rewrite::merge_labels`).
//! - `LabelBuild`: builds; labels go in the query, and the builder removes its containers (`forcerm`).
//! - `LabelImport`: image creates; an import gets the labels as `LABEL` changes, a pull passes.
//! - `Scope`: prunes; the session's label is added to the filters, so only its own go.
//! - `Own`: an action on one object (the `*` or `**`), forwarded only when the engine says the object is
//!   the session's; `Start`, `Update`, `Connect`, `Tag` and `Rename` are `Own` with more besides.
//! - `Refuse`: known, and never forwarded, with the reason.
//!
//! Every object a call names besides the path's (in its query or body) is found by `refs`, which reads
//! each row's rule: what the call acts on or joins must be the session's, a name it writes must not be
//! another's, and the call is forwarded with the ids that were checked (`policy`).
//!
//! `proxy.allow-foreign = true` lifts the ownership checks; `proxy.allow = [...]` forwards listed calls
//! that the table does not list or refuses, as they are (`config::proxy`).

/// Which create call a request is, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Container,
    Network,
    Volume,
    /// `POST /commit`: its body is the new image's config, labels included.
    Commit,
}

/// What kind of object an `Own` row acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    Container,
    Exec,
    Image,
    Network,
    Volume,
}

/// What the proxy does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Pass,
    Label(Create),
    LabelBuild,
    /// An image create: an import gets the labels as `LABEL` changes; a pull passes.
    LabelImport,
    Scope,
    Own(Object),
    /// A container start: the container must be ours and the body empty (HostConfig at start, which
    /// API versions before 1.24 allow, would create what no create body showed).
    Start,
    /// `docker update`: ours, and within the resource guard's `max-memory`.
    Update,
    /// Network connect/disconnect: the network and the body's container both ours.
    Connect,
    /// `docker tag`: the source ours, and the name it writes nobody else's.
    Tag,
    /// `docker rename`: ours, and the new name nobody else's.
    Rename,
    Refuse(&'static str),
}

use Object::*;
use Rule::*;

#[rustfmt::skip]
const TABLE: &[(&str, &str, Rule)] = &[
    ("GET",    "/{_ping,version,info,events}",                   Pass),
    ("POST",   "/auth",                                          Pass),
    ("GET",    "/system/df",                                     Pass),
    ("POST",   "/session",                                       Pass), // BuildKit's session
    ("GET",    "/distribution/**/json",                          Pass),
    // Containers
    ("GET",    "/containers/json",                               Pass),
    ("POST",   "/containers/create",                             Label(Create::Container)),
    ("POST",   "/containers/prune",                              Scope),
    ("GET",    "/containers/*/{json,top,logs,changes,export,stats,archive}", Pass),
    ("GET",    "/containers/*/attach/ws",                        Own(Container)),
    ("POST",   "/containers/*/wait",                             Pass),
    ("POST",   "/containers/*/start",                            Start),
    ("POST",   "/containers/*/update",                           Update),
    ("POST",   "/containers/*/rename",                           Rename),
    ("POST",   "/containers/*/{stop,restart,kill,pause,unpause,resize,attach,exec}", Own(Container)),
    ("PUT",    "/containers/*/archive",                          Own(Container)),
    ("DELETE", "/containers/*",                                  Own(Container)),
    ("GET",    "/exec/*/json",                                   Pass),
    ("POST",   "/exec/*/{start,resize}",                         Own(Exec)),
    // Images
    ("GET",    "/images/{json,search,get}",                      Pass),
    ("POST",   "/images/create",                                 LabelImport), // pulls as they are
    ("POST",   "/images/load",                                   Refuse("a load writes the names its archive holds, which may be other images', and adds images no label reaches, so the sweep would never remove them; load images before the run")),
    ("POST",   "/images/prune",                                  Scope),
    ("POST",   "/build",                                         LabelBuild),
    ("POST",   "/build/prune",                                   Refuse("the build cache has no labels, so a prune cannot be kept to the session")),
    ("POST",   "/commit",                                        Label(Create::Commit)),
    ("GET",    "/images/**/{json,history,get}",                  Pass),
    ("POST",   "/images/**/push",                                Pass),
    ("POST",   "/images/**/tag",                                 Tag),
    ("DELETE", "/images/**",                                     Own(Image)),
    // Networks and volumes
    ("GET",    "/{networks,volumes}",                            Pass),
    ("GET",    "/{networks,volumes}/*",                          Pass),
    ("POST",   "/networks/create",                               Label(Create::Network)),
    ("POST",   "/volumes/create",                                Label(Create::Volume)),
    ("POST",   "/{networks,volumes}/prune",                      Scope),
    ("POST",   "/networks/*/{connect,disconnect}",               Connect),
    ("DELETE", "/networks/*",                                    Own(Network)),
    ("DELETE", "/volumes/*",                                     Own(Volume)),
    // Swarm and plugins: reads only; their creates make containers no label reaches.
    ("GET",    "/{swarm,nodes,services,tasks,secrets,configs,plugins}", Pass),
    ("GET",    "/{nodes,services,tasks,secrets,configs}/*",      Pass),
    ("GET",    "/{services,tasks}/*/logs",                       Pass),
];

/// A call's row: its rule, and where in the path the object the pattern's `*`/`**` names stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub rule: Rule,
    /// The path's segments (without the leading `/`).
    pub segments: Vec<String>,
    /// The object's segments, `start..end` of `segments`: one for `*`, one or more for `**`.
    pub object: Option<std::ops::Range<usize>>,
}

impl Row {
    /// The object the path names (an image name keeps its slashes).
    pub fn object(&self) -> Option<String> {
        self.object.clone().map(|r| self.segments[r].join("/"))
    }

    /// The path with the object replaced by `with` (one segment).
    pub fn path_with(&self, with: &str) -> String {
        let Some(range) = self.object.clone() else {
            return format!("/{}", self.segments.join("/"));
        };
        let mut segments: Vec<&str> = self.segments[..range.start]
            .iter()
            .map(String::as_str)
            .collect();
        segments.push(with);
        segments.extend(self.segments[range.end..].iter().map(String::as_str));
        format!("/{}", segments.join("/"))
    }
}

/// The row a call matches, if any.
pub fn rule_for(method: &str, path: &str) -> Option<Row> {
    let method = if method == "HEAD" { "GET" } else { method };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    TABLE.iter().find_map(|(m, pattern, rule)| {
        if *m != method {
            return None;
        }
        let mut object = None;
        matches(&pattern_segments(pattern), &segments, 0, &mut object).then(|| Row {
            rule: *rule,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            object,
        })
    })
}

/// The row of a call `proxy.allow` lets through: forwarded as it is.
pub fn passed(path: &str) -> Row {
    Row {
        rule: Rule::Pass,
        segments: path
            .trim_start_matches('/')
            .split('/')
            .map(str::to_string)
            .collect(),
        object: None,
    }
}

/// Every row, as `(method, pattern, rule)`: for tests that must cover the whole table.
#[cfg(test)]
pub fn rows() -> &'static [(&'static str, &'static str, Rule)] {
    TABLE
}

/// Whether a `METHOD /pattern` of `proxy.allow` matches the call (same pattern language).
pub fn allowed(entry: &str, method: &str, path: &str) -> bool {
    let Some((m, pattern)) = entry.split_once(' ') else {
        return false;
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    m.eq_ignore_ascii_case(method)
        && matches(&pattern_segments(pattern.trim()), &segments, 0, &mut None)
}

fn pattern_segments(pattern: &str) -> Vec<&str> {
    pattern.trim_start_matches('/').split('/').collect()
}

/// Whether `path` (starting at segment `at` of the whole path) matches `pattern`; the first wildcard's
/// span is put in `object`.
fn matches(
    pattern: &[&str],
    path: &[&str],
    at: usize,
    object: &mut Option<std::ops::Range<usize>>,
) -> bool {
    match (pattern.split_first(), path.split_first()) {
        (None, None) => true,
        (Some((&"**", rest)), Some(_)) => (1..=path.len()).rev().any(|take| {
            let found = matches(rest, &path[take..], at + take, &mut None);
            if found && object.is_none() {
                *object = Some(at..at + take);
            }
            found
        }),
        (Some((&"*", rest)), Some((segment, after))) if !segment.is_empty() => {
            let found = matches(rest, after, at + 1, &mut None);
            if found && object.is_none() {
                *object = Some(at..at + 1);
            }
            found
        }
        (Some((p, rest)), Some((segment, after))) => {
            let literal = match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(choices) => choices.split(',').any(|c| c == *segment),
                None => p == segment,
            };
            literal && matches(rest, after, at + 1, object)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(method: &str, path: &str) -> Option<Rule> {
        rule_for(method, path).map(|r| r.rule)
    }

    fn object(method: &str, path: &str) -> Option<String> {
        rule_for(method, path).and_then(|r| r.object())
    }

    #[test]
    fn reads_pass_and_creates_are_labelled() {
        assert_eq!(rule("GET", "/_ping"), Some(Pass));
        assert_eq!(rule("HEAD", "/_ping"), Some(Pass));
        assert_eq!(rule("GET", "/containers/abc/logs"), Some(Pass));
        assert_eq!(
            rule("POST", "/containers/create"),
            Some(Label(Create::Container))
        );
        assert_eq!(rule("POST", "/build"), Some(LabelBuild));
        assert_eq!(rule("POST", "/volumes/prune"), Some(Scope));
    }

    #[test]
    fn actions_name_their_object() {
        assert_eq!(rule("DELETE", "/containers/db"), Some(Own(Container)));
        assert_eq!(object("DELETE", "/containers/db"), Some("db".into()));
        assert_eq!(object("POST", "/containers/db/kill"), Some("db".into()));
        assert_eq!(rule("POST", "/containers/db/update"), Some(Update));
        assert_eq!(rule("POST", "/exec/e1/start"), Some(Own(Exec)));
        // Image names have slashes.
        assert_eq!(
            object("DELETE", "/images/registry:5000/team/pg:15"),
            Some("registry:5000/team/pg:15".into())
        );
        assert_eq!(
            object("POST", "/images/team/pg:15/tag"),
            Some("team/pg:15".into())
        );
        assert_eq!(rule("GET", "/images/team/pg/json"), Some(Pass));
        assert_eq!(rule("POST", "/images/team/pg:15/tag"), Some(Tag));
        assert_eq!(
            rule_for("DELETE", "/images/team/pg:15")
                .unwrap()
                .path_with("sha256:ab"),
            "/images/sha256:ab"
        );
        assert_eq!(
            rule_for("POST", "/containers/db/kill")
                .unwrap()
                .path_with("0123"),
            "/containers/0123/kill"
        );
        assert_eq!(rule("POST", "/networks/n1/connect"), Some(Connect));
    }

    #[test]
    fn what_is_not_in_the_table_is_not_forwarded() {
        assert_eq!(rule("POST", "/plugins/pull"), None);
        assert_eq!(rule("POST", "/services/create"), None);
        assert_eq!(rule("POST", "/swarm/init"), None);
        assert_eq!(rule("DELETE", "/containers/a/b"), None);
        assert_eq!(rule("DELETE", "/containers/"), None);
        assert_eq!(rule("PATCH", "/containers/json"), None);
        assert_eq!(rule("GET", "/containers/json/extra"), None);
        assert!(matches!(rule("POST", "/build/prune"), Some(Refuse(_))));
        assert!(matches!(rule("POST", "/images/load"), Some(Refuse(_))));
    }

    #[test]
    fn allow_entries_use_the_same_patterns() {
        assert!(allowed("POST /plugins/pull", "POST", "/plugins/pull"));
        assert!(allowed(
            "post /plugins/*/enable",
            "POST",
            "/plugins/x/enable"
        ));
        assert!(!allowed(
            "POST /plugins/*/enable",
            "POST",
            "/plugins/enable"
        ));
        assert!(!allowed("nonsense", "POST", "/plugins/pull"));
    }
}
