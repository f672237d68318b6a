//! Deciding a call from what the engine said of every object it names, and pinning it: each object the
//! call acts on or joins must be the session's and is then written as its immutable id; each name it
//! writes must not be held by another's object. Pure functions over `refs`' references and what
//! `policy` resolved, so that every row of the table can be proven by a property test
//! (`props::pinned`): a call is refused, or forwarded naming only what was checked.

use std::collections::HashMap;

use hyper::StatusCode;
use serde_json::{Map, Value};

use super::query::{self, QueryRefusal};
use super::refs::{self, Reference, Role, Site};
use super::table::{Object, Row};
use cleantest_contract::CONFIG_PATH;

/// What the engine said of one object a call names (None: it has no such object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The immutable id: a container's, network's, exec's or image's `Id`; a volume's name.
    pub id: String,
    /// Whether it is the session's (its labels, or an anonymous volume the proxy recorded).
    pub ours: bool,
    /// An image made on this engine (no registry digest): a pull would take its name away.
    pub made_here: bool,
    /// An image reference that names it as one of its own tags or digests, spelled out in full (a
    /// removal by name untags just that name; one by id would remove them all).
    pub named: Option<String>,
}

/// What each reference resolved to, by kind and name.
pub type Resolutions = HashMap<(Object, String), Option<Resolved>>;

/// Why a call is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "cleantest proxy: `{call}` {verb} {kind} {name}, which is not this session's; the proxy refuses \
         calls on what the session did not create. Set `proxy.allow-foreign = true` in the profile \
         ({CONFIG_PATH}) to allow them"
    )]
    Foreign {
        call: String,
        verb: &'static str,
        kind: &'static str,
        name: String,
    },
    #[error(
        "cleantest proxy: `{call}` would write the name {name}, which {kind} {holder} holds and which is \
         not this session's: it would lose the name. Choose another name, or set \
         `proxy.allow-foreign = true` in the profile ({CONFIG_PATH}) to allow it"
    )]
    NameHeld {
        call: String,
        kind: &'static str,
        name: String,
        holder: String,
    },
    #[error("No such {kind}: {name}")]
    Missing { kind: &'static str, name: String },
    #[error("cleantest proxy: {0}")]
    BadRequest(String),
    /// The engine's own answer to a question the proxy asked about the call.
    #[error("{message}")]
    Engine { status: u16, message: String },
}

impl Denied {
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::Foreign { .. } | Denied::NameHeld { .. } => StatusCode::FORBIDDEN,
            Denied::Missing { .. } => StatusCode::NOT_FOUND,
            Denied::BadRequest(_) => StatusCode::BAD_REQUEST,
            Denied::Engine { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }
}

impl From<QueryRefusal> for Denied {
    fn from(refusal: QueryRefusal) -> Denied {
        Denied::BadRequest(refusal.to_string())
    }
}

/// An object's kind as messages name it.
pub fn kind_name(object: Object) -> &'static str {
    match object {
        Object::Container => "container",
        Object::Exec => "exec instance",
        Object::Image => "image",
        Object::Network => "network",
        Object::Volume => "volume",
    }
}

/// What each acted-on or joined object is pinned to, by kind and name as the call gave it.
pub type Pins = HashMap<(Object, String), String>;

/// A call as admission has it.
pub struct Call<'a> {
    /// `METHOD /path`, for messages.
    pub name: &'a str,
    pub method: &'a str,
    pub row: &'a Row,
    pub query: Option<&'a str>,
}

/// A call decided and pinned: its path and query as they are to be sent (the body is pinned in place).
#[derive(Debug)]
pub struct Pinned {
    /// The path with its object pinned; None when it has no object to pin.
    pub path: Option<String>,
    pub query: Option<String>,
    pub pins: Pins,
}

