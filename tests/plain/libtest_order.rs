//! The assumption shared-mode timeouts rest on, checked against real libtest: tests start in `--list`
//! order and at most `--test-threads` run at once, so no test starts before k results when it is at
//! position k + threads or later.

use crate::common;

use common::*;

#[test]
fn libtest_starts_tests_in_list_order_within_the_thread_limit() {
    for threads in [1usize, 2, 3] {
        let dir = temp_dir("order");
        let log = dir.join("order.log");
        let out = run(cargo_test("order")
            .args(["--lib", "--", "--test-threads", &threads.to_string()])
            .env("CT_FIXTURE_ORDER_LOG", &log));
        assert!(out.status.success(), "{}", stderr(&out));
        let listed: Vec<String> = (0..10).map(|i| format!("tests::t{i:02}")).collect();
        let text = std::fs::read_to_string(&log).unwrap();
        let mut ended = 0usize;
        let mut started = Vec::new();
        for line in text.lines() {
            let (what, name) = line.split_once(' ').unwrap();
            match what {
                "start" => {
                    // Threads that start together may log in either order; what matters is that no test
                    // starts before its slot in list order is free.
                    let index = listed.iter().position(|n| n.ends_with(name)).unwrap();
                    assert!(
                        index < ended + threads,
                        "{name} started with only {ended} ended ({threads} threads): {text}"
                    );
                    started.push(name.to_string());
                }
                _ => ended += 1,
            }
        }
        assert_eq!(started.len(), 10);
    }
}
