//! The exposition: every family with fixed labels and the HELP style of collected ones.

use super::*;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

#[derive(Debug)]
struct Fixed;

impl Collector for Fixed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(&mut encoder, "cache", "bytes", Some(&Unit::Bytes), 1234)?;
        counter(&mut encoder, "cache_evictions", "evicted", 2)?;
        counter_family(
            &mut encoder,
            "circuit_transitions",
            "transitions",
            "to",
            &[("open", 1), ("closed", 0)],
        )
    }
}

#[test]
fn exposition_has_every_family_with_fixed_labels() {
    let mut registry = Registry::with_prefix("memu_proxy");
    let m = Metrics::register(&mut registry);
    registry.register_collector(Box::new(Fixed));
    m.request(
        RouteClassLabel::Read,
        Outcome::Hit,
        Duration::from_micros(30),
    );
    m.upstream(RouteClassLabel::Read, Duration::from_millis(5));
    m.fallback(FallbackReason::Upstream5xx);
    m.invalidation(InvalidationCause::TaskSuccess, WriteKind::Supersede);
    m.stale_refused(StaleRefusal::Purged);
    m.coalesced_wait();
    m.background(BackgroundEvent::Dropped);
    let text = render(&registry);
    for line in [
        r#"memu_proxy_requests_total{route_class="read",outcome="hit"} 1"#,
        r#"memu_proxy_fallbacks_total{reason="upstream-5xx"} 1"#,
        r#"memu_proxy_cache_invalidations_total{cause="task_success",kind="supersede"} 1"#,
        r#"memu_proxy_stale_refused_total{why="purged"} 1"#,
        r#"memu_proxy_background_fetches_total{event="dropped"} 1"#,
        "memu_proxy_coalesced_waits_total 1",
        "# TYPE memu_proxy_request_duration_seconds histogram",
        "# TYPE memu_proxy_upstream_duration_seconds histogram",
        "# HELP memu_proxy_requests Requests by route class and outcome.",
        "# HELP memu_proxy_cache_bytes bytes.",
        "# TYPE memu_proxy_cache_bytes gauge",
        "memu_proxy_cache_bytes 1234",
        "# TYPE memu_proxy_cache_evictions counter",
        "memu_proxy_cache_evictions_total 2",
        r#"memu_proxy_circuit_transitions_total{to="open"} 1"#,
        r#"memu_proxy_circuit_transitions_total{to="closed"} 0"#,
        "# EOF",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}
