//! The profile's `proxy` key: `proxy = false` turns the labelling proxy off; as a table it also says
//! what the proxy forwards beyond its endpoint table (`docker::proxy::table`):
//!
//! ```toml
//! [profile.default]
//! proxy.allow-foreign = true           # actions on containers, networks, volumes not of the session
//! proxy.allow = ["POST /plugins/pull"] # calls the table does not list, forwarded as they are
//! proxy.refuse-host-access = true      # no privileged containers, host namespaces or host binds
//! ```

use serde::Deserialize;

pub(crate) use crate::docker::proxy::ProxyPolicy;

/// `proxy` as a profile writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum ProxyConfig {
    Enabled(bool),
    Table(ProxyTable),
}

/// `proxy` written as a table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ProxyTable {
    pub enabled: Option<bool>,
    pub allow_foreign: Option<bool>,
    pub allow: Option<Vec<String>>,
    pub refuse_host_access: Option<bool>,
}

impl ProxyConfig {
    fn table(&self) -> ProxyTable {
        match self {
            ProxyConfig::Enabled(on) => ProxyTable {
                enabled: Some(*on),
                ..ProxyTable::default()
            },
            ProxyConfig::Table(table) => table.clone(),
        }
    }

    /// Layers `self` over `base`, key by key.
    pub(crate) fn over(&self, base: &ProxyConfig) -> ProxyConfig {
        let (top, base) = (self.table(), base.table());
        ProxyConfig::Table(ProxyTable {
            enabled: top.enabled.or(base.enabled),
            allow_foreign: top.allow_foreign.or(base.allow_foreign),
            allow: top.allow.or(base.allow),
            refuse_host_access: top.refuse_host_access.or(base.refuse_host_access),
        })
    }

    /// Whether the proxy runs (it does unless turned off).
    pub(crate) fn enabled(&self) -> bool {
        self.table().enabled.unwrap_or(true)
    }

    /// The policy, or what is wrong with an `allow` entry.
    pub(crate) fn policy(&self) -> Result<ProxyPolicy, String> {
        let table = self.table();
        let allow = table.allow.unwrap_or_default();
        for entry in &allow {
            let well_formed = entry
                .split_once(' ')
                .is_some_and(|(m, p)| !m.is_empty() && p.trim().starts_with('/'));
            if !well_formed {
                return Err(format!(
                    "`proxy.allow` entry {entry:?} is not `METHOD /path` (for example \"POST /plugins/pull\"; \
                     `*` stands for one path segment)"
                ));
            }
        }
        Ok(ProxyPolicy {
            allow_foreign: table.allow_foreign.unwrap_or(false),
            allow,
            refuse_host_access: table.refuse_host_access.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        proxy: ProxyConfig,
    }

    fn read(text: &str) -> ProxyConfig {
        toml::from_str::<Holder>(text).unwrap().proxy
    }

    #[test]
    fn a_bool_or_a_table() {
        assert!(!read("proxy = false").enabled());
        let table = read("proxy.allow-foreign = true\nproxy.allow = [\"POST /plugins/pull\"]");
        assert!(table.enabled());
        let policy = table.policy().unwrap();
        assert!(policy.allow_foreign);
        assert_eq!(policy.allow, ["POST /plugins/pull"]);
        assert!(!policy.refuse_host_access);
        let refusing = read("proxy.refuse-host-access = true").over(&table);
        assert!(refusing.policy().unwrap().refuse_host_access);
        assert!(read("proxy.allow = [\"/plugins\"]").policy().is_err());
        assert!(toml::from_str::<Holder>("proxy.allow-foreing = true").is_err());
    }

    #[test]
    fn layered_key_by_key() {
        let base = read("proxy.allow-foreign = true");
        let top = read("proxy = true");
        let both = top.over(&base);
        assert!(both.enabled());
        assert!(both.policy().unwrap().allow_foreign);
        assert!(!read("proxy = false").over(&base).enabled());
    }
}
