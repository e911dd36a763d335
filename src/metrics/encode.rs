//! Scrape-time encoders: the registry's text exposition, and the small helpers components'
//! `Collector`s use to write their own gauges and counters with the same HELP style.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// The text exposition of everything in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

/// The HELP text as `Registry::register` writes it (with a final period), so every family reads
/// the same whether registered or collected.
fn sentence(help: &str) -> String {
    format!("{help}.")
}

/// Encodes one gauge from a collector, at scrape time.
pub fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    let help = sentence(help);
    gauge.encode(encoder.encode_descriptor(name, &help, unit, gauge.metric_type())?)
}

/// Encodes one counter (`<name>_total`) from a collector, at scrape time.
pub fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    total: u64,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(total);
    let help = sentence(help);
    counter.encode(encoder.encode_descriptor(name, &help, None, counter.metric_type())?)
}

/// Encodes a counter family with one label from a collector, at scrape time.
pub fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    totals: &[(&'static str, u64)],
) -> Result<(), std::fmt::Error> {
    let kind = ConstCounter::new(0u64).metric_type();
    let help = sentence(help);
    let mut family = encoder.encode_descriptor(name, &help, None, kind)?;
    for &(value, total) in totals {
        let labels = [(label, value)];
        ConstCounter::new(total).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
