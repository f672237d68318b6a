//! The order of a sweep: which container to remove next, and when each network or volume may go.
//!
//! dockerd removes networks one at a time (about 0.2 s each on the machines measured, mostly spent
//! waiting, so parallel requests gain nothing). Removed after every container, 10 networks add 2 s to
//! a sweep. Removed as soon as the last container of the sweep that uses them is gone, they overlap
//! with the container removals still running and cost almost nothing. So containers are taken network
//! by network, the smallest networks first, and containers on no network of the sweep last, which
//! leaves the network removals time to catch up.
//!
//! Two rules keep dockerd's bookkeeping intact:
//! - At most `PER_NETWORK` removals are in flight on one network. dockerd 20.10 keeps a per-network
//!   endpoint count that concurrent endpoint deletions on the same network can leave too high, and
//!   the network can then never be removed until the daemon restarts (moby/moby#43286). Measured on
//!   sweeps of 100 containers over 10 networks: with all 8 removals on one network, 2 of 33 sweeps
//!   left such a network; with about one per network, none of 31; with at most 2, none of 40.
//! - A network or volume is released only after the removal of every container of the sweep that uses
//!   it has returned: dockerd answers a container's removal only after releasing its endpoints. The
//!   sweep's own containers are never force-disconnected instead.

use std::collections::HashMap;

use super::resource::{Kind, Resource};

/// Removals in flight on one network at most (see the module comment).
const PER_NETWORK: usize = 2;

/// A network or volume whose users are gone (or that had none).
#[derive(Debug, Clone, Copy)]
pub struct Released<'a> {
    pub resource: &'a Resource,
    /// False when a container using it could not be removed: the engine will refuse to remove it, so
    /// one attempt is enough.
    pub users_removed: bool,
}

/// A network or volume with containers of the sweep still using it.
struct Waiting<'a> {
    resource: &'a Resource,
    users: usize,
    users_removed: bool,
    /// Removals of its users now in flight.
    in_flight: usize,
}

/// The removal order of one sweep's resources.
pub struct Plan<'a> {
    /// Containers not handed out yet, in removal order.
    pending: Vec<&'a Resource>,
    ready: Vec<Released<'a>>,
    waiting: Vec<Waiting<'a>>,
    /// Container id → indexes into `waiting` of the networks and volumes it uses.
    uses: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Plan<'a> {
    pub fn new(resources: &'a [Resource]) -> Plan<'a> {
        let mut pending: Vec<&Resource> = of(resources, Kind::Container).collect();
        // Each network, volume and image with the containers of the sweep that use it.
        let mut others: Vec<(&Resource, Vec<&Resource>)> = of(resources, Kind::Network)
            .chain(of(resources, Kind::Volume))
            .chain(of(resources, Kind::Image))
            .map(|r| (r, pending.iter().copied().filter(|c| uses(c, r)).collect()))
            .collect();
        // Networks with the fewest users first: they are released soonest.
        others.sort_by_key(|(r, users)| (r.kind, users.len()));
        let mut uses_map: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut waiting = Vec::new();
        let mut ready = Vec::new();
        for (resource, users) in others {
            if users.is_empty() {
                ready.push(Released {
                    resource,
                    users_removed: true,
                });
                continue;
            }
            for user in &users {
                uses_map.entry(&user.id).or_default().push(waiting.len());
            }
            waiting.push(Waiting {
                resource,
                users: users.len(),
                users_removed: true,
                in_flight: 0,
            });
        }
        // Grouped by the first network they use, in the order of `waiting`; containers on no network
        // of the sweep last. The sort is stable, so the engine's listing order holds within a group.
        pending.sort_by_key(|c| {
            uses_map
                .get(c.id.as_str())
                .and_then(|w| {
                    w.iter()
                        .copied()
                        .find(|&i| waiting[i].resource.kind == Kind::Network)
                })
                .unwrap_or(usize::MAX)
        });
        Plan {
            pending,
            ready,
            waiting,
            uses: uses_map,
        }
    }

    /// The networks and volumes no container of the sweep uses: free to remove at once.
    pub fn take_ready(&mut self) -> Vec<Released<'a>> {
        std::mem::take(&mut self.ready)
    }

    /// The next container to remove: the first in order none of whose networks already has
    /// `PER_NETWORK` removals in flight. `None` when every container has been handed out, or when
    /// the rest must wait for removals in flight to return.
    pub fn next_container(&mut self) -> Option<&'a Resource> {
        let at = self.pending.iter().position(|c| {
            self.uses_of(&c.id).all(|i| {
                let w = &self.waiting[i];
                w.resource.kind != Kind::Network || w.in_flight < PER_NETWORK
            })
        })?;
        let container = self.pending.remove(at);
        for i in self.uses.get(container.id.as_str()).into_iter().flatten() {
            self.waiting[*i].in_flight += 1;
        }
        Some(container)
    }

    /// Records that a container's removal returned; gives the networks and volumes it was the last
    /// user of.
    pub fn container_done(&mut self, id: &str, removed: bool) -> Vec<Released<'a>> {
        let mut released = Vec::new();
        for i in self.uses.remove(id).unwrap_or_default() {
            let w = &mut self.waiting[i];
            w.users -= 1;
            w.in_flight = w.in_flight.saturating_sub(1);
            w.users_removed &= removed;
            if w.users == 0 {
                released.push(Released {
                    resource: w.resource,
                    users_removed: w.users_removed,
                });
            }
        }
        released
    }

    fn uses_of(&self, id: &str) -> impl Iterator<Item = usize> + '_ {
        self.uses.get(id).into_iter().flatten().copied()
    }
}