/// Decides `call` from what its `references` resolved to and pins it: path, query and `json` (the body
/// the references were found in, pinned in place).
pub fn apply(
    call: &Call<'_>,
    json: Option<&mut Map<String, Value>>,
    references: &[Reference],
    resolved: &Resolutions,
    allow_foreign: bool,
) -> Result<Pinned, Denied> {
    let pins = decide(call.name, call.method, references, resolved, allow_foreign)?;
    if let (Some(json), Some(kind)) = (json, refs::body_of(call.row.rule)) {
        body(kind, json, &pins);
    }
    Ok(Pinned {
        path: path(call.row, references, &pins),
        query: query(call.query, references, &pins)?,
        pins,
    })
}

/// Checks every reference against what it resolved to; the pins to forward with, or why not.
fn decide(
    call: &str,
    method: &str,
    references: &[Reference],
    resolved: &Resolutions,
    allow_foreign: bool,
) -> Result<Pins, Denied> {
    let mut pins = Pins::new();
    for reference in references {
        let key = (reference.object, reference.name.clone());
        let found = resolved.get(&key).cloned().flatten();
        let kind = kind_name(reference.object);
        match (reference.role, found) {
            (Role::Acts | Role::Joins, None) => {
                return Err(Denied::Missing {
                    kind,
                    name: reference.name.clone(),
                });
            }
            (role @ (Role::Acts | Role::Joins), Some(object)) => {
                if !object.ours && !allow_foreign {
                    return Err(Denied::Foreign {
                        call: call.to_string(),
                        verb: if role == Role::Acts {
                            "acts on"
                        } else {
                            "joins"
                        },
                        kind,
                        name: reference.name.clone(),
                    });
                }
                pins.insert(key, pin_of(reference, method, &object));
            }
            (Role::Writes | Role::Pulls, Some(holder))
                if !holder.ours
                    && !allow_foreign
                    && (reference.role == Role::Writes || holder.made_here) =>
            {
                return Err(Denied::NameHeld {
                    call: call.to_string(),
                    kind,
                    name: reference.name.clone(),
                    holder: holder.id,
                });
            }
            (Role::Writes | Role::Pulls, _) => {}
        }
    }
    Ok(pins)
}

/// What a checked object is written as: its id, except an image removed by one of its names, which
/// stays a removal of that name (spelled out with its tag, so it can never fall back to an id prefix).
fn pin_of(reference: &Reference, method: &str, object: &Resolved) -> String {
    match (&object.named, reference.object, reference.site, method) {
        (Some(named), Object::Image, Site::Path, "DELETE") => named.clone(),
        _ => object.id.clone(),
    }
}

/// The path of `row` with its object pinned (unchanged when it has none to pin).
fn path(row: &Row, references: &[Reference], pins: &Pins) -> Option<String> {
    let reference = references.iter().find(|r| r.site == Site::Path)?;
    let pinned = pins.get(&(reference.object, reference.name.clone()))?;
    Some(row.path_with(&encode_segment(pinned)))
}

/// The query with its acted-on and joined objects pinned.
fn query(
    original: Option<&str>,
    references: &[Reference],
    pins: &Pins,
) -> Result<Option<String>, QueryRefusal> {
    let mut query = original.map(str::to_string);
    for reference in references {
        let (Site::Query(key), Some(pinned)) = (
            reference.site,
            pins.get(&(reference.object, reference.name.clone())),
        ) else {
            continue;
        };
        let value = match key {
            "networkmode" => {
                let mode = query::first(query.as_deref(), key)?.unwrap_or_default();
                refs::pinned_mode(&mode, pinned)
            }
            _ => pinned.to_string(),
        };
        query = Some(query::replace(query.as_deref(), key, &value)?);
    }
    Ok(query)
}

/// The body with every acted-on and joined object pinned; written names stay as they are.
fn body(kind: refs::Body, root: &mut Map<String, Value>, pins: &Pins) {
    refs::visit(kind, root, &mut |object, role, name| {
        if matches!(role, Role::Acts | Role::Joins)
            && let Some(pinned) = pins.get(&(object, name.clone()))
        {
            *name = pinned.clone();
        }
    });
}

/// A path segment as sent: everything but what a name or id may hold unescaped is escaped.
pub fn encode_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b':'
            | b'@'
            | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
