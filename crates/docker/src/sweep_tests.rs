//! The sweep's ordering and fault handling against a fake engine: when networks and volumes are
//! removed relative to their containers, refusals, failures and foreign endpoints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::block_on;
use crate::fake::{FakeEngine, now};

fn container(id: &str, networks: &[&str], volumes: &[&str]) -> Resource {
    Resource {
        kind: Kind::Container,
        id: id.into(),
        name: id.into(),
        networks: networks.iter().map(|s| s.to_string()).collect(),
        volumes: volumes.iter().map(|s| s.to_string()).collect(),
        ..Resource::default()
    }
}

fn other(kind: Kind, id: &str) -> Resource {
    Resource {
        kind,
        id: id.into(),
        name: id.into(),
        ..Resource::default()
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

const NO_ENDPOINTS: &str = r#"{"Containers": {}}"#;

#[test]
fn a_network_goes_once_its_containers_are_gone_while_others_are_still_removed() {
    block_on(async {
        // Network b's containers are answered only once network a's removal has arrived: a sweep that
        // waited for every container before any network would hold them for the 5 s fallback, and
        // the order checked below would not hold.
        let (a_removed, a_seen) = tokio::sync::watch::channel(false);
        let a_removed = Arc::new(a_removed);
        let fake = FakeEngine::start(move |method, path, _| {
            let (a_removed, mut a_seen) = (a_removed.clone(), a_seen.clone());
            match (method, path) {
                ("DELETE", "/containers/b1" | "/containers/b2") => Box::pin(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        a_seen.wait_for(|removed| *removed),
                    )
                    .await;
                    (204, String::new())
                }),
                ("DELETE", "/networks/a") => {
                    a_removed.send_replace(true);
                    now(204, "")
                }
                ("GET", _) => now(200, NO_ENDPOINTS),
                _ => now(204, ""),
            }
        });
        let resources = [
            container("b1", &["b"], &[]),
            container("a1", &["a"], &[]),
            container("b2", &["b"], &["vol"]),
            container("a2", &["a"], &[]),
            other(Kind::Network, "a"),
            other(Kind::Network, "b"),
            other(Kind::Volume, "vol"),
        ];
        let removal = remove(&fake.engine, &resources, deadline()).await;
        assert!(removal.failures.is_empty(), "{:?}", removal.failures);
        assert_eq!(
            (removal.containers, removal.networks, removal.volumes),
            (4, 2, 1)
        );
        let log = &fake.log;
        let network_a = log.at("DELETE /networks/a");
        assert!(log.at("DELETE /containers/a1 -> 204") < network_a);
        assert!(log.at("DELETE /containers/a2 -> 204") < network_a);
        assert!(network_a < log.at("DELETE /containers/b1 -> 204"));
        assert!(network_a < log.at("DELETE /containers/b2 -> 204"));
        let network_b = log.at("DELETE /networks/b");
        assert!(log.at("DELETE /containers/b1 -> 204") < network_b);
        assert!(log.at("DELETE /containers/b2 -> 204") < network_b);
        assert!(log.at("DELETE /containers/b2 -> 204") < log.at("DELETE /volumes/vol"));
    });
}

#[test]
fn a_network_refused_for_endpoints_nobody_holds_is_reported_stale_without_waiting_for_the_deadline()
{
    block_on(async {
        let fake = FakeEngine::start(|method, _, _| match method {
            "DELETE" => now(
                403,
                r#"{"message": "error while removing network: network n id n has active endpoints"}"#,
            ),
            _ => now(200, NO_ENDPOINTS),
        });
        let removal = remove(&fake.engine, &[other(Kind::Network, "n")], deadline()).await;
        assert_eq!(removal.failures.len(), 1);
        assert!(
            removal.failures[0].error.to_string().contains("stale"),
            "{}",
            removal.failures[0].error
        );
        // The retries stop once the count is called stale: a handful, not a minute's worth.
        let attempts = fake.log.count("DELETE /networks/n");
        assert!((2..=8).contains(&attempts), "{attempts} attempts");
    });
}

