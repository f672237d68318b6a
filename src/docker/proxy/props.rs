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
