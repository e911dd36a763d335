//! What `deploy/` ships, checked against the proxy: the systemd unit passes `systemd-analyze
//! verify` (skipped, with a message, where systemd-analyze is missing) and keeps its sandboxing,
//! and every metric and label the Prometheus rules use is one the real proxy exports. The rules'
//! own unit tests run under `promtool test rules` in scripts/test.sh.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

const UNIT: &str = include_str!("../deploy/memu-proxy.service");
const RULES: &str = include_str!("../deploy/prometheus/memu-proxy.rules.yml");
const INSTALLED_BINARY: &str = "/usr/local/bin/memu-proxy";

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze not found; deploy/memu-proxy.service not verified");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one cargo just built.
    assert!(UNIT.contains(INSTALLED_BINARY));
    let unit = UNIT.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_memu-proxy"));
    let dir = std::env::temp_dir().join(format!("memu-proxy-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("memu-proxy.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Unknown or misspelt directives are only warnings ("Unknown key …, ignoring"): fail on them.
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("memu-proxy"))
        .collect();
    assert!(about_ours.is_empty(), "{about_ours:#?}");
}

#[test]
fn the_systemd_unit_keeps_its_sandboxing() {
    for directive in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
    ] {
        assert!(UNIT.contains(directive), "missing {directive:?}");
    }
    assert!(Path::new("deploy/prometheus/prometheus.yml").exists());
}

/// The `memu_proxy_*` names in the rules file (expressions, annotations and comments alike).
fn metric_names_in_rules() -> BTreeSet<&'static str> {
    let mut names = BTreeSet::new();
    let mut rest = RULES;
    while let Some(at) = rest.find("memu_proxy_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn the_alert_rules_use_metrics_and_labels_the_proxy_exports() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| s.upstream.timeout_ms = 200).await;
    let body = related_body("u", Some("a"), "what is my cat called");
    post(&proxy.url(RELATED), &body).await;
    post(&proxy.url(RELATED), &body).await;
    // A labelled family has no samples, and is not in the text at all, until something is counted
    // in it: a fallback, so that `memu_proxy_fallbacks_total` is.
    memu.set_latency(Duration::from_secs(1));
    let other = related_body("u", Some("a"), "and my dog");
    post(&proxy.url(RELATED), &other).await;
    let text = proxy.metrics().await;

    // "# TYPE memu_proxy_requests counter": a counter's samples are `<family>_total`.
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .flat_map(|(family, kind)| match kind {
            "counter" => vec![format!("{family}_total")],
            _ => vec![family.to_owned()],
        })
        .collect();
    let used = metric_names_in_rules();
    assert!(used.len() >= 5, "{used:?}");
    for name in used {
        assert!(exported.contains(name), "{name} not exported:\n{text}");
    }
    for sample in [
        r#"memu_proxy_requests_total{route_class="read",outcome="hit"}"#,
        r#"memu_proxy_requests_total{route_class="read",outcome="miss"}"#,
        r#"memu_proxy_circuit_transitions_total{to="open"}"#,
        r#"memu_proxy_fallbacks_total{reason="timeout"}"#,
        "memu_proxy_circuit_state 0",
    ] {
        assert!(text.contains(sample), "{sample} not in:\n{text}");
    }
}