#[test]
fn endpoints_that_go_away_are_waited_for() {
    block_on(async {
        let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let fake = FakeEngine::start(move |method, _, _| match method {
            "DELETE" if refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 2 => {
                now(403, r#"{"message": "network n has active endpoints"}"#)
            }
            "DELETE" => now(204, ""),
            // Something is still attached while the engine refuses.
            _ => now(200, r#"{"Containers": {"late": {"Name": "late"}}}"#),
        });
        let removal = remove(&fake.engine, &[other(Kind::Network, "n")], deadline()).await;
        assert!(removal.failures.is_empty(), "{:?}", removal.failures);
        assert_eq!(fake.log.count("DELETE /networks/n"), 3);
    });
}

#[test]
fn foreign_endpoints_are_disconnected_the_sweeps_own_never() {
    block_on(async {
        let disconnected = Arc::new(std::sync::Mutex::new(Vec::new()));
        let bodies = disconnected.clone();
        let fake = FakeEngine::start(move |method, path, body| match method {
            "GET" => now(
                200,
                r#"{"Containers": {"mine": {"Name": "mine"}, "theirs": {"Name": "theirs"}}}"#,
            ),
            "POST" if path.ends_with("/disconnect") => {
                bodies.lock().unwrap().push(body.to_string());
                now(200, "")
            }
            _ => now(204, ""),
        });
        let resources = [container("mine", &["n"], &[]), other(Kind::Network, "n")];
        let removal = remove(&fake.engine, &resources, deadline()).await;
        assert!(removal.failures.is_empty(), "{:?}", removal.failures);
        let disconnected = disconnected.lock().unwrap().clone();
        assert_eq!(disconnected.len(), 1, "{disconnected:?}");
        assert!(disconnected[0].contains(r#""theirs""#), "{disconnected:?}");
        assert!(fake.log.at("DELETE /containers/mine -> 204") < fake.log.at("DELETE /networks/n"));
    });
}

#[test]
fn a_network_whose_container_failed_gets_one_attempt_and_says_why() {
    block_on(async {
        let fake = FakeEngine::start(|method, path, _| match (method, path) {
            ("DELETE", "/containers/stuck") => now(400, r#"{"message": "driver failed"}"#),
            ("DELETE", _) => now(403, r#"{"message": "network n has active endpoints"}"#),
            _ => now(200, r#"{"Containers": {"stuck": {"Name": "stuck"}}}"#),
        });
        let resources = [container("stuck", &["n"], &[]), other(Kind::Network, "n")];
        let removal = remove(&fake.engine, &resources, deadline()).await;
        assert_eq!(removal.failures.len(), 2, "{:?}", removal.failures);
        let network = removal
            .failures
            .iter()
            .find(|f| f.resource.kind == Kind::Network)
            .unwrap();
        assert!(
            network.error.to_string().contains("could not be removed"),
            "{}",
            network.error
        );
        assert_eq!(fake.log.count("DELETE /networks/n"), 1);
    });
}

#[test]
fn a_daemon_error_is_retried_and_a_gone_resource_counts_as_removed() {
    block_on(async {
        let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let fake = FakeEngine::start(move |_, path, _| match path {
            "/containers/flaky"
                if errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 2 =>
            {
                now(500, r#"{"message": "transient"}"#)
            }
            "/containers/gone" => now(404, r#"{"message": "no such container"}"#),
            _ => now(204, ""),
        });
        let resources = [container("flaky", &[], &[]), container("gone", &[], &[])];
        let removal = remove(&fake.engine, &resources, deadline()).await;
        assert!(removal.failures.is_empty(), "{:?}", removal.failures);
        assert_eq!(removal.containers, 2);
        assert_eq!(fake.log.count("DELETE /containers/flaky"), 3);
    });
}
