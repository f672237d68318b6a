//! A container, network or volume as the engine lists it: what the sweep, its plan, the kept table and
//! the leak report need to know of it.

use std::collections::HashMap;

/// One resource found by a sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    pub kind: Kind,
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
    /// Seconds since the epoch, when the engine says.
    pub created: Option<i64>,
    /// Containers: image, state and published ports, for the kept table.
    pub image: String,
    pub state: String,
    pub ports: String,
    /// Containers: the networks they are attached to (ids; names while only created) and the named
    /// volumes they mount, so those wait for them.
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    #[default]
    Container,
    Network,
    Volume,
    Image,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Network => "network",
            Kind::Volume => "volume",
            Kind::Image => "image",
        }
    }
}