fn of(resources: &[Resource], kind: Kind) -> impl Iterator<Item = &Resource> {
    resources.iter().filter(move |r| r.kind == kind)
}

/// Whether `container` is attached to the network or mounts the volume `other`. A container that was
/// only created names its networks without their ids.
fn uses(container: &Resource, other: &Resource) -> bool {
    match other.kind {
        Kind::Network => container
            .networks
            .iter()
            .any(|n| *n == other.id || *n == other.name),
        Kind::Volume => container.volumes.contains(&other.name),
        // An image goes after every container of the sweep: one of them may run it.
        Kind::Image => true,
        Kind::Container => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(kind: Kind, id: &str, networks: &[&str], volumes: &[&str]) -> Resource {
        Resource {
            kind,
            id: id.into(),
            name: format!("{id}-name"),
            networks: networks.iter().map(|s| s.to_string()).collect(),
            volumes: volumes.iter().map(|s| s.to_string()).collect(),
            ..Resource::default()
        }
    }

    /// A sweep's resources from a compact spec: `CONTAINERS | NETWORKS | VOLUMES`, space-separated;
    /// a container is `id`, `id@net1,net2` and/or `id+volume-name`.
    fn sweep(spec: &str) -> Vec<Resource> {
        let mut parts = spec.split('|').map(str::split_whitespace);
        let mut out = Vec::new();
        for c in parts.next().into_iter().flatten() {
            let (c, volume) = c.split_once('+').map_or((c, None), |(c, v)| (c, Some(v)));
            let (id, nets) = c.split_once('@').unwrap_or((c, ""));
            let nets: Vec<&str> = nets.split(',').filter(|n| !n.is_empty()).collect();
            out.push(resource(Kind::Container, id, &nets, volume.as_slice()));
        }
        for kind in [Kind::Network, Kind::Volume] {
            for id in parts.next().into_iter().flatten() {
                out.push(resource(kind, id, &[], &[]));
            }
        }
        out
    }

    /// Hands out every container, each returning (removed) before the next is asked for.
    fn order(plan: &mut Plan) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(c) = plan.next_container() {
            out.push(c.id.clone());
            plan.container_done(&c.id, true);
        }
        out
    }

    fn released(rs: &[Released]) -> Vec<(String, bool)> {
        rs.iter()
            .map(|r| (r.resource.id.clone(), r.users_removed))
            .collect()
    }

    #[test]
    fn containers_are_grouped_by_network_smallest_first_loose_ones_last() {
        let resources = sweep("loose+vol-name big1@big small1@small big2@big | big small | vol");
        let mut plan = Plan::new(&resources);
        assert_eq!(order(&mut plan), ["small1", "big1", "big2", "loose"]);
    }

    /// The containers handed out until the plan says wait (none returns meanwhile).
    fn handed_out(plan: &mut Plan) -> Vec<String> {
        std::iter::from_fn(|| plan.next_container().map(|c| c.id.clone())).collect()
    }

    #[test]
    fn no_more_than_two_removals_are_in_flight_on_one_network() {
        // (sweep, handed out at first, the container that returns, handed out then)
        let cases = [
            // a3 waits for a removal on a to return; the loose one goes meanwhile.
            (
                "a1@a a2@a a3@a b1@b loose | a b",
                &["b1", "a1", "a2", "loose"][..],
                "a1",
                "a3",
            ),
            // A container on two networks takes a place on both: then a holds ab and a1.
            (
                "a1@a a2@a ab@a,b b1@b | a b",
                &["ab", "b1", "a1"][..],
                "ab",
                "a2",
            ),
        ];
        for (spec, first, returns, then) in cases {
            let resources = sweep(spec);
            let mut plan = Plan::new(&resources);
            assert_eq!(handed_out(&mut plan), first, "{spec}");
            plan.container_done(returns, true);
            assert_eq!(handed_out(&mut plan), [then], "{spec}");
        }
    }

    #[test]
    fn a_network_is_released_when_its_last_container_is_done() {
        let resources = sweep("a@net b@net+vol-name | net empty | vol");
        let mut plan = Plan::new(&resources);
        assert_eq!(released(&plan.take_ready()), [("empty".to_string(), true)]);
        assert!(plan.take_ready().is_empty(), "ready is handed out once");
        assert!(plan.container_done("a", true).is_empty());
        assert_eq!(
            released(&plan.container_done("b", true)),
            [("net".to_string(), true), ("vol".to_string(), true)]
        );
    }

    #[test]
    fn a_container_that_failed_marks_what_it_uses() {
        let resources = sweep("a@net b@net | net");
        let mut plan = Plan::new(&resources);
        assert!(plan.container_done("b", false).is_empty());
        assert_eq!(
            released(&plan.container_done("a", true)),
            [("net".to_string(), false)]
        );
    }

    #[test]
    fn networks_match_by_id_or_by_name_for_created_containers() {
        let resources = sweep("running@net created@net-name | net");
        let mut plan = Plan::new(&resources);
        assert!(plan.take_ready().is_empty());
        assert!(plan.container_done("created", true).is_empty());
        assert_eq!(plan.container_done("running", true).len(), 1);
    }

    #[test]
    fn a_container_on_two_networks_is_counted_on_both() {
        let resources = sweep("both@n1,n2 only2@n2 | n1 n2");
        let mut plan = Plan::new(&resources);
        assert_eq!(
            released(&plan.container_done("both", true)),
            [("n1".to_string(), true)]
        );
        assert_eq!(
            released(&plan.container_done("only2", true)),
            [("n2".to_string(), true)]
        );
        assert!(plan.container_done("unknown", true).is_empty());
    }
}
